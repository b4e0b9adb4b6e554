//! The connection driver: one tokio task that owns the socket and all protocol state.
//!
//! Handles send [`Command`]s over a bounded queue (and, from `Drop` and `close`, an unbounded
//! one); the driver encodes them into its [`WriteQueue`], so that the frames of many
//! concurrent callers go out in few writes, and it routes every incoming frame: replies to
//! waiting callers, deliveries to consumers, confirms to publishers, closes and blocks to
//! everyone concerned.
//!
//! The driver is a hand-written poll loop rather than a `select!`: reading, writing, taking
//! commands and keeping heartbeats progress independently, so a broker that stops reading
//! (a resource alarm) never stops this side from reading, and consumers that are not read
//! never stop the others (up to the consumer buffer budget).
//!
//! The driver outlives its socket: when the connection is lost without the application
//! asking, it reconnects and restores the channels, topology and consumers under the same
//! handles (`recovery.rs`), while the commands the handles send meanwhile wait in the queue.

mod channels;
mod dispatch;
mod handshake;
mod reconnect;
mod recovery;
mod sweep;
mod transport;
mod write_queue;

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWrite;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, Sleep};
use tokio_util::io::poll_read_buf;
use tracing::{Instrument, debug, trace, warn};

use self::channels::{ChannelState, ChannelTable, PendingRpc, Phase, Waiter};
use self::handshake::Opened;
use self::recovery::Recovery;
use self::sweep::Sweep;
use self::transport::Transport;
use self::write_queue::WriteQueue;
use crate::config::{ConnectionOptions, Target};
use crate::error::{Close, Error, Initiator, Result};
use crate::frame::{self, FrameDecoder};
use crate::protocol::{ChannelClose, ChannelOpen, ConnectionClose, Method, ReplyCode};
use crate::shared::acks::Acknowledgement;
use crate::shared::command::{ChannelKey, Command, OnReply, Publish, Rpc};
use crate::shared::connection::{ConnectionEvent, ConnectionShared, ConnectionStatus, Tuning};
use crate::shared::ledger::{ConfirmLedger, Confirmation, Mandatory, SettledConfirms, Unconfirmed};
use crate::shared::stats::Counter;
use crate::wire::{AmqpMethod, ShortString};

/// Commands the bounded queue to the driver holds before callers wait.
const COMMAND_QUEUE: usize = 1024;
/// Frames decoded per turn of the loop before the driver looks at commands and writes.
const READ_BATCH: usize = 256;
/// Commands taken per turn of the loop.
const COMMAND_BATCH: usize = 256;
/// Stop taking commands while this many bytes wait to be written: publishers then wait, which
/// is how a slow or blocked broker pushes back.
const WRITE_HIGH_WATER: usize = 1 << 20;
/// Read buffer growth step.
const READ_CHUNK: usize = 64 * 1024;
/// Turns of the loop before the driver yields to other tasks.
const TURNS_BEFORE_YIELD: usize = 32;
/// How long `close` waits for `connection.close-ok` from a broker that blocked the connection.
const BLOCKED_CLOSE_GRACE: Duration = Duration::from_secs(1);
/// How long to wait for `connection.close-ok` after closing because the peer misbehaved.
const PROTOCOL_CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Reading paused because the consumer buffers are over their budget.
struct Stall {
    /// When it started; the laggard is cancelled once it lasts the stall timeout.
    deadline: Pin<Box<Sleep>>,
}

/// What the driver is doing.
enum State {
    Open,
    /// A `connection.close` is under way: ours (waiting for close-ok) or the server's
    /// (flushing our close-ok), with recovery off. Then the driver stops.
    Closing {
        awaiting_close_ok: bool,
        reason: Error,
        reply: Option<oneshot::Sender<Result<()>>>,
        deadline: Pin<Box<Sleep>>,
    },
    /// The connection was lost: reconnecting, or restoring channels and topology on a new one.
    Recovering(Box<Recovery>),
    Closed,
}

/// Heartbeat bookkeeping.
struct Heartbeat {
    interval: Duration,
    timer: Pin<Box<Sleep>>,
    last_read: Instant,
    last_write: Instant,
}

impl Heartbeat {
    fn new(interval: Duration) -> Option<Self> {
        let now = Instant::now();
        (!interval.is_zero()).then(|| Self {
            interval,
            timer: Box::pin(tokio::time::sleep_until(now + interval / 2)),
            last_read: now,
            last_write: now,
        })
    }
}

pub(crate) struct Driver {
    /// The socket; `None` while recovery reconnects.
    transport: Option<Transport>,
    read_buf: BytesMut,
    decoder: FrameDecoder,
    writes: WriteQueue,
    commands: mpsc::Receiver<Command>,
    control: mpsc::UnboundedReceiver<Command>,
    /// Commands from the control queue held while the connection recovers, taken (in order,
    /// before the control queue) once it is open again.
    held: VecDeque<Command>,
    /// Commands taken from the ordered queue in one batch and not carried out yet (the write
    /// queue reached its high-water mark, or the connection was lost, in the middle), the
    /// next one last.
    inbox: Vec<Command>,
    channels: ChannelTable,
    /// Requests on channel 0 (connection.update-secret) awaiting replies.
    connection_rpcs: VecDeque<PendingRpc>,
    state: State,
    shared: Arc<ConnectionShared>,
    /// What recovery reconnects with (the latest secret included).
    options: ConnectionOptions,
    /// Where the connection is (or was, while recovering).
    target: Target,
    tuning: Tuning,
    heartbeat: Option<Heartbeat>,
    stall: Option<Stall>,
    /// Set when nothing more will be read: the peer broke the protocol (the stream is out of
    /// step) or closed its side while a close was under way.
    read_closed: bool,
    /// Consumers that were handed deliveries during the current turn and wait to be woken.
    /// Waking each once when the turn ends ([`Driver::hand_out`]), rather than on every
    /// delivery, lets a consumer take a whole batch per wake-up instead of racing the driver
    /// one delivery at a time (a thread wake-up each, when the consumer runs on another
    /// thread).
    consumer_wakes: Vec<Waker>,
    /// Confirmations settled during the current turn, handed to their publishers when it ends
    /// (see [`SettledConfirms`]).
    settled: SettledConfirms,
    /// Publishes that threads wrote to the socket themselves, taken from `shared.direct` at
    /// the start of a poll to be entered in the ledgers (kept for its storage).
    direct_publishes: Vec<Publish>,
    /// Bounds how long frames held by those threads wait (see [`Sweep`]).
    sweep: Sweep,
    /// The connection's span (`telemetry::connection_span`), around the driver's task.
    span: tracing::Span,
}

/// What the handles of a new connection hold: the queues to its driver and the shared state.
pub(crate) struct Started {
    pub commands: mpsc::Sender<Command>,
    pub control: mpsc::UnboundedSender<Command>,
    pub shared: Arc<ConnectionShared>,
}

/// Connects with `options` (TCP, TLS, the AMQP handshake, all within the connection timeout)
/// and spawns the connection's driver on the current tokio runtime.
pub(crate) async fn start(options: ConnectionOptions) -> Result<Started> {
    handshake::check_mechanisms(&options)?;
    options.client_properties.check_sendable()?;
    let (opened, target) = reconnect::connect_first(&options).await?;
    Ok(spawn(opened, target, options))
}

/// [`start`] over an in-memory stream whose other end plays the broker (the `connection` fuzz
/// target's hook): the handshake within the connection timeout, then the driver, which does
/// not recover (there is nothing to reconnect to).
#[cfg(feature = "fuzzing")]
pub(crate) async fn start_in_memory(
    stream: tokio::io::DuplexStream,
    options: ConnectionOptions,
) -> Result<Started> {
    handshake::check_mechanisms(&options)?;
    options.client_properties.check_sendable()?;
    let deadline = options.connection_timeout;
    let opened = tokio::time::timeout(
        deadline,
        handshake::open(Transport::Memory(stream), &options),
    )
    .await
    .map_err(|_| Error::Timeout {
        operation: "connect",
        after: deadline,
    })??;
    let target = Target {
        endpoint: crate::config::Endpoint::new("in-memory", 0),
        address: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    let options = options.recovery(crate::config::RecoveryPolicy::disabled());
    Ok(spawn(opened, target, options))
}

/// Spawns the driver of a connection that completed its handshake.
fn spawn(opened: Opened, target: Target, options: ConnectionOptions) -> Started {
    let (commands, command_receiver) = mpsc::channel(COMMAND_QUEUE);
    let (control, control_receiver) = mpsc::unbounded_channel();
    let shared = Arc::new(ConnectionShared::new(
        options.operation_timeout,
        options.blocked_policy,
        options.consumer_buffer_budget,
        opened.tuning,
        opened.server_properties.clone(),
        target.describe(),
    ));
    let span =
        crate::telemetry::connection_span(options.connection_name.as_deref(), &options.vhost);
    crate::telemetry::record_server(&span, &target, opened.transport.local_port());
    span.in_scope(|| debug!(uri = %options, "connected"));
    shared.set_server(crate::telemetry::Server::of(&target));
    #[cfg(feature = "opentelemetry")]
    crate::telemetry::otel::register(&shared);
    let driver = Driver::new(
        opened,
        target,
        command_receiver,
        control_receiver,
        shared.clone(),
        options,
        span.clone(),
    );
    tokio::spawn(driver.run().instrument(span));
    Started {
        commands,
        control,
        shared,
    }
}

impl Driver {
    fn new(
        opened: Opened,
        target: Target,
        commands: mpsc::Receiver<Command>,
        control: mpsc::UnboundedReceiver<Command>,
        shared: Arc<ConnectionShared>,
        options: ConnectionOptions,
        span: tracing::Span,
    ) -> Self {
        Self {
            transport: Some(opened.transport.share_writes(&shared.direct)),
            read_buf: opened.read_buf,
            decoder: FrameDecoder::new(opened.tuning.frame_max),
            writes: WriteQueue::default(),
            commands,
            control,
            held: VecDeque::new(),
            inbox: Vec::new(),
            channels: ChannelTable::new(opened.tuning.channel_max, span.clone()),
            connection_rpcs: VecDeque::new(),
            state: State::Open,
            shared,
            options,
            target,
            tuning: opened.tuning,
            heartbeat: Heartbeat::new(opened.tuning.heartbeat),
            stall: None,
            read_closed: false,
            consumer_wakes: Vec::new(),
            settled: SettledConfirms::default(),
            direct_publishes: Vec::new(),
            sweep: Sweep::default(),
            span,
        }
    }

    /// Installs a new connection's socket and negotiated limits (on recovery).
    fn install(&mut self, opened: Opened, target: Target) {
        crate::telemetry::record_server(&self.span, &target, opened.transport.local_port());
        self.target = target;
        self.transport = Some(opened.transport.share_writes(&self.shared.direct));
        self.read_buf = opened.read_buf;
        self.decoder = FrameDecoder::new(opened.tuning.frame_max);
        self.writes.clear();
        self.tuning = opened.tuning;
        self.heartbeat = Heartbeat::new(opened.tuning.heartbeat);
        self.read_closed = false;
        self.channels.set_channel_max(opened.tuning.channel_max);
    }

    /// Runs until the connection is closed for good, by either side or by failure.
    pub(crate) async fn run(mut self) {
        poll_fn(|cx| self.poll(cx)).await;
        debug!("connection driver stopped");
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.shares_writes() {
            self.take_direct_writes();
        }
        for _ in 0..TURNS_BEFORE_YIELD {
            if matches!(self.state, State::Closed) {
                return Poll::Ready(());
            }
            let again = match self.turn(cx) {
                Ok(again) => again,
                Err(error) => {
                    self.fail(error);
                    true
                }
            };
            if !again && self.is_idle() {
                self.shared.direct.end_turn(cx.waker());
            }
            self.hand_out();
            if !again {
                return Poll::Pending;
            }
        }
        // Busy for a while: let other tasks (consumers, publishers) run, then continue.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Whether threads outside the runtime's tasks may write to this connection's socket
    /// themselves (`shared/direct_writes.rs`): plain TCP on a multi-thread runtime.
    fn shares_writes(&self) -> bool {
        matches!(self.transport, Some(Transport::SharedTcp(_)))
    }

    /// Stops the threads that write to the socket themselves, at the start of a poll: what
    /// they held goes out first, and their publishes enter the ledgers before any
    /// confirmation is read.
    fn take_direct_writes(&mut self) {
        let mut publishes = std::mem::take(&mut self.direct_publishes);
        let start = self
            .shared
            .direct
            .begin_turn(self.writes.buffer(), &mut publishes);
        for publish in publishes.drain(..) {
            self.record_direct_publish(publish);
        }
        self.direct_publishes = publishes;
        if start.used {
            self.sweep.arm();
        }
    }

    /// Whether the driver has nothing to write and nothing taken or held to carry out, on an
    /// open connection whose socket it shares: a thread may then write to the socket itself
    /// without overtaking anything of the driver's.
    fn is_idle(&self) -> bool {
        matches!(self.state, State::Open)
            && self.shares_writes()
            && self.writes.is_empty()
            && self.inbox.is_empty()
            && self.held.is_empty()
    }

    /// One turn of the loop. Returns whether to turn again at once: whether some source stopped
    /// short of having nothing to do (a batch limit, the consumer budget freed, a close or a
    /// recovery step under way), and so has not registered the waker.
    ///
    /// When it returns `false`, every source has been polled until it returned `Pending`, so a
    /// wake-up will come when any has something to do; turning again would only poll each once
    /// more to hear `Pending` again (for a request and its reply, half of the driver's work).
    fn turn(&mut self, cx: &mut Context<'_>) -> Result<bool> {
        if self.transport.is_none() {
            // Recovering, between sockets: only reconnecting and a close can make progress.
            let mut again = self.poll_control_while_recovering(cx);
            again |= self.poll_reconnect(cx);
            return Ok(again);
        }
        let mut again = self.poll_stall(cx);
        again |= self.poll_read(cx)?;
        if self.transport.is_none() {
            // The broker closed the connection and recovery started.
            return Ok(true);
        }
        let stalled_after_read = self.stall.is_some();
        again |= self.poll_commands(cx);
        let commands_held = self.writes.len() >= WRITE_HIGH_WATER;
        self.poll_heartbeat(cx)?;
        if self.sweep.poll_expired(cx) {
            self.shared.direct.disarm_sweep();
        }
        self.poll_write(cx)?;
        // Commands were left queued for the writes to drain, and they have: nothing else
        // would wake the driver to take them.
        again |= commands_held && self.writes.len() < WRITE_HIGH_WATER;
        again |= self.poll_closing(cx);
        again |= self.poll_restore(cx);
        // Reading paused for the consumer budget, and a command (a cancel, a channel close)
        // has since released it: nothing will wake the driver to read on.
        again |= stalled_after_read && self.stall.is_none();
        Ok(again)
    }

    // ===== reading =====

    /// Reads and dispatches frames, unless the consumer budget has stalled reading. The
    /// consumers handed deliveries and the publishes confirmed are told when the turn ends
    /// ([`Driver::hand_out`]).
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Result<bool> {
        let mut frames = 0;
        let result = self.read_batch(cx, &mut frames);
        // Counted once per batch rather than per frame.
        self.shared.counters.frames_received.add(frames);
        result
    }

    /// Ends a turn: hands the confirmations it settled to their publishers and wakes the
    /// consumers it handed deliveries. Last, after the driver has said whether it is idle, so
    /// that a thread outside the runtime's tasks woken here writes its next acknowledgement or
    /// publish to the socket itself (`shared/direct_writes.rs`) instead of queueing it behind a
    /// turn that is over (and waking the driver for it).
    fn hand_out(&mut self) {
        self.settled.send();
        self.wake_consumers();
    }

    fn wake_consumers(&mut self) {
        for waker in self.consumer_wakes.drain(..) {
            waker.wake();
        }
    }

    /// Reads and dispatches up to [`READ_BATCH`] frames. Returns whether it stopped before the
    /// socket returned `Pending`: the batch is full, the consumer budget was exceeded, or
    /// reading ended; reading then goes on in the next turn, or once the consumers catch up.
    /// Counts the frames it dispatched in `frames`.
    fn read_batch(&mut self, cx: &mut Context<'_>, frames: &mut u64) -> Result<bool> {
        while self.stall.is_none() && !self.read_closed && !matches!(self.state, State::Closed) {
            if let Some(frame) = self.decoder.decode(&mut self.read_buf)? {
                if self.channels.traced() {
                    self.dispatch_in_span(frame)?;
                } else {
                    self.dispatch(frame)?;
                }
                *frames += 1;
                if *frames == READ_BATCH as u64 || self.transport.is_none() {
                    return Ok(true);
                }
                continue;
            }
            if self.read_buf.capacity() - self.read_buf.len() < READ_CHUNK / 4 {
                self.read_buf.reserve(READ_CHUNK);
            }
            let Some(transport) = self.transport.as_mut() else {
                return Ok(true);
            };
            let read = poll_read_buf(Pin::new(transport), cx, &mut self.read_buf);
            if matches!(read, Poll::Ready(Err(_) | Ok(0)))
                && matches!(self.state, State::Closing { .. })
            {
                // The peer is done while a close is under way: nothing more to read, but our
                // close (or close-ok) may still be on its way out.
                self.read_closed = true;
                return Ok(true);
            }
            match read {
                Poll::Pending => return Ok(false),
                Poll::Ready(Err(e)) => return Err(self.classify_error(e)),
                Poll::Ready(Ok(0)) => {
                    return Err(Error::io(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the broker closed the TCP connection",
                    )));
                }
                Poll::Ready(Ok(read)) => {
                    self.shared.counters.bytes_received.add(read as u64);
                    if let Some(heartbeat) = &mut self.heartbeat {
                        heartbeat.last_read = Instant::now();
                    }
                }
            }
        }
        // Stopped without the socket's waker: by a stall or an end that this batch caused (a
        // stall found on entry already has poll_stall's waker).
        Ok(*frames > 0)
    }

    fn classify_error(&self, error: std::io::Error) -> Error {
        match &self.transport {
            Some(transport) => transport.classify_error(error),
            None => Error::io(error),
        }
    }

    // ===== consumer budget =====

    /// Stops reading: the consumer buffers hold more than their budget. Reports the consumer
    /// holding the most.
    pub(super) fn start_stall(&mut self) {
        if self.stall.is_some() {
            return;
        }
        let budget = &self.shared.consumer_budget;
        debug!(
            used = budget.used(),
            limit = budget.limit(),
            "consumer buffers over budget; pausing reads"
        );
        if let Some((channel, tag, bytes)) = self.largest_consumer() {
            warn!(
                channel,
                consumer = %tag,
                bytes,
                "a consumer is not read fast enough; the connection stops reading until it catches up"
            );
            self.shared.emit(ConnectionEvent::ConsumerLagging {
                channel,
                consumer_tag: tag.to_string(),
                buffered_bytes: bytes,
            });
        }
        self.stall = Some(Stall {
            deadline: Box::pin(tokio::time::sleep(self.options.consumer_stall_timeout)),
        });
    }

    /// The consumer holding the most bytes beyond its prefetch.
    fn largest_consumer(&mut self) -> Option<(u16, ShortString, usize)> {
        let mut largest: Option<(u16, ShortString, usize)> = None;
        for state in self.channels.iter_mut() {
            for (tag, slot) in &state.consumers {
                let bytes = slot.events.charged();
                if bytes > 0 && largest.as_ref().is_none_or(|(_, _, most)| bytes > *most) {
                    largest = Some((state.shared.id, tag.clone(), bytes));
                }
            }
        }
        largest
    }

    /// Resumes reading once the consumers have taken enough; cancels the largest consumer if
    /// the stall lasts the stall timeout. Returns whether reading resumed.
    fn poll_stall(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(stall) = &mut self.stall else {
            return false;
        };
        if self.shared.consumer_budget.poll_resume(cx).is_ready() {
            self.end_stall();
            return true;
        }
        if stall.deadline.as_mut().poll(cx).is_pending() {
            return false;
        }
        match self.largest_consumer() {
            Some((channel, tag, bytes)) => self.cancel_lagging(channel, tag, bytes),
            None => {
                self.end_stall();
                return true;
            }
        }
        if !self.shared.consumer_budget.is_exceeded() {
            self.end_stall();
            return true;
        }
        // Still over budget (another consumer lags too): give it the timeout as well.
        if let Some(stall) = &mut self.stall {
            stall.deadline = Box::pin(tokio::time::sleep(self.options.consumer_stall_timeout));
        }
        true
    }

    fn end_stall(&mut self) {
        self.stall = None;
        if let Some(heartbeat) = &mut self.heartbeat {
            // Reading was paused on purpose; the broker was not silent.
            heartbeat.last_read = Instant::now();
        }
    }

    /// Cancels a consumer that held the most of an exceeded budget for the stall timeout: its
    /// stream keeps what it holds and then ends with [`Error::ConsumerLagged`]; it no longer
    /// counts against the budget.
    fn cancel_lagging(&mut self, channel: u16, tag: ShortString, bytes: usize) {
        warn!(channel, consumer = %tag, bytes, "cancelling a consumer that is not read");
        let Some(state) = self.channels.get_mut(channel) else {
            return;
        };
        let Some(slot) = state.consumers.get(&tag) else {
            return;
        };
        slot.shared.set_end(Error::ConsumerLagged {
            consumer_tag: tag.to_string(),
            buffered_bytes: bytes,
        });
        slot.events.exempt();
        if !state.is_open() {
            return;
        }
        let cancel: Method = crate::protocol::BasicCancel {
            consumer_tag: tag,
            no_wait: false,
        }
        .into();
        if self.write_method(channel, &cancel).is_ok()
            && let Some(state) = self.channels.get_mut(channel)
        {
            state.rpcs.push_back(PendingRpc {
                request: cancel,
                replies: &[crate::protocol::BasicCancelOk::ID],
                on_reply: OnReply::Nothing,
                waiter: Waiter::Nobody,
            });
        }
    }

    // ===== commands =====

    /// Takes commands while the write queue has room (none while recovery restores the
    /// connection: they wait for it).
    ///
    /// Commands come off the ordered queue in batches (`recv_many`): taking them one at a
    /// time gives each its slot back in the queue's semaphore separately, a lock that the
    /// handles' threads take too, once per publish or acknowledgement.
    ///
    /// Returns whether it stopped before the queues returned `Pending` with commands taken:
    /// the batch is full, or the write queue reached its high-water mark (the driver then goes
    /// on once the writes drain, or is woken by the socket when they cannot).
    fn poll_commands(&mut self, cx: &mut Context<'_>) -> bool {
        if matches!(self.state, State::Recovering(_)) {
            return self.poll_control_while_recovering(cx);
        }
        // Commands from `Drop` and `close` first; the control queue is looked at once per
        // call, not once per command (a poll of an empty queue registers the waker again).
        let mut progress = false;
        let mut control_left = true;
        for _ in 0..COMMAND_BATCH {
            let control = match self.held.pop_front() {
                Some(command) => Poll::Ready(Some(command)),
                None => self.control.poll_recv(cx),
            };
            let Poll::Ready(Some(command)) = control else {
                control_left = false;
                break;
            };
            // A command from `Drop` must not overtake what its owner queued before dropping
            // (a publish, then the channel dropped): take everything already in the ordered
            // queue first.
            while let Some(earlier) = self.inbox.pop() {
                self.command(earlier);
            }
            while let Ok(earlier) = self.commands.try_recv() {
                self.command(earlier);
            }
            progress = true;
            self.command(command);
        }
        for _ in 0..COMMAND_BATCH {
            if self.writes.len() >= WRITE_HIGH_WATER {
                return progress;
            }
            match self.next_ordered_command(cx) {
                Poll::Ready(Some(command)) => {
                    progress = true;
                    self.command(command);
                }
                Poll::Ready(None) => {
                    // Every handle is gone: nobody can use the connection any more.
                    if matches!(self.state, State::Open) {
                        debug!("all handles dropped; closing the connection");
                        self.close_connection(200, "connection dropped".into(), None);
                        progress = true;
                    }
                    return progress;
                }
                Poll::Pending => return control_left,
            }
        }
        true
    }

    /// The next command of the ordered queue, from the batch taken last or a new batch.
    fn next_ordered_command(&mut self, cx: &mut Context<'_>) -> Poll<Option<Command>> {
        if self.inbox.is_empty() {
            if self
                .commands
                .poll_recv_many(cx, &mut self.inbox, COMMAND_BATCH)
                .is_pending()
            {
                return Poll::Pending;
            }
            // Taken from the end.
            self.inbox.reverse();
        }
        Poll::Ready(self.inbox.pop())
    }

    /// While recovering, takes only what comes from `Drop` and `close`: a close ends recovery
    /// at once; the rest waits until the connection is back.
    fn poll_control_while_recovering(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        while let Poll::Ready(Some(command)) = self.control.poll_recv(cx) {
            progress = true;
            match command {
                Command::CloseConnection { code, text, reply } => {
                    self.close_connection(code, text, reply);
                    return true;
                }
                other => self.held.push_back(other),
            }
        }
        progress
    }

    fn command(&mut self, command: Command) {
        if let State::Closing { reason, .. } = &self.state {
            let reason = reason.clone();
            reject_command(command, &reason);
            return;
        }
        match command {
            Command::OpenChannel { reply } => self.open_channel(reply),
            Command::Rpc(rpc) => self.rpc(*rpc),
            Command::Send { channel, method } => self.send(channel, *method),
            Command::Publish(publish) => self.publish(publish),
            Command::Acks { channel, batch } => self.acknowledge(channel, batch.take()),
            Command::WaitForConfirms { channel, reply } => {
                let Some(state) = self.channels.get_open(channel) else {
                    self.reject_for_gone_channel(channel, reply);
                    return;
                };
                match &mut state.ledger {
                    Some(ledger) => ledger.wait(reply, &mut self.settled),
                    None => {
                        let _ = reply.send(Err(Error::InvalidState(
                            "wait_for_confirms needs a channel in confirm mode; call confirm_select first",
                        )));
                    }
                }
            }
            Command::CloseChannel { channel, reply } => self.close_channel(channel, reply),
            Command::ForgetConsumer {
                channel,
                consumer_tag,
            } => self.forget_consumer(channel, consumer_tag),
            Command::CloseConnection { code, text, reply } => {
                self.close_connection(code, text, reply)
            }
        }
    }

    fn open_channel(
        &mut self,
        reply: oneshot::Sender<Result<Arc<crate::shared::channel::ChannelShared>>>,
    ) {
        let Some(id) = self.channels.free_id() else {
            let _ = reply.send(Err(Error::ChannelsExhausted {
                channel_max: self.tuning.channel_max,
            }));
            return;
        };
        if let Err(e) = self.write_method(id, &ChannelOpen {}.into()) {
            let _ = reply.send(Err(e));
            return;
        }
        trace!(channel = id, "opening channel");
        self.channels.open(id, self.options.max_body_size, reply);
    }

    fn rpc(&mut self, rpc: Rpc) {
        let Rpc {
            channel,
            method,
            replies,
            on_reply,
            reply,
        } = rpc;
        if channel == ChannelKey::CONNECTION {
            if let Err(e) = self.write_method(0, &method) {
                let _ = reply.send(Err(e));
                return;
            }
            self.connection_rpcs
                .push_back(PendingRpc::caller(method, replies, on_reply, reply));
            return;
        }
        let open = self.channels.get_open(channel).is_some();
        if !open {
            self.reject_for_gone_channel(channel, reply);
            return;
        }
        let channel = channel.id;
        if let Err(e) = self.write_method(channel, &method) {
            let _ = reply.send(Err(e));
            return;
        }
        let Some(state) = self.channels.get_mut(channel) else {
            return;
        };
        start_confirms_if_selected(state, &method, &self.shared.counters.awaiting_confirms);
        state
            .rpcs
            .push_back(PendingRpc::caller(method, replies, on_reply, reply));
    }

    /// Writes acknowledgements of `channel`'s deliveries, with the broker's delivery tags:
    /// those the application saw may differ after a recovery, and acknowledgements of
    /// deliveries from before it are not sent at all.
    fn acknowledge(
        &mut self,
        channel: ChannelKey,
        acks: impl IntoIterator<Item = Acknowledgement>,
    ) {
        let Some(state) = self.channels.get_open(channel) else {
            return;
        };
        let counters = &self.shared.counters;
        for ack in acks {
            let Some(wire_tag) = ack.wire_tag(channel.id, state.tag_offset) else {
                continue;
            };
            trace!(channel = channel.id, ?ack, "sending");
            ack.encode_frame(self.writes.buffer(), channel.id, wire_tag);
            ack.count(counters);
        }
    }

    /// Sends an asynchronous method, or a synchronous one with `no_wait` set (whose success
    /// the driver records at once: no reply will come). Acknowledgements go the way of
    /// [`Driver::acknowledge`].
    fn send(&mut self, channel: ChannelKey, method: Method) {
        if let Some(ack) = Acknowledgement::of(&method) {
            return self.acknowledge(channel, [ack]);
        }
        if self.channels.get_open(channel).is_none() {
            return;
        }
        let channel = channel.id;
        if let Err(e) = self.write_method(channel, &method) {
            warn!(%e, method = method.name(), "dropping a method that does not fit in a frame");
            return;
        }
        if method.no_wait() {
            if let Some(state) = self.channels.get_mut(channel) {
                start_confirms_if_selected(state, &method, &self.shared.counters.awaiting_confirms);
            }
            self.after_reply(channel, &method, None, OnReply::Nothing);
        } else if matches!(method, Method::BasicRecoverAsync(_)) {
            // No reply will come; it takes effect as it is written.
            self.after_reply(channel, &method, None, OnReply::Nothing);
        }
    }

    fn publish(&mut self, publish: Publish) {
        let Publish {
            channel,
            frames,
            body,
            reply,
            mandatory,
            permit,
        } = publish;
        if !self.record_publish(channel, reply, mandatory, permit) {
            return;
        }
        self.writes.buffer().extend_from_slice(&frames);
        let body_frames = self
            .writes
            .push_body(channel.id, &body, self.tuning.frame_max);
        let counters = &self.shared.counters;
        counters.published.incr();
        // The method and header frames, then the body's.
        counters.frames_sent.add(2 + body_frames);
    }

    /// Enters a publish that a thread wrote to the socket itself in its channel's ledger.
    fn record_direct_publish(&mut self, publish: Publish) {
        let Publish {
            channel,
            reply,
            mandatory,
            permit,
            ..
        } = publish;
        self.record_publish(channel, reply, mandatory, permit);
    }

    /// Enters a publish in its channel's confirm ledger (or answers that no confirmation was
    /// asked for); its frames are written separately. Returns `false`, having answered the
    /// publisher, if the channel is gone.
    #[inline]
    fn record_publish(
        &mut self,
        channel: ChannelKey,
        reply: Option<oneshot::Sender<Result<Confirmation>>>,
        mandatory: Option<Box<Mandatory>>,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> bool {
        let Some(state) = self.channels.get_open(channel) else {
            if let Some(reply) = reply {
                self.reject_for_gone_channel(channel, reply);
            }
            return false;
        };
        match &mut state.ledger {
            Some(ledger) => {
                ledger.push(Unconfirmed {
                    reply,
                    mandatory,
                    returned: None,
                    permit,
                });
            }
            None => {
                if let Some(reply) = reply {
                    let _ = reply.send(Ok(Confirmation::NotRequested));
                }
            }
        }
        true
    }

    fn close_channel(&mut self, key: ChannelKey, reply: Option<oneshot::Sender<Result<()>>>) {
        let channel = key.id;
        let Some(state) = self.channels.get_key(key) else {
            // Closed already (and its number perhaps given to a new channel).
            if let Some(reply) = reply {
                let _ = reply.send(Ok(()));
            }
            return;
        };
        match &mut state.phase {
            Phase::Closing(replies) => replies.extend(reply),
            Phase::Opening(_) | Phase::Open => {
                state.phase = Phase::Closing(reply.into_iter().collect());
                state.shared.set_closed(Error::ChannelClosed {
                    channel,
                    close: Close::normal(Initiator::Client),
                });
                self.write_channel_close(channel);
            }
        }
    }

    fn write_channel_close(&mut self, channel: u16) {
        let close = ChannelClose {
            reply_code: ReplyCode::REPLY_SUCCESS.0,
            reply_text: ShortString::from_static("closed by the application"),
            class_id: 0,
            method_id: 0,
        };
        if let Err(e) = self.write_method(channel, &close.into()) {
            warn!(%e, channel, "could not send channel.close");
        }
    }

    fn forget_consumer(&mut self, key: ChannelKey, tag: ShortString) {
        let channel = key.id;
        let Some(state) = self.channels.get_key(key) else {
            return;
        };
        let Some(slot) = state.consumers.remove(&tag) else {
            return;
        };
        state.forgotten.insert(tag.clone(), slot.no_ack);
        if state.is_open() {
            let cancel = crate::protocol::BasicCancel {
                consumer_tag: tag,
                no_wait: false,
            };
            let method: Method = cancel.into();
            if self.write_method(channel, &method).is_ok()
                && let Some(state) = self.channels.get_mut(channel)
            {
                state.rpcs.push_back(PendingRpc {
                    request: method,
                    replies: &[crate::protocol::BasicCancelOk::ID],
                    on_reply: OnReply::Nothing,
                    waiter: Waiter::Nobody,
                });
            }
        }
    }

    /// Starts closing the connection from this side (ends recovery, if it is under way).
    fn close_connection(
        &mut self,
        code: u16,
        text: String,
        reply: Option<oneshot::Sender<Result<()>>>,
    ) {
        if !matches!(self.state, State::Open | State::Recovering(_)) {
            if let Some(reply) = reply {
                let _ = reply.send(Ok(()));
            }
            return;
        }
        let reason = Error::ConnectionClosed(Close {
            code: ReplyCode(code),
            text: text.clone(),
            method: None,
            initiator: Initiator::Client,
        });
        if self.transport.is_none() {
            // Recovering between sockets: there is nothing to tell the broker.
            debug!("closed by the application while reconnecting");
            self.fail_everything(&reason);
            self.state = State::Closed;
            if let Some(reply) = reply {
                let _ = reply.send(Ok(()));
            }
            return;
        }
        let close = ConnectionClose {
            reply_code: code,
            reply_text: ShortString::try_from(text).unwrap_or_default(),
            class_id: 0,
            method_id: 0,
        };
        let _ = self.write_method(0, &close.into());
        // A blocked broker reads nothing, so it will not see the close before it unblocks:
        // give it a moment, not the whole operation timeout.
        let wait = match self.shared.is_blocked() {
            true => self.shared.operation_timeout.min(BLOCKED_CLOSE_GRACE),
            false => self.shared.operation_timeout,
        };
        self.fail_everything(&reason);
        self.state = State::Closing {
            awaiting_close_ok: true,
            reason,
            reply,
            deadline: Box::pin(tokio::time::sleep(wait)),
        };
    }

    // ===== writing =====

    /// Encodes `method` into the write queue.
    pub(super) fn write_method(&mut self, channel: u16, method: &Method) -> Result<()> {
        trace!(channel, method = method.name(), "sending");
        frame::encode_method_frame(self.writes.buffer(), channel, method, self.tuning.frame_max)
            .map_err(Error::from)?;
        self.shared.counters.frames_sent.incr();
        Ok(())
    }

    /// Writes what is queued until it is all written or the socket returns `Pending`.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Result<()> {
        if self.writes.is_empty() {
            return Ok(());
        }
        let Some(transport) = self.transport.as_mut() else {
            return Ok(());
        };
        let before = self.writes.len();
        let result = self.writes.poll_write(cx, transport);
        let written = before - self.writes.len();
        if written != 0 {
            self.shared.counters.bytes_sent.add(written as u64);
            if let Some(heartbeat) = &mut self.heartbeat {
                heartbeat.last_write = Instant::now();
            }
        }
        match result {
            Poll::Ready(Ok(())) => {
                // TLS buffers inside the stream; a TCP flush is a no-op.
                match Pin::new(transport).poll_flush(cx) {
                    Poll::Ready(Err(e)) => Err(self.classify_error(e)),
                    Poll::Ready(Ok(())) | Poll::Pending => Ok(()),
                }
            }
            Poll::Ready(Err(e)) => Err(self.classify_error(e)),
            Poll::Pending => Ok(()),
        }
    }

    /// Writes what can be written without waiting, before the socket is dropped (a close-ok
    /// the broker asked for).
    fn flush_before_dropping(&mut self) {
        let mut cx = Context::from_waker(Waker::noop());
        let _ = self.poll_write(&mut cx);
    }

    // ===== heartbeats =====

    fn poll_heartbeat(&mut self, cx: &mut Context<'_>) -> Result<()> {
        let stalled = self.stall.is_some();
        let Some(heartbeat) = &mut self.heartbeat else {
            return Ok(());
        };
        while heartbeat.timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            if stalled {
                // Reading is paused on purpose (for at most the stall timeout): silence is
                // ours, not the broker's.
                heartbeat.last_read = now;
            }
            if now.duration_since(heartbeat.last_read) >= heartbeat.interval * 2 {
                self.shared.counters.heartbeats_missed.incr();
                return Err(Error::HeartbeatTimeout {
                    interval: heartbeat.interval,
                });
            }
            let send_at = heartbeat.last_write + heartbeat.interval / 2;
            if now >= send_at && self.writes.is_empty() {
                trace!("sending heartbeat");
                frame::encode_heartbeat(self.writes.buffer());
                heartbeat.last_write = now;
                self.shared.counters.heartbeats_sent.incr();
                self.shared.counters.frames_sent.incr();
            }
            let next = (heartbeat.last_write + heartbeat.interval / 2)
                .min(heartbeat.last_read + heartbeat.interval * 2)
                .max(now + Duration::from_millis(10));
            heartbeat.timer.as_mut().reset(next);
        }
        Ok(())
    }

    // ===== closing =====

    /// Finishes a close once close-ok arrived (or was sent and flushed), or its deadline passed.
    fn poll_closing(&mut self, cx: &mut Context<'_>) -> bool {
        let State::Closing {
            awaiting_close_ok,
            deadline,
            ..
        } = &mut self.state
        else {
            return false;
        };
        let done = (!*awaiting_close_ok && self.writes.is_empty())
            || deadline.as_mut().poll(cx).is_ready();
        if done {
            self.finish_close(Ok(()));
        }
        done
    }

    /// Ends the connection: the close handshake is over (or abandoned).
    fn finish_close(&mut self, outcome: Result<()>) {
        if let State::Closing { reply, reason, .. } =
            std::mem::replace(&mut self.state, State::Closed)
        {
            if let Some(reply) = reply {
                let _ = reply.send(outcome);
            }
            self.shared.set_closed(reason);
        }
        if let Some(transport) = self.transport.as_mut() {
            let _ = Pin::new(transport).poll_shutdown(&mut Context::from_waker(Waker::noop()));
        }
    }

    /// Whether losing the connection now starts recovery rather than closing it.
    fn recovers(&self) -> bool {
        self.options.recovery.is_enabled()
            && matches!(self.state, State::Open | State::Recovering(_))
            && !self.commands.is_closed()
    }

    /// Handles an error that ends the connection's socket: recovery, or the end.
    fn fail(&mut self, error: Error) {
        if let Error::Protocol(decode) = &error
            && !matches!(self.state, State::Closing { .. })
        {
            warn!(%error, "closing the connection: the broker broke the protocol");
            let close = ConnectionClose {
                reply_code: decode.reply_code(),
                reply_text: ShortString::try_from(decode.to_string()).unwrap_or_default(),
                class_id: 0,
                method_id: 0,
            };
            // Stop reading: the stream is out of step. Send the close and leave.
            self.read_buf.clear();
            self.read_closed = true;
            let _ = self.write_method(0, &close.into());
            if self.recovers() {
                self.flush_before_dropping();
                self.lose(error);
                return;
            }
            self.fail_everything(&error);
            self.state = State::Closing {
                awaiting_close_ok: false,
                reason: error,
                reply: None,
                deadline: Box::pin(tokio::time::sleep(PROTOCOL_CLOSE_GRACE)),
            };
            self.stall = None;
            return;
        }
        if self.recovers() {
            self.lose(error);
            return;
        }
        debug!(%error, "connection lost");
        self.fail_everything(&error);
        if let State::Closing { reply, .. } = &mut self.state
            && let Some(reply) = reply.take()
        {
            // Our close could not complete, but the connection is gone all the same.
            let _ = reply.send(Ok(()));
        }
        self.writes.clear();
        self.state = State::Closed;
    }

    /// The connection was lost without the application asking, and recovery is on: drop the
    /// socket, fail what waited on it, keep the channels for recovery and start reconnecting.
    fn lose(&mut self, reason: Error) {
        warn!(error = %reason, "connection lost; recovering");
        self.shared.counters.disconnects.incr();
        self.transport = None;
        self.writes.clear();
        self.read_buf = BytesMut::new();
        self.heartbeat = None;
        self.stall = None;
        self.read_closed = false;
        self.wake_consumers();
        if self.shared.set_blocked(None) {
            self.shared.emit(ConnectionEvent::Unblocked);
        }
        let lost = Error::ConnectionLost {
            reason: Box::new(reason.clone()),
        };
        let unknown = Error::PublishOutcomeUnknown {
            reason: Box::new(reason.clone()),
        };
        for rpc in self.connection_rpcs.drain(..) {
            rpc.fail(&lost);
        }
        for id in self.channels.ids() {
            let Some(state) = self.channels.get_mut(id) else {
                continue;
            };
            // Cancels in flight are as good as done: the consumer is gone with the connection.
            let cancelled: Vec<ShortString> = state
                .rpcs
                .iter()
                .filter_map(|rpc| match &rpc.request {
                    Method::BasicCancel(cancel) => Some(cancel.consumer_tag.clone()),
                    _ => None,
                })
                .chain(state.forgotten.keys().cloned())
                .collect();
            for tag in &cancelled {
                if let Some(slot) = state.consumers.remove(tag) {
                    slot.end(None);
                }
                self.shared.topology().remove_consumer(id, tag);
            }
            let Some(state) = self.channels.get_mut(id) else {
                continue;
            };
            match &state.phase {
                Phase::Open if !state.internal => state.lose(&lost, &unknown),
                Phase::Opening(_) => {
                    let mut state = self
                        .channels
                        .remove(id)
                        .expect("the channel is in the table");
                    state.fail(&lost);
                }
                Phase::Open | Phase::Closing(_) => {
                    // Closing at the application's request, or recovery's own channel: it is
                    // closed now, and stays closed.
                    let mut state = self
                        .channels
                        .remove(id)
                        .expect("the channel is in the table");
                    self.shared.topology().remove_channel(id);
                    state.fail(&Error::ChannelClosed {
                        channel: id,
                        close: Close::normal(Initiator::Client),
                    });
                }
            }
        }
        self.shared.emit(ConnectionEvent::Disconnected {
            reason: reason.clone(),
        });
        self.shared.set_status(ConnectionStatus::Recovering);
        match std::mem::replace(&mut self.state, State::Open) {
            // Lost again while restoring: the attempts go on from where they were.
            State::Recovering(mut recovery) => {
                recovery.lost_again(reason, Some(self.target.clone()));
                self.state = State::Recovering(recovery);
            }
            _ => {
                let recovery = Recovery::new(reason, Some(self.target.clone()));
                self.state = State::Recovering(Box::new(recovery));
            }
        }
        self.schedule_attempt();
    }

    /// Fails every waiter of every channel and of the connection with `error`, and every
    /// command that waited for a recovery that will not happen.
    fn fail_everything(&mut self, error: &Error) {
        // Closed first, so that a caller woken below already sees the connection closed.
        self.shared.set_closed(error.clone());
        // A closed connection is not blocked; publishes waiting for that see the close.
        self.shared.set_blocked(None);
        for mut state in self.channels.drain() {
            state.fail(error);
        }
        for rpc in self.connection_rpcs.drain(..) {
            rpc.fail(error);
        }
        for command in self.held.drain(..).chain(self.inbox.drain(..).rev()) {
            reject_command(command, error);
        }
        while let Ok(command) = self.commands.try_recv() {
            reject_command(command, error);
        }
        self.stall = None;
    }

    /// Answers a command addressed to a channel that is not open. While the channel is still
    /// in the table (closing), its close reason is the answer. Once it is gone, the reply is
    /// dropped unanswered: the handle then reports its own close reason, which the driver
    /// recorded in the handle's shared state before forgetting the channel (the driver no
    /// longer knows it, and a made-up "closed by the application" would hide a broker's 404).
    fn reject_for_gone_channel<T>(
        &mut self,
        channel: ChannelKey,
        reply: oneshot::Sender<Result<T>>,
    ) {
        if let Some(reason) = self
            .channels
            .get_key(channel)
            .and_then(|c| c.shared.closed_reason())
        {
            let _ = reply.send(Err(reason));
        }
    }

    /// Sends `basic.reject` with requeue for a delivery nobody will handle (`delivery_tag` as
    /// the application would have seen it).
    fn requeue(&mut self, channel: u16, delivery_tag: u64) {
        let Some(wire_tag) = self
            .channels
            .get_mut(channel)
            .and_then(|state| state.wire_tag(delivery_tag))
        else {
            return;
        };
        let reject = crate::protocol::BasicReject {
            delivery_tag: wire_tag,
            requeue: true,
        };
        let _ = self.write_method(channel, &reject.into());
    }
}

/// Starts the confirm ledger when `method` is `confirm.select`: the broker numbers the
/// publishes written after it from 1, so the ledger must start now, not at select-ok.
/// `awaiting` is the connection's count of unsettled publishes, which the ledger keeps.
fn start_confirms_if_selected(state: &mut ChannelState, method: &Method, awaiting: &Arc<Counter>) {
    if matches!(method, Method::ConfirmSelect(_)) && state.ledger.is_none() {
        state.ledger = Some(ConfirmLedger::counting(awaiting.clone()));
    }
}

/// Answers a command that cannot be carried out: the connection is closing or closed.
fn reject_command(command: Command, reason: &Error) {
    match command {
        Command::OpenChannel { reply } => {
            let _ = reply.send(Err(reason.clone()));
        }
        Command::Rpc(rpc) => {
            let _ = rpc.reply.send(Err(reason.clone()));
        }
        Command::Publish(publish) => {
            if let Some(reply) = publish.reply {
                let _ = reply.send(Err(reason.clone()));
            }
        }
        Command::WaitForConfirms { reply, .. } => {
            let _ = reply.send(Err(reason.clone()));
        }
        Command::CloseChannel { reply, .. } | Command::CloseConnection { reply, .. } => {
            if let Some(reply) = reply {
                let _ = reply.send(Ok(()));
            }
        }
        Command::Send { .. } | Command::Acks { .. } | Command::ForgetConsumer { .. } => {}
    }
}
