//! aioamqp's guide, "Publishing messages", with warren: declare the queue `my_queue` and
//! publish a message to it through the default exchange.
//!
//! ```sh
//! cargo run --example aioamqp_publish
//! cargo run --example aioamqp_consume -- --count 1
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

    let queue = name("my_queue");
    channel
        .queue_declare(&queue, QueueDeclareOptions::default())
        .await?;
    // The exchange "" is the default exchange: the routing key names the queue.
    channel
        .basic_publish(
            "",
            &queue,
            BasicPublishOptions::default(),
            "aioamqp hello",
            BasicProperties::default(),
        )
        .await?;
    println!("published \"aioamqp hello\" to {queue}");
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
