//! aioamqp's guide, "Using exchanges", with warren: declare the fanout exchange `my_exchange`
//! and the queue `my_queue`, and bind them. Then, to show the binding at work, publish a
//! message to the exchange (with a publisher confirm) and fetch it from the queue.
//!
//! ```sh
//! cargo run --example aioamqp_exchange
//! ```
//!
//! AMQP_URL selects the broker (default `amqp://guest:guest@127.0.0.1:5672/%2f`).
//! WARREN_EXAMPLE_PREFIX, if set, is put in front of the exchange and queue names; the tests
//! use it to run examples side by side on one broker.

use warren::{
    BasicGetOptions, BasicProperties, BasicPublishOptions, ConfirmSelectOptions, Confirmation,
    Connection, ExchangeDeclareOptions, ExchangeKind, QueueBindOptions, QueueDeclareOptions,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let connection = connect().await;
    let channel = connection.open_channel().await?;

    let exchange = name("my_exchange");
    let queue = name("my_queue");
    channel
        .exchange_declare(
            &exchange,
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
        )
        .await?;
    channel
        .queue_declare(&queue, QueueDeclareOptions::default())
        .await?;
    channel
        .queue_bind(&queue, &exchange, "", QueueBindOptions::default())
        .await?;
    println!("bound queue {queue} to the fanout exchange {exchange}");

    // Once the broker acks the publish, the message is in every queue the exchange routed it to.
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let confirm = channel
        .basic_publish(
            &exchange,
            "",
            BasicPublishOptions::default(),
            "through the exchange",
            BasicProperties::default(),
        )
        .await?;
    if confirm.await? != Confirmation::Ack {
        return Err("the broker did not confirm the message".into());
    }
    // basic.get with no_ack: fetch one message, acknowledged as it is sent.
    let options = BasicGetOptions { no_ack: true };
    match channel.basic_get(&queue, options).await? {
        Some(message) => println!(
            "{queue} received {:?} from exchange {}",
            String::from_utf8_lossy(&message.body),
            message.envelope.exchange
        ),
        None => println!("{queue} is empty: another consumer took the message"),
    }
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
