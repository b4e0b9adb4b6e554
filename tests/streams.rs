//! RabbitMQ streams over AMQP 0-9-1 against the real broker: declaring with typed arguments,
//! consuming from each kind of `x-stream-offset` (checked through the offsets the broker puts
//! on deliveries), the rules RabbitMQ sets for stream consumers, refused before sending, and
//! where a stream consumer resumes after automatic recovery.

mod common;
mod faults;

use std::time::{Duration, SystemTime};

use common::*;
use faults::Relay;
use futures_util::StreamExt;
use warren::wire::{FieldTable, FieldValue};
use warren::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, Channel, Connection, ConnectionEvent,
    ConnectionStatus, Consumer, Error, Events, RecoveryPolicy, StreamConsumeOptions,
    StreamDeclareOptions, StreamOffset,
};

/// Declares a stream named `what`-unique (deleted by `cleanup`) with a few typed arguments.
async fn declare_stream(channel: &Channel, cleanup: &mut Cleanup, what: &str) -> String {
    let name = cleanup.queue(unique(what));
    let options = StreamDeclareOptions {
        max_length_bytes: Some(10_000_000),
        max_age: Some(Duration::from_secs(3600)),
        max_segment_size_bytes: Some(1_000_000),
        ..Default::default()
    };
    within(
        "stream_declare",
        channel.stream_declare(&name, options.clone()),
    )
    .await
    .unwrap_or_else(|e| panic!("declaring stream {name}: {e}"));
    // Declaring it again with the same arguments is accepted: they reached the broker as
    // declared (a different value would be a 406).
    within(
        "stream_declare again",
        channel.stream_declare(&name, options),
    )
    .await
    .expect("declaring the same stream again");
    name
}

/// Publishes `bodies` to `stream` on a confirm channel, each confirmed.
async fn publish_all(
    connection: &Connection,
    stream: &str,
    bodies: impl IntoIterator<Item = String>,
) {
    let channel = confirm_channel(connection).await;
    for body in bodies {
        publish(&channel, "", stream, body.as_bytes()).await;
    }
    channel
        .close()
        .await
        .expect("closing the publishing channel");
}

/// A stream consumer from `offset` on a new channel with prefetch 100.
async fn consume_from(connection: &Connection, stream: &str, offset: StreamOffset) -> Consumer {
    let channel = open(connection).await;
    within(
        "basic.qos",
        channel.basic_qos(100, BasicQosOptions::default()),
    )
    .await
    .expect("basic.qos");
    within(
        "stream_consume",
        channel.stream_consume(stream, StreamConsumeOptions::from(offset)),
    )
    .await
    .unwrap_or_else(|e| panic!("consuming {stream} from {offset:?}: {e}"))
}

/// The next `n` deliveries as (offset, body), each acknowledged.
async fn take(consumer: &mut Consumer, n: usize) -> Vec<(u64, String)> {
    let mut taken = Vec::new();
    for _ in 0..n {
        let delivery = next_delivery(consumer).await;
        let offset = delivery
            .stream_offset()
            .expect("a delivery from a stream carries x-stream-offset");
        taken.push((offset, String::from_utf8_lossy(&delivery.body).into_owned()));
        within("ack", delivery.ack(BasicAckOptions::default()))
            .await
            .expect("ack");
    }
    taken
}

fn numbered(range: std::ops::Range<u64>) -> Vec<(u64, String)> {
    range.map(|i| (i, format!("m{i}"))).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn consumers_start_where_their_offset_says() {
    run(async {
        let mut cleanup = Cleanup::new();
        let connection = connect().await;
        let channel = open(&connection).await;
        let stream = declare_stream(&channel, &mut cleanup, "stream-offsets").await;
        publish_all(&connection, &stream, (0..10).map(|i| format!("m{i}"))).await;

        // First: everything, in order, offsets from 0.
        let mut first = consume_from(&connection, &stream, StreamOffset::First).await;
        assert_eq!(take(&mut first, 10).await, numbered(0..10));

        // Offset(4): from the fifth message.
        let mut from_4 = consume_from(&connection, &stream, StreamOffset::Offset(4)).await;
        assert_eq!(take(&mut from_4, 6).await, numbered(4..10));

        // Last: the last chunk, which ends with the last message.
        let mut last = consume_from(&connection, &stream, StreamOffset::Last).await;
        let head = take(&mut last, 1).await;
        assert!(head[0].0 <= 9, "Last starts within the stream: {head:?}");
        let rest = take(&mut last, usize::try_from(9 - head[0].0).unwrap()).await;
        assert_eq!(rest.last().unwrap_or(&head[0]).0, 9);

        // Next: nothing that is already there, only what comes after.
        let mut next = consume_from(&connection, &stream, StreamOffset::Next).await;
        assert!(
            !has_item_within(&mut next, Duration::from_millis(500)).await,
            "Next delivers nothing old"
        );
        publish_all(&connection, &stream, (10..12).map(|i| format!("m{i}"))).await;
        assert_eq!(take(&mut next, 2).await, numbered(10..12));
        // The First consumer sees the new ones too: a stream is read, not drained.
        assert_eq!(take(&mut first, 2).await, numbered(10..12));
        assert_eq!(take(&mut from_4, 2).await, numbered(10..12));

        // An offset past the end waits for that message.
        let mut ahead = consume_from(&connection, &stream, StreamOffset::Offset(13)).await;
        publish_all(&connection, &stream, (12..14).map(|i| format!("m{i}"))).await;
        assert_eq!(take(&mut ahead, 1).await, numbered(13..14));
        connection.close().await.expect("closing");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timestamp_offset_starts_at_the_messages_published_since() {
    run(async {
        let mut cleanup = Cleanup::new();
        let connection = connect().await;
        let channel = open(&connection).await;
        let stream = declare_stream(&channel, &mut cleanup, "stream-timestamp").await;
        publish_all(&connection, &stream, (0..5).map(|i| format!("m{i}"))).await;
        // Timestamps are in seconds: leave a whole second between the two batches.
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let since = SystemTime::now() - Duration::from_millis(500);
        publish_all(&connection, &stream, (5..10).map(|i| format!("m{i}"))).await;

        let mut consumer = consume_from(&connection, &stream, StreamOffset::Timestamp(since)).await;
        assert_eq!(take(&mut consumer, 5).await, numbered(5..10));

        // A time in the future: nothing until something new comes.
        let future = SystemTime::now() + Duration::from_secs(3600);
        let mut later = consume_from(&connection, &stream, StreamOffset::Timestamp(future)).await;
        assert!(!has_item_within(&mut later, Duration::from_millis(500)).await);
        connection.close().await.expect("closing");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_consumers_without_a_prefetch_or_with_no_ack_are_refused_before_sending() {
    run(async {
        let mut cleanup = Cleanup::new();
        let connection = connect().await;
        let channel = open(&connection).await;
        let stream = declare_stream(&channel, &mut cleanup, "stream-rules").await;

        // No basic.qos on this channel yet.
        let error = channel
            .stream_consume(&stream, StreamConsumeOptions::from(StreamOffset::First))
            .await
            .expect_err("no prefetch");
        assert!(
            matches!(&error, Error::InvalidArgument(text) if text.contains("basic_qos")),
            "{error:?}"
        );
        assert!(
            channel.is_open(),
            "nothing was sent: the channel is still open"
        );

        within(
            "basic.qos",
            channel.basic_qos(10, BasicQosOptions::default()),
        )
        .await
        .expect("basic.qos");
        let no_ack = BasicConsumeOptions {
            no_ack: true,
            arguments: FieldTable::new().with("x-stream-offset", "first"),
            ..Default::default()
        };
        let error = channel
            .basic_consume(&stream, no_ack)
            .await
            .expect_err("no_ack");
        assert!(
            matches!(&error, Error::InvalidArgument(text) if text.contains("no_ack")),
            "{error:?}"
        );
        assert!(channel.is_open());

        // basic_consume with the argument by hand works once the rules are kept.
        let manual = BasicConsumeOptions {
            arguments: FieldTable::new().with("x-stream-offset", FieldValue::I64(0)),
            ..Default::default()
        };
        let mut consumer = within("basic_consume", channel.basic_consume(&stream, manual))
            .await
            .expect("a stream consumer through basic_consume");
        publish_all(&connection, &stream, ["hello".to_owned()]).await;
        assert_eq!(take(&mut consumer, 1).await, vec![(0, "hello".to_owned())]);

        // Bad typed values are refused before sending too.
        let error = channel
            .stream_consume(
                &stream,
                StreamConsumeOptions::from(StreamOffset::Offset(u64::MAX)),
            )
            .await
            .expect_err("offset too large");
        assert!(matches!(error, Error::InvalidArgument(_)), "{error:?}");
        let error = channel
            .stream_declare("", StreamDeclareOptions::default())
            .await
            .expect_err("no name");
        assert!(matches!(error, Error::InvalidArgument(_)), "{error:?}");
        assert!(channel.is_open());
        connection.close().await.expect("closing");
    })
    .await;
}

/// Recovery that tries again quickly: backoff from 10 ms up to 500 ms.
fn quick_recovery() -> RecoveryPolicy {
    RecoveryPolicy::default()
        .initial_delay(Duration::from_millis(10))
        .max_delay(Duration::from_millis(500))
}

/// Waits until the connection reports `Recovered`, failing if it closes instead.
async fn recovered(events: &mut Events) {
    within("the connection to recover", async {
        loop {
            match events.next().await {
                Some(ConnectionEvent::Recovered { .. }) => return,
                Some(ConnectionEvent::Closed(error)) => {
                    panic!("the connection closed instead of recovering: {error}")
                }
                Some(_) => {}
                None => panic!("the events ended before the connection recovered"),
            }
        }
    })
    .await
}

/// Waits until `consumer` holds `n` deliveries not yet taken.
async fn buffered(consumer: &Consumer, n: usize) {
    eventually("deliveries to reach the consumer's buffer", || {
        let count = consumer.buffered_count();
        async move { count >= n }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recovered_stream_consumer_resumes_after_the_last_delivery_taken() {
    run(async {
        let mut cleanup = Cleanup::new();
        let name = unique("stream-resume");
        let connection =
            connect_with(options().connection_name(&name).recovery(quick_recovery())).await;
        let publisher = connect().await;
        let channel = open(&publisher).await;
        let stream = declare_stream(&channel, &mut cleanup, "stream-resume").await;
        publish_all(&publisher, &stream, (0..10).map(|i| format!("m{i}"))).await;

        // Four taken; the other six wait in the consumer's buffer, never handed out.
        let mut consumer = consume_from(&connection, &stream, StreamOffset::First).await;
        assert_eq!(take(&mut consumer, 4).await, numbered(0..4));
        buffered(&consumer, 6).await;

        let mut events = connection.events();
        let line = broker_connection(&name, &["pid"]).expect("the broker lists the connection");
        rabbitmqctl(&[
            "close_connection",
            &line[0],
            "closed by the stream resume test",
        ]);
        publish_all(&publisher, &stream, (10..13).map(|i| format!("m{i}"))).await;
        recovered(&mut events).await;
        assert_eq!(connection.status(), ConnectionStatus::Open);

        // From offset 4: the buffered six (purged at the loss) and the three published
        // around the loss, none of the four taken before.
        assert_eq!(take(&mut consumer, 9).await, numbered(4..13));
        assert!(
            !has_item_within(&mut consumer, Duration::from_millis(500)).await,
            "nothing is delivered twice"
        );

        // A second loss resumes from the last taken again, not from where the first began.
        let mut events = connection.events();
        let line = broker_connection(&name, &["pid"]).expect("the broker lists the connection");
        rabbitmqctl(&[
            "close_connection",
            &line[0],
            "closed by the stream resume test again",
        ]);
        recovered(&mut events).await;
        publish_all(&publisher, &stream, ["m13".to_owned()]).await;
        assert_eq!(take(&mut consumer, 1).await, numbered(13..14));
        assert!(!has_item_within(&mut consumer, Duration::from_millis(500)).await);

        // The record keeps the arguments the consumer was started with.
        let recorded = connection.topology().consumers;
        assert_eq!(recorded.len(), 1);
        assert_eq!(
            recorded[0].arguments.get("x-stream-offset"),
            Some(&FieldValue::from("first"))
        );
        connection.close().await.expect("closing");
        publisher.close().await.expect("closing the publisher");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_next_consumer_gets_what_was_published_while_down_once_it_took_something() {
    run(async {
        let mut cleanup = Cleanup::new();
        let relay = Relay::start(broker_addr()).await;
        let connection = connect_with(relay.options(options()).recovery(quick_recovery())).await;
        let publisher = connect().await;
        let channel = open(&publisher).await;
        let stream = declare_stream(&channel, &mut cleanup, "stream-resume-next").await;
        publish_all(&publisher, &stream, (0..4).map(|i| format!("m{i}"))).await;

        // Both from Next: one takes what comes, the other takes nothing (it stays buffered).
        let mut taker = consume_from(&connection, &stream, StreamOffset::Next).await;
        let mut idle = consume_from(&connection, &stream, StreamOffset::Next).await;
        publish_all(&publisher, &stream, (4..6).map(|i| format!("m{i}"))).await;
        assert_eq!(take(&mut taker, 2).await, numbered(4..6));
        buffered(&idle, 2).await;

        // Down, and refused, while two more are published.
        let mut events = connection.events();
        relay.refuse().await;
        relay.cut();
        eventually("the connection to notice the loss", || {
            let status = connection.status();
            async move { status != ConnectionStatus::Open }
        })
        .await;
        publish_all(&publisher, &stream, (6..8).map(|i| format!("m{i}"))).await;
        relay.restore().await;
        recovered(&mut events).await;
        publish_all(&publisher, &stream, ["m8".to_owned()]).await;

        // The taker resumes at offset 6: nothing published while it was down is skipped.
        assert_eq!(take(&mut taker, 3).await, numbered(6..9));
        // The idle one took nothing, so it keeps Next: its buffered two were purged at the
        // loss and what was published while it was down is not for it; m8 is.
        assert_eq!(take(&mut idle, 1).await, numbered(8..9));
        assert!(!has_item_within(&mut taker, Duration::from_millis(300)).await);
        assert!(!has_item_within(&mut idle, Duration::from_millis(300)).await);
        connection.close().await.expect("closing");
        publisher.close().await.expect("closing the publisher");
    })
    .await;
}
