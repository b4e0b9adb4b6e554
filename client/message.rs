//! Messages the broker hands to the application: deliveries, messages got with `basic.get`,
//! and returned messages.

use bytes::Bytes;

use crate::channel::{BasicAckOptions, BasicNackOptions, BasicRejectOptions, Channel};
use crate::error::Result;
use crate::protocol::{BasicProperties, ReplyCode};
use crate::wire::ShortString;

/// Where a delivered message came from and how to acknowledge it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The consumer the message was delivered to (empty for `basic.get`).
    pub consumer_tag: ShortString,
    /// The channel-scoped number to acknowledge the message with.
    pub delivery_tag: u64,
    /// Whether the message was delivered before and not acknowledged. `false` guarantees a
    /// first delivery; `true` is only a hint that it may have been processed.
    pub redelivered: bool,
    /// The exchange the message was published to (empty for the default exchange).
    pub exchange: ShortString,
    /// The routing key it was published with.
    pub routing_key: ShortString,
}

/// A message delivered to a consumer or fetched with `basic.get`.
///
/// Unless it was consumed with `no_ack`, acknowledge it exactly once with [`Delivery::ack`],
/// [`Delivery::nack`] or [`Delivery::reject`], on the channel it came from (the delivery
/// remembers it). Unacknowledged messages go back to their queue when the channel closes.
#[derive(Debug)]
pub struct Delivery {
    /// Routing information and the delivery tag.
    pub envelope: Envelope,
    /// The message properties.
    pub properties: BasicProperties,
    /// The message body: a slice of the connection's read buffer, not a copy.
    pub body: Bytes,
    channel: Channel,
}

impl Delivery {
    pub(crate) fn new(
        envelope: Envelope,
        properties: BasicProperties,
        body: Bytes,
        channel: Channel,
    ) -> Self {
        Self {
            envelope,
            properties,
            body,
            channel,
        }
    }

    /// The delivery tag (shorthand for `envelope.delivery_tag`).
    pub fn delivery_tag(&self) -> u64 {
        self.envelope.delivery_tag
    }

    /// The channel the message arrived on.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Acknowledges the message: the broker forgets it.
    pub async fn ack(&self, options: BasicAckOptions) -> Result<()> {
        self.channel
            .basic_ack(self.envelope.delivery_tag, options)
            .await
    }

    /// Rejects the message (and with `multiple`, every earlier unacknowledged one); by default
    /// it is requeued.
    pub async fn nack(&self, options: BasicNackOptions) -> Result<()> {
        self.channel
            .basic_nack(self.envelope.delivery_tag, options)
            .await
    }

    /// Rejects the message; by default it is requeued.
    pub async fn reject(&self, options: BasicRejectOptions) -> Result<()> {
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

/// A message the broker sent back (`basic.return`): it was published `mandatory` and no queue
/// took it, or `immediate` and no consumer could.
#[derive(Debug, Clone, PartialEq)]
pub struct ReturnedMessage {
    /// Why: usually `312 NO_ROUTE`.
    pub reply_code: ReplyCode,
    /// The broker's explanation.
    pub reply_text: ShortString,
    /// The exchange the message was published to.
    pub exchange: ShortString,
    /// The routing key it was published with.
    pub routing_key: ShortString,
    /// The message properties.
    pub properties: BasicProperties,
    /// The message body.
    pub body: Bytes,
}
