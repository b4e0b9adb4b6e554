//! Channels: the handle applications do their work through.
//!
//! A [`Channel`] is a cheap, cloneable handle; the connection's driver task owns the channel's
//! protocol state. Every AMQP method of the exchange, queue, basic, tx and confirm classes is an
//! `async fn` named `{class}_{method}`, taking a `{Class}{Method}Options` struct (with `Default`)
//! and returning a named result. They are thin wrappers over two generic calls that work for
//! any generated method: [`Channel::call`] (a synchronous method and its typed reply) and
//! [`Channel::send`] (an asynchronous method).

mod basic;
mod body;
mod exchange;
mod options;
mod queue;
mod stream;
mod tx;

pub use basic::Returns;
pub use body::Body;
pub use options::*;
pub use stream::{
    STREAM_OFFSET_ARGUMENT, StreamConsumeOptions, StreamDeclareOptions, StreamOffset,
};

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::connection::{Connection, ConnectionInner};
use crate::error::{Error, Result};
use crate::protocol::{Method, Request};
use crate::shared::channel::ChannelShared;
use crate::shared::command::{ChannelKey, Command, OnReply, Rpc, RpcReply};
use crate::telemetry;
use crate::wire::{AmqpMethod, MethodId};
use tracing::Instrument;

/// What one handle holds; the last one dropped closes the channel.
struct ChannelHandle {
    shared: Arc<ChannelShared>,
    connection: Connection,
}

impl Drop for ChannelHandle {
    fn drop(&mut self) {
        if self.shared.is_open() {
            let _ = self.connection.inner.control(Command::CloseChannel {
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
/// [`Error::Timeout`]; the channel stays consistent (a late reply is discarded). A call whose
/// future is dropped is the same: the crate documentation's section on
/// [cancellation](crate#cancellation-what-a-dropped-future-did) says, call by call, whether
/// its request reached the broker.
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
        check_tables(&method)?;
        if M::SYNCHRONOUS && !method.no_wait() {
            return Err(Error::InvalidArgument(format!(
                "{} expects a reply; use Channel::call, or set its no_wait field",
                M::NAME
            )));
        }
        let selects_confirms = matches!(method, Method::ConfirmSelect(_));
        self.command(Command::send(self.key(), method)).await?;
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
        check_tables(&method)?;
        let name = method.name();
        let (reply, receiver) = oneshot::channel();
        let mut receiver = ReplyReceiver {
            receiver,
            channel: self,
            requeue_get: matches!(&method, Method::BasicGet(get) if !get.no_ack),
        };
        let rpc = Rpc {
            channel: self.key(),
            method,
            replies,
            on_reply,
            reply,
        };
        let exchange = async {
            self.command(Command::Rpc(Box::new(rpc))).await?;
            match (&mut receiver.receiver).await {
                Ok(result) => result,
                Err(_) => Err(self.closed_error()),
            }
        };
        let span = telemetry::rpc_span(name, self.id(), || self.server());
        #[cfg(feature = "opentelemetry")]
        let otel = telemetry::otel::Operation::rpc(name, self.id(), || self.server());
        let result = match tokio::time::timeout(self.timeout, exchange)
            .instrument(span.clone())
            .await
        {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout {
                operation: name,
                after: self.timeout,
            }),
        };
        if let Err(error) = &result {
            telemetry::record_error(&span, error);
        }
        #[cfg(feature = "opentelemetry")]
        otel.end(result.as_ref().err());
        result
    }

    /// Queues a command for the driver, failing at once if the channel is closed.
    pub(crate) async fn command(&self, command: Command) -> Result<()> {
        // Acknowledgements made after this command must follow it (see `shared/acks.rs`).
        self.handle.shared.acks.seal();
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

    /// Where the channel's connection is connected, for spans.
    pub(crate) fn server(&self) -> telemetry::Server {
        self.connection_inner().state.server()
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

/// The receiving end of an RPC's reply. If the caller gives up (its future is dropped, or its
/// deadline passes) after the reply arrived but before reading it, dropping this undoes what
/// the reply started, as the driver does for a reply that arrives after the caller gave up
/// (`Driver::rpc_reply`): a consumer nobody will read is cancelled, and a message that
/// `basic.get` fetched for nobody is requeued instead of staying unacknowledged.
struct ReplyReceiver<'a> {
    receiver: oneshot::Receiver<Result<RpcReply>>,
    channel: &'a Channel,
    /// Whether the request is a `basic.get` without `no_ack`, whose message must go back.
    requeue_get: bool,
}

impl Drop for ReplyReceiver<'_> {
    fn drop(&mut self) {
        // Closed first, so that a reply cannot slip in between the look and the drop of the
        // receiver: a send after this fails, and the driver undoes the reply itself.
        self.receiver.close();
        if let Ok(Ok(reply)) = self.receiver.try_recv() {
            let channel = self.channel.key();
            let command = match reply.method {
                Method::BasicConsumeOk(ok) => Command::ForgetConsumer {
                    channel,
                    consumer_tag: ok.consumer_tag,
                },
                Method::BasicGetOk(ok) if self.requeue_get => Command::send(
                    channel,
                    crate::protocol::BasicReject {
                        delivery_tag: ok.delivery_tag,
                        requeue: true,
                    },
                ),
                _ => return,
            };
            let _ = self.channel.handle.connection.inner.control(command);
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

/// Refuses a method whose field tables cannot be sent (see
/// [`FieldTable::check_sendable`](crate::wire::FieldTable::check_sendable)), before it is
/// encoded.
fn check_tables(method: &Method) -> Result<()> {
    for table in method.field_tables() {
        table.check_sendable()?;
    }
    Ok(())
}

fn unexpected_reply(request: &'static str, reply: &Method) -> Error {
    Error::UnexpectedReply {
        request,
        reply: reply.name(),
    }
}
