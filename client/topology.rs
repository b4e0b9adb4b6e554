//! The topology a connection declared: exchanges, queues, bindings and consumers.
//!
//! The driver records each declaration when the broker confirms it and forgets it when it is
//! deleted, so that recovery can declare it all again on a new connection. Passive declares
//! record nothing: they create nothing.

use crate::channel::ExchangeKind;
use crate::wire::{FieldTable, ShortString};

/// An exchange declared on the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedExchange {
    /// Name.
    pub name: ShortString,
    /// Type.
    pub kind: ExchangeKind,
    /// Survives broker restarts.
    pub durable: bool,
    /// Deleted with its last binding.
    pub auto_delete: bool,
    /// Only fed by other exchanges.
    pub internal: bool,
    /// Declaration arguments.
    pub arguments: FieldTable,
}

/// A queue declared on the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedQueue {
    /// Name (as the broker named it, for server-named queues).
    pub name: ShortString,
    /// Whether the broker chose the name (an empty name was declared).
    pub server_named: bool,
    /// Survives broker restarts.
    pub durable: bool,
    /// Owned by this connection.
    pub exclusive: bool,
    /// Deleted with its last consumer.
    pub auto_delete: bool,
    /// Declaration arguments.
    pub arguments: FieldTable,
}

/// What a binding routes to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BindingDestination {
    /// A queue (`queue.bind`).
    Queue(ShortString),
    /// An exchange (`exchange.bind`).
    Exchange(ShortString),
}

/// A binding made on the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedBinding {
    /// The exchange messages come from.
    pub source: ShortString,
    /// Where they go.
    pub destination: BindingDestination,
    /// The binding key.
    pub routing_key: ShortString,
    /// Binding arguments.
    pub arguments: FieldTable,
}

/// A consumer started on the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedConsumer {
    /// Channel number.
    pub channel: u16,
    /// The queue consumed from.
    pub queue: ShortString,
    /// The consumer tag.
    pub tag: ShortString,
    /// Automatic acknowledgement.
    pub no_ack: bool,
    /// Exclusive consumer.
    pub exclusive: bool,
    /// Consume arguments.
    pub arguments: FieldTable,
}

/// Everything a connection has declared and not deleted, in declaration order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    /// Exchanges.
    pub exchanges: Vec<RecordedExchange>,
    /// Queues.
    pub queues: Vec<RecordedQueue>,
    /// Bindings.
    pub bindings: Vec<RecordedBinding>,
    /// Consumers.
    pub consumers: Vec<RecordedConsumer>,
}

impl Topology {
    pub(crate) fn declare_exchange(&mut self, exchange: RecordedExchange) {
        self.exchanges.retain(|e| e.name != exchange.name);
        self.exchanges.push(exchange);
    }

    pub(crate) fn delete_exchange(&mut self, name: &str) {
        self.exchanges.retain(|e| e.name != name);
        self.bindings.retain(|b| {
            b.source != name && b.destination != BindingDestination::Exchange(name_of(name))
        });
    }

    pub(crate) fn declare_queue(&mut self, queue: RecordedQueue) {
        self.queues.retain(|q| q.name != queue.name);
        self.queues.push(queue);
    }

    pub(crate) fn delete_queue(&mut self, name: &str) {
        self.queues.retain(|q| q.name != name);
        self.bindings
            .retain(|b| b.destination != BindingDestination::Queue(name_of(name)));
        self.consumers.retain(|c| c.queue != name);
    }

    pub(crate) fn bind(&mut self, binding: RecordedBinding) {
        if !self.bindings.contains(&binding) {
            self.bindings.push(binding);
        }
    }

    pub(crate) fn unbind(&mut self, binding: &RecordedBinding) {
        self.bindings.retain(|b| b != binding);
    }

    pub(crate) fn add_consumer(&mut self, consumer: RecordedConsumer) {
        self.consumers.push(consumer);
    }

    pub(crate) fn remove_consumer(&mut self, channel: u16, tag: &str) {
        self.consumers
            .retain(|c| !(c.channel == channel && c.tag == tag));
    }

    pub(crate) fn remove_channel(&mut self, channel: u16) {
        self.consumers.retain(|c| c.channel != channel);
    }
}

fn name_of(name: &str) -> ShortString {
    // Names in the topology came from ShortStrings, so any name compared against them fits.
    ShortString::try_from(name).unwrap_or_default()
}
