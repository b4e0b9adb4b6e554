//! A RabbitMQ stream over AMQP 0-9-1: declare the stream `events` (with a size and age
//! limit), optionally publish to it, and read it from an offset, printing each message's
//! offset in the stream.
//!
//! ```sh
//! cargo run --example stream_consume -- --publish 10 --count 10             # from the first
//! cargo run --example stream_consume -- --offset 5 --count 5                # from offset 5
//! cargo run --example stream_consume -- --offset next                       # only new ones
//! cargo run --example stream_consume -- --offset @1767225600 --count 3      # since a time
//! ```
//!
//! `--offset` is `first` (the default), `last`, `next`, an offset, or `@` and a Unix time in
//! seconds. A stream is read, not drained: every consumer reads it from where it chooses, and
//! the messages stay until the stream's limits remove them. RabbitMQ requires stream consumers
//! to acknowledge manually with a prefetch set, which `stream_consume` checks.
//!
//! AMQP_URL selects the broker (default `amqp://guest:guest@127.0.0.1:5672/%2f`).
//! WARREN_EXAMPLE_PREFIX, if set, is put in front of the stream's name; the tests use it to
//! run examples side by side on one broker.

use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use warren::{
    BasicAckOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, Confirmation,
    Connection, StreamConsumeOptions, StreamDeclareOptions, StreamOffset,
};

struct Args {
    offset: StreamOffset,
    count: usize,
    publish: usize,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Args {
        offset,
        count,
        publish,
    } = arguments();
    let connection = connect().await;
    let channel = connection.open_channel().await?;
    let stream = name("events");
    let declare = StreamDeclareOptions {
        max_length_bytes: Some(100 * 1024 * 1024),
        max_age: Some(Duration::from_secs(24 * 3600)),
        ..Default::default()
    };
    channel.stream_declare(&stream, declare).await?;

    if publish > 0 {
        let publisher = connection.open_channel().await?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        for i in 0..publish {
            let body = format!("event {i}");
            let confirm = publisher
                .basic_publish(
                    "",
                    &stream,
                    BasicPublishOptions::default(),
                    body,
                    Default::default(),
                )
                .await?;
            if confirm.await? != Confirmation::Ack {
                return Err("the broker did not confirm a publish".into());
            }
        }
        println!(" [x] Published {publish} messages to {stream}");
    }

    // RabbitMQ requires a prefetch (and manual acks) for stream consumers.
    channel.basic_qos(100, BasicQosOptions::default()).await?;
    let mut consumer = channel
        .stream_consume(&stream, StreamConsumeOptions::from(offset))
        .await?;
    println!(" [*] Reading {stream} from {offset:?}");
    let mut read = 0;
    while read < count {
        let Some(delivery) = consumer.next().await else {
            break;
        };
        let delivery = delivery?;
        let offset = delivery
            .stream_offset()
            .map_or_else(|| "?".to_owned(), |o| o.to_string());
        println!(
            " [x] offset {offset}: {}",
            String::from_utf8_lossy(&delivery.body)
        );
        delivery.ack(BasicAckOptions::default()).await?;
        read += 1;
    }
    connection.close().await?;
    Ok(())
}

fn arguments() -> Args {
    let mut parsed = Args {
        offset: StreamOffset::First,
        count: usize::MAX,
        publish: 0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--offset" => parsed.offset = parse_offset(&value).unwrap_or_else(|| usage()),
            "--count" => parsed.count = value.parse().unwrap_or_else(|_| usage()),
            "--publish" => parsed.publish = value.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    parsed
}

fn parse_offset(value: &str) -> Option<StreamOffset> {
    Some(match value {
        "first" => StreamOffset::First,
        "last" => StreamOffset::Last,
        "next" => StreamOffset::Next,
        _ => match value.strip_prefix('@') {
            Some(secs) => StreamOffset::Timestamp(
                SystemTime::UNIX_EPOCH + Duration::from_secs(secs.parse().ok()?),
            ),
            None => StreamOffset::Offset(value.parse().ok()?),
        },
    })
}

fn usage() -> ! {
    eprintln!(
        "usage: stream_consume [--offset first|last|next|N|@UNIX_SECS] [--count N] [--publish N]"
    );
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
