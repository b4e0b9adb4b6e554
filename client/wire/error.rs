//! The one error type of every decoder in `wire`, `protocol` and `frame`.

use std::fmt;

/// Why bytes received from the peer could not be decoded.
///
/// Every decoder in warren returns this instead of panicking, whatever the input. The client maps
/// it to the reply code it closes the connection with (see [`DecodeError::reply_code`]) or, for a
/// delivery whose properties are bad, to a per-delivery error that the application can reject.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// A value needed more bytes than the enclosing structure had left.
    Truncated {
        /// Bytes the value needed.
        needed: usize,
        /// Bytes that were left.
        remaining: usize,
    },
    /// A short string or a method field was not valid UTF-8.
    InvalidUtf8,
    /// A field table or array held a value tag that AMQP 0-9-1 (with RabbitMQ's errata) does not define.
    UnknownFieldTag(u8),
    /// Field tables and arrays nested deeper than [`MAX_NESTING`](super::MAX_NESTING).
    NestingTooDeep {
        /// The nesting limit that was exceeded.
        limit: usize,
    },
    /// A method frame named a class and method this protocol does not define.
    UnknownMethod {
        /// Class id from the frame.
        class: u16,
        /// Method id from the frame.
        method: u16,
    },
    /// A content header named a class that carries no content.
    UnknownContentClass(u16),
    /// A content header set a presence flag for a property the class does not define.
    UnknownProperty {
        /// Class id of the content header.
        class: u16,
        /// Zero-based position of the undefined property.
        index: usize,
    },
    /// A frame had a type octet other than method, header, body or heartbeat.
    UnknownFrameType(u8),
    /// A frame did not end with the frame-end octet (206).
    BadFrameEnd(u8),
    /// A frame declared a payload larger than the negotiated frame_max allows.
    FrameTooLarge {
        /// Size of the whole frame as declared (header, payload and frame-end octet).
        size: u64,
        /// The largest frame accepted.
        max: u32,
    },
    /// A content header declared a body larger than the configured cap.
    BodyTooLarge {
        /// Declared body size.
        size: u64,
        /// The largest body accepted.
        max: u64,
    },
    /// Body frames carried more bytes than the content header announced.
    BodyOverrun {
        /// Size announced by the content header.
        expected: u64,
        /// Bytes received so far, including the frame that overran.
        received: u64,
    },
    /// A frame arrived that the content protocol does not allow at this point
    /// (a header without a content method, a body without a header, a method in the middle of a content).
    UnexpectedFrame {
        /// What arrived.
        got: &'static str,
        /// What was expected instead.
        expected: &'static str,
    },
    /// A frame was sent on a channel that must not carry it (heartbeats off channel 0, content on channel 0).
    WrongChannel {
        /// Kind of frame.
        frame: &'static str,
        /// The channel it arrived on.
        channel: u16,
    },
    /// The peer answered the protocol header with a different protocol version.
    ProtocolMismatch {
        /// The eight bytes the peer sent.
        header: [u8; 8],
    },
}

impl DecodeError {
    /// The AMQP reply code a peer should close the connection with when it meets this error.
    ///
    /// Frame-level faults are `FRAME_ERROR` (501), malformed method fields `SYNTAX_ERROR` (502),
    /// out-of-order frames `UNEXPECTED_FRAME` (505), frames on the wrong channel `CHANNEL_ERROR`
    /// (504) and unknown methods `NOT_IMPLEMENTED` (540). An oversized body would be a frame
    /// error (501), but the client does not close for one: it skips that body and reports the
    /// message alone.
    pub fn reply_code(&self) -> u16 {
        match self {
            Self::Truncated { .. }
            | Self::InvalidUtf8
            | Self::UnknownFieldTag(_)
            | Self::NestingTooDeep { .. }
            | Self::UnknownProperty { .. } => 502,
            Self::UnknownMethod { .. } | Self::UnknownContentClass(_) => 540,
            Self::UnexpectedFrame { .. } => 505,
            // The spec makes a heartbeat off channel 0 a frame error; other frames on a
            // channel that cannot carry them are channel errors.
            Self::WrongChannel {
                frame: "heartbeat", ..
            } => 501,
            Self::WrongChannel { .. } => 504,
            Self::UnknownFrameType(_)
            | Self::BadFrameEnd(_)
            | Self::FrameTooLarge { .. }
            | Self::BodyTooLarge { .. }
            | Self::BodyOverrun { .. }
            | Self::ProtocolMismatch { .. } => 501,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { needed, remaining } => write!(
                f,
                "truncated input: a value needs {needed} bytes but only {remaining} remain"
            ),
            Self::InvalidUtf8 => f.write_str("a short string is not valid UTF-8"),
            Self::UnknownFieldTag(tag) => {
                write!(f, "unknown field value tag {}", EscapedByte(*tag))
            }
            Self::NestingTooDeep { limit } => write!(
                f,
                "field tables or arrays nest deeper than the limit of {limit} levels"
            ),
            Self::UnknownMethod { class, method } => {
                write!(f, "unknown method {class}.{method}")
            }
            Self::UnknownContentClass(class) => {
                write!(
                    f,
                    "content header for class {class}, which carries no content"
                )
            }
            Self::UnknownProperty { class, index } => write!(
                f,
                "content header for class {class} sets property flag {index}, which the class does not define"
            ),
            Self::UnknownFrameType(kind) => write!(f, "unknown frame type {kind}"),
            Self::BadFrameEnd(octet) => {
                write!(f, "frame ends with octet {octet} instead of 206")
            }
            Self::FrameTooLarge { size, max } => write!(
                f,
                "frame of {size} bytes exceeds the negotiated frame_max of {max} bytes"
            ),
            Self::BodyTooLarge { size, max } => write!(
                f,
                "message body of {size} bytes exceeds the limit of {max} bytes"
            ),
            Self::BodyOverrun { expected, received } => write!(
                f,
                "body frames carry {received} bytes but the content header announced {expected}"
            ),
            Self::UnexpectedFrame { got, expected } => {
                write!(f, "unexpected {got} frame; expected {expected}")
            }
            Self::WrongChannel { frame, channel } => {
                write!(
                    f,
                    "{frame} frame on channel {channel}, where it is not allowed"
                )
            }
            Self::ProtocolMismatch { header } => write!(
                f,
                "the peer does not speak AMQP 0-9-1: it answered with the protocol header {}",
                header.escape_ascii()
            ),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Shows a tag octet as a character when it is printable ASCII, as a number otherwise.
struct EscapedByte(u8);

impl fmt::Display for EscapedByte {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_ascii_graphic() {
            write!(f, "'{}'", self.0 as char)
        } else {
            write!(f, "0x{:02x}", self.0)
        }
    }
}
