//! The connection driver: one tokio task that owns the socket and all protocol state.
//!
//! Handles send [`Command`]s over a bounded queue (and, from `Drop`, an unbounded one); the
//! driver encodes them into its [`WriteQueue`], so that the frames of many concurrent callers
//! go out in few writes, and it routes every incoming frame: replies to waiting callers,
//! deliveries to consumers, confirms to publishers, closes and blocks to everyone concerned.
//!
//! The driver is a hand-written poll loop rather than a `select!`: reading, writing, taking
//! commands and keeping heartbeats progress independently, so a broker that stops reading
//! (a resource alarm) never stops this side from reading, and a full consumer buffer stops
//! reading without stopping writes.

mod channels;
mod dispatch;

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWrite;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, Sleep};
use tokio_util::io::poll_read_buf;
use tracing::{debug, trace, warn};

use self::channels::{ChannelState, ChannelTable, PendingRpc, Phase};
use super::ConnectionState;
use super::command::{ChannelKey, Command, OnReply, Publish, Rpc};
use super::handshake::{Opened, Tuning};
use super::transport::Transport;
use super::write_queue::WriteQueue;
use crate::confirms::{ConfirmLedger, Confirmation, Unconfirmed};
use crate::consumer::ConsumerEvent;
use crate::delivery_queue::{self, TrySendError};
use crate::error::{Close, Error, Initiator, Result};
use crate::frame::{self, FrameDecoder};
use crate::protocol::{ChannelClose, ChannelOpen, ConnectionClose, Method, ReplyCode};
use crate::wire::AmqpMethod;

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
/// How long to wait for `connection.close-ok` after closing because the peer misbehaved.
const PROTOCOL_CLOSE_GRACE: Duration = Duration::from_secs(2);

/// A delivery waiting for room in its consumer's buffer; the driver reads nothing meanwhile.
struct Stalled {
    channel: u16,
    sender: delivery_queue::Sender<ConsumerEvent>,
    delivery: Option<ConsumerEvent>,
}

/// What the driver is doing.
enum State {
    Open,
    /// A `connection.close` is under way: ours (waiting for close-ok) or the server's
    /// (flushing our close-ok). Then the driver stops.
    Closing {
        awaiting_close_ok: bool,
        reason: Error,
        reply: Option<oneshot::Sender<Result<()>>>,
        deadline: Pin<Box<Sleep>>,
    },
    Closed,
}

/// Heartbeat bookkeeping.
struct Heartbeat {
    interval: Duration,
    timer: Pin<Box<Sleep>>,
    last_read: Instant,
    last_write: Instant,
}

pub(crate) struct Driver {
    transport: Transport,
    read_buf: BytesMut,
    decoder: FrameDecoder,
    writes: WriteQueue,
    commands: mpsc::Receiver<Command>,
    control: mpsc::UnboundedReceiver<Command>,
    channels: ChannelTable,
    /// Requests on channel 0 (connection.update-secret) awaiting replies.
    connection_rpcs: std::collections::VecDeque<PendingRpc>,
    state: State,
    shared: Arc<ConnectionState>,
    tuning: Tuning,
    heartbeat: Option<Heartbeat>,
    stalled: Option<Stalled>,
    /// Set when nothing more will be read: the peer broke the protocol (the stream is out of
    /// step) or closed its side while a close was under way.
    read_closed: bool,
    max_body_size: u64,
    /// Consumers that were handed deliveries during the current read batch and wait to be
    /// woken. Waking each once when the batch ends, rather than on every delivery, lets a
    /// consumer take a whole batch per wake-up instead of racing the driver one delivery at
    /// a time (a thread wake-up each, when the consumer runs on another thread).
    consumer_wakes: Vec<std::task::Waker>,
}

impl Driver {
    pub(crate) fn new(
        opened: Opened,
        commands: mpsc::Receiver<Command>,
        control: mpsc::UnboundedReceiver<Command>,
        shared: Arc<ConnectionState>,
        max_body_size: u64,
    ) -> Self {
        let now = Instant::now();
        let heartbeat = (!opened.tuning.heartbeat.is_zero()).then(|| Heartbeat {
            interval: opened.tuning.heartbeat,
            timer: Box::pin(tokio::time::sleep_until(now + opened.tuning.heartbeat / 2)),
            last_read: now,
            last_write: now,
        });
        Self {
            transport: opened.transport,
            read_buf: opened.read_buf,
            decoder: FrameDecoder::new(opened.tuning.frame_max),
            writes: WriteQueue::default(),
            commands,
            control,
            channels: ChannelTable::new(opened.tuning.channel_max),
            connection_rpcs: Default::default(),
            state: State::Open,
            shared,
            tuning: opened.tuning,
            heartbeat,
            stalled: None,
            read_closed: false,
            max_body_size,
            consumer_wakes: Vec::new(),
        }
    }

    /// Runs until the connection is closed, by either side or by failure.
    pub(crate) async fn run(mut self) {
        poll_fn(|cx| self.poll(cx)).await;
        debug!("connection driver stopped");
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
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
            if !again {
                return Poll::Pending;
            }
        }
        // Busy for a while: let other tasks (consumers, publishers) run, then continue.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// One turn of the loop. Returns whether to turn again at once: whether some source stopped
    /// short of having nothing to do (a batch limit, a consumer's buffer that filled or was
    /// freed, a close under way), and so has not registered the waker.
    ///
    /// When it returns `false`, every source has been polled until it returned `Pending`, so a
    /// wake-up will come when any has something to do; turning again would only poll each once
    /// more to hear `Pending` again (for a request and its reply, half of the driver's work).
    fn turn(&mut self, cx: &mut Context<'_>) -> Result<bool> {
        let mut again = self.poll_stalled(cx);
        again |= self.poll_read(cx)?;
        let stalled_after_read = self.stalled.is_some();
        again |= self.poll_commands(cx);
        let commands_held = self.writes.len() >= WRITE_HIGH_WATER;
        self.poll_heartbeat(cx)?;
        self.poll_write(cx)?;
        // Commands were left queued for the writes to drain, and they have: nothing else
        // would wake the driver to take them.
        again |= commands_held && self.writes.len() < WRITE_HIGH_WATER;
        again |= self.poll_closing(cx);
        // Reading paused for a full consumer buffer that a command (a cancel, a channel close)
        // has since released: nothing will wake the driver to read on.
        again |= stalled_after_read && self.stalled.is_none();
        Ok(again)
    }

    // ===== reading =====

    /// Reads and dispatches frames, unless a consumer's full buffer has stalled reading, then
    /// wakes the consumers that were handed deliveries.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Result<bool> {
        let result = self.read_batch(cx);
        for waker in self.consumer_wakes.drain(..) {
            waker.wake();
        }
        result
    }

    /// Reads and dispatches up to [`READ_BATCH`] frames. Returns whether it stopped before the
    /// socket returned `Pending`: the batch is full, a consumer's buffer filled, or reading
    /// ended; reading then goes on in the next turn, or waits for the stalled consumer.
    fn read_batch(&mut self, cx: &mut Context<'_>) -> Result<bool> {
        let mut frames = 0;
        while self.stalled.is_none() && !self.read_closed && !matches!(self.state, State::Closed) {
            if let Some(frame) = self.decoder.decode(&mut self.read_buf)? {
                self.dispatch(frame)?;
                frames += 1;
                if frames == READ_BATCH {
                    return Ok(true);
                }
                continue;
            }
            if self.read_buf.capacity() - self.read_buf.len() < READ_CHUNK / 4 {
                self.read_buf.reserve(READ_CHUNK);
            }
            let read = poll_read_buf(Pin::new(&mut self.transport), cx, &mut self.read_buf);
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
                Poll::Ready(Err(e)) => return Err(self.transport.classify_error(e)),
                Poll::Ready(Ok(0)) => {
                    return Err(Error::io(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the broker closed the TCP connection",
                    )));
                }
                Poll::Ready(Ok(_)) => {
                    if let Some(heartbeat) = &mut self.heartbeat {
                        heartbeat.last_read = Instant::now();
                    }
                }
            }
        }
        // Stopped without the socket's waker: by a stall or an end that this batch caused (a
        // stall found on entry already has poll_stalled's waker).
        Ok(frames > 0)
    }

    /// Hands a stalled delivery to its consumer once there is room.
    fn poll_stalled(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(stalled) = &mut self.stalled else {
            return false;
        };
        let ready = match stalled.sender.poll_ready(cx) {
            Poll::Pending => return false,
            Poll::Ready(ready) => ready,
        };
        let channel = stalled.channel;
        if let Some(delivery) = stalled.delivery.take() {
            // Reading is paused, so nothing else can have taken the room the queue reported.
            let refused = match ready {
                Ok(()) => stalled.sender.try_send(delivery).err(),
                Err(()) => Some(TrySendError::Closed(delivery)),
            };
            if let Some(TrySendError::Closed(delivery) | TrySendError::Full(delivery)) = refused {
                // The consumer went away while we waited: requeue.
                self.requeue(channel, delivery.deliver.delivery_tag);
            }
        }
        self.stalled = None;
        if let Some(heartbeat) = &mut self.heartbeat {
            // Reading was paused on purpose; the broker was not silent.
            heartbeat.last_read = Instant::now();
        }
        true
    }

    // ===== commands =====

    /// Takes commands while the write queue has room.
    ///
    /// Returns whether it stopped before the queues returned `Pending` with commands taken:
    /// the batch is full, or the write queue reached its high-water mark (the driver then goes
    /// on once the writes drain, or is woken by the socket when they cannot).
    fn poll_commands(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        for _ in 0..COMMAND_BATCH {
            if self.writes.len() >= WRITE_HIGH_WATER {
                return progress;
            }
            let command = match self.control.poll_recv(cx) {
                Poll::Ready(Some(command)) => {
                    // A command from `Drop` must not overtake what its owner queued before
                    // dropping (a publish, then the channel dropped): take everything already
                    // in the ordered queue first.
                    while let Ok(earlier) = self.commands.try_recv() {
                        self.command(earlier);
                    }
                    command
                }
                Poll::Ready(None) | Poll::Pending => match self.commands.poll_recv(cx) {
                    Poll::Ready(Some(command)) => command,
                    Poll::Ready(None) => {
                        // Every handle is gone: nobody can use the connection any more.
                        if matches!(self.state, State::Open) {
                            debug!("all handles dropped; closing the connection");
                            self.close_connection(200, "connection dropped".into(), None);
                            progress = true;
                        }
                        return progress;
                    }
                    Poll::Pending => return false,
                },
            };
            progress = true;
            self.command(command);
        }
        true
    }

    fn command(&mut self, command: Command) {
        if let State::Closing { reason, .. } = &self.state {
            let reason = reason.clone();
            reject_command(command, &reason);
            return;
        }
        match command {
            Command::OpenChannel { reply } => self.open_channel(reply),
            Command::Rpc(rpc) => self.rpc(rpc),
            Command::Send { channel, method } => self.send(channel, method),
            Command::Publish(publish) => self.publish(publish),
            Command::WaitForConfirms { channel, reply } => {
                let Some(state) = self.channels.get_open(channel) else {
                    self.reject_for_gone_channel(channel, reply);
                    return;
                };
                match &mut state.ledger {
                    Some(ledger) => ledger.wait(reply),
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

    fn open_channel(&mut self, reply: oneshot::Sender<Result<Arc<crate::channel::ChannelShared>>>) {
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
        self.channels.open(id, self.max_body_size, reply);
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
            self.connection_rpcs.push_back(PendingRpc {
                request: method,
                replies,
                on_reply,
                reply: Some(reply),
            });
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
        start_confirms_if_selected(state, &method);
        state.rpcs.push_back(PendingRpc {
            request: method,
            replies,
            on_reply,
            reply: Some(reply),
        });
    }

    /// Sends an asynchronous method, or a synchronous one with `no_wait` set (whose success
    /// the driver records at once: no reply will come).
    fn send(&mut self, channel: ChannelKey, method: Method) {
        let open = self.channels.get_open(channel).is_some();
        if !open {
            return;
        }
        let channel = channel.id;
        if let Err(e) = self.write_method(channel, &method) {
            warn!(%e, method = method.name(), "dropping a method that does not fit in a frame");
            return;
        }
        if method.no_wait() {
            if let Some(state) = self.channels.get_mut(channel) {
                start_confirms_if_selected(state, &method);
            }
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
        let Some(state) = self.channels.get_open(channel) else {
            if let Some(reply) = reply {
                self.reject_for_gone_channel(channel, reply);
            }
            return;
        };
        let channel = channel.id;
        match &mut state.ledger {
            Some(ledger) => {
                ledger.push(Unconfirmed {
                    reply,
                    mandatory,
                    returned: None,
                    _permit: permit,
                });
            }
            None => {
                if let Some(reply) = reply {
                    let _ = reply.send(Ok(Confirmation::NotRequested));
                }
            }
        }
        self.writes.buffer().extend_from_slice(&frames);
        self.writes.push_body(channel, &body, self.tuning.frame_max);
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
                let close = ChannelClose {
                    reply_code: ReplyCode::REPLY_SUCCESS.0,
                    reply_text: crate::wire::ShortString::from_static("closed by the application"),
                    class_id: 0,
                    method_id: 0,
                };
                if let Err(e) = self.write_method(channel, &close.into()) {
                    warn!(%e, channel, "could not send channel.close");
                }
            }
        }
    }

    fn forget_consumer(&mut self, key: ChannelKey, tag: crate::wire::ShortString) {
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
                    reply: None,
                });
            }
        }
    }

    /// Starts closing the connection from this side.
    fn close_connection(
        &mut self,
        code: u16,
        text: String,
        reply: Option<oneshot::Sender<Result<()>>>,
    ) {
        if !matches!(self.state, State::Open) {
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
        let close = ConnectionClose {
            reply_code: code,
            reply_text: crate::wire::ShortString::try_from(text).unwrap_or_default(),
            class_id: 0,
            method_id: 0,
        };
        let _ = self.write_method(0, &close.into());
        self.fail_everything(&reason);
        self.state = State::Closing {
            awaiting_close_ok: true,
            reason,
            reply,
            deadline: Box::pin(tokio::time::sleep(self.shared.operation_timeout)),
        };
    }

    // ===== writing =====

    /// Encodes `method` into the write queue.
    pub(super) fn write_method(&mut self, channel: u16, method: &Method) -> Result<()> {
        trace!(channel, method = method.name(), "sending");
        frame::encode_method_frame(self.writes.buffer(), channel, method, self.tuning.frame_max)
            .map_err(Error::from)
    }

    /// Writes what is queued until it is all written or the socket returns `Pending`.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Result<()> {
        if self.writes.is_empty() {
            return Ok(());
        }
        let before = self.writes.len();
        let result = self.writes.poll_write(cx, &mut self.transport);
        if self.writes.len() != before
            && let Some(heartbeat) = &mut self.heartbeat
        {
            heartbeat.last_write = Instant::now();
        }
        match result {
            Poll::Ready(Ok(())) => {
                // TLS buffers inside the stream; a TCP flush is a no-op.
                match Pin::new(&mut self.transport).poll_flush(cx) {
                    Poll::Ready(Err(e)) => Err(self.transport.classify_error(e)),
                    Poll::Ready(Ok(())) | Poll::Pending => Ok(()),
                }
            }
            Poll::Ready(Err(e)) => Err(self.transport.classify_error(e)),
            Poll::Pending => Ok(()),
        }
    }

    // ===== heartbeats =====

    fn poll_heartbeat(&mut self, cx: &mut Context<'_>) -> Result<()> {
        let stalled = self.stalled.is_some();
        let Some(heartbeat) = &mut self.heartbeat else {
            return Ok(());
        };
        while heartbeat.timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            if stalled {
                heartbeat.last_read = now;
            }
            if now.duration_since(heartbeat.last_read) >= heartbeat.interval * 2 {
                return Err(Error::HeartbeatTimeout {
                    interval: heartbeat.interval,
                });
            }
            let send_at = heartbeat.last_write + heartbeat.interval / 2;
            if now >= send_at && self.writes.is_empty() {
                trace!("sending heartbeat");
                frame::encode_heartbeat(self.writes.buffer());
                heartbeat.last_write = now;
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
        let _ = Pin::new(&mut self.transport)
            .poll_shutdown(&mut Context::from_waker(std::task::Waker::noop()));
    }

    /// Handles an error that ends the connection.
    fn fail(&mut self, error: Error) {
        match &error {
            Error::Protocol(decode) if matches!(self.state, State::Open) => {
                warn!(%error, "closing the connection: the broker broke the protocol");
                let close = ConnectionClose {
                    reply_code: decode.reply_code(),
                    reply_text: crate::wire::ShortString::try_from(decode.to_string())
                        .unwrap_or_default(),
                    class_id: 0,
                    method_id: 0,
                };
                // Stop reading: the stream is out of step. Send the close and leave.
                self.read_buf.clear();
                self.read_closed = true;
                let _ = self.write_method(0, &close.into());
                self.fail_everything(&error);
                self.state = State::Closing {
                    awaiting_close_ok: false,
                    reason: error,
                    reply: None,
                    deadline: Box::pin(tokio::time::sleep(PROTOCOL_CLOSE_GRACE)),
                };
                self.stalled = None;
            }
            _ => {
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
        }
    }

    /// Fails every waiter of every channel and of the connection with `error`.
    fn fail_everything(&mut self, error: &Error) {
        // Closed first, so that a caller woken below already sees the connection closed.
        self.shared.set_closed(error.clone());
        for mut state in self.channels.drain() {
            state.fail(error);
        }
        for rpc in self.connection_rpcs.drain(..) {
            rpc.fail(error);
        }
        self.stalled = None;
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

    /// Sends `basic.reject` with requeue for a delivery nobody will handle.
    fn requeue(&mut self, channel: u16, delivery_tag: u64) {
        let reject = crate::protocol::BasicReject {
            delivery_tag,
            requeue: true,
        };
        let _ = self.write_method(channel, &reject.into());
    }
}

/// Starts the confirm ledger when `method` is `confirm.select`: the broker numbers the
/// publishes written after it from 1, so the ledger must start now, not at select-ok.
fn start_confirms_if_selected(state: &mut ChannelState, method: &Method) {
    if matches!(method, Method::ConfirmSelect(_)) && state.ledger.is_none() {
        state.ledger = Some(ConfirmLedger::new());
    }
}

/// Answers a command that arrived while the connection is closing.
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
        Command::Send { .. } | Command::ForgetConsumer { .. } => {}
    }
}
