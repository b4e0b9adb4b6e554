//! An RPC client with `warren::rpc::RpcClient`: call fib(n) on `rpc_server` for every number
//! given, all calls at once, over direct reply-to.
//!
//! ```sh
//! cargo run --example rpc_server                              # in one terminal
//! cargo run --example rpc_client -- 10 20 30                  # three calls in flight at once
//! cargo run --example rpc_client -- --timeout-ms 100 35       # a deadline that is too short
//! ```
//!
//! Compared with `tutorial_6_rpc_client`, which matches replies by hand: `RpcClient` consumes
//! `amq.rabbitmq.reply-to` once, gives every call its own correlation id, runs any number of
//! calls at once, and gives each a deadline. A request no queue takes fails at once
//! (`RpcError::Unroutable`: is the server running?); a reply that comes after its call gave up
//! is dropped and counted.
//!
//! AMQP_URL selects the broker (default `amqp://guest:guest@127.0.0.1:5672/%2f`).
//! WARREN_EXAMPLE_PREFIX, if set, is put in front of the queue name; the tests use it to run
//! examples side by side on one broker.

use std::time::Duration;

use warren::Connection;
use warren::rpc::{RpcCallOptions, RpcClient};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut timeout = Duration::from_secs(30);
    let mut numbers = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--timeout-ms" => {
                let ms = args.next().and_then(|ms| ms.parse().ok());
                timeout = Duration::from_millis(ms.unwrap_or_else(|| usage()));
            }
            n => numbers.push(n.parse::<u64>().unwrap_or_else(|_| usage())),
        }
    }
    if numbers.is_empty() {
        numbers.push(30);
    }

    let connection = connect().await;
    let client = RpcClient::new(&connection).await?;
    let queue = name("rpc_requests");
    let options = RpcCallOptions::default().with_timeout(timeout);
    // Every call at once: the client matches each reply to its call.
    let calls = numbers.iter().map(|n| {
        println!(" [x] Requesting fib({n})");
        let (client, queue, options) = (client.clone(), queue.clone(), options.clone());
        let n = *n;
        tokio::spawn(async move { (n, client.call(&queue, n.to_string(), options).await) })
    });
    let calls: Vec<_> = calls.collect();
    let mut failed = false;
    for call in calls {
        match call.await? {
            (n, Ok(reply)) => println!(
                " [.] Got fib({n}) = {}",
                String::from_utf8_lossy(&reply.body)
            ),
            (n, Err(error)) => {
                println!(" [!] fib({n}) failed: {error}");
                failed = true;
            }
        }
    }
    connection.close().await?;
    if failed {
        std::process::exit(1);
    }
    Ok(())
}

fn usage() -> ! {
    eprintln!("usage: rpc_client [--timeout-ms MS] [N...]");
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
