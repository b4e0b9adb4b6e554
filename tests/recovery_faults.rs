//! Automatic recovery under real faults of a broker node: the broker closing connections every
//! 2 s, the node restarted (`stop_app`/`start_app`, and `kill -9` then start), the node frozen
//! (`SIGSTOP`), a memory alarm while recovering, a changed password. Each test runs on a node
//! of its own (`scripts/rabbitmq-node.sh`), never the default node, and checks with the loss
//! checker that nothing confirmed was lost.
//!
//! Without `rabbitmq-server` the tests print `SKIPPED:` and pass, unless
//! `WARREN_REQUIRE_EXTRA_NODES` is set (as `.ci/run` does).

mod common;
mod faults;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{unique, within, within_for};
use faults::{ExtraNode, Outcome, Workload};
use futures_util::StreamExt;
use warren::{
    BasicConsumeOptions, BasicPublishOptions, Connection, ConnectionEvent, ConnectionOptions,
    ConnectionStatus, Error, RecoveryPolicy,
};

/// Options for `node`: recovery with backoff from 50 ms up to 1 s, a 5 s heartbeat, and calls
/// that wait up to a minute (a restarting node takes several seconds).
fn recovering(node: &ExtraNode, name: &str) -> ConnectionOptions {
    node.options()
        .connection_name(name)
        .heartbeat(Duration::from_secs(5))
        .connection_timeout(Duration::from_secs(5))
        .operation_timeout(Duration::from_secs(60))
        .recovery(
            RecoveryPolicy::default()
                .initial_delay(Duration::from_millis(50))
                .max_delay(Duration::from_secs(1)),
        )
}

async fn connect(options: ConnectionOptions) -> Connection {
    within(
        "connecting to the extra node",
        Connection::connect_with(options),
    )
    .await
    .expect("connecting to the extra node")
}

/// A workload on `node`: 20 000 persistent messages at 2000 a second, through a transient
/// exchange to a durable queue, with a transient queue on the consumer's side.
fn workload(node: &ExtraNode, what: &str) -> Workload {
    workload_at(node, what, 2_000.0)
}

/// [`workload`] publishing at most `rate` messages a second.
fn workload_at(node: &ExtraNode, what: &str, rate: f64) -> Workload {
    Workload::new(
        recovering(node, &unique(&format!("{what}-publisher"))),
        recovering(node, &unique(&format!("{what}-consumer"))),
        &unique(&format!("{what}-durable")),
        20_000,
        rate,
    )
    .through_exchange(&unique(&format!("{what}-transient-x")))
    .with_transient_queue(&unique(&format!("{what}-transient-q")))
}

/// Has `node` close both of the workload's connections (named `names`); how many it closed.
async fn close_both(node: &ExtraNode, names: &[String]) -> usize {
    let names = [names[0].as_str(), names[1].as_str()];
    node.close_named(&names, "forced by the test").await
}

/// What a run with forced closes must show: nothing confirmed lost, the whole run confirmed,
/// and the consumer back after the closes.
fn assert_survived_forced_closes(outcome: &Outcome) {
    outcome.report.assert_clean();
    assert!(outcome.report.confirmed >= 19_000, "{}", outcome.report);
    assert!(
        outcome.recoveries.len() >= 2,
        "the consumer recovered each time"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn forced_closes_every_2_s_lose_nothing_confirmed() {
    let Some(node) = ExtraNode::start("warren-recovery-closes", 5693).await else {
        return;
    };
    common::run_for(Duration::from_secs(300), async {
        let workload = workload(&node, "closes");
        let names = workload.connection_names();
        let node = &node;
        let outcome = workload
            .run(|progress| async move {
                let mut closes = 0;
                let mut every = tokio::time::interval(Duration::from_secs(2));
                every.tick().await;
                while !progress.published_all.load(Ordering::Acquire) {
                    every.tick().await;
                    if progress.published_all.load(Ordering::Acquire) {
                        break;
                    }
                    closes += close_both(node, &names).await;
                }
                assert!(closes >= 6, "{closes} forced closes");
            })
            .await;
        eprintln!("forced closes: {}", outcome.summary());
        assert_survived_forced_closes(&outcome);
    })
    .await;
}

/// The same forced closes with the publishing and consuming loops outside the runtime's
/// tasks (each on a thread of its own in `block_on`, as in `#[tokio::main]`), where they write
/// their publishes and acknowledgements to the socket themselves: what a thread held for a
/// connection that is gone is dropped with it, never written to the new one, and no
/// confirmed message is lost.
#[tokio::test(flavor = "multi_thread")]
async fn forced_closes_lose_nothing_confirmed_when_the_loops_write_their_own_frames() {
    let Some(node) = ExtraNode::start("warren-recovery-direct", 5698).await else {
        return;
    };
    common::run_for(Duration::from_secs(300), async {
        // As fast as it goes, so that the closes find frames in flight and held.
        let workload = workload_at(&node, "direct", 1e9).outside_tasks();
        let names = workload.connection_names();
        let node = &node;
        let outcome = workload
            .run(|progress| async move {
                let mut closes = 0;
                for _ in 0..4 {
                    // Each close after both connections work again, mid-stream.
                    let (confirmed, consumed) = (progress.confirmed(), progress.consumed());
                    progress.wait_confirmed(confirmed + 2_000).await;
                    progress.wait_consumed(consumed + 1_000).await;
                    closes += close_both(node, &names).await;
                }
                assert!(closes >= 6, "{closes} forced closes");
            })
            .await;
        eprintln!("forced closes, loops outside tasks: {}", outcome.summary());
        assert_survived_forced_closes(&outcome);
        assert!(
            outcome.direct_writes > 0,
            "the loops wrote none of their frames themselves"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn node_restarts_lose_nothing_confirmed_and_the_topology_comes_back() {
    let Some(node) = ExtraNode::start("warren-recovery-restarts", 5694).await else {
        return;
    };
    common::run_for(Duration::from_secs(300), async {
        let node = &node;
        let outcome = workload(node, "restarts")
            .run(|progress| async move {
                progress.wait_confirmed(3_000).await;
                node.stop_app().await;
                node.start_app().await;
                // Both connections work again before the second fault, or the consumer's
                // recovery from the first (slow on a loaded machine) would absorb it.
                let consumed = progress.consumed();
                progress.wait_confirmed(progress.confirmed() + 3_000).await;
                progress.wait_consumed(consumed + 1_000).await;
                node.kill9().await;
                node.restart_after_kill().await;
                progress.wait_confirmed(progress.confirmed() + 1_000).await;
            })
            .await;
        eprintln!("node restarts: {}", outcome.summary());
        outcome.report.assert_clean();
        assert!(
            outcome.recoveries.len() >= 2,
            "recovered from both restarts"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_node_is_detected_by_heartbeats_and_recovery_completes_after_it_thaws() {
    let Some(node) = ExtraNode::start("warren-recovery-frozen", 5695).await else {
        return;
    };
    common::run(async {
        let heartbeat = Duration::from_secs(2);
        let name = unique("frozen");
        let connection = connect(
            recovering(&node, &name)
                .heartbeat(heartbeat)
                .connection_timeout(Duration::from_secs(2)),
        )
        .await;
        let channel = within("channel.open", connection.open_channel())
            .await
            .unwrap();
        let queue = unique("frozen-q");
        within(
            "queue.declare",
            channel.queue_declare(&queue, Default::default()),
        )
        .await
        .unwrap();
        let mut consumer = within(
            "basic.consume",
            channel.basic_consume(&queue, BasicConsumeOptions::default()),
        )
        .await
        .unwrap();
        let mut events = connection.events();

        let frozen = Instant::now();
        node.sigstop().await;
        let detected = within_for(Duration::from_secs(10), "the loss is detected", async {
            loop {
                if let Some(ConnectionEvent::Disconnected { reason }) = events.next().await {
                    assert!(
                        matches!(reason, Error::HeartbeatTimeout { .. }),
                        "{reason:?}"
                    );
                    return frozen.elapsed();
                }
            }
        })
        .await;
        assert!(
            detected <= heartbeat * 2 + Duration::from_secs(1),
            "a frozen node detected after {detected:?}"
        );
        // Attempts fail while it is frozen...
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(connection.status(), ConnectionStatus::Recovering);
        node.sigcont().await;
        // ...and recovery completes once it answers.
        let took = within_for(Duration::from_secs(60), "recovery", async {
            loop {
                if let Some(ConnectionEvent::Recovered { took, .. }) = events.next().await {
                    return took;
                }
            }
        })
        .await;
        eprintln!("frozen node: loss detected after {detected:?}, recovered {took:?} after it");
        let confirm = channel
            .basic_publish(
                "",
                &queue,
                BasicPublishOptions::default(),
                "thawed",
                Default::default(),
            )
            .await
            .unwrap();
        drop(confirm);
        let delivery = common::next_delivery(&mut consumer).await;
        assert_eq!(&delivery.body[..], b"thawed");
        within("close", connection.close()).await.unwrap();
    })
    .await;
}

/// CPU time this process has used so far (user + system), from `/proc/self/stat`.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("reading /proc/self/stat");
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // The kernel's USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_memory_alarm_during_recovery_makes_no_busy_loop_and_close_keeps_its_deadline() {
    let Some(node) = ExtraNode::start("warren-recovery-alarm", 5696).await else {
        return;
    };
    common::run(async {
        let name = unique("alarmed");
        let deadline = Duration::from_secs(3);
        let connection = connect(recovering(&node, &name).operation_timeout(deadline)).await;
        let channel = within("channel.open", connection.open_channel())
            .await
            .unwrap();
        within("confirm.select", channel.confirm_select(Default::default()))
            .await
            .unwrap();
        let queue = unique("alarmed-q");
        within(
            "queue.declare",
            channel.queue_declare(&queue, Default::default()),
        )
        .await
        .unwrap();
        let mut events = connection.events();

        node.eval("rabbit_alarm:set_alarm({{resource_limit, memory, node()}, []}).")
            .await;
        node.close_connections(&name, "lost while the node is short of memory")
            .await;
        within_for(Duration::from_secs(30), "recovery under the alarm", async {
            loop {
                if let Some(ConnectionEvent::Recovered { .. }) = events.next().await {
                    return;
                }
            }
        })
        .await;
        // A publish on the recovered connection gets it blocked; it waits within its deadline.
        let waiting = {
            let channel = channel.clone();
            let queue = queue.clone();
            tokio::spawn(async move {
                let confirm = channel
                    .basic_publish(
                        "",
                        &queue,
                        BasicPublishOptions::default(),
                        "x",
                        Default::default(),
                    )
                    .await?;
                confirm.await
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        // No busy loop while blocked: the process idles.
        let cpu_before = process_cpu();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let cpu = process_cpu() - cpu_before;
        assert!(
            cpu < Duration::from_millis(500),
            "{cpu:?} of CPU in 2 s while blocked"
        );
        let started = Instant::now();
        within_for(deadline * 2, "close while blocked", connection.close())
            .await
            .expect("close gives up on the blocked broker's answer, not on closing");
        let took = started.elapsed();
        assert!(
            took <= deadline + Duration::from_millis(500),
            "close took {took:?}"
        );
        eprintln!("blocked after recovery: {cpu:?} CPU in 2 s; close returned in {took:?}");
        let publish = within("the blocked publish", waiting).await.unwrap();
        assert!(
            publish.is_err(),
            "a publish the broker never took: {publish:?}"
        );
        node.eval("rabbit_alarm:clear_alarm({resource_limit, memory, node()}).")
            .await;
        assert_eq!(connection.status(), ConnectionStatus::Closed);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_recovery_uses_the_latest_secret_and_a_wrong_one_gives_bounded_retries() {
    let Some(node) = ExtraNode::start("warren-recovery-login", 5697).await else {
        return;
    };
    common::run(async {
        let user = "warren-recovery-user";
        node.add_user(user, "first-secret").await;
        let options = |name: &str, password: &str| {
            recovering(&node, name)
                .username(user)
                .password(password)
                .recovery(
                    RecoveryPolicy::default()
                        .initial_delay(Duration::from_millis(20))
                        .max_delay(Duration::from_millis(200))
                        .max_attempts(4),
                )
        };

        // The password changes and the application hands over the new secret: recovery logs
        // in with it.
        let name = unique("rotated");
        let rotated = connect(options(&name, "first-secret")).await;
        node.set_password(user, "second-secret").await;
        within(
            "update-secret",
            rotated.update_secret("second-secret", "rotation"),
        )
        .await
        .expect("the broker takes the new secret");
        let mut events = rotated.events();
        node.close_connections(&name, "after the rotation").await;
        within_for(
            Duration::from_secs(30),
            "recovery with the new secret",
            async {
                loop {
                    match events.next().await {
                        Some(ConnectionEvent::Recovered { .. }) => return,
                        Some(ConnectionEvent::RecoveryAttemptFailed { error, .. }) => {
                            panic!("recovery did not use the latest secret: {error}")
                        }
                        _ => {}
                    }
                }
            },
        )
        .await;

        // A connection whose password changed behind its back: each attempt is refused and
        // reported, and recovery gives up after its four attempts.
        let name = unique("stale-password");
        let stale = connect(options(&name, "second-secret")).await;
        node.set_password(user, "third-secret").await;
        let mut events = stale.events();
        node.close_connections(&name, "before the next login").await;
        let mut refused = 0;
        let closed = within_for(Duration::from_secs(60), "giving up", async {
            loop {
                match events.next().await {
                    Some(ConnectionEvent::RecoveryAttemptFailed { error, .. }) => {
                        assert!(
                            matches!(error, Error::Authentication { .. }),
                            "each failure is the refused login: {error:?}"
                        );
                        assert!(!format!("{error} {error:?}").contains("secret"));
                        refused += 1;
                    }
                    Some(ConnectionEvent::Closed(error)) => return error,
                    Some(_) => {}
                    None => panic!("the events ended"),
                }
            }
        })
        .await;
        assert_eq!(refused, 4);
        assert!(
            matches!(&closed, Error::RecoveryFailed { attempts: 4, last, .. }
                if matches!(**last, Error::Authentication { .. })),
            "{closed:?}"
        );
        within("close", rotated.close()).await.unwrap();
        node.delete_user(user).await;
    })
    .await;
}
