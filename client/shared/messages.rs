//! What the broker says about a message, as plain data: where a delivery came from
//! ([`Envelope`]) and a message it sent back ([`ReturnedMessage`]).

use bytes::Bytes;

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
    /// The message body; empty when it was skipped (see `skipped_body_size`).
    pub body: Bytes,
    /// `Some(size)` when the body, `size` bytes, exceeded the connection's
    /// [`max_body_size`](crate::ConnectionOptions::max_body_size): it was read and dropped
    /// instead of buffered, and `body` is empty. `None` when `body` is the whole body.
    pub skipped_body_size: Option<u64>,
}
