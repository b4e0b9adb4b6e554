//! Consumers: a stream of deliveries from one `basic.consume`.
//!
//! # Buffering
//!
//! The connection hands each delivery to its consumer's queue at once: a consumer that is not
//! read never holds up the other channels, consumers, heartbeats or closes of its connection.
//! What bounds memory:
//!
//! - With a prefetch (the last [`Channel::basic_qos`](crate::Channel::basic_qos) before
//!   `basic_consume`), the broker never sends an acknowledging consumer more unacknowledged
//!   deliveries than the prefetch count, so its queue never holds more.
//! - Everything else (`no_ack` consumers, consumers without a prefetch) counts, in bytes,
//!   against the connection's
//!   [`consumer_buffer_budget`](crate::ConnectionOptions::consumer_buffer_budget) (64 MiB by
//!   default). Past it the connection stops reading from the socket, so the broker holds the
//!   rest, and emits [`ConnectionEvent::ConsumerLagging`](crate::ConnectionEvent::ConsumerLagging)
//!   naming the consumer that holds the most. If that lasts the
//!   [`consumer_stall_timeout`](crate::ConnectionOptions::consumer_stall_timeout) (30 s by
//!   default), that consumer is cancelled: its stream yields what it holds, then ends with
//!   [`Error::ConsumerLagged`], and the connection reads again.
//!
//! Set a prefetch for consumers that may fall behind: the broker then keeps their backlog.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_core::Stream;

use crate::channel::{BasicAckOptions, BasicNackOptions, BasicRejectOptions, Channel};
use crate::error::{Error, Result};
use crate::frame::ContentHeader;
use crate::message::{Delivery, Envelope, stream_offset};
use crate::protocol::BasicProperties;
use crate::shared::command::Command;
use crate::shared::consumer::{ConsumerEvent, ConsumerShared, RawDelivery};
use crate::shared::delivery_queue;
use crate::shared::direct_writes;
use crate::telemetry;
use crate::wire::{ContentProperties, DecodeError, Reader, ShortString};

/// The deliveries of one consumer, as a [`Stream`] of `Result<Delivery, Error>`.
///
/// Get one from [`Channel::basic_consume`](crate::Channel::basic_consume). The stream ends
/// after [`Consumer::cancel`], or with one final error when the broker cancels the consumer
/// (its queue was deleted: [`Error::ConsumerCancelled`]) or the channel or connection closes.
/// An `Err` item that is [`Error::UndecodableDelivery`] is one bad message (undecodable
/// properties, or a body over `max_body_size`); the stream goes on.
///
/// When the connection is lost and recovered, the stream goes on: recovery consumes again
/// under the same tag and feeds the same stream. Deliveries of an acknowledging consumer that
/// were still in the stream when the connection was lost are dropped (the broker requeues
/// them and delivers them again, flagged `redelivered`); a delivery taken before the loss
/// can no longer be acknowledged ([`Error::StaleDelivery`]). A stream consumer
/// (`x-stream-offset`) is consumed again from the offset after the last delivery this stream
/// handed out (see [`Channel::stream_consume`]). If recovery cannot restore the consumer, the
/// stream ends with [`Error::ConsumerNotRecovered`].
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
    /// The queue consumed from, for spans.
    queue: ShortString,
    channel: Channel,
    receiver: delivery_queue::Receiver<ConsumerEvent>,
    shared: Arc<ConsumerShared>,
    no_ack: bool,
    /// A stream consumer: the offset of each delivery handed out is recorded for recovery.
    stream: bool,
    cancelled: bool,
    finished: bool,
}

impl Consumer {
    pub(crate) fn new(
        tag: ShortString,
        queue: ShortString,
        channel: Channel,
        receiver: delivery_queue::Receiver<ConsumerEvent>,
        shared: Arc<ConsumerShared>,
        no_ack: bool,
    ) -> Self {
        Self {
            tag,
            queue,
            channel,
            receiver,
            stream: shared.is_stream(),
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

    /// Deliveries waiting in the stream, not yet taken.
    pub fn buffered_count(&self) -> usize {
        self.receiver.len()
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

    /// [`Consumer::decode`], and the delivery's process span(s) started.
    #[cold]
    #[inline(never)]
    fn decode_traced(&self, raw: RawDelivery) -> Result<Delivery> {
        let mut decoded = self.decode(raw);
        if let Ok(delivery) = &mut decoded {
            delivery.start_processing(&self.queue);
        }
        decoded
    }

    // Inlined into poll_next, as when it was its only caller: the delivery is built in place.
    #[inline(always)]
    fn decode(&self, raw: RawDelivery) -> Result<Delivery> {
        let envelope = Envelope {
            consumer_tag: raw.deliver.consumer_tag,
            delivery_tag: raw.deliver.delivery_tag,
            redelivered: raw.deliver.redelivered,
            exchange: raw.deliver.exchange,
            routing_key: raw.deliver.routing_key,
        };
        decode_delivery(envelope, raw.header, raw.body, &self.channel, self.no_ack)
    }

    /// Records, for recovery, the stream offset of a delivery handed to the application.
    #[cold]
    #[inline(never)]
    fn record_stream_offset(&self, delivery: &Result<Delivery>) {
        let offset = match delivery {
            Ok(delivery) => delivery.stream_offset(),
            // Taken too, though undecodable: its offset is in its properties, if they decode.
            Err(Error::UndecodableDelivery(undecodable)) => {
                BasicProperties::decode(&mut Reader::new(&undecodable.properties))
                    .ok()
                    .and_then(|properties| stream_offset(&properties))
            }
            Err(_) => None,
        };
        if let Some(offset) = offset {
            self.shared.handed_out(offset);
        }
    }
}

/// Decodes a delivery's properties; a failure, or a body skipped for being over
/// `max_body_size`, is an error of this message only. `no_ack`: it was consumed or got with
/// `no_ack`, so it takes no acknowledgement.
pub(crate) fn decode_delivery(
    envelope: Envelope,
    header: ContentHeader,
    body: Result<Bytes, DecodeError>,
    channel: &Channel,
    no_ack: bool,
) -> Result<Delivery> {
    let (error, body) = match body {
        Ok(body) => match BasicProperties::decode(&mut Reader::new(&header.properties)) {
            Ok(properties) => {
                return Ok(Delivery::new(
                    envelope,
                    properties,
                    body,
                    channel.clone(),
                    no_ack,
                ));
            }
            Err(error) => (error, body),
        },
        Err(error) => (error, Bytes::new()),
    };
    tracing::warn!(
        delivery_tag = envelope.delivery_tag,
        %error,
        "delivery that cannot be handed over whole"
    );
    Err(Error::UndecodableDelivery(Arc::new(UndecodableDelivery {
        envelope,
        properties: header.properties,
        body,
        error,
        channel: channel.clone(),
    })))
}

impl Stream for Consumer {
    type Item = Result<Delivery>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        let next = self.receiver.poll_recv(cx);
        // Acknowledgements this thread writes itself wait for the end of the batch in hand
        // (`shared/direct_writes.rs`); a stream that runs dry ends it.
        direct_writes::note_more_in_hand(self.receiver.has_taken());
        if next.is_pending() {
            self.channel.connection_inner().state.flush_direct_writes();
        }
        match next {
            Poll::Ready(Some(raw)) if self.stream || telemetry::tracing_operations() => {
                let delivery = match telemetry::tracing_operations() {
                    true => self.decode_traced(raw),
                    false => self.decode(raw),
                };
                if self.stream {
                    self.record_stream_offset(&delivery);
                }
                Poll::Ready(Some(delivery))
            }
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
        // Acknowledgements this thread held wait for nobody now.
        direct_writes::note_more_in_hand(false);
        self.channel.connection_inner().state.flush_direct_writes();
        if self.finished || !self.channel.is_open() {
            return;
        }
        let connection = self.channel.connection_inner();
        if !self.cancelled {
            let _ = connection.control(Command::ForgetConsumer {
                channel: self.channel.key(),
                consumer_tag: self.tag.clone(),
            });
        }
        if self.no_ack {
            return;
        }
        self.channel.requeue_unread(self.receiver.close());
    }
}

/// A delivery that could not be handed over whole: its properties could not be decoded (a
/// header table nested deeper than [`MAX_NESTING`](crate::wire::MAX_NESTING), an unknown field
/// tag, bad UTF-8), or its body was larger than the connection's
/// [`max_body_size`](crate::ConnectionOptions::max_body_size)
/// ([`DecodeError::BodyTooLarge`]: the body was read and dropped, never buffered, and
/// [`UndecodableDelivery::body`] is empty).
///
/// The message is intact on the broker and still needs an answer: reject it without requeue
/// so that it goes to the queue's dead-letter exchange (requeueing it would deliver it again,
/// forever). The raw property bytes are here for inspection. The connection and the other
/// deliveries are unaffected.
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

    /// The message body; empty when the error is [`DecodeError::BodyTooLarge`].
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
