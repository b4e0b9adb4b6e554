//! aioamqp's guide, "Consuming messages", with warren: consume `my_queue` and print each
//! message's body, envelope and properties, the three arguments of an aioamqp callback. Where
//! aioamqp calls a callback, warren gives a stream of deliveries to loop over.
//!
//! ```sh
//! cargo run --example aioamqp_consume                     # runs until Ctrl-C
//! cargo run --example aioamqp_consume -- --count 1        # stops after one message
//! cargo run --example aioamqp_publish                     # in another terminal
//! ```
//!
//! AMQP_URL selects the broker (default `amqp://guest:guest@127.0.0.1:5672/%2f`).
//! WARREN_EXAMPLE_PREFIX, if set, is put in front of the queue name; the tests use it to run
//! examples side by side on one broker.

use futures_util::StreamExt;
use warren::{BasicAckOptions, BasicConsumeOptions, Connection, QueueDeclareOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let count = count_argument();
    let connection = connect().await;
    let channel = connection.open_channel().await?;

    let queue = name("my_queue");
    channel
        .queue_declare(&queue, QueueDeclareOptions::default())
        .await?;
    let consumer = channel
        .basic_consume(&queue, BasicConsumeOptions::default())
        .await?;
    println!("consuming {queue} as {}", consumer.tag());

    let mut deliveries = consumer.take(count);
    while let Some(delivery) = deliveries.next().await {
        let delivery = delivery?;
        let envelope = &delivery.envelope;
        println!("body: {}", String::from_utf8_lossy(&delivery.body));
        println!(
            "envelope: consumer tag {}, delivery tag {}, exchange {:?}, routing key {:?}, \
             redelivered {}",
            envelope.consumer_tag,
            envelope.delivery_tag,
            envelope.exchange.as_str(),
            envelope.routing_key.as_str(),
            envelope.redelivered
        );
        println!("properties: {:?}", delivery.properties);
        // aioamqp leaves acknowledging to the callback; so does warren.
        delivery.ack(BasicAckOptions::default()).await?;
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
    eprintln!("usage: aioamqp_consume [--count N]");
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
