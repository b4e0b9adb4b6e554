//! A TCP relay that delays every byte by a fixed time in each direction, to measure a client
//! as if the broker were across a network instead of on the loopback interface.
//!
//! Data keeps its order and the relay does not limit throughput: each chunk read is stamped
//! with the time it is due and written when that time comes, while reading goes on. Timers
//! have a resolution of about a millisecond, so measure the round trip it gives
//! ([`DelayRelay::start`] does not promise an exact one).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::Result;

/// A listening relay; it forwards every connection it accepts until the process ends.
pub struct DelayRelay {
    address: SocketAddr,
}

impl DelayRelay {
    /// Starts a relay on a free loopback port that forwards to `target`, delaying each
    /// direction by `one_way`.
    pub async fn start(target: SocketAddr, one_way: Duration) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::join!(
                        delayed_copy(client_read, server_write, one_way),
                        delayed_copy(server_read, client_write, one_way),
                    );
                });
            }
        });
        Ok(Self { address })
    }

    /// Where clients connect to.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

/// Copies `from` to `to`, each chunk `delay` after it was read.
async fn delayed_copy(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) {
    let (due, mut chunks) = mpsc::unbounded_channel::<(Instant, Bytes)>();
    let writer = async move {
        while let Some((at, chunk)) = chunks.recv().await {
            if at > Instant::now() {
                tokio::time::sleep_until(at).await;
            }
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    let reader = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let chunk = Bytes::copy_from_slice(&buffer[..n]);
            if due.send((Instant::now() + delay, chunk)).is_err() {
                break;
            }
        }
    };
    tokio::join!(reader, writer);
}
