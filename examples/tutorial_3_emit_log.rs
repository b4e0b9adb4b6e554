//! RabbitMQ tutorial 3, "Publish/Subscribe", the publisher: send a log line to the fanout
//! exchange `logs`, which copies it to every queue bound to it. With no receiver running,
//! the message goes nowhere.
//!
//! ```sh
//! cargo run --example tutorial_3_receive_logs             # in one or more terminals
//! cargo run --example tutorial_3_emit_log -- "info: it works"
//! ```
//!
//! AMQP_URL selects the broker (default `amqp://guest:guest@127.0.0.1:5672/%2f`).
//! WARREN_EXAMPLE_PREFIX, if set, is put in front of the exchange name; the tests use it to
//! run examples side by side on one broker.

use warren::{
    BasicProperties, BasicPublishOptions, Connection, ExchangeDeclareOptions, ExchangeKind,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let message = if args.is_empty() {
        "info: Hello World!".to_owned()
    } else {
        args.join(" ")
    };

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

    // A fanout exchange ignores the routing key.
    channel
        .basic_publish(
            &exchange,
            "",
            BasicPublishOptions::default(),
            message.clone(),
            BasicProperties::default(),
        )
        .await?;
    println!(" [x] Sent {message}");
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
