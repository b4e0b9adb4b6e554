//! RabbitMQ tutorial 5, "Topics", the publisher: send a log line to the topic exchange
//! `topic_logs` with a routing key of dot-separated words such as `kern.critical`
//! (`<facility>.<severity>`); it reaches the queues whose binding pattern matches.
//!
//! ```sh
//! cargo run --example tutorial_5_receive_logs_topic -- "kern.*" "*.critical"
//! cargo run --example tutorial_5_emit_log_topic -- kern.critical "A critical kernel error"
//! ```
//!
//! Arguments: `[ROUTING_KEY [MESSAGE...]]`, by default `anonymous.info` and `Hello World!`.
//! AMQP_URL selects the broker (default `amqp://guest:guest@127.0.0.1:5672/%2f`).
//! WARREN_EXAMPLE_PREFIX, if set, is put in front of the exchange name; the tests use it to
//! run examples side by side on one broker.

use warren::{
    BasicProperties, BasicPublishOptions, Connection, ExchangeDeclareOptions, ExchangeKind,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let routing_key = args.first().map_or("anonymous.info", String::as_str);
    let message = match args.get(1..) {
        Some(words) if !words.is_empty() => words.join(" "),
        _ => "Hello World!".to_owned(),
    };

    let connection = connect().await;
    let channel = connection.open_channel().await?;

    let exchange = name("topic_logs");
    channel
        .exchange_declare(
            &exchange,
            ExchangeKind::Topic,
            ExchangeDeclareOptions::default(),
        )
        .await?;

    channel
        .basic_publish(
            &exchange,
            routing_key,
            BasicPublishOptions::default(),
            message.clone(),
            BasicProperties::default(),
        )
        .await?;
    println!(" [x] Sent {routing_key}:{message}");
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
