//! Cancellation safety against the broker: futures dropped at random points of RPCs,
//! publishes, gets, consumes, opens and closes leave the channel and the connection usable
//! and consistent. After each drop a later call gets its own reply, publishes are sent whole
//! or not at all and their confirms still match them, and nothing the dropped future started
//! (a consumer, a fetched message, a channel) is left behind on the broker.
//!
//! "Random" is a seeded generator: every test prints its seed, and `WARREN_TEST_SEED=N`
//! replays a run. A future is dropped after a random number of polls (0 = never polled), with
//! random pauses in between, so that drops land before the request is queued, while it waits
//! for the broker, and after the reply arrived but before it was read.

mod common;

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use common::*;
use futures_util::poll;
use warren::{
    BasicGetOptions, BasicProperties, BasicPublishOptions, BasicQosOptions, Channel,
    ConfirmSelectOptions, Confirmation, ExchangeDeclareOptions, ExchangeKind, QueueDeclareOptions,
};

/// Rounds per test: each drops one or more futures at a random point.
const ROUNDS: usize = 150;

/// A small, seeded random generator (xorshift64*): reproducible runs without a dependency.
struct Rng(u64);

impl Rng {
    /// Seeded from `WARREN_TEST_SEED`, or from the clock; prints the seed to replay the run.
    fn new(test: &str) -> Self {
        let seed = std::env::var("WARREN_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        eprintln!("{test}: WARREN_TEST_SEED={seed}");
        Self(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Polls `future` up to `polls` times, pausing between polls for 0 to 300 µs (or only
/// yielding), and drops it unless it completed first; returns its output if it did.
async fn drop_at_random_point<F: Future>(future: F, rng: &mut Rng) -> Option<F::Output> {
    let polls = rng.below(6);
    let mut future = pin!(future);
    for _ in 0..polls {
        if let Poll::Ready(output) = poll!(future.as_mut()) {
            return Some(output);
        }
        match rng.below(3) {
            0 => tokio::task::yield_now().await,
            _ => tokio::time::sleep(Duration::from_micros(rng.below(300))).await,
        }
    }
    None
}

/// Checks that `channel` is in step: a declare of a fresh name gets the reply for that name,
/// not a late reply meant for an earlier, dropped call.
async fn assert_in_step(channel: &Channel, round: usize) {
    let name = unique("in-step");
    let options = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    let declared = within("queue.declare", channel.queue_declare(&name, options))
        .await
        .unwrap_or_else(|e| panic!("round {round}: the channel is unusable: {e}"));
    assert_eq!(
        declared.name.as_str(),
        name,
        "round {round}: a reply for another call"
    );
    assert_eq!(declared.message_count, 0, "round {round}");
}

/// RPCs of every kind dropped at random points: each later call still gets its own reply,
/// and the channel stays open.
#[tokio::test(flavor = "multi_thread")]
async fn rpcs_dropped_at_random_points_leave_the_channel_in_step() {
    run(async {
        let mut rng = Rng::new("rpcs");
        let (connection, channel) = common::channel().await;
        let known = unique("known");
        declare_queue_with(
            &channel,
            &known,
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
        )
        .await;
        let exchange = unique("exchange");
        for round in 0..ROUNDS {
            let exclusive = QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            };
            let passive = QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            match rng.below(5) {
                0 => {
                    drop_at_random_point(
                        channel.queue_declare(&unique("dropped"), exclusive),
                        &mut rng,
                    )
                    .await;
                }
                1 => {
                    drop_at_random_point(channel.queue_declare(&known, passive), &mut rng).await;
                }
                2 => {
                    let prefetch = rng.below(100) as u16;
                    drop_at_random_point(
                        channel.basic_qos(prefetch, BasicQosOptions::default()),
                        &mut rng,
                    )
                    .await;
                }
                3 => {
                    let options = ExchangeDeclareOptions {
                        auto_delete: true,
                        ..Default::default()
                    };
                    drop_at_random_point(
                        channel.exchange_declare(&exchange, ExchangeKind::Fanout, options),
                        &mut rng,
                    )
                    .await;
                }
                _ => {
                    // Two in a row, both dropped: their replies come back in order and are
                    // both discarded.
                    let first = channel.queue_declare(&known, passive.clone());
                    let second_name = unique("second");
                    let second = channel.queue_declare(&second_name, exclusive);
                    drop_at_random_point(async { tokio::join!(first, second) }, &mut rng).await;
                }
            }
            assert_in_step(&channel, round).await;
        }
        assert!(channel.is_open());
        let _ = channel.exchange_delete(&exchange, Default::default()).await;
        connection.close().await.unwrap();
    })
    .await;
}

/// Publishes in confirm mode, with an in-flight limit so that some wait, dropped at random
/// points: each is sent whole (its future completed) or not at all, the confirms of those sent
/// all arrive and match them, and a later publish gets its own confirmation.
#[tokio::test(flavor = "multi_thread")]
async fn publishes_dropped_at_random_points_are_sent_whole_or_not_at_all() {
    run(async {
        let mut rng = Rng::new("publishes");
        let connection = connect().await;
        let channel = open(&connection).await;
        within(
            "confirm.select",
            channel.confirm_select(ConfirmSelectOptions {
                max_in_flight: Some(3),
            }),
        )
        .await
        .unwrap();
        let queue = unique("publishes");
        declare_queue_with(
            &channel,
            &queue,
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
        )
        .await;
        let mut sent = BTreeSet::new();
        let mut kept = Vec::new();
        for round in 0..ROUNDS * 2 {
            let body = format!("message {round}");
            // Borrowed and owned bodies alike.
            let (exchange, options, properties) = (
                "",
                BasicPublishOptions::default(),
                BasicProperties::default(),
            );
            let outcome = if round % 2 == 0 {
                let publish =
                    channel.basic_publish(exchange, &queue, options, body.as_str(), properties);
                drop_at_random_point(publish, &mut rng).await
            } else {
                let publish =
                    channel.basic_publish(exchange, &queue, options, body.clone(), properties);
                drop_at_random_point(publish, &mut rng).await
            };
            if let Some(result) = outcome {
                let confirm = result.unwrap_or_else(|e| panic!("round {round}: {e}"));
                sent.insert(body);
                // Keep some confirmations, drop the others: neither changes what is sent.
                if rng.below(2) == 0 {
                    kept.push((round, confirm));
                }
            }
        }
        for (round, confirm) in kept {
            let confirmation = within("a kept confirmation", confirm).await.unwrap();
            assert_eq!(confirmation, Confirmation::Ack, "round {round}");
        }
        let summary = within("wait_for_confirms", channel.wait_for_confirms())
            .await
            .unwrap();
        assert!(summary.all_acked(), "{summary:?}");

        // Exactly the publishes whose futures completed are in the queue.
        let mut received = BTreeSet::new();
        while let Some(body) = get_body(&channel, &queue).await {
            received.insert(String::from_utf8(body).unwrap());
        }
        assert_eq!(received, sent, "sent whole or not at all");
        assert!(
            !sent.is_empty(),
            "no publish completed: the test tested nothing"
        );

        // A later publish gets its own confirmation: an unroutable mandatory one comes back
        // with its own body.
        let mandatory = BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        let confirm = within(
            "basic.publish",
            channel.basic_publish(
                "amq.direct",
                &unique("nowhere"),
                mandatory,
                "last",
                BasicProperties::default(),
            ),
        )
        .await
        .unwrap();
        match within("confirmation", confirm).await.unwrap() {
            Confirmation::Returned(message) => assert_eq!(message.body, "last"),
            other => panic!("expected the last publish's own return, got {other:?}"),
        }
        connection.close().await.unwrap();
    })
    .await;
}

/// `basic.get` and `basic.consume` dropped at random points leave nothing behind: a message
/// fetched for a dropped get is requeued (not left unacknowledged), and a consumer registered
/// for a dropped consume is cancelled.
#[tokio::test(flavor = "multi_thread")]
async fn gets_and_consumes_dropped_at_random_points_leave_no_message_or_consumer_behind() {
    run(async {
        let mut rng = Rng::new("gets-and-consumes");
        let connection = connect().await;
        let channel = open(&connection).await;
        let observer = open(&connection).await;
        let queue = unique("gets");
        declare_queue_with(
            &channel,
            &queue,
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
        )
        .await;
        let total = 40;
        for i in 0..total {
            publish(&channel, "", &queue, format!("m{i}").as_bytes()).await;
        }
        let mut taken = 0;
        for round in 0..ROUNDS {
            if rng.below(3) == 0 {
                let consume = channel.basic_consume(&queue, Default::default());
                // A consumer that was made is dropped at once: its deliveries are requeued.
                drop(drop_at_random_point(consume, &mut rng).await);
            } else {
                let get = channel.basic_get(&queue, BasicGetOptions::default());
                if let Some(result) = drop_at_random_point(get, &mut rng).await {
                    let got = result.unwrap_or_else(|e| panic!("round {round}: {e}"));
                    if let Some(message) = got {
                        // Taken for good, acknowledged.
                        within("basic.ack", message.delivery.ack(Default::default()))
                            .await
                            .unwrap();
                        taken += 1;
                    }
                }
            }
        }
        assert_in_step(&channel, ROUNDS).await;
        // Eventually every message not taken is ready again and no consumer is left.
        let expected = total - taken;
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let counts = queue_counts(&observer, &queue).await;
            if counts.message_count == expected && counts.consumer_count == 0 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} ready (expected {expected}) and {} consumers (expected 0): something a \
                 dropped future started was left behind",
                counts.message_count,
                counts.consumer_count
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        connection.close().await.unwrap();
    })
    .await;
}

/// Opens a channel, waiting within [`STEP`] while every number is taken: channels whose close
/// was dropped a moment ago free their numbers once the broker confirms.
async fn open_within_step(connection: &warren::Connection, round: usize) -> Channel {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        match connection.open_channel().await {
            Ok(channel) => return channel,
            Err(warren::Error::ChannelsExhausted { .. })
                if tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("round {round}: opening a channel: {e}"),
        }
    }
}

/// Opening and closing channels, and closing a connection, dropped at random points: no
/// channel number leaks (the connection allows only 8 channels and opens far more), a channel
/// whose close was dropped still ends closed once its handles are gone, and the connection
/// keeps working.
#[tokio::test(flavor = "multi_thread")]
async fn opens_and_closes_dropped_at_random_points_leak_nothing() {
    run(async {
        let mut rng = Rng::new("opens-and-closes");
        let connection = connect_with(options().channel_max(8)).await;
        for round in 0..ROUNDS {
            if rng.below(2) == 0 {
                // A dropped open: the driver closes a channel opened for nobody.
                drop(drop_at_random_point(connection.open_channel(), &mut rng).await);
            } else {
                let channel = open_within_step(&connection, round).await;
                assert_in_step(&channel, round).await;
                drop_at_random_point(channel.close(), &mut rng).await;
                // Closed, or closing once this last handle is dropped.
                drop(channel);
            }
        }
        // Every number is free again (the broker may still be confirming the last closes).
        let deadline = tokio::time::Instant::now() + STEP;
        let mut channels = Vec::new();
        while channels.len() < 8 {
            match connection.open_channel().await {
                Ok(channel) => channels.push(channel),
                Err(warren::Error::ChannelsExhausted { .. }) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "only {} of 8 channels could be opened: the others leaked",
                        channels.len()
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("opening a channel: {e}"),
            }
        }
        for channel in &channels {
            assert_in_step(channel, ROUNDS).await;
        }
        drop(channels);

        // A connection close dropped at a random point: the connection either closed or is
        // still usable; and a new one works either way.
        for round in 0..20 {
            let other = connect().await;
            drop_at_random_point(other.close(), &mut rng).await;
            if other.is_open() {
                match other.open_channel().await {
                    Ok(channel) => assert_in_step(&channel, round).await,
                    // It was closing after all.
                    Err(e) => assert!(e.is_connection_fatal(), "round {round}: {e}"),
                }
            }
            drop(other);
        }
        let (last, channel) = common::channel().await;
        assert_in_step(&channel, ROUNDS).await;
        last.close().await.unwrap();
        connection.close().await.unwrap();
    })
    .await;
}
