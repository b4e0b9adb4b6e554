//! Publisher confirms against the real broker: acks, wait_for_confirms, the in-flight bound,
//! failures (missing exchange, closed channel or connection), returns attached to
//! confirmations, many concurrent publishers.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{FutureExt, StreamExt};
use warren::protocol::BasicProperties;
use warren::{
    BasicPublishOptions, ConfirmSelectOptions, Confirmation, Error, Initiator, QueueDeclareOptions,
    ReplyCode,
};

/// The confirmation's outcome if it is already settled, without waiting. (Outside tokio's
/// cooperative budget: a task out of budget sees even a ready oneshot as pending.)
fn settled(confirm: &mut warren::PublishConfirm) -> Option<Result<Confirmation, Error>> {
    tokio::task::unconstrained(confirm).now_or_never()
}

async fn select(channel: &warren::Channel, options: ConfirmSelectOptions) {
    within("confirm.select", channel.confirm_select(options))
        .await
        .expect("confirm.select");
}

async fn start_publish(
    channel: &warren::Channel,
    exchange: &str,
    routing_key: &str,
    options: BasicPublishOptions,
    body: impl Into<warren::Body<'_>>,
) -> warren::PublishConfirm {
    within(
        "basic.publish",
        channel.basic_publish(
            exchange,
            routing_key,
            options,
            body,
            BasicProperties::default(),
        ),
    )
    .await
    .expect("basic.publish")
}

#[tokio::test(flavor = "multi_thread")]
async fn confirm_select_then_publishes_resolve_to_ack() {
    run(async {
        let (connection, channel) = channel().await;
        let queue = exclusive_queue(&channel).await;

        // Without confirm mode there is nothing to wait for.
        assert!(!channel.is_confirm_mode());
        let confirm = start_publish(&channel, "", &queue, Default::default(), "plain").await;
        assert_eq!(
            within("confirmation", confirm).await.unwrap(),
            Confirmation::NotRequested
        );
        let error = within("wait_for_confirms", channel.wait_for_confirms())
            .await
            .expect_err("wait_for_confirms needs confirm mode");
        assert!(matches!(error, Error::InvalidState(_)), "{error:?}");

        select(&channel, ConfirmSelectOptions::default()).await;
        assert!(channel.is_confirm_mode());
        // Selecting again is harmless.
        select(&channel, ConfirmSelectOptions::default()).await;
        let mut confirms = Vec::new();
        for i in 0..10 {
            confirms.push(
                start_publish(&channel, "", &queue, Default::default(), format!("m{i}")).await,
            );
        }
        for confirm in confirms {
            let confirmation = within("confirmation", confirm).await.unwrap();
            assert_eq!(confirmation, Confirmation::Ack);
            assert!(confirmation.is_ack());
        }
        // Acked means the broker has them: 1 plain publish + 10 confirmed ones.
        assert_eq!(queue_counts(&channel, &queue).await.message_count, 11);
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wait_for_confirms_waits_for_every_publish() {
    run(async {
        let (connection, channel) = channel().await;
        let queue = exclusive_queue(&channel).await;
        select(&channel, ConfirmSelectOptions::default()).await;
        let mut confirms = Vec::new();
        for i in 0..200 {
            confirms.push(
                start_publish(&channel, "", &queue, Default::default(), format!("m{i}")).await,
            );
        }
        let summary = within("wait_for_confirms", channel.wait_for_confirms())
            .await
            .expect("wait_for_confirms");
        assert!(summary.all_acked(), "{summary:?}");
        // Everything published before the wait is settled when it returns.
        for confirm in &mut confirms {
            let outcome = settled(confirm).expect("settled before wait_for_confirms returned");
            assert_eq!(outcome.unwrap(), Confirmation::Ack);
        }
        assert_eq!(queue_counts(&channel, &queue).await.message_count, 200);

        // Returned (mandatory, unroutable) publishes are counted by the next wait.
        let mandatory = BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        let unroutable = unique("nowhere");
        for _ in 0..3 {
            drop(start_publish(&channel, "amq.direct", &unroutable, mandatory, "lost").await);
        }
        drop(start_publish(&channel, "", &queue, mandatory, "kept").await);
        let summary = within("wait_for_confirms", channel.wait_for_confirms())
            .await
            .unwrap();
        assert_eq!((summary.returned, summary.nacked), (3, 0), "{summary:?}");
        assert!(!summary.all_acked());
        // With nothing pending, it returns at once with an empty summary.
        let summary = within("wait_for_confirms", channel.wait_for_confirms())
            .await
            .unwrap();
        assert!(summary.all_acked());
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn max_in_flight_bounds_unconfirmed_publishes() {
    run(async {
        const LIMIT: usize = 4;
        const PUBLISHES: usize = 300;
        let (connection, channel) = channel().await;
        let queue = exclusive_queue(&channel).await;
        // 0 would block every publish; usize::MAX is more than a semaphore counts.
        for limit in [0, usize::MAX] {
            let error = within(
                "confirm.select with an impossible max_in_flight",
                channel.confirm_select(ConfirmSelectOptions {
                    max_in_flight: Some(limit),
                }),
            )
            .await
            .expect_err("refused");
            assert!(
                matches!(error, Error::InvalidArgument(_)),
                "{limit}: {error:?}"
            );
        }
        select(
            &channel,
            ConfirmSelectOptions {
                max_in_flight: Some(LIMIT),
            },
        )
        .await;

        // A publish returns only once a place is free: the confirmation of the publish LIMIT
        // places earlier must already be settled when it returns (its ledger entry, which holds
        // the place, is dropped after its confirmation is sent). No timing involved.
        let mut confirms: Vec<warren::PublishConfirm> = Vec::new();
        let mut settled_early = 0;
        for i in 0..PUBLISHES {
            let confirm =
                start_publish(&channel, "", &queue, Default::default(), format!("m{i}")).await;
            if i >= LIMIT {
                let earlier = &mut confirms[i - LIMIT];
                match settled(earlier) {
                    Some(outcome) => {
                        assert_eq!(outcome.unwrap(), Confirmation::Ack);
                        settled_early += 1;
                    }
                    None => panic!(
                        "publish {i} returned while publish {} was unconfirmed: more than \
                         {LIMIT} publishes in flight",
                        i - LIMIT
                    ),
                }
            }
            confirms.push(confirm);
        }
        assert_eq!(settled_early, PUBLISHES - LIMIT);
        for confirm in confirms.into_iter().skip(PUBLISHES - LIMIT) {
            assert_eq!(
                within("confirmation", confirm).await.unwrap(),
                Confirmation::Ack
            );
        }
        assert_eq!(
            queue_counts(&channel, &queue).await.message_count,
            PUBLISHES as u32
        );
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_to_a_missing_exchange_fails_its_confirmation_with_404() {
    run(async {
        let (connection, channel) = channel().await;
        let queue = exclusive_queue(&channel).await;
        select(&channel, ConfirmSelectOptions::default()).await;
        let good = start_publish(&channel, "", &queue, Default::default(), "good").await;
        assert_eq!(
            within("confirmation", good).await.unwrap(),
            Confirmation::Ack
        );

        let missing = unique("x-missing");
        // The publish call may already see the channel closed, or return a confirmation that
        // then fails; it must never be an Ack.
        let outcome = match within(
            "basic.publish",
            channel.basic_publish(
                &missing,
                "k",
                Default::default(),
                "lost",
                BasicProperties::default(),
            ),
        )
        .await
        {
            Ok(confirm) => within("confirmation", confirm).await,
            Err(e) => Err(e),
        };
        match outcome {
            Err(Error::ChannelClosed { channel: id, close }) => {
                assert_eq!(id, channel.id());
                assert_eq!(close.code, ReplyCode::NOT_FOUND, "{close}");
                assert_eq!(close.initiator, Initiator::Server);
                assert!(close.text.contains(&missing), "{close}");
            }
            other => panic!("expected the 404 channel close, got {other:?}"),
        }
        // Later publishes on the channel fail with the same reason.
        let later = match within(
            "basic.publish on the closed channel",
            channel.basic_publish(
                "",
                &queue,
                Default::default(),
                "x",
                BasicProperties::default(),
            ),
        )
        .await
        {
            Ok(confirm) => within("confirmation", confirm).await,
            Err(e) => Err(e),
        };
        assert_eq!(later.unwrap_err().reply_code(), Some(ReplyCode::NOT_FOUND));
        assert!(connection.is_open());
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mandatory_unroutable_with_confirms_resolves_to_returned() {
    run(async {
        let (connection, channel) = channel().await;
        let queue = exclusive_queue(&channel).await;
        select(&channel, ConfirmSelectOptions::default()).await;
        let mut returns = channel.returns();
        let mandatory = BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        let unroutable = unique("nowhere");
        let properties = BasicProperties {
            correlation_id: Some(warren::wire::ShortString::from_static("c-1")),
            ..Default::default()
        };
        let confirm = within(
            "basic.publish",
            channel.basic_publish(
                "amq.direct",
                &unroutable,
                mandatory,
                "bounced",
                properties.clone(),
            ),
        )
        .await
        .unwrap();
        let confirmation = within("confirmation", confirm).await.unwrap();
        let Confirmation::Returned(message) = confirmation else {
            panic!("an unroutable mandatory publish resolves to Returned, got {confirmation:?}");
        };
        assert!(!Confirmation::Returned(message.clone()).is_ack());
        assert_eq!(message.reply_code, ReplyCode::NO_ROUTE);
        assert_eq!(message.exchange, "amq.direct");
        assert_eq!(message.routing_key, unroutable.as_str());
        assert_eq!(&message.body[..], b"bounced");
        assert_eq!(message.properties, properties);
        let streamed = within("returns stream", returns.next()).await.unwrap();
        assert_eq!(
            streamed, *message,
            "the returns stream gets the same message"
        );

        // Routable and mandatory: a plain Ack.
        let confirm = start_publish(&channel, "", &queue, mandatory, "delivered").await;
        assert_eq!(
            within("confirmation", confirm).await.unwrap(),
            Confirmation::Ack
        );
        // Unroutable but not mandatory: dropped by the broker, and acked.
        let confirm = start_publish(
            &channel,
            "amq.direct",
            &unroutable,
            Default::default(),
            "dropped",
        )
        .await;
        assert_eq!(
            within("confirmation", confirm).await.unwrap(),
            Confirmation::Ack
        );
        assert_eq!(
            get_body(&channel, &queue).await.as_deref(),
            Some(&b"delivered"[..])
        );
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn interleaved_returns_attach_to_the_right_confirmations() {
    run(async {
        let (connection, channel) = channel().await;
        let queue = exclusive_queue(&channel).await;
        select(&channel, ConfirmSelectOptions::default()).await;
        let mut returns = channel.returns();
        let mandatory = BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        let unroutable = unique("nowhere");
        // Interleaved routable and unroutable publishes, all in flight together; every
        // unroutable one has the same exchange and key, so only the order tells them apart.
        let mut confirms = Vec::new();
        for i in 0..200 {
            let (exchange, key) = if i % 2 == 0 {
                ("", queue.as_str())
            } else {
                ("amq.direct", unroutable.as_str())
            };
            confirms.push((
                i,
                start_publish(&channel, exchange, key, mandatory, format!("m{i}")).await,
            ));
        }
        for (i, confirm) in confirms {
            let confirmation = within("confirmation", confirm).await.unwrap();
            if i % 2 == 0 {
                assert_eq!(confirmation, Confirmation::Ack, "publish {i} was routed");
            } else {
                let Confirmation::Returned(message) = confirmation else {
                    panic!("publish {i} was unroutable, got {confirmation:?}");
                };
                assert_eq!(message.reply_code, ReplyCode::NO_ROUTE);
                assert_eq!(message.exchange, "amq.direct");
                assert_eq!(message.routing_key, unroutable.as_str());
                assert_eq!(
                    message.body,
                    format!("m{i}").into_bytes(),
                    "the return of publish {i}"
                );
            }
        }
        // The returns stream sees them too, in order.
        for i in (1..200).step_by(2) {
            let message = within("returns stream", returns.next()).await.unwrap();
            assert_eq!(message.body, format!("m{i}").into_bytes());
        }
        assert_eq!(queue_counts(&channel, &queue).await.message_count, 100);
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn many_concurrent_publishers_on_one_channel_are_all_confirmed() {
    run(async {
        const TASKS: usize = 16;
        const EACH: usize = 100;
        let (connection, channel) = channel().await;
        let queue = exclusive_queue(&channel).await;
        select(&channel, ConfirmSelectOptions::default()).await;
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let channel = channel.clone();
            let queue = queue.clone();
            tasks.push(tokio::spawn(async move {
                let mut confirms = Vec::new();
                for i in 0..EACH {
                    let confirm = channel
                        .basic_publish(
                            "",
                            &queue,
                            Default::default(),
                            format!("{t}-{i}"),
                            BasicProperties::default(),
                        )
                        .await
                        .expect("basic.publish");
                    confirms.push(confirm);
                }
                let mut acked = 0;
                for confirm in confirms {
                    assert_eq!(confirm.await.expect("confirmation"), Confirmation::Ack);
                    acked += 1;
                }
                acked
            }));
        }
        let mut total = 0;
        for task in tasks {
            total += within("publisher task", task)
                .await
                .expect("publisher task panicked");
        }
        assert_eq!(total, TASKS * EACH);
        let summary = within("wait_for_confirms", channel.wait_for_confirms())
            .await
            .unwrap();
        assert!(summary.all_acked());
        assert_eq!(
            queue_counts(&channel, &queue).await.message_count,
            (TASKS * EACH) as u32
        );
        // Every message arrived once.
        let mut bodies = std::collections::HashSet::new();
        while let Some(body) = get_body(&channel, &queue).await {
            assert!(bodies.insert(body), "no duplicates");
        }
        assert_eq!(bodies.len(), TASKS * EACH);
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

/// Publishes `count` messages without awaiting them; returns their confirmations.
async fn publish_many(
    channel: &warren::Channel,
    queue: &str,
    count: usize,
) -> Vec<warren::PublishConfirm> {
    let mut confirms = Vec::new();
    for i in 0..count {
        confirms.push(start_publish(channel, "", queue, Default::default(), format!("m{i}")).await);
    }
    confirms
}

/// Attempts at catching publishes unconfirmed at a close: the broker confirms fast, so on a
/// loaded machine it may confirm all of them first; then the attempt proves nothing and is
/// repeated.
const CLOSE_ATTEMPTS: usize = 5;

#[tokio::test(flavor = "multi_thread")]
async fn pending_confirms_fail_when_the_connection_closes() {
    run(async {
        for attempt in 1..=CLOSE_ATTEMPTS {
            let (connection, channel) = channel().await;
            let queue = exclusive_queue(&channel).await;
            select(&channel, ConfirmSelectOptions::default()).await;
            let confirms = publish_many(&channel, &queue, 1000).await;
            within("connection.close", connection.close())
                .await
                .unwrap();
            let mut failed = 0;
            for confirm in confirms {
                // Every confirmation resolves: an Ack the broker sent before the close, or the
                // close. Never left pending.
                match within("confirmation after close", confirm).await {
                    Ok(Confirmation::Ack) => {}
                    Err(Error::ConnectionClosed(close)) => {
                        assert_eq!(close.initiator, Initiator::Client);
                        failed += 1;
                    }
                    other => panic!("a pending confirmation resolved to {other:?}"),
                }
            }
            let error = within("wait_for_confirms", channel.wait_for_confirms())
                .await
                .expect_err("the connection is closed");
            assert!(matches!(error, Error::ConnectionClosed(_)), "{error:?}");
            let publish = within(
                "basic.publish after close",
                channel.basic_publish(
                    "",
                    &queue,
                    Default::default(),
                    "late",
                    BasicProperties::default(),
                ),
            )
            .await;
            let late = match publish {
                Ok(confirm) => within("confirmation", confirm).await,
                Err(e) => Err(e),
            };
            assert!(matches!(late, Err(Error::ConnectionClosed(_))), "{late:?}");
            if failed > 0 {
                return;
            }
            eprintln!("attempt {attempt}: the broker confirmed everything before the close");
        }
        panic!("in {CLOSE_ATTEMPTS} attempts, no publish was pending at the close");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pending_confirms_fail_when_the_channel_closes() {
    run(async {
        let connection = connect().await;
        for attempt in 1..=CLOSE_ATTEMPTS {
            let channel = open(&connection).await;
            let queue = exclusive_queue(&channel).await;
            select(&channel, ConfirmSelectOptions::default()).await;
            let confirms = publish_many(&channel, &queue, 1000).await;
            let waiter = {
                let channel = channel.clone();
                tokio::spawn(async move { channel.wait_for_confirms().await })
            };
            within("channel.close", channel.close()).await.unwrap();
            let mut failed = 0;
            for confirm in confirms {
                match within("confirmation after channel close", confirm).await {
                    Ok(Confirmation::Ack) => {}
                    Err(Error::ChannelClosed { close, .. }) => {
                        assert_eq!(close.initiator, Initiator::Client);
                        failed += 1;
                    }
                    other => panic!("a pending confirmation resolved to {other:?}"),
                }
            }
            let waited = within("wait_for_confirms", waiter).await.unwrap();
            assert!(connection.is_open());
            if failed > 0 {
                assert!(
                    matches!(waited, Err(Error::ChannelClosed { .. })),
                    "a waiter sees the close, not a summary: {waited:?}"
                );
                within("connection.close", connection.close())
                    .await
                    .unwrap();
                return;
            }
            eprintln!("attempt {attempt}: the broker confirmed everything before the close");
        }
        panic!("in {CLOSE_ATTEMPTS} attempts, no publish was pending at the close");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pending_confirms_fail_when_the_broker_closes_the_channel() {
    run(async {
        let (connection, channel) = channel().await;
        let queue = exclusive_queue(&channel).await;
        select(&channel, ConfirmSelectOptions::default()).await;
        let before = publish_many(&channel, &queue, 50).await;
        // A publish to a missing exchange makes the broker close the channel; everything after
        // it is discarded by the broker and must fail, never be acked.
        let missing = unique("x-missing");
        let failing = within(
            "basic.publish",
            channel.basic_publish(
                &missing,
                "",
                Default::default(),
                "x",
                BasicProperties::default(),
            ),
        )
        .await;
        let mut after = Vec::new();
        for i in 0..50 {
            match channel
                .basic_publish(
                    "",
                    &queue,
                    Default::default(),
                    format!("after {i}"),
                    BasicProperties::default(),
                )
                .await
            {
                Ok(confirm) => after.push(confirm),
                Err(e) => {
                    assert_eq!(e.reply_code(), Some(ReplyCode::NOT_FOUND), "{e}");
                    break;
                }
            }
        }
        // The broker acks what its queues confirmed before it closed the channel; the others
        // were enqueued but never confirmed, so they resolve to the close: never to a Nack,
        // never left pending.
        for confirm in before {
            match within("confirmation", confirm).await {
                Ok(Confirmation::Ack) => {}
                Err(e) if e.reply_code() == Some(ReplyCode::NOT_FOUND) => {}
                other => panic!("a publish before the failing one resolved to {other:?}"),
            }
        }
        if let Ok(confirm) = failing {
            let error = within("confirmation", confirm).await.unwrap_err();
            assert_eq!(error.reply_code(), Some(ReplyCode::NOT_FOUND), "{error}");
        }
        for confirm in after {
            let error = within("confirmation", confirm).await.unwrap_err();
            assert_eq!(error.reply_code(), Some(ReplyCode::NOT_FOUND), "{error}");
        }
        // Exactly the 50 publishes before the failing one reached the queue.
        let fresh = open(&connection).await;
        eventually("the 50 earlier publishes are in the queue", || {
            let fresh = fresh.clone();
            let queue = queue.clone();
            async move { queue_counts(&fresh, &queue).await.message_count == 50 }
        })
        .await;
        let mut bodies = Vec::new();
        while let Some(body) = get_body(&fresh, &queue).await {
            bodies.push(String::from_utf8(body).unwrap());
        }
        let expected: Vec<String> = (0..50).map(|i| format!("m{i}")).collect();
        assert_eq!(
            bodies, expected,
            "nothing published after the failing publish was enqueued"
        );
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn persistent_publishes_to_a_durable_queue_are_confirmed() {
    run(async {
        let mut cleanup = Cleanup::new();
        let (connection, channel) = channel().await;
        let queue = cleanup.queue(unique("q-durable-confirms"));
        declare_queue_with(
            &channel,
            &queue,
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
        )
        .await;
        select(&channel, ConfirmSelectOptions::default()).await;
        let properties = BasicProperties {
            delivery_mode: Some(2),
            ..Default::default()
        };
        let mut confirms = Vec::new();
        for i in 0..50 {
            confirms.push(
                within(
                    "basic.publish",
                    channel.basic_publish(
                        "",
                        &queue,
                        Default::default(),
                        format!("p{i}"),
                        properties.clone(),
                    ),
                )
                .await
                .unwrap(),
            );
        }
        for confirm in confirms {
            assert_eq!(
                within_for(Duration::from_secs(30), "confirmation", confirm)
                    .await
                    .unwrap(),
                Confirmation::Ack
            );
        }
        let deleted = within(
            "queue.delete",
            channel.queue_delete(&queue, Default::default()),
        )
        .await
        .unwrap();
        assert_eq!(deleted.message_count, 50);
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dropped_confirmations_and_concurrent_waiters() {
    run(async {
        let (connection, channel) = channel().await;
        let queue = exclusive_queue(&channel).await;
        select(&channel, ConfirmSelectOptions::default()).await;
        // Dropping a confirmation does not cancel its publish.
        for i in 0..100 {
            drop(start_publish(&channel, "", &queue, Default::default(), format!("m{i}")).await);
        }
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let channel = channel.clone();
                tokio::spawn(async move { channel.wait_for_confirms().await })
            })
            .collect();
        for waiter in waiters {
            let summary = within("wait_for_confirms", waiter)
                .await
                .unwrap()
                .expect("every waiter completes");
            assert_eq!(summary.nacked, 0);
        }
        assert_eq!(queue_counts(&channel, &queue).await.message_count, 100);
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn large_concurrent_publishes_on_one_channel_do_not_interleave() {
    run(async {
        const TASKS: usize = 8;
        const EACH: usize = 5;
        let (connection, channel) = channel().await;
        let queue = exclusive_queue(&channel).await;
        select(&channel, ConfirmSelectOptions::default()).await;
        // 300 kB bodies span three frames each: the frames of two publishes on one channel
        // must never interleave, or the broker closes the connection with 505.
        let body = |t: usize, i: usize| {
            let mut body = vec![b'a' + t as u8; 300_000];
            body[..8].copy_from_slice(&(i as u64).to_be_bytes());
            body
        };
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let channel = channel.clone();
                let queue = queue.clone();
                tokio::spawn(async move {
                    let mut confirms = Vec::new();
                    for i in 0..EACH {
                        confirms.push(
                            channel
                                .basic_publish(
                                    "",
                                    &queue,
                                    Default::default(),
                                    body(t, i),
                                    BasicProperties::default(),
                                )
                                .await
                                .expect("basic.publish"),
                        );
                    }
                    for confirm in confirms {
                        assert_eq!(confirm.await.expect("confirmation"), Confirmation::Ack);
                    }
                })
            })
            .collect();
        for task in tasks {
            within("publisher", task).await.expect("publisher task");
        }
        assert!(connection.is_open());
        let mut seen = std::collections::HashSet::new();
        while let Some(got) = get_body(&channel, &queue).await {
            let t = (got[8] - b'a') as usize;
            let i = u64::from_be_bytes(got[..8].try_into().unwrap()) as usize;
            assert!(got == body(t, i), "message {t}/{i} is intact");
            assert!(seen.insert((t, i)));
        }
        assert_eq!(seen.len(), TASKS * EACH);
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}
