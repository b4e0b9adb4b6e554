//! Resource alarms on a node of our own: `connection.blocked` and `connection.unblocked` reach
//! the application, a publish with a deadline returns within it while the broker reads nothing,
//! heartbeats do not mistake a blocked connection for a dead one, and the connection works again
//! once unblocked.
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
    BasicPublishOptions, ConfirmSelectOptions, Confirmation, ConnectionEvent, ConnectionOptions,
    Error,
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
            let message = "rabbitmq-server is not installed: cannot start a node of our own";
            assert!(
                std::env::var_os("WARREN_REQUIRE_EXTRA_NODES").is_none(),
                "{message}"
            );
            eprintln!("SKIPPED: {message}");
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

#[tokio::test(flavor = "multi_thread")]
async fn blocked_connections_are_reported_and_publishes_keep_their_deadline() {
    let Some(node) = Node::start() else {
        return;
    };
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

    // The broker reads nothing now. Publishes fill the socket and the driver's queues, then
    // wait; with a deadline, one returns a timeout in time instead of hanging.
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
    drop(node);
}
