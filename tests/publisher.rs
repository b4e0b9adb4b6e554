//! The `Publisher` against the real broker: many tasks publishing through one publisher have
//! every message confirmed and consumed; a 404 fails only the publish that caused it and the
//! publisher goes on with a new channel; across a connection closed by the broker
//! (`rabbitmqctl close_connection` of our own connection), nothing is reported confirmed that
//! is not in the queue, and with republishing on, every message arrives.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use warren::protocol::BasicProperties;
use warren::{
    BasicConsumeOptions, BasicPublishOptions, Connection, ConnectionEvent, DeliveryMode, Error,
    PublishError, Publisher, PublisherOptions, QueueDeclareOptions, ReplyCode,
};

/// The message ids of everything in `queue`, read by a consumer until `expected` distinct
/// ids arrived or nothing came for a second.
async fn consume_ids(connection: &Connection, queue: &str, expected: usize) -> Vec<String> {
    let channel = open(connection).await;
    let options = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let mut consumer = within("basic.consume", channel.basic_consume(queue, options))
        .await
        .unwrap();
    let mut ids = Vec::new();
    let mut distinct = HashSet::new();
    while distinct.len() < expected {
        match tokio::time::timeout(Duration::from_secs(1), consumer.next()).await {
            Ok(Some(Ok(delivery))) => {
                let id = delivery
                    .properties
                    .message_id
                    .as_ref()
                    .expect("every message has an id")
                    .to_string();
                distinct.insert(id.clone());
                ids.push(id);
            }
            Ok(other) => panic!("the consumer ended: {other:?}"),
            Err(_) => break,
        }
    }
    let _ = channel.close().await;
    ids
}

fn with_id(id: &str) -> BasicProperties {
    BasicProperties::default().with_message_id(id)
}

/// A persistent message: in a durable queue, the broker confirms it once it is on disk, so
/// many are unconfirmed at any moment.
fn persistent(id: usize) -> BasicProperties {
    with_id(&id.to_string()).with_delivery_mode(DeliveryMode::Persistent)
}

/// Declares a durable queue on a channel of its own.
async fn declare_durable(connection: &Connection, queue: &str) {
    let options = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    declare_queue_with(&open(connection).await, queue, options).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn many_tasks_publish_and_every_message_is_confirmed_and_consumed() {
    run(async {
        let mut cleanup = Cleanup::new();
        let connection = connect().await;
        let channel = open(&connection).await;
        let queue = cleanup.queue(unique("q-publisher-tasks"));
        declare_queue(&channel, &queue).await;
        let options = PublisherOptions::default().channels(3).max_in_flight(64);
        let publisher = Publisher::new(&connection, options).await.unwrap();

        const TASKS: usize = 12;
        const EACH: usize = 250;
        let mut tasks = Vec::new();
        for task in 0..TASKS {
            let publisher = publisher.clone();
            let queue = queue.clone();
            tasks.push(tokio::spawn(async move {
                // Each task keeps several publishes in flight at once.
                let publishes = (0..EACH).map(|i| {
                    let publisher = &publisher;
                    let queue = &queue;
                    async move {
                        let id = format!("{task}-{i}");
                        publisher
                            .publish(
                                "",
                                queue,
                                BasicPublishOptions::default(),
                                id.as_bytes(),
                                with_id(&id),
                            )
                            .await
                    }
                });
                let results: Vec<_> = futures_util::stream::iter(publishes)
                    .buffer_unordered(16)
                    .collect()
                    .await;
                for result in results {
                    result.unwrap();
                }
            }));
        }
        for task in tasks {
            within("a publishing task", task).await.unwrap();
        }
        assert_eq!(publisher.in_flight(), 0);
        assert_eq!(
            queue_counts(&channel, &queue).await.message_count as usize,
            TASKS * EACH
        );
        let ids = consume_ids(&connection, &queue, TASKS * EACH).await;
        let expected: BTreeSet<String> = (0..TASKS)
            .flat_map(|t| (0..EACH).map(move |i| format!("{t}-{i}")))
            .collect();
        assert_eq!(ids.len(), TASKS * EACH, "no duplicate");
        assert_eq!(ids.into_iter().collect::<BTreeSet<_>>(), expected);
        within("publisher.close", publisher.close()).await.unwrap();
        let closed = publisher
            .publish("", &queue, Default::default(), "late", Default::default())
            .await
            .unwrap_err();
        assert!(
            matches!(closed, PublishError::Failed(Error::InvalidState(_))),
            "{closed:?}"
        );
        within("close", connection.close()).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_404_fails_only_its_publish_and_the_publisher_goes_on() {
    run(async {
        let mut cleanup = Cleanup::new();
        let connection = connect().await;
        let channel = open(&connection).await;
        let queue = cleanup.queue(unique("q-publisher-404"));
        declare_queue(&channel, &queue).await;
        // One channel: the publish after the 404 needs the replacement.
        let options = PublisherOptions::default().channels(1);
        let publisher = Publisher::new(&connection, options).await.unwrap();
        let publish = |exchange: String, id: String| {
            let publisher = publisher.clone();
            let queue = queue.clone();
            async move {
                publisher
                    .publish(&exchange, &queue, Default::default(), "x", with_id(&id))
                    .await
            }
        };
        within("a publish", publish(String::new(), "before".into()))
            .await
            .unwrap();

        let missing = unique("x-missing");
        let error = within(
            "the publish to a missing exchange",
            publish(missing.clone(), "lost".into()),
        )
        .await
        .unwrap_err();
        assert_eq!(error.reply_code(), Some(ReplyCode::NOT_FOUND), "{error:?}");
        match &error {
            PublishError::Failed(Error::ChannelClosed { close, .. }) => {
                assert!(close.text.contains(&missing), "{close}")
            }
            other => panic!("expected Failed(ChannelClosed 404), got {other:?}"),
        }
        assert!(!error.is_outcome_unknown());

        // The publisher goes on, on a new channel, from many tasks at once.
        let after: Vec<_> = (0..50)
            .map(|i| tokio::spawn(publish(String::new(), format!("after-{i}"))))
            .collect();
        for task in after {
            within("a publish after the 404", task)
                .await
                .unwrap()
                .unwrap();
        }
        let ids = consume_ids(&connection, &queue, 51).await;
        assert_eq!(ids.len(), 51, "{ids:?}");
        assert!(ids.iter().any(|id| id == "before"));
        assert!(!ids.iter().any(|id| id == "lost"));
        within("close", connection.close()).await.unwrap();
    })
    .await;
}

/// Publishes messages with ids 0, 1, ... through `publisher` from 8 tasks, each keeping 32
/// publishes in flight, while the broker closes `name`'s connection (once 1000 are confirmed),
/// and until each task has published 1000 more after that; returns the ids reported
/// confirmed and those reported otherwise, with their errors.
async fn publish_across_a_forced_close(
    publisher: &Publisher,
    name: &str,
    queue: &str,
) -> (Vec<usize>, Vec<(usize, PublishError)>) {
    const TASKS: usize = 8;
    let mut events = publisher.connection().events();
    let closed = Arc::new(AtomicBool::new(false));
    let confirmed = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let publisher = publisher.clone();
        let queue = queue.to_owned();
        let confirmed = confirmed.clone();
        let closed = closed.clone();
        tasks.push(tokio::spawn(async move {
            let mut after_close = 0;
            // Stops once the task has published 1000 after the close.
            let ids = (task..).step_by(TASKS).take_while(move |_| {
                if closed.load(Ordering::Acquire) {
                    after_close += 1;
                }
                after_close <= 1000
            });
            let publishes = ids.map(|id| {
                let publisher = &publisher;
                let queue = &queue;
                let confirmed = &confirmed;
                async move {
                    let result = publisher
                        .publish("", queue, Default::default(), "m", persistent(id))
                        .await;
                    if result.is_ok() {
                        confirmed.fetch_add(1, Ordering::Relaxed);
                    }
                    (id, result)
                }
            });
            futures_util::stream::iter(publishes)
                .buffer_unordered(32)
                .collect::<Vec<_>>()
                .await
        }));
    }
    let closer = {
        let name = name.to_owned();
        let closed = closed.clone();
        tokio::spawn(async move {
            while confirmed.load(Ordering::Relaxed) < 1000 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let line = broker_connection(&name, &["pid"]).expect("the broker lists us");
            rabbitmqctl(&[
                "close_connection",
                &line[0],
                "closed by the warren publisher tests",
            ]);
            closed.store(true, Ordering::Release);
        })
    };
    within_for(Duration::from_secs(60), "the close", closer)
        .await
        .unwrap();
    let mut acked = Vec::new();
    let mut failed = Vec::new();
    for task in tasks {
        for (id, result) in within_for(Duration::from_secs(60), "a publishing task", task)
            .await
            .unwrap()
        {
            match result {
                Ok(()) => acked.push(id),
                Err(error) => failed.push((id, error)),
            }
        }
    }
    // The connection was really lost and recovered.
    within_for(Duration::from_secs(30), "recovery", async {
        while let Some(event) = events.next().await {
            if matches!(event, ConnectionEvent::Recovered { .. }) {
                return;
            }
        }
        panic!("the events ended before a recovery");
    })
    .await;
    (acked, failed)
}

#[tokio::test(flavor = "multi_thread")]
async fn across_a_forced_close_nothing_is_reported_confirmed_that_was_not() {
    run(async {
        let mut cleanup = Cleanup::new();
        let name = unique("conn-publisher-forced");
        let connection = connect_with(options().connection_name(&name)).await;
        let setup = connect().await;
        let queue = cleanup.queue(unique("q-publisher-forced"));
        declare_durable(&setup, &queue).await;
        eventually("the broker lists the connection", || async {
            broker_connection(&name, &["pid"]).is_some()
        })
        .await;
        let publisher = Publisher::new(&connection, PublisherOptions::default().max_in_flight(256))
            .await
            .unwrap();

        let (acked, failed) = publish_across_a_forced_close(&publisher, &name, &queue).await;
        let count = acked.len() + failed.len();
        for (id, error) in &failed {
            assert!(
                error.is_outcome_unknown()
                    && matches!(error.error(), Some(Error::PublishOutcomeUnknown { .. })),
                "message {id}: only an unknown outcome is expected, got {error:?}"
            );
        }
        // Usually the close catches publishes in flight (up to the window, 256), but the
        // broker may confirm everything it read before it closes: no count is asserted.
        let received: HashSet<usize> = consume_ids(&setup, &queue, count)
            .await
            .into_iter()
            .map(|id| id.parse().unwrap())
            .collect();
        eprintln!(
            "forced close: {} acked, {} of unknown outcome, {} in the queue",
            acked.len(),
            failed.len(),
            received.len()
        );
        let missing: Vec<_> = acked.iter().filter(|id| !received.contains(id)).collect();
        assert!(
            missing.is_empty(),
            "reported confirmed but not in the queue: {missing:?}"
        );
        // It still works on the recovered connection.
        within(
            "a publish after recovery",
            publisher.publish("", &queue, Default::default(), "x", with_id("after")),
        )
        .await
        .unwrap();
        within("close", connection.close()).await.unwrap();
        within("close", setup.close()).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_republishing_every_message_arrives_across_a_forced_close() {
    run(async {
        let mut cleanup = Cleanup::new();
        let name = unique("conn-publisher-republish");
        let connection = connect_with(options().connection_name(&name)).await;
        let setup = connect().await;
        let queue = cleanup.queue(unique("q-publisher-republish"));
        declare_durable(&setup, &queue).await;
        eventually("the broker lists the connection", || async {
            broker_connection(&name, &["pid"]).is_some()
        })
        .await;
        let options = PublisherOptions::default()
            .max_in_flight(256)
            .republish_attempts(5);
        let publisher = Publisher::new(&connection, options).await.unwrap();

        let (acked, failed) = publish_across_a_forced_close(&publisher, &name, &queue).await;
        let count = acked.len() + failed.len();
        assert!(failed.is_empty(), "{:?}", &failed[..failed.len().min(5)]);
        // At least once: every id arrives; a republished one may arrive twice.
        let ids = consume_ids(&setup, &queue, count).await;
        let received: HashSet<usize> = ids.iter().map(|id| id.parse().unwrap()).collect();
        assert_eq!(
            received.len(),
            count,
            "{} of {count} arrived",
            received.len()
        );
        eprintln!(
            "forced close with republishing: {count} acked, {} deliveries, {} duplicates",
            ids.len(),
            ids.len() - received.len()
        );
        within("close", connection.close()).await.unwrap();
        within("close", setup.close()).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn options_that_cannot_work_are_refused() {
    run(async {
        let connection = connect().await;
        for options in [
            PublisherOptions::default().channels(0),
            // More than the connection can open, or than memory holds.
            PublisherOptions::default().channels(usize::from(connection.channel_max()) + 1),
            PublisherOptions::default().channels(usize::MAX),
            PublisherOptions::default().max_in_flight(0),
        ] {
            let error = Publisher::new(&connection, options).await.unwrap_err();
            assert!(matches!(error, Error::Config(_)), "{error:?}");
        }
        within("close", connection.close()).await.unwrap();
    })
    .await;
}

/// `Duration::MAX` as a publish's deadline means none: it must not overflow the clock.
#[tokio::test(flavor = "multi_thread")]
async fn a_publisher_given_no_deadline_publishes() {
    run(async {
        let mut cleanup = Cleanup::new();
        let connection = connect().await;
        let channel = open(&connection).await;
        let queue = cleanup.queue(unique("q-publisher-no-deadline"));
        declare_queue(&channel, &queue).await;
        let options = PublisherOptions::default().timeout(Duration::MAX);
        let publisher = Publisher::new(&connection, options).await.unwrap();
        within(
            "a publish without a deadline",
            publisher.publish("", &queue, Default::default(), "m", Default::default()),
        )
        .await
        .unwrap();
        assert_eq!(queue_counts(&channel, &queue).await.message_count, 1);
        within("close", connection.close()).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unroutable_mandatory_publish_is_returned_and_a_routed_one_confirmed() {
    run(async {
        let mut cleanup = Cleanup::new();
        let connection = connect().await;
        let channel = open(&connection).await;
        let queue = cleanup.queue(unique("q-publisher-mandatory"));
        declare_queue(&channel, &queue).await;
        let publisher = Publisher::new(&connection, PublisherOptions::default())
            .await
            .unwrap();
        let mandatory = BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        let nowhere = unique("nowhere");
        let error = within(
            "an unroutable publish",
            publisher.publish(
                "amq.direct",
                &nowhere,
                mandatory,
                "lost",
                Default::default(),
            ),
        )
        .await
        .unwrap_err();
        match &error {
            PublishError::Returned(message) => {
                assert_eq!(message.reply_code, ReplyCode::NO_ROUTE);
                assert_eq!(message.routing_key, nowhere.as_str());
                assert_eq!(&message.body[..], b"lost");
            }
            other => panic!("expected Returned, got {other:?}"),
        }
        within(
            "a routed mandatory publish",
            publisher.publish("", &queue, mandatory, "kept", Default::default()),
        )
        .await
        .unwrap();
        assert_eq!(queue_counts(&channel, &queue).await.message_count, 1);
        within("close", connection.close()).await.unwrap();
    })
    .await;
}

/// A publish's future is moved by whatever runs many at once (`buffer_unordered`, a spawned
/// task); keep it small. It holds the confirmation and the boxed slow path, not the message;
/// a `Publisher`'s also holds the properties, for publishing again after a recovery.
#[tokio::test(flavor = "multi_thread")]
async fn publish_futures_stay_small() {
    run(async {
        let connection = connect().await;
        let channel = open(&connection).await;
        let publisher = Publisher::new(&connection, PublisherOptions::default())
            .await
            .unwrap();
        // Made and dropped unpolled: nothing is sent.
        let single = channel.basic_publish("", "none", Default::default(), "m", Default::default());
        let pooled = publisher.publish("", "none", Default::default(), "m", Default::default());
        let (single, pooled) = (
            std::mem::size_of_val(&single),
            std::mem::size_of_val(&pooled),
        );
        eprintln!("basic_publish future {single} bytes, Publisher::publish future {pooled} bytes");
        assert!(single <= 256, "a basic_publish future is {single} bytes");
        assert!(
            pooled <= 1024,
            "a Publisher::publish future is {pooled} bytes"
        );
        within("close", connection.close()).await.unwrap();
    })
    .await;
}
