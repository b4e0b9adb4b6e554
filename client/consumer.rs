//! Consumers: a stream of deliveries from one `basic.consume`.
//!
//! # Buffering
//!
//! Each consumer buffers deliveries in a bounded queue sized from the channel's prefetch count
//! (the last [`Channel::basic_qos`](crate::Channel::basic_qos) before `basic_consume`), or
//! [`DEFAULT_CONSUMER_BUFFER`] deliveries when no prefetch is set. With a prefetch, the broker
//! never sends more unacknowledged messages than fit, so the buffer never fills. Without
//! one, a consumer that stops reading fills its buffer, and the connection then stops reading
//! from the socket until it has room: memory stays bounded, but every channel of the
//! connection waits (head-of-line blocking, as in RabbitMQ's Go client). Set a prefetch, and
//! keep slow consumers on their own connection.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_core::Stream;

use crate::channel::{BasicAckOptions, BasicNackOptions, BasicRejectOptions, Channel};
use crate::connection::command::Command;
use crate::delivery_queue;
use crate::error::{Error, Result};
use crate::frame::ContentHeader;
use crate::message::{Delivery, Envelope};
use crate::protocol::{BasicDeliver, BasicProperties, BasicReject};
use crate::wire::{ContentProperties, DecodeError, Reader, ShortString};

/// Deliveries a consumer buffers when its channel has no prefetch count.
pub const DEFAULT_CONSUMER_BUFFER: usize = 256;

/// A delivery as the driver assembled it; properties are decoded in the consumer's task.
#[derive(Debug)]
pub(crate) struct RawDelivery {
    pub deliver: BasicDeliver,
    pub header: ContentHeader,
    pub body: Bytes,
}

/// What the driver sends a consumer.
pub(crate) type ConsumerEvent = RawDelivery;

/// State shared by a consumer stream and the driver.
#[derive(Debug, Default)]
pub(crate) struct ConsumerShared {
    /// Why the stream ended, set by the driver before it drops its sender; `None` when the
    /// application cancelled.
    end: Mutex<Option<Error>>,
}

impl ConsumerShared {
    pub(crate) fn set_end(&self, reason: Error) {
        let mut end = self.end.lock().unwrap_or_else(|e| e.into_inner());
        end.get_or_insert(reason);
    }

    fn take_end(&self) -> Option<Error> {
        self.end.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// The deliveries of one consumer, as a [`Stream`] of `Result<Delivery, Error>`.
///
/// Get one from [`Channel::basic_consume`](crate::Channel::basic_consume). The stream ends
/// after [`Consumer::cancel`], or with one final error when the broker cancels the consumer
/// (its queue was deleted: [`Error::ConsumerCancelled`]) or the channel or connection closes.
/// An `Err` item that is [`Error::UndecodableDelivery`] is one bad message; the stream goes on.
///
/// Dropping a consumer cancels it on the broker and requeues the deliveries it had buffered.
///
/// ```no_run
/// # async fn example(channel: warren::Channel) -> Result<(), warren::Error> {
/// use futures_util::StreamExt;
/// use warren::{BasicAckOptions, BasicConsumeOptions};
///
/// let mut consumer = channel.basic_consume("tasks", BasicConsumeOptions::default()).await?;
/// while let Some(delivery) = consumer.next().await {
///     let delivery = delivery?;
///     println!("{:?}", delivery.body);
///     delivery.ack(BasicAckOptions::default()).await?;
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Consumer {
    tag: ShortString,
    channel: Channel,
    receiver: delivery_queue::Receiver<ConsumerEvent>,
    shared: Arc<ConsumerShared>,
    no_ack: bool,
    cancelled: bool,
    finished: bool,
}

impl Consumer {
    pub(crate) fn new(
        tag: ShortString,
        channel: Channel,
        receiver: delivery_queue::Receiver<ConsumerEvent>,
        shared: Arc<ConsumerShared>,
        no_ack: bool,
    ) -> Self {
        Self {
            tag,
            channel,
            receiver,
            shared,
            no_ack,
            cancelled: false,
            finished: false,
        }
    }

    /// The consumer tag (the broker's choice if none was given).
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The channel the consumer belongs to.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Cancels the consumer (`basic.cancel`) and waits for the broker to confirm. Deliveries
    /// that arrived before still come out of the stream; then it ends.
    pub async fn cancel(&mut self) -> Result<()> {
        if self.cancelled {
            return Ok(());
        }
        self.channel
            .basic_cancel(&self.tag, crate::BasicCancelOptions::default())
            .await?;
        self.cancelled = true;
        Ok(())
    }

    fn decode(&self, raw: RawDelivery) -> Result<Delivery> {
        let envelope = Envelope {
            consumer_tag: raw.deliver.consumer_tag,
            delivery_tag: raw.deliver.delivery_tag,
            redelivered: raw.deliver.redelivered,
            exchange: raw.deliver.exchange,
            routing_key: raw.deliver.routing_key,
        };
        decode_delivery(envelope, raw.header, raw.body, &self.channel)
    }
}

/// Decodes a delivery's properties; a failure is an error of this message only.
pub(crate) fn decode_delivery(
    envelope: Envelope,
    header: ContentHeader,
    body: Bytes,
    channel: &Channel,
) -> Result<Delivery> {
    match BasicProperties::decode(&mut Reader::new(header.properties.clone())) {
        Ok(properties) => Ok(Delivery::new(envelope, properties, body, channel.clone())),
        Err(error) => {
            tracing::warn!(
                delivery_tag = envelope.delivery_tag,
                %error,
                "delivery with undecodable properties"
            );
            Err(Error::UndecodableDelivery(Arc::new(UndecodableDelivery {
                envelope,
                properties: header.properties,
                body,
                error,
                channel: channel.clone(),
            })))
        }
    }
}

impl Stream for Consumer {
    type Item = Result<Delivery>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        match self.receiver.poll_recv(cx) {
            Poll::Ready(Some(raw)) => Poll::Ready(Some(self.decode(raw))),
            Poll::Ready(None) => {
                self.finished = true;
                Poll::Ready(self.shared.take_end().map(Err))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if self.finished || !self.channel.is_open() {
            return;
        }
        let connection = self.channel.connection_inner();
        if !self.cancelled {
            connection.control(Command::ForgetConsumer {
                channel: self.channel.key(),
                consumer_tag: self.tag.clone(),
            });
        }
        if self.no_ack {
            return;
        }
        // Hand back what was delivered but never read, so it is not stuck until the channel closes.
        for raw in self.receiver.close() {
            connection.control(Command::Send {
                channel: self.channel.key(),
                method: BasicReject {
                    delivery_tag: raw.deliver.delivery_tag,
                    requeue: true,
                }
                .into(),
            });
        }
    }
}

/// A delivery whose properties could not be decoded (a header table nested deeper than
/// [`MAX_NESTING`](crate::wire::MAX_NESTING), an unknown field tag, bad UTF-8).
///
/// The message is intact on the broker and still needs an answer: reject it without requeue
/// so that it goes to the queue's dead-letter exchange (requeueing it would deliver it again,
/// forever). The raw property bytes are here for inspection.
#[derive(Debug)]
pub struct UndecodableDelivery {
    envelope: Envelope,
    properties: Bytes,
    body: Bytes,
    error: DecodeError,
    channel: Channel,
}

impl UndecodableDelivery {
    /// The delivery tag.
    pub fn delivery_tag(&self) -> u64 {
        self.envelope.delivery_tag
    }

    /// Routing information.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// What was wrong with the properties.
    pub fn error(&self) -> &DecodeError {
        &self.error
    }

    /// The property flags and list as received.
    pub fn raw_properties(&self) -> &Bytes {
        &self.properties
    }

    /// The message body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Acknowledges the message.
    pub async fn ack(&self) -> Result<()> {
        self.channel
            .basic_ack(self.delivery_tag(), BasicAckOptions::default())
            .await
    }

    /// Rejects the message; pass `requeue: false` to dead-letter it.
    pub async fn reject(&self, options: BasicRejectOptions) -> Result<()> {
        self.channel
            .basic_reject(self.delivery_tag(), options)
            .await
    }

    /// Negatively acknowledges the message.
    pub async fn nack(&self, options: BasicNackOptions) -> Result<()> {
        self.channel.basic_nack(self.delivery_tag(), options).await
    }
}
