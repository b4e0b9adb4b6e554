//! RabbitMQ tutorial 3, "Publish/Subscribe", the subscriber: bind a fresh queue to the fanout
//! exchange `logs` and print every log line. The queue is server-named and exclusive, so each
//! subscriber gets its own copy of every message, and the queue goes away with the subscriber.
//!
//! ```sh
//! cargo run --example tutorial_3_receive_logs                 # runs until Ctrl-C
//! cargo run --example tutorial_3_receive_logs -- --count 1    # stops after one line
//! cargo run --example tutorial_3_emit_log                     # in another terminal
//! ```
//!
//! AMQP_URL selects the broker (default `amqp://guest:guest@127.0.0.1:5672/%2f`).
//! WARREN_EXAMPLE_PREFIX, if set, is put in front of the exchange name; the tests use it to
//! run examples side by side on one broker.

use futures_util::StreamExt;
use warren::{
    BasicConsumeOptions, Connection, ExchangeDeclareOptions, ExchangeKind, QueueBindOptions,
    QueueDeclareOptions,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let count = count_argument();
    let connection = connect().await;
    let channel = connection.open_channel().await?;

    let exchange = name("logs");
    channel
        .exchange_declare(
            &exchange,
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
        )
        .await?;

    // An empty name lets the broker choose one (amq.gen-…); exclusive: only this connection
    // uses the queue, and the broker deletes it when the connection closes.
    let queue = channel
        .queue_declare(
            "",
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
        )
        .await?;
    channel
        .queue_bind(&queue.name, &exchange, "", QueueBindOptions::default())
        .await?;
    println!(" [*] Waiting for logs. To exit press CTRL+C");

    let consumer = channel
        .basic_consume(
            &queue.name,
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
        )
        .await?;
    let mut deliveries = consumer.take(count);
    while let Some(delivery) = deliveries.next().await {
        let delivery = delivery?;
        println!(" [x] {}", String::from_utf8_lossy(&delivery.body));
    }
    connection.close().await?;
    Ok(())
}

/// The N of `--count N`: how many messages to handle before stopping (no limit without it).
fn count_argument() -> usize {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => usize::MAX,
        [flag, n] if flag == "--count" => n.parse().unwrap_or_else(|_| usage()),
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!("usage: tutorial_3_receive_logs [--count N]");
    std::process::exit(2);
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
