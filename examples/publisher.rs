//! A `Publisher`: publishing with confirms from many tasks through one cheap, cloneable
//! handle, over a small pool of confirm-mode channels with one in-flight window.
//!
//! Ten tasks publish `--messages` messages in all (10,000 by default), each keeping a few
//! publishes in flight, and every `publish` returns once the broker confirmed its message.
//! Then a publish to an exchange that does not exist fails with 404, alone: the publisher
//! replaces the channel the broker closed and goes on.
//!
//! ```sh
//! cargo run --example publisher
//! cargo run --release --example publisher -- --messages 100000
//! ```
//!
//! AMQP_URL selects the broker (default `amqp://guest:guest@127.0.0.1:5672/%2f`).
//! WARREN_EXAMPLE_PREFIX, if set, is put in front of the queue name; the tests use it to run
//! examples in parallel.

use std::time::Instant;

use futures_util::StreamExt;
use warren::{
    BasicProperties, BasicPublishOptions, Connection, PublishError, Publisher, PublisherOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

const TASKS: u64 = 10;
/// Publishes each task keeps in flight.
const PER_TASK_IN_FLIGHT: usize = 50;

#[tokio::main]
async fn main() -> Result<()> {
    let messages = messages_argument();
    let connection = connect().await;
    let queue = name("publisher_demo");
    let channel = connection.open_channel().await?;
    channel
        .queue_declare(&queue, QueueDeclareOptions::default())
        .await?;

    let options = PublisherOptions::default().channels(4).max_in_flight(500);
    let publisher = Publisher::new(&connection, options).await?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        // A clone per task: all share the channels and the in-flight window.
        let publisher = publisher.clone();
        let queue = queue.clone();
        tasks.push(tokio::spawn(async move {
            let ids = (task..messages).step_by(TASKS as usize);
            let publishes = ids.map(|id| {
                let (publisher, queue) = (&publisher, &queue);
                async move {
                    // A message id lets consumers recognise a message published twice.
                    let properties = BasicProperties::default().with_message_id(id.to_string());
                    let body = format!("message {id}");
                    publisher
                        .publish("", queue, BasicPublishOptions::default(), body, properties)
                        .await
                }
            });
            let mut results =
                futures_util::stream::iter(publishes).buffer_unordered(PER_TASK_IN_FLIGHT);
            let mut confirmed = 0u64;
            while let Some(result) = results.next().await {
                result?;
                confirmed += 1;
            }
            Ok::<_, PublishError>(confirmed)
        }));
    }
    let mut confirmed = 0;
    for task in tasks {
        confirmed += task.await??;
    }
    println!(
        "{confirmed} messages published from {TASKS} tasks, every one confirmed, in {} ms",
        started.elapsed().as_millis()
    );

    // The broker closes the channel of a publish to a missing exchange: that publish fails...
    let missing = name("no_such_exchange");
    let options = BasicPublishOptions::default();
    match publisher
        .publish(&missing, "", options, "lost", BasicProperties::default())
        .await
    {
        Err(error) => println!(
            "publishing to a missing exchange failed with {}: {}",
            error.reply_code().map_or(0, |code| code.0),
            std::error::Error::source(&error).map_or(error.to_string(), ToString::to_string)
        ),
        Ok(()) => return Err("a publish to a missing exchange was confirmed".into()),
    }
    // ...and the publisher goes on, on a new channel.
    publisher
        .publish("", &queue, options, "after", BasicProperties::default())
        .await?;
    let count = channel
        .queue_declare(
            &queue,
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
        )
        .await?
        .message_count;
    println!("the publisher went on: the queue holds {count} messages");

    channel
        .queue_delete(&queue, QueueDeleteOptions::default())
        .await?;
    connection.close().await?;
    Ok(())
}

/// `--messages N`, 10,000 by default.
fn messages_argument() -> u64 {
    let mut args = std::env::args().skip(1);
    match (args.next().as_deref(), args.next()) {
        (None, _) => 10_000,
        (Some("--messages"), Some(n)) => n.parse().unwrap_or_else(|_| usage()),
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!("usage: publisher [--messages N]");
    std::process::exit(2);
}

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
