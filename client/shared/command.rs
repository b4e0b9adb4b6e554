//! What handles ask of the driver, and how the driver answers.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, oneshot};

use super::acks::AckBatch;
use super::channel::ChannelShared;
use super::consumer::{ConsumerEvent, ConsumerShared};
use super::delivery_queue;
use super::ledger::{ConfirmSummary, Confirmation, Mandatory};
use crate::error::Result;
use crate::frame::ContentHeader;
use crate::protocol::Method;
use crate::wire::{MethodId, ShortString};

/// Which channel a command is for: its number, and which opening of that number.
///
/// Numbers are reused once a channel closes, so a command that was queued for a channel the
/// broker has since closed must not reach a new channel that got the same number (a stale
/// publish would shift the new channel's confirm numbering by one). The driver numbers every
/// opening (`epoch`, never reused within a connection) and checks both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChannelKey {
    pub id: u16,
    pub epoch: u64,
}

impl Command {
    /// [`Command::Send`] of `method` on `channel`.
    pub(crate) fn send(channel: ChannelKey, method: impl Into<Method>) -> Self {
        Self::Send {
            channel,
            method: Box::new(method.into()),
        }
    }
}

impl ChannelKey {
    /// Channel 0, the connection's own.
    pub(crate) const CONNECTION: Self = Self { id: 0, epoch: 0 };
}

/// A request from a handle to the driver.
#[derive(Debug)]
pub(crate) enum Command {
    /// Open a channel on the lowest free number.
    OpenChannel {
        reply: oneshot::Sender<Result<Arc<ChannelShared>>>,
    },
    /// Send a synchronous method and deliver its reply. (Boxed, as `Send`'s method is: see
    /// the test `a_command_is_no_larger_than_a_publish`.)
    Rpc(Box<Rpc>),
    /// Send an asynchronous method (no reply expected).
    Send {
        channel: ChannelKey,
        method: Box<Method>,
    },
    /// Publish a message.
    Publish(Publish),
    /// Send the acknowledgements (ack, nack, reject) in a channel's batch.
    Acks {
        channel: ChannelKey,
        batch: Arc<AckBatch>,
    },
    /// Wait until every publish so far on a confirm-mode channel is settled.
    WaitForConfirms {
        channel: ChannelKey,
        reply: oneshot::Sender<Result<ConfirmSummary>>,
    },
    /// Close a channel (`reply` is `None` when its last handle was dropped).
    CloseChannel {
        channel: ChannelKey,
        reply: Option<oneshot::Sender<Result<()>>>,
    },
    /// A consumer's stream was dropped: cancel it on the broker and requeue what still arrives.
    ForgetConsumer {
        channel: ChannelKey,
        consumer_tag: ShortString,
    },
    /// Close the connection.
    CloseConnection {
        code: u16,
        text: String,
        reply: Option<oneshot::Sender<Result<()>>>,
    },
}

/// A synchronous method waiting for its reply.
#[derive(Debug)]
pub(crate) struct Rpc {
    pub channel: ChannelKey,
    pub method: Method,
    /// The methods that answer it.
    pub replies: &'static [MethodId],
    /// Bookkeeping the driver does when the reply arrives.
    pub on_reply: OnReply,
    pub reply: oneshot::Sender<Result<RpcReply>>,
}

/// The answer to an [`Rpc`].
#[derive(Debug)]
pub(crate) struct RpcReply {
    pub method: Method,
    /// Content that followed the reply (`basic.get-ok`).
    /// The body is [`DecodeError::BodyTooLarge`](crate::wire::DecodeError) when it was over
    /// `max_body_size` and skipped.
    pub content: Option<(ContentHeader, Result<Bytes, crate::wire::DecodeError>)>,
}

/// What the driver does when an RPC's reply arrives, besides handing it to the caller.
#[derive(Debug, Default)]
pub(crate) enum OnReply {
    /// Nothing more.
    #[default]
    Nothing,
    /// `basic.consume-ok`: route the consumer's deliveries to this stream.
    RegisterConsumer {
        events: delivery_queue::Sender<ConsumerEvent>,
        shared: Arc<ConsumerShared>,
        no_ack: bool,
    },
}

/// A message to publish, its method and content header already encoded by the publisher.
#[derive(Debug)]
pub(crate) struct Publish {
    pub channel: ChannelKey,
    /// The `basic.publish` method frame and the content header frame.
    pub frames: Bytes,
    pub body: Bytes,
    /// The publisher's confirmation, in confirm mode.
    pub reply: Option<oneshot::Sender<Result<Confirmation>>>,
    /// What a `basic.return` of this publish would carry, for mandatory publishes in confirm
    /// mode.
    pub mandatory: Option<Box<Mandatory>>,
    /// A place in the channel's in-flight limit, held until the broker confirms.
    pub permit: Option<OwnedSemaphorePermit>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every publish is moved several times as a `Command` on its way to the driver (into
    /// the queue, out of it, into the driver's batch), so a `Command` is no larger than a
    /// `Publish`: the rarer variants that carry a whole `Method` are boxed. Unboxed they made
    /// it 176 bytes, and each move a `memcpy` call (callgrind, confirmed publish: 496
    /// instructions of `memcpy` per message, 235 after).
    #[test]
    fn a_command_is_no_larger_than_a_publish() {
        let command = std::mem::size_of::<Command>();
        let publish = std::mem::size_of::<Publish>();
        assert!(
            command <= publish + 8,
            "Command is {command} bytes, Publish {publish}: box the variant that grew"
        );
    }
}
