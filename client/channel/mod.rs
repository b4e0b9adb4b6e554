//! Channels: the handle applications do their work through.
//!
//! A [`Channel`] is a cheap, cloneable handle; the connection's driver task owns the channel's
//! protocol state. Every AMQP method of the exchange, queue, basic, tx and confirm classes is an
//! `async fn` named `{class}_{method}`, taking a `{Class}{Method}Options` struct (with `Default`)
//! and returning a named result. They are thin wrappers over two generic calls that work for
//! any generated method: [`Channel::call`] (a synchronous method and its typed reply) and
//! [`Channel::send`] (an asynchronous method).

mod basic;
mod exchange;
mod options;
mod queue;
mod tx;

pub use options::*;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::BytesMut;
use tokio::sync::{Semaphore, broadcast, oneshot, watch};

use crate::connection::command::{ChannelKey, Command, OnReply, Rpc, RpcReply};
use crate::connection::{Connection, ConnectionInner};
use crate::error::{Error, Result};
use crate::message::ReturnedMessage;
use crate::protocol::{Method, Request};
use crate::wire::{AmqpMethod, MethodId};

/// How many returned messages a returns stream buffers before the oldest are dropped.
const RETURNS_CAPACITY: usize = 1024;

/// A channel's state shared between its handles and the driver.
#[derive(Debug)]
pub(crate) struct ChannelShared {
    pub id: u16,
    /// Which opening of channel number `id` this is (see [`ChannelKey`]).
    pub epoch: u64,
    open: AtomicBool,
    closed: Mutex<Option<Error>>,
    /// Set by the driver when `confirm.select-ok` arrives.
    pub confirm_mode: AtomicBool,
    /// The limit on unconfirmed publishes, if the application asked for one.
    pub in_flight: OnceLock<Arc<Semaphore>>,
    /// Prefetch count of the last `basic.qos`, which sizes consumer buffers.
    pub prefetch: AtomicU16,
    /// `false` while the broker has paused the channel with `channel.flow`.
    pub flow: watch::Sender<bool>,
    /// Where returned messages go.
    returns: Mutex<ReturnsSender>,
    /// Where publishers encode their method and header frames: frames are split off it, so
    /// one allocation serves many publishes.
    pub encode_buffer: Mutex<BytesMut>,
}

/// The sender of a channel's returns streams. It is made by the first `returns()` call, not
/// with the channel: its buffer is sized for a burst of returns, and most channels never
/// listen.
#[derive(Debug)]
enum ReturnsSender {
    NobodyListened,
    Listening(broadcast::Sender<Arc<ReturnedMessage>>),
    /// The channel closed; dropping the sender ended the streams.
    Closed,
}

impl ChannelShared {
    pub(crate) fn new(id: u16, epoch: u64) -> Self {
        Self {
            id,
            epoch,
            open: AtomicBool::new(true),
            closed: Mutex::new(None),
            confirm_mode: AtomicBool::new(false),
            in_flight: OnceLock::new(),
            prefetch: AtomicU16::new(0),
            flow: watch::Sender::new(true),
            returns: Mutex::new(ReturnsSender::NobodyListened),
            encode_buffer: Mutex::new(BytesMut::new()),
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// The key commands for this channel carry.
    pub(crate) fn key(&self) -> ChannelKey {
        ChannelKey {
            id: self.id,
            epoch: self.epoch,
        }
    }

    /// Marks the channel closed for good with `reason` (only the first reason is kept).
    pub(crate) fn set_closed(&self, reason: Error) {
        let mut closed = self.closed.lock().unwrap_or_else(|e| e.into_inner());
        if closed.is_none() {
            *closed = Some(reason);
        }
        self.open.store(false, Ordering::Release);
        drop(closed);
        // Wake publishers waiting for flow, so they see the close.
        self.flow.send_replace(true);
        // End the returns streams.
        *self.returns.lock().unwrap_or_else(|e| e.into_inner()) = ReturnsSender::Closed;
    }

    /// Passes a returned message to the returns streams; `false` if nobody listens.
    pub(crate) fn publish_return(&self, message: &ReturnedMessage) -> bool {
        match &*self.returns.lock().unwrap_or_else(|e| e.into_inner()) {
            ReturnsSender::Listening(sender) => sender.send(Arc::new(message.clone())).is_ok(),
            ReturnsSender::NobodyListened | ReturnsSender::Closed => false,
        }
    }

    /// A receiver of returned messages; already ended if the channel is closed.
    pub(crate) fn subscribe_returns(&self) -> broadcast::Receiver<Arc<ReturnedMessage>> {
        let mut returns = self.returns.lock().unwrap_or_else(|e| e.into_inner());
        match &*returns {
            ReturnsSender::Listening(sender) => sender.subscribe(),
            ReturnsSender::NobodyListened => {
                let sender = broadcast::Sender::new(RETURNS_CAPACITY);
                let receiver = sender.subscribe();
                *returns = ReturnsSender::Listening(sender);
                receiver
            }
            ReturnsSender::Closed => broadcast::Sender::new(1).subscribe(),
        }
    }

    /// Why the channel is closed, if it is.
    pub(crate) fn closed_reason(&self) -> Option<Error> {
        if self.is_open() {
            return None;
        }
        self.closed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// What one handle holds; the last one dropped closes the channel.
struct ChannelHandle {
    shared: Arc<ChannelShared>,
    connection: Connection,
}

impl Drop for ChannelHandle {
    fn drop(&mut self) {
        if self.shared.is_open() {
            self.connection.inner.control(Command::CloseChannel {
                channel: self.shared.key(),
                reply: None,
            });
        }
    }
}

/// An AMQP channel.
///
/// Cloning is cheap and gives another handle to the same channel. The channel closes when
/// [`Channel::close`] is called, when the broker closes it (a soft error such as 404 on a
/// passive declare), or when its last handle (including those held by consumers and
/// deliveries) is dropped.
///
/// Every call that waits for the broker has a deadline: the connection's operation timeout,
/// or the one set with [`Channel::with_timeout`]. A call whose deadline passes returns
/// [`Error::Timeout`]; the channel stays consistent (a late reply is discarded).
#[derive(Clone)]
pub struct Channel {
    handle: Arc<ChannelHandle>,
    timeout: Duration,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("id", &self.handle.shared.id)
            .field("open", &self.handle.shared.is_open())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Channel {
    pub(crate) fn new(shared: Arc<ChannelShared>, connection: Connection) -> Self {
        let timeout = connection.inner.operation_timeout;
        Self {
            handle: Arc::new(ChannelHandle { shared, connection }),
            timeout,
        }
    }

    /// The channel number.
    pub fn id(&self) -> u16 {
        self.handle.shared.id
    }

    /// The key of this channel's commands to the driver.
    pub(crate) fn key(&self) -> ChannelKey {
        self.handle.shared.key()
    }

    /// Whether the channel is open.
    pub fn is_open(&self) -> bool {
        self.handle.shared.is_open()
    }

    /// The connection the channel belongs to.
    pub fn connection(&self) -> &Connection {
        &self.handle.connection
    }

    /// A handle to the same channel whose calls have deadline `timeout` instead of the
    /// connection's operation timeout.
    ///
    /// ```no_run
    /// # async fn example(channel: warren::Channel) -> Result<(), warren::Error> {
    /// use std::time::Duration;
    /// use warren::QueueDeleteOptions;
    ///
    /// // Deleting a queue with millions of messages can take a while.
    /// let deleted = channel
    ///     .with_timeout(Duration::from_secs(300))
    ///     .queue_delete("big-queue", QueueDeleteOptions::default())
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Self {
            handle: self.handle.clone(),
            timeout,
        }
    }

    /// The deadline of this handle's calls.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether the channel is in confirm mode (after [`Channel::confirm_select`]).
    pub fn is_confirm_mode(&self) -> bool {
        self.handle.shared.confirm_mode.load(Ordering::Acquire)
    }

    /// Sends any synchronous method and returns its typed reply.
    ///
    /// The named methods (`queue_declare`, …) are wrappers over this call; use it for what they
    /// do not cover, or to work with the generated method structs directly. A request with its
    /// `no_wait` field set gets no reply: send it with [`Channel::send`] instead.
    ///
    /// ```no_run
    /// # async fn example(channel: warren::Channel) -> Result<(), warren::Error> {
    /// use warren::protocol::QueueDeclare;
    /// use warren::wire::ShortString;
    ///
    /// let ok = channel
    ///     .call(QueueDeclare {
    ///         queue: ShortString::from_static("tasks"),
    ///         durable: true,
    ///         ..Default::default()
    ///     })
    ///     .await?;
    /// println!("{} messages waiting", ok.message_count);
    /// # Ok(()) }
    /// ```
    pub async fn call<M: Request>(&self, method: M) -> Result<M::Reply> {
        check_sendable(M::ID, M::NAME)?;
        if method.no_wait() {
            return Err(Error::InvalidArgument(format!(
                "{} has no_wait set, so the broker sends no reply; use Channel::send",
                M::NAME
            )));
        }
        let reply = self
            .rpc(method.into(), M::REPLIES, OnReply::Nothing)
            .await?;
        M::Reply::try_from(reply.method).map_err(|other| unexpected_reply(M::NAME, &other))
    }

    /// Sends any asynchronous method (one the broker does not answer), or a synchronous one
    /// with its `no_wait` field set.
    ///
    /// Returns once the method is queued for sending; a failure it causes on the broker
    /// arrives later as a channel close.
    pub async fn send<M>(&self, method: M) -> Result<()>
    where
        M: AmqpMethod + Into<Method>,
    {
        check_sendable(M::ID, M::NAME)?;
        if M::CARRIES_CONTENT {
            return Err(Error::InvalidArgument(format!(
                "{} carries content; use Channel::basic_publish",
                M::NAME
            )));
        }
        let method = method.into();
        if M::SYNCHRONOUS && !method.no_wait() {
            return Err(Error::InvalidArgument(format!(
                "{} expects a reply; use Channel::call, or set its no_wait field",
                M::NAME
            )));
        }
        let selects_confirms = matches!(method, Method::ConfirmSelect(_));
        self.command(Command::Send {
            channel: self.key(),
            method,
        })
        .await?;
        if selects_confirms {
            // No select-ok will come. Publishes queued after this one are numbered by the
            // broker, so from now on they need a confirmation to report.
            self.handle
                .shared
                .confirm_mode
                .store(true, std::sync::atomic::Ordering::Release);
        }
        Ok(())
    }

    /// Sends a synchronous method and waits for one of `replies`, with this handle's deadline.
    pub(crate) async fn rpc(
        &self,
        method: Method,
        replies: &'static [MethodId],
        on_reply: OnReply,
    ) -> Result<RpcReply> {
        let name = method.name();
        let (reply, receiver) = oneshot::channel();
        let rpc = Rpc {
            channel: self.key(),
            method,
            replies,
            on_reply,
            reply,
        };
        let exchange = async {
            self.command(Command::Rpc(rpc)).await?;
            match receiver.await {
                Ok(result) => result,
                Err(_) => Err(self.closed_error()),
            }
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout {
                operation: name,
                after: self.timeout,
            }),
        }
    }

    /// Queues a command for the driver, failing at once if the channel is closed.
    pub(crate) async fn command(&self, command: Command) -> Result<()> {
        // Most of the time the queue has room: skip the asynchronous send's machinery.
        let Some(command) = self.try_command(command)? else {
            return Ok(());
        };
        self.handle
            .connection
            .inner
            .send(command)
            .await
            .map_err(|_| self.closed_error())
    }

    /// Queues a command if the driver's queue has room; gives it back if it is full.
    pub(crate) fn try_command(&self, command: Command) -> Result<Option<Command>> {
        if let Some(error) = self.handle.shared.closed_reason() {
            return Err(error);
        }
        self.handle
            .connection
            .inner
            .try_send(command)
            .map_err(|()| self.closed_error())
    }

    /// The error to report when the channel or its connection has gone away.
    pub(crate) fn closed_error(&self) -> Error {
        self.handle
            .shared
            .closed_reason()
            .or_else(|| self.handle.connection.inner.closed_reason())
            .unwrap_or(Error::InvalidState(
                "the channel was closed: its connection's driver stopped",
            ))
    }

    pub(crate) fn shared(&self) -> &Arc<ChannelShared> {
        &self.handle.shared
    }

    pub(crate) fn connection_inner(&self) -> &Arc<ConnectionInner> {
        &self.handle.connection.inner
    }

    /// Closes the channel (`channel.close` with reply code 200) and waits for the broker to
    /// confirm. Unacknowledged deliveries are requeued by the broker; unconfirmed publishes
    /// resolve to an error. Closing a closed channel does nothing.
    pub async fn close(&self) -> Result<()> {
        if !self.is_open() {
            return Ok(());
        }
        let (reply, receiver) = oneshot::channel();
        let exchange = async {
            self.command(Command::CloseChannel {
                channel: self.key(),
                reply: Some(reply),
            })
            .await?;
            receiver.await.unwrap_or(Ok(()))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            // Closed meanwhile, by the broker or by the connection going away: nothing to do.
            Ok(Err(_)) if !self.is_open() => Ok(()),
            Ok(result) => result,
            Err(_) => Err(Error::Timeout {
                operation: "channel.close",
                after: self.timeout,
            }),
        }
    }

    /// Waits until the channel closes, and returns why.
    pub async fn closed(&self) -> Error {
        // Closing also signals the flow watch (see ChannelShared::set_closed).
        let mut flow = self.handle.shared.flow.subscribe();
        loop {
            if let Some(reason) = self.handle.shared.closed_reason() {
                return reason;
            }
            if flow.changed().await.is_err() {
                return self.closed_error();
            }
        }
    }
}

/// Refuses methods that only the named calls may send, because the driver must manage them.
fn check_sendable(id: MethodId, name: &'static str) -> Result<()> {
    const CONNECTION: u16 = 10;
    const CHANNEL: u16 = 20;
    let hint = match (id.class, id.method) {
        (CONNECTION, _) => "it belongs to the connection; use the Connection methods",
        (CHANNEL, 10 | 11) => "use Connection::open_channel",
        (CHANNEL, 40 | 41) => "use Channel::close",
        (60, 20) => "use Channel::basic_consume, which routes the deliveries",
        _ => return Ok(()),
    };
    Err(Error::InvalidArgument(format!(
        "{name} cannot be sent through the generic call: {hint}"
    )))
}

fn unexpected_reply(request: &'static str, reply: &Method) -> Error {
    Error::UnexpectedReply {
        request,
        reply: reply.name(),
    }
}
