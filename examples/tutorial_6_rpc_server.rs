//! RabbitMQ tutorial 6, "RPC", the server: take requests (a number n) from the queue
//! `rpc_queue`, compute fib(n), and publish the answer to the request's `reply_to` queue with
//! the request's `correlation_id`, so that the client can match it to its call.
//!
//! ```sh
//! cargo run --example tutorial_6_rpc_server                   # runs until Ctrl-C
//! cargo run --example tutorial_6_rpc_server -- --count 2      # stops after two requests
//! cargo run --example tutorial_6_rpc_client -- 30             # in another terminal
//! ```
//!
//! Replies go through the default exchange to whatever queue `reply_to` names, which works the
//! same for a client's own queue and for direct reply-to (`amq.rabbitmq.reply-to`).
//! AMQP_URL selects the broker (default `amqp://guest:guest@127.0.0.1:5672/%2f`).
//! WARREN_EXAMPLE_PREFIX, if set, is put in front of the queue name; the tests use it to run
//! examples side by side on one broker.

use futures_util::StreamExt;
use warren::{
    BasicAckOptions, BasicConsumeOptions, BasicProperties, BasicPublishOptions, BasicQosOptions,
    BasicRejectOptions, Connection, QueueDeclareOptions,
};

/// The deliberately slow recursive definition: the work the server does.
fn fib(n: u64) -> u64 {
    match n {
        0 => 0,
        1 => 1,
        n => fib(n - 1) + fib(n - 2),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let count = count_argument();
    let connection = connect().await;
    let channel = connection.open_channel().await?;

    let queue = name("rpc_queue");
    channel
        .queue_declare(&queue, QueueDeclareOptions::default())
        .await?;
    // One request at a time per server: run more servers to share the load.
    channel.basic_qos(1, BasicQosOptions::default()).await?;
    let requests = channel
        .basic_consume(&queue, BasicConsumeOptions::default())
        .await?;
    println!(" [x] Awaiting RPC requests");

    let mut requests = requests.take(count);
    while let Some(request) = requests.next().await {
        let request = request?;
        let n = match std::str::from_utf8(&request.body).map(|s| s.trim().parse::<u64>()) {
            Ok(Ok(n)) if n <= 40 => n,
            _ => {
                eprintln!(" [!] not a number from 0 to 40: {:?}", request.body);
                // Requeueing a bad request would only bring it back: drop it.
                request
                    .reject(BasicRejectOptions { requeue: false })
                    .await?;
                continue;
            }
        };
        println!(" [.] fib({n})");
        // CPU-bound work goes to a thread for blocking work rather than holding up one of
        // the runtime's async workers (which also run the connection).
        let answer = tokio::task::spawn_blocking(move || fib(n))
            .await?
            .to_string();

        if let Some(reply_to) = &request.properties.reply_to {
            let properties = BasicProperties {
                correlation_id: request.properties.correlation_id.clone(),
                ..Default::default()
            };
            channel
                .basic_publish(
                    "",
                    reply_to,
                    BasicPublishOptions::default(),
                    answer,
                    properties,
                )
                .await?;
        }
        // Acknowledge after replying: if the server dies before, another one answers.
        request.ack(BasicAckOptions::default()).await?;
    }
    connection.close().await?;
    Ok(())
}

/// The N of `--count N`: how many requests to answer before stopping (no limit without it).
fn count_argument() -> usize {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => usize::MAX,
        [flag, n] if flag == "--count" => n.parse().unwrap_or_else(|_| usage()),
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!("usage: tutorial_6_rpc_server [--count N]");
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
