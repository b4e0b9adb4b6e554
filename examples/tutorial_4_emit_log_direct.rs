//! RabbitMQ tutorial 4, "Routing", the publisher: send a log line to the direct exchange
//! `direct_logs` with its severity as the routing key; it reaches the queues bound with that
//! severity.
//!
//! ```sh
//! cargo run --example tutorial_4_receive_logs_direct -- warning error
//! cargo run --example tutorial_4_emit_log_direct -- error "Run. Run. Or it will explode."
//! ```
//!
//! Arguments: `[SEVERITY [MESSAGE...]]`, by default `info` and `Hello World!`.
//! AMQP_URL selects the broker (default `amqp://guest:guest@127.0.0.1:5672/%2f`).
//! WARREN_EXAMPLE_PREFIX, if set, is put in front of the exchange name; the tests use it to
//! run examples side by side on one broker.

use warren::{
    BasicProperties, BasicPublishOptions, Connection, ExchangeDeclareOptions, ExchangeKind,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let severity = args.first().map_or("info", String::as_str);
    let message = match args.get(1..) {
        Some(words) if !words.is_empty() => words.join(" "),
        _ => "Hello World!".to_owned(),
    };

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

    channel
        .basic_publish(
            &exchange,
            severity,
            BasicPublishOptions::default(),
            message.clone(),
            BasicProperties::default(),
        )
        .await?;
    println!(" [x] Sent {severity}:{message}");
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
