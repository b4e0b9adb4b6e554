//! Arbitrary bytes as everything a server says to the client, handshake included, while the
//! client runs a script that touches every part of the connection: the handshake, a channel,
//! confirms, a consumer with acks, a publish, a declare, a `basic.get`, and the closes.
//!
//! The client must never panic, hang or allocate without bound, whatever the server sends:
//! each run gets a fresh runtime with tokio's clock paused, so every deadline the client keeps
//! passes at once; a script that still has not finished after an hour of that virtual time
//! waits on something without a deadline, and the target panics ("hang"). Allocations are
//! bounded by libFuzzer's `-malloc_limit_mb` (see README.md).
//!
//! The connection runs over an in-memory duplex stream through `Connection::connect_in_memory`
//! (warren's `fuzzing` feature): no socket per run. What the client writes is read and dropped.

#![no_main]

use std::time::Duration;

use futures_util::StreamExt;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use warren::protocol::BasicProperties;
use warren::wire::FieldTable;
use warren::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, Connection,
    ConnectionOptions, QueueDeclareOptions,
};

/// Virtual time after which an unfinished script counts as a hang.
const HANG: Duration = Duration::from_secs(3600);

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (mut server_read, mut server_write) = tokio::io::split(server);
        // The server's words, a frame at a time, each once the client has done all it can
        // with the ones before (the clock moves only when every task waits), so that
        // replies come after their requests; then silence (the stream stays open).
        let writer = tokio::spawn({
            let data = data.to_vec();
            async move {
                let mut rest = &data[..];
                while !rest.is_empty() {
                    let len = next_frame_len(rest);
                    if server_write.write_all(&rest[..len]).await.is_err() {
                        break;
                    }
                    rest = &rest[len..];
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                server_write
            }
        });
        // What the client says is read and dropped, so that its writes never block.
        let reader = tokio::spawn(async move {
            let mut sink = vec![0; 16 * 1024];
            while matches!(server_read.read(&mut sink).await, Ok(n) if n > 0) {}
        });
        let finished = tokio::time::timeout(HANG, script(client)).await;
        assert!(finished.is_ok(), "hang: the client script did not finish");
        drop(writer.await);
        reader.abort();
    });
});

/// The length of the frame at the front of `bytes` as its header declares it (type, channel,
/// size, payload, end octet), or all of `bytes` when they hold no whole frame.
fn next_frame_len(bytes: &[u8]) -> usize {
    let declared = bytes
        .get(3..7)
        .map(|size| u32::from_be_bytes([size[0], size[1], size[2], size[3]]) as usize);
    match declared {
        Some(size) if size + 8 <= bytes.len() => size + 8,
        _ => bytes.len(),
    }
}

/// What an application does with a connection; every failure just ends the script.
async fn script(stream: tokio::io::DuplexStream) {
    let options = ConnectionOptions::new()
        .heartbeat(Duration::from_secs(5))
        .connection_timeout(Duration::from_secs(10))
        .operation_timeout(Duration::from_secs(5))
        .max_body_size(1024 * 1024);
    let Ok(connection) = Connection::connect_in_memory(stream, options).await else {
        return;
    };
    let mut events = connection.events();
    if let Ok(channel) = connection.open_channel().await {
        let _ = channel.confirm_select(Default::default()).await;
        let consumer = channel
            .basic_consume("q", BasicConsumeOptions::default())
            .await;
        let confirm = channel
            .basic_publish(
                "",
                "q",
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                "body",
                BasicProperties {
                    headers: Some(FieldTable::new().with("k", 1i32)),
                    ..Default::default()
                },
            )
            .await;
        let _ = channel
            .queue_declare("q", QueueDeclareOptions::default())
            .await;
        if let Ok(Some(message)) = channel.basic_get("q", BasicGetOptions::default()).await {
            let _ = message.ack(BasicAckOptions::default()).await;
        }
        if let Ok(mut consumer) = consumer {
            for _ in 0..4 {
                match tokio::time::timeout(Duration::from_secs(1), consumer.next()).await {
                    Ok(Some(Ok(delivery))) => {
                        let _ = delivery.ack(BasicAckOptions::default()).await;
                    }
                    Ok(Some(Err(warren::Error::UndecodableDelivery(bad)))) => {
                        let _ = bad.reject(Default::default()).await;
                    }
                    Ok(Some(Err(_))) => {}
                    Ok(None) | Err(_) => break,
                }
            }
        }
        if let Ok(confirm) = confirm {
            let _ = confirm.await;
        }
        let _ = channel.close().await;
    }
    while let Ok(Some(_)) = tokio::time::timeout(Duration::ZERO, events.next()).await {}
    let _ = connection.close().await;
}
