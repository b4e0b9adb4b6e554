//! What handles ask of the driver, and how the driver answers.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, oneshot};

use crate::channel::ChannelShared;
use crate::confirms::{ConfirmSummary, Confirmation, Mandatory};
use crate::consumer::{ConsumerEvent, ConsumerShared};
use crate::delivery_queue;
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
    /// Send a synchronous method and deliver its reply.
    Rpc(Rpc),
    /// Send an asynchronous method (no reply expected).
    Send { channel: ChannelKey, method: Method },
    /// Publish a message.
    Publish(Publish),
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
    pub content: Option<(ContentHeader, Bytes)>,
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
