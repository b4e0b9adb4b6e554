//! `Connection::stats` against the real broker: the counters match what the test did.

mod common;
mod faults;

use std::net::ToSocketAddrs;
use std::time::Duration;

use common::*;
use faults::Relay;
use futures_util::StreamExt;
use warren::protocol::BasicProperties;
use warren::wire::{FieldTable, FieldValue, LongString};
use warren::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicRejectOptions,
    Channel, Confirmation, ConnectionEvent, ConnectionStats, RecoveryPolicy,
};

async fn publish_outcome(
    channel: &Channel,
    routing_key: &str,
    mandatory: bool,
    body: &'static [u8],
) -> Confirmation {
    let options = BasicPublishOptions {
        mandatory,
        ..Default::default()
    };
    let confirm = within(
        "basic.publish",
        channel.basic_publish("", routing_key, options, body, BasicProperties::default()),
    )
    .await
    .expect("basic.publish");
    within("the confirmation", confirm)
        .await
        .expect("a confirmation")
}

#[tokio::test]
async fn counters_match_what_was_published_consumed_and_settled() {
    run(async {
        let connection = connect().await;
        let channel = confirm_channel(&connection).await;
        // Holds 3 messages and nacks publishes beyond.
        let arguments = FieldTable::new()
            .with("x-max-length", FieldValue::I32(3))
            .with(
                "x-overflow",
                FieldValue::LongString(LongString::from("reject-publish")),
            );
        let queue = exclusive_queue_with(&channel, arguments).await;
        let before = connection.stats();

        for _ in 0..3 {
            let outcome = publish_outcome(&channel, &queue, false, b"0123456789").await;
            assert!(matches!(outcome, Confirmation::Ack), "{outcome:?}");
        }
        let outcome = publish_outcome(&channel, &queue, false, b"overflow").await;
        assert!(matches!(outcome, Confirmation::Nack), "{outcome:?}");
        let nowhere = unique("nowhere");
        let outcome = publish_outcome(&channel, &nowhere, true, b"unroutable").await;
        assert!(matches!(outcome, Confirmation::Returned(_)), "{outcome:?}");

        let fetched = within(
            "basic.get",
            channel.basic_get(&queue, BasicGetOptions::default()),
        )
        .await
        .expect("basic.get")
        .expect("a message to fetch");
        fetched
            .delivery
            .ack(BasicAckOptions::default())
            .await
            .expect("ack");

        let mut consumer = within(
            "basic.consume",
            channel.basic_consume(&queue, BasicConsumeOptions::default()),
        )
        .await
        .expect("basic.consume");
        let first = next_delivery(&mut consumer).await;
        let second = next_delivery(&mut consumer).await;
        first.ack(BasicAckOptions::default()).await.expect("ack");
        second
            .reject(BasicRejectOptions { requeue: false })
            .await
            .expect("reject");

        let expected = |s: &ConnectionStats| {
            (s.published, s.confirmed, s.nacked, s.returned) == (5, 4, 1, 1)
                && (s.fetched, s.delivered, s.acked, s.rejected) == (1, 2, 2, 1)
        };
        eventually("the counters to match", || {
            let done = connection.stats().since(&before);
            async move { expected(&done) }
        })
        .await;
        let done = connection.stats().since(&before);
        assert!(expected(&done), "{done:?}");
        // Each publish is at least a method, a header and a body frame.
        assert!(done.frames_sent >= 3 * 5, "{done:?}");
        let bodies = 3 * 10 + "overflow".len() + "unroutable".len();
        assert!(done.bytes_sent > bodies as u64, "{done:?}");
        // Confirms, a return, a get-ok and two deliveries with their contents.
        assert!(done.frames_received >= 5 + 3 + 3 + 6, "{done:?}");
        assert!(done.bytes_received > done.frames_received * 8, "{done:?}");
        assert_eq!(
            (done.disconnects, done.recoveries, done.heartbeats_missed),
            (0, 0, 0)
        );
        connection.close().await.expect("close");
    })
    .await;
}

/// Waits for the first event `pick` accepts.
async fn wait_for_event(
    events: &mut warren::Events,
    what: &str,
    mut pick: impl FnMut(&ConnectionEvent) -> bool,
) {
    within_for(Duration::from_secs(30), what, async {
        while let Some(event) = events.next().await {
            if pick(&event) {
                return;
            }
        }
        panic!("{what}: the events ended");
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missed_heartbeat_a_disconnect_and_a_recovery_are_counted() {
    run(async {
        let options = common::options();
        let broker = (options.get_host(), options.get_port())
            .to_socket_addrs()
            .expect("resolving the broker")
            .next()
            .expect("an address");
        let relay = Relay::start(broker).await;
        let heartbeat = Duration::from_secs(1);
        let options = relay
            .options(common::options())
            .heartbeat(heartbeat)
            .connection_timeout(Duration::from_secs(1))
            .recovery(
                RecoveryPolicy::default()
                    .initial_delay(Duration::from_millis(10))
                    .max_delay(Duration::from_millis(200)),
            );
        let connection = connect_with(options).await;
        let mut events = connection.events();
        relay.blackhole();
        wait_for_event(&mut events, "Disconnected", |event| {
            matches!(event, ConnectionEvent::Disconnected { .. })
        })
        .await;
        relay.restore().await;
        relay.cut();
        wait_for_event(&mut events, "Recovered", |event| {
            matches!(event, ConnectionEvent::Recovered { .. })
        })
        .await;
        let stats = connection.stats();
        assert_eq!(
            (stats.heartbeats_missed, stats.disconnects, stats.recoveries),
            (1, 1, 1),
            "{stats:?}"
        );
        // Silence on our side too: the heartbeat went out at least once before the loss.
        assert!(stats.heartbeats_sent >= 1, "{stats:?}");
        within("close", connection.close()).await.expect("close");
    })
    .await;
}
