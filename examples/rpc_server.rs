//! An RPC server with `warren::rpc::RpcServer`: answer fib(n) requests from the queue
//! `rpc_requests`, several at once, replying to each request's `reply_to` with its
//! `correlation_id`.
//!
//! ```sh
//! cargo run --example rpc_server                              # runs until Ctrl-C
//! cargo run --example rpc_server -- --count 3                 # stops after three requests
//! cargo run --example rpc_client -- 10 20 30                  # in another terminal
//! ```
//!
//! Compared with `tutorial_6_rpc_server`, which does all of this by hand, `RpcServer` sets
//! the prefetch, runs up to `concurrency` handlers at once, replies and then acknowledges,
//! and rejects a request whose handler fails (here: a body that is not a number from 0 to
//! 40) without requeue, so that it goes to the queue's dead-letter exchange, declared here
//! as `rpc_requests.dlx` with the queue `rpc_requests.failed` bound to it.
//!
//! AMQP_URL selects the broker (default `amqp://guest:guest@127.0.0.1:5672/%2f`).
//! WARREN_EXAMPLE_PREFIX, if set, is put in front of the queue and exchange names; the tests
//! use it to run examples side by side on one broker.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;
use warren::rpc::{RpcServer, RpcServerOptions};
use warren::wire::FieldTable;
use warren::{Connection, ExchangeKind, QueueBindOptions, QueueDeclareOptions};

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

    // The request queue, with a dead-letter exchange for requests whose handler failed.
    let queue = name("rpc_requests");
    let dlx = format!("{queue}.dlx");
    let failed = format!("{queue}.failed");
    channel
        .exchange_declare(&dlx, ExchangeKind::Fanout, Default::default())
        .await?;
    channel
        .queue_declare(&failed, QueueDeclareOptions::default())
        .await?;
    channel
        .queue_bind(&failed, &dlx, "", QueueBindOptions::default())
        .await?;
    let arguments = FieldTable::new().with("x-dead-letter-exchange", dlx.as_str());
    channel
        .queue_declare(
            &queue,
            QueueDeclareOptions {
                arguments,
                ..Default::default()
            },
        )
        .await?;

    let answered = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(Notify::new());
    let (counter, notify) = (answered.clone(), done.clone());
    let options = RpcServerOptions {
        prefetch: 8,
        concurrency: 4,
        ..Default::default()
    };
    let server = RpcServer::serve(&connection, &queue, options, move |request| {
        let (counter, notify) = (counter.clone(), notify.clone());
        async move {
            let text = String::from_utf8_lossy(&request.body).trim().to_owned();
            let n = match text.parse::<u64>() {
                Ok(n) if n <= 40 => n,
                _ => {
                    println!(" [!] not a number from 0 to 40: {text:?}");
                    return Err(format!("not a number from 0 to 40: {text:?}"));
                }
            };
            println!(" [.] fib({n})");
            // CPU-bound work goes to a thread for blocking work, not an async worker.
            let answer = tokio::task::spawn_blocking(move || fib(n))
                .await
                .map_err(|e| e.to_string())?;
            if counter.fetch_add(1, Ordering::SeqCst) + 1 == count {
                notify.notify_one();
            }
            Ok(answer.to_string())
        }
    })
    .await?;
    println!(" [x] Awaiting RPC requests on {queue}");

    done.notified().await;
    // Lets the last reply and acknowledgement go out before closing.
    server.shutdown().await?;
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
    eprintln!("usage: rpc_server [--count N]");
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
