//! Counters of what a connection did, kept by the driver and read by
//! [`Connection::stats`](crate::Connection::stats).
//!
//! Each counter is one relaxed atomic add where the event happens (the driver's task does
//! nearly all of them); reading takes a snapshot, each counter exact but the set not taken
//! at one instant.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a connection's counters, from
/// [`Connection::stats`](crate::Connection::stats), counted since the connection was made
/// (across recoveries).
///
/// Counters only grow; take two snapshots and [`ConnectionStats::since`] for rates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionStats {
    /// Messages published (`basic.publish` handed to the socket's write queue).
    pub published: u64,
    /// Publishes the broker confirmed with `basic.ack` (returned ones included: the broker
    /// acks those too).
    pub confirmed: u64,
    /// Publishes the broker refused with `basic.nack`.
    pub nacked: u64,
    /// Messages the broker returned (`basic.return`: mandatory and unroutable).
    pub returned: u64,
    /// Deliveries handed to consumers (`basic.deliver`).
    pub delivered: u64,
    /// Messages fetched with `basic.get`.
    pub fetched: u64,
    /// `basic.ack`s sent (one with `multiple` counts once).
    pub acked: u64,
    /// `basic.nack`s and `basic.reject`s sent.
    pub rejected: u64,
    /// Bytes read from the socket.
    pub bytes_received: u64,
    /// Bytes written to the socket.
    pub bytes_sent: u64,
    /// Frames received (heartbeats included).
    pub frames_received: u64,
    /// Frames queued to be sent (heartbeats included).
    pub frames_sent: u64,
    /// Heartbeats sent.
    pub heartbeats_sent: u64,
    /// Times the broker was silent for two heartbeat intervals, so the connection was
    /// considered dead.
    pub heartbeats_missed: u64,
    /// Times the connection was lost without the application asking.
    pub disconnects: u64,
    /// Times it was reconnected and restored.
    pub recoveries: u64,
    /// Acknowledgements and confirmed publishes that the application's own threads wrote to
    /// the socket (made outside the runtime's tasks while the connection's driver was idle;
    /// README, "Speed: where your loop runs") rather than handing them to the driver. They
    /// count in `acked`, `rejected`, `published` and `frames_sent` too.
    pub direct_writes: u64,
}

impl ConnectionStats {
    /// What happened between `earlier` and this snapshot (each counter's difference).
    pub fn since(&self, earlier: &ConnectionStats) -> ConnectionStats {
        let d = |now: u64, then: u64| now.saturating_sub(then);
        ConnectionStats {
            published: d(self.published, earlier.published),
            confirmed: d(self.confirmed, earlier.confirmed),
            nacked: d(self.nacked, earlier.nacked),
            returned: d(self.returned, earlier.returned),
            delivered: d(self.delivered, earlier.delivered),
            fetched: d(self.fetched, earlier.fetched),
            acked: d(self.acked, earlier.acked),
            rejected: d(self.rejected, earlier.rejected),
            bytes_received: d(self.bytes_received, earlier.bytes_received),
            bytes_sent: d(self.bytes_sent, earlier.bytes_sent),
            frames_received: d(self.frames_received, earlier.frames_received),
            frames_sent: d(self.frames_sent, earlier.frames_sent),
            heartbeats_sent: d(self.heartbeats_sent, earlier.heartbeats_sent),
            heartbeats_missed: d(self.heartbeats_missed, earlier.heartbeats_missed),
            disconnects: d(self.disconnects, earlier.disconnects),
            recoveries: d(self.recoveries, earlier.recoveries),
            direct_writes: d(self.direct_writes, earlier.direct_writes),
        }
    }
}

/// One counter.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`: a relaxed add, nothing orders on it.
    #[inline]
    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one.
    #[inline]
    pub(crate) fn incr(&self) {
        self.add(1);
    }

    /// Subtracts `n` (for a counter used as a gauge).
    #[inline]
    pub(crate) fn sub(&self, n: u64) {
        self.0.fetch_sub(n, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The live counters of one connection, shared by the driver and the handles.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub published: Counter,
    pub confirmed: Counter,
    pub nacked: Counter,
    pub returned: Counter,
    pub delivered: Counter,
    pub fetched: Counter,
    pub acked: Counter,
    pub rejected: Counter,
    pub bytes_received: Counter,
    pub bytes_sent: Counter,
    pub frames_received: Counter,
    pub frames_sent: Counter,
    pub heartbeats_sent: Counter,
    pub heartbeats_missed: Counter,
    pub disconnects: Counter,
    pub recoveries: Counter,
    pub direct_writes: Counter,
    /// Publishes in confirm mode not yet settled, kept by the channels' ledgers (a gauge).
    pub awaiting_confirms: std::sync::Arc<Counter>,
    /// Milliseconds the broker kept the connection blocked, up to the last unblock.
    pub blocked_millis: Counter,
}

impl Counters {
    /// Reads every counter.
    pub(crate) fn snapshot(&self) -> ConnectionStats {
        ConnectionStats {
            published: self.published.get(),
            confirmed: self.confirmed.get(),
            nacked: self.nacked.get(),
            returned: self.returned.get(),
            delivered: self.delivered.get(),
            fetched: self.fetched.get(),
            acked: self.acked.get(),
            rejected: self.rejected.get(),
            bytes_received: self.bytes_received.get(),
            bytes_sent: self.bytes_sent.get(),
            frames_received: self.frames_received.get(),
            frames_sent: self.frames_sent.get(),
            heartbeats_sent: self.heartbeats_sent.get(),
            heartbeats_missed: self.heartbeats_missed.get(),
            disconnects: self.disconnects.get(),
            recoveries: self.recoveries.get(),
            direct_writes: self.direct_writes.get(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_reads_what_was_added_and_since_subtracts() {
        let counters = Counters::default();
        counters.published.add(3);
        counters.bytes_sent.add(100);
        let first = counters.snapshot();
        counters.published.incr();
        counters.bytes_sent.add(20);
        let second = counters.snapshot();
        assert_eq!((second.published, second.bytes_sent), (4, 120));
        let delta = second.since(&first);
        assert_eq!((delta.published, delta.bytes_sent, delta.acked), (1, 20, 0));
    }
}
