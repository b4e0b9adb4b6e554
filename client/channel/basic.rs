//! The basic class: publishing, consuming, getting and acknowledging messages.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio_stream::wrappers::BroadcastStream;

/// Bytes a channel's encode buffer grows by.
const ENCODE_BUFFER_SIZE: usize = 16 * 1024;
/// Spare capacity under which the encode buffer grows before encoding.
const ENCODE_BUFFER_LOW: usize = 1024;
/// Publishes with bodies this large or larger are not written from the caller's thread
/// (`Channel::publish_directly`): that would copy the body, which the driver's writes do not.
const DIRECT_BODY_MAX: usize = 4096;

use super::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, BasicRecoverOptions, BasicRejectOptions, Body, Channel,
};
use crate::config::BlockedPolicy;
use crate::confirms::PublishConfirm;
use crate::consumer::{Consumer, decode_delivery};
use crate::error::{Error, Result};
use crate::frame;
use crate::message::{Envelope, GetMessage, ReturnedMessage};
use crate::protocol::{
    BasicCancel, BasicConsume, BasicGet, BasicProperties, BasicPublish, BasicQos, BasicRecover,
    BasicRecoverAsync, BasicRecoverOk, Method,
};
use crate::shared::acks::Acknowledgement;
use crate::shared::command::{Command, OnReply, Publish};
use crate::shared::consumer::ConsumerShared;
use crate::shared::delivery_queue;
use crate::shared::direct_writes;
use crate::shared::ledger::Mandatory;
use crate::telemetry;
use crate::wire::{AmqpMethod, ShortString};
use tracing::{Instrument, trace};

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
    ///
    /// With `x-stream-offset` in its arguments (a stream consumer: see
    /// [`Channel::stream_consume`]), `no_ack` or a channel without a prefetch is refused
    /// with [`Error::InvalidArgument`] before anything is sent, as RabbitMQ would refuse it.
    pub async fn basic_consume(
        &self,
        queue: &str,
        options: BasicConsumeOptions,
    ) -> Result<Consumer> {
        self.check_stream_consume(&options)?;
        let BasicConsumeOptions {
            consumer_tag,
            no_local,
            no_ack,
            exclusive,
            arguments,
        } = options;
        let queue = ShortString::try_from(queue)?;
        let method = BasicConsume {
            queue: queue.clone(),
            consumer_tag: ShortString::try_from(consumer_tag)?,
            no_local,
            no_ack,
            exclusive,
            no_wait: false,
            arguments,
        };
        // A prefetch bounds what the broker sends an acknowledging consumer, so that many
        // deliveries cost the connection's budget nothing; the rest (all of a no_ack
        // consumer's) count against it.
        let allowance = match no_ack {
            true => 0,
            false => usize::from(self.shared().prefetch.load(Ordering::Acquire)),
        };
        let budget = self.connection_inner().state.consumer_budget.clone();
        let (events, receiver) = delivery_queue::channel(allowance, budget);
        let mut receiver = UnclaimedDeliveries {
            receiver: Some(receiver),
            channel: self,
            no_ack,
        };
        let stream = method.arguments.contains_key(super::STREAM_OFFSET_ARGUMENT);
        let shared = Arc::new(ConsumerShared::new(stream));
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
        let receiver = receiver.receiver.take().expect("taken only here");
        Ok(Consumer::new(
            ok.consumer_tag,
            queue,
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
    /// otherwise. The body is split into frames of the negotiated frame_max. An owned body
    /// ([`Bytes`], `Vec<u8>`, `String`) is not copied when large; a borrowed one (`&str`,
    /// `&[u8]`) is copied before this returns (see [`Body`]). While the broker pauses the
    /// channel (`channel.flow`) or the connection is backed up, this waits, within the
    /// channel's deadline. While the broker blocks the connection (`connection.blocked`),
    /// it waits too, or fails at once with [`Error::Blocked`], as the connection's
    /// [`BlockedPolicy`] says.
    ///
    /// The message is handed to the connection whole or not at all: if the returned future
    /// is dropped before it completes, nothing was sent (see
    /// [cancellation](crate#cancellation-what-a-dropped-future-did)).
    ///
    /// The message is validated and encoded when this is called, before the future is
    /// polled, inside its `publish` span (`debug`, target `warren`). With the
    /// `opentelemetry` feature, the OpenTelemetry context current at that moment is the
    /// publish span's parent, and the span's trace context goes into the message's headers
    /// (`traceparent`, ...; not if the properties carry a `traceparent` already).
    ///
    /// ```no_run
    /// # async fn example(channel: warren::Channel) -> Result<(), warren::Error> {
    /// use warren::{BasicProperties, BasicPublishOptions, Confirmation, DeliveryMode};
    ///
    /// let properties = BasicProperties::default()
    ///     .with_content_type("text/plain")
    ///     .with_delivery_mode(DeliveryMode::Persistent);
    /// let confirm = channel
    ///     .basic_publish("", "tasks", BasicPublishOptions::default(), "hello", properties)
    ///     .await?;
    /// assert_eq!(confirm.await?, Confirmation::Ack);
    /// # Ok(()) }
    /// ```
    pub fn basic_publish<'body>(
        &self,
        exchange: &str,
        routing_key: &str,
        options: BasicPublishOptions,
        body: impl Into<Body<'body>>,
        properties: BasicProperties,
    ) -> impl Future<Output = Result<PublishConfirm>> + Send + '_ {
        // Split here, where the body's type is known, so that an owned body costs no test of
        // which kind it is.
        let (body, inline) = body.into().into_parts();
        let prepared = basic_publish_method(exchange, routing_key, options)
            .and_then(|method| self.prepare_publish_spanned(method, body, inline, &properties));
        self.enqueue_publish(prepared)
    }

    /// [`Channel::basic_publish`] with borrowed properties, for callers that may publish the
    /// same message again (the [`Publisher`](crate::Publisher)).
    pub(crate) fn basic_publish_ref<'body>(
        &self,
        exchange: &str,
        routing_key: &str,
        options: BasicPublishOptions,
        body: Body<'body>,
        properties: &BasicProperties,
    ) -> impl Future<Output = Result<PublishConfirm>> + Send + '_ {
        let (body, inline) = body.into_parts();
        let prepared = basic_publish_method(exchange, routing_key, options)
            .and_then(|method| self.prepare_publish_spanned(method, body, inline, properties));
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
        let prepared = self.prepare_publish_spanned(method, body, None, &properties);
        self.enqueue_publish(prepared)
    }

    /// [`Channel::prepare_publish`], inside the publish's spans when anyone traces: the one
    /// choice every way of publishing goes through, so none of them publishes untraced.
    #[inline]
    fn prepare_publish_spanned(
        &self,
        method: BasicPublish,
        body: Bytes,
        inline: Option<&[u8]>,
        properties: &BasicProperties,
    ) -> Result<PreparedPublish> {
        match telemetry::tracing_operations() {
            true => self.prepare_publish_traced(method, body, inline, properties),
            false => self.prepare_publish(method, body, inline, properties),
        }
    }

    // A publish is prepared before its future exists, and the future holds only the command:
    // the properties (424 bytes) and the method never enter it, so they are not moved each
    // time the caller's future is, which was a seventh of a publish's instructions. A
    // borrowed body is copied here too, so the future does not hold the borrow.

    /// [`Channel::prepare_publish`] within the publish's span (and with the `opentelemetry`
    /// feature its OpenTelemetry span, whose trace context goes into the headers). Out of
    /// line, so that the untraced path is what it was before spans.
    #[cold]
    #[inline(never)]
    fn prepare_publish_traced(
        &self,
        method: BasicPublish,
        body: Bytes,
        inline: Option<&[u8]>,
        properties: &BasicProperties,
    ) -> Result<PreparedPublish> {
        let spans =
            self.start_publish_spans(&method, inline.map_or(body.len(), <[u8]>::len), properties);
        let prepared = {
            let _entered = spans.span.enter();
            let properties = spans.properties.as_ref().unwrap_or(properties);
            self.prepare_publish(method, body, inline, properties)
        };
        spans.end(prepared.as_ref().err());
        prepared
    }

    /// Starts the spans of a publish (and with the `opentelemetry` feature, puts the trace
    /// context into a copy of its properties).
    fn start_publish_spans(
        &self,
        method: &BasicPublish,
        body_size: usize,
        properties: &BasicProperties,
    ) -> Box<telemetry::PublishSpans> {
        let span = telemetry::publish_span(
            &method.exchange,
            &method.routing_key,
            properties,
            body_size,
            || self.server(),
        );
        #[cfg(feature = "opentelemetry")]
        let (otel, properties) = telemetry::otel::Operation::publish(
            &method.exchange,
            &method.routing_key,
            properties,
            body_size,
            || self.server(),
        );
        #[cfg(not(feature = "opentelemetry"))]
        let properties = None;
        Box::new(telemetry::PublishSpans {
            span,
            properties,
            #[cfg(feature = "opentelemetry")]
            otel,
        })
    }

    /// Encodes a publish into the command for the driver, with the confirmation the caller
    /// gets back. The body is `body`, or `inline` (a short borrowed body, `body` then empty),
    /// which is encoded with the frames.
    fn prepare_publish(
        &self,
        method: BasicPublish,
        body: Bytes,
        inline: Option<&[u8]>,
        properties: &BasicProperties,
    ) -> Result<PreparedPublish> {
        if properties.invalid.is_some() {
            return Err(invalid_properties(properties));
        }
        let shared = self.shared();
        if let Some(headers) = &properties.headers {
            headers.check_sendable()?;
        }
        let body_size = inline.map_or(body.len(), <[u8]>::len);
        let frames = self.encode_publish(&method, properties, body_size, inline)?;
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
                body: inline.map_or_else(|| body.clone(), Bytes::copy_from_slice),
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
        // In a block of its own, so that only the confirmation and the boxed slow path are
        // kept across the await below: the publish's locals would otherwise stay in the
        // future (120 bytes more, moved with it by every caller).
        let (slowly, confirm) = {
            let PreparedPublish {
                mut publish,
                confirm,
            } = prepared?;
            let shared = self.shared();
            // Honour connection.blocked by the connection's policy: wait, or fail at once.
            let connection = &self.connection_inner().state;
            let blocked = connection.is_blocked();
            if blocked && connection.blocked_policy == BlockedPolicy::FailFast {
                return Err(Error::Blocked {
                    reason: connection.blocked_reason().unwrap_or_default(),
                });
            }
            // Honour channel.flow: publishes wait while the broker has paused the channel.
            let paused = !*shared.flow.borrow();
            let limit = shared.in_flight.get();
            // The common case waits for nothing, so it needs no timer.
            let fast = match (paused || blocked, limit) {
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
            if fast && publish.reply.is_some() && self.may_write_directly() {
                match self.publish_directly(publish) {
                    None => return Ok(confirm),
                    Some(back) => publish = back,
                }
            }
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
            let slowly = Box::pin(self.enqueue_publish_slowly(command, paused, blocked, limit));
            (slowly, confirm)
        };
        slowly.await?;
        Ok(confirm)
    }

    /// Writes a publish in confirm mode from this thread, with the driver idle and nothing
    /// queued for it (see `shared/direct_writes.rs`): its frames go out with the next ones, at
    /// the latest when this thread waits for a confirmation or the driver sweeps; the driver
    /// enters it in the ledger. Gives it back if the driver is busy, the socket is TLS, or the
    /// body needs more than one frame or is large enough to be worth not copying.
    fn publish_directly(&self, mut publish: Publish) -> Option<Publish> {
        let connection = &self.connection_inner().state;
        if publish.body.len() >= DIRECT_BODY_MAX
            || publish.body.len() > frame::body_chunk_len(connection.frame_max())
        {
            return Some(publish);
        }
        let channel = self.shared();
        // The driver needs the rest of it for the ledger, not its bytes.
        let frames = std::mem::take(&mut publish.frames);
        let body = std::mem::take(&mut publish.body);
        let back = connection
            .direct
            .publish(&connection.counters, publish, |held| {
                if !channel.is_open() {
                    return false;
                }
                held.extend_from_slice(&frames);
                let mut sent = 2;
                if !body.is_empty() {
                    frame::encode_body(held, channel.id, &body);
                    sent += 1;
                }
                connection.counters.published.incr();
                connection.counters.frames_sent.add(sent);
                true
            });
        back.map(|publish| Publish {
            frames,
            body,
            ..publish
        })
    }

    /// The slow path of [`Channel::enqueue_publish`]: waits for the connection to be
    /// unblocked, for the channel to be resumed, for an in-flight permit and for room in the
    /// driver's queue, within the deadline.
    async fn enqueue_publish_slowly(
        &self,
        mut command: Command,
        paused: bool,
        blocked: bool,
        limit: Option<&Arc<tokio::sync::Semaphore>>,
    ) -> Result<()> {
        let shared = self.shared();
        let enqueue = async {
            if blocked {
                // Until unblocked, or the channel closes meanwhile.
                let mut watch = self.connection_inner().state.watch_blocked();
                let mut unblocked = std::pin::pin!(watch.wait_for(Option::is_none));
                let mut closed = std::pin::pin!(self.closed());
                std::future::poll_fn(|cx| {
                    if let Poll::Ready(result) = unblocked.as_mut().poll(cx) {
                        return Poll::Ready(result.map(drop).map_err(|_| self.closed_error()));
                    }
                    closed.as_mut().poll(cx).map(Err)
                })
                .await?;
            }
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
    /// the negotiated frame_max, and the body frames of `inline`, the whole body when it is
    /// given.
    fn encode_publish(
        &self,
        method: &BasicPublish,
        properties: &BasicProperties,
        body_size: usize,
        inline: Option<&[u8]>,
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
            Ok(()) => {
                if let Some(body) = inline {
                    for chunk in body.chunks(frame::body_chunk_len(frame_max)) {
                        frame::encode_body(&mut buffer, self.id(), chunk);
                    }
                }
                Ok(buffer.split().freeze())
            }
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
        // Its acknowledgement is not part of a consumer's batch: written at once.
        direct_writes::note_more_in_hand(false);
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
                let mut delivery = decode_delivery(envelope, header, body, self, options.no_ack)?;
                // A message got is processed as a delivery taken from a consumer is: its
                // `process` span continues the publisher's trace.
                if telemetry::tracing_operations() {
                    delivery.start_processing(queue);
                }
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
    ///
    /// Returns once the acknowledgement is on its way: queued for the connection's driver, or,
    /// outside the runtime's tasks on a multi-thread runtime, written by this thread or held
    /// to go out with the next ones (at the latest when this thread waits on its consumer,
    /// acknowledges its last delivery in hand, or after 10 ms; README.md, "Speed: where your
    /// loop runs"). Acknowledgements of a channel reach the broker in the order they were made.
    ///
    /// Fails with [`Error::StaleDelivery`] for a delivery that came before the connection was
    /// lost and recovered (its tag means nothing on the new connection; the broker delivers
    /// the message again).
    pub async fn basic_ack(&self, delivery_tag: u64, options: BasicAckOptions) -> Result<()> {
        let ack = Acknowledgement::Ack {
            delivery_tag,
            multiple: options.multiple,
        };
        if telemetry::tracing_operations() {
            // Boxed: the spans would otherwise make every acknowledgement's future larger.
            return Box::pin(self.settle_traced("ack", delivery_tag, ack)).await;
        }
        self.check_fresh(delivery_tag)?;
        self.acknowledge(ack).await
    }

    /// Rejects one or more deliveries of this channel (`basic.nack`, a RabbitMQ extension).
    /// Fails with [`Error::StaleDelivery`] as [`Channel::basic_ack`] does.
    pub async fn basic_nack(&self, delivery_tag: u64, options: BasicNackOptions) -> Result<()> {
        let nack = Acknowledgement::Nack {
            delivery_tag,
            multiple: options.multiple,
            requeue: options.requeue,
        };
        if telemetry::tracing_operations() {
            // Boxed: the spans would otherwise make every acknowledgement's future larger.
            return Box::pin(self.settle_traced("nack", delivery_tag, nack)).await;
        }
        self.check_fresh(delivery_tag)?;
        self.acknowledge(nack).await
    }

    /// Rejects a delivery of this channel (`basic.reject`).
    /// Fails with [`Error::StaleDelivery`] as [`Channel::basic_ack`] does.
    pub async fn basic_reject(&self, delivery_tag: u64, options: BasicRejectOptions) -> Result<()> {
        let reject = Acknowledgement::Reject {
            delivery_tag,
            requeue: options.requeue,
        };
        if telemetry::tracing_operations() {
            // Boxed: the spans would otherwise make every acknowledgement's future larger.
            return Box::pin(self.settle_traced("reject", delivery_tag, reject)).await;
        }
        self.check_fresh(delivery_tag)?;
        self.acknowledge(reject).await
    }

    /// Sends an acknowledgement (`operation` names it) within its settle span(s).
    async fn settle_traced(
        &self,
        operation: &'static str,
        delivery_tag: u64,
        ack: Acknowledgement,
    ) -> Result<()> {
        let span = telemetry::settle_span(operation, delivery_tag);
        #[cfg(feature = "opentelemetry")]
        let otel = telemetry::otel::Operation::settle(operation, delivery_tag);
        let result = async {
            self.check_fresh(delivery_tag)?;
            self.acknowledge(ack).await
        }
        .instrument(span.clone())
        .await;
        if let Err(error) = &result {
            telemetry::record_error(&span, error);
        }
        #[cfg(feature = "opentelemetry")]
        otel.end(result.as_ref().err());
        result
    }

    /// Hands an acknowledgement to the driver in the channel's open batch; only the one that
    /// opens a batch queues a command (see `shared/acks.rs`), and only it can wait, for room
    /// in the driver's queue.
    async fn acknowledge(&self, ack: Acknowledgement) -> Result<()> {
        if let Some(error) = self.shared().closed_reason() {
            return Err(error);
        }
        self.shared().note_settled(ack);
        let outbox = &self.shared().acks;
        let batch = match self.may_write_directly() {
            true => outbox.push_unless_written(ack, |ack| self.write_directly(ack)),
            false => outbox.push(ack),
        };
        let Some(batch) = batch else {
            return Ok(());
        };
        let command = Command::Acks {
            channel: self.key(),
            batch: batch.clone(),
        };
        // Other calls may join the batch before its command is queued, so the command must
        // not be lost if this future is dropped while it waits for room.
        let queued = self.connection_inner().send_even_if_dropped(command).await;
        queued.map_err(|()| {
            self.shared().acks.abandon(&batch);
            self.closed_error()
        })
    }

    /// Whether this call may write to the socket itself rather than through the driver (see
    /// `shared/direct_writes.rs`): the connection shares its socket, the caller runs outside
    /// the runtime's tasks, and nothing it queued for the driver is still waiting. Whether the
    /// driver is idle is decided under the lane's lock.
    fn may_write_directly(&self) -> bool {
        let connection = self.connection_inner();
        connection.state.direct.is_attached()
            && direct_writes::outside_tasks()
            && connection.queue_is_empty()
    }

    /// Writes `ack` from this thread, with the driver idle and nothing queued for it (see
    /// `shared/direct_writes.rs`): with the next ones while the thread has more deliveries in
    /// hand (at the latest when its stream runs dry or the driver sweeps), at once otherwise.
    /// Returns `false` if the driver is busy (or the socket is TLS): the acknowledgement must
    /// then go through the driver.
    fn write_directly(&self, ack: Acknowledgement) -> bool {
        let connection = &self.connection_inner().state;
        let channel = self.shared();
        let last = !direct_writes::more_in_hand();
        connection
            .direct
            .acknowledge(&connection.counters, last, |held| {
                // Checked under the lock that keeps the driver from running: it cannot close the
                // channel or lose the connection in between.
                if !channel.is_open() {
                    return false;
                }
                let tag_offset = channel.tag_offset.load(Ordering::Acquire);
                let Some(wire_tag) = ack.wire_tag(channel.id, tag_offset) else {
                    return false;
                };
                trace!(
                    channel = channel.id,
                    ?ack,
                    "sending from the caller's thread"
                );
                ack.encode_frame(held, channel.id, wire_tag);
                ack.count(&connection.counters);
                true
            })
    }

    /// Refuses to acknowledge a delivery from before a recovery, or one that `basic.recover`
    /// requeued.
    fn check_fresh(&self, delivery_tag: u64) -> Result<()> {
        if self.shared().is_stale(delivery_tag) {
            return Err(Error::StaleDelivery { delivery_tag });
        }
        if self.shared().requeued_by_recover(delivery_tag) {
            return Err(Error::InvalidState(
                "basic.recover requeued this delivery; settle its redelivery, which has a new delivery tag",
            ));
        }
        Ok(())
    }

    /// Redelivers this channel's unacknowledged messages (`basic.recover`) and waits for the
    /// broker to confirm (`basic.recover-ok`).
    ///
    /// The redeliveries come with new delivery tags: settling a delivery handed out before
    /// the recover, and not settled then, fails afterwards with [`Error::InvalidState`] and
    /// sends nothing (the broker would close the channel for an unknown tag).
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

/// The error for properties holding a string a setter could not store.
#[cold]
fn invalid_properties(properties: &BasicProperties) -> Error {
    let text = properties
        .invalid
        .as_ref()
        .map_or_else(String::new, |invalid| invalid.to_string());
    Error::InvalidArgument(text)
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

/// The delivery queue of a consumer being started, until its [`Consumer`] takes it. If the
/// `basic_consume` future is dropped after the consumer started on the broker but before the
/// `Consumer` exists, deliveries may already wait here: they are requeued, as a dropped
/// `Consumer` requeues its unread ones. (The consumer itself is cancelled by whoever finds its
/// `basic.consume-ok` unclaimed: the driver, or `channel::ReplyReceiver`.)
struct UnclaimedDeliveries<'a> {
    receiver: Option<delivery_queue::Receiver<crate::shared::consumer::ConsumerEvent>>,
    channel: &'a Channel,
    no_ack: bool,
}

impl Drop for UnclaimedDeliveries<'_> {
    fn drop(&mut self) {
        let Some(mut receiver) = self.receiver.take() else {
            return;
        };
        let unread = receiver.close();
        if !self.no_ack {
            self.channel.requeue_unread(unread);
        }
    }
}

impl Channel {
    /// Hands back deliveries a consumer received but the application never read, so that
    /// they are not stuck until the channel closes: a `basic.reject` with requeue for each,
    /// through the control queue (callers are `Drop`s, which cannot wait for room).
    pub(crate) fn requeue_unread(
        &self,
        unread: impl IntoIterator<Item = crate::shared::consumer::RawDelivery>,
    ) {
        for raw in unread {
            let _ = self.connection_inner().control(Command::send(
                self.key(),
                crate::protocol::BasicReject {
                    delivery_tag: raw.deliver.delivery_tag,
                    requeue: true,
                },
            ));
        }
    }
}

/// A publish encoded and ready for the driver, with the confirmation its caller gets.
struct PreparedPublish {
    publish: Publish,
    confirm: PublishConfirm,
}
