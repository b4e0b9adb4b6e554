//! What can go wrong with a call of an [`RpcClient`](super::RpcClient).

use std::time::Duration;

use crate::error::Error;
use crate::protocol::ReplyCode;

/// Why an RPC call failed.
///
/// `Display` says what happened and what to do; the underlying [`Error`], where there is
/// one, is the [`source`](std::error::Error::source).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// No reply came within the call's deadline. The server may still handle the request;
    /// a reply that comes later is dropped and counted in
    /// [`RpcClient::late_replies`](super::RpcClient::late_replies).
    #[error(
        "no reply within {after:?}: is a server consuming the request queue, and is it keeping up?"
    )]
    Timeout {
        /// The call's deadline.
        after: Duration,
    },
    /// The connection was lost while the call waited for its reply. A direct reply-to
    /// address dies with its connection, so the reply cannot come; the server may or may not
    /// have handled the request. Retry the call if the request is idempotent (the client
    /// works again once the connection is recovered). `source()` is why it was lost.
    #[error(
        "the connection was lost while the call waited for its reply, which cannot arrive \
         now; the server may or may not have handled the request: retry if it is idempotent"
    )]
    ConnectionLost {
        /// Why the connection was lost.
        #[source]
        reason: Box<Error>,
    },
    /// The request was published `mandatory` and no queue took it: the broker returned it.
    /// Check the exchange and routing key, and that the server has declared its queue.
    #[error(
        "the broker returned the request ({reply_code} {reply_text}): no queue is bound for \
         exchange '{exchange}' with routing key '{routing_key}'; is the server running?"
    )]
    Unroutable {
        /// The broker's reply code, usually `312 NO_ROUTE`.
        reply_code: ReplyCode,
        /// The broker's explanation.
        reply_text: String,
        /// The exchange the request was published to.
        exchange: String,
        /// Its routing key.
        routing_key: String,
    },
    /// The request could not be published (an invalid exchange name or property, a channel
    /// the broker closed, ...); it was not sent. `source()` says why.
    #[error("the request could not be published")]
    Publish(#[source] Error),
    /// The client's channel or reply consumer ended while the call waited (the broker closed
    /// the channel: a request to a missing exchange, say), or a new channel for the call
    /// could not be opened (the connection is closed for good). After the first, the next
    /// call opens a new channel by itself; after the second, no call can succeed.
    /// `source()` says why.
    #[error("the RPC client's channel or reply consumer ended")]
    Closed(#[source] Error),
}

impl RpcError {
    /// Whether calling again may succeed: the connection was lost (and is being recovered),
    /// or the publish failed for that reason. A timeout is not counted: whether to retry
    /// after one depends on the request.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::ConnectionLost { .. } => true,
            Self::Publish(error) => error.is_retryable(),
            _ => false,
        }
    }

    /// Whether this is a timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout { .. })
    }
}
