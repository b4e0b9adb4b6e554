//! warren's `rpc` scenario with the `warren::rpc::RpcClient` on the client side (direct
//! reply-to, a correlation id and a deadline per call, the client's reply task), against the
//! same server as `runner-warren`'s (its own connection, no_ack, replying to `reply_to` with
//! the request's `correlation_id`). Only the `rpc` scenario: `compare --clients ...,warren-rpc`
//! runs it beside the others for `rpc` and skips it for the rest.

use std::time::{Duration, Instant};

use bytes::Bytes;
use warren::Connection;
use warren::rpc::{RpcCallOptions, RpcClient};
use warren_bench::{Meter, Outcome, Params, Result, Scenario, body, ensure, queue_name, raw};

fn main() {
    warren_bench::run_async("warren-rpc", |p| async move {
        match p.scenario {
            Scenario::Rpc => rpc(&p).await,
            other => Err(format!(
                "runner-warren-rpc runs only the rpc scenario, not {}",
                other.name()
            )
            .into()),
        }
    });
}

async fn rpc(p: &Params) -> Result<Outcome> {
    let requests = queue_name("warren-rpc", "rpc-requests");
    raw::declare_queues(&p.url, std::slice::from_ref(&requests))?;
    let body = Bytes::from(body(p.size));
    let total = p.warmup + p.messages;

    // The server, on its own connection, as in runner-warren: answer each request to its
    // reply_to (here amq.rabbitmq.reply-to.<the client's channel>).
    let (server_connection, server) =
        warren_bench::rpc_server::spawn(&p.url.raw, &requests, body.clone(), total).await?;

    let connection = Connection::connect(&p.url.raw).await?;
    let client = RpcClient::new(&connection).await?;
    let options = RpcCallOptions::default().with_timeout(Duration::from_secs(30));
    let mut latencies = Vec::with_capacity(p.messages as usize);
    let mut meter = None;
    for i in 0..total {
        if i == p.warmup {
            meter = Some(Meter::start(p.broker_pid, true));
        }
        let sent = Instant::now();
        let reply = client
            .call(&requests, body.clone(), options.clone())
            .await?;
        ensure(reply.body.len() == p.size, || {
            format!("a reply of {} bytes, not {}", reply.body.len(), p.size)
        })?;
        if i >= p.warmup {
            latencies.push(sent.elapsed().as_nanos() as u64);
        }
    }
    let measured = meter.ok_or("no measured round trip")?.stop();
    server.await??;
    ensure(client.late_replies() == 0, || "late replies".to_owned())?;

    drop(client);
    connection.close().await?;
    server_connection.close().await?;
    raw::delete_queues(&p.url, &[requests])?;
    Ok(Outcome {
        measured,
        messages: p.messages,
        latencies_ns: latencies,
    })
}
