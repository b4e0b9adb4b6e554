//! The basic class against the real broker: publish and get (every property, large and empty
//! bodies), ack, nack, reject (with and without requeue, dead-lettering), qos, recover,
//! recover-async, mandatory returns.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures_util::StreamExt;
use warren::protocol::BasicProperties;
use warren::wire::{Decimal, FieldArray, FieldTable, FieldValue, ShortString, Timestamp};
use warren::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
    BasicQosOptions, BasicRecoverOptions, BasicRejectOptions, Error, ExchangeKind,
    QueueBindOptions, QueueDeclareOptions, ReplyCode,
};

fn s(value: &'static str) -> ShortString {
    ShortString::from_static(value)
}

/// A header table with every field type RabbitMQ knows, nested tables and arrays.
fn rich_headers() -> FieldTable {
    FieldTable::new()
        .with("bool", true)
        .with("i8", -8i8)
        .with("u8", 200u8)
        .with("i16", -1600i16)
        .with("u16", 60000u16)
        .with("i32", -320_000i32)
        .with("u32", 4_000_000_000u32)
        .with("i64", -6_400_000_000_000i64)
        .with("f32", 1.5f32)
        .with("f64", -2.25f64)
        .with(
            "decimal",
            Decimal {
                scale: 2,
                value: 12345,
            },
        )
        .with("text", "héllo wörld")
        .with("timestamp", Timestamp(1_700_000_000))
        .with("void", FieldValue::Void)
        .with("bytes", Bytes::from_static(b"\x00\x01\xfe\xff"))
        .with(
            "array",
            FieldArray(vec![
                FieldValue::I32(1),
                FieldValue::from("two"),
                FieldValue::Table(FieldTable::new().with("three", 3i64)),
                FieldValue::Array(FieldArray(vec![FieldValue::Bool(false)])),
            ]),
        )
        .with(
            "nested",
            FieldTable::new().with(
                "level2",
                FieldTable::new()
                    .with("level3", "deep")
                    .with("list", FieldArray(vec![FieldValue::I64(7)])),
            ),
        )
}

/// Every one of the 14 basic properties set.
fn all_properties() -> BasicProperties {
    let username = options().get_username().to_owned();
    BasicProperties {
        content_type: Some(s("application/json")),
        content_encoding: Some(s("gzip")),
        headers: Some(rich_headers()),
        delivery_mode: Some(2),
        priority: Some(7),
        correlation_id: Some(s("correlation-42")),
        reply_to: Some(s("reply-queue")),
        expiration: Some(s("600000")),
        message_id: Some(s("message-1")),
        timestamp: Some(Timestamp(1_700_000_123)),
        kind: Some(s("order.created")),
        // RabbitMQ checks it against the connection's user.
        user_id: Some(ShortString::try_from(username).unwrap()),
        app_id: Some(s("warren-tests")),
        reserved: Some(s("cluster-a")),
        invalid: None,
    }
}

/// The chainable setters build exactly what the fields say.
#[test]
fn the_setters_build_what_setting_the_fields_builds() {
    let username = options().get_username().to_owned();
    let built = BasicProperties::default()
        .with_content_type("application/json")
        .with_content_encoding(String::from("gzip"))
        .with_headers(rich_headers())
        .with_delivery_mode(warren::DeliveryMode::Persistent)
        .with_priority(7)
        .with_correlation_id(String::from("correlation-42"))
        .with_reply_to(s("reply-queue"))
        .with_expiration("600000")
        .with_message_id(s("message-1"))
        .with_timestamp(Timestamp(1_700_000_123))
        .with_kind("order.created")
        .with_user_id(username)
        .with_app_id("warren-tests")
        .with_reserved("cluster-a");
    assert_eq!(built, all_properties());
    assert!(built.is_persistent());
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_and_get_round_trip_the_body_and_all_14_properties() {
    run(async {
        let connection = connect().await;
        let channel = confirm_channel(&connection).await;
        let queue = exclusive_queue(&channel).await;
        let properties = all_properties();
        publish_with(&channel, "", &queue, b"{\"id\": 1}", properties.clone()).await;
        publish_with(&channel, "", &queue, b"second", properties.clone()).await;

        let message = within(
            "basic.get",
            channel.basic_get(&queue, BasicGetOptions::default()),
        )
        .await
        .expect("basic.get")
        .expect("the queue holds two messages");
        assert_eq!(&message.body[..], b"{\"id\": 1}");
        assert_eq!(message.message_count, 1, "one message left after this one");
        assert_eq!(message.envelope.exchange, "");
        assert_eq!(message.envelope.routing_key, queue.as_str());
        assert!(!message.envelope.redelivered);
        assert_eq!(message.envelope.consumer_tag, "");
        assert_eq!(
            message.properties, properties,
            "every property survives the broker"
        );
        // Spot checks, so that a failure of the comparison above is easy to read.
        let headers = message.properties.headers.as_ref().unwrap();
        assert_eq!(headers.get("u32"), Some(&FieldValue::U32(4_000_000_000)));
        assert_eq!(
            headers
                .get("nested")
                .and_then(FieldValue::as_table)
                .and_then(|t| t.get("level2"))
                .and_then(FieldValue::as_table)
                .and_then(|t| t.get("level3"))
                .and_then(FieldValue::as_str),
            Some("deep")
        );
        assert_eq!(message.properties.timestamp, Some(Timestamp(1_700_000_123)));
        assert_eq!(message.properties.priority, Some(7));
        within("ack", message.ack(BasicAckOptions::default()))
            .await
            .unwrap();

        // The same properties through a consumer.
        let mut consumer = within(
            "basic.consume",
            channel.basic_consume(&queue, BasicConsumeOptions::default()),
        )
        .await
        .unwrap();
        let delivery = next_delivery(&mut consumer).await;
        assert_eq!(&delivery.body[..], b"second");
        assert_eq!(delivery.properties, properties);
        assert_eq!(delivery.envelope.consumer_tag, consumer.tag());
        within("ack", delivery.ack(BasicAckOptions::default()))
            .await
            .unwrap();
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn get_counts_down_and_returns_none_when_empty() {
    run(async {
        let connection = connect().await;
        let channel = confirm_channel(&connection).await;
        let queue = exclusive_queue(&channel).await;
        assert!(
            within(
                "basic.get",
                channel.basic_get(&queue, BasicGetOptions::default())
            )
            .await
            .unwrap()
            .is_none(),
            "a get on an empty queue gives None"
        );
        for i in 0..3 {
            publish(&channel, "", &queue, format!("m{i}").as_bytes()).await;
        }
        for (i, left) in [2, 1, 0].into_iter().enumerate() {
            let message = within(
                "basic.get",
                channel.basic_get(&queue, BasicGetOptions { no_ack: true }),
            )
            .await
            .unwrap()
            .expect("a message");
            assert_eq!(message.body, format!("m{i}").into_bytes());
            assert_eq!(message.message_count, left);
        }
        assert!(
            within(
                "basic.get",
                channel.basic_get(&queue, BasicGetOptions::default())
            )
            .await
            .unwrap()
            .is_none()
        );
        assert!(channel.is_open());
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ack_removes_messages_and_unacked_ones_are_requeued_on_close() {
    run(async {
        let connection = connect().await;
        let setup = confirm_channel(&connection).await;
        let queue = exclusive_queue(&setup).await;
        for i in 0..4 {
            publish(&setup, "", &queue, format!("m{i}").as_bytes()).await;
        }

        let channel = open(&connection).await;
        let mut tags = Vec::new();
        for _ in 0..4 {
            let message = within(
                "basic.get",
                channel.basic_get(&queue, BasicGetOptions::default()),
            )
            .await
            .unwrap()
            .expect("a message");
            tags.push(message.delivery_tag());
        }
        assert_eq!(
            queue_counts(&setup, &queue).await.message_count,
            0,
            "all 4 unacked"
        );
        // Ack the first one alone, then the second and third with `multiple`; leave the fourth.
        within(
            "ack",
            channel.basic_ack(tags[0], BasicAckOptions::default()),
        )
        .await
        .unwrap();
        within(
            "ack multiple",
            channel.basic_ack(tags[2], BasicAckOptions { multiple: true }),
        )
        .await
        .unwrap();
        within("channel.close", channel.close()).await.unwrap();
        // Only the unacknowledged fourth message comes back, flagged as redelivered. The broker
        // requeues it asynchronously after close-ok, so the count is polled.
        eventually("the unacked message is requeued", || {
            let (setup, queue) = (setup.clone(), queue.clone());
            async move { queue_counts(&setup, &queue).await.message_count == 1 }
        })
        .await;
        assert_eq!(queue_counts(&setup, &queue).await.message_count, 1);
        let message = within(
            "basic.get",
            setup.basic_get(&queue, BasicGetOptions { no_ack: true }),
        )
        .await
        .unwrap()
        .expect("the requeued message");
        assert_eq!(&message.body[..], b"m3");
        assert!(message.envelope.redelivered);
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

/// `settled` is a refusal to settle a delivery, for a reason that mentions `because`.
/// The channel survived what came before: a round trip on it works, and `queue` is empty.
async fn assert_channel_lives(channel: &warren::Channel, queue: &str) {
    assert_eq!(queue_counts(channel, queue).await.message_count, 0);
    assert!(channel.is_open());
}

fn assert_refused(settled: Result<(), Error>, because: &str) {
    match settled {
        Err(Error::InvalidState(text)) => assert!(text.contains(because), "{text}"),
        other => panic!("expected InvalidState, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delivery_acknowledged_twice_refuses_the_second_and_a_raw_one_closes_the_channel() {
    run(async {
        let connection = connect().await;
        let channel = confirm_channel(&connection).await;
        let queue = exclusive_queue(&channel).await;
        publish(&channel, "", &queue, b"once").await;
        let message = within(
            "basic.get",
            channel.basic_get(&queue, BasicGetOptions::default()),
        )
        .await
        .unwrap()
        .expect("a message");
        within("ack", message.ack(BasicAckOptions::default()))
            .await
            .unwrap();
        // The delivery knows it was settled: a second settlement sends nothing.
        let second = within("second ack", message.ack(BasicAckOptions::default())).await;
        assert_refused(second, "already");
        let nack = within("a nack after the ack", message.nack(Default::default())).await;
        assert_refused(nack, "already");
        assert_channel_lives(&channel, &queue).await;

        // Through the channel, which does not know, the broker gets it and closes the channel.
        within(
            "raw second ack",
            channel.basic_ack(message.delivery_tag(), BasicAckOptions::default()),
        )
        .await
        .expect("an ack is asynchronous: the error comes as a channel close");
        let error = within("channel close", channel.closed()).await;
        assert_eq!(
            error.reply_code(),
            Some(ReplyCode::PRECONDITION_FAILED),
            "{error}"
        );
        assert!(
            error.to_string().contains("unknown delivery tag"),
            "{error}"
        );
        assert!(connection.is_open());
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledging_a_no_ack_delivery_is_refused_and_the_channel_lives() {
    run(async {
        let connection = connect().await;
        let channel = confirm_channel(&connection).await;
        let queue = exclusive_queue(&channel).await;
        publish(&channel, "", &queue, b"got").await;
        publish(&channel, "", &queue, b"consumed").await;
        let got = within(
            "basic.get no_ack",
            channel.basic_get(&queue, BasicGetOptions { no_ack: true }),
        )
        .await
        .unwrap()
        .expect("a message");
        let mut consumer = consume_no_ack(&channel, &queue).await;
        let consumed = next_delivery(&mut consumer).await;
        assert_eq!(&consumed.body[..], b"consumed");
        for settled in [
            within("ack", got.ack(BasicAckOptions::default())).await,
            within("reject", consumed.reject(BasicRejectOptions::default())).await,
        ] {
            assert_refused(settled, "no_ack");
        }
        assert_channel_lives(&channel, &queue).await;
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deliveries_a_multiple_ack_covered_refuse_their_own() {
    run(async {
        let connection = connect().await;
        let channel = confirm_channel(&connection).await;
        let queue = exclusive_queue(&channel).await;
        for body in [b"1", b"2", b"3"] {
            publish(&channel, "", &queue, body).await;
        }
        let mut consumer = within(
            "basic.consume",
            channel.basic_consume(&queue, BasicConsumeOptions::default()),
        )
        .await
        .unwrap();
        let first = next_delivery(&mut consumer).await;
        let second = next_delivery(&mut consumer).await;
        let third = next_delivery(&mut consumer).await;
        within(
            "ack multiple",
            third.ack(BasicAckOptions { multiple: true }),
        )
        .await
        .unwrap();
        for settled in [
            within("ack of the first", first.ack(BasicAckOptions::default())).await,
            within("nack of the second", second.nack(Default::default())).await,
        ] {
            assert_refused(settled, "multiple");
        }
        assert_channel_lives(&channel, &queue).await;
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nack_with_requeue_redelivers_with_redelivered_set() {
    run(async {
        let connection = connect().await;
        let channel = confirm_channel(&connection).await;
        let queue = exclusive_queue(&channel).await;
        publish(&channel, "", &queue, b"try again").await;
        let mut consumer = within(
            "basic.consume",
            channel.basic_consume(&queue, BasicConsumeOptions::default()),
        )
        .await
        .unwrap();
        let first = next_delivery(&mut consumer).await;
        assert_eq!(&first.body[..], b"try again");
        assert!(
            !first.envelope.redelivered,
            "a first delivery is not flagged"
        );
        within("nack", first.nack(BasicNackOptions::default()))
            .await
            .unwrap();
        let second = next_delivery(&mut consumer).await;
        assert_eq!(&second.body[..], b"try again");
        assert!(
            second.envelope.redelivered,
            "the requeued message is flagged redelivered"
        );
        assert_ne!(second.delivery_tag(), first.delivery_tag());

        // nack with multiple covers every earlier unacked delivery.
        publish(&channel, "", &queue, b"another").await;
        let third = next_delivery(&mut consumer).await;
        assert_eq!(&third.body[..], b"another");
        within(
            "nack multiple",
            third.nack(BasicNackOptions {
                multiple: true,
                requeue: true,
            }),
        )
        .await
        .unwrap();
        let mut bodies = Vec::new();
        for _ in 0..2 {
            let delivery = next_delivery(&mut consumer).await;
            assert!(delivery.envelope.redelivered);
            bodies.push(String::from_utf8(delivery.body.to_vec()).unwrap());
            within("ack", delivery.ack(BasicAckOptions::default()))
                .await
                .unwrap();
        }
        bodies.sort();
        assert_eq!(bodies, ["another", "try again"]);
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reject_and_nack_without_requeue_dead_letter_the_message() {
    run(async {
        let mut cleanup = Cleanup::new();
        let connection = connect().await;
        let channel = confirm_channel(&connection).await;
        let dlx = cleanup.exchange(unique("x-dlx"));
        declare_exchange(&channel, &dlx, ExchangeKind::Fanout).await;
        let dead = exclusive_queue(&channel).await;
        within(
            "queue.bind",
            channel.queue_bind(&dead, &dlx, "", QueueBindOptions::default()),
        )
        .await
        .unwrap();
        let work = declare_queue_with(
            &channel,
            "",
            QueueDeclareOptions {
                exclusive: true,
                arguments: FieldTable::new().with("x-dead-letter-exchange", dlx.as_str()),
                ..Default::default()
            },
        )
        .await
        .name
        .to_string();
        let mut dead_letters = consume_no_ack(&channel, &dead).await;

        publish(&channel, "", &work, b"rejected").await;
        publish(&channel, "", &work, b"nacked").await;
        publish(&channel, "", &work, b"requeued").await;

        let message = within(
            "basic.get",
            channel.basic_get(&work, BasicGetOptions::default()),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(&message.body[..], b"rejected");
        within(
            "reject",
            message.reject(BasicRejectOptions { requeue: false }),
        )
        .await
        .unwrap();
        let dead_letter = next_delivery(&mut dead_letters).await;
        assert_eq!(&dead_letter.body[..], b"rejected");
        let x_death = dead_letter
            .properties
            .headers
            .as_ref()
            .and_then(|h| h.get("x-death"))
            .expect("the broker adds x-death");
        let FieldValue::Array(deaths) = x_death else {
            panic!("x-death is an array: {x_death:?}");
        };
        let death = deaths.0[0].as_table().expect("each death is a table");
        assert_eq!(
            death.get("reason").and_then(FieldValue::as_str),
            Some("rejected")
        );
        assert_eq!(
            death.get("queue").and_then(FieldValue::as_str),
            Some(work.as_str())
        );

        let message = within(
            "basic.get",
            channel.basic_get(&work, BasicGetOptions::default()),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(&message.body[..], b"nacked");
        within(
            "nack",
            message.nack(BasicNackOptions {
                multiple: false,
                requeue: false,
            }),
        )
        .await
        .unwrap();
        let dead_letter = next_delivery(&mut dead_letters).await;
        assert_eq!(&dead_letter.body[..], b"nacked");

        // reject with requeue puts the message back, flagged.
        let message = within(
            "basic.get",
            channel.basic_get(&work, BasicGetOptions::default()),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(&message.body[..], b"requeued");
        within("reject", message.reject(BasicRejectOptions::default()))
            .await
            .unwrap();
        let message = within(
            "basic.get",
            channel.basic_get(&work, BasicGetOptions { no_ack: true }),
        )
        .await
        .unwrap()
        .expect("the rejected message is back");
        assert_eq!(&message.body[..], b"requeued");
        assert!(message.envelope.redelivered);
        assert!(
            !has_item_within(&mut dead_letters, Duration::from_millis(300)).await,
            "a requeued message is not dead-lettered"
        );
        within(
            "exchange.delete",
            channel.exchange_delete(&dlx, Default::default()),
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
async fn qos_limits_unacked_deliveries() {
    run(async {
        let connection = connect().await;
        let setup = confirm_channel(&connection).await;
        let queue = exclusive_queue(&setup).await;
        for i in 0..5 {
            publish(&setup, "", &queue, format!("m{i}").as_bytes()).await;
        }
        let channel = open(&connection).await;
        within(
            "basic.qos",
            channel.basic_qos(2, BasicQosOptions::default()),
        )
        .await
        .unwrap();
        let mut consumer = within(
            "basic.consume",
            channel.basic_consume(&queue, BasicConsumeOptions::default()),
        )
        .await
        .unwrap();
        let first = next_delivery(&mut consumer).await;
        let second = next_delivery(&mut consumer).await;
        assert_eq!(
            (&first.body[..], &second.body[..]),
            (&b"m0"[..], &b"m1"[..])
        );
        // The broker holds the other three back: the queue still has them ready.
        assert_eq!(queue_counts(&setup, &queue).await.message_count, 3);
        assert!(
            !has_item_within(&mut consumer, Duration::from_millis(300)).await,
            "no third delivery while two are unacked"
        );

        within("ack", first.ack(BasicAckOptions::default()))
            .await
            .unwrap();
        let third = next_delivery(&mut consumer).await;
        assert_eq!(&third.body[..], b"m2");
        assert_eq!(queue_counts(&setup, &queue).await.message_count, 2);
        assert!(!has_item_within(&mut consumer, Duration::from_millis(300)).await);

        within("ack", second.ack(BasicAckOptions::default()))
            .await
            .unwrap();
        within("ack", third.ack(BasicAckOptions::default()))
            .await
            .unwrap();
        let fourth = next_delivery(&mut consumer).await;
        let fifth = next_delivery(&mut consumer).await;
        assert_eq!(
            (&fourth.body[..], &fifth.body[..]),
            (&b"m3"[..], &b"m4"[..])
        );
        within("ack", fifth.ack(BasicAckOptions { multiple: true }))
            .await
            .unwrap();
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn recover_redelivers_unacked_messages() {
    run(async {
        let connection = connect().await;
        let channel = confirm_channel(&connection).await;
        let queue = exclusive_queue(&channel).await;
        publish(&channel, "", &queue, b"recover me").await;
        let mut consumer = within(
            "basic.consume",
            channel.basic_consume(&queue, BasicConsumeOptions::default()),
        )
        .await
        .unwrap();
        let first = next_delivery(&mut consumer).await;
        assert!(!first.envelope.redelivered);
        within(
            "basic.recover",
            channel.basic_recover(BasicRecoverOptions::default()),
        )
        .await
        .expect("basic.recover-ok");
        let again = next_delivery(&mut consumer).await;
        assert_eq!(&again.body[..], b"recover me");
        assert!(again.envelope.redelivered);
        within("ack", again.ack(BasicAckOptions::default()))
            .await
            .unwrap();
        // The first delivery's tag means nothing to the broker now: settling it is refused
        // (the broker would close the channel), through the delivery and through the channel.
        let old = within(
            "ack of the requeued delivery",
            first.ack(Default::default()),
        )
        .await;
        assert_refused(old, "basic.recover requeued");
        let raw = channel.basic_ack(first.delivery_tag(), BasicAckOptions::default());
        assert_refused(within("raw ack", raw).await, "basic.recover requeued");
        assert_channel_lives(&channel, &queue).await;
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn recover_async_redelivers_unacked_messages() {
    run(async {
        let connection = connect().await;
        let channel = confirm_channel(&connection).await;
        let queue = exclusive_queue(&channel).await;
        publish(&channel, "", &queue, b"recover me too").await;
        let first = within(
            "basic.get",
            channel.basic_get(&queue, BasicGetOptions::default()),
        )
        .await
        .unwrap()
        .unwrap();
        assert!(!first.envelope.redelivered);
        assert_eq!(queue_counts(&channel, &queue).await.message_count, 0);
        within(
            "basic.recover-async",
            channel.basic_recover_async(BasicRecoverOptions::default()),
        )
        .await
        .unwrap();
        // The channel handles recover-async before the get that follows it.
        let again = within(
            "basic.get",
            channel.basic_get(&queue, BasicGetOptions::default()),
        )
        .await
        .unwrap()
        .expect("the recovered message is back in the queue");
        assert_eq!(&again.body[..], b"recover me too");
        assert!(again.envelope.redelivered);
        within("ack", again.ack(BasicAckOptions::default()))
            .await
            .unwrap();
        let old = within("ack of the requeued message", first.ack(Default::default())).await;
        assert_refused(old, "basic.recover requeued");
        assert_channel_lives(&channel, &queue).await;
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

fn patterned(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_mebibyte_body_round_trips_split_into_frames() {
    run(async {
        let connection = connect().await;
        assert_eq!(connection.frame_max(), 131_072, "the broker's frame_max");
        let channel = confirm_channel(&connection).await;
        let queue = exclusive_queue(&channel).await;
        let body = patterned(1 << 20);
        publish(&channel, "", &queue, &body).await;
        let message = within(
            "basic.get",
            channel.basic_get(&queue, BasicGetOptions { no_ack: true }),
        )
        .await
        .unwrap()
        .expect("the large message");
        assert_eq!(message.body.len(), body.len());
        assert!(message.body[..] == body[..], "the 1 MiB body is intact");
        within("connection.close", connection.close())
            .await
            .unwrap();

        // With the smallest frame_max: 4096-byte frames, 257 body frames each way, via a consumer.
        let connection = connect_with(options().frame_max(4096)).await;
        assert_eq!(connection.frame_max(), 4096);
        let channel = confirm_channel(&connection).await;
        let queue = exclusive_queue(&channel).await;
        publish(&channel, "", &queue, &body).await;
        let mut consumer = consume_no_ack(&channel, &queue).await;
        let delivery = next_delivery(&mut consumer).await;
        assert!(
            delivery.body[..] == body[..],
            "the 1 MiB body is intact in 4 KiB frames"
        );
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_body_round_trips() {
    run(async {
        let connection = connect().await;
        let channel = confirm_channel(&connection).await;
        let queue = exclusive_queue(&channel).await;
        let properties = BasicProperties {
            message_id: Some(s("empty")),
            ..Default::default()
        };
        publish_with(&channel, "", &queue, b"", properties.clone()).await;
        publish_with(&channel, "", &queue, b"", properties.clone()).await;
        let message = within(
            "basic.get",
            channel.basic_get(&queue, BasicGetOptions { no_ack: true }),
        )
        .await
        .unwrap()
        .expect("the empty message");
        assert!(message.body.is_empty());
        assert_eq!(message.properties, properties);
        let mut consumer = within(
            "basic.consume",
            channel.basic_consume(&queue, BasicConsumeOptions::default()),
        )
        .await
        .unwrap();
        let delivery = next_delivery(&mut consumer).await;
        assert!(delivery.body.is_empty());
        assert_eq!(delivery.properties, properties);
        within("ack", delivery.ack(BasicAckOptions::default()))
            .await
            .unwrap();
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mandatory_unroutable_publish_comes_back_on_returns() {
    run(async {
        let (connection, channel) = channel().await;
        let queue = exclusive_queue(&channel).await;
        let mut returns = channel.returns();
        let unroutable = unique("no-such-key");

        // Not mandatory: dropped silently. Mandatory and routable: delivered, not returned.
        let confirm = within(
            "basic.publish",
            channel.basic_publish(
                "amq.direct",
                &unroutable,
                BasicPublishOptions::default(),
                "dropped",
                BasicProperties::default(),
            ),
        )
        .await
        .unwrap();
        assert_eq!(
            within("confirmation", confirm).await.unwrap(),
            warren::Confirmation::NotRequested
        );
        let mandatory = BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        drop(
            within(
                "basic.publish",
                channel.basic_publish("", &queue, mandatory, "routed", BasicProperties::default()),
            )
            .await
            .unwrap(),
        );
        let properties = BasicProperties {
            message_id: Some(s("returned-1")),
            ..Default::default()
        };
        drop(
            within(
                "basic.publish",
                channel.basic_publish(
                    "amq.direct",
                    &unroutable,
                    mandatory,
                    "returned",
                    properties.clone(),
                ),
            )
            .await
            .unwrap(),
        );

        let returned = within("returns stream", returns.next())
            .await
            .expect("a returned message");
        assert_eq!(returned.reply_code, ReplyCode::NO_ROUTE);
        assert_eq!(returned.reply_text, "NO_ROUTE");
        assert_eq!(returned.exchange, "amq.direct");
        assert_eq!(returned.routing_key, unroutable.as_str());
        assert_eq!(
            &returned.body[..],
            b"returned",
            "only the mandatory unroutable one comes back"
        );
        assert_eq!(returned.properties, properties);
        assert_eq!(
            get_body(&channel, &queue).await.as_deref(),
            Some(&b"routed"[..])
        );
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn priority_queue_delivers_higher_priority_first() {
    run(async {
        let connection = connect().await;
        let channel = confirm_channel(&connection).await;
        let queue = declare_queue_with(
            &channel,
            "",
            QueueDeclareOptions {
                exclusive: true,
                arguments: FieldTable::new().with("x-max-priority", FieldValue::U8(10)),
                ..Default::default()
            },
        )
        .await
        .name
        .to_string();
        for (body, priority) in [("low", 1u8), ("high", 9), ("middle", 5)] {
            let properties = BasicProperties {
                priority: Some(priority),
                ..Default::default()
            };
            publish_with(&channel, "", &queue, body.as_bytes(), properties).await;
        }
        assert_eq!(
            get_body(&channel, &queue).await.as_deref(),
            Some(&b"high"[..])
        );
        assert_eq!(
            get_body(&channel, &queue).await.as_deref(),
            Some(&b"middle"[..])
        );
        assert_eq!(
            get_body(&channel, &queue).await.as_deref(),
            Some(&b"low"[..])
        );
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_at_frame_boundaries_round_trip() {
    run(async {
        let connection = connect().await;
        let channel = confirm_channel(&connection).await;
        let queue = exclusive_queue(&channel).await;
        // A body frame carries frame_max - 8 bytes (7 of header, 1 frame end).
        let per_frame = connection.frame_max() as usize - 8;
        let sizes = [
            1,
            per_frame - 1,
            per_frame,
            per_frame + 1,
            2 * per_frame,
            2 * per_frame + 1,
            3 * per_frame - 1,
        ];
        for (i, size) in sizes.iter().enumerate() {
            let mut body = patterned(*size);
            body[0] = i as u8;
            publish(&channel, "", &queue, &body).await;
        }
        for (i, size) in sizes.iter().enumerate() {
            let message = within(
                "basic.get",
                channel.basic_get(&queue, BasicGetOptions { no_ack: true }),
            )
            .await
            .unwrap()
            .expect("a message");
            assert_eq!(message.body.len(), *size, "message {i}");
            let mut expected = patterned(*size);
            expected[0] = i as u8;
            assert!(
                message.body[..] == expected[..],
                "body {i} of {size} bytes is intact"
            );
        }
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

/// A string over 255 bytes given to a property setter fails that publish with a typed error
/// naming the property, never a panic; the channel and its confirm numbering go on.
#[tokio::test(flavor = "multi_thread")]
async fn a_property_over_255_bytes_fails_its_publish_alone() {
    run(async {
        let connection = connect().await;
        let channel = confirm_channel(&connection).await;
        let queue = exclusive_queue(&channel).await;
        publish(&channel, "", &queue, b"before").await;
        let long = "x".repeat(256);
        let refused = [
            (
                BasicProperties::default()
                    .with_correlation_id(&long)
                    .with_content_type("text/plain"),
                "`correlation_id`",
            ),
            (
                BasicProperties::default().with_header(long.as_str(), 1),
                "`headers`",
            ),
        ];
        for (properties, property) in refused {
            let result = within(
                "basic.publish with a property over 255 bytes",
                channel.basic_publish("", &queue, BasicPublishOptions::default(), "x", properties),
            )
            .await;
            match result {
                Err(Error::InvalidArgument(text)) => {
                    assert!(text.contains(property) && text.contains("256"), "{text}");
                }
                other => panic!("expected InvalidArgument, got {other:?}"),
            }
        }
        publish(&channel, "", &queue, b"after").await;
        assert!(channel.is_open());
        assert_eq!(queue_counts(&channel, &queue).await.message_count, 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_publish_whose_header_exceeds_frame_max_fails_alone() {
    run(async {
        let connection = connect().await;
        let channel = confirm_channel(&connection).await;
        let queue = exclusive_queue(&channel).await;
        publish(&channel, "", &queue, b"before").await;
        let huge = BasicProperties {
            headers: Some(FieldTable::new().with("big", "x".repeat(200_000))),
            ..Default::default()
        };
        let outcome = match within(
            "basic.publish with a 200 kB header",
            channel.basic_publish("", &queue, BasicPublishOptions::default(), "too big", huge),
        )
        .await
        {
            Ok(confirm) => within("confirmation", confirm).await,
            Err(e) => Err(e),
        };
        match outcome {
            Err(warren::Error::FrameTooLarge { size, max }) => {
                assert!(size > 200_000, "{size}");
                assert_eq!(max, connection.frame_max());
            }
            other => panic!("expected FrameTooLarge, got {other:?}"),
        }
        // Nothing of it reached the broker, and the confirm numbering is intact: the next
        // publish is acked as itself.
        publish(&channel, "", &queue, b"after").await;
        assert!(channel.is_open());
        assert_eq!(queue_counts(&channel, &queue).await.message_count, 2);
        assert_eq!(
            get_body(&channel, &queue).await.as_deref(),
            Some(&b"before"[..])
        );
        assert_eq!(
            get_body(&channel, &queue).await.as_deref(),
            Some(&b"after"[..])
        );
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn global_qos_limits_the_whole_channel() {
    run(async {
        let connection = connect().await;
        let setup = confirm_channel(&connection).await;
        let first = exclusive_queue(&setup).await;
        let second = exclusive_queue(&setup).await;
        for i in 0..5 {
            publish(&setup, "", &first, format!("a{i}").as_bytes()).await;
            publish(&setup, "", &second, format!("b{i}").as_bytes()).await;
        }
        let channel = open(&connection).await;
        within(
            "basic.qos global",
            channel.basic_qos(
                3,
                BasicQosOptions {
                    global: true,
                    ..Default::default()
                },
            ),
        )
        .await
        .unwrap();
        let mut a = within(
            "basic.consume",
            channel.basic_consume(&first, Default::default()),
        )
        .await
        .unwrap();
        let mut b = within(
            "basic.consume",
            channel.basic_consume(&second, Default::default()),
        )
        .await
        .unwrap();
        let mut held = Vec::new();
        for _ in 0..3 {
            let delivery = tokio::select! {
                d = next_delivery(&mut a) => d,
                d = next_delivery(&mut b) => d,
            };
            held.push(delivery);
        }
        // Three unacked deliveries across both consumers: the other seven stay ready.
        let ready = queue_counts(&setup, &first).await.message_count
            + queue_counts(&setup, &second).await.message_count;
        assert_eq!(
            ready, 7,
            "a global prefetch of 3 holds for the channel as a whole"
        );
        assert!(!has_item_within(&mut a, Duration::from_millis(200)).await);
        assert!(!has_item_within(&mut b, Duration::from_millis(200)).await);
        for delivery in &held {
            within("ack", delivery.ack(BasicAckOptions::default()))
                .await
                .unwrap();
        }
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_returns_stream_sees_every_return() {
    run(async {
        let (connection, channel) = channel().await;
        let mut first = channel.returns();
        let mut second = channel.clone().returns();
        let mandatory = BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        let key = unique("nowhere");
        for i in 0..3 {
            drop(
                within(
                    "basic.publish",
                    channel.basic_publish(
                        "amq.direct",
                        &key,
                        mandatory,
                        format!("r{i}"),
                        BasicProperties::default(),
                    ),
                )
                .await
                .unwrap(),
            );
        }
        for i in 0..3 {
            let a = within("first returns stream", first.next()).await.unwrap();
            let b = within("second returns stream", second.next())
                .await
                .unwrap();
            assert_eq!(a.body, format!("r{i}").into_bytes());
            assert_eq!(a, b);
        }
        // The streams end when the channel closes.
        within("channel.close", channel.close()).await.unwrap();
        assert!(within("returns end", first.next()).await.is_none());
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

// ===== bodies =====

/// Bodies borrowed for the call only (`&str`, `&[u8]`, `&String`, `&Vec<u8>`, `&[u8; N]`) are
/// copied before `basic_publish` returns, whatever their size: short ones into the frames,
/// long ones (past 4 KiB, and past frame_max, so in several body frames) into a buffer of
/// their own. The source is overwritten right after each call, and the broker still gets what
/// it held at the call.
#[tokio::test(flavor = "multi_thread")]
async fn borrowed_bodies_of_every_size_are_copied_before_the_call_returns() {
    run(async {
        let connection = connect().await;
        let channel = confirm_channel(&connection).await;
        let queue = exclusive_queue(&channel).await;
        let frame_max = connection.frame_max() as usize;
        let sizes = [
            0,
            1,
            4095,
            4096,
            4097,
            frame_max - 8,
            frame_max - 7,
            3 * frame_max + 5,
        ];
        for size in sizes {
            let original: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let mut buffer = original.clone();
            let confirm = within(
                "basic.publish of a borrowed body",
                channel.basic_publish(
                    "",
                    &queue,
                    BasicPublishOptions::default(),
                    buffer.as_slice(),
                    BasicProperties::default(),
                ),
            )
            .await
            .unwrap();
            // The borrow ended with the call: the buffer may change before the confirm.
            buffer.iter_mut().for_each(|b| *b = b'!');
            drop(buffer);
            assert!(within("confirmation", confirm).await.unwrap().is_ack());
            let got = get_body(&channel, &queue).await;
            assert_eq!(
                got.as_deref(),
                Some(&original[..]),
                "a body of {size} bytes"
            );
        }

        // Every borrowed form, from data local to this function.
        let text = format!("local {}", unique("text"));
        let vector = text.as_bytes().to_vec();
        let array: [u8; 5] = *b"array";
        let confirms = vec![
            channel
                .basic_publish(
                    "",
                    &queue,
                    BasicPublishOptions::default(),
                    text.as_str(),
                    BasicProperties::default(),
                )
                .await
                .unwrap(),
            channel
                .basic_publish(
                    "",
                    &queue,
                    BasicPublishOptions::default(),
                    &text,
                    BasicProperties::default(),
                )
                .await
                .unwrap(),
            channel
                .basic_publish(
                    "",
                    &queue,
                    BasicPublishOptions::default(),
                    &vector,
                    BasicProperties::default(),
                )
                .await
                .unwrap(),
            channel
                .basic_publish(
                    "",
                    &queue,
                    BasicPublishOptions::default(),
                    &array,
                    BasicProperties::default(),
                )
                .await
                .unwrap(),
        ];
        for confirm in confirms {
            assert!(within("confirmation", confirm).await.unwrap().is_ack());
        }
        for expected in [text.as_bytes(), text.as_bytes(), &vector[..], b"array"] {
            assert_eq!(get_body(&channel, &queue).await.as_deref(), Some(expected));
        }
    })
    .await;
}

/// A borrowed mandatory body that the broker returns is matched to its publish: the returned
/// message carries the body, short (encoded with the frames) or long.
#[tokio::test(flavor = "multi_thread")]
async fn a_returned_borrowed_body_comes_back_with_its_confirmation() {
    run(async {
        let connection = connect().await;
        let channel = confirm_channel(&connection).await;
        let mandatory = BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        let unroutable = unique("nowhere");
        for size in [7, 10_000] {
            let body = "r".repeat(size);
            let confirm = within(
                "basic.publish",
                channel.basic_publish(
                    "amq.direct",
                    &unroutable,
                    mandatory,
                    &body,
                    BasicProperties::default(),
                ),
            )
            .await
            .unwrap();
            match within("confirmation", confirm).await.unwrap() {
                warren::Confirmation::Returned(message) => {
                    assert_eq!(message.body, body.as_bytes())
                }
                other => panic!("expected Returned, got {other:?}"),
            }
        }
    })
    .await;
}

/// A header table `depth` tables deep (the headers table itself is the first), built without
/// recursion; the innermost holds `"bottom" => "reached"`.
fn nested_headers(depth: usize) -> FieldTable {
    let mut table = FieldTable::new().with("bottom", "reached");
    for _ in 1..depth {
        table = FieldTable::new().with("n", table);
    }
    table
}

/// Publishes `properties` and expects warren to refuse it with `Error::Encode`, before anything
/// is sent: the confirm-mode channel and the connection stay usable, and the queue gets
/// nothing.
async fn assert_publish_refused(
    channel: &warren::Channel,
    queue: &str,
    properties: BasicProperties,
    expected: warren::wire::EncodeError,
) {
    let result = channel.basic_publish(
        "",
        queue,
        BasicPublishOptions::default(),
        "refused",
        properties,
    );
    match within("basic.publish of an unsendable header", result).await {
        Err(warren::Error::Encode(error)) => assert_eq!(error, expected),
        Err(other) => panic!("expected Error::Encode, got {other}"),
        Ok(_) => panic!("expected Error::Encode, the publish was queued"),
    }
    // The confirm numbering is intact: the next publish is acked as itself.
    publish(channel, "", queue, b"sentinel").await;
    assert!(channel.is_open());
    assert!(channel.connection().is_open());
    assert_eq!(queue_counts(channel, queue).await.message_count, 1);
    assert_eq!(
        get_body(channel, queue).await.as_deref(),
        Some(&b"sentinel"[..])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn headers_nested_deeper_than_32_levels_are_refused_at_publish() {
    use warren::wire::{EncodeError, MAX_NESTING};
    run(async {
        let connection = connect().await;
        let channel = confirm_channel(&connection).await;
        let queue = exclusive_queue(&channel).await;

        // 32 levels, the most warren accepts on receipt, go through the broker and back.
        let deepest = BasicProperties {
            headers: Some(nested_headers(MAX_NESTING)),
            ..Default::default()
        };
        publish_with(&channel, "", &queue, b"32 deep", deepest.clone()).await;
        let got = within(
            "basic.get",
            channel.basic_get(&queue, BasicGetOptions { no_ack: true }),
        )
        .await
        .expect("a 32-deep header decodes")
        .expect("the message is there");
        assert_eq!(got.properties.headers, deepest.headers);

        // One more level is refused before it is sent.
        let too_deep = BasicProperties {
            headers: Some(nested_headers(MAX_NESTING + 1)),
            ..Default::default()
        };
        assert_publish_refused(
            &channel,
            &queue,
            too_deep,
            EncodeError::NestingTooDeep { limit: MAX_NESTING },
        )
        .await;
        // An array counts as a level too.
        let array_too_deep = BasicProperties {
            headers: Some(nested_headers(MAX_NESTING).with(
                "list",
                FieldValue::from(vec![FieldValue::Table(nested_headers(MAX_NESTING))]),
            )),
            ..Default::default()
        };
        assert_publish_refused(
            &channel,
            &queue,
            array_too_deep,
            EncodeError::NestingTooDeep { limit: MAX_NESTING },
        )
        .await;

        // 50 000 levels: the same typed error, no stack overflow (the test's thread has the
        // default 2 MiB stack).
        let abysmal = BasicProperties {
            headers: Some(nested_headers(50_000)),
            ..Default::default()
        };
        assert_publish_refused(
            &channel,
            &queue,
            abysmal,
            EncodeError::NestingTooDeep { limit: MAX_NESTING },
        )
        .await;
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

/// RabbitMQ 3.10 closes the whole connection with 541 when a publish's headers hold a NaN or
/// an infinity (`tests/common/raw.rs` shows it); warren refuses the one publish instead.
#[tokio::test(flavor = "multi_thread")]
async fn non_finite_floats_are_refused_at_publish_and_in_arguments() {
    use warren::wire::EncodeError;
    run(async {
        // What the broker does with one, through a raw connection: it closes it.
        let probe = unique("nan-probe");
        let connection = connect().await;
        let channel = confirm_channel(&connection).await;
        declare_queue(&channel, &probe).await;
        let mut raw = raw::RawPublisher::connect().await;
        let mut entries = vec![3, b'n', b'a', b'n', b'd'];
        entries.extend_from_slice(&f64::NAN.to_be_bytes());
        let outcome = raw
            .publish(&probe, &raw::properties_with_header_entries(&entries), b"x")
            .await;
        assert!(
            matches!(outcome, raw::RawOutcome::ConnectionClosed(541, _)),
            "{outcome:?}"
        );
        raw.close().await;
        within(
            "queue.delete",
            channel.queue_delete(&probe, Default::default()),
        )
        .await
        .unwrap();

        let queue = exclusive_queue(&channel).await;
        let refused = |key: &'static str| EncodeError::NonFiniteFloat {
            key: ShortString::from_static(key),
        };
        for (key, value) in [
            ("nan64", FieldValue::F64(f64::NAN)),
            ("inf64", FieldValue::F64(f64::INFINITY)),
            ("-inf64", FieldValue::F64(f64::NEG_INFINITY)),
            ("nan32", FieldValue::F32(f32::NAN)),
            ("inf32", FieldValue::F32(f32::INFINITY)),
            ("-inf32", FieldValue::F32(f32::NEG_INFINITY)),
        ] {
            let properties = BasicProperties {
                headers: Some(
                    FieldTable::new()
                        .with("fine", 1.5f64)
                        .with(key, value.clone()),
                ),
                ..Default::default()
            };
            assert_publish_refused(&channel, &queue, properties, refused(key)).await;
            // Nested, and in an array, the same.
            let nested = BasicProperties {
                headers: Some(FieldTable::new().with(
                    "outer",
                    FieldTable::new().with("list", vec![FieldValue::I8(1), value.clone()]),
                )),
                ..Default::default()
            };
            assert_publish_refused(&channel, &queue, nested, refused("list")).await;
        }

        // queue.declare arguments (and every other method with a table) are checked too,
        // whether sent with a reply or with no_wait.
        let name = unique("nan-arguments");
        let arguments = FieldTable::new().with("x-custom", f64::INFINITY);
        let declared = channel
            .queue_declare(
                &name,
                QueueDeclareOptions {
                    arguments: arguments.clone(),
                    ..Default::default()
                },
            )
            .await;
        match declared {
            Err(warren::Error::Encode(error)) => assert_eq!(error, refused("x-custom")),
            other => panic!("expected Error::Encode, got {other:?}"),
        }
        let sent = channel
            .send(warren::protocol::QueueDeclare {
                queue: ShortString::try_from(name.as_str()).unwrap(),
                no_wait: true,
                arguments,
                ..Default::default()
            })
            .await;
        assert!(
            matches!(sent, Err(warren::Error::Encode(_))),
            "no_wait declare: {sent:?}"
        );
        assert!(
            !queue_exists(&connection, &name).await,
            "nothing was declared"
        );
        assert!(channel.is_open());
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}
