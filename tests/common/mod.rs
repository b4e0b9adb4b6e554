//! Shared helpers of the integration tests: the broker to use, unique names, connections that
//! fail with a clear message when no broker answers.
//!
//! Every test that touches the broker gives what it creates a unique name and deletes it, so
//! tests run in parallel on one broker.

#![allow(dead_code)]

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
    let connection = connect().await;
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
