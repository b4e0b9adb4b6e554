//! AMQP frames: the protocol header, the four frame types, and content (a header frame plus body
//! frames) split and reassembled.
//!
//! Sans-IO like [`wire`](crate::wire): [`FrameDecoder`] takes bytes from a read buffer and the
//! `encode_*` functions append frames to a write buffer. The connection driver owns the socket.
//!
//! Every frame is `type (1) | channel (2) | size (4) | payload (size) | 0xCE`. The negotiated
//! `frame_max` bounds the whole frame, so a payload holds at most `frame_max - 8` bytes.

mod codec;
mod content;

pub use codec::{
    FrameDecoder, FrameTooLarge, encode_body, encode_content, encode_content_header,
    encode_heartbeat, encode_method, encode_method_frame,
};
pub use content::{Content, ContentAssembler, DEFAULT_MAX_BODY_SIZE, body_chunk_len, body_chunks};

use bytes::Bytes;

use crate::protocol::Method;
#[cfg(test)]
use crate::wire::DecodeError;

/// The eight bytes a client sends first: `AMQP`, 0, and the version 0-9-1.
pub const PROTOCOL_HEADER: [u8; 8] = *b"AMQP\x00\x00\x09\x01";

/// Bytes of a frame that are not payload: the 7-byte header and the frame-end octet.
pub const FRAME_OVERHEAD: u32 = 8;

/// The octet every frame ends with.
pub const FRAME_END: u8 = 0xCE;

/// The largest frame both peers must accept before `connection.tune` is negotiated.
pub const FRAME_MIN_SIZE: u32 = 4096;

/// Type octet of a method frame.
pub const FRAME_METHOD: u8 = 1;
/// Type octet of a content header frame.
pub const FRAME_HEADER: u8 = 2;
/// Type octet of a content body frame.
pub const FRAME_BODY: u8 = 3;
/// Type octet of a heartbeat frame.
pub const FRAME_HEARTBEAT: u8 = 8;

/// One decoded frame.
//
// `repr(C, u64)`: a 64-bit tag, then the variant, so a method's fields (its 32-byte strings)
// start 8-aligned. With the layout the compiler picks, a 2-byte tag came first and every
// 16-byte move of a frame straddled the stores that had just written it, a stall each:
// decoding a delivery's three frames was 7 % slower.
#[derive(Debug, Clone, PartialEq)]
#[repr(C, u64)]
pub enum Frame {
    /// A method frame.
    Method {
        /// Channel number (0 for the connection class).
        channel: u16,
        /// The decoded method.
        method: Method,
    },
    /// A content header frame: what follows a content-carrying method.
    Header {
        /// Channel number.
        channel: u16,
        /// The header.
        header: ContentHeader,
    },
    /// A content body frame.
    Body {
        /// Channel number.
        channel: u16,
        /// Part of the body, a slice of the read buffer.
        payload: Bytes,
    },
    /// A heartbeat frame (always on channel 0).
    Heartbeat,
}

impl Frame {
    /// The channel the frame arrived on (0 for heartbeats).
    pub fn channel(&self) -> u16 {
        match *self {
            Self::Method { channel, .. }
            | Self::Header { channel, .. }
            | Self::Body { channel, .. } => channel,
            Self::Heartbeat => 0,
        }
    }
}

/// A content header frame's payload.
///
/// The properties stay undecoded bytes here, so that a delivery whose properties cannot be decoded
/// (a header table nested too deep, an unknown tag) is an error of that one message, not of the
/// connection: the frames around it are intact. Decode them with
/// [`ContentProperties::decode`](crate::wire::ContentProperties::decode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentHeader {
    /// Class of the content (60 for basic).
    pub class_id: u16,
    /// Total size of the body that follows, in bytes.
    pub body_size: u64,
    /// Property flags and property list, as received.
    pub properties: Bytes,
}

#[cfg(test)]
mod tests;
