//! Automatic recovery through a relay in front of the default broker: the relay drops, silences
//! or refuses connections (the broker itself is never touched), and the connection must come
//! back by itself with its channels, settings, topology and consumers under the same handles,
//! while what was in flight gets an honest outcome.
//!
//! Faults that stop, kill or reconfigure a node are in `tests/recovery_faults.rs`, on nodes of
//! their own.

mod common;
mod faults;

use std::time::{Duration, Instant};

use common::*;
use faults::Relay;
use futures_util::StreamExt;
use warren::protocol::BasicProperties;
use warren::topology::TopologyEntity;
use warren::wire::{FieldTable, FieldValue, ShortString};
use warren::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, Channel, Confirmation, Connection,
    ConnectionEvent, ConnectionOptions, ConnectionStatus, Error, Events, ExchangeKind,
    QueueDeclareOptions, RecoveryPolicy,
};

/// Options through `relay`, recovering quickly: backoff from 10 ms up to 500 ms.
fn through(relay: &Relay) -> ConnectionOptions {
    relay.options(common::options()).recovery(
        RecoveryPolicy::default()
            .initial_delay(Duration::from_millis(10))
            .max_delay(Duration::from_millis(500)),
    )
}

/// Waits for the next event that `pick` maps to something, failing on `Closed`.
async fn wait_for<T>(
    events: &mut Events,
    what: &str,
    mut pick: impl FnMut(&ConnectionEvent) -> Option<T>,
) -> T {
    within_for(Duration::from_secs(30), what, async {
        loop {
            match events.next().await {
                Some(event) => {
                    if let Some(found) = pick(&event) {
                        return found;
                    }
                    if let ConnectionEvent::Closed(error) = event {
                        panic!("{what}: the connection closed instead: {error}");
                    }
                }
                None => panic!("{what}: the events ended"),
            }
        }
    })
    .await
}

/// Waits until the connection reports `Recovered`; returns how long recovery took.
async fn recovered(events: &mut Events) -> Duration {
    wait_for(events, "the connection to recover", |event| match event {
        ConnectionEvent::Recovered { took, .. } => Some(*took),
        _ => None,
    })
    .await
}

/// Cuts every link of `relay` and waits for `connection` to be recovered.
async fn cut_and_recover(relay: &Relay, connection: &Connection) -> Duration {
    let mut events = connection.events();
    relay.cut();
    let took = recovered(&mut events).await;
    assert_eq!(connection.status(), ConnectionStatus::Open);
    took
}

async fn consume(channel: &Channel, queue: &str) -> warren::Consumer {
    within(
        "basic.consume",
        channel.basic_consume(queue, BasicConsumeOptions::default()),
    )
    .await
    .unwrap_or_else(|e| panic!("consuming {queue}: {e}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_handles_work_after_a_dropped_connection() {
    run(async {
        let mut cleanup = Cleanup::new();
        let relay = Relay::start(broker_addr()).await;
        let connection = connect_with(through(&relay)).await;
        let channel = open(&connection).await;
        let queue = cleanup.queue(unique("q-same-handles"));
        declare_queue(&channel, &queue).await;
        let mut consumer = consume(&channel, &queue).await;
        publish(&channel, "", &queue, b"before").await;
        let delivery = next_delivery(&mut consumer).await;
        within("ack", delivery.ack(Default::default()))
            .await
            .unwrap();
        // A round trip on the channel: the broker has taken the ack before it answers.
        assert_eq!(queue_counts(&channel, &queue).await.message_count, 0);

        let mut events = connection.events();
        relay.cut();
        let reason = wait_for(&mut events, "Disconnected", |event| match event {
            ConnectionEvent::Disconnected { reason } => Some(reason.clone()),
            _ => None,
        })
        .await;
        assert!(matches!(reason, Error::Io(_)), "lost by a cut: {reason:?}");
        let attempt = wait_for(&mut events, "Recovering", |event| match event {
            ConnectionEvent::Recovering { attempt, .. } => Some(*attempt),
            _ => None,
        })
        .await;
        assert_eq!(attempt, 1);
        let took = recovered(&mut events).await;
        eprintln!("recovered in {took:?}");
        assert!(connection.is_open());
        within("wait_until_open", connection.wait_until_open())
            .await
            .unwrap();

        // Same channel handle, same consumer stream.
        publish(&channel, "", &queue, b"after").await;
        let delivery = next_delivery(&mut consumer).await;
        assert_eq!(&delivery.body[..], b"after");
        assert!(!delivery.envelope.redelivered);
        within("ack", delivery.ack(Default::default()))
            .await
            .unwrap();
        assert_eq!(relay.accepted(), 2, "one reconnection");
        within("close", connection.close()).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn in_flight_calls_fail_as_retryable_and_unconfirmed_publishes_as_unknown() {
    run(async {
        let mut cleanup = Cleanup::new();
        let relay = Relay::start(broker_addr()).await;
        let connection = connect_with(through(&relay)).await;
        let channel = confirm_channel(&connection).await;
        let queue = cleanup.queue(unique("q-in-flight"));
        declare_queue(&channel, &queue).await;

        // Nothing gets through: a call and a publish wait for answers that will not come.
        relay.blackhole();
        let call = {
            let channel = channel.clone();
            let queue = queue.clone();
            tokio::spawn(async move { channel.queue_declare(&queue, Default::default()).await })
        };
        let confirm = within(
            "basic.publish",
            channel.basic_publish(
                "",
                &queue,
                BasicPublishOptions::default(),
                "maybe",
                BasicProperties::default(),
            ),
        )
        .await
        .expect("the publish is queued");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut events = connection.events();
        relay.cut();
        relay.restore().await;

        let error = within("the call's outcome", call)
            .await
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(&error, Error::ConnectionLost { reason } if matches!(**reason, Error::Io(_))),
            "a call in flight: {error:?}"
        );
        assert!(error.is_retryable());
        assert!(!error.is_connection_fatal());
        let outcome = within("the publish's outcome", confirm).await;
        match outcome {
            Err(Error::PublishOutcomeUnknown { .. }) => {}
            other => panic!("an unconfirmed publish must be unknown, not {other:?}"),
        }
        recovered(&mut events).await;
        // The retry works, and confirms work again on the recovered channel.
        within(
            "the retried call",
            channel.queue_declare(&queue, Default::default()),
        )
        .await
        .unwrap();
        let confirm = within(
            "basic.publish",
            channel.basic_publish(
                "",
                &queue,
                BasicPublishOptions::default(),
                "surely",
                BasicProperties::default(),
            ),
        )
        .await
        .unwrap();
        assert_eq!(within("confirm", confirm).await.unwrap(), Confirmation::Ack);
        within("close", connection.close()).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_and_publishes_made_during_recovery_wait_for_it() {
    run(async {
        let mut cleanup = Cleanup::new();
        let relay = Relay::start(broker_addr()).await;
        let connection = connect_with(through(&relay)).await;
        let channel = confirm_channel(&connection).await;
        let queue = cleanup.queue(unique("q-during"));
        declare_queue(&channel, &queue).await;

        let mut events = connection.events();
        relay.refuse().await;
        relay.cut();
        wait_for(&mut events, "a failed attempt", |event| {
            matches!(event, ConnectionEvent::RecoveryAttemptFailed { .. }).then_some(())
        })
        .await;
        assert_eq!(connection.status(), ConnectionStatus::Recovering);
        assert!(connection.is_open(), "recovering is not closed");

        let publish = {
            let channel = channel.clone();
            let queue = queue.clone();
            tokio::spawn(async move {
                let confirm = channel
                    .basic_publish(
                        "",
                        &queue,
                        BasicPublishOptions::default(),
                        "made while recovering",
                        BasicProperties::default(),
                    )
                    .await?;
                confirm.await
            })
        };
        let call = {
            let channel = channel.clone();
            let queue = queue.clone();
            tokio::spawn(async move { channel.queue_declare(&queue, Default::default()).await })
        };
        let opened = {
            let connection = connection.clone();
            tokio::spawn(async move { connection.open_channel().await })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!publish.is_finished() && !call.is_finished() && !opened.is_finished());

        relay.restore().await;
        recovered(&mut events).await;
        assert_eq!(
            within("the publish", publish).await.unwrap().unwrap(),
            Confirmation::Ack
        );
        within("the call", call).await.unwrap().unwrap();
        eventually("the message made while recovering is in the queue", || {
            let channel = channel.clone();
            let queue = queue.clone();
            async move { queue_counts(&channel, &queue).await.message_count == 1 }
        })
        .await;
        let other = within("the new channel", opened).await.unwrap().unwrap();
        assert!(other.is_open());
        within("close", connection.close()).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledging_a_delivery_from_before_the_loss_is_a_typed_error() {
    run(async {
        let mut cleanup = Cleanup::new();
        let relay = Relay::start(broker_addr()).await;
        let connection = connect_with(through(&relay)).await;
        let channel = open(&connection).await;
        let queue = cleanup.queue(unique("q-stale"));
        declare_queue(&channel, &queue).await;
        within("basic.qos", channel.basic_qos(10, Default::default()))
            .await
            .unwrap();
        let mut consumer = consume(&channel, &queue).await;
        for body in [&b"one"[..], b"two", b"three"] {
            publish(&channel, "", &queue, body).await;
        }
        let first = next_delivery(&mut consumer).await;
        assert_eq!(&first.body[..], b"one");
        eventually("the other two are buffered", || {
            let buffered = consumer.buffered_count();
            async move { buffered == 2 }
        })
        .await;

        cut_and_recover(&relay, &connection).await;
        // The one the application holds cannot be acknowledged: it would name another.
        let error = within("a stale ack", first.ack(Default::default()))
            .await
            .unwrap_err();
        assert!(
            matches!(error, Error::StaleDelivery { delivery_tag } if delivery_tag == first.delivery_tag()),
            "{error:?}"
        );
        // The two that waited in the stream were dropped; all three come again, redelivered,
        // with tags above every earlier one, and can be acknowledged.
        let mut bodies = Vec::new();
        for _ in 0..3 {
            let delivery = next_delivery(&mut consumer).await;
            assert!(delivery.envelope.redelivered, "{delivery:?}");
            assert!(delivery.delivery_tag() > first.delivery_tag());
            bodies.push(String::from_utf8(delivery.body.to_vec()).unwrap());
            within("ack", delivery.ack(Default::default()))
                .await
                .unwrap();
        }
        bodies.sort();
        assert_eq!(bodies, ["one", "three", "two"]);
        assert!(!has_item_within(&mut consumer, Duration::from_millis(300)).await);
        assert_eq!(queue_counts(&channel, &queue).await.message_count, 0);
        within("close", connection.close()).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn prefetch_confirm_and_tx_modes_come_back() {
    run(async {
        let mut cleanup = Cleanup::new();
        let relay = Relay::start(broker_addr()).await;
        let connection = connect_with(through(&relay)).await;
        let (_, setup) = channel().await;
        let queue = cleanup.queue(unique("q-modes"));
        declare_queue(&setup, &queue).await;

        let consuming = open(&connection).await;
        within("basic.qos", consuming.basic_qos(3, Default::default()))
            .await
            .unwrap();
        within(
            "basic.qos global",
            consuming.basic_qos(
                20,
                BasicQosOptions {
                    global: true,
                    ..Default::default()
                },
            ),
        )
        .await
        .unwrap();
        let confirming = confirm_channel(&connection).await;
        let transacting = open(&connection).await;
        within("tx.select", transacting.tx_select()).await.unwrap();
        let mut consumer = consume(&consuming, &queue).await;

        cut_and_recover(&relay, &connection).await;

        // Confirm mode: the publish is confirmed (not NotRequested).
        let confirm = within(
            "basic.publish",
            confirming.basic_publish(
                "",
                &queue,
                BasicPublishOptions::default(),
                "confirmed",
                BasicProperties::default(),
            ),
        )
        .await
        .unwrap();
        assert_eq!(within("confirm", confirm).await.unwrap(), Confirmation::Ack);
        // Tx mode: nothing is routed before the commit.
        publish(&transacting, "", &queue, b"in a transaction").await;
        within("tx.commit", transacting.tx_commit()).await.unwrap();
        for i in 0..10 {
            publish(&setup, "", &queue, format!("m{i}").as_bytes()).await;
        }
        // The per-consumer prefetch of 3 holds: 3 unacknowledged deliveries, no more.
        eventually("three deliveries arrive", || {
            let buffered = consumer.buffered_count();
            async move { buffered == 3 }
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(consumer.buffered_count(), 3, "the prefetch came back");
        let delivery = next_delivery(&mut consumer).await;
        within(
            "ack",
            delivery.ack(warren::BasicAckOptions { multiple: false }),
        )
        .await
        .unwrap();
        eventually("one more after an ack", || {
            let buffered = consumer.buffered_count();
            async move { buffered == 3 }
        })
        .await;
        within("close", connection.close()).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_named_exclusive_queue_is_declared_again_under_a_new_name() {
    run(async {
        let mut cleanup = Cleanup::new();
        let relay = Relay::start(broker_addr()).await;
        let connection = connect_with(through(&relay)).await;
        let channel = open(&connection).await;
        let exchange = cleanup.exchange(unique("x-renamed"));
        declare_exchange(&channel, &exchange, ExchangeKind::Topic).await;
        let declared = declare_queue_with(
            &channel,
            "",
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
        )
        .await;
        let old = declared.name.to_string();
        within(
            "queue.bind",
            channel.queue_bind(&old, &exchange, "logs.#", Default::default()),
        )
        .await
        .unwrap();
        let mut consumer = consume(&channel, &old).await;

        let mut events = connection.events();
        relay.cut();
        let (from, to) = wait_for(&mut events, "QueueRenamed", |event| match event {
            ConnectionEvent::QueueRenamed { old, new } => Some((old.clone(), new.clone())),
            _ => None,
        })
        .await;
        recovered(&mut events).await;
        assert_eq!(from, old);
        assert_ne!(to, old);
        let topology = connection.topology();
        assert_eq!(topology.queues.len(), 1);
        assert_eq!(topology.queues[0].name, to.as_str());
        assert!(topology.queues[0].server_named && topology.queues[0].exclusive);
        assert_eq!(topology.consumers[0].queue, to.as_str());
        // The old queue died with the old connection; the new one is bound and consumed.
        assert!(!queue_exists(&connect().await, &old).await);
        let (_, other) = common::channel().await;
        publish(&other, &exchange, "logs.error", b"routed to the new name").await;
        let delivery = next_delivery(&mut consumer).await;
        assert_eq!(&delivery.body[..], b"routed to the new name");
        assert_eq!(delivery.envelope.routing_key, "logs.error");
        within("close", connection.close()).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_refused_entity_is_reported_and_the_rest_comes_back() {
    run(async {
        let mut cleanup = Cleanup::new();
        let relay = Relay::start(broker_addr()).await;
        let connection = connect_with(through(&relay)).await;
        let channel = open(&connection).await;
        let (_, admin) = common::channel().await;
        // A queue this connection declared with one argument...
        let changed = cleanup.queue(unique("q-changed"));
        let mut arguments = FieldTable::new();
        arguments.insert(
            ShortString::from_static("x-max-length"),
            FieldValue::I32(10),
        );
        declare_queue_with(
            &channel,
            &changed,
            QueueDeclareOptions {
                arguments,
                ..Default::default()
            },
        )
        .await;
        // ...a queue someone else declared, which it consumes...
        let foreign = cleanup.queue(unique("q-foreign"));
        declare_queue(&admin, &foreign).await;
        let mut doomed = consume(&channel, &foreign).await;
        // ...and a healthy queue with a consumer.
        let healthy = cleanup.queue(unique("q-healthy"));
        declare_queue(&channel, &healthy).await;
        let mut consumer = consume(&channel, &healthy).await;

        // While the connection is down, the first queue is declared again with another
        // argument and the foreign one is deleted.
        let mut events = connection.events();
        relay.refuse().await;
        relay.cut();
        wait_for(&mut events, "a failed attempt", |event| {
            matches!(event, ConnectionEvent::RecoveryAttemptFailed { .. }).then_some(())
        })
        .await;
        within(
            "queue.delete",
            admin.queue_delete(&changed, Default::default()),
        )
        .await
        .unwrap();
        let mut other_arguments = FieldTable::new();
        other_arguments.insert(
            ShortString::from_static("x-max-length"),
            FieldValue::I32(20),
        );
        declare_queue_with(
            &admin,
            &changed,
            QueueDeclareOptions {
                arguments: other_arguments,
                ..Default::default()
            },
        )
        .await;
        within(
            "queue.delete",
            admin.queue_delete(&foreign, Default::default()),
        )
        .await
        .unwrap();
        relay.restore().await;

        let mut failures = Vec::new();
        let took = wait_for(&mut events, "recovery", |event| match event {
            ConnectionEvent::TopologyRecoveryFailed { entity, error } => {
                failures.push((entity.clone(), error.clone()));
                None
            }
            ConnectionEvent::Recovered { took, .. } => Some(*took),
            _ => None,
        })
        .await;
        eprintln!("recovered in {took:?} with {} failures", failures.len());
        assert_eq!(failures.len(), 2, "{failures:?}");
        match &failures[0] {
            (TopologyEntity::Queue(queue), error) => {
                assert_eq!(queue.name, changed.as_str());
                assert_eq!(
                    error.reply_code(),
                    Some(warren::ReplyCode::PRECONDITION_FAILED)
                );
            }
            other => panic!("expected the changed queue first, got {other:?}"),
        }
        match &failures[1] {
            (TopologyEntity::Consumer(consumer), error) => {
                assert_eq!(consumer.queue, foreign.as_str());
                assert_eq!(error.reply_code(), Some(warren::ReplyCode::NOT_FOUND));
            }
            other => panic!("expected the foreign consumer, got {other:?}"),
        }
        // The consumer that could not come back ends with the reason.
        match next_item(&mut doomed).await {
            Some(Err(Error::ConsumerNotRecovered { queue, cause, .. })) => {
                assert_eq!(queue, foreign);
                assert_eq!(cause.reply_code(), Some(warren::ReplyCode::NOT_FOUND));
            }
            other => panic!("expected ConsumerNotRecovered, got {other:?}"),
        }
        assert!(next_item(&mut doomed).await.is_none());
        // Everything else works: the channel, the healthy consumer.
        assert!(channel.is_open());
        publish(&admin, "", &healthy, b"still here").await;
        assert_eq!(&next_delivery(&mut consumer).await.body[..], b"still here");
        assert!(
            connection
                .topology()
                .consumers
                .iter()
                .all(|c| c.queue != foreign.as_str())
        );
        within("close", connection.close()).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deleted_and_auto_deleted_entities_are_not_declared_again() {
    run(async {
        let mut cleanup = Cleanup::new();
        let relay = Relay::start(broker_addr()).await;
        let connection = connect_with(through(&relay)).await;
        let channel = open(&connection).await;
        let deleted = cleanup.queue(unique("q-deleted"));
        declare_queue(&channel, &deleted).await;
        within(
            "queue.delete",
            channel.queue_delete(&deleted, Default::default()),
        )
        .await
        .unwrap();
        let auto = cleanup.queue(unique("q-auto"));
        declare_queue_with(
            &channel,
            &auto,
            QueueDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
        )
        .await;
        let mut consumer = consume(&channel, &auto).await;
        within("cancel", consumer.cancel()).await.unwrap();
        assert!(connection.topology().queues.is_empty());

        cut_and_recover(&relay, &connection).await;
        let observer = connect().await;
        assert!(!queue_exists(&observer, &deleted).await);
        assert!(!queue_exists(&observer, &auto).await);
        within("close", connection.close()).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_peer_is_detected_by_heartbeats_and_recovery_completes_when_it_answers() {
    run(async {
        let mut cleanup = Cleanup::new();
        let relay = Relay::start(broker_addr()).await;
        let heartbeat = Duration::from_secs(1);
        let connection = connect_with(
            through(&relay)
                .heartbeat(heartbeat)
                .connection_timeout(Duration::from_secs(1)),
        )
        .await;
        let channel = open(&connection).await;
        let queue = cleanup.queue(unique("q-dead-peer"));
        declare_queue(&channel, &queue).await;
        let mut consumer = consume(&channel, &queue).await;

        let mut events = connection.events();
        let silenced = Instant::now();
        relay.blackhole();
        let reason = wait_for(&mut events, "Disconnected", |event| match event {
            ConnectionEvent::Disconnected { reason } => Some(reason.clone()),
            _ => None,
        })
        .await;
        let detected = silenced.elapsed();
        assert!(
            matches!(reason, Error::HeartbeatTimeout { .. }),
            "{reason:?}"
        );
        assert!(
            detected <= heartbeat * 2 + Duration::from_secs(1),
            "detected after {detected:?}"
        );
        // Attempts time out while the peer stays silent...
        let error = wait_for(&mut events, "a failed attempt", |event| match event {
            ConnectionEvent::RecoveryAttemptFailed { error, .. } => Some(error.clone()),
            _ => None,
        })
        .await;
        assert!(matches!(error, Error::Timeout { .. }), "{error:?}");
        // ...and the next one after it answers again succeeds.
        relay.restore().await;
        relay.cut(); // the links made during the blackhole are half-dead: start afresh
        recovered(&mut events).await;
        eprintln!("dead peer detected after {detected:?}");
        publish(&channel, "", &queue, b"alive").await;
        assert_eq!(&next_delivery(&mut consumer).await.body[..], b"alive");
        within("close", connection.close()).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn close_ends_a_recovery_and_nothing_recovers_after_close() {
    run(async {
        let relay = Relay::start(broker_addr()).await;
        // Closing while reconnecting: it ends at once.
        let connection = connect_with(through(&relay)).await;
        let channel = open(&connection).await;
        let mut events = connection.events();
        relay.refuse().await;
        relay.cut();
        wait_for(&mut events, "a failed attempt", |event| {
            matches!(event, ConnectionEvent::RecoveryAttemptFailed { .. }).then_some(())
        })
        .await;
        within_for(
            Duration::from_secs(2),
            "close while recovering",
            connection.close(),
        )
        .await
        .unwrap();
        assert_eq!(connection.status(), ConnectionStatus::Closed);
        match within("closed()", connection.closed()).await {
            Error::ConnectionClosed(close) => {
                assert_eq!(close.initiator, warren::Initiator::Client)
            }
            other => panic!("{other:?}"),
        }
        assert!(channel.queue_declare("", Default::default()).await.is_err());
        relay.restore().await;
        let accepted = relay.accepted();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(relay.accepted(), accepted, "no attempt after close");

        // An application close is never recovered.
        let connection = connect_with(through(&relay)).await;
        let accepted = relay.accepted();
        within("close", connection.close()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(relay.accepted(), accepted);
        assert_eq!(connection.status(), ConnectionStatus::Closed);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn recovery_off_closes_a_lost_connection() {
    run(async {
        let relay = Relay::start(broker_addr()).await;
        let connection = connect_with(through(&relay).recovery(RecoveryPolicy::disabled())).await;
        relay.cut();
        let error = within("closed()", connection.closed()).await;
        assert!(matches!(error, Error::Io(_)), "{error:?}");
        assert_eq!(connection.status(), ConnectionStatus::Closed);
        assert_eq!(relay.accepted(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn recovery_gives_up_per_its_policy_with_the_last_error() {
    run(async {
        let relay = Relay::start(broker_addr()).await;
        let connection = connect_with(
            through(&relay).recovery(
                RecoveryPolicy::default()
                    .initial_delay(Duration::from_millis(10))
                    .max_attempts(3),
            ),
        )
        .await;
        let mut events = connection.events();
        relay.refuse().await;
        relay.cut();
        let mut failed = 0;
        let closed = wait_for_close(&mut events, |event| {
            if let ConnectionEvent::RecoveryAttemptFailed { error, .. } = event {
                assert!(matches!(error, Error::Connect { .. }), "{error:?}");
                failed += 1;
            }
        })
        .await;
        assert_eq!(failed, 3);
        match closed {
            Error::RecoveryFailed { attempts, last, .. } => {
                assert_eq!(attempts, 3);
                assert!(matches!(*last, Error::Connect { .. }));
            }
            other => panic!("expected RecoveryFailed, got {other:?}"),
        }
        assert_eq!(connection.status(), ConnectionStatus::Closed);
        assert!(matches!(
            connection.wait_until_open().await,
            Err(Error::RecoveryFailed { .. })
        ));
    })
    .await;
}

/// Runs `each` on every event until `Closed`, whose error it returns.
async fn wait_for_close(events: &mut Events, mut each: impl FnMut(&ConnectionEvent)) -> Error {
    within_for(Duration::from_secs(30), "the close", async {
        loop {
            match events.next().await {
                Some(ConnectionEvent::Closed(error)) => return error,
                Some(event) => each(&event),
                None => panic!("the events ended without Closed"),
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_queues_bindings_and_consumers_come_back() {
    run(async {
        const ENTITIES: usize = 1000;
        let relay = Relay::start(broker_addr()).await;
        let connection = connect_with(through(&relay)).await;
        let mut cleanup = Cleanup::new();
        let exchange = cleanup.exchange(unique("x-thousand"));
        let prefix = unique("q-thousand");
        let channels = [
            open(&connection).await,
            open(&connection).await,
            open(&connection).await,
            open(&connection).await,
        ];
        declare_exchange(&channels[0], &exchange, ExchangeKind::Direct).await;
        let mut consumers = Vec::with_capacity(ENTITIES);
        let started = Instant::now();
        for i in 0..ENTITIES {
            let channel = &channels[i % channels.len()];
            let queue = format!("{prefix}-{i}");
            declare_queue_with(
                channel,
                &queue,
                QueueDeclareOptions {
                    exclusive: true,
                    ..Default::default()
                },
            )
            .await;
            within(
                "queue.bind",
                channel.queue_bind(&queue, &exchange, &queue, Default::default()),
            )
            .await
            .unwrap();
            let consumer = consume_no_ack(channel, &queue).await;
            consumers.push((queue, consumer));
        }
        let one_at_a_time = started.elapsed();

        let mut events = connection.events();
        relay.cut();
        let took = within_for(Duration::from_secs(120), "recovering 1000 of each", async {
            loop {
                match events.next().await {
                    Some(ConnectionEvent::Recovered { took, .. }) => return took,
                    Some(ConnectionEvent::TopologyRecoveryFailed { entity, error }) => {
                        panic!("{entity} was not restored: {error}")
                    }
                    Some(_) => continue,
                    None => panic!("the events ended"),
                }
            }
        })
        .await;
        eprintln!(
            "{ENTITIES} queues, bindings and consumers: declared one at a time in \
             {one_at_a_time:?}, recovered in {took:?}"
        );
        let topology = connection.topology();
        assert_eq!(topology.queues.len(), ENTITIES);
        assert_eq!(topology.bindings.len(), ENTITIES);
        assert_eq!(topology.consumers.len(), ENTITIES);
        let (_, publisher) = channel().await;
        for (queue, _) in &consumers {
            publish(&publisher, &exchange, queue, queue.as_bytes()).await;
        }
        for (queue, consumer) in &mut consumers {
            let delivery = next_delivery(consumer).await;
            assert_eq!(&delivery.body[..], queue.as_bytes());
        }
        within("close", connection.close()).await.unwrap();
    })
    .await;
}
