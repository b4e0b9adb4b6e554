//! Options and results of the channel methods: one `{Class}{Method}Options` per method, each
//! with `Default` giving the broker's defaults, and named results instead of tuples.
//!
//! Options never include `no_wait`: a named method always waits for its reply, so its result
//! has one shape. Send the generated method with `no_wait` set through
//! [`Channel::send`](super::Channel::send) when you need that.

use crate::wire::{FieldTable, ShortString};

pub use crate::topology::ExchangeKind;

/// Options of [`Channel::exchange_declare`](super::Channel::exchange_declare).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExchangeDeclareOptions {
    /// Only check that the exchange exists (404 closes the channel if not); create nothing.
    pub passive: bool,
    /// Keep the exchange across broker restarts.
    pub durable: bool,
    /// Delete the exchange when its last binding is removed.
    pub auto_delete: bool,
    /// Refuse publishes from clients; only exchange-to-exchange bindings feed it.
    pub internal: bool,
    /// Extra arguments, e.g. `alternate-exchange`.
    pub arguments: FieldTable,
}

/// Options of [`Channel::exchange_delete`](super::Channel::exchange_delete).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExchangeDeleteOptions {
    /// Delete only if the exchange has no bindings (406 closes the channel otherwise).
    pub if_unused: bool,
}

/// Options of [`Channel::exchange_bind`](super::Channel::exchange_bind).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExchangeBindOptions {
    /// Binding arguments (for headers exchanges, the headers to match and `x-match`).
    pub arguments: FieldTable,
}

/// Options of [`Channel::exchange_unbind`](super::Channel::exchange_unbind).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExchangeUnbindOptions {
    /// The arguments of the binding to remove.
    pub arguments: FieldTable,
}

/// Options of [`Channel::queue_declare`](super::Channel::queue_declare).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueDeclareOptions {
    /// Only check that the queue exists (404 closes the channel if not); create nothing.
    pub passive: bool,
    /// Keep the queue across broker restarts.
    pub durable: bool,
    /// Only this connection may use the queue, and it is deleted when the connection closes.
    pub exclusive: bool,
    /// Delete the queue when its last consumer is cancelled.
    pub auto_delete: bool,
    /// Extra arguments: `x-queue-type` (`quorum`, `stream`), `x-message-ttl`, `x-max-length`,
    /// `x-dead-letter-exchange`, …
    pub arguments: FieldTable,
}

/// A declared queue, as `queue.declare-ok` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredQueue {
    /// The queue's name: the broker's choice when the declare asked for an empty name.
    pub name: ShortString,
    /// Messages ready for delivery (not counting unacknowledged ones).
    pub message_count: u32,
    /// Active consumers.
    pub consumer_count: u32,
}

/// Options of [`Channel::queue_bind`](super::Channel::queue_bind).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueBindOptions {
    /// Binding arguments (for headers exchanges, the headers to match and `x-match`).
    pub arguments: FieldTable,
}

/// Options of [`Channel::queue_unbind`](super::Channel::queue_unbind).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueUnbindOptions {
    /// The arguments of the binding to remove.
    pub arguments: FieldTable,
}

/// Options of [`Channel::queue_purge`](super::Channel::queue_purge). There are none today; the
/// struct keeps the calling convention uniform and leaves room for the future.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueuePurgeOptions {}

/// The result of [`Channel::queue_purge`](super::Channel::queue_purge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgedQueue {
    /// Messages removed.
    pub message_count: u32,
}

/// Options of [`Channel::queue_delete`](super::Channel::queue_delete).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDeleteOptions {
    /// Delete only if the queue has no consumers (406 closes the channel otherwise).
    pub if_unused: bool,
    /// Delete only if the queue holds no messages (406 closes the channel otherwise).
    pub if_empty: bool,
}

/// The result of [`Channel::queue_delete`](super::Channel::queue_delete).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeletedQueue {
    /// Messages the queue held when it was deleted.
    pub message_count: u32,
}

/// Options of [`Channel::basic_qos`](super::Channel::basic_qos).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BasicQosOptions {
    /// Byte limit on unacknowledged deliveries; RabbitMQ supports only 0 (no limit).
    pub prefetch_size: u32,
    /// RabbitMQ: `false` applies the limit to each new consumer of the channel, `true` to the
    /// channel as a whole.
    pub global: bool,
}

/// Options of [`Channel::basic_consume`](super::Channel::basic_consume).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BasicConsumeOptions {
    /// The consumer tag; empty lets the broker choose one (see
    /// [`Consumer::tag`](crate::Consumer::tag)).
    pub consumer_tag: String,
    /// Do not deliver messages published on this connection (RabbitMQ ignores it).
    pub no_local: bool,
    /// The broker considers messages acknowledged as soon as it sends them: faster, but a
    /// message is lost if the consumer fails before handling it.
    pub no_ack: bool,
    /// Be the queue's only consumer (403 closes the channel if it already has one).
    pub exclusive: bool,
    /// Extra arguments, e.g. `x-priority`.
    pub arguments: FieldTable,
}

/// Options of [`Channel::basic_cancel`](super::Channel::basic_cancel). There are none today.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BasicCancelOptions {}

/// Options of [`Channel::basic_publish`](super::Channel::basic_publish).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BasicPublishOptions {
    /// Return the message (`basic.return`) if no queue takes it, instead of dropping it.
    pub mandatory: bool,
    /// Return the message if no consumer can take it at once. RabbitMQ does not support this
    /// and closes the connection with 540 NOT_IMPLEMENTED.
    pub immediate: bool,
}

/// Options of [`Channel::basic_get`](super::Channel::basic_get).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BasicGetOptions {
    /// Consider the message acknowledged as soon as it is sent.
    pub no_ack: bool,
}

/// Options of [`Channel::basic_ack`](super::Channel::basic_ack) and [`Delivery::ack`](crate::Delivery::ack).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BasicAckOptions {
    /// Also acknowledge every earlier unacknowledged delivery of the channel.
    pub multiple: bool,
}

/// Options of [`Channel::basic_nack`](super::Channel::basic_nack) and
/// [`Delivery::nack`](crate::Delivery::nack).
///
/// The default requeues: a message is dropped (or dead-lettered) only when you say so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BasicNackOptions {
    /// Also reject every earlier unacknowledged delivery of the channel.
    pub multiple: bool,
    /// Put the message back in the queue; `false` drops it or sends it to the dead-letter exchange.
    pub requeue: bool,
}

impl Default for BasicNackOptions {
    fn default() -> Self {
        Self {
            multiple: false,
            requeue: true,
        }
    }
}

/// Options of [`Channel::basic_reject`](super::Channel::basic_reject) and
/// [`Delivery::reject`](crate::Delivery::reject).
///
/// The default requeues: a message is dropped (or dead-lettered) only when you say so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BasicRejectOptions {
    /// Put the message back in the queue; `false` drops it or sends it to the dead-letter exchange.
    pub requeue: bool,
}

impl Default for BasicRejectOptions {
    fn default() -> Self {
        Self { requeue: true }
    }
}

/// Options of [`Channel::basic_recover`](super::Channel::basic_recover) and
/// [`Channel::basic_recover_async`](super::Channel::basic_recover_async).
///
/// RabbitMQ supports only `requeue: true` (the default here): unacknowledged deliveries go
/// back to their queues and may reach other consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BasicRecoverOptions {
    /// Requeue the unacknowledged deliveries instead of redelivering them to the same consumer.
    pub requeue: bool,
}

impl Default for BasicRecoverOptions {
    fn default() -> Self {
        Self { requeue: true }
    }
}

/// Options of [`Channel::confirm_select`](super::Channel::confirm_select).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConfirmSelectOptions {
    /// The most publishes that may await confirmation at once; `basic_publish` waits for a
    /// confirmation when the limit is reached. `None`: no limit.
    pub max_in_flight: Option<usize>,
}
