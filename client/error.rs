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
use crate::wire::{DecodeError, MethodId, ShortStringTooLong};

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
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Error {
    /// Reading from or writing to the socket failed, or the peer closed the TCP connection.
    Io(Arc<io::Error>),
    /// Connecting to the broker failed at the TCP level (refused, unreachable, name not resolved).
    Connect {
        /// `host:port` that was tried.
        address: String,
        /// The underlying failure.
        source: Arc<io::Error>,
    },
    /// The TLS handshake or TLS configuration failed; [`TlsError`](crate::TlsError) says which check.
    Tls(crate::tls::TlsError),
    /// The broker refused the credentials (or the mechanism).
    Authentication {
        /// The SASL mechanism that was used.
        mechanism: String,
        /// What the broker said, if it said anything before closing.
        reason: Option<Close>,
    },
    /// A URI is malformed or has an unknown parameter. Never contains the password.
    Uri(crate::connection::uri::UriError),
    /// An option is invalid. The message names the option; it never contains a password.
    Config(String),
    /// An argument cannot be sent, e.g. a name longer than 255 bytes.
    InvalidArgument(String),
    /// The broker offered nothing warren can use (no common SASL mechanism, another protocol).
    Handshake(String),
    /// The peer sent bytes that break the protocol; warren closed the connection with the reply
    /// code in [`DecodeError::reply_code`].
    Protocol(DecodeError),
    /// The connection is closed; `Close` says who closed it and why.
    ConnectionClosed(Close),
    /// The channel is closed; `Close` says who closed it and why. The connection may still be open.
    ChannelClosed {
        /// Channel number.
        channel: u16,
        /// The close reason.
        close: Close,
    },
    /// The peer sent nothing for two heartbeat intervals; the connection is considered dead.
    HeartbeatTimeout {
        /// The negotiated heartbeat interval.
        interval: Duration,
    },
    /// An operation did not complete within its deadline.
    Timeout {
        /// The operation, e.g. `queue.declare` or `connect`.
        operation: &'static str,
        /// The deadline that expired.
        after: Duration,
    },
    /// Every channel number up to the negotiated channel_max is in use.
    ChannelsExhausted {
        /// The negotiated channel_max.
        channel_max: u16,
    },
    /// A frame would exceed the negotiated frame_max (an argument table too large for one frame).
    FrameTooLarge {
        /// Size of the frame, in bytes.
        size: usize,
        /// The negotiated frame_max.
        max: u32,
    },
    /// A delivery's properties could not be decoded (e.g. a header table nested too deep).
    ///
    /// The message is still acknowledgeable: reject it (typically without requeue, to a
    /// dead-letter exchange) through [`UndecodableDelivery`](crate::UndecodableDelivery). The connection is unaffected.
    UndecodableDelivery(Arc<crate::consumer::UndecodableDelivery>),
    /// The broker cancelled a consumer (`basic.cancel` from the server): its queue was deleted,
    /// or the queue's node failed. Consume again (after redeclaring the queue) to go on.
    ConsumerCancelled {
        /// The consumer's tag.
        consumer_tag: String,
    },
    /// The broker answered a request with a method that is not one of its replies.
    UnexpectedReply {
        /// The request, e.g. `queue.declare`.
        request: &'static str,
        /// What the broker sent instead.
        reply: &'static str,
    },
    /// The operation is not possible in the current state (e.g. publishing with
    /// `wait_for_confirms` on a channel without confirms).
    InvalidState(&'static str),
}

impl Error {
    /// The AMQP reply code, when the error came from a `channel.close` or `connection.close`.
    pub fn reply_code(&self) -> Option<ReplyCode> {
        match self {
            Self::ConnectionClosed(close) | Self::ChannelClosed { close, .. } => Some(close.code),
            Self::Authentication {
                reason: Some(close),
                ..
            } => Some(close.code),
            _ => None,
        }
    }

    /// The close reason, for channel and connection closes.
    pub fn close(&self) -> Option<&Close> {
        match self {
            Self::ConnectionClosed(close) | Self::ChannelClosed { close, .. } => Some(close),
            Self::Authentication { reason, .. } => reason.as_ref(),
            _ => None,
        }
    }

    /// Whether this is a soft error: only the channel was closed; the connection still works.
    pub fn is_soft(&self) -> bool {
        matches!(self, Self::ChannelClosed { .. })
    }

    /// Whether the connection is unusable after this error, so that it must be reopened.
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

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "connection lost: {e}"),
            Self::Connect { address, source } => write!(
                f,
                "cannot connect to {address}: {source}; check that RabbitMQ runs there and that \
                 host and port are right"
            ),
            Self::Tls(e) => write!(f, "TLS failed: {e}"),
            Self::Uri(e) => write!(f, "invalid AMQP URI: {e}"),
            Self::Authentication { mechanism, reason } => {
                write!(f, "the broker refused the login with {mechanism}")?;
                if let Some(reason) = reason {
                    write!(f, " ({reason})")?;
                }
                f.write_str("; check the user name and password, and that the user exists")
            }
            Self::Config(msg) => write!(f, "invalid configuration: {msg}"),
            Self::InvalidArgument(msg) => write!(f, "invalid argument: {msg}"),
            Self::Handshake(msg) => write!(f, "connection handshake failed: {msg}"),
            Self::Protocol(e) => write!(
                f,
                "the peer broke the AMQP protocol ({e}); warren closed the connection with reply code {}",
                e.reply_code()
            ),
            Self::ConnectionClosed(close) => {
                write!(f, "connection closed by {}: {close}", close.initiator)?;
                if close.initiator == Initiator::Server
                    && close.code == ReplyCode::NOT_ALLOWED
                    && close.text.contains("vhost")
                {
                    f.write_str("; check that the virtual host exists and the user may use it")?;
                }
                Ok(())
            }
            Self::ChannelClosed { channel, close } => {
                write!(
                    f,
                    "channel {channel} closed by {}: {close}",
                    close.initiator
                )?;
                if close.initiator == Initiator::Server {
                    f.write_str("; open a new channel to continue")?;
                }
                Ok(())
            }
            Self::HeartbeatTimeout { interval } => write!(
                f,
                "no data from the broker for two heartbeat intervals ({} s each); the connection \
                 is dead",
                interval.as_secs()
            ),
            Self::Timeout { operation, after } => write!(
                f,
                "{operation} did not complete within {after:?}; the broker may be overloaded or \
                 unreachable"
            ),
            Self::ChannelsExhausted { channel_max } => write!(
                f,
                "all {channel_max} channels of the connection are in use; close channels you no \
                 longer need or open another connection"
            ),
            Self::FrameTooLarge { size, max } => write!(
                f,
                "a frame of {size} bytes exceeds the negotiated frame_max of {max} bytes; make \
                 argument tables or headers smaller"
            ),
            Self::UndecodableDelivery(d) => write!(
                f,
                "delivery {} has properties that cannot be decoded ({}); reject it",
                d.delivery_tag(),
                d.error()
            ),
            Self::ConsumerCancelled { consumer_tag } => write!(
                f,
                "the broker cancelled consumer {consumer_tag}: its queue was deleted or became \
                 unavailable; consume again to go on"
            ),
            Self::UnexpectedReply { request, reply } => write!(
                f,
                "the broker answered {request} with {reply}, which is not a reply to it"
            ),
            Self::InvalidState(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e.as_ref()),
            Self::Connect { source, .. } => Some(source.as_ref()),
            Self::Tls(e) => Some(e),
            Self::Uri(e) => Some(e),
            Self::Protocol(e) => Some(e),
            _ => None,
        }
    }
}

impl From<DecodeError> for Error {
    fn from(error: DecodeError) -> Self {
        Self::Protocol(error)
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
