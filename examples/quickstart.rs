//! Quick start: connect to a local RabbitMQ, declare a queue, publish a message with a
//! publisher confirm, consume it back and acknowledge it.
//!
//! Run with `cargo run --example quickstart` (set AMQP_URL to use another broker; the default is
//! `amqp://guest:guest@127.0.0.1:5672/%2f`). Start a broker first with
//! `scripts/start-rabbitmq.sh` if none runs.

use futures_util::StreamExt;
use warren::protocol::BasicProperties;
use warren::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, Confirmation,
    Connection, QueueDeclareOptions, QueueDeleteOptions,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    let connection = match Connection::connect(&url).await {
        Ok(connection) => connection,
        Err(error) => {
            eprintln!("cannot connect to the broker: {error}");
            eprintln!("start one with scripts/start-rabbitmq.sh, or set AMQP_URL");
            std::process::exit(1);
        }
    };
    let channel = connection.open_channel().await?;

    // A queue only this connection uses, deleted when it closes.
    let queue = channel
        .queue_declare(
            "",
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
        )
        .await?;
    println!("declared queue {}", queue.name);

    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let properties = BasicProperties::default().with_content_type("text/plain");
    let confirm = channel
        .basic_publish(
            "",
            &queue.name,
            BasicPublishOptions::default(),
            "Hello from warren!",
            properties,
        )
        .await?;
    assert_eq!(confirm.await?, Confirmation::Ack);
    println!("published and confirmed");

    let mut consumer = channel
        .basic_consume(&queue.name, BasicConsumeOptions::default())
        .await?;
    if let Some(delivery) = consumer.next().await {
        let delivery = delivery?;
        println!(
            "received {:?} (content type {:?})",
            String::from_utf8_lossy(&delivery.body),
            delivery.properties.content_type
        );
        delivery.ack(BasicAckOptions::default()).await?;
    }
    consumer.cancel().await?;
    channel
        .queue_delete(&queue.name, QueueDeleteOptions::default())
        .await?;
    connection.close().await?;
    println!("done");
    Ok(())
}
