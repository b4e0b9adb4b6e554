//! Cluster failover: connections given the three nodes of `scripts/rabbitmq-cluster.sh` as
//! endpoints move to a surviving node by themselves when theirs is killed, restarted, frozen or
//! cut off, while a workload of confirmed persistent publishes to a quorum queue (a replica on
//! each node) and a consumer acking each runs: nothing confirmed is lost.
//!
//! Needs the cluster's environment (`set -a; eval "$(scripts/rabbitmq-cluster.sh env)"`);
//! without it each test prints `SKIPPED: …` and passes, unless `WARREN_REQUIRE_CLUSTER` is set
//! (as in `.ci/run`). Tests of the cluster run one at a time (`faults::Cluster` sees to it).

mod common;
mod faults;

use std::time::{Duration, Instant};

use common::unique;
use faults::{Cluster, Relay, Workload};
use futures_util::StreamExt;
use warren::wire::FieldTable;
use warren::{
    BasicConsumeOptions, ConnectionEvent, ConnectionOptions, EndpointOrder, Error,
    QueueDeclareOptions, RecoveryPolicy,
};

/// Deadline of a test: node restarts take 7-20 s each on a busy machine.
const TEST: Duration = Duration::from_secs(300);

/// How soon publishing and consuming must resume after the client's node is killed.
const RESUME: Duration = Duration::from_secs(5);

/// Options for a connection named `name` to every node of `cluster` (in node order, so that
/// connections start on node 1), recovering fast: a 2 s heartbeat, 2 s to connect, backoff
/// from 50 ms up to 1 s.
fn cluster_options(options: ConnectionOptions, name: &str) -> ConnectionOptions {
    options
        .connection_name(name)
        .endpoint_order(EndpointOrder::AsGiven)
        .heartbeat(Duration::from_secs(2))
        .connection_timeout(Duration::from_secs(2))
        .operation_timeout(Duration::from_secs(60))
        .recovery(
            RecoveryPolicy::default()
                .initial_delay(Duration::from_millis(50))
                .max_delay(Duration::from_secs(1)),
        )
}

fn quorum() -> FieldTable {
    FieldTable::new().with("x-queue-type", "quorum")
}

/// A workload on a quorum queue of `cluster`, both connections through `options`.
fn workload(cluster: &Cluster, options: &ConnectionOptions, what: &str, total: usize) -> Workload {
    let queue = unique(&format!("{what}-quorum"));
    cluster.delete_on_drop(&queue);
    Workload::new(
        cluster_options(options.clone(), &unique(&format!("{what}-publisher"))),
        cluster_options(options.clone(), &unique(&format!("{what}-consumer"))),
        &queue,
        total,
        500.0,
    )
    .queue_arguments(quorum())
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_clients_node_moves_it_to_another_and_loses_nothing() {
    let Some(cluster) = Cluster::get().await else {
        return;
    };
    common::run_for(TEST, async {
        let workload = workload(&cluster, &cluster.all_endpoints(), "kill", 6_000);
        let [publisher, _] = workload.connection_names();
        let cluster = &cluster;
        let mut killed = None;
        let outcome = workload
            .run(|progress| {
                let killed = &mut killed;
                async move {
                    progress.wait_confirmed(1_500).await;
                    let node = cluster
                        .node_of_connection(&publisher)
                        .await
                        .expect("the publisher is on a node");
                    cluster.kill(&node).await;
                    *killed = Some(node);
                    progress.wait_confirmed(progress.confirmed() + 1_500).await;
                }
            })
            .await;
        let killed = killed.expect("a node was killed");
        eprintln!(
            "kill -9 of the client's node {killed}: {}",
            outcome.summary()
        );
        outcome.report.assert_clean();
        // The longest stretch without a confirm (a delivery) is the time from the kill to
        // publishing (consuming) again.
        let (published, consumed) = (outcome.max_publish_pause, outcome.max_consume_pause);
        assert!(
            published <= RESUME && consumed <= RESUME,
            "resumed after {published:?} (publishing) and {consumed:?} (consuming)"
        );
        assert!(!outcome.recovered_to.is_empty());
        for endpoint in &outcome.recovered_to {
            assert_ne!(cluster.node_of_endpoint(endpoint), killed, "{endpoint}");
        }
    })
    .await;
}

/// Waits until every replica of quorum queue `queue` is online.
async fn wait_for_all_replicas(cluster: &Cluster, queue: &str) {
    let all = cluster.nodes().len();
    common::eventually_within(
        Duration::from_secs(60),
        "every replica online",
        || async move { cluster.quorum_queue_online(queue).await.len() == all },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_restart_of_every_node_loses_nothing() {
    let Some(cluster) = Cluster::get().await else {
        return;
    };
    common::run_for(TEST, async {
        // Three restarts take a minute: publish for longer than that.
        let workload = workload(&cluster, &cluster.all_endpoints(), "rolling", 40_000);
        let queue = workload.queue().to_owned();
        let cluster = &cluster;
        let started = Instant::now();
        let outcome = workload
            .run(|progress| async move {
                progress.wait_confirmed(1_000).await;
                for node in cluster.nodes() {
                    // As an operator would: the next node goes only once every replica of the
                    // queue is back online, or the queue would lose its majority.
                    wait_for_all_replicas(cluster, &queue).await;
                    let at = Instant::now();
                    let consumed = progress.consumed();
                    cluster.restart(node).await;
                    eprintln!("restarted {node} in {:?}", at.elapsed());
                    progress.wait_confirmed(progress.confirmed() + 500).await;
                    progress.wait_consumed(consumed + 500).await;
                }
            })
            .await;
        eprintln!(
            "rolling restart ({:?}): {}",
            started.elapsed(),
            outcome.summary()
        );
        outcome.report.assert_clean();
        assert!(
            outcome.recoveries.len() >= 2,
            "the consumer moved at least twice"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_node_is_left_by_heartbeat_and_nothing_is_lost() {
    let Some(cluster) = Cluster::get().await else {
        return;
    };
    common::run_for(TEST, async {
        let workload = workload(&cluster, &cluster.all_endpoints(), "frozen", 6_000);
        let [publisher, _] = workload.connection_names();
        // The queue's leader on node 2, the clients on node 1 (the first endpoint): freezing
        // node 1 tests the client. (A frozen leader stalls the queue itself until the other
        // nodes notice, which takes them their net_ticktime, 60 s by default.)
        let declaring = common::connect_with(cluster.options(1)).await;
        let channel = common::open(&declaring).await;
        common::declare_queue_with(
            &channel,
            workload.queue(),
            QueueDeclareOptions {
                durable: true,
                arguments: quorum(),
                ..Default::default()
            },
        )
        .await;
        common::within("close", declaring.close()).await.unwrap();
        let cluster = &cluster;
        let outcome = workload
            .run(|progress| async move {
                progress.wait_confirmed(1_500).await;
                let node = cluster
                    .node_of_connection(&publisher)
                    .await
                    .expect("the publisher is on a node");
                let at = Instant::now();
                cluster.freeze(&node).await;
                eprintln!("SIGSTOP of {node} after {:?} of publishing", at.elapsed());
                progress.wait_confirmed(progress.confirmed() + 1_500).await;
                cluster.thaw(&node).await;
            })
            .await;
        eprintln!("frozen node: {}", outcome.summary());
        outcome.report.assert_clean();
        assert!(!outcome.recoveries.is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_black_holed_client_link_fails_over_and_nothing_is_lost() {
    let Some(cluster) = Cluster::get().await else {
        return;
    };
    common::run_for(TEST, async {
        // Each node behind a relay of its own: the client's links can be cut off one by one.
        let mut relays = Vec::new();
        for index in 0..cluster.nodes().len() {
            relays.push(Relay::to_port(cluster.options(index).get_port()).await);
        }
        let options = cluster.all_endpoints().endpoints(
            relays
                .iter()
                .map(|relay| warren::Endpoint::new("127.0.0.1", relay.port())),
        );
        let workload = workload(&cluster, &options, "link", 6_000);
        let relays = &relays;
        let outcome = workload
            .run(|progress| async move {
                progress.wait_confirmed(1_500).await;
                // Both connections start on the first endpoint (in order): silence its relay.
                let at = Instant::now();
                relays[0].blackhole();
                eprintln!("black-holed the first link after {:?}", at.elapsed());
                progress.wait_confirmed(progress.confirmed() + 1_500).await;
                relays[0].restore().await;
            })
            .await;
        eprintln!("black-holed link: {}", outcome.summary());
        outcome.report.assert_clean();
        assert!(!outcome.recoveries.is_empty());
        for endpoint in &outcome.recovered_to {
            assert!(
                !endpoint.ends_with(&format!(":{}", relays[0].port())),
                "{endpoint}"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_classic_queue_on_the_killed_node_is_reported_and_the_rest_comes_back() {
    let Some(cluster) = Cluster::get().await else {
        return;
    };
    common::run_for(TEST, async {
        let name = unique("classic-on-killed");
        let connection =
            common::connect_with(cluster_options(cluster.all_endpoints(), &name)).await;
        let node = cluster.node_of_endpoint(&connection.endpoint());
        let channel = common::open(&connection).await;
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        // A durable classic queue lives on the node it was declared on; a quorum queue on all.
        let classic = unique("classic");
        let replicated = unique("replicated");
        cluster.delete_on_drop(&classic);
        cluster.delete_on_drop(&replicated);
        common::declare_queue_with(&channel, &classic, durable.clone()).await;
        common::declare_queue_with(
            &channel,
            &replicated,
            QueueDeclareOptions {
                arguments: quorum(),
                ..durable
            },
        )
        .await;
        let consume = |queue: String| {
            let channel = channel.clone();
            async move {
                common::within(
                    "basic.consume",
                    channel.basic_consume(&queue, BasicConsumeOptions::default()),
                )
                .await
                .expect("basic.consume")
            }
        };
        let mut on_classic = consume(classic.clone()).await;
        let mut on_replicated = consume(replicated.clone()).await;

        let mut events = connection.events();
        cluster.kill(&node).await;
        let mut failures = Vec::new();
        let endpoint = common::within_for(Duration::from_secs(60), "recovery", async {
            loop {
                match events.next().await {
                    Some(ConnectionEvent::TopologyRecoveryFailed { entity, error }) => {
                        failures.push((entity.to_string(), error))
                    }
                    Some(ConnectionEvent::Recovered { endpoint, .. }) => return endpoint,
                    Some(ConnectionEvent::Closed(error)) => panic!("closed: {error}"),
                    Some(_) => {}
                    None => panic!("the events ended"),
                }
            }
        })
        .await;
        assert_ne!(cluster.node_of_endpoint(&endpoint), node);
        eprintln!("recovered to {endpoint}; not restored: {failures:?}");
        assert!(
            failures
                .iter()
                .any(|(entity, error)| entity.contains(&classic)
                    && entity.starts_with("queue")
                    && error.reply_code() == Some(warren::ReplyCode::NOT_FOUND)),
            "the classic queue is reported: {failures:?}"
        );
        assert!(
            failures.iter().all(|(entity, _)| entity.contains(&classic)),
            "only what concerns the classic queue fails: {failures:?}"
        );
        match common::next_item(&mut on_classic).await {
            Some(Err(Error::ConsumerNotRecovered { queue, .. })) => assert_eq!(queue, classic),
            other => panic!("expected the classic queue's consumer to end, got {other:?}"),
        }
        // The quorum queue and its consumer came back on the surviving node.
        common::publish(&channel, "", &replicated, b"after the kill").await;
        let delivery = common::next_delivery(&mut on_replicated).await;
        assert_eq!(&delivery.body[..], b"after the kill");
        common::within("ack", delivery.ack(Default::default()))
            .await
            .unwrap();
        common::within("close", connection.close()).await.unwrap();
    })
    .await;
}
