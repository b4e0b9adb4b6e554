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

impl RecordedBinding {
    /// A binding of `queue` to `exchange`.
    pub(crate) fn queue(
        exchange: &ShortString,
        queue: &ShortString,
        routing_key: &ShortString,
        arguments: &FieldTable,
    ) -> Self {
        Self {
            source: exchange.clone(),
            destination: BindingDestination::Queue(queue.clone()),
            routing_key: routing_key.clone(),
            arguments: arguments.clone(),
        }
    }

    /// A binding of exchange `destination` to exchange `source`.
    pub(crate) fn exchange(
        source: &ShortString,
        destination: &ShortString,
        routing_key: &ShortString,
        arguments: &FieldTable,
    ) -> Self {
        Self {
            source: source.clone(),
            destination: BindingDestination::Exchange(destination.clone()),
            routing_key: routing_key.clone(),
            arguments: arguments.clone(),
        }
    }
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
        let destination = BindingDestination::Exchange(name_of(name));
        self.remove_bindings(|b| b.source == name || b.destination == destination);
    }

    pub(crate) fn declare_queue(&mut self, queue: RecordedQueue) {
        self.queues.retain(|q| q.name != queue.name);
        self.queues.push(queue);
    }

    pub(crate) fn delete_queue(&mut self, name: &str) {
        self.queues.retain(|q| q.name != name);
        let destination = BindingDestination::Queue(name_of(name));
        self.remove_bindings(|b| b.destination == destination);
        self.consumers.retain(|c| c.queue != name);
    }

    pub(crate) fn bind(&mut self, binding: RecordedBinding) {
        if !self.bindings.contains(&binding) {
            self.bindings.push(binding);
        }
    }

    pub(crate) fn unbind(&mut self, binding: &RecordedBinding) {
        self.remove_bindings(|b| b == binding);
    }

    /// Removes the bindings `doomed` selects, then forgets the auto-delete exchanges that lost
    /// their last binding as a source: the broker deletes them at that moment.
    fn remove_bindings(&mut self, doomed: impl Fn(&RecordedBinding) -> bool) {
        let mut sources = Vec::new();
        self.bindings.retain(|b| {
            let remove = doomed(b);
            if remove {
                sources.push(b.source.clone());
            }
            !remove
        });
        for source in sources {
            let auto_delete = self
                .exchanges
                .iter()
                .any(|e| e.name == source && e.auto_delete);
            if auto_delete && !self.bindings.iter().any(|b| b.source == source) {
                self.delete_exchange(&source);
            }
        }
    }

    pub(crate) fn add_consumer(&mut self, consumer: RecordedConsumer) {
        self.consumers.push(consumer);
    }

    /// Forgets a cancelled consumer, and its queue if that was auto-delete and has no other
    /// consumer: the broker deletes such a queue when its last consumer goes.
    pub(crate) fn remove_consumer(&mut self, channel: u16, tag: &str) {
        let mut queues = Vec::new();
        self.consumers.retain(|c| {
            let remove = c.channel == channel && c.tag == tag;
            if remove {
                queues.push(c.queue.clone());
            }
            !remove
        });
        self.forget_abandoned_queues(queues);
    }

    /// Forgets the consumers of a closed channel (and the auto-delete queues they leave empty).
    pub(crate) fn remove_channel(&mut self, channel: u16) {
        let mut queues = Vec::new();
        self.consumers.retain(|c| {
            let remove = c.channel == channel;
            if remove {
                queues.push(c.queue.clone());
            }
            !remove
        });
        self.forget_abandoned_queues(queues);
    }

    fn forget_abandoned_queues(&mut self, queues: Vec<ShortString>) {
        for queue in queues {
            let auto_delete = self.queues.iter().any(|q| q.name == queue && q.auto_delete);
            if auto_delete && !self.consumers.iter().any(|c| c.queue == queue) {
                self.delete_queue(&queue);
            }
        }
    }
}

fn name_of(name: &str) -> ShortString {
    // Names in the topology came from ShortStrings, so any name compared against them fits.
    ShortString::try_from(name).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(name: &'static str, auto_delete: bool) -> RecordedQueue {
        RecordedQueue {
            name: ShortString::from_static(name),
            server_named: false,
            durable: false,
            exclusive: false,
            auto_delete,
            arguments: FieldTable::new(),
        }
    }

    fn consumer(channel: u16, queue: &'static str, tag: &'static str) -> RecordedConsumer {
        RecordedConsumer {
            channel,
            queue: ShortString::from_static(queue),
            tag: ShortString::from_static(tag),
            no_ack: false,
            exclusive: false,
            arguments: FieldTable::new(),
        }
    }

    #[test]
    fn auto_delete_queues_and_exchanges_go_with_their_last_user() {
        let mut topology = Topology::default();
        topology.declare_exchange(RecordedExchange {
            name: ShortString::from_static("x"),
            kind: ExchangeKind::Fanout,
            durable: false,
            auto_delete: true,
            internal: false,
            arguments: FieldTable::new(),
        });
        topology.declare_queue(queue("q", true));
        topology.declare_queue(queue("kept", false));
        topology.bind(RecordedBinding {
            source: ShortString::from_static("x"),
            destination: BindingDestination::Queue(ShortString::from_static("q")),
            routing_key: ShortString::default(),
            arguments: FieldTable::new(),
        });
        topology.add_consumer(consumer(1, "q", "a"));
        topology.add_consumer(consumer(2, "q", "b"));
        topology.add_consumer(consumer(1, "kept", "c"));

        topology.remove_consumer(1, "a");
        assert_eq!(topology.queues.len(), 2, "q still has consumer b");
        topology.remove_channel(1);
        assert_eq!(topology.queues.len(), 2, "kept is not auto-delete");
        topology.remove_consumer(2, "b");
        assert_eq!(topology.queues.len(), 1, "q lost its last consumer");
        assert!(topology.bindings.is_empty());
        assert!(topology.exchanges.is_empty(), "x lost its last binding");
    }
}
