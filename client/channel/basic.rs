//! The basic class: publishing, consuming, getting and acknowledging messages.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio_stream::wrappers::BroadcastStream;

/// Bytes a channel's encode buffer grows by.
const ENCODE_BUFFER_SIZE: usize = 16 * 1024;
/// Spare capacity under which the encode buffer grows before encoding.
const ENCODE_BUFFER_LOW: usize = 1024;

use super::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, BasicRecoverOptions, BasicRejectOptions, Channel,
};
use crate::confirms::{Mandatory, PublishConfirm};
use crate::connection::command::{Command, OnReply, Publish};
use crate::consumer::{Consumer, ConsumerShared, DEFAULT_CONSUMER_BUFFER, decode_delivery};
use crate::delivery_queue;
use crate::error::{Error, Result};
use crate::frame;
use crate::message::{Envelope, GetMessage, ReturnedMessage};
use crate::protocol::{
    BasicAck, BasicCancel, BasicConsume, BasicGet, BasicNack, BasicProperties, BasicPublish,
    BasicQos, BasicRecover, BasicRecoverAsync, BasicRecoverOk, BasicReject, Method,
};
use crate::wire::{AmqpMethod, ShortString};

impl Channel {
    /// Limits unacknowledged deliveries (`basic.qos`): the broker stops delivering to a
    /// consumer (or, with `global`, to the channel) that holds `prefetch_count` of them.
    /// 0 means no limit. Consumers started afterwards size their buffers from it.
    pub async fn basic_qos(&self, prefetch_count: u16, options: BasicQosOptions) -> Result<()> {
        self.call(BasicQos {
            prefetch_size: options.prefetch_size,
            prefetch_count,
            global: options.global,
        })
        .await?;
        Ok(())
    }

    /// Starts a consumer on `queue` (`basic.consume`); its deliveries come out of the
    /// returned [`Consumer`] stream.
    pub async fn basic_consume(
        &self,
        queue: &str,
        options: BasicConsumeOptions,
    ) -> Result<Consumer> {
        let BasicConsumeOptions {
            consumer_tag,
            no_local,
            no_ack,
            exclusive,
            arguments,
        } = options;
        let method = BasicConsume {
            queue: ShortString::try_from(queue)?,
            consumer_tag: ShortString::try_from(consumer_tag)?,
            no_local,
            no_ack,
            exclusive,
            no_wait: false,
            arguments,
        };
        let capacity = match self.shared().prefetch.load(Ordering::Acquire) {
            0 => DEFAULT_CONSUMER_BUFFER,
            prefetch => usize::from(prefetch),
        };
        let (events, receiver) = delivery_queue::channel(capacity);
        let shared = Arc::new(ConsumerShared::default());
        let on_reply = OnReply::RegisterConsumer {
            events,
            shared: shared.clone(),
            no_ack,
        };
        let reply = self
            .rpc(
                method.into(),
                <BasicConsume as crate::protocol::Request>::REPLIES,
                on_reply,
            )
            .await?;
        let Method::BasicConsumeOk(ok) = reply.method else {
            return Err(Error::UnexpectedReply {
                request: BasicConsume::NAME,
                reply: reply.method.name(),
            });
        };
        Ok(Consumer::new(
            ok.consumer_tag,
            self.clone(),
            receiver,
            shared,
            no_ack,
        ))
    }

    /// Cancels a consumer (`basic.cancel`); its stream ends after the deliveries it already
    /// received. [`Consumer::cancel`] does the same from the stream.
    pub async fn basic_cancel(
        &self,
        consumer_tag: &str,
        options: BasicCancelOptions,
    ) -> Result<()> {
        let BasicCancelOptions {} = options;
        self.call(BasicCancel {
            consumer_tag: ShortString::try_from(consumer_tag)?,
            no_wait: false,
        })
        .await?;
        Ok(())
    }

    /// Publishes a message (`basic.publish` with its content).
    ///
    /// Returns once the message is queued on the connection, with a [`PublishConfirm`] to
    /// await for the outcome: the broker's ack, nack or return in confirm mode (see
    /// [`Channel::confirm_select`]), [`Confirmation::NotRequested`](crate::Confirmation)
    /// otherwise. The body is split into frames of the negotiated frame_max and is not copied
    /// when large. While the broker pauses the channel (`channel.flow`) or the connection
    /// is backed up, this waits, within the channel's deadline.
    ///
    /// ```no_run
    /// # async fn example(channel: warren::Channel) -> Result<(), warren::Error> {
    /// use warren::protocol::BasicProperties;
    /// use warren::wire::ShortString;
    /// use warren::{BasicPublishOptions, Confirmation};
    ///
    /// let properties = BasicProperties {
    ///     content_type: Some(ShortString::from_static("text/plain")),
    ///     delivery_mode: Some(2), // persistent
    ///     ..Default::default()
    /// };
    /// let confirm = channel
    ///     .basic_publish("", "tasks", BasicPublishOptions::default(), "hello", properties)
    ///     .await?;
    /// assert_eq!(confirm.await?, Confirmation::Ack);
    /// # Ok(()) }
    /// ```
    pub fn basic_publish(
        &self,
        exchange: &str,
        routing_key: &str,
        options: BasicPublishOptions,
        body: impl Into<Bytes>,
        properties: BasicProperties,
    ) -> impl Future<Output = Result<PublishConfirm>> + Send + '_ {
        let prepared = basic_publish_method(exchange, routing_key, options)
            .and_then(|method| self.prepare_publish(method, body.into(), &properties));
        self.enqueue_publish(prepared)
    }

    /// [`Channel::basic_publish`] with the generated `basic.publish` method, for callers that
    /// already hold one.
    pub fn publish_method(
        &self,
        method: BasicPublish,
        body: Bytes,
        properties: BasicProperties,
    ) -> impl Future<Output = Result<PublishConfirm>> + Send + '_ {
        self.enqueue_publish(self.prepare_publish(method, body, &properties))
    }

    // A publish is prepared before its future exists, and the future holds only the command:
    // the properties (448 bytes) and the method never enter it, so they are not moved each
    // time the caller's future is, which was a seventh of a publish's instructions.

    /// Encodes a publish into the command for the driver, with the confirmation the caller
    /// gets back.
    fn prepare_publish(
        &self,
        method: BasicPublish,
        body: Bytes,
        properties: &BasicProperties,
    ) -> Result<PreparedPublish> {
        let shared = self.shared();
        let frames = self.encode_publish(&method, properties, body.len())?;
        // Only a publish in confirm mode has an outcome to wait for; the others need no
        // channel back from the driver.
        let confirming = shared.confirm_mode.load(Ordering::Acquire);
        let (reply, confirm) = if confirming {
            let (reply, receiver) = oneshot::channel();
            (Some(reply), PublishConfirm::pending(receiver, self.clone()))
        } else {
            (None, PublishConfirm::not_requested())
        };
        let mandatory = (confirming && method.mandatory).then(|| {
            Box::new(Mandatory {
                exchange: method.exchange,
                routing_key: method.routing_key,
                body: body.clone(),
            })
        });
        Ok(PreparedPublish {
            publish: Publish {
                channel: self.key(),
                frames,
                body,
                reply,
                mandatory,
                permit: None,
            },
            confirm,
        })
    }

    /// Hands a prepared publish to the driver, waiting while the channel is paused, the
    /// in-flight limit is reached or the driver's queue is full, within the deadline.
    async fn enqueue_publish(&self, prepared: Result<PreparedPublish>) -> Result<PublishConfirm> {
        let PreparedPublish {
            mut publish,
            confirm,
        } = prepared?;
        let shared = self.shared();
        // Honour channel.flow: publishes wait while the broker has paused the channel.
        let paused = !*shared.flow.borrow();
        let limit = shared.in_flight.get();
        // The common case waits for nothing, so it needs no timer.
        let fast = match (paused, limit) {
            (true, _) => false,
            (false, None) => true,
            (false, Some(limit)) => match limit.clone().try_acquire_owned() {
                Ok(permit) => {
                    publish.permit = Some(permit);
                    true
                }
                Err(_) => false,
            },
        };
        let mut command = Command::Publish(publish);
        if fast {
            match self.try_command(command)? {
                None => return Ok(confirm),
                // The driver's queue is full: wait for room below, within the deadline.
                Some(back) => command = back,
            }
        }
        // Boxed: the waits and the timer would make every publish's future several times
        // larger, and it is moved with the caller's future, fast path or not.
        Box::pin(self.enqueue_publish_slowly(command, paused, limit)).await?;
        Ok(confirm)
    }

    /// The slow path of [`Channel::enqueue_publish`]: waits for the channel to be resumed, for
    /// an in-flight permit and for room in the driver's queue, within the deadline.
    async fn enqueue_publish_slowly(
        &self,
        mut command: Command,
        paused: bool,
        limit: Option<&Arc<tokio::sync::Semaphore>>,
    ) -> Result<()> {
        let shared = self.shared();
        let enqueue = async {
            if paused {
                let mut flow = shared.flow.subscribe();
                flow.wait_for(|active| *active)
                    .await
                    .map_err(|_| self.closed_error())?;
            }
            if let (Some(limit), Command::Publish(publish)) = (limit, &mut command)
                && publish.permit.is_none()
            {
                let permit = limit
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| self.closed_error())?;
                publish.permit = Some(permit);
            }
            self.command(command).await
        };
        tokio::time::timeout(self.timeout(), enqueue)
            .await
            .map_err(|_| Error::Timeout {
                operation: "basic.publish",
                after: self.timeout(),
            })?
    }

    /// Encodes the method and content header frames of a publish, checking that they fit in
    /// the negotiated frame_max.
    fn encode_publish(
        &self,
        method: &BasicPublish,
        properties: &BasicProperties,
        body_size: usize,
    ) -> Result<Bytes> {
        let frame_max = self.connection_inner().state.frame_max();
        let mut buffer = self
            .shared()
            .encode_buffer
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if buffer.capacity() < ENCODE_BUFFER_LOW {
            // Reclaims the old storage once the driver has dropped every frame split off it.
            buffer.reserve(ENCODE_BUFFER_SIZE);
        }
        let encoded =
            frame::encode_method(&mut buffer, self.id(), method, frame_max).and_then(|()| {
                frame::encode_content_header(
                    &mut buffer,
                    self.id(),
                    properties,
                    body_size as u64,
                    frame_max,
                )
            });
        match encoded {
            Ok(()) => Ok(buffer.split().freeze()),
            Err(error) => {
                buffer.clear();
                Err(error.into())
            }
        }
    }

    /// Fetches one message from `queue` (`basic.get`), or `None` if it is empty.
    pub async fn basic_get(
        &self,
        queue: &str,
        options: BasicGetOptions,
    ) -> Result<Option<GetMessage>> {
        let method = BasicGet {
            queue: ShortString::try_from(queue)?,
            no_ack: options.no_ack,
        };
        let reply = self
            .rpc(
                method.into(),
                <BasicGet as crate::protocol::Request>::REPLIES,
                OnReply::Nothing,
            )
            .await?;
        match (reply.method, reply.content) {
            (Method::BasicGetEmpty(_), _) => Ok(None),
            (Method::BasicGetOk(ok), Some((header, body))) => {
                let envelope = Envelope {
                    consumer_tag: ShortString::default(),
                    delivery_tag: ok.delivery_tag,
                    redelivered: ok.redelivered,
                    exchange: ok.exchange,
                    routing_key: ok.routing_key,
                };
                let delivery = decode_delivery(envelope, header, body, self)?;
                Ok(Some(GetMessage {
                    delivery,
                    message_count: ok.message_count,
                }))
            }
            (other, _) => Err(Error::UnexpectedReply {
                request: BasicGet::NAME,
                reply: other.name(),
            }),
        }
    }

    /// Acknowledges a delivery of this channel (`basic.ack`).
    pub async fn basic_ack(&self, delivery_tag: u64, options: BasicAckOptions) -> Result<()> {
        self.send(BasicAck {
            delivery_tag,
            multiple: options.multiple,
        })
        .await
    }

    /// Rejects one or more deliveries of this channel (`basic.nack`, a RabbitMQ extension).
    pub async fn basic_nack(&self, delivery_tag: u64, options: BasicNackOptions) -> Result<()> {
        self.send(BasicNack {
            delivery_tag,
            multiple: options.multiple,
            requeue: options.requeue,
        })
        .await
    }

    /// Rejects a delivery of this channel (`basic.reject`).
    pub async fn basic_reject(&self, delivery_tag: u64, options: BasicRejectOptions) -> Result<()> {
        self.send(BasicReject {
            delivery_tag,
            requeue: options.requeue,
        })
        .await
    }

    /// Redelivers this channel's unacknowledged messages (`basic.recover`) and waits for the
    /// broker to confirm (`basic.recover-ok`).
    pub async fn basic_recover(&self, options: BasicRecoverOptions) -> Result<()> {
        // The specification gives basic.recover no <response>, though RabbitMQ answers it.
        const REPLIES: &[crate::wire::MethodId] = &[BasicRecoverOk::ID];
        let method = BasicRecover {
            requeue: options.requeue,
        };
        self.rpc(method.into(), REPLIES, OnReply::Nothing).await?;
        Ok(())
    }

    /// Redelivers this channel's unacknowledged messages without waiting for the broker
    /// (`basic.recover-async`, deprecated by the specification but supported by RabbitMQ).
    pub async fn basic_recover_async(&self, options: BasicRecoverOptions) -> Result<()> {
        self.send(BasicRecoverAsync {
            requeue: options.requeue,
        })
        .await
    }

    /// A stream of the messages the broker returns on this channel (`basic.return`: mandatory
    /// publishes no queue took).
    ///
    /// Each call gives a stream that sees returns from then on; a stream more than 1024
    /// messages behind loses the oldest. In confirm mode the returned message also comes with
    /// the publish's [`Confirmation::Returned`](crate::Confirmation::Returned).
    pub fn returns(&self) -> Returns {
        Returns {
            inner: BroadcastStream::new(self.shared().subscribe_returns()),
        }
    }
}

/// The stream [`Channel::returns`] gives.
pub struct Returns {
    inner: BroadcastStream<Arc<ReturnedMessage>>,
}

impl std::fmt::Debug for Returns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Returns").finish_non_exhaustive()
    }
}

impl futures_core::Stream for Returns {
    type Item = ReturnedMessage;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<ReturnedMessage>> {
        use std::task::Poll;
        loop {
            match std::pin::Pin::new(&mut self.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(message))) => {
                    return Poll::Ready(Some(Arc::unwrap_or_clone(message)));
                }
                Poll::Ready(Some(Err(lagged))) => {
                    tracing::warn!(%lagged, "returns stream fell behind and lost returned messages");
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// The `basic.publish` method for [`Channel::basic_publish`]'s arguments.
fn basic_publish_method(
    exchange: &str,
    routing_key: &str,
    options: BasicPublishOptions,
) -> Result<BasicPublish> {
    Ok(BasicPublish {
        exchange: ShortString::try_from(exchange)?,
        routing_key: ShortString::try_from(routing_key)?,
        mandatory: options.mandatory,
        immediate: options.immediate,
    })
}

/// A publish encoded and ready for the driver, with the confirmation its caller gets.
struct PreparedPublish {
    publish: Publish,
    confirm: PublishConfirm,
}
