//! RabbitMQ tutorial 7, "Publisher Confirms": the broker acknowledges every publish on a
//! channel in confirm mode, and the publisher learns that each message is safe. Three ways to
//! use it, timed, as in the Java tutorial:
//!
//! 1. publish a message and wait for its confirm before the next: simple, slow;
//! 2. publish a batch, then wait for every confirm of the batch (`wait_for_confirms`): faster,
//!    but a nack does not say which message of the batch failed;
//! 3. publish without waiting and handle each confirm as it arrives (the `PublishConfirm`
//!    futures): fast, and every outcome is known per message.
//!
//! ```sh
//! cargo run --release --example tutorial_7_publisher_confirms
//! cargo run --example tutorial_7_publisher_confirms -- --messages 1000
//! ```
//!
//! `--messages N` sets how many messages each strategy publishes (50,000 by default). Each
//! strategy uses a fresh server-named queue that it deletes at the end.
//! AMQP_URL selects the broker (default `amqp://guest:guest@127.0.0.1:5672/%2f`).

use std::time::{Duration, Instant};

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use warren::{
    BasicProperties, BasicPublishOptions, Channel, ConfirmSelectOptions, Confirmation, Connection,
    QueueDeclareOptions, QueueDeleteOptions,
};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Messages per batch in the second strategy.
const BATCH_SIZE: u64 = 100;

#[tokio::main]
async fn main() -> Result<()> {
    let messages = messages_argument();
    let connection = connect().await;

    let elapsed = publish_individually(&connection, messages).await?;
    println!(
        "Published {} messages individually in {} ms",
        thousands(messages),
        thousands(elapsed.as_millis() as u64)
    );
    let elapsed = publish_in_batches(&connection, messages).await?;
    println!(
        "Published {} messages in batch in {} ms",
        thousands(messages),
        thousands(elapsed.as_millis() as u64)
    );
    let elapsed = handle_confirms_asynchronously(&connection, messages).await?;
    println!(
        "Published {} messages and handled confirms asynchronously in {} ms",
        thousands(messages),
        thousands(elapsed.as_millis() as u64)
    );
    connection.close().await?;
    Ok(())
}

/// Strategy 1: wait for each confirm before publishing the next message.
async fn publish_individually(connection: &Connection, messages: u64) -> Result<Duration> {
    let (channel, queue) = confirm_channel(connection).await?;
    let start = Instant::now();
    for i in 0..messages {
        let confirm = publish(&channel, &queue, i).await?;
        match confirm.await? {
            Confirmation::Ack => {}
            other => return Err(format!("message {i} was not confirmed: {other:?}").into()),
        }
    }
    let elapsed = start.elapsed();
    delete(&channel, &queue).await?;
    Ok(elapsed)
}

/// Strategy 2: publish `BATCH_SIZE` messages, then wait until the broker has confirmed them all.
async fn publish_in_batches(connection: &Connection, messages: u64) -> Result<Duration> {
    let (channel, queue) = confirm_channel(connection).await?;
    let start = Instant::now();
    let mut outstanding = 0;
    for i in 0..messages {
        // Not awaiting a PublishConfirm is fine: wait_for_confirms covers every publish so far.
        drop(publish(&channel, &queue, i).await?);
        outstanding += 1;
        if outstanding == BATCH_SIZE {
            check_batch(&channel).await?;
            outstanding = 0;
        }
    }
    if outstanding > 0 {
        check_batch(&channel).await?;
    }
    let elapsed = start.elapsed();
    delete(&channel, &queue).await?;
    Ok(elapsed)
}

async fn check_batch(channel: &Channel) -> Result<()> {
    let summary = channel.wait_for_confirms().await?;
    if !summary.all_acked() {
        // Which messages of the batch failed is unknown: a real publisher would publish the
        // whole batch again.
        return Err(format!("a batch was not fully confirmed: {summary:?}").into());
    }
    Ok(())
}

/// Strategy 3: keep publishing, and handle each confirm as soon as it is there.
async fn handle_confirms_asynchronously(
    connection: &Connection,
    messages: u64,
) -> Result<Duration> {
    let (channel, queue) = confirm_channel(connection).await?;
    let start = Instant::now();
    // The confirms not yet settled, each with the number of its message.
    let mut outstanding = FuturesUnordered::new();
    let mut nacked = Vec::new();
    for i in 0..messages {
        let confirm = publish(&channel, &queue, i).await?;
        outstanding.push(confirm.map(move |outcome| (i, outcome)));
        // Take whatever confirms have arrived meanwhile, without waiting for more.
        while let Some(Some((i, outcome))) = outstanding.next().now_or_never() {
            if outcome? != Confirmation::Ack {
                nacked.push(i);
            }
        }
    }
    // Then the rest.
    while let Some((i, outcome)) = outstanding.next().await {
        if outcome? != Confirmation::Ack {
            nacked.push(i);
        }
    }
    let elapsed = start.elapsed();
    if !nacked.is_empty() {
        // A real publisher would publish these again.
        return Err(format!("{} messages were not confirmed: {nacked:?}", nacked.len()).into());
    }
    delete(&channel, &queue).await?;
    Ok(elapsed)
}

/// A new channel in confirm mode, and a fresh server-named queue to publish to.
async fn confirm_channel(connection: &Connection) -> Result<(Channel, String)> {
    let channel = connection.open_channel().await?;
    let queue = channel
        .queue_declare(
            "",
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
        )
        .await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok((channel, queue.name.to_string()))
}

async fn publish(channel: &Channel, queue: &str, i: u64) -> Result<warren::PublishConfirm> {
    let confirm = channel
        .basic_publish(
            "",
            queue,
            BasicPublishOptions::default(),
            i.to_string(),
            BasicProperties::default(),
        )
        .await?;
    Ok(confirm)
}

async fn delete(channel: &Channel, queue: &str) -> Result<()> {
    channel
        .queue_delete(queue, QueueDeleteOptions::default())
        .await?;
    channel.close().await?;
    Ok(())
}

/// `n` with commas between thousands, as Java's `%,d` writes it.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// The N of `--messages N`: messages per strategy (50,000 without it).
fn messages_argument() -> u64 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => 50_000,
        [flag, n] if flag == "--messages" => n.parse().unwrap_or_else(|_| usage()),
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!("usage: tutorial_7_publisher_confirms [--messages N]");
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
