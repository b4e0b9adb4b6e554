//! RabbitMQ tutorial 2, "Work Queues", the worker: take tasks from `task_queue` one at a time
//! (fair dispatch with a prefetch of 1), work one second per dot, and acknowledge each task
//! only when it is done, so that a worker that dies loses nothing.
//!
//! ```sh
//! cargo run --example tutorial_2_worker                   # runs until Ctrl-C
//! cargo run --example tutorial_2_worker -- --count 3      # stops after three tasks
//! cargo run --example tutorial_2_new_task -- A task...
//! ```
//!
//! AMQP_URL selects the broker (default `amqp://guest:guest@127.0.0.1:5672/%2f`).
//! WARREN_EXAMPLE_PREFIX, if set, is put in front of the queue name; the tests use it to run
//! examples side by side on one broker.

use std::time::Duration;

use futures_util::StreamExt;
use warren::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, Connection, QueueDeclareOptions,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let count = count_argument();
    let connection = connect().await;
    let channel = connection.open_channel().await?;

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

    // Fair dispatch: at most one unacknowledged task per worker, so a busy worker gets no new
    // task until it acknowledges the one it has; an idle worker gets it instead.
    channel.basic_qos(1, BasicQosOptions::default()).await?;

    // Manual acknowledgements (no_ack is false by default).
    let consumer = channel
        .basic_consume(&queue, BasicConsumeOptions::default())
        .await?;
    println!(" [*] Waiting for messages. To exit press CTRL+C");

    let mut tasks = consumer.take(count);
    while let Some(task) = tasks.next().await {
        let task = task?;
        let body = String::from_utf8_lossy(&task.body);
        println!(" [x] Received {body}");
        let dots = body.matches('.').count() as u64;
        tokio::time::sleep(Duration::from_secs(dots)).await;
        println!(" [x] Done");
        // Acknowledge on the channel the task came from, once the work is done.
        task.ack(BasicAckOptions::default()).await?;
    }
    connection.close().await?;
    Ok(())
}

/// The N of `--count N`: how many tasks to handle before stopping (no limit without it).
fn count_argument() -> usize {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => usize::MAX,
        [flag, n] if flag == "--count" => n.parse().unwrap_or_else(|_| usage()),
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!("usage: tutorial_2_worker [--count N]");
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
