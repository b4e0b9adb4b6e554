//! [`RpcClient`]: calls over direct reply-to, and the task that hands replies to them.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use tokio::task::AbortHandle;

use super::DIRECT_REPLY_TO;
use super::error::RpcError;
use super::pending::{Counters, Pending};
use crate::channel::{BasicConsumeOptions, BasicPublishOptions, Body, Channel, Returns};
use crate::connection::{Connection, ConnectionEvent, Events};
use crate::consumer::Consumer;
use crate::error::Error;
use crate::protocol::BasicProperties;
use crate::wire::ShortString;

/// The deadline of a call unless its options say otherwise.
const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Options of one [`RpcClient::call`].
#[derive(Debug, Clone)]
pub struct RpcCallOptions {
    /// The exchange to publish the request to; empty (the default) is the default
    /// exchange, which routes to the queue named by the routing key. The exchange must
    /// exist: publishing to one that does not makes the broker close the client's channel
    /// (404), which fails the calls waiting on it with [`RpcError::Closed`]; the next call
    /// opens a new channel.
    pub exchange: String,
    /// How long the call waits for its reply, publishing included (default 30 s).
    pub timeout: Duration,
    /// Publish the request `mandatory` (default `true`): if no queue takes it, the broker
    /// returns it and the call fails at once with [`RpcError::Unroutable`].
    pub mandatory: bool,
    /// Properties of the request (content type, headers, expiration, ...). `reply_to` and
    /// `correlation_id` are the client's: what is set here is replaced.
    pub properties: BasicProperties,
}

impl Default for RpcCallOptions {
    fn default() -> Self {
        Self {
            exchange: String::new(),
            timeout: DEFAULT_CALL_TIMEOUT,
            mandatory: true,
            properties: BasicProperties::default(),
        }
    }
}

impl RpcCallOptions {
    /// These options with deadline `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// These options with the request's `properties`.
    pub fn with_properties(mut self, properties: BasicProperties) -> Self {
        self.properties = properties;
        self
    }
}

/// The reply to a call: the reply message's properties and body.
#[derive(Debug, Clone)]
pub struct RpcReply {
    /// The reply's properties (`correlation_id` is the call's).
    pub properties: BasicProperties,
    /// The reply's body.
    pub body: Bytes,
}

/// A client for request/reply over RabbitMQ's direct reply-to.
///
/// Cloning is cheap: clones share one channel, one reply consumer and one table of
/// waiting calls, so any number of tasks can call at once. The last clone dropped stops
/// the client and closes its channel. See the [module documentation](super) for what
/// happens to calls across a loss of the connection.
///
/// ```no_run
/// # async fn example(connection: warren::Connection) -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use warren::rpc::{RpcCallOptions, RpcClient};
///
/// let client = RpcClient::new(&connection).await?;
/// let options = RpcCallOptions::default().with_timeout(Duration::from_secs(5));
/// let reply = client.call("rpc_queue", "30", options).await?;
/// println!("fib(30) = {}", String::from_utf8_lossy(&reply.body));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RpcClient {
    inner: Arc<Inner>,
}

struct Inner {
    /// The channel and reply consumer calls go through now; replaced when its channel has
    /// closed (see [`RpcClient::call`]).
    session: Mutex<Arc<Session>>,
    /// Held while a replacement session opens, so that concurrent calls open one, not many.
    reopening: tokio::sync::Mutex<()>,
    /// Shared by every session: correlation ids and the late-reply count.
    counters: Arc<Counters>,
}

/// One channel with its reply consumer, the calls waiting on it, and the task that hands
/// them their replies.
struct Session {
    channel: Channel,
    pending: Arc<Pending>,
    task: AbortHandle,
}

impl Drop for Session {
    fn drop(&mut self) {
        // The task holds the reply consumer; ending it cancels the consumer, and dropping
        // the channel handle here closes the channel.
        self.task.abort();
    }
}

impl Session {
    /// Whether calls can go through this session: its channel is open (a channel being
    /// recovered is) and its reply task still takes calls.
    fn is_usable(&self) -> bool {
        self.channel.is_open() && self.pending.is_open()
    }

    /// Opens a channel on `connection` and starts consuming direct reply-to on it.
    async fn open(connection: &Connection, counters: &Arc<Counters>) -> Result<Self, Error> {
        let channel = connection.open_channel().await?;
        // Subscribe before the first publish, so that no return or loss is missed.
        let returns = channel.returns();
        let events = connection.events();
        let replies = channel
            .basic_consume(
                DIRECT_REPLY_TO,
                BasicConsumeOptions {
                    // Direct reply-to requires it.
                    no_ack: true,
                    ..Default::default()
                },
            )
            .await?;
        let pending = Arc::new(Pending::new(
            connection.inner.state.clone(),
            counters.clone(),
        ));
        let task = tokio::spawn(dispatch(pending.clone(), replies, returns, events));
        Ok(Self {
            channel,
            pending,
            task: task.abort_handle(),
        })
    }
}

impl std::fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcClient")
            .field("channel", &self.session().channel.id())
            .field("pending_calls", &self.pending_calls())
            .field("late_replies", &self.late_replies())
            .finish()
    }
}

impl RpcClient {
    /// Opens a channel on `connection` and starts consuming direct reply-to on it. Spawns
    /// the client's reply task on the current tokio runtime.
    pub async fn new(connection: &Connection) -> Result<Self, Error> {
        let counters = Arc::new(Counters::default());
        let session = Session::open(connection, &counters).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                session: Mutex::new(Arc::new(session)),
                reopening: tokio::sync::Mutex::new(()),
                counters,
            }),
        })
    }

    /// Publishes a request to `options.exchange` with `routing_key` and waits for its reply,
    /// within `options.timeout`.
    ///
    /// The request carries `reply_to` [`DIRECT_REPLY_TO`] and a `correlation_id` of its own;
    /// the server must reply to the one with the other (as [`RpcServer`](super::RpcServer)
    /// does, and RabbitMQ's tutorial servers). Dropping the returned future gives up the
    /// call: its entry is removed, and a reply that comes later is counted in
    /// [`RpcClient::late_replies`].
    ///
    /// When the broker has closed the client's channel (a request to an exchange that does
    /// not exist, say), the calls that were waiting on it failed with [`RpcError::Closed`];
    /// this call opens a new channel and reply consumer first, as the
    /// [`Publisher`](crate::Publisher) replaces its channels. If that fails (the connection
    /// is closed for good), the call fails with [`RpcError::Closed`] and its cause.
    pub async fn call<'body>(
        &self,
        routing_key: &str,
        body: impl Into<Body<'body>>,
        options: RpcCallOptions,
    ) -> Result<RpcReply, RpcError> {
        let RpcCallOptions {
            exchange,
            timeout,
            mandatory,
            properties,
        } = options;
        let publish = BasicPublishOptions {
            mandatory,
            ..Default::default()
        };
        // The deadline covers opening a new channel too, when the call needs one.
        let exchange_and_wait = async {
            let session = self.usable_session().await?;
            let pending = &session.pending;
            let (id, receiver) = pending.register()?;
            let _forget = Forget { pending, id };
            let properties = properties
                .with_reply_to(ShortString::from_static(DIRECT_REPLY_TO))
                .with_correlation_id(id.to_string());
            session
                .channel
                .basic_publish(&exchange, routing_key, publish, body, properties)
                .await
                .map_err(RpcError::Publish)?;
            receiver
                .await
                .unwrap_or_else(|_| Err(pending.closed_error()))
        };
        match tokio::time::timeout(timeout, exchange_and_wait).await {
            Ok(result) => result,
            Err(_) => Err(RpcError::Timeout { after: timeout }),
        }
    }

    /// Replies that came for calls no longer waiting (they timed out, were dropped, or
    /// failed), and were dropped. Also counts replies with a correlation id this client
    /// never gave.
    pub fn late_replies(&self) -> u64 {
        self.inner.counters.late_replies()
    }

    /// Calls waiting for their replies now.
    pub fn pending_calls(&self) -> usize {
        self.session().pending.len()
    }

    /// The channel the client publishes requests and receives replies on now (a later call
    /// may replace it, if the broker closes it).
    pub fn channel(&self) -> Channel {
        self.session().channel.clone()
    }

    fn session(&self) -> Arc<Session> {
        self.inner
            .session
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The session to call on: the current one, or a new one in its place if the current
    /// one's channel has closed.
    async fn usable_session(&self) -> Result<Arc<Session>, RpcError> {
        let current = self.session();
        if current.is_usable() {
            return Ok(current);
        }
        let _reopening = self.inner.reopening.lock().await;
        let current = self.session();
        if current.is_usable() {
            // Another call replaced it while this one waited.
            return Ok(current);
        }
        // Every session's channel is on the connection the client was made with.
        let session = Session::open(current.channel.connection(), &self.inner.counters)
            .await
            .map_err(RpcError::Closed)?;
        tracing::debug!(
            closed = current.channel.id(),
            channel = session.channel.id(),
            "RPC client: its channel had closed; calling on a new one"
        );
        let session = Arc::new(session);
        *self.inner.session.lock().unwrap_or_else(|e| e.into_inner()) = session.clone();
        Ok(session)
    }
}

/// Removes a call's entry when the call ends, however it ends (a reply already removed it).
struct Forget<'a> {
    pending: &'a Pending,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.pending.forget(self.id);
    }
}

/// The client's task: hands replies to their calls, fails calls whose requests came back
/// or whose connection was lost, and closes the client when its reply consumer ends.
async fn dispatch(
    pending: Arc<Pending>,
    mut replies: Consumer,
    mut returns: Returns,
    mut events: Events,
) {
    let mut end: Option<Error> = None;
    let mut events_open = true;
    let mut returns_open = true;
    poll_fn(|cx| {
        loop {
            let mut progress = false;
            // Losses first: a reply that arrives after a loss cannot belong to a call
            // registered before it, but the failure must not wait behind a burst of replies.
            while events_open {
                match Pin::new(&mut events).poll_next(cx) {
                    Poll::Ready(Some(ConnectionEvent::Disconnected { reason })) => {
                        pending.lost(&reason);
                    }
                    // A lagging events stream skips what it missed; the loss count still
                    // tells whether a loss came in between.
                    Poll::Ready(Some(_)) => pending.lost(&Error::InvalidState(
                        "the connection was lost and recovered",
                    )),
                    Poll::Ready(None) => events_open = false,
                    Poll::Pending => break,
                }
                progress = true;
            }
            while returns_open {
                match Pin::new(&mut returns).poll_next(cx) {
                    Poll::Ready(Some(returned)) => {
                        let correlation_id = returned.properties.correlation_id.as_deref();
                        let error = RpcError::Unroutable {
                            reply_code: returned.reply_code,
                            reply_text: returned.reply_text.to_string(),
                            exchange: returned.exchange.to_string(),
                            routing_key: returned.routing_key.to_string(),
                        };
                        pending.fail(correlation_id, error);
                    }
                    Poll::Ready(None) => returns_open = false,
                    Poll::Pending => break,
                }
                progress = true;
            }
            match Pin::new(&mut replies).poll_next(cx) {
                Poll::Ready(Some(Ok(delivery))) => {
                    let correlation_id = delivery.properties.correlation_id.clone();
                    let reply = RpcReply {
                        properties: delivery.properties,
                        body: delivery.body,
                    };
                    pending.reply(correlation_id.as_deref(), reply);
                }
                Poll::Ready(Some(Err(Error::UndecodableDelivery(undecodable)))) => {
                    // Its correlation id cannot be read: the call it answers times out.
                    tracing::warn!(error = %undecodable.error(), "dropped an undecodable RPC reply");
                    pending.count_late(None);
                }
                Poll::Ready(Some(Err(error))) => end = Some(error),
                Poll::Ready(None) => return Poll::Ready(()),
                Poll::Pending if !progress => return Poll::Pending,
                Poll::Pending => {}
            }
        }
    })
    .await;
    let reason = end.unwrap_or(Error::InvalidState("the RPC client's reply consumer ended"));
    tracing::debug!(error = %reason, "RPC client closed: its reply consumer ended");
    pending.close(RpcError::Closed(reason));
}
