//! Channels against the real broker: the typed generic calls (`call`, `send`), closing, the
//! errors of a closed channel, per-call deadlines and abandoned calls.

mod common;

use std::time::Duration;

use common::*;
use futures_util::FutureExt;
use warren::protocol::{
    BasicAck, BasicCancel, BasicConsume, BasicGet, BasicPublish, ChannelFlow, ConfirmSelect,
    ConnectionClose, QueueDeclare, QueueDelete,
};
use warren::wire::ShortString;
use warren::{
    BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, Confirmation, Error, Initiator,
    QueueDeclareOptions, ReplyCode,
};

fn name(value: &str) -> ShortString {
    ShortString::try_from(value).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn call_queue_declare_returns_queue_declare_ok() {
    run(async {
        let connection = connect().await;
        let channel = confirm_channel(&connection).await;
        let queue = unique("q-call");
        let ok = within(
            "call(QueueDeclare)",
            channel.call(QueueDeclare {
                queue: name(&queue),
                exclusive: true,
                ..Default::default()
            }),
        )
        .await
        .expect("queue.declare-ok");
        assert_eq!(ok.queue, queue.as_str());
        assert_eq!((ok.message_count, ok.consumer_count), (0, 0));
        publish(&channel, "", &queue, b"one").await;
        publish(&channel, "", &queue, b"two").await;
        let ok = within(
            "call(QueueDeclare passive)",
            channel.call(QueueDeclare {
                queue: name(&queue),
                passive: true,
                ..Default::default()
            }),
        )
        .await
        .unwrap();
        assert_eq!(ok.message_count, 2, "the typed reply carries the broker's counts");

        // A method with several possible replies gives the generated reply enum.
        let reply = within(
            "call(BasicGet)",
            channel.call(BasicGet {
                queue: name(&queue),
                no_ack: true,
            }),
        )
        .await
        .unwrap();
        assert!(
            matches!(reply, warren::protocol::BasicGetReply::GetOk(ref ok) if ok.message_count == 1),
            "{reply:?}"
        );

        let deleted = within(
            "call(QueueDelete)",
            channel.call(QueueDelete {
                queue: name(&queue),
                ..Default::default()
            }),
        )
        .await
        .unwrap();
        assert!(deleted.message_count <= 1);
        assert!(!queue_exists(&connection, &queue).await);
        within("connection.close", connection.close()).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn send_basic_ack_acknowledges_on_the_broker() {
    run(async {
        let connection = connect().await;
        let observer = confirm_channel(&connection).await;
        let queue = exclusive_queue(&observer).await;
        publish(&observer, "", &queue, b"acked").await;
        publish(&observer, "", &queue, b"not acked").await;

        let channel = open(&connection).await;
        let first = within(
            "basic.get",
            channel.basic_get(&queue, BasicGetOptions::default()),
        )
        .await
        .unwrap()
        .unwrap();
        let _second = within(
            "basic.get",
            channel.basic_get(&queue, BasicGetOptions::default()),
        )
        .await
        .unwrap()
        .unwrap();
        within(
            "send(BasicAck)",
            channel.send(BasicAck {
                delivery_tag: first.delivery_tag(),
                multiple: false,
            }),
        )
        .await
        .expect("basic.ack is asynchronous");
        within("channel.close", channel.close()).await.unwrap();
        // Only the message that was not acked comes back. The broker requeues it after the
        // close, in the queue's own process, so the count may lag close-ok a little.
        eventually("the unacked message is requeued", || {
            let observer = observer.clone();
            let queue = queue.clone();
            async move { queue_counts(&observer, &queue).await.message_count == 1 }
        })
        .await;
        assert_eq!(
            get_body(&observer, &queue).await.as_deref(),
            Some(&b"not acked"[..])
        );
        assert_eq!(
            get_body(&observer, &queue).await,
            None,
            "the acked message came back"
        );
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn call_with_no_wait_set_is_an_invalid_argument() {
    run(async {
        let (connection, channel) = channel().await;
        let queue = unique("q-no-wait-call");
        let result = within(
            "call(QueueDeclare no_wait)",
            channel.call(QueueDeclare {
                queue: name(&queue),
                no_wait: true,
                exclusive: true,
                ..Default::default()
            }),
        )
        .await;
        match result {
            Err(Error::InvalidArgument(message)) => {
                assert!(message.contains("no_wait"), "{message}")
            }
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
        assert!(channel.is_open(), "a refused call leaves the channel open");
        assert!(
            !queue_exists(&connection, &queue).await,
            "nothing was sent to the broker"
        );
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn generic_calls_refuse_what_they_cannot_handle() {
    run(async {
        let (connection, channel) = channel().await;
        // send of a synchronous method without no_wait: its reply would have no taker.
        let result = within(
            "send(QueueDeclare)",
            channel.send(QueueDeclare {
                queue: name(&unique("q-refused")),
                ..Default::default()
            }),
        )
        .await;
        assert!(
            matches!(result, Err(Error::InvalidArgument(_))),
            "{result:?}"
        );
        // Content-carrying methods go through basic_publish.
        let result = within(
            "send(BasicPublish)",
            channel.send(BasicPublish {
                routing_key: name("x"),
                ..Default::default()
            }),
        )
        .await;
        assert!(
            matches!(result, Err(Error::InvalidArgument(_))),
            "{result:?}"
        );
        // Methods the driver must manage.
        let result = within(
            "call(BasicConsume)",
            channel.call(BasicConsume {
                queue: name("amq.rabbitmq.reply-to"),
                ..Default::default()
            }),
        )
        .await;
        assert!(
            matches!(result, Err(Error::InvalidArgument(_))),
            "{result:?}"
        );
        let result = within(
            "send(ConnectionClose)",
            channel.send(ConnectionClose {
                reply_code: 200,
                ..Default::default()
            }),
        )
        .await;
        assert!(
            matches!(result, Err(Error::InvalidArgument(_))),
            "{result:?}"
        );
        assert!(channel.is_open());
        assert!(connection.is_open());
        // channel.flow is a legitimate generic call; RabbitMQ answers active=true.
        let ok = within(
            "call(ChannelFlow)",
            channel.call(ChannelFlow { active: true }),
        )
        .await
        .expect("channel.flow-ok");
        assert!(ok.active);
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn send_queue_declare_with_no_wait_creates_and_records_the_queue() {
    run(async {
        let mut cleanup = Cleanup::new();
        let (connection, channel) = channel().await;
        let queue = cleanup.queue(unique("q-no-wait-send"));
        within(
            "send(QueueDeclare no_wait)",
            channel.send(QueueDeclare {
                queue: name(&queue),
                no_wait: true,
                ..Default::default()
            }),
        )
        .await
        .expect("a no_wait declare is sent without waiting");
        // The channel handles the declare before this passive one.
        let counts = queue_counts(&channel, &queue).await;
        assert_eq!(counts.name, queue.as_str());
        assert!(
            connection
                .topology()
                .queues
                .iter()
                .any(|q| q.name == queue.as_str()),
            "a queue declared through the generic send is recorded for recovery like any other: {:?}",
            connection.topology().queues
        );
        within("queue.delete", channel.queue_delete(&queue, Default::default()))
            .await
            .unwrap();
        within("connection.close", connection.close()).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn send_confirm_select_with_no_wait_enables_confirms() {
    run(async {
        let (connection, channel) = channel().await;
        let queue = exclusive_queue(&channel).await;
        within(
            "send(ConfirmSelect no_wait)",
            channel.send(ConfirmSelect { no_wait: true }),
        )
        .await
        .expect("confirm.select no_wait is sent");
        // The broker now confirms every publish; the client must not claim it does not.
        let confirm = within(
            "basic.publish",
            channel.basic_publish(
                "",
                &queue,
                BasicPublishOptions::default(),
                "x",
                Default::default(),
            ),
        )
        .await
        .unwrap();
        assert_eq!(
            within("confirmation", confirm).await.unwrap(),
            Confirmation::Ack,
            "the channel is in confirm mode on the broker"
        );
        assert!(channel.is_confirm_mode());
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn send_basic_cancel_with_no_wait_ends_the_consumer_stream() {
    run(async {
        let (connection, channel) = channel().await;
        let queue = exclusive_queue(&channel).await;
        let mut consumer = within(
            "basic.consume",
            channel.basic_consume(&queue, BasicConsumeOptions::default()),
        )
        .await
        .unwrap();
        within(
            "send(BasicCancel no_wait)",
            channel.send(BasicCancel {
                consumer_tag: name(consumer.tag()),
                no_wait: true,
            }),
        )
        .await
        .expect("basic.cancel no_wait is sent");
        assert_eq!(queue_counts(&channel, &queue).await.consumer_count, 0);
        let end = tokio::time::timeout(
            Duration::from_secs(5),
            futures_util::StreamExt::next(&mut consumer),
        )
        .await;
        assert!(
            matches!(end, Ok(None)),
            "the stream of a consumer cancelled through the generic send must end, not wait \
             forever: {end:?}"
        );
        assert!(connection.topology().consumers.is_empty());
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_closed_channel_returns_the_close_error() {
    run(async {
        let (connection, channel) = channel().await;
        let queue = exclusive_queue(&channel).await;
        within("channel.close", channel.close())
            .await
            .expect("channel.close");
        assert!(!channel.is_open());
        within("channel.close again", channel.close())
            .await
            .expect("closing a closed channel does nothing");
        let closed = within("closed()", channel.closed()).await;
        let check = |result: Result<(), Error>, what: &str| match result {
            Err(Error::ChannelClosed { channel: id, close }) => {
                assert_eq!(id, channel.id(), "{what}");
                assert_eq!(close.initiator, Initiator::Client, "{what}");
                assert!(close.is_normal(), "{what}: {close}");
            }
            other => panic!("{what} on a closed channel: expected ChannelClosed, got {other:?}"),
        };
        check(Err(closed), "closed()");
        check(
            within(
                "queue.declare",
                channel.queue_declare(&queue, Default::default()),
            )
            .await
            .map(drop),
            "queue.declare",
        );
        check(
            within("basic.get", channel.basic_get(&queue, Default::default()))
                .await
                .map(drop),
            "basic.get",
        );
        check(
            within("basic.ack", channel.basic_ack(1, Default::default())).await,
            "basic.ack",
        );
        let publish = match within(
            "basic.publish",
            channel.basic_publish("", &queue, Default::default(), "x", Default::default()),
        )
        .await
        {
            Ok(confirm) => within("confirmation", confirm).await.map(drop),
            Err(e) => Err(e),
        };
        check(publish, "basic.publish");
        check(
            within(
                "basic.consume",
                channel.basic_consume(&queue, BasicConsumeOptions::default()),
            )
            .await
            .map(drop),
            "basic.consume",
        );
        // Nothing was published: the queue is empty.
        let other = open(&connection).await;
        assert_eq!(queue_counts(&other, &queue).await.message_count, 0);

        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_past_its_deadline_times_out_and_leaves_the_channel_consistent() {
    run(async {
        let (connection, channel) = channel().await;
        let hurried = channel.with_timeout(Duration::from_micros(1));
        assert_eq!(hurried.timeout(), Duration::from_micros(1));
        assert_eq!(hurried.id(), channel.id());
        // tokio's timers tick in milliseconds, so a local broker sometimes answers within the
        // 1 µs deadline; try until one call times out, and check the call after each attempt.
        let mut timeouts = 0;
        for attempt in 0..50 {
            let late = unique("q-late");
            let result = hurried
                .queue_declare(
                    &late,
                    QueueDeclareOptions {
                        exclusive: true,
                        ..Default::default()
                    },
                )
                .await;
            match result {
                Err(Error::Timeout { operation, after }) => {
                    assert_eq!(operation, "queue.declare");
                    assert_eq!(after, Duration::from_micros(1));
                    timeouts += 1;
                }
                Ok(declared) => assert_eq!(declared.name, late.as_str()),
                Err(other) => panic!("attempt {attempt}: expected a timeout, got {other:?}"),
            }
            // The late reply to the timed-out declare must not be taken for this one's reply.
            let on_time = unique("q-on-time");
            let declared = declare_queue_with(
                &channel,
                &on_time,
                QueueDeclareOptions {
                    exclusive: true,
                    ..Default::default()
                },
            )
            .await;
            assert_eq!(declared.name, on_time.as_str(), "attempt {attempt}");
            if timeouts >= 3 {
                break;
            }
        }
        assert!(timeouts > 0, "a 1 µs deadline never expired");

        // A call dropped after its first poll leaves the channel consistent too.
        let third = unique("q-dropped");
        let mut abandoned = Box::pin(channel.queue_declare(
            &third,
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
        ));
        assert!((&mut abandoned).now_or_never().is_none());
        drop(abandoned);
        let fourth = unique("q-after-drop");
        let declared = declare_queue_with(
            &channel,
            &fourth,
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
        )
        .await;
        assert_eq!(declared.name, fourth.as_str());
        assert!(channel.is_open());
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_every_handle_closes_the_channel_on_the_broker() {
    run(async {
        let (connection, channel) = channel().await;
        let queue = exclusive_queue(&channel).await;
        let observer = confirm_channel(&connection).await;
        publish(&observer, "", &queue, b"held").await;
        let consuming = open(&connection).await;
        let message = within(
            "basic.get",
            consuming.basic_get(&queue, BasicGetOptions::default()),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(queue_counts(&observer, &queue).await.message_count, 0);
        // The delivery holds the channel too; dropping both closes it, which requeues.
        drop(consuming);
        drop(message);
        eventually("the unacked message is requeued", || {
            let observer = observer.clone();
            let queue = queue.clone();
            async move { queue_counts(&observer, &queue).await.message_count == 1 }
        })
        .await;
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_channel_close_names_the_code_text_and_method() {
    run(async {
        let (connection, channel) = channel().await;
        let missing = unique("q-missing");
        let error = within(
            "queue.delete if_empty on a missing queue is fine; basic.get is not",
            channel.basic_get(&missing, BasicGetOptions::default()),
        )
        .await
        .expect_err("no such queue");
        let Error::ChannelClosed { channel: id, close } = &error else {
            panic!("expected a channel close, got {error:?}");
        };
        assert_eq!(*id, channel.id());
        assert_eq!(close.code, ReplyCode::NOT_FOUND);
        assert_eq!(close.initiator, Initiator::Server);
        assert!(close.text.contains(&missing), "{}", close.text);
        let method = close.method.expect("the broker names basic.get");
        assert_eq!((method.class, method.method), (60, 70));
        let shown = error.to_string();
        assert!(shown.contains("404"), "{shown}");
        assert!(shown.contains(&missing), "{shown}");
        assert!(shown.contains(&channel.id().to_string()), "{shown}");
        assert!(connection.is_open());
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_calls_on_one_channel_each_get_their_own_reply() {
    run(async {
        let (connection, channel) = channel().await;
        let names: Vec<String> = (0..64)
            .map(|i| unique(&format!("q-concurrent-{i}")))
            .collect();
        let calls = names.iter().map(|queue| {
            let channel = channel.clone();
            let queue = queue.clone();
            tokio::spawn(async move {
                channel
                    .queue_declare(
                        &queue,
                        QueueDeclareOptions {
                            exclusive: true,
                            ..Default::default()
                        },
                    )
                    .await
                    .map(|declared| (queue, declared.name.to_string()))
            })
        });
        let results = within(
            "64 concurrent declares",
            futures_util::future::join_all(calls),
        )
        .await;
        for result in results {
            let (asked, got) = result.unwrap().expect("queue.declare");
            assert_eq!(asked, got, "each caller gets the reply to its own request");
        }
        assert_eq!(connection.topology().queues.len(), 64);
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn names_longer_than_255_bytes_are_refused_before_sending() {
    run(async {
        let (connection, channel) = channel().await;
        let too_long = "q".repeat(256);
        let result = within(
            "queue.declare with a 256-byte name",
            channel.queue_declare(&too_long, QueueDeclareOptions::default()),
        )
        .await;
        assert!(
            matches!(result, Err(Error::InvalidArgument(_))),
            "{result:?}"
        );
        let result = within(
            "basic.publish with a 256-byte routing key",
            channel.basic_publish("", &too_long, Default::default(), "x", Default::default()),
        )
        .await;
        assert!(
            matches!(result, Err(Error::InvalidArgument(_))),
            "{result:?}"
        );
        assert!(channel.is_open(), "nothing reached the broker");
        // 255 bytes is the limit, and the broker takes it.
        let longest = format!("{}{}", unique("q"), "x".repeat(255))
            .chars()
            .take(255)
            .collect::<String>();
        let declared = declare_queue_with(
            &channel,
            &longest,
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
        )
        .await;
        assert_eq!(declared.name.len(), 255);
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn channels_closed_and_reopened_in_a_hurry_never_confuse_the_broker() {
    run(async {
        let (connection, keep) = channel().await;
        // Close without waiting, by dropping or by a detached close, and open again at once:
        // a number is reused only after the broker confirmed the close, or the broker would
        // close the connection (504 CHANNEL_ERROR).
        for i in 0..300 {
            let channel = open(&connection).await;
            within("a call", channel.basic_qos(1, Default::default()))
                .await
                .unwrap_or_else(|e| panic!("iteration {i}: {e}"));
            if i % 2 == 0 {
                drop(channel);
            } else {
                tokio::spawn(async move { channel.close().await });
            }
        }
        assert!(connection.is_open());
        within(
            "a call on the long-lived channel",
            keep.basic_qos(1, Default::default()),
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
async fn a_publish_then_dropping_the_channel_still_delivers() {
    run(async {
        let mut cleanup = Cleanup::new();
        let name = unique("conn-publish-drop");
        let connection = connect_with(options().connection_name(&name)).await;
        let setup = open(&connection).await;
        let queue = cleanup.queue(unique("q-drop-after-publish"));
        declare_queue(&setup, &queue).await;
        let channel = open(&connection).await;
        // basic_publish returned Ok: the message is handed to the connection. Dropping the
        // confirmation "does not cancel the publish", and neither may dropping the channel.
        let confirm = within(
            "basic.publish",
            channel.basic_publish("", &queue, Default::default(), "sent", Default::default()),
        )
        .await
        .unwrap();
        drop(confirm);
        drop(channel);
        eventually("the broker closed the dropped channel", || {
            let name = name.clone();
            async move {
                broker_connection(&name, &["channels"]).is_some_and(|line| line[0] == "1")
            }
        })
        .await;
        eventually_within(
            Duration::from_secs(2),
            "the message published before the drop is in the queue",
            || {
                let setup = setup.clone();
                let queue = queue.clone();
                async move { queue_counts(&setup, &queue).await.message_count == 1 }
            },
        )
        .await;
        within(
            "queue.delete",
            setup.queue_delete(&queue, Default::default()),
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
async fn gets_and_deliveries_interleave_on_one_channel() {
    run(async {
        let connection = connect().await;
        let setup = confirm_channel(&connection).await;
        let consumed = exclusive_queue(&setup).await;
        let fetched = exclusive_queue(&setup).await;
        // Bodies of several frames, so that content of both kinds is assembled side by side.
        let big = |tag: &str, i: usize| format!("{tag}{i}-{}", "z".repeat(300_000)).into_bytes();
        for i in 0..20 {
            publish(&setup, "", &consumed, &big("c", i)).await;
            publish(&setup, "", &fetched, &big("g", i)).await;
        }
        let channel = open(&connection).await;
        let mut consumer = consume_no_ack(&channel, &consumed).await;
        for i in 0..20 {
            let got = within(
                "basic.get",
                channel.basic_get(&fetched, BasicGetOptions { no_ack: true }),
            )
            .await
            .unwrap()
            .expect("a message");
            assert!(got.body[..] == big("g", i)[..], "get {i}");
            let delivery = next_delivery(&mut consumer).await;
            assert!(delivery.body[..] == big("c", i)[..], "delivery {i}");
        }
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ack_then_dropping_the_channel_keeps_the_ack() {
    run(async {
        let name = unique("conn-ack-drop");
        let connection = connect_with(options().connection_name(&name)).await;
        let setup = confirm_channel(&connection).await;
        let queue = exclusive_queue(&setup).await;
        publish(&setup, "", &queue, b"acked").await;
        let channel = open(&connection).await;
        let message = within(
            "basic.get",
            channel.basic_get(&queue, BasicGetOptions::default()),
        )
        .await
        .unwrap()
        .expect("the message");
        within("ack", message.ack(Default::default()))
            .await
            .expect("the ack is queued");
        drop(message);
        drop(channel);
        // Once the broker has closed the dropped channel (and requeued whatever it had not
        // seen acknowledged), the acked message must be gone for good.
        eventually("the broker closed the dropped channel", || {
            let name = name.clone();
            async move {
                broker_connection(&name, &["channels"]).is_some_and(|line| line[0] == "1")
            }
        })
        .await;
        assert_eq!(
            queue_counts(&setup, &queue).await.message_count,
            0,
            "an acknowledged message came back: the ack was lost when the channel was dropped"
        );
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}
