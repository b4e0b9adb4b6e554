//! Connections: connecting, the handle applications hold, and what the connection tells them.

pub(crate) mod command;
mod driver;
mod handshake;
mod options;
mod transport;
pub mod uri;
mod write_queue;

pub use options::{
    AuthMechanism, ConnectionOptions, DEFAULT_PORT, DEFAULT_TLS_PORT, Password, TlsOptions,
    TrustRoots,
};
pub use uri::{HostError, PortError, UriError, UriPart};

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tracing::debug;

use self::command::{Command, OnReply};
use self::driver::Driver;
use self::handshake::Tuning;
use self::transport::Transport;
use crate::channel::Channel;
use crate::error::{Error, Result};
use crate::protocol::{ConnectionUpdateSecret, Request};
use crate::topology::Topology;
use crate::wire::{FieldTable, LongString, ShortString};

/// Commands the bounded queue to the driver holds before callers wait.
const COMMAND_QUEUE: usize = 1024;
/// Events a lagging [`Events`] stream may miss before it skips ahead.
const EVENT_CAPACITY: usize = 64;

/// Something that happened to a connection, from [`Connection::events`].
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
    /// The connection is closed; the error says who closed it and why.
    Closed(Error),
}

/// Connection state shared by the handles and the driver.
#[derive(Debug)]
pub(crate) struct ConnectionState {
    open: AtomicBool,
    closed: Mutex<Option<Error>>,
    closed_watch: watch::Sender<bool>,
    events: broadcast::Sender<ConnectionEvent>,
    pub(crate) blocked: AtomicBool,
    pub(crate) operation_timeout: Duration,
    tuning: Tuning,
    server_properties: FieldTable,
    topology: Mutex<Topology>,
}

impl ConnectionState {
    /// Records why the connection closed (the first reason wins) and tells everyone once.
    pub(crate) fn set_closed(&self, reason: Error) {
        let mut closed = self.closed.lock().unwrap_or_else(|e| e.into_inner());
        if closed.is_some() {
            return;
        }
        *closed = Some(reason.clone());
        self.open.store(false, Ordering::Release);
        drop(closed);
        self.emit(ConnectionEvent::Closed(reason));
        self.closed_watch.send_replace(true);
    }

    pub(crate) fn emit(&self, event: ConnectionEvent) {
        // No subscriber is fine: events are for those who listen.
        let _ = self.events.send(event);
    }

    /// The negotiated frame_max.
    pub(crate) fn frame_max(&self) -> u32 {
        self.tuning.frame_max
    }

    pub(crate) fn topology(&self) -> MutexGuard<'_, Topology> {
        self.topology.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What every handle of one connection shares; dropping the last one closes the connection.
#[derive(Debug)]
pub(crate) struct ConnectionInner {
    commands: mpsc::Sender<Command>,
    control: mpsc::UnboundedSender<Command>,
    pub(crate) state: Arc<ConnectionState>,
    pub(crate) operation_timeout: Duration,
}

impl ConnectionInner {
    /// Queues a command, waiting while the driver's queue is full.
    pub(crate) async fn send(&self, command: Command) -> std::result::Result<(), ()> {
        self.commands.send(command).await.map_err(drop)
    }

    /// Queues a command if there is room; gives it back if the queue is full, fails if the
    /// driver is gone.
    pub(crate) fn try_send(&self, command: Command) -> std::result::Result<Option<Command>, ()> {
        match self.commands.try_send(command) {
            Ok(()) => Ok(None),
            Err(mpsc::error::TrySendError::Full(command)) => Ok(Some(command)),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(()),
        }
    }

    /// Queues a command without waiting (from `Drop`).
    pub(crate) fn control(&self, command: Command) {
        let _ = self.control.send(command);
    }

    pub(crate) fn closed_reason(&self) -> Option<Error> {
        if self.state.open.load(Ordering::Acquire) {
            return None;
        }
        self.state
            .closed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A connection to RabbitMQ.
///
/// Cloning is cheap and gives another handle to the same connection. One tokio task (the
/// driver, spawned by [`Connection::connect`]) owns the socket; handles talk to it. The
/// connection closes when [`Connection::close`] is called, when the broker closes it, when it
/// fails (network, heartbeat timeout, protocol violation), or when the last handle (including
/// those inside channels, consumers and deliveries) is dropped.
///
/// ```no_run
/// # async fn example() -> Result<(), warren::Error> {
/// use warren::Connection;
///
/// let connection = Connection::connect("amqp://guest:guest@localhost:5672/%2f").await?;
/// let channel = connection.open_channel().await?;
/// // ... work with the channel ...
/// connection.close().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Connection {
    pub(crate) inner: Arc<ConnectionInner>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("open", &self.is_open())
            .field("tuning", &self.inner.state.tuning)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Connects to the broker at `uri` (`amqp://user:password@host:port/vhost?params`).
    ///
    /// See [`ConnectionOptions`] for the URI syntax; use [`Connection::connect_with`] to
    /// configure more.
    pub async fn connect(uri: &str) -> Result<Self> {
        Self::connect_with(uri.parse()?).await
    }

    /// Connects with `options`: TCP (and TLS), then the AMQP handshake, all within the
    /// options' connection timeout. Spawns the connection's driver on the current tokio runtime.
    ///
    /// Fails with [`Error::Connect`] when nothing listens, [`Error::Authentication`] when the
    /// broker refuses the credentials, [`Error::ConnectionClosed`] with `530 NOT_ALLOWED` for
    /// an unknown virtual host, and [`Error::Timeout`] when the deadline passes.
    pub async fn connect_with(options: ConnectionOptions) -> Result<Self> {
        handshake::check_mechanisms(&options)?;
        let deadline = options.connection_timeout;
        let opened = tokio::time::timeout(deadline, async {
            let transport = Transport::connect(&options).await?;
            handshake::open(transport, &options).await
        })
        .await
        .map_err(|_| Error::Timeout {
            operation: "connect",
            after: deadline,
        })??;

        let (commands, command_receiver) = mpsc::channel(COMMAND_QUEUE);
        let (control, control_receiver) = mpsc::unbounded_channel();
        let state = Arc::new(ConnectionState {
            open: AtomicBool::new(true),
            closed: Mutex::new(None),
            closed_watch: watch::Sender::new(false),
            events: broadcast::Sender::new(EVENT_CAPACITY),
            blocked: AtomicBool::new(false),
            operation_timeout: options.operation_timeout,
            tuning: opened.tuning,
            server_properties: opened.server_properties.clone(),
            topology: Mutex::new(Topology::default()),
        });
        let driver = Driver::new(
            opened,
            command_receiver,
            control_receiver,
            state.clone(),
            options.max_body_size,
        );
        tokio::spawn(driver.run());
        debug!(uri = %options, "connected");
        Ok(Self {
            inner: Arc::new(ConnectionInner {
                commands,
                control,
                state,
                operation_timeout: options.operation_timeout,
            }),
        })
    }

    /// Opens a channel on the lowest free channel number.
    ///
    /// Fails with [`Error::ChannelsExhausted`] when every number up to the negotiated
    /// channel_max is in use.
    pub async fn open_channel(&self) -> Result<Channel> {
        let timeout = self.inner.operation_timeout;
        let (reply, receiver) = oneshot::channel();
        let open = async {
            self.send(Command::OpenChannel { reply }).await?;
            receiver.await.map_err(|_| self.closed_error())?
        };
        let shared = tokio::time::timeout(timeout, open)
            .await
            .map_err(|_| Error::Timeout {
                operation: "channel.open",
                after: timeout,
            })??;
        Ok(Channel::new(shared, self.clone()))
    }

    /// Closes the connection (`connection.close` with reply code 200) and waits for the broker
    /// to confirm, within the operation timeout. Pending calls and unconfirmed publishes fail
    /// with [`Error::ConnectionClosed`]. Closing a closed connection does nothing.
    pub async fn close(&self) -> Result<()> {
        self.close_with(200, "closed by the application").await
    }

    /// Closes the connection with a reply code and text of your choice.
    pub async fn close_with(&self, code: u16, text: &str) -> Result<()> {
        if !self.is_open() {
            return Ok(());
        }
        let timeout = self.inner.operation_timeout;
        let (reply, receiver) = oneshot::channel();
        let close = async {
            let command = Command::CloseConnection {
                code,
                text: text.to_owned(),
                reply: Some(reply),
            };
            if self.send(command).await.is_err() {
                return Ok(());
            }
            receiver.await.unwrap_or(Ok(()))
        };
        tokio::time::timeout(timeout, close)
            .await
            .map_err(|_| Error::Timeout {
                operation: "connection.close",
                after: timeout,
            })?
    }

    /// Gives the broker a new secret (an OAuth 2 token) for this connection
    /// (`connection.update-secret`), without reconnecting.
    pub async fn update_secret(&self, new_secret: &str, reason: &str) -> Result<()> {
        let request = ConnectionUpdateSecret {
            new_secret: LongString::from(new_secret),
            reason: ShortString::try_from(reason)?,
        };
        let timeout = self.inner.operation_timeout;
        let (reply, receiver) = oneshot::channel();
        let rpc = command::Rpc {
            channel: command::ChannelKey::CONNECTION,
            method: request.into(),
            replies: ConnectionUpdateSecret::REPLIES,
            on_reply: OnReply::Nothing,
            reply,
        };
        let exchange = async {
            self.send(Command::Rpc(rpc)).await?;
            receiver.await.map_err(|_| self.closed_error())?
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| Error::Timeout {
                operation: "connection.update-secret",
                after: timeout,
            })??;
        Ok(())
    }

    /// Whether the connection is open.
    pub fn is_open(&self) -> bool {
        self.inner.state.open.load(Ordering::Acquire)
    }

    /// Whether the broker has blocked the connection (a resource alarm).
    pub fn is_blocked(&self) -> bool {
        self.inner.state.blocked.load(Ordering::Acquire)
    }

    /// Waits until the connection closes, and returns why.
    pub async fn closed(&self) -> Error {
        let mut watch = self.inner.state.closed_watch.subscribe();
        // An error means the driver is gone, which also means closed.
        let _ = watch.wait_for(|closed| *closed).await;
        self.closed_error()
    }

    /// A stream of what happens to the connection: blocked, unblocked, closed.
    ///
    /// Each call gives a new stream that sees the events from then on. A stream that falls
    /// more than 64 events behind skips the oldest.
    pub fn events(&self) -> Events {
        // Subscribe before looking at the state, so a close in between is not missed.
        let inner = BroadcastStream::new(self.inner.state.events.subscribe());
        Events {
            inner,
            closed: self.inner.closed_reason(),
            finished: false,
        }
    }

    /// The properties the broker sent in `connection.start` (product, version, capabilities, …).
    pub fn server_properties(&self) -> &FieldTable {
        &self.inner.state.server_properties
    }

    /// The negotiated highest channel number.
    pub fn channel_max(&self) -> u16 {
        self.inner.state.tuning.channel_max
    }

    /// The negotiated largest frame, in bytes.
    pub fn frame_max(&self) -> u32 {
        self.inner.state.tuning.frame_max
    }

    /// The negotiated heartbeat interval (zero: heartbeats are off).
    pub fn heartbeat(&self) -> Duration {
        self.inner.state.tuning.heartbeat
    }

    /// What the connection has declared and not deleted: exchanges, queues, bindings,
    /// consumers. This is what recovery declares again on a new connection.
    pub fn topology(&self) -> Topology {
        self.inner.state.topology().clone()
    }

    async fn send(&self, command: Command) -> Result<()> {
        if let Some(reason) = self.inner.closed_reason() {
            return Err(reason);
        }
        self.inner
            .send(command)
            .await
            .map_err(|_| self.closed_error())
    }

    fn closed_error(&self) -> Error {
        self.inner
            .closed_reason()
            .unwrap_or(Error::InvalidState("the connection's driver stopped"))
    }
}

/// The stream [`Connection::events`] returns. It ends after [`ConnectionEvent::Closed`].
pub struct Events {
    inner: BroadcastStream<ConnectionEvent>,
    /// Set when the connection was already closed when the stream was made.
    closed: Option<Error>,
    finished: bool,
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}

impl Stream for Events {
    type Item = ConnectionEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        if let Some(reason) = self.closed.take() {
            self.finished = true;
            return Poll::Ready(Some(ConnectionEvent::Closed(reason)));
        }
        loop {
            match Pin::new(&mut self.inner).poll_next(cx) {
                // A lagging stream skips what it missed.
                Poll::Ready(Some(Err(BroadcastStreamRecvError::Lagged(_)))) => continue,
                Poll::Ready(Some(Ok(event))) => {
                    self.finished = matches!(event, ConnectionEvent::Closed(_));
                    return Poll::Ready(Some(event));
                }
                Poll::Ready(None) => {
                    self.finished = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
