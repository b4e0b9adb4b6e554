//! RabbitMQ tutorial 1, "Hello World!", the sending side: publish one message to the queue
//! `hello` through the default exchange.
//!
//! Start the receiver, then send:
//!
//! ```sh
//! cargo run --example tutorial_1_receive      # waits; add `-- --count 1` to stop after one
//! cargo run --example tutorial_1_send
//! ```
//!
//! AMQP_URL selects the broker (default `amqp://guest:guest@127.0.0.1:5672/%2f`).
//! WARREN_EXAMPLE_PREFIX, if set, is put in front of the queue name; the tests use it to run
//! examples side by side on one broker.

use warren::{BasicProperties, BasicPublishOptions, Connection, QueueDeclareOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let connection = connect().await;
    let channel = connection.open_channel().await?;

    // Declaring is idempotent: the queue is created only if it does not exist yet. Both sides
    // declare it, so it does not matter which one starts first.
    let queue = name("hello");
    channel
        .queue_declare(&queue, QueueDeclareOptions::default())
        .await?;

    // The default exchange ("") routes a message to the queue named by its routing key.
    // basic_publish returns once the message is queued on the connection. It also returns a
    // PublishConfirm, which matters only in confirm mode (tutorial 7): here there is nothing
    // to wait for.
    channel
        .basic_publish(
            "",
            &queue,
            BasicPublishOptions::default(),
            "Hello World!",
            BasicProperties::default(),
        )
        .await?;
    println!(" [x] Sent 'Hello World!'");

    // Closing the connection flushes what is queued on it first.
    connection.close().await?;
    Ok(())
}

/// Connects to AMQP_URL, or exits with a message saying which broker did not answer.
async fn connect() -> Connection {
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    Connection::connect(&url).await.unwrap_or_else(|error| {
        eprintln!("cannot connect to the broker: {error}");
        eprintln!("start one with scripts/start-rabbitmq.sh, or set AMQP_URL");
        std::process::exit(1);
    })
}

/// `base` with WARREN_EXAMPLE_PREFIX in front (nothing by default).
fn name(base: &str) -> String {
    let prefix = std::env::var("WARREN_EXAMPLE_PREFIX").unwrap_or_default();
    format!("{prefix}{base}")
}
