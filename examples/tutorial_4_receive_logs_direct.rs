//! RabbitMQ tutorial 4, "Routing", the subscriber: bind a fresh queue to the direct exchange
//! `direct_logs` once per severity given, and print the log lines that arrive with their
//! severity.
//!
//! ```sh
//! cargo run --example tutorial_4_receive_logs_direct -- info warning error   # until Ctrl-C
//! cargo run --example tutorial_4_receive_logs_direct -- --count 2 error     # stops after 2
//! cargo run --example tutorial_4_emit_log_direct -- error "Run. Run. Or it will explode."
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
    let (count, severities) = arguments();
    if severities.is_empty() {
        usage();
    }
    let connection = connect().await;
    let channel = connection.open_channel().await?;

    let exchange = name("direct_logs");
    channel
        .exchange_declare(
            &exchange,
            ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
        )
        .await?;
    let queue = channel
        .queue_declare(
            "",
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
        )
        .await?;
    // One binding per severity: a queue may have as many bindings as it likes.
    for severity in &severities {
        channel
            .queue_bind(
                &queue.name,
                &exchange,
                severity,
                QueueBindOptions::default(),
            )
            .await?;
    }
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
        println!(
            " [x] {}:{}",
            delivery.envelope.routing_key,
            String::from_utf8_lossy(&delivery.body)
        );
    }
    connection.close().await?;
    Ok(())
}

/// `--count N` (no limit without it) and the severities.
fn arguments() -> (usize, Vec<String>) {
    let mut count = usize::MAX;
    let mut rest = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--count" {
            count = args
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| usage());
        } else {
            rest.push(arg);
        }
    }
    (count, rest)
}

fn usage() -> ! {
    eprintln!("usage: tutorial_4_receive_logs_direct [--count N] [info] [warning] [error]");
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
