//! RabbitMQ tutorial 2, "Work Queues", the producer: put a task on the durable queue
//! `task_queue` as a persistent message. Each dot in the task is one second of work for
//! the worker that takes it.
//!
//! ```sh
//! cargo run --example tutorial_2_worker                   # in two or more terminals
//! cargo run --example tutorial_2_new_task -- First message.
//! cargo run --example tutorial_2_new_task -- Second message..
//! cargo run --example tutorial_2_new_task -- Third message...
//! ```
//!
//! AMQP_URL selects the broker (default `amqp://guest:guest@127.0.0.1:5672/%2f`).
//! WARREN_EXAMPLE_PREFIX, if set, is put in front of the queue name; the tests use it to run
//! examples side by side on one broker.

use warren::{BasicProperties, BasicPublishOptions, Connection, DeliveryMode, QueueDeclareOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let message = if args.is_empty() {
        "Hello World!".to_owned()
    } else {
        args.join(" ")
    };

    let connection = connect().await;
    let channel = connection.open_channel().await?;

    // Durable: the queue survives a broker restart. Redeclaring an existing queue with other
    // flags fails (406 PRECONDITION_FAILED), hence a new name rather than tutorial 1's `hello`.
    let queue = name("task_queue");
    channel
        .queue_declare(
            &queue,
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
        )
        .await?;

    // Persistent (delivery mode 2): a durable queue writes the message to disk. Tutorial 7's
    // publisher confirms tell when that has happened.
    let properties = BasicProperties::default()
        .with_delivery_mode(DeliveryMode::Persistent)
        .with_content_type("text/plain");
    channel
        .basic_publish(
            "",
            &queue,
            BasicPublishOptions::default(),
            message.clone(),
            properties,
        )
        .await?;
    println!(" [x] Sent {message:?}");
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
