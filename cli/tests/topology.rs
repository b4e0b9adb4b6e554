//! `warren declare`, `bind`, `unbind`, `purge` and `delete` against the broker.

mod common;

use common::{Cleanup, warren};

/// The life of a topic exchange and a queue: declare, bind, route, unbind, purge, delete.
#[test]
fn declare_bind_publish_consume_unbind_purge_delete() {
    let mut cleanup = Cleanup::new();
    let exchange = cleanup.exchange("topic");
    let queue = cleanup.queue("bound");

    let declared = warren(&["declare", "exchange", &exchange, "--type", "topic"]).ok();
    assert_eq!(
        declared.stdout.trim(),
        format!("exchange {exchange:?} (topic) declared")
    );
    let declared = warren(&["declare", "queue", &queue]).ok();
    assert_eq!(
        declared.stdout.trim(),
        format!("queue {queue:?} declared: 0 messages, 0 consumers")
    );
    let bound = warren(&["bind", "queue", &queue, &exchange, "-k", "kern.*"]).ok();
    assert_eq!(
        bound.stdout.trim(),
        format!("bound queue {queue:?} to exchange {exchange:?} with routing key \"kern.*\"")
    );

    // Routed by the binding.
    warren(&[
        "publish",
        "-e",
        &exchange,
        "-k",
        "kern.critical",
        "--mandatory",
        "disk on fire",
    ])
    .ok();
    let consumed = warren(&["consume", &queue, "-n", "1"]).ok();
    assert!(
        consumed.stdout.contains("routing key \"kern.critical\""),
        "{consumed:#?}"
    );
    assert!(consumed.stdout.contains("disk on fire"), "{consumed:#?}");
    // Not routed: no binding matches.
    let returned = warren(&[
        "publish",
        "-e",
        &exchange,
        "-k",
        "user.info",
        "--mandatory",
        "x",
    ]);
    assert_eq!(returned.code(), Some(4), "{returned:#?}");

    let unbound = warren(&[
        "unbind",
        "queue",
        &queue,
        &exchange,
        "--routing-key",
        "kern.*",
    ])
    .ok();
    assert!(unbound.stdout.starts_with("unbound queue"), "{unbound:#?}");
    let returned = warren(&[
        "publish",
        "-e",
        &exchange,
        "-k",
        "kern.critical",
        "--mandatory",
        "x",
    ]);
    assert_eq!(returned.code(), Some(4), "{returned:#?}");

    for body in ["a", "b", "c"] {
        warren(&["publish", "-k", &queue, body]).ok();
    }
    let purged = warren(&["purge", &queue]).ok();
    assert_eq!(
        purged.stdout.trim(),
        format!("purged 3 messages from queue {queue:?}")
    );

    warren(&["publish", "-k", &queue, "left behind"]).ok();
    let deleted = warren(&["delete", "queue", &queue]).ok();
    assert_eq!(
        deleted.stdout.trim(),
        format!("deleted queue {queue:?} (1 messages)")
    );
    let deleted = warren(&["delete", "exchange", &exchange]).ok();
    assert_eq!(
        deleted.stdout.trim(),
        format!("deleted exchange {exchange:?}")
    );

    // Gone: passive declares fail with the broker's 404, in one line.
    let gone = warren(&["declare", "queue", &queue, "--passive"]);
    gone.one_line_error(1, "warren: the broker refused: 404 - NOT_FOUND - no queue");
    let gone = warren(&["declare", "exchange", &exchange, "--passive"]);
    gone.one_line_error(
        1,
        "warren: the broker refused: 404 - NOT_FOUND - no exchange",
    );
}

#[test]
fn exchanges_bind_to_exchanges() {
    let mut cleanup = Cleanup::new();
    let source = cleanup.exchange("source");
    let destination = cleanup.exchange("destination");
    let queue = cleanup.queue("e2e");
    warren(&["declare", "exchange", &source, "-t", "fanout"]).ok();
    warren(&["declare", "exchange", &destination, "-t", "fanout"]).ok();
    warren(&["declare", "queue", &queue]).ok();
    warren(&["bind", "queue", &queue, &destination]).ok();
    let bound = warren(&["bind", "exchange", &destination, &source]).ok();
    assert!(bound.stdout.starts_with("bound exchange"), "{bound:#?}");

    warren(&["publish", "-e", &source, "--mandatory", "hop"]).ok();
    let got = warren(&["get", &queue, "--json"]).ok();
    assert!(
        got.stdout.contains(&format!(r#""exchange":"{source}""#)),
        "{got:#?}"
    );

    warren(&["unbind", "exchange", &destination, &source]).ok();
    let returned = warren(&["publish", "-e", &source, "--mandatory", "hop"]);
    assert_eq!(returned.code(), Some(4), "{returned:#?}");
}

#[test]
fn declare_arguments_are_typed() {
    let mut cleanup = Cleanup::new();
    let queue = cleanup.queue("args");
    // x-max-length must be an integer: the broker refuses a string.
    warren(&[
        "declare",
        "queue",
        &queue,
        "--arg",
        "x-max-length=1",
        "--arg",
        "x-overflow=drop-head",
    ])
    .ok();
    for body in ["old", "new"] {
        warren(&["publish", "-k", &queue, body]).ok();
    }
    let got = warren(&["get", &queue, "-n", "5", "--json"]).ok();
    assert_eq!(got.stdout.lines().count(), 1, "{got:#?}");
    assert!(got.stdout.contains(r#""body":"new""#), "{got:#?}");

    let other = cleanup.queue("args-string");
    let refused = warren(&["declare", "queue", &other, "--arg", "x-max-length:str=1"]);
    let line = refused.one_line_error(1, "warren: the broker refused: 406 - PRECONDITION_FAILED");
    assert!(line.contains("x-max-length"), "{line}");

    // Redeclaring with other flags is refused too.
    let mismatch = warren(&["declare", "queue", &queue, "--durable"]);
    mismatch.one_line_error(1, "warren: the broker refused: 406 - PRECONDITION_FAILED");
}

#[test]
fn the_queue_type_and_durability_are_declared() {
    let mut cleanup = Cleanup::new();
    let queue = cleanup.queue("quorum");
    warren(&["declare", "queue", &queue, "--type", "quorum", "--durable"]).ok();
    // The broker holds the queue to what it was declared with.
    let classic = warren(&["declare", "queue", &queue, "--durable", "--type", "classic"]);
    let line = classic.one_line_error(1, "warren: the broker refused: 406 - PRECONDITION_FAILED");
    assert!(line.contains("current is 'quorum'"), "{line}");
    let transient = warren(&["declare", "queue", &queue, "--type", "quorum"]);
    transient.one_line_error(1, "warren: the broker refused: 406 - PRECONDITION_FAILED");

    let exchange = cleanup.exchange("durable");
    warren(&[
        "declare",
        "exchange",
        &exchange,
        "-t",
        "fanout",
        "--durable",
    ])
    .ok();
    let transient = warren(&["declare", "exchange", &exchange, "-t", "fanout"]);
    let line = transient.one_line_error(1, "warren: the broker refused: 406 - PRECONDITION_FAILED");
    assert!(line.contains("durable"), "{line}");
    let direct = warren(&["declare", "exchange", &exchange, "--durable"]);
    let line = direct.one_line_error(1, "warren: the broker refused: 406 - PRECONDITION_FAILED");
    assert!(line.contains("type"), "{line}");
}

/// Deleting a queue or exchange that does not exist says so, with exit status 5, instead of
/// reporting it deleted; --if-exists makes that a success.
#[test]
fn a_server_named_queue_is_printed_and_deleting_what_is_missing_says_so() {
    let declared = warren(&["declare", "queue", "", "--auto-delete"]).ok();
    let name = declared
        .stdout
        .strip_prefix("queue \"")
        .and_then(|rest| rest.split('"').next())
        .expect("the queue's name");
    assert!(name.starts_with("amq.gen-"), "{declared:#?}");
    let deleted = warren(&["delete", "queue", name]).ok();
    assert_eq!(
        deleted.stdout.trim(),
        format!("deleted queue {name:?} (0 messages)")
    );
    let again = warren(&["delete", "queue", name]);
    let line = again.one_line_error(5, &format!("warren: queue {name:?} did not exist"));
    assert!(line.contains("--if-exists"), "{line}");
    assert!(again.stdout.is_empty(), "{again:#?}");
    let quiet = warren(&["delete", "queue", name, "--if-exists"]).ok();
    assert_eq!(
        quiet.stdout.trim(),
        format!("queue {name:?} did not exist; nothing to delete")
    );

    let exchange = common::unique("never-declared");
    warren(&["delete", "exchange", &exchange])
        .one_line_error(5, &format!("warren: exchange {exchange:?} did not exist"));
    warren(&["delete", "exchange", &exchange, "--if-exists"]).ok();
}
