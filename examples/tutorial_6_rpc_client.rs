//! RabbitMQ tutorial 6, "RPC", the client: call fib(n) on the server by publishing a request
//! to `rpc_queue` with a `reply_to` queue and a `correlation_id`, then wait for the reply
//! that carries the same id.
//!
//! ```sh
//! cargo run --example tutorial_6_rpc_server                         # in one terminal
//! cargo run --example tutorial_6_rpc_client                         # fib(30)
//! cargo run --example tutorial_6_rpc_client -- 10 20                # two calls
//! cargo run --example tutorial_6_rpc_client -- --direct-reply-to 30
//! ```
//!
//! By default replies come to an exclusive server-named queue of the client's. With
//! `--direct-reply-to` they use RabbitMQ's direct reply-to instead: the client consumes the
//! pseudo-queue `amq.rabbitmq.reply-to` (no-ack, before publishing, on the same channel) and
//! the broker sends replies straight to it, with no queue to declare. A call fails after 30
//! seconds without a reply (is a server running?).
//!
//! AMQP_URL selects the broker (default `amqp://guest:guest@127.0.0.1:5672/%2f`).
//! WARREN_EXAMPLE_PREFIX, if set, is put in front of the queue name; the tests use it to run
//! examples side by side on one broker.

use std::time::Duration;

use futures_util::StreamExt;
use warren::{
    BasicConsumeOptions, BasicProperties, BasicPublishOptions, Channel, Connection, Consumer,
    QueueDeclareOptions,
};

/// How long a call waits for its reply.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The pseudo-queue of direct reply-to.
const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// An RPC client on its own channel, with the consumer of its replies.
struct FibonacciRpcClient {
    channel: Channel,
    replies: Consumer,
    reply_to: String,
    request_queue: String,
    calls: u64,
}

impl FibonacciRpcClient {
    async fn new(connection: &Connection, direct_reply_to: bool) -> Result<Self, warren::Error> {
        let channel = connection.open_channel().await?;
        // Replies are consumed in no-ack mode: a lost reply is a failed call, and direct
        // reply-to requires it.
        let no_ack = BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        };
        let (reply_to, replies) = if direct_reply_to {
            let replies = channel.basic_consume(DIRECT_REPLY_TO, no_ack).await?;
            (DIRECT_REPLY_TO.to_owned(), replies)
        } else {
            let queue = channel
                .queue_declare(
                    "",
                    QueueDeclareOptions {
                        exclusive: true,
                        ..Default::default()
                    },
                )
                .await?;
            let replies = channel.basic_consume(&queue.name, no_ack).await?;
            (queue.name.to_string(), replies)
        };
        Ok(Self {
            channel,
            replies,
            reply_to,
            request_queue: name("rpc_queue"),
            calls: 0,
        })
    }

    async fn call(&mut self, n: u64) -> Result<u64, Box<dyn std::error::Error>> {
        // The reply queue is ours alone, so a counter is a unique enough id.
        self.calls += 1;
        let correlation_id = format!("fib-{}", self.calls);
        let properties = BasicProperties::default()
            .with_reply_to(&self.reply_to)
            .with_correlation_id(&correlation_id);
        self.channel
            .basic_publish(
                "",
                &self.request_queue,
                BasicPublishOptions::default(),
                n.to_string(),
                properties,
            )
            .await?;

        let wait = async {
            while let Some(reply) = self.replies.next().await {
                let reply = reply?;
                // Replies to earlier calls that timed out may still arrive: skip them.
                if reply.properties.correlation_id.as_deref() == Some(correlation_id.as_str()) {
                    return Ok(std::str::from_utf8(&reply.body)?.parse()?);
                }
            }
            Err("the reply consumer ended".into())
        };
        tokio::time::timeout(CALL_TIMEOUT, wait)
            .await
            .map_err(|_| {
                format!("no reply within {CALL_TIMEOUT:?}: is tutorial_6_rpc_server running?")
            })?
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut direct_reply_to = false;
    let mut numbers = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--direct-reply-to" => direct_reply_to = true,
            n => numbers.push(n.parse::<u64>().unwrap_or_else(|_| usage())),
        }
    }
    if numbers.is_empty() {
        numbers.push(30);
    }

    let connection = connect().await;
    let mut client = FibonacciRpcClient::new(&connection, direct_reply_to).await?;
    for n in numbers {
        println!(" [x] Requesting fib({n})");
        let answer = client.call(n).await?;
        println!(" [.] Got fib({n}) = {answer}");
    }
    connection.close().await?;
    Ok(())
}

fn usage() -> ! {
    eprintln!("usage: tutorial_6_rpc_client [--direct-reply-to] [N...]");
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
