//! RabbitMQ tutorial 1, "Hello World!", the receiving side: consume the queue `hello` and
//! print every message.
//!
//! ```sh
//! cargo run --example tutorial_1_receive                  # runs until Ctrl-C
//! cargo run --example tutorial_1_receive -- --count 1     # stops after one message
//! cargo run --example tutorial_1_send                     # in another terminal
//! ```
//!
//! AMQP_URL selects the broker (default `amqp://guest:guest@127.0.0.1:5672/%2f`).
//! WARREN_EXAMPLE_PREFIX, if set, is put in front of the queue name; the tests use it to run
//! examples side by side on one broker.

use futures_util::StreamExt;
use warren::{BasicConsumeOptions, Connection, QueueDeclareOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let count = count_argument();
    let connection = connect().await;
    let channel = connection.open_channel().await?;

    let queue = name("hello");
    channel
        .queue_declare(&queue, QueueDeclareOptions::default())
        .await?;

    // no_ack: the broker forgets a message as soon as it is sent (tutorial 2 acknowledges).
    let consumer = channel
        .basic_consume(
            &queue,
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
        )
        .await?;
    println!(" [*] Waiting for messages. To exit press CTRL+C");

    // A consumer is a Stream of deliveries; `take` stops it after `count` of them.
    let mut deliveries = consumer.take(count);
    while let Some(delivery) = deliveries.next().await {
        let delivery = delivery?;
        println!(" [x] Received {}", String::from_utf8_lossy(&delivery.body));
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
    eprintln!("usage: tutorial_1_receive [--count N]");
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
