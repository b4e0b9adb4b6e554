//! What a real broker cannot be made to send, played by a scripted fake broker
//! (`tests/support`): a silent peer, calls nobody answers, malformed and hostile frames, a
//! foreign protocol header, refused logins, and random bytes.
//!
//! Every wait has a deadline, so a client bug fails a test instead of hanging it.

mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use proptest::prelude::*;

use support::{STEP, Tune, connect, frames, within};
use warren::frame::{FRAME_BODY, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD, Frame};
use warren::protocol::{
    BasicAck, BasicConsume, BasicConsumeOk, BasicDeliver, BasicProperties, BasicPublish,
    BasicReject, ChannelCloseOk, ConfirmSelect, ConfirmSelectOk, ConnectionClose,
    ConnectionCloseOk, ConnectionStartOk, QueueDeclare, QueueDeclareOk,
};
use warren::wire::{DecodeError, MAX_NESTING, ShortString};
use warren::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicRejectOptions, Connection,
    ConnectionOptions, Error, Initiator, PublishError, Publisher, PublisherOptions,
    QueueDeclareOptions,
};

fn declare_ok(queue: &str, message_count: u32) -> QueueDeclareOk {
    QueueDeclareOk {
        queue: ShortString::try_from(queue).unwrap(),
        message_count,
        consumer_count: 0,
    }
}

/// Opens a channel and selects confirm mode on it, the peer answering both.
async fn confirm_channel(connection: &Connection, peer: &mut support::Peer) -> warren::Channel {
    let channel = tokio::join!(connection.open_channel(), peer.accept_channel())
        .0
        .unwrap();
    let id = channel.id();
    let (selected, ()) = tokio::join!(channel.confirm_select(Default::default()), async {
        let _: ConfirmSelect = peer.expect_method(id).await;
        peer.send_method(id, &ConfirmSelectOk {}).await;
    });
    selected.unwrap();
    channel
}

/// The fake broker's options as they are (no heartbeats, 5 s deadlines).
fn defaults(options: ConnectionOptions) -> ConnectionOptions {
    options
}

// ===== 1. silent peer =====

#[tokio::test]
async fn a_silent_peer_is_detected_after_two_heartbeat_intervals() {
    let (connection, mut peer) = connect(
        |o| {
            o.heartbeat(Duration::from_secs(1))
                .operation_timeout(Duration::from_secs(30))
        },
        Tune {
            heartbeat: 1,
            ..Tune::default()
        },
    )
    .await;
    assert_eq!(connection.heartbeat(), Duration::from_secs(1));
    let channel = tokio::join!(connection.open_channel(), peer.accept_channel())
        .0
        .unwrap();
    // The peer's last word was channel.open-ok; from now on it says nothing.
    let silent_since = Instant::now();
    let pending = tokio::spawn({
        let channel = channel.clone();
        async move {
            let result = channel
                .queue_declare("never-answered", QueueDeclareOptions::default())
                .await;
            (result, Instant::now())
        }
    });
    let _: QueueDeclare = peer.expect_method(channel.id()).await;

    let reason = within(
        Duration::from_secs(6),
        "connection.closed()",
        connection.closed(),
    )
    .await;
    let detected_after = silent_since.elapsed();
    assert!(
        matches!(reason, Error::HeartbeatTimeout { interval } if interval == Duration::from_secs(1)),
        "closed with {reason:?}"
    );
    assert!(
        detected_after >= Duration::from_millis(1500) && detected_after <= Duration::from_secs(4),
        "a silent peer was detected after {detected_after:?}; expected about 2 s"
    );
    assert!(!connection.is_open());

    // The pending call failed with the same error at once, not at its 30 s deadline.
    let (result, failed_at) = within(
        Duration::from_millis(500),
        "the pending queue.declare",
        pending,
    )
    .await
    .unwrap();
    assert!(
        matches!(result, Err(Error::HeartbeatTimeout { .. })),
        "pending call ended with {result:?}"
    );
    assert!(failed_at.duration_since(silent_since) <= Duration::from_secs(4));
    // The client dropped the socket.
    peer.expect_eof().await;
}

// ===== 2. call deadlines =====

#[tokio::test]
async fn an_unanswered_call_times_out_and_the_late_reply_is_discarded() {
    let (connection, mut peer) = connect(
        |o| o.operation_timeout(Duration::from_millis(500)),
        Tune::default(),
    )
    .await;
    let channel = tokio::join!(connection.open_channel(), peer.accept_channel())
        .0
        .unwrap();
    assert_eq!(channel.timeout(), Duration::from_millis(500));

    // The connection-wide deadline.
    let started = Instant::now();
    let (result, first) = tokio::join!(
        channel.queue_declare("first", QueueDeclareOptions::default()),
        peer.expect_method::<QueueDeclare>(channel.id())
    );
    let took = started.elapsed();
    assert_eq!(first.queue, "first");
    match result {
        Err(Error::Timeout { operation, after }) => {
            assert_eq!(operation, "queue.declare");
            assert_eq!(after, Duration::from_millis(500));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(1500),
        "timed out after {took:?}"
    );

    // A per-handle deadline overrides it.
    let short = channel.with_timeout(Duration::from_millis(150));
    assert_eq!(short.timeout(), Duration::from_millis(150));
    let started = Instant::now();
    let (result, second) = tokio::join!(
        short.queue_declare("second", QueueDeclareOptions::default()),
        peer.expect_method::<QueueDeclare>(channel.id())
    );
    let took = started.elapsed();
    assert_eq!(second.queue, "second");
    assert!(
        matches!(result, Err(Error::Timeout { operation: "queue.declare", after }) if after == Duration::from_millis(150)),
        "got {result:?}"
    );
    assert!(
        took >= Duration::from_millis(120) && took < Duration::from_millis(450),
        "the 150 ms deadline fired after {took:?}"
    );
    assert!(channel.is_open(), "a timeout does not close the channel");

    // Now a third call, then the broker catches up: the two late replies come first and
    // must be discarded, and the third call must get its own reply.
    let third = tokio::spawn({
        let channel = channel.clone();
        async move {
            channel
                .with_timeout(STEP)
                .queue_declare("third", QueueDeclareOptions::default())
                .await
        }
    });
    let third_request: QueueDeclare = peer.expect_method(channel.id()).await;
    assert_eq!(third_request.queue, "third");
    let mut late = frames::method(channel.id(), &declare_ok("first", 1));
    late.extend(frames::method(channel.id(), &declare_ok("second", 2)));
    late.extend(frames::method(channel.id(), &declare_ok("third", 3)));
    peer.send_raw(&late).await;
    let declared = within(STEP, "the third queue.declare", third)
        .await
        .unwrap()
        .expect("the third declare gets its reply");
    assert_eq!(declared.name, "third");
    assert_eq!(declared.message_count, 3);

    // And the channel keeps working in step.
    let (result, fourth) = tokio::join!(
        channel.queue_declare("fourth", QueueDeclareOptions::default()),
        async {
            let request: QueueDeclare = peer.expect_method(channel.id()).await;
            peer.send_method(channel.id(), &declare_ok("fourth", 4))
                .await;
            request
        }
    );
    assert_eq!(fourth.queue, "fourth");
    assert_eq!(result.unwrap().message_count, 4);
    assert!(connection.is_open());
}

/// A `Publisher::publish` has one deadline for all its waits: a place in the window, then the
/// confirmation. The peer confirms nothing, which a broker cannot be made to do.
#[tokio::test]
async fn a_publisher_publish_has_one_deadline_for_the_window_and_the_confirmation() {
    let (connection, mut peer) = connect(|o| o, Tune::default()).await;
    let deadline = Duration::from_secs(1);
    let options = PublisherOptions::default()
        .channels(1)
        .max_in_flight(1)
        .timeout(deadline);
    let (publisher, channel) = tokio::join!(Publisher::new(&connection, options), async {
        let channel = peer.accept_channel().await;
        let _: ConfirmSelect = peer.expect_method(channel).await;
        peer.send_method(channel, &ConfirmSelectOk).await;
        channel
    });
    let publisher = publisher.unwrap();
    let publish = |publisher: Publisher| async move {
        let started = Instant::now();
        let result = publisher
            .publish(
                "",
                "q",
                BasicPublishOptions::default(),
                "m",
                Default::default(),
            )
            .await;
        (result, started.elapsed())
    };

    // The first publish is sent and never confirmed; the second, started while the first
    // holds the only place in the window, waits for the place, is sent when the first gives
    // up, and then waits for its confirmation only until its own deadline (a deadline per
    // wait would give up after twice as long).
    let sent = async |peer: &mut support::Peer| {
        let _: BasicPublish = peer.expect_method(channel).await;
        let header = peer.next_frame().await;
        assert!(matches!(header, Some(Frame::Header { .. })), "{header:?}");
        let body = peer.next_frame().await;
        assert!(matches!(body, Some(Frame::Body { .. })), "{body:?}");
    };
    let first = tokio::spawn(publish(publisher.clone()));
    sent(&mut peer).await;
    // Apart by more than the timer's 1 ms grain, so the first gives up first.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = tokio::spawn(publish(publisher.clone()));
    let (first, took_first) = within(STEP, "the first publish", first).await.unwrap();
    sent(&mut peer).await;
    let (second, took_second) = within(STEP, "the second publish", second).await.unwrap();
    for (result, took) in [(first, took_first), (second, took_second)] {
        assert!(
            matches!(
                &result,
                Err(PublishError::OutcomeUnknown(Error::Timeout {
                    operation: "publish confirmation",
                    after,
                })) if *after == deadline
            ),
            "got {result:?}"
        );
        assert!(
            took >= deadline - Duration::from_millis(20)
                && took < deadline + Duration::from_millis(700),
            "gave up after {took:?}, the deadline is {deadline:?}"
        );
    }
    assert_eq!(publisher.in_flight(), 0, "both gave their place back");
    assert!(connection.is_open(), "a deadline closes nothing");
}

// ===== 3. heartbeats sent =====

#[tokio::test]
async fn an_idle_client_sends_heartbeats_every_half_interval() {
    let (connection, mut peer) = connect(
        |o| o.heartbeat(Duration::from_secs(1)),
        Tune {
            heartbeat: 1,
            ..Tune::default()
        },
    )
    .await;
    let start = Instant::now();
    let mut received = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.tick().await;
    while start.elapsed() < Duration::from_millis(3200) {
        tokio::select! {
            frame = peer.next_frame() => match frame {
                Some(Frame::Heartbeat) => received.push(start.elapsed()),
                other => panic!("an idle client sent {other:?}"),
            },
            // The peer keeps the client's heartbeat timeout quiet.
            _ = tick.tick() => peer.send_heartbeat().await,
        }
    }
    assert!(connection.is_open(), "{:?}", connection.closed().await);
    assert!(
        (5..=7).contains(&received.len()),
        "heartbeats at {received:?}; expected one about every 500 ms"
    );
    assert!(
        received[0] <= Duration::from_millis(800),
        "first heartbeat at {:?}",
        received[0]
    );
    for pair in received.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(300) && gap <= Duration::from_millis(800),
            "heartbeats at {received:?}: a gap of {gap:?}"
        );
    }
}

// ===== 4, 6, 7. malformed frames =====

/// Opens a connection and a channel, leaves a `queue.declare` pending, sends `bytes`, and
/// checks that the client closes the connection with `code` and reports `expected` to the
/// application, through `closed()` and the pending call.
async fn assert_rejected(
    configure: impl FnOnce(ConnectionOptions) -> ConnectionOptions,
    tune: Tune,
    bytes: impl FnOnce(u16) -> Vec<u8>,
    expected: DecodeError,
    code: u16,
) {
    let (connection, mut peer) = connect(configure, tune).await;
    let channel = tokio::join!(connection.open_channel(), peer.accept_channel())
        .0
        .unwrap();
    let pending = tokio::spawn({
        let channel = channel.clone();
        async move {
            channel
                .queue_declare("pending", QueueDeclareOptions::default())
                .await
        }
    });
    let _: QueueDeclare = peer.expect_method(channel.id()).await;

    // Best effort: a client may rightly stop reading after the first bad byte.
    peer.send_raw_best_effort(&bytes(channel.id()), Duration::from_secs(1))
        .await;

    let close: ConnectionClose = peer.expect_connection_close().await;
    assert_eq!(
        close.reply_code, code,
        "closed with {} {:?} for {expected:?}",
        close.reply_code, close.reply_text
    );
    assert_eq!((close.class_id, close.method_id), (0, 0));
    let reason = within(STEP, "connection.closed()", connection.closed()).await;
    match &reason {
        Error::Protocol(e) => assert_eq!(e, &expected),
        other => panic!("closed with {other:?}, expected Protocol({expected:?})"),
    }
    assert_eq!(expected.reply_code(), code);
    let shown = reason.to_string();
    assert!(shown.contains(&code.to_string()), "{shown}");
    let result = within(STEP, "the pending call", pending).await.unwrap();
    match result {
        Err(Error::Protocol(e)) => assert_eq!(e, expected),
        other => panic!("the pending call ended with {other:?}"),
    }
    assert!(!connection.is_open());
    assert!(!channel.is_open());
    // The client does not linger on a broken stream.
    peer.expect_eof().await;
}

#[tokio::test]
async fn a_bad_frame_end_closes_with_501() {
    assert_rejected(
        defaults,
        Tune::default(),
        |_| frames::raw_with_end(FRAME_HEARTBEAT, 0, &[], 0x00),
        DecodeError::BadFrameEnd(0),
        501,
    )
    .await;
}

#[tokio::test]
async fn an_unknown_frame_type_closes_with_501() {
    assert_rejected(
        defaults,
        Tune::default(),
        |_| frames::raw(0x42, 0, &[]),
        DecodeError::UnknownFrameType(0x42),
        501,
    )
    .await;
}

#[tokio::test]
async fn a_frame_over_frame_max_closes_with_501_before_its_payload_arrives() {
    // Negotiated frame_max 4096: a payload of 4089 bytes makes a 4097-byte frame. Only the
    // seven header bytes are sent; the client must not wait for the rest.
    assert_rejected(
        defaults,
        Tune {
            frame_max: 4096,
            ..Tune::default()
        },
        |channel| frames::frame_header(FRAME_BODY, channel, 4089),
        DecodeError::FrameTooLarge {
            size: 4097,
            max: 4096,
        },
        501,
    )
    .await;
}

#[tokio::test]
async fn a_frame_over_frame_max_followed_by_its_payload_still_gets_a_501() {
    // What a broken peer really does: the oversized frame comes with its payload. After
    // refusing the header, the client must not read on (the stream is out of step), and its
    // connection.close must reach the peer.
    assert_rejected(
        defaults,
        Tune::default(),
        |channel| {
            let mut bytes = frames::frame_header(FRAME_BODY, channel, 400_000);
            bytes.resize(bytes.len() + 400_000, 0);
            bytes.push(0xCE);
            bytes
        },
        DecodeError::FrameTooLarge {
            size: 400_008,
            max: 131_072,
        },
        501,
    )
    .await;
}

#[tokio::test]
async fn a_peer_that_half_closes_right_after_a_bad_frame_still_gets_the_close() {
    let (connection, mut peer) = connect(defaults, Tune::default()).await;
    peer.send_raw(&frames::raw_with_end(FRAME_HEARTBEAT, 0, &[], 0x00))
        .await;
    // The peer stops sending but still reads (TCP half-close).
    peer.shutdown_write().await;
    let reason = within(STEP, "connection.closed()", connection.closed()).await;
    assert!(
        matches!(reason, Error::Protocol(DecodeError::BadFrameEnd(0))),
        "{reason:?}"
    );
    let close: ConnectionClose = peer.expect_connection_close().await;
    assert_eq!(close.reply_code, 501);
}

#[tokio::test]
async fn a_huge_declared_frame_is_refused_from_its_header() {
    assert_rejected(
        defaults,
        Tune::default(),
        |channel| frames::frame_header(FRAME_METHOD, channel, u32::MAX),
        DecodeError::FrameTooLarge {
            size: u64::from(u32::MAX) + 8,
            max: 131_072,
        },
        501,
    )
    .await;
}

#[tokio::test]
async fn an_unknown_method_closes_with_540() {
    assert_rejected(
        defaults,
        Tune::default(),
        |channel| frames::method_raw(channel, 99, 77, &[]),
        DecodeError::UnknownMethod {
            class: 99,
            method: 77,
        },
        540,
    )
    .await;
}

#[tokio::test]
async fn a_content_header_without_a_content_method_closes_with_505() {
    assert_rejected(
        defaults,
        Tune::default(),
        |channel| frames::content_header(channel, &BasicProperties::default(), 3),
        DecodeError::UnexpectedFrame {
            got: "content header",
            expected: "a method",
        },
        505,
    )
    .await;
}

#[tokio::test]
async fn a_body_without_a_content_header_closes_with_505() {
    assert_rejected(
        defaults,
        Tune::default(),
        |channel| frames::body(channel, b"stray"),
        DecodeError::UnexpectedFrame {
            got: "content body",
            expected: "a method",
        },
        505,
    )
    .await;
}

#[tokio::test]
async fn a_truncated_method_payload_closes_with_502() {
    // queue.declare-ok whose queue name says 10 bytes but has 3, and nothing after.
    assert_rejected(
        defaults,
        Tune::default(),
        |channel| frames::method_raw(channel, 50, 11, b"\x0aabc"),
        DecodeError::Truncated {
            needed: 10,
            remaining: 3,
        },
        502,
    )
    .await;
}

#[tokio::test]
async fn a_body_overrunning_its_announced_size_closes_with_501() {
    assert_rejected(
        defaults,
        Tune::default(),
        |channel| {
            let deliver = BasicDeliver {
                consumer_tag: ShortString::from_static("nobody"),
                delivery_tag: 1,
                ..Default::default()
            };
            let mut bytes = frames::method(channel, &deliver);
            bytes.extend(frames::content_header(
                channel,
                &BasicProperties::default(),
                3,
            ));
            bytes.extend(frames::body(channel, b"abcde"));
            bytes
        },
        DecodeError::BodyOverrun {
            expected: 3,
            received: 5,
        },
        501,
    )
    .await;
}

#[tokio::test]
async fn a_table_nested_100000_deep_in_a_method_closes_with_502() {
    // No method a server sends after the handshake has a table argument, but the client
    // decodes every method it receives: queue.declare's arguments carry the table here.
    // 100000 levels are 700 KB, so the frame limit is raised to 1 MiB to let them through.
    assert_rejected(
        |o| o.frame_max(0),
        Tune {
            frame_max: 0,
            ..Tune::default()
        },
        |channel| {
            let mut arguments = vec![0, 0]; // reserved ticket
            arguments.extend(frames::short_string("deep"));
            arguments.push(0); // passive, durable, exclusive, auto-delete, no-wait
            arguments.extend(frames::deep_table(100_000));
            frames::method_raw(channel, 50, 10, &arguments)
        },
        DecodeError::NestingTooDeep { limit: MAX_NESTING },
        502,
    )
    .await;
}

#[tokio::test]
async fn frames_on_a_channel_never_opened_close_with_504() {
    assert_rejected(
        defaults,
        Tune::default(),
        |_| frames::method(7, &ChannelCloseOk {}),
        DecodeError::WrongChannel {
            frame: "method",
            channel: 7,
        },
        504,
    )
    .await;
    assert_rejected(
        defaults,
        Tune::default(),
        |_| frames::content_header(9, &BasicProperties::default(), 1),
        DecodeError::WrongChannel {
            frame: "content header",
            channel: 9,
        },
        504,
    )
    .await;
    assert_rejected(
        defaults,
        Tune::default(),
        |_| frames::body(2047, b"x"),
        DecodeError::WrongChannel {
            frame: "content body",
            channel: 2047,
        },
        504,
    )
    .await;
}

// ===== 4 (handshake). deep server properties =====

/// Runs a client's connect against a peer that sends `start` (raw frame bytes) after the
/// protocol header; returns the connect result.
async fn connect_against_start(start: Vec<u8>) -> Result<Connection, Error> {
    let broker = support::FakeBroker::bind().await;
    let options = broker.options();
    let (result, ()) = tokio::join!(
        within(STEP, "connect", Connection::connect_with(options)),
        async {
            let mut peer = broker.accept().await;
            assert_eq!(peer.read_protocol_header().await, support::PROTOCOL_HEADER);
            peer.send_raw(&start).await;
            // Keep the socket open until the client gives up, so the outcome is the client's
            // own verdict, not an end-of-stream.
            let _ = peer.next_frame_within(STEP).await;
        }
    );
    result
}

#[tokio::test]
async fn deeply_nested_server_properties_fail_the_handshake() {
    // 500 levels fit in the 4096 bytes allowed before connection.tune.
    let result =
        connect_against_start(frames::connection_start_raw(&frames::deep_table(500))).await;
    match result {
        Err(Error::Protocol(DecodeError::NestingTooDeep { limit })) => {
            assert_eq!(limit, MAX_NESTING)
        }
        other => panic!("expected NestingTooDeep, got {other:?}"),
    }
    // 100000 levels do not fit: refused from the frame header, before the payload is read.
    let result =
        connect_against_start(frames::connection_start_raw(&frames::deep_table(100_000))).await;
    match result {
        Err(Error::Protocol(DecodeError::FrameTooLarge { max: 4096, .. })) => {}
        other => panic!("expected FrameTooLarge, got {other:?}"),
    }
}

// ===== 5. undecodable delivery =====

#[tokio::test]
async fn a_delivery_with_headers_nested_1000_deep_is_a_per_delivery_error() {
    let (connection, mut peer) = connect(defaults, Tune::default()).await;
    let channel = tokio::join!(connection.open_channel(), peer.accept_channel())
        .0
        .unwrap();
    let id = channel.id();
    let (consumer, consume) = tokio::join!(
        channel.basic_consume("inbox", BasicConsumeOptions::default()),
        async {
            let consume: BasicConsume = peer.expect_method(id).await;
            peer.send_method(
                id,
                &BasicConsumeOk {
                    consumer_tag: ShortString::from_static("ctag-1"),
                },
            )
            .await;
            consume
        }
    );
    assert_eq!(consume.queue, "inbox");
    let mut consumer = consumer.unwrap();
    assert_eq!(consumer.tag(), "ctag-1");

    let deliver = |delivery_tag| BasicDeliver {
        consumer_tag: ShortString::from_static("ctag-1"),
        delivery_tag,
        redelivered: false,
        exchange: ShortString::from_static(""),
        routing_key: ShortString::from_static("inbox"),
    };
    // A poisoned message: its headers nest 1000 deep (about 7 KB, well inside frame_max).
    let properties = frames::properties_with_raw_headers(&frames::deep_table(1000));
    let mut bytes = frames::method(id, &deliver(1));
    bytes.extend(frames::content_header_raw(id, 60, 3, &properties));
    bytes.extend(frames::body(id, b"bad"));
    // Then a good one.
    let good = BasicProperties {
        content_type: Some(ShortString::from_static("text/plain")),
        ..Default::default()
    };
    bytes.extend(frames::content(id, &deliver(2), &good, b"good"));
    peer.send_raw(&bytes).await;

    let first = within(STEP, "the first delivery", consumer.next())
        .await
        .expect("the stream goes on");
    let undecodable = match first {
        Err(Error::UndecodableDelivery(d)) => d,
        other => panic!("expected an undecodable delivery, got {other:?}"),
    };
    assert_eq!(undecodable.delivery_tag(), 1);
    assert_eq!(
        undecodable.error(),
        &DecodeError::NestingTooDeep { limit: MAX_NESTING }
    );
    assert_eq!(undecodable.body().as_ref(), b"bad");
    assert_eq!(undecodable.raw_properties().as_ref(), &properties[..]);
    assert_eq!(undecodable.envelope().routing_key, "inbox");

    let second = within(STEP, "the second delivery", consumer.next())
        .await
        .expect("the stream goes on")
        .expect("the good delivery decodes");
    assert_eq!(second.envelope.delivery_tag, 2);
    assert_eq!(second.body.as_ref(), b"good");
    assert_eq!(
        second.properties.content_type.as_deref(),
        Some("text/plain")
    );

    // The poisoned one can be rejected to the dead-letter exchange.
    undecodable
        .reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    let reject: BasicReject = peer.expect_method(id).await;
    assert_eq!(
        reject,
        BasicReject {
            delivery_tag: 1,
            requeue: false
        }
    );
    second.ack(BasicAckOptions::default()).await.unwrap();
    let ack: BasicAck = peer.expect_method(id).await;
    assert_eq!(ack.delivery_tag, 2);

    // Nothing else happened to the connection or the channel.
    let (declared, _) = tokio::join!(
        channel.queue_declare("after", QueueDeclareOptions::default()),
        async {
            let _: QueueDeclare = peer.expect_method(id).await;
            peer.send_method(id, &declare_ok("after", 0)).await;
        }
    );
    assert_eq!(declared.unwrap().name, "after");
    assert!(connection.is_open());
    assert!(channel.is_open());
}

/// Opens a channel and a consumer with tag `ctag-1` on queue `inbox` against the fake broker.
async fn fake_consumer(
    connection: &Connection,
    peer: &mut support::Peer,
) -> (warren::Channel, warren::Consumer) {
    let channel = tokio::join!(connection.open_channel(), peer.accept_channel())
        .0
        .unwrap();
    let id = channel.id();
    let (consumer, ()) = tokio::join!(
        channel.basic_consume("inbox", BasicConsumeOptions::default()),
        async {
            let _: BasicConsume = peer.expect_method(id).await;
            peer.send_method(
                id,
                &BasicConsumeOk {
                    consumer_tag: ShortString::from_static("ctag-1"),
                },
            )
            .await;
        }
    );
    (channel, consumer.unwrap())
}

fn inbox_deliver(delivery_tag: u64) -> BasicDeliver {
    BasicDeliver {
        consumer_tag: ShortString::from_static("ctag-1"),
        delivery_tag,
        redelivered: false,
        exchange: ShortString::from_static(""),
        routing_key: ShortString::from_static("inbox"),
    }
}

/// The specification's tag `U` (a signed 16-bit integer), which RabbitMQ refuses from
/// publishers but another broker or a proxy may pass on, is read as RabbitMQ's `s`.
#[tokio::test]
async fn a_header_with_the_specifications_u_tag_is_read_as_a_short() {
    let (connection, mut peer) = connect(defaults, Tune::default()).await;
    let (channel, mut consumer) = fake_consumer(&connection, &mut peer).await;
    let id = channel.id();
    let entries: &[u8] = &[1, b'u', b'U', 0x80, 0x00];
    let mut table = (entries.len() as u32).to_be_bytes().to_vec();
    table.extend_from_slice(entries);
    let properties = frames::properties_with_raw_headers(&table);
    let mut bytes = frames::method(id, &inbox_deliver(1));
    bytes.extend(frames::content_header_raw(id, 60, 2, &properties));
    bytes.extend(frames::body(id, b"ok"));
    peer.send_raw(&bytes).await;
    let delivery = within(STEP, "the delivery", consumer.next())
        .await
        .expect("the stream goes on")
        .expect("a header tagged U decodes");
    let headers = delivery.properties.headers.as_ref().unwrap();
    assert_eq!(
        headers.get("u"),
        Some(&warren::wire::FieldValue::I16(i16::MIN))
    );
    assert!(connection.is_open());
}

/// What RabbitMQ never sends: a body announced at 2^63 bytes. It is skipped like any body
/// over max_body_size (nothing is buffered), but the content protocol still holds while it
/// is skipped: a method in the middle of the body breaks the stream, and the client closes
/// with 505 (an overrun would be 501, as for any body; see the unit tests in frame/content.rs).
#[tokio::test]
async fn a_skipped_body_must_still_be_framed_right() {
    let (connection, mut peer) = connect(|o| o.max_body_size(4), Tune::default()).await;
    let (channel, mut consumer) = fake_consumer(&connection, &mut peer).await;
    let id = channel.id();
    // A body of 5 bytes in two frames, skipped, then a good one: the stream goes on.
    let mut bytes = frames::method(id, &inbox_deliver(1));
    bytes.extend(frames::content_header(id, &BasicProperties::default(), 5));
    bytes.extend(frames::body(id, b"abc"));
    bytes.extend(frames::body(id, b"de"));
    bytes.extend(frames::content(
        id,
        &inbox_deliver(2),
        &BasicProperties::default(),
        b"ok",
    ));
    // Then an absurd size, and frames that overrun a small one.
    bytes.extend(frames::method(id, &inbox_deliver(3)));
    bytes.extend(frames::content_header(
        id,
        &BasicProperties::default(),
        1 << 63,
    ));
    bytes.extend(frames::body(id, &[0; 1000]));
    bytes.extend(frames::method(id, &inbox_deliver(4)));
    peer.send_raw(&bytes).await;
    match within(STEP, "the first item", consumer.next()).await {
        Some(Err(Error::UndecodableDelivery(d))) => {
            assert_eq!(d.delivery_tag(), 1);
            assert_eq!(d.error(), &DecodeError::BodyTooLarge { size: 5, max: 4 });
        }
        other => panic!("expected an oversized delivery, got {other:?}"),
    }
    let good = within(STEP, "the second item", consumer.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(good.body.as_ref(), b"ok");
    // A method in the middle of the skipped 2^63-byte body is a protocol violation.
    let close = peer.expect_connection_close().await;
    assert_eq!(close.reply_code, 505, "{close:?}");
    let reason = within(STEP, "connection.closed()", connection.closed()).await;
    assert!(
        matches!(reason, Error::Protocol(DecodeError::UnexpectedFrame { .. })),
        "{reason:?}"
    );
}

/// A returned message whose headers cannot be decoded (RabbitMQ returns what another client
/// published; warren itself refuses to send such headers) still resolves its publish's
/// confirmation, with the properties left empty.
#[tokio::test]
async fn a_returned_message_with_undecodable_headers_still_resolves() {
    use warren::protocol::{BasicPublish, BasicReturn};
    let (connection, mut peer) = connect(defaults, Tune::default()).await;
    let channel = confirm_channel(&connection, &mut peer).await;
    let id = channel.id();
    let mandatory = warren::BasicPublishOptions {
        mandatory: true,
        ..Default::default()
    };
    let confirm = channel
        .basic_publish(
            "amq.direct",
            "nowhere",
            mandatory,
            "deep",
            BasicProperties::default(),
        )
        .await
        .unwrap();
    let _: BasicPublish = peer.expect_method(id).await;
    let properties = frames::properties_with_raw_headers(&frames::deep_table(1000));
    let returned = BasicReturn {
        reply_code: 312,
        reply_text: ShortString::from_static("NO_ROUTE"),
        exchange: ShortString::from_static("amq.direct"),
        routing_key: ShortString::from_static("nowhere"),
    };
    let mut bytes = frames::method(id, &returned);
    bytes.extend(frames::content_header_raw(id, 60, 4, &properties));
    bytes.extend(frames::body(id, b"deep"));
    bytes.extend(frames::method(
        id,
        &BasicAck {
            delivery_tag: 1,
            multiple: false,
        },
    ));
    peer.send_raw(&bytes).await;
    match within(STEP, "the confirmation", confirm).await {
        Ok(warren::Confirmation::Returned(message)) => {
            assert_eq!(&message.body[..], b"deep");
            assert_eq!(message.properties, BasicProperties::default());
        }
        other => panic!("expected the returned message, got {other:?}"),
    }
    assert!(connection.is_open());
    assert!(channel.is_open());
}

#[tokio::test]
async fn a_delivery_trickling_in_byte_by_byte_arrives_whole() {
    let (connection, mut peer) = connect(defaults, Tune::default()).await;
    let channel = tokio::join!(connection.open_channel(), peer.accept_channel())
        .0
        .unwrap();
    let id = channel.id();
    let (consumer, ()) = tokio::join!(
        channel.basic_consume("slow", BasicConsumeOptions::default()),
        async {
            let _: BasicConsume = peer.expect_method(id).await;
            peer.send_method(
                id,
                &BasicConsumeOk {
                    consumer_tag: ShortString::from_static("slow-1"),
                },
            )
            .await;
        }
    );
    let mut consumer = consumer.unwrap();
    let deliver = BasicDeliver {
        consumer_tag: ShortString::from_static("slow-1"),
        delivery_tag: 7,
        redelivered: true,
        exchange: ShortString::from_static("x"),
        routing_key: ShortString::from_static("slow"),
    };
    let properties = BasicProperties {
        message_id: Some(ShortString::from_static("m-7")),
        ..Default::default()
    };
    // Bodies split over two frames, every byte in its own write.
    let mut bytes = frames::method(id, &deliver);
    bytes.extend(frames::content_header(id, &properties, 10));
    bytes.extend(frames::body(id, b"01234"));
    bytes.extend(frames::body(id, b"56789"));
    let cuts: Vec<usize> = (1..bytes.len()).collect();
    let (delivery, ()) = tokio::join!(
        within(STEP, "the delivery", consumer.next()),
        peer.send_raw_in_pieces(&bytes, &cuts, Duration::from_millis(1))
    );
    let delivery = delivery.unwrap().unwrap();
    assert_eq!(delivery.envelope.delivery_tag, 7);
    assert!(delivery.envelope.redelivered);
    assert_eq!(delivery.properties.message_id.as_deref(), Some("m-7"));
    assert_eq!(delivery.body.as_ref(), b"0123456789");
    assert!(connection.is_open());
}

// ===== 8. another protocol =====

#[tokio::test]
async fn a_peer_answering_with_another_protocol_header_fails_connect() {
    let broker = support::FakeBroker::bind().await;
    let options = broker.options();
    let (result, ()) = tokio::join!(
        within(STEP, "connect", Connection::connect_with(options)),
        async {
            let mut peer = broker.accept().await;
            assert_eq!(peer.read_protocol_header().await, support::PROTOCOL_HEADER);
            peer.send_raw(b"AMQP\x00\x00\x08\x00").await;
            peer.shutdown_write().await;
            peer.expect_eof().await;
        }
    );
    match result {
        Err(Error::Protocol(DecodeError::ProtocolMismatch { header })) => {
            assert_eq!(&header, b"AMQP\x00\x00\x08\x00")
        }
        other => panic!("expected ProtocolMismatch, got {other:?}"),
    }
}

#[tokio::test]
async fn a_protocol_header_arriving_in_pieces_is_still_recognised() {
    // Seven bytes first: as many as a frame header. A slow network may cut anywhere.
    let broker = support::FakeBroker::bind().await;
    let options = broker.options();
    let (result, ()) = tokio::join!(
        within(STEP, "connect", Connection::connect_with(options)),
        async {
            let mut peer = broker.accept().await;
            assert_eq!(peer.read_protocol_header().await, support::PROTOCOL_HEADER);
            peer.send_raw_in_pieces(b"AMQP\x00\x00\x08\x00", &[7], Duration::from_millis(100))
                .await;
            peer.shutdown_write().await;
            peer.expect_eof().await;
        }
    );
    match result {
        Err(Error::Protocol(DecodeError::ProtocolMismatch { header })) => {
            assert_eq!(&header, b"AMQP\x00\x00\x08\x00")
        }
        other => panic!("expected ProtocolMismatch, got {other:?}"),
    }
}

#[tokio::test]
async fn a_server_of_another_protocol_is_named_as_such() {
    // An HTTP server on the port answers the protocol header with an error page.
    let broker = support::FakeBroker::bind().await;
    let options = broker.options();
    let (result, ()) = tokio::join!(
        within(STEP, "connect", Connection::connect_with(options)),
        async {
            let mut peer = broker.accept().await;
            assert_eq!(peer.read_protocol_header().await, support::PROTOCOL_HEADER);
            peer.send_raw(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await;
            peer.shutdown_write().await;
            peer.expect_eof().await;
        }
    );
    match result {
        Err(Error::Handshake(message)) => {
            assert!(message.contains("does not speak AMQP"), "{message}");
            assert!(message.contains("HTTP/1.1 400"), "{message}");
        }
        other => panic!("expected a handshake error naming the protocol, got {other:?}"),
    }
}

// ===== 9. authentication =====

#[tokio::test]
async fn a_refused_login_is_an_authentication_error_with_the_reason() {
    let broker = support::FakeBroker::bind().await;
    let options = broker.options().username("alice").password("wrong");
    let text = "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. \
                For details see the broker logfile.";
    let started = Instant::now();
    let (result, start_ok) = tokio::join!(
        within(STEP, "connect", Connection::connect_with(options)),
        async {
            let mut peer = broker.accept().await;
            let start_ok: ConnectionStartOk = peer.start().await;
            peer.send_method(
                0,
                &ConnectionClose {
                    reply_code: 403,
                    reply_text: ShortString::try_from(text).unwrap(),
                    class_id: 10,
                    method_id: 11,
                },
            )
            .await;
            let _: ConnectionCloseOk = peer.expect_method(0).await;
            peer.shutdown_write().await;
            start_ok
        }
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(start_ok.response.as_bytes().as_ref(), b"\0alice\0wrong");
    let error = result.expect_err("the login was refused");
    match &error {
        Error::Authentication { mechanism, reason } => {
            assert_eq!(mechanism, "PLAIN");
            let close = reason.as_ref().expect("the broker said why");
            assert_eq!(close.code.0, 403);
            assert_eq!(close.text, text);
            assert_eq!(close.initiator, Initiator::Server);
        }
        other => panic!("expected an authentication error, got {other:?}"),
    }
    assert_eq!(error.reply_code().map(|c| c.0), Some(403));
    let shown = error.to_string();
    assert!(shown.contains("ACCESS_REFUSED"), "{shown}");
    assert!(!shown.contains("wrong"), "the password leaked: {shown}");
    assert!(
        !format!("{error:?}").contains("wrong"),
        "the password leaked: {error:?}"
    );
}

#[tokio::test]
async fn a_socket_dropped_after_start_ok_is_an_authentication_error() {
    let broker = support::FakeBroker::bind().await;
    let options = broker.options();
    let (result, ()) = tokio::join!(
        within(STEP, "connect", Connection::connect_with(options)),
        async {
            let mut peer = broker.accept().await;
            let _: ConnectionStartOk = peer.start().await;
            drop(peer);
        }
    );
    match result {
        Err(Error::Authentication { mechanism, reason }) => {
            assert_eq!(mechanism, "PLAIN");
            assert!(reason.is_none(), "{reason:?}");
        }
        other => panic!("expected an authentication error, got {other:?}"),
    }
}

// ===== 10 (writes). a peer that stops reading =====

/// A peer that stops reading while the client has far more to send than its write queue
/// takes (1 MiB) and the socket buffers hold: publishes wait in the command queue, and once the
/// peer reads again every one of them arrives, in order, and so does a call made after them.
#[tokio::test]
async fn publishes_held_back_by_a_peer_that_stops_reading_all_arrive_once_it_reads() {
    const PUBLISHES: usize = 256;
    const BODY: usize = 64 * 1024;
    let (connection, mut peer) = connect(defaults, Tune::default()).await;
    let channel = tokio::join!(connection.open_channel(), peer.accept_channel())
        .0
        .unwrap();
    let id = channel.id();
    let publisher = {
        let channel = channel.clone();
        tokio::spawn(async move {
            for i in 0..PUBLISHES {
                let body = bytes::Bytes::from(vec![i as u8; BODY]);
                channel
                    .basic_publish(
                        "",
                        "q",
                        Default::default(),
                        body,
                        BasicProperties::default(),
                    )
                    .await
                    .unwrap();
            }
            // A call queued behind all of them.
            channel
                .queue_declare("after", QueueDeclareOptions::default())
                .await
                .unwrap()
        })
    };
    // 16 MiB are on their way; the peer reads nothing for a while.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !publisher.is_finished(),
        "the publisher should be held back"
    );

    let mut bodies = 0;
    let mut body_bytes = 0;
    while bodies < PUBLISHES {
        match peer.next_frame().await {
            Some(Frame::Body { payload, .. }) => {
                assert!(
                    payload.iter().all(|&b| b == bodies as u8),
                    "body {bodies} out of order"
                );
                body_bytes += payload.len();
                if body_bytes == BODY {
                    bodies += 1;
                    body_bytes = 0;
                }
            }
            Some(Frame::Method { .. } | Frame::Header { .. } | Frame::Heartbeat) => {}
            None => panic!("the client closed the socket after {bodies} bodies"),
        }
    }
    let declare: QueueDeclare = peer.expect_method(id).await;
    assert_eq!(declare.queue, "after");
    peer.send_method(id, &declare_ok("after", 0)).await;
    let declared = within(STEP, "the call after the publishes", publisher)
        .await
        .unwrap();
    assert_eq!(declared.name, "after");
}

/// The same outside the runtime's tasks (this test's body runs in `block_on`, beside the
/// workers of a multi-thread runtime), in confirm mode,
/// where the caller writes its publishes to the socket itself while the driver is idle: once
/// the socket stops taking them, the rest of what the caller held goes to the driver, and
/// every publish arrives whole and in order (no frame cut into by another), is entered in the
/// ledger in that order, and is confirmed.
#[tokio::test(flavor = "multi_thread")]
async fn confirmed_publishes_written_by_the_callers_thread_survive_a_full_socket() {
    const PUBLISHES: usize = 20_000;
    const BODY: usize = 1000;
    let (connection, mut peer) = connect(defaults, Tune::default()).await;
    let channel = confirm_channel(&connection, &mut peer).await;
    let id = channel.id();
    let body_of = |i: usize| {
        let mut body = vec![(i % 251) as u8; BODY];
        body[..8].copy_from_slice(&(i as u64).to_be_bytes());
        bytes::Bytes::from(body)
    };
    let publishing = async {
        let mut confirms = Vec::with_capacity(PUBLISHES);
        for i in 0..PUBLISHES {
            let confirm = channel
                .basic_publish(
                    "",
                    "q",
                    Default::default(),
                    body_of(i),
                    BasicProperties::default(),
                )
                .await
                .unwrap();
            confirms.push(confirm);
        }
        let mut acked = 0;
        for confirm in confirms {
            assert_eq!(confirm.await.unwrap(), warren::Confirmation::Ack);
            acked += 1;
        }
        acked
    };
    let broker = async {
        // About 20 MiB are on their way; the peer reads nothing for a while.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut published = 0;
        while published < PUBLISHES {
            match peer.next_frame().await {
                Some(Frame::Method { channel, method }) => {
                    assert_eq!(channel, id);
                    assert!(
                        matches!(method, warren::protocol::Method::BasicPublish(_)),
                        "publish {published}: {method:?}"
                    );
                }
                Some(Frame::Header { header, .. }) => {
                    assert_eq!(header.body_size, BODY as u64, "publish {published}");
                }
                Some(Frame::Body { payload, .. }) => {
                    assert_eq!(payload, body_of(published), "publish {published}");
                    published += 1;
                    // Confirmed as they come, in bursts.
                    if published % 1000 == 0 {
                        let ack = BasicAck {
                            delivery_tag: published as u64,
                            multiple: true,
                        };
                        peer.send_method(id, &ack).await;
                    }
                }
                Some(Frame::Heartbeat) => {}
                None => panic!("the client closed the socket after {published} publishes"),
            }
        }
    };
    let (acked, ()) = within(
        Duration::from_secs(60),
        "publishing through a full socket",
        async { tokio::join!(publishing, broker) },
    )
    .await;
    assert_eq!(acked, PUBLISHES);
    let stats = connection.stats();
    assert_eq!(stats.published, PUBLISHES as u64);
    assert!(
        stats.direct_writes > 0,
        "the caller wrote none itself: {stats:?}"
    );
    assert!(connection.is_open());
}

// ===== 10. random bytes =====

/// Sends `bytes` after the handshake (with channel 1 open), then ends the stream (so that a
/// partial frame cannot leave the client rightly waiting for the rest), and checks that the
/// client ends the connection with an error of its own, promptly, and drops the socket. A
/// panic in the driver would show as `InvalidState` (the driver task gone without a reason).
///
/// Whether the client's connection.close reaches the peer is checked by
/// `a_peer_that_half_closes_right_after_a_bad_frame_still_gets_the_close`.
fn survive(bytes: Vec<u8>) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let (connection, mut peer) = connect(defaults, Tune::default()).await;
        let channel = tokio::join!(connection.open_channel(), peer.accept_channel())
            .0
            .unwrap();
        peer.send_raw_best_effort(&bytes, STEP).await;
        peer.shutdown_write().await;
        let reason = within(STEP, "the connection to end", connection.closed()).await;
        match &reason {
            // Bytes the client refused.
            Error::Protocol(_) => {}
            // The stream ended, everything before having been acceptable.
            Error::Io(_) => {}
            // The bytes happened to hold a connection.close of the peer's.
            Error::ConnectionClosed(c) => prop_assert_eq!(c.initiator, Initiator::Server),
            other => prop_assert!(false, "the connection ended with {:?}", other),
        }
        prop_assert!(!connection.is_open());
        prop_assert!(!channel.is_open());
        peer.expect_eof().await;
        Ok(())
    })
}

/// A frame with a plausible header (known type, a small channel) and arbitrary payload, so
/// that the payload reaches the method, header and body decoders.
fn plausible_frame() -> impl Strategy<Value = Vec<u8>> {
    let method = (
        prop::sample::select(vec![10u16, 20, 40, 50, 60, 85, 90]),
        prop::sample::select(vec![
            10u16, 11, 20, 21, 30, 31, 40, 41, 50, 51, 60, 70, 71, 80, 90, 100, 120,
        ]),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(class, method, args)| {
            let mut payload = class.to_be_bytes().to_vec();
            payload.extend_from_slice(&method.to_be_bytes());
            payload.extend(args);
            (FRAME_METHOD, payload)
        });
    let other = (
        prop::sample::select(vec![FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT]),
        prop::collection::vec(any::<u8>(), 0..64),
    );
    (prop_oneof![method, other], 0u16..3)
        .prop_map(|((kind, payload), channel)| frames::raw(kind, channel, &payload))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_end_the_connection_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        survive(bytes)?;
    }

    #[test]
    fn random_frames_end_the_connection_cleanly(frames in prop::collection::vec(plausible_frame(), 1..6)) {
        survive(frames.concat())?;
    }
}
