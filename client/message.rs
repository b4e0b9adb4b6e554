//! Messages the broker hands to the application: deliveries and messages got with
//! `basic.get`, each able to acknowledge itself on the channel it came from.

use std::sync::atomic::{AtomicU8, Ordering};

use bytes::Bytes;
use tracing::Instrument;

use crate::channel::{BasicAckOptions, BasicNackOptions, BasicRejectOptions, Channel};
use crate::error::{Error, Result};
use crate::protocol::BasicProperties;
pub use crate::shared::messages::{Envelope, ReturnedMessage};

/// A message delivered to a consumer or fetched with `basic.get`.
///
/// Unless it was consumed with `no_ack`, acknowledge it exactly once with [`Delivery::ack`],
/// [`Delivery::nack`] or [`Delivery::reject`], on the channel it came from (the delivery
/// remembers it). A second one fails with [`Error::InvalidState`](crate::Error::InvalidState)
/// and sends nothing, as does one of a delivery consumed with `no_ack` or already covered by
/// a `multiple` acknowledgement of a later delivery: the broker would close the channel for
/// any of them (406, unknown delivery tag).
/// Unacknowledged messages go back to their queue when the channel closes.
#[derive(Debug)]
pub struct Delivery {
    /// Routing information and the delivery tag.
    pub envelope: Envelope,
    /// The message properties.
    pub properties: BasicProperties,
    /// The message body: a slice of the connection's read buffer, not a copy.
    pub body: Bytes,
    channel: Channel,
    /// [`UNSETTLED`], [`SETTLED`] by the first acknowledgement (which alone is sent), or
    /// [`NO_ACK`] from the start.
    settlement: AtomicU8,
    /// The `process` span, for deliveries taken from a consumer stream while a subscriber
    /// wants it (boxed: a delivery is moved several times on its way, and is larger by a
    /// pointer only).
    span: Option<Box<tracing::Span>>,
    /// The OpenTelemetry `process` span's context, ended when the delivery is dropped.
    #[cfg(feature = "opentelemetry")]
    otel: Option<Box<crate::telemetry::otel::Process>>,
}

/// [`Delivery::settlement`]: no acknowledgement made yet.
const UNSETTLED: u8 = 0;
/// [`Delivery::settlement`]: acknowledged, rejected or nacked.
const SETTLED: u8 = 1;
/// [`Delivery::settlement`]: consumed with `no_ack`, nothing to settle.
const NO_ACK: u8 = 2;

impl Delivery {
    pub(crate) fn new(
        envelope: Envelope,
        properties: BasicProperties,
        body: Bytes,
        channel: Channel,
        no_ack: bool,
    ) -> Self {
        Self {
            envelope,
            properties,
            body,
            channel,
            settlement: AtomicU8::new(if no_ack { NO_ACK } else { UNSETTLED }),
            span: None,
            #[cfg(feature = "opentelemetry")]
            otel: None,
        }
    }

    /// Starts the delivery's `process` span, as the application takes it from the stream of
    /// a consumer of `queue` (or gets it from `queue` with `basic.get`).
    pub(crate) fn start_processing(&mut self, queue: &str) {
        let channel = &self.channel;
        let span = crate::telemetry::process_span(
            queue,
            &self.envelope,
            &self.properties,
            self.body.len(),
            || channel.server(),
        );
        if !span.is_disabled() {
            self.span = Some(Box::new(span));
        }
        #[cfg(feature = "opentelemetry")]
        {
            self.otel = Some(Box::new(crate::telemetry::otel::Process::start(
                queue,
                &self.envelope,
                &self.properties,
                self.body.len(),
                || channel.server(),
            )));
        }
    }

    /// Marks the delivery settled; fails if it already was (by its `ack`, `nack` or `reject`,
    /// or by a `multiple` one of a later delivery on its channel), or needs no settling
    /// (`no_ack`).
    fn settle_once(&self) -> Result<()> {
        if self
            .channel
            .shared()
            .settled_by_multiple(self.envelope.delivery_tag)
        {
            return Err(Error::InvalidState(
                "the delivery was already settled by a multiple ack or nack of a later one",
            ));
        }
        match self.settlement.compare_exchange(
            UNSETTLED,
            SETTLED,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => Ok(()),
            Err(NO_ACK) => Err(Error::InvalidState(
                "the delivery was consumed with no_ack: the broker needs no acknowledgement",
            )),
            Err(_) => Err(Error::InvalidState(
                "the delivery was already acknowledged, rejected or nacked",
            )),
        }
    }

    /// Runs `settle` (an acknowledgement) within the delivery's process span(s), so that its
    /// spans are their children.
    async fn within_spans(&self, settle: impl Future<Output = Result<()>>) -> Result<()> {
        #[cfg(feature = "opentelemetry")]
        let settle = crate::telemetry::otel::within(self.otel.as_deref(), settle);
        settle.instrument(self.span().clone()).await
    }

    /// Whether the delivery's acknowledgements run within its process span(s).
    fn traced(&self) -> bool {
        #[cfg(feature = "opentelemetry")]
        if self.otel.is_some() {
            return true;
        }
        self.span.is_some()
    }

    /// The `process` span of a delivery taken from a [`Consumer`](crate::Consumer) stream or
    /// got with [`Channel::basic_get`] (disabled when no `tracing` subscriber wants `debug`
    /// spans of `warren`): enter it, or `.instrument(delivery.span().clone())` the handling
    /// future, so that what the application logs says which message it is about. It ends when
    /// the delivery is dropped; [`Delivery::ack`], `nack` and `reject` make their `settle`
    /// spans its children.
    pub fn span(&self) -> &tracing::Span {
        static NONE: tracing::Span = tracing::Span::none();
        self.span.as_deref().unwrap_or(&NONE)
    }

    /// The OpenTelemetry context of the delivery's `{queue} process` span (a child of the
    /// publisher's trace context carried in the headers), for deliveries taken from a
    /// [`Consumer`](crate::Consumer) stream and messages got with [`Channel::basic_get`].
    /// Attach it (`.attach()`, or `FutureExt::with_context`) while handling the message so
    /// that the spans the handling starts, and the messages it publishes, continue the trace.
    /// The span ends when the delivery is dropped.
    #[cfg(feature = "opentelemetry")]
    #[cfg_attr(docsrs, doc(cfg(feature = "opentelemetry")))]
    pub fn otel_context(&self) -> Option<&opentelemetry::Context> {
        self.otel
            .as_deref()
            .map(crate::telemetry::otel::Process::context)
    }

    /// The delivery tag (shorthand for `envelope.delivery_tag`).
    pub fn delivery_tag(&self) -> u64 {
        self.envelope.delivery_tag
    }

    /// The message's offset in the stream it was consumed from: the `x-stream-offset`
    /// header RabbitMQ adds to deliveries from a stream. `None` for other queues.
    pub fn stream_offset(&self) -> Option<u64> {
        stream_offset(&self.properties)
    }

    /// The channel the message arrived on.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Acknowledges the message: the broker forgets it.
    pub async fn ack(&self, options: BasicAckOptions) -> Result<()> {
        self.settle_once()?;
        if self.traced() {
            let settle = self.channel.basic_ack(self.envelope.delivery_tag, options);
            // Boxed, so that an untraced acknowledgement's future stays as small as before.
            return Box::pin(self.within_spans(settle)).await;
        }
        self.channel
            .basic_ack(self.envelope.delivery_tag, options)
            .await
    }

    /// Rejects the message (and with `multiple`, every earlier unacknowledged one); by default
    /// it is requeued.
    pub async fn nack(&self, options: BasicNackOptions) -> Result<()> {
        self.settle_once()?;
        if self.traced() {
            let settle = self.channel.basic_nack(self.envelope.delivery_tag, options);
            // Boxed, so that an untraced acknowledgement's future stays as small as before.
            return Box::pin(self.within_spans(settle)).await;
        }
        self.channel
            .basic_nack(self.envelope.delivery_tag, options)
            .await
    }

    /// Rejects the message; by default it is requeued.
    pub async fn reject(&self, options: BasicRejectOptions) -> Result<()> {
        self.settle_once()?;
        if self.traced() {
            let settle = self
                .channel
                .basic_reject(self.envelope.delivery_tag, options);
            // Boxed, so that an untraced acknowledgement's future stays as small as before.
            return Box::pin(self.within_spans(settle)).await;
        }
        self.channel
            .basic_reject(self.envelope.delivery_tag, options)
            .await
    }
}

/// A message fetched with [`Channel::basic_get`](crate::Channel::basic_get).
#[derive(Debug)]
pub struct GetMessage {
    /// The message.
    pub delivery: Delivery,
    /// Messages left in the queue after this one.
    pub message_count: u32,
}

impl std::ops::Deref for GetMessage {
    type Target = Delivery;

    fn deref(&self) -> &Delivery {
        &self.delivery
    }
}

/// The stream offset RabbitMQ put in a stream delivery's `x-stream-offset` header.
pub(crate) fn stream_offset(properties: &BasicProperties) -> Option<u64> {
    let headers = properties.headers.as_ref()?;
    let offset = headers
        .get(crate::channel::STREAM_OFFSET_ARGUMENT)?
        .as_i64()?;
    u64::try_from(offset).ok()
}
