//! The queue class against the real broker: declare (passive, server-named, exclusive,
//! auto-delete, arguments), bind, unbind, purge, delete (if_empty, if_unused).

mod common;

use common::*;
use warren::wire::{FieldTable, FieldValue};
use warren::{
    BasicConsumeOptions, BasicQosOptions, Error, ExchangeKind, Initiator, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions, QueueUnbindOptions, ReplyCode,
};

/// Asserts that `result` is the broker closing channel `channel` with `code`.
#[track_caller]
fn assert_channel_closed<T: std::fmt::Debug>(
    result: Result<T, Error>,
    channel: u16,
    code: ReplyCode,
) {
    match result {
        Err(Error::ChannelClosed { channel: id, close }) => {
            assert_eq!(id, channel, "the error names the channel that was closed");
            assert_eq!(close.code, code, "reply code of {close}");
            assert_eq!(close.initiator, Initiator::Server);
        }
        other => panic!("expected channel {channel} closed with {code:?}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn declare_then_passive_declare_reports_the_counts() {
    run(async {
        let mut cleanup = Cleanup::new();
        let connection = connect().await;
        let channel = confirm_channel(&connection).await;
        let queue = cleanup.queue(unique("q-counts"));
        let declared = declare_queue(&channel, &queue).await;
        assert_eq!(declared.name, queue.as_str());
        assert_eq!((declared.message_count, declared.consumer_count), (0, 0));

        for i in 0..3 {
            publish(&channel, "", &queue, format!("m{i}").as_bytes()).await;
        }
        let counts = queue_counts(&channel, &queue).await;
        assert_eq!(counts.name, queue.as_str());
        assert_eq!((counts.message_count, counts.consumer_count), (3, 0));
        // A non-passive redeclare with the same flags reports the counts too.
        let again = declare_queue(&channel, &queue).await;
        assert_eq!((again.message_count, again.consumer_count), (3, 0));

        // A consumer with prefetch 1 takes one message (unacknowledged: not counted as ready).
        let consuming = open(&connection).await;
        within(
            "basic.qos",
            consuming.basic_qos(1, BasicQosOptions::default()),
        )
        .await
        .unwrap();
        let mut consumer = within(
            "basic.consume",
            consuming.basic_consume(&queue, BasicConsumeOptions::default()),
        )
        .await
        .unwrap();
        let delivery = next_delivery(&mut consumer).await;
        assert_eq!(&delivery.body[..], b"m0");
        let counts = queue_counts(&channel, &queue).await;
        assert_eq!(
            (counts.message_count, counts.consumer_count),
            (2, 1),
            "2 ready messages and 1 consumer"
        );

        within("consuming channel close", consuming.close())
            .await
            .unwrap();
        drop(consumer);
        drop(delivery);
        // Closing the channel requeues the unacknowledged message and removes the consumer
        // (asynchronously on the broker's side, hence the polling).
        eventually("the message is requeued and the consumer gone", || {
            let channel = channel.clone();
            let queue = queue.clone();
            async move {
                let counts = queue_counts(&channel, &queue).await;
                (counts.message_count, counts.consumer_count) == (3, 0)
            }
        })
        .await;

        let deleted = within(
            "queue.delete",
            channel.queue_delete(&queue, Default::default()),
        )
        .await
        .unwrap();
        assert_eq!(deleted.message_count, 3);
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn passive_declare_of_a_missing_queue_is_404_and_the_rest_keeps_working() {
    run(async {
        let (connection, failing) = channel().await;
        let other = open(&connection).await;
        let missing = unique("q-missing");
        let result = within(
            "passive declare of a missing queue",
            failing.queue_declare(
                &missing,
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
            ),
        )
        .await;
        let error = result
            .as_ref()
            .expect_err("the queue does not exist")
            .clone();
        assert!(error.is_soft());
        assert_channel_closed(result, failing.id(), ReplyCode::NOT_FOUND);
        assert!(
            error.to_string().contains(&missing),
            "Display says which queue: {error}"
        );
        assert!(!failing.is_open());
        assert!(connection.is_open());
        let queue = declare_queue_with(
            &other,
            "",
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
        )
        .await
        .name;
        publish(&other, "", &queue, b"alive").await;
        assert_eq!(
            get_body(&other, &queue).await.as_deref(),
            Some(&b"alive"[..])
        );
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn server_named_queue_gets_an_amq_gen_name() {
    run(async {
        let connection = connect().await;
        let channel = confirm_channel(&connection).await;
        let declared = declare_queue_with(
            &channel,
            "",
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
        )
        .await;
        assert!(
            declared.name.starts_with("amq.gen-"),
            "the broker chose the name {}",
            declared.name
        );
        let counts = queue_counts(&channel, &declared.name).await;
        assert_eq!(counts.name, declared.name);
        publish(&channel, "", &declared.name, b"to a server-named queue").await;
        assert_eq!(
            queue_counts(&channel, &declared.name).await.message_count,
            1
        );
        // Exclusive: it goes away with the connection.
        within("connection.close", connection.close())
            .await
            .unwrap();
        let observer = connect().await;
        assert!(!queue_exists(&observer, &declared.name).await);
        observer.close().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bind_routes_and_unbind_stops_routing() {
    run(async {
        let mut cleanup = Cleanup::new();
        let (connection, channel) = channel().await;
        let direct = cleanup.exchange(unique("x-direct"));
        let topic = cleanup.exchange(unique("x-topic"));
        let queue = cleanup.queue(unique("q-bind"));
        declare_exchange(&channel, &direct, ExchangeKind::Direct).await;
        declare_exchange(&channel, &topic, ExchangeKind::Topic).await;
        declare_queue(&channel, &queue).await;

        assert_not_routed(&channel, &direct, "orders", &queue).await;
        within(
            "queue.bind",
            channel.queue_bind(&queue, &direct, "orders", QueueBindOptions::default()),
        )
        .await
        .unwrap();
        publish(&channel, &direct, "orders", b"order 1").await;
        assert_eq!(
            get_body(&channel, &queue).await.as_deref(),
            Some(&b"order 1"[..])
        );
        assert_not_routed(&channel, &direct, "invoices", &queue).await;

        within(
            "queue.bind topic",
            channel.queue_bind(&queue, &topic, "eu.*.orders", QueueBindOptions::default()),
        )
        .await
        .unwrap();
        publish(&channel, &topic, "eu.fr.orders", b"topic match").await;
        assert_eq!(
            get_body(&channel, &queue).await.as_deref(),
            Some(&b"topic match"[..])
        );
        assert_not_routed(&channel, &topic, "us.ny.orders", &queue).await;

        within(
            "queue.unbind",
            channel.queue_unbind(&queue, &direct, "orders", QueueUnbindOptions::default()),
        )
        .await
        .unwrap();
        assert_not_routed(&channel, &direct, "orders", &queue).await;
        within(
            "queue.unbind topic",
            channel.queue_unbind(&queue, &topic, "eu.*.orders", QueueUnbindOptions::default()),
        )
        .await
        .unwrap();
        assert_not_routed(&channel, &topic, "eu.fr.orders", &queue).await;

        within(
            "queue.delete",
            channel.queue_delete(&queue, Default::default()),
        )
        .await
        .unwrap();
        for exchange in [&direct, &topic] {
            within(
                "exchange.delete",
                channel.exchange_delete(exchange, Default::default()),
            )
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
async fn purge_returns_the_count_and_empties_the_queue() {
    run(async {
        let mut cleanup = Cleanup::new();
        let connection = connect().await;
        let channel = confirm_channel(&connection).await;
        let queue = cleanup.queue(unique("q-purge"));
        declare_queue(&channel, &queue).await;
        for i in 0..5 {
            publish(&channel, "", &queue, format!("{i}").as_bytes()).await;
        }
        let purged = within(
            "queue.purge",
            channel.queue_purge(&queue, QueuePurgeOptions::default()),
        )
        .await
        .unwrap();
        assert_eq!(purged.message_count, 5);
        assert_eq!(queue_counts(&channel, &queue).await.message_count, 0);
        assert_eq!(get_body(&channel, &queue).await, None);
        let purged = within(
            "queue.purge of an empty queue",
            channel.queue_purge(&queue, QueuePurgeOptions::default()),
        )
        .await
        .unwrap();
        assert_eq!(purged.message_count, 0);
        within(
            "queue.delete",
            channel.queue_delete(&queue, Default::default()),
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
async fn delete_returns_the_count_and_removes_the_queue() {
    run(async {
        let mut cleanup = Cleanup::new();
        let connection = connect().await;
        let channel = confirm_channel(&connection).await;
        let queue = cleanup.queue(unique("q-delete"));
        declare_queue(&channel, &queue).await;
        for i in 0..4 {
            publish(&channel, "", &queue, format!("{i}").as_bytes()).await;
        }
        let deleted = within(
            "queue.delete",
            channel.queue_delete(&queue, QueueDeleteOptions::default()),
        )
        .await
        .unwrap();
        assert_eq!(deleted.message_count, 4);
        assert!(!queue_exists(&connection, &queue).await);
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_if_empty_refuses_a_queue_with_messages() {
    run(async {
        let mut cleanup = Cleanup::new();
        let connection = connect().await;
        let channel = confirm_channel(&connection).await;
        let queue = cleanup.queue(unique("q-if-empty"));
        declare_queue(&channel, &queue).await;
        publish(&channel, "", &queue, b"keep me").await;
        let result = within(
            "queue.delete if_empty",
            channel.queue_delete(
                &queue,
                QueueDeleteOptions {
                    if_empty: true,
                    ..Default::default()
                },
            ),
        )
        .await;
        assert_channel_closed(result, channel.id(), ReplyCode::PRECONDITION_FAILED);
        let channel = open(&connection).await;
        assert_eq!(
            queue_counts(&channel, &queue).await.message_count,
            1,
            "the queue and its message survive"
        );
        assert_eq!(
            get_body(&channel, &queue).await.as_deref(),
            Some(&b"keep me"[..])
        );
        let deleted = within(
            "queue.delete if_empty",
            channel.queue_delete(
                &queue,
                QueueDeleteOptions {
                    if_empty: true,
                    ..Default::default()
                },
            ),
        )
        .await
        .expect("an empty queue can be deleted with if_empty");
        assert_eq!(deleted.message_count, 0);
        assert!(!queue_exists(&connection, &queue).await);
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_if_unused_refuses_a_queue_with_consumers() {
    run(async {
        let mut cleanup = Cleanup::new();
        let (connection, channel) = channel().await;
        let queue = cleanup.queue(unique("q-if-unused"));
        declare_queue(&channel, &queue).await;
        let consuming = open(&connection).await;
        let mut consumer = within(
            "basic.consume",
            consuming.basic_consume(&queue, BasicConsumeOptions::default()),
        )
        .await
        .unwrap();
        let result = within(
            "queue.delete if_unused",
            channel.queue_delete(
                &queue,
                QueueDeleteOptions {
                    if_unused: true,
                    ..Default::default()
                },
            ),
        )
        .await;
        assert_channel_closed(result, channel.id(), ReplyCode::PRECONDITION_FAILED);
        let channel = open(&connection).await;
        assert_eq!(queue_counts(&channel, &queue).await.consumer_count, 1);

        within("consumer cancel", consumer.cancel()).await.unwrap();
        assert_eq!(queue_counts(&channel, &queue).await.consumer_count, 0);
        within(
            "queue.delete if_unused",
            channel.queue_delete(
                &queue,
                QueueDeleteOptions {
                    if_unused: true,
                    ..Default::default()
                },
            ),
        )
        .await
        .expect("a queue without consumers can be deleted with if_unused");
        assert!(!queue_exists(&connection, &queue).await);
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exclusive_queue_is_locked_to_its_connection() {
    run(async {
        let (owner, channel) = channel().await;
        let queue = unique("q-exclusive");
        declare_queue_with(
            &channel,
            &queue,
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
        )
        .await;
        publish(&channel, "", &queue, b"mine").await;

        let (stranger, foreign) = common::channel().await;
        let result = within(
            "passive declare from another connection",
            foreign.queue_declare(
                &queue,
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
            ),
        )
        .await;
        assert_channel_closed(result, foreign.id(), ReplyCode::RESOURCE_LOCKED);
        let foreign = open(&stranger).await;
        let result = within(
            "basic.get from another connection",
            foreign.basic_get(&queue, Default::default()),
        )
        .await;
        assert_channel_closed(result, foreign.id(), ReplyCode::RESOURCE_LOCKED);
        assert!(stranger.is_open());

        // The owner still uses it.
        assert_eq!(
            get_body(&channel, &queue).await.as_deref(),
            Some(&b"mine"[..])
        );
        within("connection.close", owner.close()).await.unwrap();
        assert!(
            !queue_exists(&stranger, &queue).await,
            "an exclusive queue goes with its connection"
        );
        within("connection.close", stranger.close()).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn auto_delete_queue_goes_with_its_last_consumer() {
    run(async {
        let mut cleanup = Cleanup::new();
        let (connection, channel) = channel().await;
        let queue = cleanup.queue(unique("q-auto-delete"));
        declare_queue_with(
            &channel,
            &queue,
            QueueDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
        )
        .await;
        let mut consumer = within(
            "basic.consume",
            channel.basic_consume(&queue, BasicConsumeOptions::default()),
        )
        .await
        .unwrap();
        assert!(queue_exists(&connection, &queue).await);
        within("consumer cancel", consumer.cancel()).await.unwrap();
        eventually("the auto-delete queue is deleted", || {
            let connection = connection.clone();
            let queue = queue.clone();
            async move { !queue_exists(&connection, &queue).await }
        })
        .await;
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn x_max_length_is_honoured() {
    run(async {
        let mut cleanup = Cleanup::new();
        let connection = connect().await;
        let channel = confirm_channel(&connection).await;
        let queue = cleanup.queue(unique("q-max-length"));
        let arguments = FieldTable::new().with("x-max-length", FieldValue::I32(2));
        declare_queue_with(
            &channel,
            &queue,
            QueueDeclareOptions {
                arguments: arguments.clone(),
                ..Default::default()
            },
        )
        .await;
        for i in 1..=5 {
            publish(&channel, "", &queue, format!("m{i}").as_bytes()).await;
        }
        assert_eq!(queue_counts(&channel, &queue).await.message_count, 2);
        // The default overflow drops from the head: the newest two remain.
        assert_eq!(
            get_body(&channel, &queue).await.as_deref(),
            Some(&b"m4"[..])
        );
        assert_eq!(
            get_body(&channel, &queue).await.as_deref(),
            Some(&b"m5"[..])
        );
        assert_eq!(get_body(&channel, &queue).await, None);

        // Declaring it again with other arguments is refused.
        let result = within(
            "queue.declare with other arguments",
            channel.queue_declare(
                &queue,
                QueueDeclareOptions {
                    arguments: FieldTable::new().with("x-max-length", FieldValue::I32(3)),
                    ..Default::default()
                },
            ),
        )
        .await;
        assert_channel_closed(result, channel.id(), ReplyCode::PRECONDITION_FAILED);
        let channel = open(&connection).await;
        // With the same arguments it is fine.
        declare_queue_with(
            &channel,
            &queue,
            QueueDeclareOptions {
                arguments,
                ..Default::default()
            },
        )
        .await;
        within(
            "queue.delete",
            channel.queue_delete(&queue, Default::default()),
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
async fn durable_queue_is_listed_durable_by_the_broker() {
    run(async {
        let mut cleanup = Cleanup::new();
        let (connection, channel) = channel().await;
        let queue = cleanup.queue(unique("q-durable"));
        declare_queue_with(
            &channel,
            &queue,
            QueueDeclareOptions {
                durable: true,
                arguments: FieldTable::new().with("x-message-ttl", FieldValue::I32(60_000)),
                ..Default::default()
            },
        )
        .await;
        let listing = rabbitmqctl(&[
            "list_queues",
            "-q",
            "--no-table-headers",
            "name",
            "durable",
            "auto_delete",
            "arguments",
        ]);
        let line = listing
            .lines()
            .find(|line| line.split('\t').next() == Some(queue.as_str()))
            .unwrap_or_else(|| panic!("the broker lists {queue}:\n{listing}"));
        let fields: Vec<&str> = line.split('\t').collect();
        assert_eq!(fields[1], "true", "durable: {line}");
        assert_eq!(fields[2], "false", "auto_delete: {line}");
        assert!(
            fields[3].contains("x-message-ttl") && fields[3].contains("60000"),
            "{line}"
        );
        within(
            "queue.delete",
            channel.queue_delete(&queue, Default::default()),
        )
        .await
        .unwrap();
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}
