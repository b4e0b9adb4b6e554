//! The connection's state shared between its handles and the driver, and the events it emits.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU16, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{broadcast, watch};

use super::delivery_queue::Budget;
use super::direct_writes::DirectWrites;
use super::stats::Counters;
use crate::config::BlockedPolicy;
use crate::error::Error;
use crate::telemetry::Server;
use crate::topology::{Topology, TopologyEntity};
use crate::wire::FieldTable;

/// Events a lagging events stream may miss before it skips ahead.
const EVENT_CAPACITY: usize = 256;

/// What both peers agreed on in `connection.tune`/`tune-ok`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tuning {
    /// Highest usable channel number.
    pub channel_max: u16,
    /// Largest frame, header and end octet included.
    pub frame_max: u32,
    /// Heartbeat interval; zero when heartbeats are off.
    pub heartbeat: Duration,
}

/// Where a connection is in its life, from [`Connection::status`](crate::Connection::status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnectionStatus {
    /// Connected and usable.
    Open,
    /// The connection was lost and warren is reconnecting and restoring it: calls and
    /// publishes made now wait for it (within their deadlines).
    Recovering,
    /// Closed for good: by the application, by the broker or a failure with recovery off, or
    /// because recovery gave up. [`Connection::closed`](crate::Connection::closed) says why.
    Closed,
}

impl ConnectionStatus {
    fn from_u8(value: u8) -> Self {
        match value {
            0 => Self::Open,
            1 => Self::Recovering,
            _ => Self::Closed,
        }
    }
}

/// Something that happened to a connection, from [`Connection::events`](crate::Connection::events).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ConnectionEvent {
    /// The broker stopped reading from the connection because of a resource alarm (memory or
    /// disk): publishes wait until it unblocks. Consumers on other connections keep working.
    Blocked {
        /// The broker's reason, e.g. `low on memory`.
        reason: String,
    },
    /// The broker lifted the block.
    Unblocked,
    /// The connection was lost without the application asking; recovery starts. Pending
    /// calls failed with [`Error::ConnectionLost`] and unconfirmed publishes with
    /// [`Error::PublishOutcomeUnknown`].
    Disconnected {
        /// Why it was lost.
        reason: Error,
    },
    /// Recovery is about to make an attempt, after `delay`.
    Recovering {
        /// The attempt's number, from 1.
        attempt: u32,
        /// Where it connects to (`host:port`).
        endpoint: String,
        /// How long it waits before connecting.
        delay: Duration,
    },
    /// A recovery attempt failed; another follows unless the policy's limits are reached.
    RecoveryAttemptFailed {
        /// The attempt's number, from 1.
        attempt: u32,
        /// Where it tried to connect (`host:port`).
        endpoint: String,
        /// What went wrong.
        error: Error,
    },
    /// The connection is back, with its channels, topology and consumers (but for those
    /// reported by [`ConnectionEvent::TopologyRecoveryFailed`]).
    Recovered {
        /// Where it is connected now (`host:port`).
        endpoint: String,
        /// Attempts it took.
        attempts: u32,
        /// Time from the loss to the end of recovery.
        took: Duration,
    },
    /// Recovery could not restore one entity; it went on with the rest.
    TopologyRecoveryFailed {
        /// What could not be restored.
        entity: TopologyEntity,
        /// The broker's answer (usually a channel error such as 404 or 406).
        error: Error,
    },
    /// A server-named queue was declared again on recovery and got a new name; bindings and
    /// consumers now use it.
    QueueRenamed {
        /// The name it had.
        old: String,
        /// The name it has now.
        new: String,
    },
    /// The connection's consumer buffers exceeded their budget, so it stopped reading from
    /// the socket; the consumer named holds the most. See
    /// [`ConnectionOptions::consumer_buffer_budget`](crate::ConnectionOptions::consumer_buffer_budget).
    ConsumerLagging {
        /// Its channel.
        channel: u16,
        /// Its tag.
        consumer_tag: String,
        /// Bytes of unread deliveries it holds beyond its prefetch.
        buffered_bytes: usize,
    },
    /// The connection is closed for good; the error says who closed it and why.
    Closed(Error),
}

/// Connection state shared by the handles and the driver.
#[derive(Debug)]
pub(crate) struct ConnectionShared {
    /// A [`ConnectionStatus`] as a number, for the hot paths; `status_watch` for waiting.
    status: AtomicU8,
    status_watch: watch::Sender<ConnectionStatus>,
    closed: Mutex<Option<Error>>,
    events: broadcast::Sender<ConnectionEvent>,
    /// Whether the broker blocked the connection, for the hot path; `blocked_reason` for
    /// waiting and for the reason.
    blocked: AtomicBool,
    blocked_reason: watch::Sender<Option<String>>,
    /// What publishes do while blocked.
    pub(crate) blocked_policy: BlockedPolicy,
    pub(crate) operation_timeout: Duration,
    frame_max: AtomicU32,
    channel_max: AtomicU16,
    heartbeat_secs: AtomicU32,
    server_properties: Mutex<FieldTable>,
    endpoint: Mutex<String>,
    topology: Mutex<Topology>,
    /// What the consumers of the connection may buffer beyond their prefetch.
    pub(crate) consumer_budget: Arc<Budget>,
    /// Host and port of the endpoint connected to, for spans.
    server: Mutex<Server>,
    /// When the current block started, if the broker blocked the connection.
    blocked_since: Mutex<Option<std::time::Instant>>,
    /// What the connection did, for `Connection::stats`.
    pub(crate) counters: Counters,
    /// The socket's write side, for acknowledgements written by the application's thread.
    pub(crate) direct: Arc<DirectWrites>,
}

impl ConnectionShared {
    pub(crate) fn new(
        operation_timeout: Duration,
        blocked_policy: BlockedPolicy,
        consumer_budget: usize,
        tuning: Tuning,
        server_properties: FieldTable,
        endpoint: String,
    ) -> Self {
        let shared = Self {
            status: AtomicU8::new(ConnectionStatus::Open as u8),
            status_watch: watch::Sender::new(ConnectionStatus::Open),
            closed: Mutex::new(None),
            events: broadcast::Sender::new(EVENT_CAPACITY),
            blocked: AtomicBool::new(false),
            blocked_reason: watch::Sender::new(None),
            blocked_policy,
            operation_timeout,
            frame_max: AtomicU32::new(0),
            channel_max: AtomicU16::new(0),
            heartbeat_secs: AtomicU32::new(0),
            server_properties: Mutex::new(FieldTable::new()),
            endpoint: Mutex::new(String::new()),
            topology: Mutex::new(Topology::default()),
            consumer_budget: Arc::new(Budget::new(consumer_budget)),
            counters: Counters::default(),
            direct: Arc::default(),
            server: Mutex::new(Server::default()),
            blocked_since: Mutex::new(None),
        };
        shared.set_connected(tuning, server_properties, endpoint);
        shared
    }

    /// Records what a (re)connection negotiated.
    pub(crate) fn set_connected(
        &self,
        tuning: Tuning,
        server_properties: FieldTable,
        endpoint: String,
    ) {
        self.frame_max.store(tuning.frame_max, Ordering::Release);
        self.channel_max
            .store(tuning.channel_max, Ordering::Release);
        let heartbeat = u32::try_from(tuning.heartbeat.as_secs()).unwrap_or(u32::MAX);
        self.heartbeat_secs.store(heartbeat, Ordering::Release);
        *lock(&self.server_properties) = server_properties;
        *lock(&self.endpoint) = endpoint;
    }

    pub(crate) fn status(&self) -> ConnectionStatus {
        ConnectionStatus::from_u8(self.status.load(Ordering::Acquire))
    }

    /// Whether the connection is closed for good.
    pub(crate) fn is_closed(&self) -> bool {
        self.status() == ConnectionStatus::Closed
    }

    /// Marks the connection as recovering (from open) or open again (from recovering).
    pub(crate) fn set_status(&self, status: ConnectionStatus) {
        if self.is_closed() {
            return;
        }
        self.status.store(status as u8, Ordering::Release);
        self.status_watch.send_replace(status);
    }

    /// How many times the connection was lost so far: the `disconnects` counter, which the
    /// driver adds to before it emits `Disconnected` and moves the status to recovering, so
    /// that whoever is woken by either (the event channel and the status watch order the two)
    /// sees the new count. A handle that saw one value and later a larger one knows that a
    /// loss came in between, even if the status went back to open before it looked.
    pub(crate) fn losses(&self) -> u64 {
        self.counters.disconnects.get()
    }

    /// Whether the broker has blocked the connection.
    pub(crate) fn is_blocked(&self) -> bool {
        self.blocked.load(Ordering::Acquire)
    }

    /// Records that the broker blocked the connection (`Some(reason)`) or unblocked it
    /// (`None`); returns whether that changed anything.
    pub(crate) fn set_blocked(&self, reason: Option<String>) -> bool {
        let blocked = reason.is_some();
        self.blocked_reason.send_replace(reason);
        self.note_blocked(blocked);
        self.blocked.swap(blocked, Ordering::AcqRel) != blocked
    }

    /// Why the broker blocked the connection, while it is blocked.
    pub(crate) fn blocked_reason(&self) -> Option<String> {
        self.blocked_reason.borrow().clone()
    }

    /// A receiver of the block's reason: `None` once unblocked.
    pub(crate) fn watch_blocked(&self) -> watch::Receiver<Option<String>> {
        self.blocked_reason.subscribe()
    }

    /// A receiver of status changes.
    pub(crate) fn watch_status(&self) -> watch::Receiver<ConnectionStatus> {
        self.status_watch.subscribe()
    }

    /// Records why the connection closed (the first reason wins) and tells everyone once.
    pub(crate) fn set_closed(&self, reason: Error) {
        let mut closed = lock(&self.closed);
        if closed.is_some() {
            return;
        }
        *closed = Some(reason.clone());
        self.status
            .store(ConnectionStatus::Closed as u8, Ordering::Release);
        drop(closed);
        self.emit(ConnectionEvent::Closed(reason));
        self.status_watch.send_replace(ConnectionStatus::Closed);
    }

    /// Why the connection closed, once it has.
    pub(crate) fn closed_reason(&self) -> Option<Error> {
        if !self.is_closed() {
            return None;
        }
        lock(&self.closed).clone()
    }

    pub(crate) fn emit(&self, event: ConnectionEvent) {
        // No subscriber is fine: events are for those who listen.
        let _ = self.events.send(event);
    }

    /// A receiver of the events from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<ConnectionEvent> {
        self.events.subscribe()
    }

    /// The negotiated frame_max.
    pub(crate) fn frame_max(&self) -> u32 {
        self.frame_max.load(Ordering::Acquire)
    }

    /// The negotiated channel_max.
    pub(crate) fn channel_max(&self) -> u16 {
        self.channel_max.load(Ordering::Acquire)
    }

    /// The negotiated heartbeat interval.
    pub(crate) fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.heartbeat_secs.load(Ordering::Acquire).into())
    }

    /// The broker's `connection.start` properties.
    pub(crate) fn server_properties(&self) -> FieldTable {
        lock(&self.server_properties).clone()
    }

    /// Where the connection is (or was last) connected, as `host:port`.
    pub(crate) fn endpoint(&self) -> String {
        lock(&self.endpoint).clone()
    }

    /// Records that the broker blocked (`true`) or unblocked the connection, for the blocked
    /// time metric; only through [`Self::set_blocked`], so that each change is timed once.
    fn note_blocked(&self, blocked: bool) {
        let mut since = lock(&self.blocked_since);
        match (blocked, since.take()) {
            (true, None) => *since = Some(std::time::Instant::now()),
            (true, Some(start)) => *since = Some(start),
            (false, Some(start)) => {
                let millis = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
                self.counters.blocked_millis.add(millis);
            }
            (false, None) => {}
        }
    }

    /// Milliseconds the connection has been blocked in all, the current block included.
    #[cfg_attr(not(feature = "opentelemetry"), allow(dead_code))]
    pub(crate) fn blocked_millis(&self) -> u64 {
        let current = lock(&self.blocked_since).map_or(0, |start| {
            u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
        });
        self.counters.blocked_millis.get() + current
    }

    /// Writes what this connection's application threads hold for the socket
    /// (`shared/direct_writes.rs`): the caller is about to wait.
    pub(crate) fn flush_direct_writes(&self) {
        self.direct.flush(&self.counters);
    }

    /// Publishes in confirm mode the broker has not settled yet, on all channels.
    #[cfg_attr(not(feature = "opentelemetry"), allow(dead_code))]
    pub(crate) fn awaiting_confirms(&self) -> u64 {
        self.counters.awaiting_confirms.get()
    }

    /// Records where the connection is connected (for spans).
    pub(crate) fn set_server(&self, server: Server) {
        *lock(&self.server) = server;
    }

    /// Where the connection is connected (for spans).
    pub(crate) fn server(&self) -> Server {
        lock(&self.server).clone()
    }

    pub(crate) fn topology(&self) -> MutexGuard<'_, Topology> {
        lock(&self.topology)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
