//! [`Publisher`]: publishing with confirms from any number of tasks, over a small pool of
//! confirm-mode channels of one connection.
//!
//! Each [`Publisher::publish`] takes a place in one in-flight window shared by all the
//! channels, publishes on its task's channel (a tokio task keeps to one channel, picked by
//! its task id, so that the publishes it makes one after another go out in order and a
//! confirmation wakes only the tasks of its channel), and returns when the broker has confirmed
//! the message (or with a [`PublishError`] that says what is known of it). A channel the broker
//! closes (a soft error, such as `404 NOT_FOUND` for a missing exchange) fails only the
//! publishes it carried and is replaced; across an automatic recovery the channels come back
//! under the same handles, and publishes lost in it are reported as of unknown outcome, or
//! published again if [`PublisherOptions::republish_attempts`] allows it.

mod error;
mod options;
mod pool;

pub use error::PublishError;
pub use options::{DEFAULT_PUBLISHER_CHANNELS, DEFAULT_PUBLISHER_MAX_IN_FLIGHT, PublisherOptions};

use std::fmt;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::{Sleep, sleep};

use crate::channel::{BasicPublishOptions, Body};
use crate::confirms::Confirmation;
use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::protocol::BasicProperties;
use pool::ChannelPool;

/// Publishes with confirms from any number of tasks over a pool of confirm-mode channels.
///
/// Cloning is cheap and gives another handle to the same publisher; hand one to each task.
/// Every publish waits for the broker's confirmation, so when
/// [`Publisher::publish`] returns `Ok(())` the broker has taken responsibility for the
/// message. Throughput comes from publishing from many tasks (or many concurrent futures) at
/// once: up to [`PublisherOptions::max_in_flight`] publishes await their confirmations
/// together, spread over [`PublisherOptions::channels`] channels.
///
/// What a publish that did not end in an ack returns:
///
/// | what happened | result |
/// | --- | --- |
/// | the broker nacked it | [`PublishError::Nacked`] |
/// | `mandatory` and no queue took it | [`PublishError::Returned`] |
/// | the broker closed the channel (e.g. 404, missing exchange) | [`PublishError::Failed`] with [`Error::ChannelClosed`], for it and the other publishes in flight on that channel; the next publish gets a new channel |
/// | the connection was lost before the confirmation | [`PublishError::OutcomeUnknown`] with [`Error::PublishOutcomeUnknown`], or published again on the recovered connection if [`PublisherOptions::republish_attempts`] allows |
/// | the deadline passed after the message was sent | [`PublishError::OutcomeUnknown`] with [`Error::Timeout`] |
/// | the deadline passed before it could be sent, the connection is closed or blocked with [`BlockedPolicy::FailFast`](crate::BlockedPolicy) | [`PublishError::Failed`] |
///
/// A publish is never reported confirmed unless the broker acked it.
///
/// ```no_run
/// # async fn example(connection: warren::Connection) -> Result<(), Box<dyn std::error::Error>> {
/// use warren::{BasicProperties, BasicPublishOptions, Publisher, PublisherOptions};
///
/// let publisher = Publisher::new(&connection, PublisherOptions::default()).await?;
/// let mut tasks = Vec::new();
/// for task in 0..10 {
///     let publisher = publisher.clone();
///     tasks.push(tokio::spawn(async move {
///         let body = format!("hello from task {task}");
///         publisher
///             .publish("", "greetings", BasicPublishOptions::default(), body, BasicProperties::default())
///             .await
///     }));
/// }
/// for task in tasks {
///     task.await??;
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

struct Inner {
    pool: ChannelPool,
    /// One permit per publish awaiting its confirmation.
    window: Arc<Semaphore>,
    max_in_flight: usize,
    timeout: Duration,
    republish_attempts: u32,
    closed: AtomicBool,
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("in_flight", &self.in_flight())
            .field("max_in_flight", &self.inner.max_in_flight)
            .field("timeout", &self.inner.timeout)
            .field("republish_attempts", &self.inner.republish_attempts)
            .field("closed", &self.inner.closed.load(Ordering::Acquire))
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// Opens the publisher's channels on `connection` and puts them in confirm mode.
    ///
    /// Fails with [`Error::Config`] if `options` asks for no channel, more channels than the
    /// connection's `channel_max`, or an empty window, and with the error of opening a channel
    /// otherwise.
    pub async fn new(connection: &Connection, options: PublisherOptions) -> Result<Self> {
        let channel_max = usize::from(connection.channel_max());
        if options.get_channels() == 0 || options.get_channels() > channel_max {
            return Err(Error::Config(format!(
                "PublisherOptions::channels must be between 1 and the connection's channel_max \
                 ({channel_max})"
            )));
        }
        let max_in_flight = options.get_max_in_flight();
        if max_in_flight == 0 || max_in_flight > Semaphore::MAX_PERMITS {
            return Err(Error::Config(format!(
                "PublisherOptions::max_in_flight must be between 1 and {}",
                Semaphore::MAX_PERMITS
            )));
        }
        let pool = ChannelPool::open(connection, options.get_channels()).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                window: Arc::new(Semaphore::new(max_in_flight)),
                max_in_flight,
                timeout: options
                    .get_timeout()
                    .unwrap_or(connection.inner.operation_timeout),
                republish_attempts: options.get_republish_attempts(),
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// Publishes a message and waits for the broker's confirmation, within the publisher's
    /// deadline ([`PublisherOptions::timeout`]).
    ///
    /// The arguments are those of [`Channel::basic_publish`](crate::Channel::basic_publish).
    /// Returns `Ok(())` when the broker acked the message; the [`Publisher`] documentation
    /// lists the errors. Dropping the future before it completes gives up waiting; a message
    /// already sent stays sent.
    pub fn publish<'body>(
        &self,
        exchange: &str,
        routing_key: &str,
        options: BasicPublishOptions,
        body: impl Into<Body<'body>>,
        properties: BasicProperties,
    ) -> impl Future<Output = std::result::Result<(), PublishError>> + Send {
        // One flat state machine that uses its arguments in place (an `async fn` would keep
        // them twice, as received and as locals, the 424-byte properties among them; nested
        // futures taking the message by value would too), with one timer bounding every wait:
        // a publish's future is moved into whatever runs it concurrently with others.
        let body = body.into();
        async move {
            let inner = &*self.inner;
            // `sleep`, not `sleep_until(now + timeout)`: a timeout too large to add to an
            // instant (`Duration::MAX` for "no deadline") means no deadline, not a panic.
            let mut deadline = pin!(sleep(inner.timeout));
            let _permit = match before(deadline.as_mut(), pin!(inner.window.acquire())).await {
                Some(Ok(permit)) => permit,
                Some(Err(_)) => return Err(PublishError::Failed(closed())),
                None => return Err(PublishError::Failed(self.timed_out("basic.publish"))),
            };
            let mut republished = 0;
            // A channel found closed sends nothing; each slot may be replaced once before giving up.
            let mut unsent = 0;
            loop {
                if inner.closed.load(Ordering::Acquire) {
                    return Err(PublishError::Failed(closed()));
                }
                let channel = match inner.pool.next() {
                    (_, Some(channel)) => channel,
                    // Rare: boxed, so that its future does not make every publish's larger.
                    (slot, None) => {
                        match before(
                            deadline.as_mut(),
                            Box::pin(inner.pool.replace(slot)).as_mut(),
                        )
                        .await
                        {
                            Some(Ok(channel)) => channel,
                            Some(Err(error)) => return Err(PublishError::Failed(error)),
                            None => {
                                return Err(PublishError::Failed(self.timed_out("channel.open")));
                            }
                        }
                    }
                };
                let publish = channel.basic_publish_ref(
                    exchange,
                    routing_key,
                    options,
                    body.clone(),
                    &properties,
                );
                let confirm = match before(deadline.as_mut(), pin!(publish)).await {
                    Some(Ok(confirm)) => confirm,
                    // Closed before the message was handed over: nothing was sent, try another.
                    Some(Err(error @ Error::ChannelClosed { .. })) => {
                        unsent += 1;
                        if unsent > inner.pool.len() {
                            return Err(PublishError::Failed(error));
                        }
                        continue;
                    }
                    Some(Err(error)) => return Err(PublishError::Failed(error)),
                    None => return Err(PublishError::Failed(self.timed_out("basic.publish"))),
                };
                let unknown = match before(deadline.as_mut(), pin!(confirm)).await {
                    Some(Ok(Confirmation::Ack)) => return Ok(()),
                    Some(Ok(Confirmation::Nack)) => return Err(PublishError::Nacked),
                    Some(Ok(Confirmation::Returned(message))) => {
                        return Err(PublishError::Returned(message));
                    }
                    Some(Ok(_)) => {
                        return Err(PublishError::Failed(Error::InvalidState(
                            "a publisher channel was not in confirm mode",
                        )));
                    }
                    Some(Err(error @ Error::PublishOutcomeUnknown { .. })) => error,
                    Some(Err(error)) => return Err(PublishError::Failed(error)),
                    None => {
                        let error = self.timed_out("publish confirmation");
                        return Err(PublishError::OutcomeUnknown(error));
                    }
                };
                if republished >= inner.republish_attempts {
                    return Err(PublishError::OutcomeUnknown(unknown));
                }
                republished += 1;
                tracing::debug!(
                    attempt = republished,
                    "republishing a message whose outcome was lost with the connection"
                );
            }
        }
    }

    /// Publishes under way now: each holds a place in the in-flight window until its outcome
    /// is known.
    pub fn in_flight(&self) -> usize {
        self.inner.max_in_flight - self.inner.window.available_permits()
    }

    /// The connection the publisher's channels belong to.
    pub fn connection(&self) -> &Connection {
        self.inner.pool.connection()
    }

    /// Closes the publisher's channels; later publishes (on any clone) fail with
    /// [`Error::InvalidState`]. Publishes still awaiting a confirmation fail with the channel's
    /// close: wait for them first to know their outcome. The connection stays open.
    pub async fn close(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.pool.close().await
    }

    fn timed_out(&self, operation: &'static str) -> Error {
        Error::Timeout {
            operation,
            after: self.inner.timeout,
        }
    }
}

/// Runs `step` until it completes (`Some` of its output) or `deadline` passes (`None`),
/// whichever comes first; the deadline is looked at only while the step waits. All the waits
/// of one publish share its one timer this way, where a `timeout_at` each would make a timer
/// entry for every wait and make the publish's future larger by each of them.
fn before<'a, F: Future>(
    mut deadline: Pin<&'a mut Sleep>,
    mut step: Pin<&'a mut F>,
) -> impl Future<Output = Option<F::Output>> + 'a {
    std::future::poll_fn(move |cx| match step.as_mut().poll(cx) {
        Poll::Ready(output) => Poll::Ready(Some(output)),
        Poll::Pending => deadline.as_mut().poll(cx).map(|()| None),
    })
}

fn closed() -> Error {
    Error::InvalidState("the publisher was closed")
}
