//! The topology a connection declared: exchanges, queues, bindings and consumers.
//!
//! The driver records each declaration when the broker confirms it and forgets it when it is
//! deleted, so that recovery can declare it all again on a new connection. Passive declares
//! record nothing: they create nothing.

use std::fmt;

use crate::wire::{FieldTable, ShortString};

/// The type of an exchange.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExchangeKind {
    /// Routes to queues whose binding key equals the routing key.
    Direct,
    /// Routes to every bound queue, ignoring the routing key.
    Fanout,
    /// Routes by pattern: `*` matches one dot-separated word, `#` zero or more.
    Topic,
    /// Routes by message headers, as the binding's arguments (`x-match`) say.
    Headers,
    /// A plugin's exchange type, e.g. `x-consistent-hash` or `x-delayed-message`.
    Custom(String),
}

impl ExchangeKind {
    /// The type's name as the broker knows it.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Direct => "direct",
            Self::Fanout => "fanout",
            Self::Topic => "topic",
            Self::Headers => "headers",
            Self::Custom(name) => name,
        }
    }
}

impl fmt::Display for ExchangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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
    /// Not sent the connection's own publishes (RabbitMQ ignores it).
    pub no_local: bool,
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

    /// Gives a server-named queue the name the broker chose when recovery declared it again,
    /// in its record, its bindings and its consumers.
    pub(crate) fn rename_queue(&mut self, old: &ShortString, new: &ShortString) {
        for queue in &mut self.queues {
            if queue.name == *old {
                queue.name = new.clone();
            }
        }
        let old_destination = BindingDestination::Queue(old.clone());
        for binding in &mut self.bindings {
            if binding.destination == old_destination {
                binding.destination = BindingDestination::Queue(new.clone());
            }
        }
        for consumer in &mut self.consumers {
            if consumer.queue == *old {
                consumer.queue = new.clone();
            }
        }
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

/// Something recovery restores, as [`ConnectionEvent::TopologyRecoveryFailed`] names it.
///
/// [`ConnectionEvent::TopologyRecoveryFailed`]: crate::ConnectionEvent::TopologyRecoveryFailed
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TopologyEntity {
    /// A channel, or one of its settings.
    Channel {
        /// Channel number.
        channel: u16,
        /// What failed: `channel.open`, `basic.qos`, `confirm.select` or `tx.select`.
        what: &'static str,
    },
    /// An exchange declaration.
    Exchange(RecordedExchange),
    /// A queue declaration.
    Queue(RecordedQueue),
    /// A binding (queue or exchange-to-exchange).
    Binding(RecordedBinding),
    /// A consumer; its stream ended with [`Error::ConsumerNotRecovered`](crate::Error::ConsumerNotRecovered).
    Consumer(RecordedConsumer),
}

impl fmt::Display for TopologyEntity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Channel { channel, what } => write!(f, "{what} on channel {channel}"),
            Self::Exchange(exchange) => write!(f, "exchange '{}'", exchange.name),
            Self::Queue(queue) => write!(f, "queue '{}'", queue.name),
            Self::Binding(binding) => {
                let (kind, destination) = match &binding.destination {
                    BindingDestination::Queue(name) => ("queue", name),
                    BindingDestination::Exchange(name) => ("exchange", name),
                };
                write!(
                    f,
                    "binding of {kind} '{destination}' to exchange '{}' with key '{}'",
                    binding.source, binding.routing_key
                )
            }
            Self::Consumer(consumer) => write!(
                f,
                "consumer {} of queue '{}' on channel {}",
                consumer.tag, consumer.queue, consumer.channel
            ),
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
            no_local: false,
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

    #[test]
    fn a_renamed_queue_takes_its_bindings_and_consumers_along() {
        let mut topology = Topology::default();
        let old = ShortString::from_static("amq.gen-old");
        let new = ShortString::from_static("amq.gen-new");
        topology.declare_queue(RecordedQueue {
            server_named: true,
            ..queue("amq.gen-old", false)
        });
        topology.declare_queue(queue("other", false));
        topology.bind(RecordedBinding::queue(
            &ShortString::from_static("x"),
            &old,
            &ShortString::default(),
            &FieldTable::new(),
        ));
        topology.add_consumer(consumer(1, "amq.gen-old", "a"));
        topology.add_consumer(consumer(1, "other", "b"));
        topology.rename_queue(&old, &new);
        assert_eq!(topology.queues[0].name, new);
        assert!(topology.queues[0].server_named);
        assert_eq!(topology.queues[1].name, "other");
        assert_eq!(
            topology.bindings[0].destination,
            BindingDestination::Queue(new.clone())
        );
        assert_eq!(topology.consumers[0].queue, new);
        assert_eq!(topology.consumers[1].queue, "other");
    }
}
