//! A consumer nobody reads must not freeze its connection: its other channels, its other
//! consumers, heartbeats and the broker's close all go on, up to the consumer buffer budget;
//! past the budget the connection pauses reading, says which consumer lags, and cancels it if
//! the lag lasts, without losing a message.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use warren::protocol::BasicProperties;
use warren::{
    BasicConsumeOptions, BasicPublishOptions, Channel, ConnectionEvent, Error, Initiator,
    QueueDeclareOptions, ReplyCode,
};

/// Publishes `count` messages of `size` bytes to `queue` through a confirm-mode channel of a
/// connection of its own, in windows of confirms.
async fn fill(queue: &str, count: usize, size: usize) {
    let connection = connect().await;
    let channel = confirm_channel(&connection).await;
    let body = bytes::Bytes::from(vec![b'x'; size]);
    let mut window = Vec::with_capacity(1000);
    for _ in 0..count {
        let confirm = within(
            "basic.publish",
            channel.basic_publish(
                "",
                queue,
                BasicPublishOptions::default(),
                body.clone(),
                BasicProperties::default(),
            ),
        )
        .await
        .expect("publishing");
        window.push(confirm);
        if window.len() == 1000 {
            for confirm in window.drain(..) {
                assert!(within("confirm", confirm).await.unwrap().is_ack());
            }
        }
    }
    for confirm in window {
        assert!(within("confirm", confirm).await.unwrap().is_ack());
    }
    within("connection.close", connection.close())
        .await
        .unwrap();
}

/// The median time of `rounds` passive declares on `channel`.
async fn rpc_median(channel: &Channel, queue: &str, rounds: usize) -> Duration {
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let started = Instant::now();
        within("a passive queue.declare", queue_counts(channel, queue)).await;
        times.push(started.elapsed());
    }
    times.sort();
    times[rounds / 2]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_no_ack_consumer_leaves_the_rest_of_its_connection_working() {
    run(async {
        const MESSAGES: usize = 50_000;
        let mut cleanup = Cleanup::new();
        let stalled_queue = cleanup.queue(unique("q-stalled"));
        let other_queue = cleanup.queue(unique("q-other"));
        let (setup_connection, setup) = channel().await;
        declare_queue(&setup, &stalled_queue).await;
        declare_queue(&setup, &other_queue).await;
        fill(&stalled_queue, MESSAGES, 100).await;

        // Recovery off: the broker's close must reach the application as the close it is.
        let name = unique("conn-stalled");
        let connection = connect_with(options_without_recovery().connection_name(&name)).await;
        let budget = warren::connection::DEFAULT_CONSUMER_BUFFER_BUDGET;
        let stalled_channel = open(&connection).await;
        let stalled = consume_no_ack(&stalled_channel, &stalled_queue).await;
        // Another consumer on another channel of the same connection.
        let other_channel = open(&connection).await;
        let mut other = consume_no_ack(&other_channel, &other_queue).await;
        let rpc_channel = open(&connection).await;

        // Nobody reads `stalled`: the connection takes all 50 000 anyway.
        eventually_within(
            Duration::from_secs(60),
            "the unread consumer holds all the messages",
            || {
                let buffered = stalled.buffered_count();
                async move { buffered == MESSAGES }
            },
        )
        .await;
        let held = connection.consumer_buffer_bytes();
        assert!(
            held > MESSAGES * 100 && held <= budget,
            "the consumer buffers hold {held} bytes, the budget is {budget}"
        );

        // Another channel's calls are answered at once.
        let median = rpc_median(&rpc_channel, &other_queue, 9).await;
        assert!(
            median < Duration::from_millis(100),
            "a call on another channel took {median:?} (median)"
        );
        // The other consumer gets what is published to it.
        publish(&setup, "", &other_queue, b"for the other consumer").await;
        let delivery = next_delivery(&mut other).await;
        assert_eq!(&delivery.body[..], b"for the other consumer");

        // The broker's close is seen at once, with its reason.
        let line = broker_connection(&name, &["pid"]).expect("the broker lists the connection");
        let closed = {
            let connection = connection.clone();
            tokio::spawn(async move { connection.closed().await })
        };
        rabbitmqctl(&["close_connection", &line[0], "closed while a consumer lags"]);
        match within_for(Duration::from_secs(5), "the close is seen", closed)
            .await
            .unwrap()
        {
            Error::ConnectionClosed(close) => {
                assert_eq!(close.code, ReplyCode::CONNECTION_FORCED, "{close}");
                assert_eq!(close.initiator, Initiator::Server);
                assert!(
                    close.text.contains("closed while a consumer lags"),
                    "{close}"
                );
            }
            other => panic!("expected the broker's 320, got {other:?}"),
        }
        // Everything buffered is still there for the application to read.
        let mut stalled = stalled;
        let mut read = 0;
        while let Some(Ok(_)) = next_item(&mut stalled).await {
            read += 1;
        }
        assert_eq!(read, MESSAGES, "no_ack deliveries are never dropped");
        drop(stalled);
        assert_eq!(connection.consumer_buffer_bytes(), 0);
        within("close", setup_connection.close()).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_budget_reading_pauses_and_a_lasting_laggard_is_cancelled_losing_nothing() {
    run(async {
        // More than the socket and the broker's buffers hold, so that the cancel stops
        // deliveries that have not been sent yet.
        const MESSAGES: usize = 20_000;
        const SIZE: usize = 1_000;
        const BUDGET: usize = 256 * 1024;
        let mut cleanup = Cleanup::new();
        let queue = cleanup.queue(unique("q-laggard"));
        let (setup_connection, setup) = channel().await;
        declare_queue(&setup, &queue).await;
        fill(&queue, MESSAGES, SIZE).await;

        let connection = connect_with(
            options()
                .heartbeat(Duration::from_secs(1))
                .consumer_buffer_budget(BUDGET)
                .consumer_stall_timeout(Duration::from_secs(3)),
        )
        .await;
        let mut events = connection.events();
        let channel = open(&connection).await;
        let rpc_channel = open(&connection).await;
        let mut laggard = consume_no_ack(&channel, &queue).await;

        let tag = laggard.tag().to_owned();
        match within("the lagging event", events.next()).await {
            Some(ConnectionEvent::ConsumerLagging {
                channel: lagging_channel,
                consumer_tag,
                buffered_bytes,
            }) => {
                assert_eq!(lagging_channel, channel.id());
                assert_eq!(consumer_tag, tag);
                assert!(buffered_bytes > BUDGET, "{buffered_bytes}");
            }
            other => panic!("expected ConsumerLagging, got {other:?}"),
        }
        // Reading is paused: the buffers stay at the budget (give or take one delivery).
        let held = connection.consumer_buffer_bytes();
        assert!(held <= BUDGET + 2 * SIZE, "{held} bytes held");
        assert!(laggard.buffered_count() < MESSAGES);
        // The heartbeat (1 s) does not mistake the pause for a dead broker, and after the stall
        // timeout the laggard is cancelled and the connection reads again.
        within_for(
            Duration::from_secs(10),
            "a call after the laggard is cancelled",
            queue_counts(&rpc_channel, &queue),
        )
        .await;
        assert!(connection.is_open());
        assert_eq!(
            connection.consumer_buffer_bytes(),
            0,
            "the cancelled consumer is exempt"
        );

        // The stream yields everything it got, then the reason it ended.
        let mut delivered = 0;
        let end = loop {
            match next_item(&mut laggard).await {
                Some(Ok(_)) => delivered += 1,
                Some(Err(error)) => break error,
                None => panic!("the stream ended without saying why"),
            }
        };
        match end {
            Error::ConsumerLagged { consumer_tag, .. } => assert_eq!(consumer_tag, tag),
            other => panic!("expected ConsumerLagged, got {other:?}"),
        }
        assert!(next_item(&mut laggard).await.is_none());
        // No message was lost: delivered (no_ack) plus what is left in the queue is all.
        let left = queue_counts(&setup, &queue).await.message_count as usize;
        assert_eq!(
            delivered + left,
            MESSAGES,
            "{delivered} delivered, {left} left"
        );
        assert!(
            left > 0,
            "the cancel stopped the deliveries ({delivered} delivered)"
        );
        within("close", connection.close()).await.unwrap();
        within("close", setup_connection.close()).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn prefetch_bounded_consumers_never_count_against_the_budget() {
    run(async {
        let mut cleanup = Cleanup::new();
        let queue = cleanup.queue(unique("q-prefetch"));
        let (setup_connection, setup) = channel().await;
        declare_queue_with(&setup, &queue, QueueDeclareOptions::default()).await;
        fill(&queue, 500, 1_000).await;

        // A budget far smaller than the prefetch's worth of deliveries.
        let connection = connect_with(options().consumer_buffer_budget(4 * 1024)).await;
        let mut events = connection.events();
        let channel = open(&connection).await;
        within("basic.qos", channel.basic_qos(200, Default::default()))
            .await
            .unwrap();
        let consumer = within(
            "basic.consume",
            channel.basic_consume(&queue, BasicConsumeOptions::default()),
        )
        .await
        .unwrap();
        eventually("the prefetch's worth arrives", || {
            let buffered = consumer.buffered_count();
            async move { buffered == 200 }
        })
        .await;
        assert_eq!(connection.consumer_buffer_bytes(), 0);
        assert!(
            !has_event_within(&mut events, Duration::from_millis(300)).await,
            "no lagging is reported for a prefetch-bounded consumer"
        );
        drop(consumer);
        within("close", connection.close()).await.unwrap();
        within("close", setup_connection.close()).await.unwrap();
    })
    .await;
}

async fn has_event_within(events: &mut warren::Events, wait: Duration) -> bool {
    tokio::time::timeout(wait, events.next()).await.is_ok()
}
