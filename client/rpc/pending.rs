//! The calls of one [`RpcClient`](super::RpcClient) waiting for their replies, keyed by
//! correlation id, shared by the calls and the client's reply task.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use super::client::RpcReply;
use super::error::RpcError;
use crate::error::Error;
use crate::shared::connection::ConnectionShared;

/// What a call waits on.
pub(super) type ReplyReceiver = oneshot::Receiver<Result<RpcReply, RpcError>>;

/// One waiting call.
struct Waiter {
    /// The connection's loss count when the call registered: a loss after it makes the
    /// reply impossible.
    losses: u64,
    reply: oneshot::Sender<Result<RpcReply, RpcError>>,
}

#[derive(Default)]
struct Table {
    waiters: HashMap<u64, Waiter>,
    /// Set once the client can make no more calls.
    closed: Option<RpcError>,
}

/// What a client counts across its channels: the correlation ids it gave, and the replies
/// it dropped.
#[derive(Debug)]
pub(super) struct Counters {
    next_id: AtomicU64,
    late_replies: AtomicU64,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            next_id: AtomicU64::new(1),
            late_replies: AtomicU64::new(0),
        }
    }
}

impl Counters {
    /// Replies dropped because no call waited for them.
    pub(super) fn late_replies(&self) -> u64 {
        self.late_replies.load(Ordering::Relaxed)
    }
}

/// The calls waiting on one channel of a client.
pub(super) struct Pending {
    table: Mutex<Table>,
    counters: Arc<Counters>,
    connection: Arc<ConnectionShared>,
}

impl Pending {
    pub(super) fn new(connection: Arc<ConnectionShared>, counters: Arc<Counters>) -> Self {
        Self {
            table: Mutex::default(),
            counters,
            connection,
        }
    }

    /// Whether calls can still be made (the channel's reply consumer runs).
    pub(super) fn is_open(&self) -> bool {
        self.table().closed.is_none()
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a call: its correlation id and where its reply will come. Fails when the
    /// client is closed.
    pub(super) fn register(&self) -> Result<(u64, ReplyReceiver), RpcError> {
        let id = self.counters.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, receiver) = oneshot::channel();
        let mut table = self.table();
        if let Some(closed) = &table.closed {
            return Err(closed.clone());
        }
        // Read under the lock, so that a sweep for a loss either sees this call or this call
        // sees the loss's count (and its request goes out on the new connection).
        let losses = self.connection.losses();
        table.waiters.insert(id, Waiter { losses, reply });
        Ok((id, receiver))
    }

    /// Forgets a call that gave up (timed out, dropped, failed to publish).
    pub(super) fn forget(&self, id: u64) {
        self.table().waiters.remove(&id);
    }

    /// Hands a reply to its call; a reply nobody waits for is counted as late.
    pub(super) fn reply(&self, correlation_id: Option<&str>, reply: RpcReply) {
        let waiter = correlation_id
            .and_then(|id| id.parse::<u64>().ok())
            .and_then(|id| self.table().waiters.remove(&id));
        let delivered = match waiter {
            Some(waiter) => waiter.reply.send(Ok(reply)).is_ok(),
            None => false,
        };
        if !delivered {
            self.count_late(correlation_id);
        }
    }

    /// Counts a reply that no call waits for (any more).
    pub(super) fn count_late(&self, correlation_id: Option<&str>) {
        self.counters.late_replies.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            correlation_id,
            "dropped an RPC reply no call waits for (it timed out or was dropped)"
        );
    }

    /// Fails one call with `error` (its request came back, say).
    pub(super) fn fail(&self, correlation_id: Option<&str>, error: RpcError) -> bool {
        let waiter = correlation_id
            .and_then(|id| id.parse::<u64>().ok())
            .and_then(|id| self.table().waiters.remove(&id));
        match waiter {
            Some(waiter) => waiter.reply.send(Err(error)).is_ok(),
            None => false,
        }
    }

    /// After a loss of the connection: fails every call registered before it.
    pub(super) fn lost(&self, reason: &Error) {
        let mut table = self.table();
        let losses = self.connection.losses();
        let before: Vec<u64> = table
            .waiters
            .iter()
            .filter(|(_, waiter)| waiter.losses < losses)
            .map(|(id, _)| *id)
            .collect();
        if before.is_empty() {
            return;
        }
        tracing::debug!(
            calls = before.len(),
            "failing RPC calls whose replies died with the connection"
        );
        for id in before {
            if let Some(waiter) = table.waiters.remove(&id) {
                let _ = waiter.reply.send(Err(RpcError::ConnectionLost {
                    reason: Box::new(reason.clone()),
                }));
            }
        }
    }

    /// Closes the client: every waiting call and every later one fails with `error`.
    pub(super) fn close(&self, error: RpcError) {
        let mut table = self.table();
        if table.closed.is_none() {
            table.closed = Some(error.clone());
        }
        for (_, waiter) in table.waiters.drain() {
            let _ = waiter.reply.send(Err(error.clone()));
        }
    }

    /// The error of a closed client (or a generic one, should the reply task have gone).
    pub(super) fn closed_error(&self) -> RpcError {
        self.table().closed.clone().unwrap_or_else(|| {
            RpcError::Closed(Error::InvalidState("the RPC client's reply task stopped"))
        })
    }

    /// Calls waiting for their replies.
    pub(super) fn len(&self) -> usize {
        self.table().waiters.len()
    }
}
