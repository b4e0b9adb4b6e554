//! Consumers against the real broker: many per channel, server cancel (queue deleted),
//! application cancel, dropping a consumer, exclusive and no-ack consumers, undecodable
//! deliveries, and how channel and connection closes end the streams.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use warren::wire::{DecodeError, FieldTable, FieldValue};
use warren::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicQosOptions, BasicRejectOptions,
    Error, ExchangeKind, Initiator, QueueBindOptions, QueueDeclareOptions, ReplyCode,
};

async fn consume(channel: &warren::Channel, queue: &str) -> warren::Consumer {
    consume_with(channel, queue, BasicConsumeOptions::default()).await
}

async fn consume_with(
    channel: &warren::Channel,
    queue: &str,
    options: BasicConsumeOptions,
) -> warren::Consumer {
    within("basic.consume", channel.basic_consume(queue, options))
        .await
        .unwrap_or_else(|e| panic!("consuming from {queue}: {e}"))
}

fn body(delivery: &warren::Delivery) -> String {
    String::from_utf8(delivery.body.to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn many_consumers_on_one_channel_each_get_their_own_messages() {
    run(async {
        let connection = connect().await;
        let setup = confirm_channel(&connection).await;
        let channel = open(&connection).await;
        let mut queues = Vec::new();
        let mut consumers = Vec::new();
        for _ in 0..5 {
            let queue = exclusive_queue(&setup).await;
            consumers.push(consume(&channel, &queue).await);
            queues.push(queue);
        }
        let tags: BTreeSet<String> = consumers.iter().map(|c| c.tag().to_owned()).collect();
        assert_eq!(tags.len(), 5, "every consumer has its own tag");
        assert_eq!(
            queue_counts(&setup, &queues[0]).await.consumer_count,
            1,
            "the broker sees the consumer"
        );
        for (q, queue) in queues.iter().enumerate() {
            for i in 0..3 {
                publish(&setup, "", queue, format!("q{q}-m{i}").as_bytes()).await;
            }
        }
        for (q, consumer) in consumers.iter_mut().enumerate() {
            for i in 0..3 {
                let delivery = next_delivery(consumer).await;
                assert_eq!(body(&delivery), format!("q{q}-m{i}"));
                assert_eq!(delivery.envelope.consumer_tag, consumer.tag());
                assert_eq!(delivery.envelope.routing_key, queues[q].as_str());
                assert_eq!(delivery.channel().id(), channel.id());
                within("ack", delivery.ack(BasicAckOptions::default()))
                    .await
                    .unwrap();
            }
            assert!(
                !has_item_within(consumer, Duration::from_millis(100)).await,
                "consumer {q} gets nothing else"
            );
        }
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn consumers_of_one_queue_share_its_messages() {
    run(async {
        let connection = connect().await;
        let setup = confirm_channel(&connection).await;
        let queue = exclusive_queue(&setup).await;
        let channel = open(&connection).await;
        let mut first = consume(&channel, &queue).await;
        let mut second = consume(&channel, &queue).await;
        for i in 0..10 {
            publish(&setup, "", &queue, format!("m{i}").as_bytes()).await;
        }
        let mut seen = BTreeSet::new();
        let mut per_consumer = [0, 0];
        while seen.len() < 10 {
            let (index, delivery) = tokio::select! {
                d = next_delivery(&mut first) => (0, d),
                d = next_delivery(&mut second) => (1, d),
            };
            per_consumer[index] += 1;
            assert!(seen.insert(body(&delivery)), "no message twice");
            within("ack", delivery.ack(BasicAckOptions::default()))
                .await
                .unwrap();
        }
        assert!(
            per_consumer[0] > 0 && per_consumer[1] > 0,
            "the broker spreads messages over both consumers: {per_consumer:?}"
        );
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_the_queue_cancels_the_consumer_and_ends_the_stream() {
    run(async {
        let mut cleanup = Cleanup::new();
        let connection = connect().await;
        let setup = confirm_channel(&connection).await;
        let queue = cleanup.queue(unique("q-cancelled"));
        declare_queue(&setup, &queue).await;
        let channel = open(&connection).await;
        let mut consumer = consume(&channel, &queue).await;
        let tag = consumer.tag().to_owned();
        publish(&setup, "", &queue, b"before the delete").await;
        let delivery = next_delivery(&mut consumer).await;
        within("ack", delivery.ack(BasicAckOptions::default()))
            .await
            .unwrap();
        assert_eq!(connection.topology().consumers.len(), 1);

        within(
            "queue.delete",
            setup.queue_delete(&queue, Default::default()),
        )
        .await
        .unwrap();
        match next_item(&mut consumer).await {
            Some(Err(Error::ConsumerCancelled { consumer_tag })) => assert_eq!(consumer_tag, tag),
            other => panic!("expected ConsumerCancelled, got {other:?}"),
        }
        assert!(
            next_item(&mut consumer).await.is_none(),
            "the stream ends after the cancel"
        );
        assert!(next_item(&mut consumer).await.is_none(), "and stays ended");
        // The channel is unaffected, and the connection forgot the consumer.
        assert!(channel.is_open());
        assert!(connection.topology().consumers.is_empty());
        let other = exclusive_queue(&setup).await;
        let mut again = consume(&channel, &other).await;
        publish(&setup, "", &other, b"after").await;
        assert_eq!(&next_delivery(&mut again).await.body[..], b"after");
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_ends_the_stream_and_the_broker_stops_delivering() {
    run(async {
        let connection = connect().await;
        let setup = confirm_channel(&connection).await;
        let queue = exclusive_queue(&setup).await;
        let channel = open(&connection).await;
        let mut consumer = consume(&channel, &queue).await;
        publish(&setup, "", &queue, b"one").await;
        let delivery = next_delivery(&mut consumer).await;
        within("ack", delivery.ack(BasicAckOptions::default()))
            .await
            .unwrap();
        within("cancel", consumer.cancel())
            .await
            .expect("basic.cancel");
        within("cancel again", consumer.cancel())
            .await
            .expect("cancelling twice is harmless");
        assert!(next_item(&mut consumer).await.is_none(), "the stream ends");
        assert_eq!(queue_counts(&setup, &queue).await.consumer_count, 0);
        publish(&setup, "", &queue, b"two").await;
        assert_eq!(
            queue_counts(&setup, &queue).await.message_count,
            1,
            "nobody consumes any more"
        );

        // Channel::basic_cancel with the tag does the same.
        let mut consumer = consume(&channel, &queue).await;
        let delivery = next_delivery(&mut consumer).await;
        assert_eq!(&delivery.body[..], b"two");
        within("ack", delivery.ack(BasicAckOptions::default()))
            .await
            .unwrap();
        within(
            "basic.cancel",
            channel.basic_cancel(consumer.tag(), Default::default()),
        )
        .await
        .unwrap();
        assert!(next_item(&mut consumer).await.is_none());
        assert_eq!(queue_counts(&setup, &queue).await.consumer_count, 0);
        assert!(connection.topology().consumers.is_empty());
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_a_consumer_requeues_its_unread_deliveries() {
    run(async {
        let connection = connect().await;
        let setup = confirm_channel(&connection).await;
        let queue = exclusive_queue(&setup).await;
        let channel = open(&connection).await;
        within(
            "basic.qos",
            channel.basic_qos(10, BasicQosOptions::default()),
        )
        .await
        .unwrap();
        for i in 0..5 {
            publish(&setup, "", &queue, format!("m{i}").as_bytes()).await;
        }
        let mut consumer = consume(&channel, &queue).await;
        let first = next_delivery(&mut consumer).await;
        let held = next_delivery(&mut consumer).await;
        assert_eq!((body(&first), body(&held)), ("m0".into(), "m1".into()));
        within("ack", first.ack(BasicAckOptions::default()))
            .await
            .unwrap();
        // Wait until the broker has sent all five (three of them sit unread in the buffer).
        eventually("the broker delivered everything", || {
            let setup = setup.clone();
            let queue = queue.clone();
            async move { queue_counts(&setup, &queue).await.message_count == 0 }
        })
        .await;

        drop(consumer);
        let other = open(&connection).await;
        let mut successor = consume(&other, &queue).await;
        let mut bodies = Vec::new();
        for _ in 0..3 {
            let delivery = next_delivery(&mut successor).await;
            assert!(delivery.envelope.redelivered, "{}", body(&delivery));
            bodies.push(body(&delivery));
            within("ack", delivery.ack(BasicAckOptions::default()))
                .await
                .unwrap();
        }
        bodies.sort();
        assert_eq!(
            bodies,
            ["m2", "m3", "m4"],
            "the unread deliveries came back"
        );

        // The delivery read before the drop is still ours to acknowledge, on its channel.
        within(
            "ack of the held delivery",
            held.ack(BasicAckOptions::default()),
        )
        .await
        .unwrap();
        within("channel.close", channel.close()).await.unwrap();
        assert!(
            !has_item_within(&mut successor, Duration::from_millis(300)).await,
            "the acked delivery is not requeued when its channel closes"
        );
        assert_eq!(queue_counts(&setup, &queue).await.message_count, 0);
        assert_eq!(queue_counts(&setup, &queue).await.consumer_count, 1);
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn consumer_tag_exclusive_and_no_ack_options_reach_the_broker() {
    run(async {
        let connection = connect().await;
        let setup = confirm_channel(&connection).await;
        let queue = exclusive_queue(&setup).await;
        let channel = open(&connection).await;
        let tag = unique("tag");
        let mut consumer = consume_with(
            &channel,
            &queue,
            BasicConsumeOptions {
                consumer_tag: tag.clone(),
                exclusive: true,
                no_ack: true,
                ..Default::default()
            },
        )
        .await;
        assert_eq!(consumer.tag(), tag);

        // Exclusive: nobody else may consume.
        let intruder = open(&connection).await;
        let result = within(
            "a second consumer",
            intruder.basic_consume(&queue, BasicConsumeOptions::default()),
        )
        .await;
        match result {
            Err(Error::ChannelClosed { close, .. }) => {
                assert_eq!(close.code, ReplyCode::ACCESS_REFUSED, "{close}")
            }
            other => panic!("expected 403, got {other:?}"),
        }

        // no_ack: delivered means gone, nothing to requeue when the channel closes.
        for i in 0..3 {
            publish(&setup, "", &queue, format!("m{i}").as_bytes()).await;
        }
        for i in 0..3 {
            let delivery = next_delivery(&mut consumer).await;
            assert_eq!(body(&delivery), format!("m{i}"));
            assert_eq!(delivery.envelope.consumer_tag, tag.as_str());
        }
        within("channel.close", channel.close()).await.unwrap();
        assert_eq!(queue_counts(&setup, &queue).await.message_count, 0);
        // Closing the channel ends its consumers' streams with the close, then nothing.
        match next_item(&mut consumer).await {
            Some(Err(Error::ChannelClosed { close, .. })) => {
                assert_eq!(close.initiator, Initiator::Client);
                assert!(close.is_normal());
            }
            other => panic!("expected the channel close, got {other:?}"),
        }
        assert!(next_item(&mut consumer).await.is_none());
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_channel_error_ends_its_consumers_with_the_close() {
    run(async {
        let connection = connect().await;
        let setup = confirm_channel(&connection).await;
        let queue = exclusive_queue(&setup).await;
        let channel = open(&connection).await;
        let mut consumer = consume(&channel, &queue).await;
        let result = within(
            "passive declare of a missing queue",
            channel.queue_declare(
                &unique("q-missing"),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
            ),
        )
        .await;
        assert!(result.is_err());
        match next_item(&mut consumer).await {
            Some(Err(Error::ChannelClosed { close, .. })) => {
                assert_eq!(close.code, ReplyCode::NOT_FOUND);
                assert_eq!(close.initiator, Initiator::Server);
            }
            other => panic!("expected the channel close, got {other:?}"),
        }
        assert!(next_item(&mut consumer).await.is_none());
        assert_eq!(queue_counts(&setup, &queue).await.consumer_count, 0);
        within("connection.close", connection.close())
            .await
            .unwrap();
        // A connection close ends consumers the same way.
        let (connection, channel) = common::channel().await;
        let queue = exclusive_queue(&channel).await;
        let mut consumer = consume(&channel, &queue).await;
        within("connection.close", connection.close())
            .await
            .unwrap();
        match next_item(&mut consumer).await {
            Some(Err(Error::ConnectionClosed(close))) => {
                assert_eq!(close.initiator, Initiator::Client)
            }
            other => panic!("expected the connection close, got {other:?}"),
        }
        assert!(next_item(&mut consumer).await.is_none());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_undecodable_delivery_is_a_per_message_error_that_can_be_rejected() {
    run(async {
        let mut cleanup = Cleanup::new();
        let connection = connect().await;
        let setup = confirm_channel(&connection).await;
        let dlx = cleanup.exchange(unique("x-dlx-undecodable"));
        declare_exchange(&setup, &dlx, ExchangeKind::Fanout).await;
        let dead = exclusive_queue(&setup).await;
        within(
            "queue.bind",
            setup.queue_bind(&dead, &dlx, "", QueueBindOptions::default()),
        )
        .await
        .unwrap();
        let queue = exclusive_queue_with(
            &setup,
            FieldTable::new().with("x-dead-letter-exchange", dlx.as_str()),
        )
        .await;

        // warren refuses to send headers nested 1000 deep, so another client publishes them;
        // RabbitMQ relays them as they are.
        let mut raw = raw::RawPublisher::connect().await;
        let outcome = raw
            .publish(
                &queue,
                &raw::properties_with_header_entries(&raw::nested_header_entries(1000)),
                b"poison body",
            )
            .await;
        assert_eq!(outcome, raw::RawOutcome::Acked);
        raw.close().await;
        publish(&setup, "", &queue, b"good").await;

        let channel = open(&connection).await;
        let mut consumer = consume(&channel, &queue).await;
        match next_item(&mut consumer).await {
            Some(Err(Error::UndecodableDelivery(bad))) => {
                assert_eq!(&bad.body()[..], b"poison body");
                assert_eq!(bad.envelope().routing_key, queue.as_str());
                assert!(
                    matches!(bad.error(), DecodeError::NestingTooDeep { .. }),
                    "{:?}",
                    bad.error()
                );
                assert!(!bad.raw_properties().is_empty());
                let shown = Error::UndecodableDelivery(bad.clone()).to_string();
                assert!(shown.contains("reject"), "Display says what to do: {shown}");
                within(
                    "reject the undecodable delivery",
                    bad.reject(BasicRejectOptions { requeue: false }),
                )
                .await
                .unwrap();
            }
            other => panic!("expected an undecodable delivery, got {other:?}"),
        }
        // The stream goes on with the next message.
        let good = next_delivery(&mut consumer).await;
        assert_eq!(&good.body[..], b"good");
        within("ack", good.ack(BasicAckOptions::default()))
            .await
            .unwrap();
        // The rejected message went to the dead-letter queue, and the source is empty.
        eventually("the poison message is dead-lettered", || {
            let setup = setup.clone();
            let dead = dead.clone();
            async move { queue_counts(&setup, &dead).await.message_count == 1 }
        })
        .await;
        assert_eq!(queue_counts(&setup, &queue).await.message_count, 0);
        // basic.get of such a message is the same per-message error; nothing else breaks.
        match within(
            "basic.get of the poison message",
            setup.basic_get(&dead, BasicGetOptions::default()),
        )
        .await
        {
            Err(Error::UndecodableDelivery(bad)) => {
                assert_eq!(&bad.body()[..], b"poison body");
                within("ack", bad.ack()).await.unwrap();
            }
            other => panic!("expected an undecodable message, got {other:?}"),
        }
        assert!(connection.is_open());
        assert!(channel.is_open());
        assert!(setup.is_open());
        assert_eq!(queue_counts(&setup, &dead).await.message_count, 0);
        publish(&setup, "", &queue, b"still fine").await;
        assert_eq!(&next_delivery(&mut consumer).await.body[..], b"still fine");
        within(
            "exchange.delete",
            setup.exchange_delete(&dlx, Default::default()),
        )
        .await
        .unwrap();
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_keeps_the_deliveries_that_already_arrived() {
    run(async {
        let connection = connect().await;
        let setup = confirm_channel(&connection).await;
        let queue = exclusive_queue(&setup).await;
        for i in 0..10 {
            publish(&setup, "", &queue, format!("m{i}").as_bytes()).await;
        }
        let channel = open(&connection).await;
        let mut consumer = consume(&channel, &queue).await;
        eventually("the broker delivered everything", || {
            let setup = setup.clone();
            let queue = queue.clone();
            async move { queue_counts(&setup, &queue).await.message_count == 0 }
        })
        .await;
        within("cancel", consumer.cancel()).await.unwrap();
        // Cancelled with ten deliveries unread: they still come out, then the stream ends.
        for i in 0..10 {
            let delivery = next_delivery(&mut consumer).await;
            assert_eq!(body(&delivery), format!("m{i}"));
            within("ack after cancel", delivery.ack(BasicAckOptions::default()))
                .await
                .unwrap();
        }
        assert!(next_item(&mut consumer).await.is_none());
        within("channel.close", channel.close()).await.unwrap();
        assert_eq!(
            queue_counts(&setup, &queue).await.message_count,
            0,
            "the acks after the cancel counted"
        );
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn consumer_buffers_over_budget_pause_reading_without_losing_anything() {
    run(async {
        const MESSAGES: usize = 1000;
        // Heartbeats of 1 s: a pause of several seconds must not count as a silent broker. A
        // budget of 16 KiB holds a few dozen deliveries.
        let connection = connect_with(
            options()
                .heartbeat(Duration::from_secs(1))
                .consumer_buffer_budget(16 * 1024),
        )
        .await;
        let setup = confirm_channel(&connection).await;
        let queue = exclusive_queue(&setup).await;
        for i in 0..MESSAGES {
            publish(&setup, "", &queue, format!("m{i}").as_bytes()).await;
        }
        // No prefetch: the broker sends everything, far more than the consumer buffers.
        let channel = open(&connection).await;
        let mut consumer = consume(&channel, &queue).await;
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(connection.is_open(), "the paused connection is still alive");
        for i in 0..MESSAGES {
            let delivery = next_delivery(&mut consumer).await;
            assert_eq!(body(&delivery), format!("m{i}"), "in order, none lost");
            within("ack", delivery.ack(BasicAckOptions::default()))
                .await
                .unwrap();
        }
        assert!(connection.is_open());
        publish(&setup, "", &queue, b"afterwards").await;
        assert_eq!(&next_delivery(&mut consumer).await.body[..], b"afterwards");
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn closing_with_a_stalled_consumer_completes() {
    run(async {
        let mut cleanup = Cleanup::new();
        // A budget of 16 KiB holds a few dozen deliveries: reading stalls.
        let connection = connect_with(options().consumer_buffer_budget(16 * 1024)).await;
        let setup = confirm_channel(&connection).await;
        let queue = cleanup.queue(unique("q-stalled"));
        declare_queue(&setup, &queue).await;
        for i in 0..600 {
            publish(&setup, "", &queue, format!("m{i}").as_bytes()).await;
        }
        let channel = open(&connection).await;
        let mut consumer = consume(&channel, &queue).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        within(
            "connection.close with a full consumer buffer",
            connection.close(),
        )
        .await
        .expect("the close completes");
        // What was buffered still comes out, then the close.
        let mut delivered = 0;
        loop {
            match next_item(&mut consumer).await {
                Some(Ok(_)) => delivered += 1,
                Some(Err(Error::ConnectionClosed(close))) => {
                    assert_eq!(close.initiator, Initiator::Client);
                    break;
                }
                other => panic!("expected deliveries then the close, got {other:?}"),
            }
        }
        assert!(delivered > 0 && delivered < 600, "{delivered}");
        assert!(next_item(&mut consumer).await.is_none());
        // Nothing was lost: every unacked delivery went back to the queue.
        let (observer, channel) = common::channel().await;
        eventually("all 600 messages are back in the queue", || {
            let channel = channel.clone();
            let queue = queue.clone();
            async move { queue_counts(&channel, &queue).await.message_count == 600 }
        })
        .await;
        within(
            "queue.delete",
            channel.queue_delete(&queue, Default::default()),
        )
        .await
        .unwrap();
        within("connection.close", observer.close()).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn consuming_from_a_missing_queue_is_404_and_records_nothing() {
    run(async {
        let (connection, channel) = channel().await;
        let result = within(
            "basic.consume on a missing queue",
            channel.basic_consume(&unique("q-missing"), BasicConsumeOptions::default()),
        )
        .await;
        match result {
            Err(Error::ChannelClosed { close, .. }) => {
                assert_eq!(close.code, ReplyCode::NOT_FOUND, "{close}")
            }
            other => panic!("expected 404, got {other:?}"),
        }
        assert!(connection.topology().consumers.is_empty());
        // A consumer with a broker-chosen tag on a fresh channel.
        let channel = open(&connection).await;
        let queue = exclusive_queue(&channel).await;
        let consumer = consume(&channel, &queue).await;
        assert!(
            consumer.tag().starts_with("amq.ctag-"),
            "{}",
            consumer.tag()
        );
        assert_eq!(connection.topology().consumers.len(), 1);
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

/// Other clients (amq-protocol, pika, pamqp) write the specification's tag `L` for a signed
/// 64-bit integer; RabbitMQ relays it untouched, and warren reads it as `l` instead of calling
/// the message undecodable. (RabbitMQ 3.10 refuses the other such tag, `U`, with 541, so only
/// the fake broker can deliver one: `tests/peer.rs`.)
#[tokio::test(flavor = "multi_thread")]
async fn headers_with_the_specifications_l_tag_are_delivered() {
    run(async {
        let connection = connect().await;
        let setup = confirm_channel(&connection).await;
        // Not exclusive: the raw publisher is another connection.
        let queue = unique("spec-tag-l");
        declare_queue_with(&setup, &queue, QueueDeclareOptions::default()).await;
        #[rustfmt::skip]
        let entries: &[u8] = &[
            4, b'l', b'o', b'n', b'g', b'L', 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x05,
            5, b'a', b'r', b'r', b'a', b'y', b'A', 0, 0, 0, 9, b'L', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe,
        ];
        let mut raw = raw::RawPublisher::connect().await;
        let outcome = raw
            .publish(
                &queue,
                &raw::properties_with_header_entries(entries),
                b"from another client",
            )
            .await;
        assert_eq!(outcome, raw::RawOutcome::Acked);
        raw.close().await;

        let channel = open(&connection).await;
        let mut consumer = consume(&channel, &queue).await;
        let delivery = next_delivery(&mut consumer).await;
        assert_eq!(&delivery.body[..], b"from another client");
        let headers = delivery.properties.headers.as_ref().expect("headers");
        assert_eq!(headers.get("long"), Some(&FieldValue::I64((1 << 40) + 5)));
        assert_eq!(
            headers.get("array"),
            Some(&FieldValue::from(vec![FieldValue::I64(-2)]))
        );
        within("ack", delivery.ack(BasicAckOptions::default()))
            .await
            .unwrap();
        within("queue.delete", setup.queue_delete(&queue, Default::default()))
            .await
            .unwrap();
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

/// A message larger than the consuming connection's `max_body_size` is an error of that
/// delivery (its body skipped, never buffered): the connection lives, the next message on the
/// same consumer arrives, and the big one can be rejected to the dead-letter exchange. The same
/// for `basic.get` and for a returned message.
#[tokio::test(flavor = "multi_thread")]
async fn a_message_over_max_body_size_is_an_error_of_that_message_only() {
    run(async {
        const MAX: u64 = 1024;
        let big = vec![b'b'; 10 * 1024];
        let mut cleanup = Cleanup::new();
        let setup_connection = connect().await;
        let setup = confirm_channel(&setup_connection).await;
        let dlx = cleanup.exchange(unique("x-dlx-oversized"));
        declare_exchange(&setup, &dlx, ExchangeKind::Fanout).await;
        let dead = cleanup.queue(unique("oversized-dead"));
        declare_queue(&setup, &dead).await;
        within(
            "queue.bind",
            setup.queue_bind(&dead, &dlx, "", QueueBindOptions::default()),
        )
        .await
        .unwrap();
        let queue = cleanup.queue(unique("oversized"));
        declare_queue_with(
            &setup,
            &queue,
            QueueDeclareOptions {
                arguments: FieldTable::new().with("x-dead-letter-exchange", dlx.as_str()),
                ..Default::default()
            },
        )
        .await;
        publish(&setup, "", &queue, &big).await;
        publish(&setup, "", &queue, b"next").await;

        // The consumer's connection takes bodies of at most 1 KiB.
        let small = connect_with(options().max_body_size(MAX)).await;
        let channel = open(&small).await;
        let mut consumer = consume(&channel, &queue).await;
        match next_item(&mut consumer).await {
            Some(Err(Error::UndecodableDelivery(oversized))) => {
                assert_eq!(
                    oversized.error(),
                    &DecodeError::BodyTooLarge {
                        size: big.len() as u64,
                        max: MAX
                    }
                );
                assert!(oversized.body().is_empty(), "the body is not kept");
                assert_eq!(oversized.envelope().routing_key, queue.as_str());
                let shown = Error::UndecodableDelivery(oversized.clone()).to_string();
                assert!(shown.contains("max_body_size"), "{shown}");
                within(
                    "reject the oversized delivery",
                    oversized.reject(BasicRejectOptions { requeue: false }),
                )
                .await
                .unwrap();
            }
            other => panic!("expected an oversized delivery error, got {other:?}"),
        }
        let next = next_delivery(&mut consumer).await;
        assert_eq!(&next.body[..], b"next");
        within("ack", next.ack(BasicAckOptions::default()))
            .await
            .unwrap();
        // Dead-lettered whole: a connection with the default limit reads all of it.
        eventually("the oversized message is dead-lettered", || {
            let setup = setup.clone();
            let dead = dead.clone();
            async move { queue_counts(&setup, &dead).await.message_count == 1 }
        })
        .await;
        assert_eq!(get_body(&setup, &dead).await, Some(big.clone()));

        // basic.get of an oversized message: the same per-message error.
        within("basic.cancel", consumer.cancel()).await.unwrap();
        publish(&setup, "", &queue, &big).await;
        let getter = open(&small).await;
        match within(
            "basic.get of the oversized message",
            getter.basic_get(&queue, BasicGetOptions::default()),
        )
        .await
        {
            Err(Error::UndecodableDelivery(oversized)) => {
                assert!(matches!(
                    oversized.error(),
                    DecodeError::BodyTooLarge { .. }
                ));
                within("ack", oversized.ack()).await.unwrap();
            }
            other => panic!("expected an oversized message error, got {other:?}"),
        }

        // A returned message over the limit comes back with its body left out, and is still
        // matched to its publish.
        let publisher = confirm_channel(&small).await;
        let confirm = within(
            "mandatory publish",
            publisher.basic_publish(
                "",
                &unique("no-such-queue"),
                warren::BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                big.clone(),
                Default::default(),
            ),
        )
        .await
        .unwrap();
        match within("the confirmation", confirm).await {
            Ok(warren::Confirmation::Returned(message)) => {
                assert!(message.body.is_empty());
                assert_eq!(message.skipped_body_size, Some(big.len() as u64));
            }
            other => panic!("expected a returned message, got {other:?}"),
        }

        assert!(small.is_open());
        assert!(channel.is_open() && getter.is_open() && publisher.is_open());
        assert_eq!(queue_counts(&setup, &queue).await.message_count, 0);
        within("connection.close", small.close()).await.unwrap();
        within("connection.close", setup_connection.close())
            .await
            .unwrap();
    })
    .await;
}
