//! The client's error type.
//!
//! One [`Error`] for every fallible call. It is `Clone`, so the driver hands the same close reason
//! to every waiter at once, and it carries data (reply codes, who closed, the failing method), not
//! strings, so callers can match on what went wrong.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::protocol::{ChannelClose, ConnectionClose, ReplyCode};
use crate::wire::{DecodeError, EncodeError, MethodId, ShortStringTooLong};

/// Who started a close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Initiator {
    /// The broker closed the channel or connection.
    Server,
    /// The application asked for the close.
    Client,
    /// warren closed it because the peer broke the protocol or stopped answering.
    Library,
}

impl fmt::Display for Initiator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Server => "the server",
            Self::Client => "the application",
            Self::Library => "warren",
        })
    }
}

/// Why a channel or connection was closed: the contents of a `channel.close` or
/// `connection.close`, and who sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    /// The AMQP reply code (`200` for a normal close).
    pub code: ReplyCode,
    /// The reply text, e.g. `NOT_FOUND - no queue 'orders' in vhost '/'`.
    pub text: String,
    /// The method that caused the close, when the closer named one.
    pub method: Option<MethodId>,
    /// Who closed.
    pub initiator: Initiator,
}

impl Close {
    /// A normal close (reply code 200) started by `initiator`.
    pub(crate) fn normal(initiator: Initiator) -> Self {
        Self {
            code: ReplyCode::REPLY_SUCCESS,
            text: "closed".to_owned(),
            method: None,
            initiator,
        }
    }

    /// The reason a broker's `connection.close` gives.
    pub(crate) fn from_connection_close(close: &ConnectionClose) -> Self {
        Self::sent_by_server(
            close.reply_code,
            &close.reply_text,
            close.class_id,
            close.method_id,
        )
    }

    /// The reason a broker's `channel.close` gives.
    pub(crate) fn from_channel_close(close: &ChannelClose) -> Self {
        Self::sent_by_server(
            close.reply_code,
            &close.reply_text,
            close.class_id,
            close.method_id,
        )
    }

    fn sent_by_server(code: u16, text: &str, class: u16, method: u16) -> Self {
        Self {
            code: ReplyCode(code),
            text: text.to_owned(),
            method: (class != 0).then_some(MethodId::new(class, method)),
            initiator: Initiator::Server,
        }
    }

    /// Whether this was a normal close (reply code 200).
    pub fn is_normal(&self) -> bool {
        self.code == ReplyCode::REPLY_SUCCESS
    }
}

impl fmt::Display for Close {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code.0)?;
        // RabbitMQ's texts start with the code's name ("NOT_FOUND - ..."); others may not.
        match self.code.name() {
            Some(name) if !self.text.starts_with(name) => write!(f, " {name}")?,
            _ => {}
        }
        write!(f, " - {}", self.text.trim())?;
        if let Some(method) = self.method {
            match crate::protocol::Method::name_of(method) {
                Some(name) => write!(f, " (in reply to {name})")?,
                None => write!(f, " (in reply to method {method})")?,
            }
        }
        Ok(())
    }
}

/// Everything that can go wrong in warren.
///
/// Match on the variant to handle a case, or use the helpers: [`Error::reply_code`],
/// [`Error::is_soft`], [`Error::is_connection_fatal`]. `Display` says what happened and, where
/// there is something to do about it, what.
///
/// An underlying error (the I/O error under [`Error::Io`] and [`Error::Connect`], the decode
/// error under [`Error::Protocol`]) is returned by [`source`](std::error::Error::source) and
/// not repeated in `Display`, so that error reporters (anyhow's `{:#}`, eyre, tracing) print
/// each cause once. Print the whole chain when showing an error to a person:
///
/// ```
/// fn report(error: &warren::Error) -> String {
///     let mut line = error.to_string();
///     let mut cause = std::error::Error::source(error);
///     while let Some(error) = cause {
///         line += &format!(": {error}");
///         cause = error.source();
///     }
///     line
/// }
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading from or writing to the socket failed, or the peer closed the TCP connection.
    #[error("connection lost")]
    Io(#[source] Arc<io::Error>),
    /// Connecting to the broker failed at the TCP level (refused, unreachable, name not resolved).
    #[error(
        "cannot connect to {address} (check that RabbitMQ runs there and that host and port \
         are right)"
    )]
    Connect {
        /// `host:port` that was tried.
        address: String,
        /// The underlying failure.
        #[source]
        source: Arc<io::Error>,
    },
    /// The TLS handshake or TLS configuration failed; [`TlsError`](crate::TlsError) says which
    /// check. `Display` and `source` are the `TlsError`'s.
    #[error(transparent)]
    Tls(crate::tls::TlsError),
    /// The broker refused the credentials (or the mechanism).
    #[error(
        "the broker refused the login with {mechanism}{}; check the user name and password, \
         and that the user exists",
        reason.as_ref().map(|close| format!(" ({close})")).unwrap_or_default()
    )]
    Authentication {
        /// The SASL mechanism that was used.
        mechanism: String,
        /// What the broker said, if it said anything before closing.
        reason: Option<Close>,
    },
    /// A URI is malformed or has a parameter warren refuses. Never contains the password.
    #[error("invalid AMQP URI: {0}")]
    Uri(crate::connection::uri::UriError),
    /// An option is invalid. The message names the option; it never contains a password.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// An argument cannot be sent, e.g. a name longer than 255 bytes.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The broker offered nothing warren can use (no common SASL mechanism, another protocol).
    #[error("connection handshake failed: {0}")]
    Handshake(String),
    /// The peer sent bytes that break the protocol; warren closed the connection with the reply
    /// code in [`DecodeError::reply_code`]. The `DecodeError` is the `source`.
    #[error(
        "the peer broke the AMQP protocol (warren closed the connection with reply code {})",
        .0.reply_code()
    )]
    Protocol(#[from] DecodeError),
    /// The connection is closed; `Close` says who closed it and why.
    #[error("connection closed by {initiator}: {close}{hint}", initiator = .0.initiator, close = .0, hint = vhost_hint(.0))]
    ConnectionClosed(Close),
    /// The channel is closed; `Close` says who closed it and why. The connection may still be open.
    #[error(
        "channel {channel} closed by {}: {close}{}",
        close.initiator,
        if close.initiator == Initiator::Server { "; open a new channel to continue" } else { "" }
    )]
    ChannelClosed {
        /// Channel number.
        channel: u16,
        /// The close reason.
        close: Close,
    },
    /// The peer sent nothing for two heartbeat intervals; the connection is considered dead.
    #[error(
        "no data from the broker for two heartbeat intervals ({interval:?} each); the \
         connection is dead"
    )]
    HeartbeatTimeout {
        /// The negotiated heartbeat interval.
        interval: Duration,
    },
    /// An operation did not complete within its deadline.
    #[error(
        "{operation} did not complete within {after:?}; the broker may be overloaded or \
         unreachable"
    )]
    Timeout {
        /// The operation, e.g. `queue.declare` or `connect`.
        operation: &'static str,
        /// The deadline that expired.
        after: Duration,
    },
    /// The broker has blocked the connection (a resource alarm, memory or disk) and the
    /// connection's [`BlockedPolicy`](crate::BlockedPolicy) is `FailFast`: the publish was
    /// not sent. Publish again once the broker unblocks the connection
    /// ([`ConnectionEvent::Unblocked`](crate::ConnectionEvent::Unblocked)).
    #[error(
        "the broker blocked the connection ({reason}), so the publish was not sent (blocked \
         policy FailFast); publish again once it is unblocked"
    )]
    Blocked {
        /// The broker's reason, e.g. `low on memory`.
        reason: String,
    },
    /// Every channel number up to the negotiated channel_max is in use.
    #[error(
        "all {channel_max} channels of the connection are in use; close channels you no longer \
         need or open another connection"
    )]
    ChannelsExhausted {
        /// The negotiated channel_max.
        channel_max: u16,
    },
    /// A frame would exceed the negotiated frame_max (an argument table too large for one frame).
    #[error(
        "a frame of {size} bytes exceeds the negotiated frame_max of {max} bytes; make argument \
         tables or headers smaller"
    )]
    FrameTooLarge {
        /// Size of the frame, in bytes.
        size: usize,
        /// The negotiated frame_max.
        max: u32,
    },
    /// A field table (message headers, method arguments, client properties) cannot be sent:
    /// it nests too deep or holds a NaN or infinite float. It was refused before anything was
    /// encoded; the channel and connection are unaffected. The `EncodeError` is the `source`.
    #[error("cannot send a field table; nothing was sent, and the channel is still usable")]
    Encode(#[from] EncodeError),
    /// A delivery's properties could not be decoded (e.g. a header table nested too deep), or
    /// its body was over [`max_body_size`](crate::ConnectionOptions::max_body_size) and skipped.
    ///
    /// The message is still acknowledgeable: reject it (typically without requeue, to a
    /// dead-letter exchange) through [`UndecodableDelivery`](crate::UndecodableDelivery). The connection is unaffected.
    #[error("{}", undecodable(.0))]
    UndecodableDelivery(Arc<crate::consumer::UndecodableDelivery>),
    /// The broker cancelled a consumer (`basic.cancel` from the server): its queue was deleted,
    /// or the queue's node failed. Consume again (after redeclaring the queue) to go on.
    #[error(
        "the broker cancelled consumer {consumer_tag}: its queue was deleted or became \
         unavailable; consume again to go on"
    )]
    ConsumerCancelled {
        /// The consumer's tag.
        consumer_tag: String,
    },
    /// The broker answered a request with a method that is not one of its replies.
    #[error("the broker answered {request} with {reply}, which is not a reply to it")]
    UnexpectedReply {
        /// The request, e.g. `queue.declare`.
        request: &'static str,
        /// What the broker sent instead.
        reply: &'static str,
    },
    /// The operation is not possible in the current state (e.g. publishing with
    /// `wait_for_confirms` on a channel without confirms).
    #[error("{0}")]
    InvalidState(&'static str),
    /// The connection was lost while this call waited for the broker's answer, and warren is
    /// recovering it. The call may or may not have taken effect on the broker; retry it (a
    /// call made while the connection recovers waits for it by itself). `source()` is why
    /// the connection was lost.
    #[error(
        "the connection was lost while waiting for the broker's answer and is being recovered; \
         the call may or may not have taken effect: retry it"
    )]
    ConnectionLost {
        /// Why the connection was lost.
        #[source]
        reason: Box<Error>,
    },
    /// The connection was lost after this publish was sent and before the broker confirmed
    /// it: the broker may or may not have the message. It is never reported as confirmed.
    /// Publish it again if a duplicate is acceptable (consumers should then deduplicate, on
    /// `message_id` for example). `source()` is why the connection was lost.
    #[error(
        "the connection was lost before the broker confirmed the publish: the broker may or may \
         not have the message; publish it again if a duplicate is acceptable"
    )]
    PublishOutcomeUnknown {
        /// Why the connection was lost.
        #[source]
        reason: Box<Error>,
    },
    /// An acknowledgement (ack, nack or reject) of a delivery received on a connection that
    /// has since been lost and recovered: its delivery tag means nothing on the new connection,
    /// so it was not sent. The broker requeued the message when the old connection died and
    /// delivers it again, flagged `redelivered`.
    #[error(
        "delivery {delivery_tag} came on a connection that has since been lost and recovered, \
         so it cannot be acknowledged; the broker delivers the message again"
    )]
    StaleDelivery {
        /// The delivery tag the application gave.
        delivery_tag: u64,
    },
    /// Automatic recovery gave up (the limits of the
    /// [`RecoveryPolicy`](crate::RecoveryPolicy) were reached) and closed the connection.
    /// `source()` is the last attempt's error.
    #[error("gave up recovering the connection after {attempts} attempts in {elapsed:.1?}")]
    RecoveryFailed {
        /// Attempts made.
        attempts: u32,
        /// Time since the connection was lost.
        elapsed: Duration,
        /// The last attempt's error.
        #[source]
        last: Box<Error>,
    },
    /// Recovery could not restore a consumer on the new connection (its queue is gone, or the
    /// broker refused it); its stream ends with this error. `source()` is the broker's answer.
    #[error(
        "consumer {consumer_tag} of queue '{queue}' could not be restored after the connection \
         was recovered"
    )]
    ConsumerNotRecovered {
        /// The consumer's tag.
        consumer_tag: String,
        /// The queue it consumed from.
        queue: String,
        /// What the broker answered.
        #[source]
        cause: Box<Error>,
    },
    /// The consumer was cancelled because the connection's consumer buffers stayed over their
    /// budget (see
    /// [`ConnectionOptions::consumer_buffer_budget`](crate::ConnectionOptions::consumer_buffer_budget))
    /// for the stall timeout, and it held the most: it was not read fast enough. The
    /// deliveries it held came out of the stream first. Read consumers promptly, or set a
    /// prefetch with `basic_qos` so that the broker holds the backlog.
    #[error(
        "consumer {consumer_tag} was cancelled: it held {buffered_bytes} bytes of unread \
         deliveries and the connection's consumer buffer budget stayed exceeded; read it faster \
         or set a prefetch with basic_qos"
    )]
    ConsumerLagged {
        /// The consumer's tag.
        consumer_tag: String,
        /// Bytes of deliveries it held when it was cancelled.
        buffered_bytes: usize,
    },
}

/// What [`Error::UndecodableDelivery`] says: an oversized body, or undecodable properties.
fn undecodable(delivery: &crate::consumer::UndecodableDelivery) -> String {
    match delivery.error() {
        DecodeError::BodyTooLarge { size, max } => format!(
            "delivery {} has a body of {size} bytes, over max_body_size ({max} bytes), which was \
             skipped; reject it (without requeue, to dead-letter it) or raise max_body_size",
            delivery.delivery_tag()
        ),
        error => format!(
            "delivery {} has properties that cannot be decoded ({error}); reject it",
            delivery.delivery_tag()
        ),
    }
}

/// The advice [`Error::ConnectionClosed`] adds when the broker refused the virtual host.
fn vhost_hint(close: &Close) -> &'static str {
    if close.initiator == Initiator::Server
        && close.code == ReplyCode::NOT_ALLOWED
        && close.text.contains("vhost")
    {
        "; check that the virtual host exists and the user may use it"
    } else {
        ""
    }
}

impl Error {
    /// A short name of what kind of error this is (`channel_closed`, `timeout`,
    /// `connection_lost`, ...), stable across releases: the `error.type` of the spans and
    /// metrics of a failed operation. For a close, [`Error::reply_code`] says more.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::Authentication { .. } => "authentication",
            Self::Blocked { .. } => "blocked",
            Self::ChannelClosed { .. } => "channel_closed",
            Self::ChannelsExhausted { .. } => "channels_exhausted",
            Self::Config { .. } => "config",
            Self::Connect { .. } => "connect",
            Self::ConnectionClosed { .. } => "connection_closed",
            Self::ConnectionLost { .. } => "connection_lost",
            Self::ConsumerCancelled { .. } => "consumer_cancelled",
            Self::ConsumerLagged { .. } => "consumer_lagged",
            Self::ConsumerNotRecovered { .. } => "consumer_not_recovered",
            Self::Encode { .. } => "encode",
            Self::FrameTooLarge { .. } => "frame_too_large",
            Self::Handshake { .. } => "handshake",
            Self::HeartbeatTimeout { .. } => "heartbeat_timeout",
            Self::InvalidArgument { .. } => "invalid_argument",
            Self::InvalidState { .. } => "invalid_state",
            Self::Io { .. } => "io",
            Self::Protocol { .. } => "protocol",
            Self::PublishOutcomeUnknown { .. } => "publish_outcome_unknown",
            Self::RecoveryFailed { .. } => "recovery_failed",
            Self::StaleDelivery { .. } => "stale_delivery",
            Self::Timeout { .. } => "timeout",
            Self::Tls { .. } => "tls",
            Self::UndecodableDelivery { .. } => "undecodable_delivery",
            Self::UnexpectedReply { .. } => "unexpected_reply",
            Self::Uri { .. } => "uri",
        }
    }

    /// The AMQP reply code, when the error came from a `channel.close` or `connection.close`
    /// (for [`Error::ConnectionLost`] and [`Error::PublishOutcomeUnknown`], the code of the
    /// close that lost the connection).
    pub fn reply_code(&self) -> Option<ReplyCode> {
        self.close().map(|close| close.code)
    }

    /// The close reason, for channel and connection closes (and for the errors of a
    /// connection lost by a close, that close).
    pub fn close(&self) -> Option<&Close> {
        match self {
            Self::ConnectionClosed(close) | Self::ChannelClosed { close, .. } => Some(close),
            Self::Authentication { reason, .. } => reason.as_ref(),
            Self::ConnectionLost { reason } | Self::PublishOutcomeUnknown { reason } => {
                reason.close()
            }
            _ => None,
        }
    }

    /// Whether this is a soft error: only the channel was closed; the connection still works.
    pub fn is_soft(&self) -> bool {
        matches!(self, Self::ChannelClosed { .. })
    }

    /// Whether the connection is unusable after this error, so that it must be reopened.
    ///
    /// With automatic recovery (the default), a connection that fails this way is reopened
    /// by warren; pending calls then fail with [`Error::ConnectionLost`] instead, which is
    /// not fatal.
    pub fn is_connection_fatal(&self) -> bool {
        matches!(
            self,
            Self::Io(_)
                | Self::Connect { .. }
                | Self::Tls(_)
                | Self::Authentication { .. }
                | Self::Handshake(_)
                | Self::Protocol(_)
                | Self::ConnectionClosed(_)
                | Self::HeartbeatTimeout { .. }
                | Self::RecoveryFailed { .. }
        )
    }

    /// Whether trying the same thing again is expected to work: the call failed only because
    /// the connection was lost and warren is recovering it ([`Error::ConnectionLost`]), or a
    /// publish's outcome is unknown for that reason ([`Error::PublishOutcomeUnknown`]).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::ConnectionLost { .. } | Self::PublishOutcomeUnknown { .. }
        )
    }

    /// Whether this is a timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout { .. })
    }

    pub(crate) fn io(error: io::Error) -> Self {
        Self::Io(Arc::new(error))
    }
}

impl From<ShortStringTooLong> for Error {
    fn from(error: ShortStringTooLong) -> Self {
        Self::InvalidArgument(error.to_string())
    }
}

impl From<crate::frame::FrameTooLarge> for Error {
    fn from(error: crate::frame::FrameTooLarge) -> Self {
        Self::FrameTooLarge {
            size: error.size,
            max: error.max,
        }
    }
}

/// The result type of warren's fallible calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;
    use crate::tls::TlsError;

    /// Every error with a cause returns it from `source()` and does not repeat it in
    /// `Display`: reporters that print the chain would show it twice.
    #[test]
    fn a_cause_is_the_source_and_is_not_repeated() {
        let io = || {
            Arc::new(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "reset by the peer",
            ))
        };
        let errors = [
            Error::Io(io()),
            Error::Connect {
                address: "127.0.0.1:5672".to_owned(),
                source: io(),
            },
            Error::Tls(TlsError::Io(io())),
            Error::Protocol(DecodeError::BadFrameEnd(7)),
        ];
        for error in errors {
            let cause = error
                .source()
                .unwrap_or_else(|| panic!("{error:?} has no source"));
            let (text, cause) = (error.to_string(), cause.to_string());
            assert!(
                !text.contains(&cause),
                "{text:?} repeats its source {cause:?}"
            );
        }
    }

    /// Errors that carry their whole story in their own text have no source.
    #[test]
    fn errors_without_a_cause_have_no_source() {
        let uri = "amqp://h?heartbeat=x"
            .parse::<crate::ConnectionOptions>()
            .unwrap_err();
        assert!(uri.source().is_none(), "{uri:?}");
        assert!(uri.to_string().starts_with("invalid AMQP URI: "), "{uri}");
        let tls = Error::Tls(TlsError::NotEnabled);
        assert!(tls.source().is_none());
        assert!(tls.to_string().contains("`tls` Cargo feature"), "{tls}");
    }
}
