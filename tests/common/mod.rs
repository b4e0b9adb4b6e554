//! Shared helpers of the integration tests: the broker to use, unique names, connections that
//! fail with a clear message when no broker answers.
//!
//! Every test that touches the broker gives what it creates a unique name and deletes it, so
//! tests run in parallel on one broker.

#![allow(dead_code)]

pub mod raw;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use warren::{Channel, Connection, ConnectionOptions};

/// The default broker, overridden by `AMQP_URL`.
pub const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The broker URL the tests use.
pub fn broker_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// Options for the test broker.
pub fn options() -> ConnectionOptions {
    broker_url()
        .parse()
        .unwrap_or_else(|e| panic!("AMQP_URL is not a valid AMQP URI: {e}"))
}

/// The test broker's address (from `AMQP_URL`), for a relay or a raw socket in front of it.
pub fn broker_addr() -> std::net::SocketAddr {
    use std::net::ToSocketAddrs;
    let options = options();
    (options.get_host(), options.get_port())
        .to_socket_addrs()
        .expect("resolving the test broker's host")
        .next()
        .expect("the test broker's host has an address")
}

/// Options for the test broker with automatic recovery off: a lost connection stays closed,
/// for tests of what closing means.
pub fn options_without_recovery() -> ConnectionOptions {
    options().recovery(warren::RecoveryPolicy::disabled())
}

/// Connects to the test broker, or fails the test saying which broker did not answer.
pub async fn connect() -> Connection {
    connect_with(options()).await
}

/// Connects with `options`, or fails the test saying which broker did not answer.
pub async fn connect_with(options: ConnectionOptions) -> Connection {
    let display = options.to_string();
    match Connection::connect_with(options).await {
        Ok(connection) => connection,
        Err(e) => panic!(
            "no RabbitMQ broker answered at {display} ({e}); start one with \
             scripts/start-rabbitmq.sh or point AMQP_URL at one"
        ),
    }
}

/// A connection and an open channel on it.
pub async fn channel() -> (Connection, Channel) {
    channel_with(options()).await
}

/// A connection made with `options` and an open channel on it.
pub async fn channel_with(options: ConnectionOptions) -> (Connection, Channel) {
    let connection = connect_with(options).await;
    let channel = connection
        .open_channel()
        .await
        .expect("opening a channel on the test broker");
    (connection, channel)
}

/// A name no other test (or test run) uses: `warren-test-{what}-{pid}-{time}-{n}`.
pub fn unique(what: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("warren-test-{what}-{}-{nanos}-{n}", std::process::id())
}

/// Skips the running test: says so on stderr, past the test harness's output capture, as
/// `SKIPPED <group>: <test>: <reason>`, the line `scripts/test.sh` counts. When `require` (a
/// variable such as `WARREN_REQUIRE_EXTRA_NODES`) is `1`, as CI sets it, this fails the test
/// instead: CI never passes a test that did not run.
///
/// The groups and what each needs are listed in README.md, section Tests.
pub fn skip(group: &str, require: &str, reason: &str) {
    use std::io::Write;
    assert!(
        std::env::var(require).as_deref() != Ok("1"),
        "{require}=1 but {reason}"
    );
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("unnamed-test");
    let _ = writeln!(std::io::stderr(), "SKIPPED {group}: {test}: {reason}");
}

// ===== helpers added for the broker integration tests =====

use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt;
use warren::protocol::BasicProperties;
use warren::{
    BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, Confirmation, Consumer,
    DeclaredQueue, Delivery, Error, ExchangeDeclareOptions, ExchangeDeleteOptions, ExchangeKind,
    QueueDeclareOptions, QueueDeleteOptions, ReplyCode,
};

/// Deadline of one step of a test (a call, the next delivery); a bug fails, never hangs.
pub const STEP: Duration = Duration::from_secs(20);

/// Awaits `future` within [`STEP`], or fails the test naming `what`.
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    within_for(STEP, what, future).await
}

/// Awaits `future` within `limit`, or fails the test naming `what`.
pub async fn within_for<F: Future>(limit: Duration, what: &str, future: F) -> F::Output {
    match tokio::time::timeout(limit, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what}: did not complete within {limit:?}"),
    }
}

/// A `no_ack` consumer of `queue` on `channel`.
pub async fn consume_no_ack(channel: &Channel, queue: &str) -> Consumer {
    within(
        "basic.consume no_ack",
        channel.basic_consume(
            queue,
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
        ),
    )
    .await
    .expect("basic.consume")
}

/// The next item of a consumer stream, within [`STEP`].
pub async fn next_item(consumer: &mut Consumer) -> Option<Result<Delivery, Error>> {
    within("waiting for the consumer's next item", consumer.next()).await
}

/// The next delivery of a consumer, failing the test if the stream ends or yields an error.
pub async fn next_delivery(consumer: &mut Consumer) -> Delivery {
    match next_item(consumer).await {
        Some(Ok(delivery)) => delivery,
        Some(Err(e)) => panic!("expected a delivery, the consumer yielded the error: {e}"),
        None => panic!("expected a delivery, the consumer stream ended"),
    }
}

/// Whether the consumer has an item ready within `wait` (used to check that nothing more comes).
pub async fn has_item_within(consumer: &mut Consumer, wait: Duration) -> bool {
    tokio::time::timeout(wait, consumer.next()).await.is_ok()
}

/// Declares a plain queue named `name` (non-durable, not auto-delete).
pub async fn declare_queue(channel: &Channel, name: &str) -> DeclaredQueue {
    declare_queue_with(channel, name, QueueDeclareOptions::default()).await
}

/// Declares a queue with `options`.
pub async fn declare_queue_with(
    channel: &Channel,
    name: &str,
    options: QueueDeclareOptions,
) -> DeclaredQueue {
    within("queue.declare", channel.queue_declare(name, options))
        .await
        .unwrap_or_else(|e| panic!("declaring queue {name}: {e}"))
}

/// Declares a server-named exclusive queue: unique, and gone with its connection.
pub async fn exclusive_queue(channel: &Channel) -> String {
    exclusive_queue_with(channel, warren::wire::FieldTable::new()).await
}

/// [`exclusive_queue`] with `arguments`.
pub async fn exclusive_queue_with(
    channel: &Channel,
    arguments: warren::wire::FieldTable,
) -> String {
    declare_queue_with(
        channel,
        "",
        QueueDeclareOptions {
            exclusive: true,
            arguments,
            ..Default::default()
        },
    )
    .await
    .name
    .to_string()
}

/// Declares an exchange (non-durable).
pub async fn declare_exchange(channel: &Channel, name: &str, kind: ExchangeKind) {
    within(
        "exchange.declare",
        channel.exchange_declare(name, kind, ExchangeDeclareOptions::default()),
    )
    .await
    .unwrap_or_else(|e| panic!("declaring exchange {name}: {e}"))
}

/// Passive declare of `queue` on `channel` (which must be open, and stays open if the queue exists).
pub async fn queue_counts(channel: &Channel, queue: &str) -> DeclaredQueue {
    let options = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    within(
        "passive queue.declare",
        channel.queue_declare(queue, options),
    )
    .await
    .unwrap_or_else(|e| panic!("passive declare of queue {queue}: {e}"))
}

/// Whether `queue` exists, checked with a passive declare on a fresh channel of `connection`.
pub async fn queue_exists(connection: &Connection, queue: &str) -> bool {
    let channel = open(connection).await;
    let options = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let result = within(
        "passive queue.declare",
        channel.queue_declare(queue, options),
    )
    .await;
    let _ = channel.close().await;
    match result {
        Ok(_) => true,
        Err(e) if e.reply_code() == Some(ReplyCode::NOT_FOUND) => false,
        Err(e) => panic!("passive declare of queue {queue}: unexpected error {e}"),
    }
}

/// Whether `exchange` exists, checked with a passive declare on a fresh channel of `connection`.
pub async fn exchange_exists(connection: &Connection, exchange: &str) -> bool {
    let channel = open(connection).await;
    let options = ExchangeDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let result = within(
        "passive exchange.declare",
        channel.exchange_declare(exchange, ExchangeKind::Direct, options),
    )
    .await;
    let _ = channel.close().await;
    match result {
        Ok(()) => true,
        Err(e) if e.reply_code() == Some(ReplyCode::NOT_FOUND) => false,
        Err(e) => panic!("passive declare of exchange {exchange}: unexpected error {e}"),
    }
}

/// Opens a channel on `connection`, within [`STEP`].
pub async fn open(connection: &Connection) -> Channel {
    within("channel.open", connection.open_channel())
        .await
        .expect("opening a channel")
}

/// Publishes `body` with default properties and no confirms, failing the test on error.
pub async fn publish(channel: &Channel, exchange: &str, routing_key: &str, body: &[u8]) {
    publish_with(
        channel,
        exchange,
        routing_key,
        body,
        BasicProperties::default(),
    )
    .await;
}

/// Publishes `body` with `properties` and waits until the publish is handed to the connection
/// (or, in confirm mode, confirmed); returns nothing, fails the test on error.
pub async fn publish_with(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) {
    let confirm = within(
        "basic.publish",
        channel.basic_publish(
            exchange,
            routing_key,
            BasicPublishOptions::default(),
            body.to_vec(),
            properties,
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("publishing to {exchange:?}/{routing_key:?}: {e}"));
    let confirmation = within("publish confirmation", confirm)
        .await
        .unwrap_or_else(|e| panic!("publish to {exchange:?}/{routing_key:?} failed: {e}"));
    assert!(
        matches!(confirmation, Confirmation::Ack | Confirmation::NotRequested),
        "publish to {exchange:?}/{routing_key:?}: {confirmation:?}"
    );
}

/// Opens a channel in confirm mode: [`publish`] on it returns once the broker has the message
/// in its queues, so counts read afterwards include it. (A passive declare's counts are not
/// ordered after a channel's earlier publishes: RabbitMQ answers `stat` ahead of queued
/// deliveries.)
pub async fn confirm_channel(connection: &Connection) -> Channel {
    let channel = open(connection).await;
    within(
        "confirm.select",
        channel.confirm_select(warren::ConfirmSelectOptions::default()),
    )
    .await
    .expect("confirm.select");
    channel
}

/// `basic.get` with automatic acknowledgement; the body, or `None` if the queue is empty.
pub async fn get_body(channel: &Channel, queue: &str) -> Option<Vec<u8>> {
    let options = BasicGetOptions { no_ack: true };
    within("basic.get", channel.basic_get(queue, options))
        .await
        .unwrap_or_else(|e| panic!("basic.get on {queue}: {e}"))
        .map(|message| message.delivery.body.to_vec())
}

/// Checks that a message published to `exchange` with `routing_key` was NOT routed to `queue`:
/// publishes it, then a sentinel straight to `queue` through the default exchange, on the same
/// channel. The broker keeps a channel's publishes in order, so the first message `queue` then
/// holds is the unroutable one if it was routed, and the sentinel otherwise. Needs `queue`
/// to be empty.
pub async fn assert_not_routed(channel: &Channel, exchange: &str, routing_key: &str, queue: &str) {
    let probe = format!("probe {}", unique("probe"));
    let sentinel = format!("sentinel {}", unique("sentinel"));
    publish(channel, exchange, routing_key, probe.as_bytes()).await;
    publish(channel, "", queue, sentinel.as_bytes()).await;
    let first = get_body(channel, queue).await;
    assert_eq!(
        first.as_deref().map(String::from_utf8_lossy),
        Some(sentinel.as_str().into()),
        "a message published to {exchange:?} with key {routing_key:?} must not reach {queue}"
    );
}

/// Runs `rabbitmqctl` with `args` and returns its standard output; fails the test if it fails.
pub fn rabbitmqctl(args: &[&str]) -> String {
    let output = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running rabbitmqctl {args:?}: {e}"));
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Polls `check` every 50 ms until it returns true, failing the test after [`STEP`].
pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually_within(STEP, what, check).await
}

/// Polls `check` every 50 ms until it returns true, failing the test after `limit`.
pub async fn eventually_within<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("{what}: still not true after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Deletes queues and exchanges when dropped, even if the test panicked, over a connection of
/// its own (on a thread of its own, so it works from any runtime).
#[derive(Debug, Default)]
pub struct Cleanup {
    queues: Vec<String>,
    exchanges: Vec<String>,
}

impl Cleanup {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a queue to delete; returns its name.
    pub fn queue(&mut self, name: impl Into<String>) -> String {
        let name = name.into();
        self.queues.push(name.clone());
        name
    }

    /// Registers an exchange to delete; returns its name.
    pub fn exchange(&mut self, name: impl Into<String>) -> String {
        let name = name.into();
        self.exchanges.push(name.clone());
        name
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.queues.is_empty() && self.exchanges.is_empty() {
            return;
        }
        let queues = std::mem::take(&mut self.queues);
        let exchanges = std::mem::take(&mut self.exchanges);
        let cleaner = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for cleaning up");
            runtime.block_on(async move {
                let work = async {
                    let connection = Connection::connect_with(options()).await.ok()?;
                    for queue in &queues {
                        let channel = connection.open_channel().await.ok()?;
                        let _ = channel
                            .queue_delete(queue, QueueDeleteOptions::default())
                            .await;
                        let _ = channel.close().await;
                    }
                    for exchange in &exchanges {
                        let channel = connection.open_channel().await.ok()?;
                        let _ = channel
                            .exchange_delete(exchange, ExchangeDeleteOptions::default())
                            .await;
                        let _ = channel.close().await;
                    }
                    let _ = connection.close().await;
                    Some(())
                };
                let _ = tokio::time::timeout(Duration::from_secs(20), work).await;
            });
        });
        let _ = cleaner.join();
    }
}

/// Deadline of a whole test.
pub const TEST: Duration = Duration::from_secs(90);

/// Runs a test body within [`TEST`], so that a bug fails the test instead of hanging CI.
pub async fn run<F: Future>(body: F) -> F::Output {
    within_for(TEST, "the test", body).await
}

/// Runs a longer test body within `limit`.
pub async fn run_for<F: Future>(limit: Duration, body: F) -> F::Output {
    within_for(limit, "the test", body).await
}

/// The broker's `rabbitmqctl list_connections` line of the connection named `name` (see
/// `ConnectionOptions::connection_name`), with the columns `columns` followed by
/// `client_properties`; `None` if the broker does not list it.
pub fn broker_connection(name: &str, columns: &[&str]) -> Option<Vec<String>> {
    let mut args = vec!["list_connections", "-q", "--no-table-headers"];
    args.extend_from_slice(columns);
    args.push("client_properties");
    let needle = format!("{{\"connection_name\",\"{name}\"}}");
    rabbitmqctl(&args)
        .lines()
        .find(|line| line.contains(&needle))
        .map(|line| line.split('\t').map(str::to_owned).collect())
}
