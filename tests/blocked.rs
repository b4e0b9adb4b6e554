//! Resource alarms on a node of our own: `connection.blocked` and `connection.unblocked` reach
//! the application, a publish with a deadline returns within it while the broker reads nothing,
//! heartbeats do not mistake a blocked connection for a dead one, and the connection works again
//! once unblocked. The connection's `BlockedPolicy`: `Wait` holds publishes (sending nothing)
//! until unblocked or their deadline, `FailFast` fails them at once with `Error::Blocked`, through
//! a channel or a `Publisher`; `close()` does not wait for a blocked broker.
//!
//! A memory alarm blocks every publishing connection of a node, so this test never touches the
//! shared default node: it starts its own with `scripts/rabbitmq-node.sh` (about 7 s) and stops
//! it at the end. Without `rabbitmq-server` on the machine it is skipped with a message, unless
//! `WARREN_REQUIRE_EXTRA_NODES=1` (CI) makes that a failure.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use warren::protocol::BasicProperties;
use warren::{
    BasicPublishOptions, BlockedPolicy, ConfirmSelectOptions, Confirmation, ConnectionEvent,
    ConnectionOptions, Error, PublishError, Publisher, PublisherOptions,
};

const NODE: &str = "warren-alarm";
const PORT: u16 = 5692;

/// The extra node, stopped (and its files removed) when dropped.
struct Node {
    name: String,
}

impl Node {
    fn start() -> Option<Self> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/rabbitmq-node.sh");
        let installed = Command::new("sh")
            .args(["-c", "command -v rabbitmq-server"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !installed {
            common::skip(
                "extra-node",
                "WARREN_REQUIRE_EXTRA_NODES",
                "rabbitmq-server is not installed: cannot start a node of our own",
            );
            return None;
        }
        for action in ["start", "wait"] {
            let status = Command::new(&script)
                .args([action, NODE, &PORT.to_string()])
                .status()
                .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
            assert!(status.success(), "rabbitmq-node.sh {action} {NODE} failed");
        }
        let host =
            String::from_utf8(Command::new("hostname").arg("-s").output().unwrap().stdout).unwrap();
        Some(Self {
            name: format!("{NODE}@{}", host.trim()),
        })
    }

    /// Runs an Erlang expression on the node through rabbitmqctl.
    fn eval(&self, expression: &str) {
        let output = Command::new("rabbitmqctl")
            .args(["-n", &self.name, "eval", expression])
            .output()
            .expect("running rabbitmqctl");
        assert!(
            output.status.success(),
            "rabbitmqctl eval {expression}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn set_memory_alarm(&self, on: bool) {
        let function = if on { "set_alarm" } else { "clear_alarm" };
        let argument = if on {
            "{{resource_limit, memory, node()}, []}"
        } else {
            "{resource_limit, memory, node()}"
        };
        self.eval(&format!("rabbit_alarm:{function}({argument})."));
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/rabbitmq-node.sh");
        let _ = Command::new(script)
            .args(["stop", NODE, &PORT.to_string()])
            .status();
    }
}

async fn next_event(events: &mut warren::Events) -> ConnectionEvent {
    tokio::time::timeout(Duration::from_secs(15), events.next())
        .await
        .expect("a connection event within 15 s")
        .expect("the events stream ended")
}

/// One node serves every scenario, in turn: starting it is most of the time.
#[tokio::test(flavor = "multi_thread")]
async fn publishing_to_a_node_under_a_memory_alarm() {
    let Some(node) = Node::start() else {
        return;
    };
    blocked_connections_are_reported_and_publishes_keep_their_deadline(&node).await;
    waiting_publishes_go_on_once_unblocked(&node).await;
    fail_fast_publishes_fail_at_once_with_a_typed_error(&node).await;
    close_does_not_wait_for_a_blocked_broker(&node).await;
    drop(node);
}

/// Options for the alarm node.
fn node_options() -> ConnectionOptions {
    ConnectionOptions::default()
        .host("127.0.0.1")
        .port(PORT)
        .heartbeat(Duration::from_secs(2))
        .operation_timeout(Duration::from_secs(10))
}

/// A connection to the alarm node with a confirm channel, a queue, and a publisher of one
/// channel.
async fn setup(
    options: ConnectionOptions,
) -> (warren::Connection, warren::Channel, String, Publisher) {
    let connection = common::connect_with(options).await;
    let channel = connection.open_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let queue = channel
        .queue_declare("", Default::default())
        .await
        .unwrap()
        .name
        .to_string();
    let options = PublisherOptions::default()
        .channels(1)
        .timeout(Duration::from_secs(2));
    let publisher = Publisher::new(&connection, options).await.unwrap();
    (connection, channel, queue, publisher)
}

/// Sets the alarm and publishes once on `channel`, so that the broker blocks the connection.
async fn block(node: &Node, channel: &warren::Channel, queue: &str) {
    let mut events = channel.connection().events();
    node.set_memory_alarm(true);
    // The broker blocks a connection when it next publishes.
    let _unconfirmed = channel
        .basic_publish(
            "",
            queue,
            BasicPublishOptions::default(),
            "trigger",
            BasicProperties::default(),
        )
        .await
        .unwrap();
    match next_event(&mut events).await {
        ConnectionEvent::Blocked { reason } => assert!(reason.contains("memory"), "{reason}"),
        other => panic!("expected Blocked, got {other:?}"),
    }
    assert!(channel.connection().is_blocked());
}

/// With the default policy a publish waits while blocked (sending nothing), and goes on when
/// the broker unblocks; a `Publisher` publish whose deadline passes meanwhile fails as not
/// sent.
async fn waiting_publishes_go_on_once_unblocked(node: &Node) {
    let (connection, channel, queue, publisher) = setup(node_options()).await;
    block(node, &channel, &queue).await;
    let waiting = {
        let channel = channel.with_timeout(Duration::from_secs(30));
        let queue = queue.clone();
        tokio::spawn(async move {
            let confirm = channel
                .basic_publish("", &queue, Default::default(), "waited", Default::default())
                .await?;
            confirm.await
        })
    };
    // The publisher's deadline (2 s) passes while the publish waits, before anything was sent.
    let started = Instant::now();
    let error = tokio::time::timeout(
        Duration::from_secs(15),
        publisher.publish("", &queue, Default::default(), "late", Default::default()),
    )
    .await
    .expect("the publish keeps its deadline")
    .unwrap_err();
    assert!(
        matches!(&error, PublishError::Failed(Error::Timeout { .. })),
        "{error:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    assert!(!waiting.is_finished(), "a publish waits while blocked");
    node.set_memory_alarm(false);
    let confirmation = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("the waiting publish completes once unblocked")
        .unwrap()
        .unwrap();
    assert_eq!(confirmation, Confirmation::Ack);
    connection.close().await.unwrap();
}

/// With `BlockedPolicy::FailFast` a publish fails at once with `Error::Blocked`, through a
/// channel or a `Publisher`, and works again once unblocked.
async fn fail_fast_publishes_fail_at_once_with_a_typed_error(node: &Node) {
    let options = node_options().blocked_policy(BlockedPolicy::FailFast);
    assert_eq!(options.get_blocked_policy(), BlockedPolicy::FailFast);
    // The publisher on a connection of its own, not blocked yet.
    let (other, _, _, publisher) = setup(options.clone()).await;
    let (connection, channel, queue, _) = setup(options).await;
    block(node, &channel, &queue).await;
    let started = Instant::now();
    let error = channel
        .basic_publish("", &queue, Default::default(), "x", Default::default())
        .await
        .unwrap_err();
    match &error {
        Error::Blocked { reason } => assert!(reason.contains("memory"), "{reason}"),
        other => panic!("expected Error::Blocked, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(error.to_string().contains("blocked"), "{error}");

    // A publisher's connection is blocked once it publishes: the first goes out and waits
    // for its confirmation, the next fails fast.
    let mut events = publisher.connection().events();
    let first = {
        let publisher = publisher.clone();
        let queue = queue.clone();
        tokio::spawn(async move {
            publisher
                .publish("", &queue, Default::default(), "first", Default::default())
                .await
        })
    };
    match next_event(&mut events).await {
        ConnectionEvent::Blocked { .. } => {}
        other => panic!("expected Blocked, got {other:?}"),
    }
    let error = publisher
        .publish("", &queue, Default::default(), "second", Default::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, PublishError::Failed(Error::Blocked { .. })),
        "{error:?}"
    );
    node.set_memory_alarm(false);
    assert!(matches!(
        next_event(&mut events).await,
        ConnectionEvent::Unblocked
    ));
    tokio::time::timeout(Duration::from_secs(30), first)
        .await
        .expect("the first publish is confirmed once unblocked")
        .unwrap()
        .unwrap();
    publisher
        .publish("", &queue, Default::default(), "third", Default::default())
        .await
        .unwrap();
    other.close().await.unwrap();
    connection.close().await.unwrap();
}

/// `close()` on a blocked connection returns in about a second, not the operation timeout,
/// and the publishes waiting for the block to end fail with the close.
async fn close_does_not_wait_for_a_blocked_broker(node: &Node) {
    let (connection, channel, queue, _) = setup(node_options()).await;
    block(node, &channel, &queue).await;
    let waiting = {
        let channel = channel.clone();
        let queue = queue.clone();
        tokio::spawn(async move {
            channel
                .basic_publish("", &queue, Default::default(), "never", Default::default())
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), connection.close())
        .await
        .expect("close returns while blocked")
        .unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "close took {took:?}");
    eprintln!("close while blocked returned in {took:?}");
    let error = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the waiting publish ends with the close")
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            &error,
            Error::ConnectionClosed(_) | Error::ChannelClosed { .. }
        ),
        "{error:?}"
    );
    node.set_memory_alarm(false);
}

async fn blocked_connections_are_reported_and_publishes_keep_their_deadline(node: &Node) {
    let options = ConnectionOptions::default()
        .host("127.0.0.1")
        .port(PORT)
        .heartbeat(Duration::from_secs(2))
        .operation_timeout(Duration::from_secs(10));
    let connection = common::connect_with(options).await;
    let mut events = connection.events();
    let channel = connection.open_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let queue = channel
        .queue_declare("", Default::default())
        .await
        .unwrap()
        .name;

    node.set_memory_alarm(true);
    // The broker blocks a connection when it next publishes.
    let _unconfirmed = channel
        .basic_publish(
            "",
            &queue,
            BasicPublishOptions::default(),
            "first",
            BasicProperties::default(),
        )
        .await
        .unwrap();
    match next_event(&mut events).await {
        ConnectionEvent::Blocked { reason } => assert!(reason.contains("memory"), "{reason}"),
        other => panic!("expected Blocked, got {other:?}"),
    }
    assert!(connection.is_blocked());

    // The broker reads nothing now. With the default policy (Wait) a publish waits without
    // sending; with a deadline, it returns a timeout in time instead of hanging.
    let deadline = Duration::from_millis(500);
    let impatient = channel.with_timeout(deadline);
    let body = Bytes::from(vec![b'x'; 64 * 1024]);
    let mut timed_out = None;
    for _ in 0..20_000 {
        let started = Instant::now();
        match impatient
            .basic_publish(
                "",
                &queue,
                BasicPublishOptions::default(),
                body.clone(),
                BasicProperties::default(),
            )
            .await
        {
            Ok(_) => continue,
            Err(error) => {
                timed_out = Some((error, started.elapsed()));
                break;
            }
        }
    }
    let (error, waited) = timed_out.expect("a blocked broker eventually stops taking publishes");
    assert!(
        matches!(
            error,
            Error::Timeout {
                operation: "basic.publish",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        waited < deadline + Duration::from_secs(1),
        "waited {waited:?}"
    );

    // Blocked is not dead: heartbeats (2 s) must not end the connection meanwhile.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(connection.is_open(), "{:?}", connection.closed().await);

    node.set_memory_alarm(false);
    assert!(matches!(
        next_event(&mut events).await,
        ConnectionEvent::Unblocked
    ));
    assert!(!connection.is_blocked());
    // Everything queued drains, and confirms work again.
    let confirm = channel
        .basic_publish(
            "",
            &queue,
            BasicPublishOptions::default(),
            "after",
            BasicProperties::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(60), confirm)
            .await
            .expect("the confirmation within 60 s")
            .unwrap(),
        Confirmation::Ack
    );
    connection.close().await.unwrap();
}
