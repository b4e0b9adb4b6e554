//! Connections: connecting, the handle applications hold, and what the connection tells them.

pub use crate::config::uri;
pub use crate::config::uri::{HostError, PortError, UriError, UriPart};
pub use crate::config::{
    AuthMechanism, BlockedPolicy, ConnectionOptions, DEFAULT_CONSUMER_BUFFER_BUDGET,
    DEFAULT_CONSUMER_STALL_TIMEOUT, DEFAULT_PORT, DEFAULT_TLS_PORT, Endpoint, EndpointOrder,
    Password, RecoveryPolicy, TlsOptions, TrustRoots,
};
pub use crate::shared::connection::{ConnectionEvent, ConnectionStatus};
pub use crate::shared::stats::ConnectionStats;

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::channel::Channel;
use crate::driver;
use crate::error::{Error, Result};
use crate::protocol::{ConnectionUpdateSecret, Request};
use crate::shared::command::{self, Command, OnReply};
use crate::shared::connection::ConnectionShared;
use crate::topology::Topology;
use crate::wire::{FieldTable, LongString, ShortString};

/// How much longer than the operation timeout `close` waits for the driver, which gives up on
/// the broker's close-ok at the operation timeout.
const CLOSE_GRACE: Duration = Duration::from_millis(250);

/// What every handle of one connection shares; dropping the last one closes the connection.
#[derive(Debug)]
pub(crate) struct ConnectionInner {
    commands: mpsc::Sender<Command>,
    control: mpsc::UnboundedSender<Command>,
    pub(crate) state: Arc<ConnectionShared>,
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

    /// Queues a command, waiting while the driver's queue is full, like [`Self::send`]; but if
    /// the caller drops the future while it waits, the command still goes, through the
    /// control queue (for commands that carry others' work: a batch of acknowledgements).
    pub(crate) async fn send_even_if_dropped(
        &self,
        command: Command,
    ) -> std::result::Result<(), ()> {
        let command = match self.try_send(command)? {
            None => return Ok(()),
            Some(command) => command,
        };
        let mut pending = SendOnDrop {
            control: &self.control,
            command: Some(command),
        };
        let permit = self.commands.reserve().await;
        let command = pending.command.take().expect("taken only here");
        permit.map_err(drop)?.send(command);
        Ok(())
    }

    /// Whether nothing waits in the driver's queue (nor has room reserved in it).
    pub(crate) fn queue_is_empty(&self) -> bool {
        self.commands.capacity() == self.commands.max_capacity()
    }

    /// Queues a command without waiting (from `Drop`, and for `close`, which must reach the
    /// driver while it recovers and takes no ordinary commands).
    pub(crate) fn control(&self, command: Command) -> std::result::Result<(), ()> {
        self.control.send(command).map_err(drop)
    }

    pub(crate) fn closed_reason(&self) -> Option<Error> {
        self.state.closed_reason()
    }
}

/// A command waiting for room in the driver's queue, sent through the control queue if the
/// wait is abandoned.
struct SendOnDrop<'a> {
    control: &'a mpsc::UnboundedSender<Command>,
    command: Option<Command>,
}

impl Drop for SendOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(command) = self.command.take() {
            // The driver takes everything in the ordered queue before a control command.
            let _ = self.control.send(command);
        }
    }
}

/// A connection to RabbitMQ.
///
/// Cloning is cheap and gives another handle to the same connection. One tokio task (the
/// driver, spawned by [`Connection::connect`]) owns the socket; handles talk to it.
///
/// When the connection is lost without the application asking (network failure, broker
/// restart, a missed heartbeat, the broker closing it), warren recovers it by default: it
/// reconnects and restores the channels, topology and consumers under the same handles (see
/// [`RecoveryPolicy`] and the README's "Recovery" section); [`Connection::events`] reports
/// each step. The connection closes for good when [`Connection::close`] is called, when
/// recovery is off or gives up, or when the last handle (including those inside channels,
/// consumers and deliveries) is dropped.
///
/// What happens when the future of one of its calls is dropped before it completes is in the
/// crate documentation, [cancellation](crate#cancellation-what-a-dropped-future-did).
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
            .field("status", &self.status())
            .field("endpoint", &self.endpoint())
            .field("channel_max", &self.channel_max())
            .field("frame_max", &self.frame_max())
            .field("heartbeat", &self.heartbeat())
            .finish_non_exhaustive()
    }
}

/// The receiving end of a channel being opened. If the caller gives up (a dropped future, a
/// timeout) after the channel opened but before taking it, dropping this closes the channel,
/// as the driver does for an open-ok that arrives after the caller gave up: a channel nobody
/// holds must not keep its number.
struct OpenedChannel<'a> {
    receiver: oneshot::Receiver<Result<Arc<crate::shared::channel::ChannelShared>>>,
    connection: &'a Connection,
}

impl Drop for OpenedChannel<'_> {
    fn drop(&mut self) {
        // Closed first, so that the driver cannot hand over a channel between the look and the
        // drop of the receiver: its send fails and it closes the channel itself.
        self.receiver.close();
        if let Ok(Ok(shared)) = self.receiver.try_recv() {
            // The handle's own Drop closes it.
            drop(Channel::new(shared, self.connection.clone()));
        }
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
    /// an unknown virtual host, and [`Error::Timeout`] when the deadline passes. The first
    /// connection is not retried: recovery starts only once a connection was made.
    pub async fn connect_with(options: ConnectionOptions) -> Result<Self> {
        let operation_timeout = options.operation_timeout;
        Ok(Self::from_driver(
            driver::start(options).await?,
            operation_timeout,
        ))
    }

    /// [`Connection::connect_with`] over an in-memory stream whose other end plays the
    /// broker: the hook of the `connection` fuzz target (feature `fuzzing`, off by default),
    /// which runs thousands of connections a second without sockets. Not a public API; the
    /// connection does not recover.
    #[cfg(feature = "fuzzing")]
    #[doc(hidden)]
    pub async fn connect_in_memory(
        stream: tokio::io::DuplexStream,
        options: ConnectionOptions,
    ) -> Result<Self> {
        let operation_timeout = options.operation_timeout;
        let started = driver::start_in_memory(stream, options).await?;
        Ok(Self::from_driver(started, operation_timeout))
    }

    /// The handle of a connection whose driver runs.
    fn from_driver(started: driver::Started, operation_timeout: Duration) -> Self {
        let driver::Started {
            commands,
            control,
            shared,
        } = started;
        Self {
            inner: Arc::new(ConnectionInner {
                commands,
                control,
                state: shared,
                operation_timeout,
            }),
        }
    }

    /// Opens a channel on the lowest free channel number.
    ///
    /// Fails with [`Error::ChannelsExhausted`] when every number up to the negotiated
    /// channel_max is in use. While the connection recovers, it waits for it (within the
    /// operation timeout).
    pub async fn open_channel(&self) -> Result<Channel> {
        let timeout = self.inner.operation_timeout;
        let (reply, receiver) = oneshot::channel();
        let mut receiver = OpenedChannel {
            receiver,
            connection: self,
        };
        let open = async {
            self.send(Command::OpenChannel { reply }).await?;
            (&mut receiver.receiver)
                .await
                .map_err(|_| self.closed_error())?
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
    /// to confirm, within the operation timeout: a broker that does not answer by then (it is
    /// gone) is not waited for, and the connection is closed all the same. A broker that
    /// blocked the connection (a resource alarm) reads nothing, so it is given one second.
    /// Publishes waiting for the connection to be unblocked fail too. Pending calls and unconfirmed publishes fail with
    /// [`Error::ConnectionClosed`]; what was queued before the call is sent first.
    /// Closing a closed connection does nothing. While the connection recovers, it ends the
    /// recovery at once. The connection is never recovered after this.
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
        let command = Command::CloseConnection {
            code,
            text: text.to_owned(),
            reply: Some(reply),
        };
        if self.inner.control(command).is_err() {
            return Ok(());
        }
        // The driver gives up waiting for the broker's close-ok after the operation timeout
        // and closes anyway; wait a little longer than that for its answer.
        let limit = timeout + CLOSE_GRACE;
        tokio::time::timeout(limit, async { receiver.await.unwrap_or(Ok(())) })
            .await
            .map_err(|_| Error::Timeout {
                operation: "connection.close",
                after: limit,
            })?
    }

    /// Gives the broker a new secret (an OAuth 2 token) for this connection
    /// (`connection.update-secret`), without reconnecting. Recovery logs in with it from then on.
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
            self.send(Command::Rpc(Box::new(rpc))).await?;
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

    /// Whether the connection is usable: open, or recovering (calls then wait for it).
    /// `false` once it is closed for good; [`Connection::status`] tells the three apart.
    pub fn is_open(&self) -> bool {
        !self.inner.state.is_closed()
    }

    /// Where the connection is in its life: open, recovering or closed.
    pub fn status(&self) -> ConnectionStatus {
        self.inner.state.status()
    }

    /// Waits until the connection is open: at once if it is, after recovery if it is
    /// recovering. Fails with the reason if the connection is closed for good (or closes
    /// while waiting).
    pub async fn wait_until_open(&self) -> Result<()> {
        let mut status = self.inner.state.watch_status();
        let result = status
            .wait_for(|status| *status != ConnectionStatus::Recovering)
            .await
            .map(|status| *status);
        match result {
            Ok(ConnectionStatus::Open) => Ok(()),
            _ => Err(self.closed_error()),
        }
    }

    /// Whether the broker has blocked the connection (a resource alarm).
    pub fn is_blocked(&self) -> bool {
        self.inner.state.is_blocked()
    }

    /// Waits until the connection is closed for good, and returns why. (A connection that is
    /// lost and recovered is not closed.)
    pub async fn closed(&self) -> Error {
        let mut status = self.inner.state.watch_status();
        // An error means the driver is gone, which also means closed.
        let _ = status
            .wait_for(|status| *status == ConnectionStatus::Closed)
            .await;
        self.closed_error()
    }

    /// A stream of what happens to the connection: blocked and unblocked, lost, each recovery
    /// attempt, recovered (with what could not be restored, and renamed queues), consumers
    /// lagging, closed.
    ///
    /// Each call gives a new stream that sees the events from then on. A stream that falls
    /// more than 256 events behind skips the oldest.
    pub fn events(&self) -> Events {
        // Subscribe before looking at the state, so a close in between is not missed.
        let inner = BroadcastStream::new(self.inner.state.subscribe());
        Events {
            inner,
            closed: self.inner.closed_reason(),
            finished: false,
        }
    }

    /// The properties the broker sent in `connection.start` (product, version, capabilities, …)
    /// on the current connection.
    pub fn server_properties(&self) -> FieldTable {
        self.inner.state.server_properties()
    }

    /// Where the connection is connected now (or was last), as `host:port`.
    pub fn endpoint(&self) -> String {
        self.inner.state.endpoint()
    }

    /// The negotiated highest channel number.
    pub fn channel_max(&self) -> u16 {
        self.inner.state.channel_max()
    }

    /// The negotiated largest frame, in bytes.
    pub fn frame_max(&self) -> u32 {
        self.inner.state.frame_max()
    }

    /// The negotiated heartbeat interval (zero: heartbeats are off).
    pub fn heartbeat(&self) -> Duration {
        self.inner.state.heartbeat()
    }

    /// What the connection has declared and not deleted: exchanges, queues, bindings,
    /// consumers. This is what recovery declares again on a new connection.
    pub fn topology(&self) -> Topology {
        self.inner.state.topology().clone()
    }

    /// Bytes of deliveries its consumers hold beyond their prefetch, which count against
    /// [`ConnectionOptions::consumer_buffer_budget`].
    pub fn consumer_buffer_bytes(&self) -> usize {
        self.inner.state.consumer_budget.used()
    }

    /// A snapshot of what the connection has done since it was made (across recoveries):
    /// messages published, confirmed, returned, delivered and acknowledged, bytes and frames
    /// each way, heartbeats, losses and recoveries.
    ///
    /// Counting costs one relaxed atomic add per event, so it is always on.
    ///
    /// ```no_run
    /// # async fn example(connection: warren::Connection) {
    /// let before = connection.stats();
    /// // ... publish and consume ...
    /// let done = connection.stats().since(&before);
    /// println!("published {}, delivered {}", done.published, done.delivered);
    /// # }
    /// ```
    pub fn stats(&self) -> ConnectionStats {
        self.inner.state.counters.snapshot()
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
