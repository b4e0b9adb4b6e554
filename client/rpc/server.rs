//! [`RpcServer`]: answers the requests of a queue with an async handler.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::catch_unwind::{CatchUnwind, panic_message};
use crate::channel::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions,
    Channel,
};
use crate::connection::Connection;
use crate::consumer::Consumer;
use crate::error::Error;
use crate::message::{Delivery, Envelope};
use crate::protocol::BasicProperties;

/// Options of [`RpcServer::serve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcServerOptions {
    /// The channel's prefetch (`basic.qos`): requests the broker hands the server before it
    /// acknowledges any (default 32). At least 1.
    pub prefetch: u16,
    /// Handlers running at once (default 16). At least 1; more than `prefetch` is pointless,
    /// since no more requests are delivered.
    pub concurrency: usize,
    /// The consumer tag; empty lets the broker choose.
    pub consumer_tag: String,
}

impl Default for RpcServerOptions {
    fn default() -> Self {
        Self {
            prefetch: 32,
            concurrency: 16,
            consumer_tag: String::new(),
        }
    }
}

/// A request, as the handler gets it.
#[derive(Debug, Clone)]
pub struct RpcRequest {
    /// Where it came from and its delivery tag (acknowledging is the server's job).
    pub envelope: Envelope,
    /// The request's properties (`reply_to`, `correlation_id`, headers, ...).
    pub properties: BasicProperties,
    /// The request's body.
    pub body: Bytes,
}

/// What a handler answers: a body and the reply's properties (`correlation_id` is set by
/// the server to the request's).
#[derive(Debug, Clone, Default)]
pub struct RpcResponse {
    /// The reply's body.
    pub body: Bytes,
    /// The reply's properties.
    pub properties: BasicProperties,
}

impl RpcResponse {
    /// A reply with `body` and no properties.
    pub fn new(body: impl Into<Bytes>) -> Self {
        Self {
            body: body.into(),
            properties: BasicProperties::default(),
        }
    }

    /// This reply with `properties`.
    pub fn with_properties(mut self, properties: BasicProperties) -> Self {
        self.properties = properties;
        self
    }
}

macro_rules! response_from {
    ($($source:ty),*) => {
        $(impl From<$source> for RpcResponse {
            fn from(body: $source) -> Self {
                Self::new(body)
            }
        })*
    };
}

response_from!(Bytes, Vec<u8>, String, &'static str, &'static [u8]);

/// A running RPC server: a consumer of one queue whose requests a handler answers.
///
/// Dropping it stops taking requests at once: the consumer is cancelled, and requests
/// delivered but not yet handed to a handler go back to the queue. Handlers already running
/// finish, reply and acknowledge (their requests keep the channel open until then).
/// [`RpcServer::shutdown`] does the same and waits for them, within a grace period.
#[derive(Debug)]
pub struct RpcServer {
    channel: Channel,
    consumer_tag: String,
    task: Option<JoinHandle<Error>>,
    in_flight: Arc<Semaphore>,
    concurrency: u32,
}

impl Drop for RpcServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl RpcServer {
    /// Starts serving `queue` on a new channel of `connection`, with `handler` answering each
    /// request. The queue must exist (declare it first, with a dead-letter exchange if failed
    /// requests should be kept). Spawns the server's task on the current tokio runtime.
    ///
    /// The handler gets each [`RpcRequest`] and returns a future of `Ok(response)` (anything
    /// `Into<RpcResponse>`: `String`, `Vec<u8>`, `Bytes`, ...) or `Err(error)`. On `Ok` the
    /// response is published to the request's `reply_to` with its `correlation_id` and then
    /// the request is acknowledged (a request without `reply_to` is acknowledged without a
    /// reply). On `Err`, or a panic, the request is rejected without requeue: it goes to the
    /// queue's dead-letter exchange if it has one.
    pub async fn serve<H, F, R, E>(
        connection: &Connection,
        queue: &str,
        options: RpcServerOptions,
        handler: H,
    ) -> Result<Self, Error>
    where
        H: Fn(RpcRequest) -> F + Send + Sync + 'static,
        F: Future<Output = Result<R, E>> + Send + 'static,
        R: Into<RpcResponse> + 'static,
        E: std::fmt::Display + 'static,
    {
        let RpcServerOptions {
            prefetch,
            concurrency,
            consumer_tag,
        } = options;
        if prefetch == 0 {
            return Err(Error::InvalidArgument(
                "RpcServerOptions::prefetch must be at least 1: 0 would let the broker send \
                 the whole queue"
                    .to_owned(),
            ));
        }
        let concurrency = u32::try_from(concurrency)
            .ok()
            .filter(|c| (1..=Semaphore::MAX_PERMITS as u32).contains(c))
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "RpcServerOptions::concurrency must be from 1 to {}, not {concurrency}",
                    Semaphore::MAX_PERMITS
                ))
            })?;
        let channel = connection.open_channel().await?;
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        let consumer = channel
            .basic_consume(
                queue,
                BasicConsumeOptions {
                    consumer_tag,
                    ..Default::default()
                },
            )
            .await?;
        let consumer_tag = consumer.tag().to_owned();
        let in_flight = Arc::new(Semaphore::new(concurrency as usize));
        let handler = Arc::new(handler);
        let task = tokio::spawn(serve(consumer, handler, in_flight.clone()));
        Ok(Self {
            channel,
            consumer_tag,
            task: Some(task),
            in_flight,
            concurrency,
        })
    }

    /// The server's channel.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Handlers running now.
    pub fn running_handlers(&self) -> usize {
        self.concurrency as usize - self.in_flight.available_permits()
    }

    /// Waits until the server stops by itself (its consumer ended: the queue was deleted,
    /// the connection closed for good), and returns why.
    pub async fn stopped(&mut self) -> Error {
        let Some(task) = self.task.as_mut() else {
            return Error::InvalidState("the RPC server was stopped");
        };
        let result = task.await;
        self.task = None;
        result.unwrap_or(Error::InvalidState(
            "the RPC server's task ended abnormally",
        ))
    }

    /// Stops taking requests (cancels the consumer), waits up to `grace` for the handlers
    /// running to reply and acknowledge, then closes the channel. Requests delivered but not
    /// handled go back to the queue.
    pub async fn shutdown_within(mut self, grace: Duration) -> Result<(), Error> {
        let cancelled = self
            .channel
            .basic_cancel(&self.consumer_tag, Default::default())
            .await;
        // The task stops once the consumer's stream ends; handlers it spawned hold permits.
        let everything = self.in_flight.clone().acquire_many_owned(self.concurrency);
        let _ = tokio::time::timeout(grace, everything).await;
        if let Some(task) = self.task.take() {
            task.abort();
        }
        let closed = self.channel.close().await;
        cancelled.and(closed)
    }

    /// [`RpcServer::shutdown_within`] with 30 seconds of grace.
    pub async fn shutdown(self) -> Result<(), Error> {
        self.shutdown_within(Duration::from_secs(30)).await
    }
}

/// The server's task: takes requests as permits allow and spawns a handler for each.
/// Returns why the consumer ended.
async fn serve<H, F, R, E>(
    mut consumer: Consumer,
    handler: Arc<H>,
    in_flight: Arc<Semaphore>,
) -> Error
where
    H: Fn(RpcRequest) -> F + Send + Sync + 'static,
    F: Future<Output = Result<R, E>> + Send + 'static,
    R: Into<RpcResponse> + 'static,
    E: std::fmt::Display + 'static,
{
    loop {
        let delivery = match std::future::poll_fn(|cx| {
            std::pin::Pin::new(&mut consumer).poll_next(cx)
        })
        .await
        {
            Some(Ok(delivery)) => delivery,
            Some(Err(Error::UndecodableDelivery(undecodable))) => {
                tracing::warn!(error = %undecodable.error(), "rejecting an undecodable RPC request");
                let _ = undecodable
                    .reject(BasicRejectOptions { requeue: false })
                    .await;
                continue;
            }
            Some(Err(error)) => return error,
            None => return Error::InvalidState("the RPC server's consumer was cancelled"),
        };
        // Wait for a free place before spawning; the broker holds the rest of the queue
        // (beyond the prefetch) meanwhile.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return Error::InvalidState("the RPC server was stopped");
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            handle(delivery, &*handler).await;
            drop(permit);
        });
    }
}

/// Runs the handler on one request, replies and acknowledges, or rejects.
async fn handle<H, F, R, E>(delivery: Delivery, handler: &H)
where
    H: Fn(RpcRequest) -> F,
    F: Future<Output = Result<R, E>>,
    R: Into<RpcResponse>,
    E: std::fmt::Display,
{
    let request = RpcRequest {
        envelope: delivery.envelope.clone(),
        properties: delivery.properties.clone(),
        body: delivery.body.clone(),
    };
    // Settled to plain data before anything else is awaited, so that neither the handler's
    // types nor a panic's payload live across an await (they need not be `Send`).
    let outcome = match CatchUnwind::new(handler(request)).await {
        Ok(Ok(response)) => Ok(response.into()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(panic) => Err(format!("the handler panicked: {}", panic_message(&*panic))),
    };
    let failure = match outcome {
        Ok(response) => match reply(&delivery, response).await {
            Ok(()) => {
                if let Err(error) = delivery.ack(BasicAckOptions::default()).await {
                    tracing::warn!(%error, "could not acknowledge an answered RPC request");
                }
                return;
            }
            Err(error) => {
                // The channel is most likely gone (and the request with it, back to the
                // queue); if not, the request is rejected like a failed one.
                tracing::warn!(%error, "could not publish an RPC reply");
                error.to_string()
            }
        },
        Err(failure) => failure,
    };
    tracing::warn!(
        error = %failure,
        correlation_id = delivery.properties.correlation_id.as_deref(),
        "RPC handler failed; rejecting the request without requeue (to the queue's dead-letter exchange, if any)"
    );
    if let Err(error) = delivery.reject(BasicRejectOptions { requeue: false }).await {
        tracing::warn!(%error, "could not reject a failed RPC request");
    }
}

/// Publishes `response` to the request's `reply_to` with its `correlation_id`.
async fn reply(request: &Delivery, response: RpcResponse) -> Result<(), Error> {
    let Some(reply_to) = request.properties.reply_to.as_deref() else {
        tracing::debug!("RPC request without reply_to: acknowledged without a reply");
        return Ok(());
    };
    let mut properties = response.properties;
    properties.correlation_id = request.properties.correlation_id.clone();
    request
        .channel()
        .basic_publish(
            "",
            reply_to,
            BasicPublishOptions::default(),
            response.body,
            properties,
        )
        .await?;
    Ok(())
}
