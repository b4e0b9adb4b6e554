//! `warren publish`, `get` and `consume` against the broker: bodies, properties and headers
//! round-trip; acknowledgement modes; output formats.

mod common;

use common::{Cleanup, warren, warren_with_input};

#[test]
fn publish_then_get_round_trips_body_properties_and_headers() {
    let mut cleanup = Cleanup::new();
    let queue = cleanup.queue("roundtrip");
    warren(&["declare", "queue", &queue]).ok();

    let published = warren(&[
        "publish",
        "--routing-key",
        &queue,
        "--content-type",
        "text/plain",
        "--content-encoding",
        "identity",
        "--persistent",
        "--priority",
        "5",
        "--correlation-id",
        "corr-1",
        "--reply-to",
        "replies",
        "--expiration",
        "60000",
        "--message-id",
        "msg-1",
        "--timestamp",
        "1700000000",
        "--type",
        "greeting",
        "--user-id",
        "guest",
        "--app-id",
        "warren-tests",
        "--header",
        "text=hello",
        "-H",
        "count=42",
        "-H",
        "negative=-7",
        "-H",
        "flag=true",
        "-H",
        "zip=01234",
        "-H",
        "forced:str=42",
        "-H",
        "forced-int:int=007",
        "-H",
        "forced-bool:bool=false",
        "line one\nline \"two\"",
    ])
    .ok();
    assert!(
        published
            .stdout
            .contains(&format!("routing key {queue:?}: confirmed")),
        "{published:#?}"
    );

    let got = warren(&["get", &queue, "--json"]).ok();
    let line = got.stdout.trim_end();
    assert_eq!(got.stdout.lines().count(), 1, "{got:#?}");
    for field in [
        r#""exchange":"""#.to_owned(),
        format!(r#""routing_key":"{queue}""#),
        r#""redelivered":false"#.to_owned(),
        r#""message_count":0"#.to_owned(),
        r#""content_type":"text/plain""#.to_owned(),
        r#""content_encoding":"identity""#.to_owned(),
        r#""delivery_mode":2"#.to_owned(),
        r#""priority":5"#.to_owned(),
        r#""correlation_id":"corr-1""#.to_owned(),
        r#""reply_to":"replies""#.to_owned(),
        r#""expiration":"60000""#.to_owned(),
        r#""message_id":"msg-1""#.to_owned(),
        r#""timestamp":1700000000"#.to_owned(),
        r#""type":"greeting""#.to_owned(),
        r#""user_id":"guest""#.to_owned(),
        r#""app_id":"warren-tests""#.to_owned(),
        // Headers keep their order and their types.
        r#""headers":{"text":"hello","count":42,"negative":-7,"flag":true,"zip":"01234","forced":"42","forced-int":7,"forced-bool":false}"#.to_owned(),
        r#""body":"line one\nline \"two\"""#.to_owned(),
    ] {
        assert!(line.contains(&field), "{field} missing from {line}");
    }
    assert!(line.starts_with('{') && line.ends_with('}'), "{line}");

    // The message was acknowledged: the queue is empty now.
    let empty = warren(&["get", &queue]).ok();
    assert_eq!(empty.stdout, "");
    assert_eq!(empty.stderr.trim(), format!("queue {queue:?} is empty"));
}

#[test]
fn text_output_shows_properties_headers_and_body() {
    let mut cleanup = Cleanup::new();
    let queue = cleanup.queue("text");
    warren(&["declare", "queue", &queue]).ok();
    warren(&[
        "publish",
        "-k",
        &queue,
        "--content-type",
        "text/plain",
        "--timestamp",
        "1700000000",
        "-H",
        "n=1",
        "hi there",
    ])
    .ok();
    let got = warren(&["get", &queue]).ok();
    let expected = format!(
        "message 1: exchange \"\", routing key {queue:?}, delivery tag 1, 0 left in the queue\n\
         \x20 content-type: text/plain\n\
         \x20 timestamp: 1700000000 (2023-11-14T22:13:20Z)\n\
         \x20 headers: {{n: 1}}\n\
         \x20 body (8 bytes):\n\
         hi there\n"
    );
    assert_eq!(got.stdout, expected);
}

#[test]
fn bodies_come_from_the_argument_a_file_or_stdin() {
    let mut cleanup = Cleanup::new();
    let queue = cleanup.queue("bodies");
    warren(&["declare", "queue", &queue]).ok();

    let dir = std::env::temp_dir().join(common::unique("body-file"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("body.txt");
    std::fs::write(&file, "from a file").unwrap();
    warren(&["publish", "-k", &queue, "--file", file.to_str().unwrap()]).ok();
    warren_with_input(&["publish", "-k", &queue], b"from stdin").ok();
    // Bytes that are not UTF-8 go through untouched, and JSON shows them as base64.
    warren_with_input(&["publish", "-k", &queue, "--file", "-"], &[0, 0xff, 0x10]).ok();
    warren(&["publish", "-k", &queue, ""]).ok();

    let got = warren(&["get", &queue, "--count", "10", "--json"]).ok();
    let lines: Vec<&str> = got.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{got:#?}");
    assert!(
        lines[0].ends_with(r#""body":"from a file"}"#),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].ends_with(r#""body":"from stdin"}"#),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].ends_with(r#""body_base64":"AP8Q"}"#),
        "{}",
        lines[2]
    );
    assert!(lines[3].ends_with(r#""body":""}"#), "{}", lines[3]);
    assert!(lines[0].contains(r#""message_count":3"#), "{}", lines[0]);

    let missing = warren(&["publish", "-k", &queue, "--file", "/nonexistent/body"]);
    missing.one_line_error(1, "warren: cannot read /nonexistent/body: ");
    let both = warren(&["publish", "-k", &queue, "--file", "x", "body"]);
    assert_eq!(both.code(), Some(2), "{both:#?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn get_with_requeue_leaves_the_messages() {
    let mut cleanup = Cleanup::new();
    let queue = cleanup.queue("peek");
    warren(&["declare", "queue", &queue]).ok();
    for body in ["one", "two"] {
        warren(&["publish", "-k", &queue, body]).ok();
    }
    let peeked = warren(&["get", &queue, "-n", "5", "--requeue"]).ok();
    assert_eq!(peeked.stdout.matches("message ").count(), 2, "{peeked:#?}");
    let counts = warren(&["declare", "queue", &queue, "--passive"]).ok();
    assert_eq!(
        counts.stdout.trim(),
        format!("queue {queue:?} exists: 2 messages, 0 consumers")
    );
    // In order, and marked redelivered.
    let got = warren(&["get", &queue, "--json"]).ok();
    assert!(got.stdout.contains(r#""redelivered":true"#), "{got:#?}");
    assert!(got.stdout.contains(r#""body":"one""#), "{got:#?}");
}

#[test]
fn consume_stops_after_count_and_acknowledges_what_it_showed() {
    let mut cleanup = Cleanup::new();
    let queue = cleanup.queue("consume");
    warren(&["declare", "queue", &queue]).ok();
    for i in 1..=5 {
        warren(&["publish", "-k", &queue, &format!("message {i}")]).ok();
    }

    // Manual ack (the default): two shown and acked, the rest stay.
    let first = warren(&["consume", &queue, "--count", "2", "--json"]).ok();
    let lines: Vec<&str> = first.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{first:#?}");
    assert!(lines[0].contains(r#""body":"message 1""#), "{first:#?}");
    assert!(lines[1].contains(r#""body":"message 2""#), "{first:#?}");
    let counts = warren(&["declare", "queue", &queue, "--passive"]).ok();
    assert!(counts.stdout.contains(": 3 messages"), "{counts:#?}");

    // --no-ack (or --ack auto): the broker forgets each message as it sends it.
    let second = warren(&["consume", &queue, "-n", "3", "--no-ack"]).ok();
    for body in ["message 3", "message 4", "message 5"] {
        assert!(second.stdout.contains(body), "{second:#?}");
    }
    let counts = warren(&["declare", "queue", &queue, "--passive"]).ok();
    assert!(counts.stdout.contains(": 0 messages"), "{counts:#?}");
    warren(&["publish", "-k", &queue, "message 6"]).ok();
    let third = warren(&["consume", &queue, "-n", "1", "--ack", "auto"]).ok();
    assert!(third.stdout.contains("message 6"), "{third:#?}");

    // On an empty queue, --idle-timeout ends the wait.
    let idle = warren(&["consume", &queue, "--idle-timeout", "300ms"]).ok();
    assert_eq!(idle.stdout, "");
    assert!(idle.stderr.contains("stopping after 0"), "{idle:#?}");
}

#[test]
fn consume_writes_bodies_to_a_directory() {
    let mut cleanup = Cleanup::new();
    let queue = cleanup.queue("files");
    warren(&["declare", "queue", &queue]).ok();
    warren(&["publish", "-k", &queue, "first body"]).ok();
    warren_with_input(&["publish", "-k", &queue], &[1, 2, 3]).ok();

    let dir = std::env::temp_dir().join(common::unique("bodies"));
    // An existing file is never overwritten: numbering skips it.
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("000001.bin"), "keep me").unwrap();
    let out = dir.to_str().unwrap();
    let consumed = warren(&["consume", &queue, "-n", "2", "--output-dir", out]).ok();
    assert_eq!(consumed.stdout.lines().count(), 2, "{consumed:#?}");
    assert!(consumed.stdout.contains("000002.bin"), "{consumed:#?}");
    assert_eq!(std::fs::read(dir.join("000001.bin")).unwrap(), b"keep me");
    assert_eq!(
        std::fs::read(dir.join("000002.bin")).unwrap(),
        b"first body"
    );
    assert_eq!(std::fs::read(dir.join("000003.bin")).unwrap(), [1, 2, 3]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Publishing is mandatory by default: a message no queue takes is "not routed", exit status
/// 4, never "confirmed"; --no-mandatory lets the broker drop it, with status 0.
#[test]
fn an_unroutable_message_is_not_routed_with_exit_status_4() {
    let mut cleanup = Cleanup::new();
    let exchange = cleanup.exchange("unroutable");
    warren(&["declare", "exchange", &exchange]).ok();
    let returned = warren(&["publish", "-e", &exchange, "-k", "nowhere", "x"]);
    let line = returned.one_line_error(4, "warren: not routed: no queue took the message");
    assert!(line.contains("312 NO_ROUTE"), "{line}");
    assert!(line.contains("--no-mandatory"), "{line}");
    assert!(returned.stdout.is_empty(), "{returned:#?}");
    // --mandatory, the old way to ask for this, still works.
    let returned = warren(&[
        "publish",
        "-e",
        &exchange,
        "-k",
        "nowhere",
        "--mandatory",
        "x",
    ]);
    returned.one_line_error(4, "warren: not routed:");
    // Fire and forget: the broker acks and drops it.
    let dropped = warren(&[
        "publish",
        "-e",
        &exchange,
        "-k",
        "nowhere",
        "--no-mandatory",
        "x",
    ])
    .ok();
    assert!(dropped.stdout.contains("confirmed"), "{dropped:#?}");
    // Routed: confirmed, status 0.
    let queue = cleanup.queue("routed");
    warren(&["declare", "queue", &queue]).ok();
    let routed = warren(&["publish", "-k", &queue, "x"]).ok();
    assert!(routed.stdout.contains(": confirmed"), "{routed:#?}");
}

#[test]
fn consuming_a_missing_queue_is_one_line() {
    let queue = common::unique("missing");
    let output = warren(&["consume", &queue, "-n", "1"]);
    let line = output.one_line_error(1, "warren: the broker refused: 404");
    assert!(line.contains(&format!("no queue '{queue}'")), "{line}");
}
