//! Frame encoding and incremental decoding.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{
    ContentHeader, FRAME_BODY, FRAME_END, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD,
    FRAME_MIN_SIZE, FRAME_OVERHEAD, Frame, body_chunks,
};
use crate::protocol::{BasicProperties, Method};
use crate::wire::{AmqpMethod, ContentProperties, DecodeError, MethodId, Reader, Writer};

/// Size of a frame header: type, channel, payload size.
const HEADER_SIZE: usize = 7;

/// Cuts frames off the front of a read buffer.
///
/// The declared size of a frame is checked against the frame size limit as soon as its 7-byte
/// header is in the buffer, before any of the payload is waited for or allocated, so a peer
/// cannot make the reader buffer more than one legal frame.
///
/// ```
/// use bytes::BytesMut;
/// use warren::frame::{Frame, FrameDecoder};
///
/// let decoder = FrameDecoder::new(4096);
/// let mut buf = BytesMut::from(&[8, 0, 0, 0, 0, 0, 0, 0xCE][..]);
/// assert_eq!(decoder.decode(&mut buf)?, Some(Frame::Heartbeat));
/// assert!(buf.is_empty());
/// # Ok::<(), warren::wire::DecodeError>(())
/// ```
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max_frame_size: u32,
}

impl Default for FrameDecoder {
    /// A decoder for the start of a connection: frames of at most 4096 bytes.
    fn default() -> Self {
        Self::new(FRAME_MIN_SIZE)
    }
}

impl FrameDecoder {
    /// A decoder accepting frames of at most `max_frame_size` bytes in all (header, payload and
    /// frame-end octet). Values below 4096, the minimum AMQP allows, are raised to it.
    pub fn new(max_frame_size: u32) -> Self {
        Self {
            max_frame_size: max_frame_size.max(FRAME_MIN_SIZE),
        }
    }

    /// The largest frame accepted, in bytes.
    pub fn max_frame_size(&self) -> u32 {
        self.max_frame_size
    }

    /// Changes the limit, after `connection.tune` (raised to at least 4096).
    pub fn set_max_frame_size(&mut self, max_frame_size: u32) {
        self.max_frame_size = max_frame_size.max(FRAME_MIN_SIZE);
    }

    /// Decodes the frame at the front of `buf`, removing its bytes.
    ///
    /// Returns `Ok(None)` when `buf` does not yet hold a whole frame; the caller reads more and
    /// calls again. After an error the connection must be closed: the stream is out of step.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        let Some((kind, channel, payload)) = self.split_frame(buf)? else {
            return Ok(None);
        };
        parse_frame(kind, channel, payload).map(Some)
    }

    /// Splits one whole frame off `buf` without interpreting its payload.
    fn split_frame(&self, buf: &mut BytesMut) -> Result<Option<(u8, u16, Bytes)>, DecodeError> {
        if buf.len() < HEADER_SIZE {
            return Ok(None);
        }
        let kind = buf[0];
        let channel = u16::from_be_bytes([buf[1], buf[2]]);
        let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]);
        let frame_size = u64::from(size) + u64::from(FRAME_OVERHEAD);
        if frame_size > u64::from(self.max_frame_size) {
            return Err(DecodeError::FrameTooLarge {
                size: frame_size,
                max: self.max_frame_size,
            });
        }
        // Bounded by max_frame_size above, so this fits in usize and is a legal allocation.
        let frame_size = frame_size as usize;
        if buf.len() < frame_size {
            buf.reserve(frame_size - buf.len());
            return Ok(None);
        }
        let mut frame = buf.split_to(frame_size).freeze();
        let end = frame[frame_size - 1];
        if end != FRAME_END {
            return Err(DecodeError::BadFrameEnd(end));
        }
        frame.truncate(frame_size - 1);
        frame.advance(HEADER_SIZE);
        Ok(Some((kind, channel, frame)))
    }
}

/// Interprets a frame's payload according to its type.
fn parse_frame(kind: u8, channel: u16, payload: Bytes) -> Result<Frame, DecodeError> {
    match kind {
        FRAME_METHOD => {
            let mut input = Reader::new(payload);
            let id = MethodId::new(input.short()?, input.short()?);
            let method = Method::decode(id, &mut input)?;
            Ok(Frame::Method { channel, method })
        }
        FRAME_HEADER => {
            if channel == 0 {
                return Err(DecodeError::WrongChannel {
                    frame: "content header",
                    channel,
                });
            }
            let mut input = Reader::new(payload);
            let class_id = input.short()?;
            // basic is the one class of AMQP 0-9-1 with content.
            if class_id != BasicProperties::CLASS_ID {
                return Err(DecodeError::UnknownContentClass(class_id));
            }
            let _weight = input.short()?;
            let body_size = input.longlong()?;
            Ok(Frame::Header {
                channel,
                header: ContentHeader {
                    class_id,
                    body_size,
                    properties: input.into_rest(),
                },
            })
        }
        FRAME_BODY => {
            if channel == 0 {
                return Err(DecodeError::WrongChannel {
                    frame: "content body",
                    channel,
                });
            }
            Ok(Frame::Body { channel, payload })
        }
        FRAME_HEARTBEAT => {
            if channel != 0 {
                return Err(DecodeError::WrongChannel {
                    frame: "heartbeat",
                    channel,
                });
            }
            Ok(Frame::Heartbeat)
        }
        other => Err(DecodeError::UnknownFrameType(other)),
    }
}

/// A frame that would exceed the negotiated frame size; nothing was appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameTooLarge {
    /// Size the frame would have had, in bytes.
    pub size: usize,
    /// The negotiated limit.
    pub max: u32,
}

impl std::fmt::Display for FrameTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a frame of {} bytes exceeds the negotiated frame_max of {} bytes",
            self.size, self.max
        )
    }
}

impl std::error::Error for FrameTooLarge {}

/// Appends a frame whose payload is written by `payload`, checking its size against `frame_max`.
fn encode_frame(
    out: &mut BytesMut,
    kind: u8,
    channel: u16,
    frame_max: u32,
    payload: impl FnOnce(&mut Writer<'_>),
) -> Result<(), FrameTooLarge> {
    let start = out.len();
    out.put_u8(kind);
    out.put_u16(channel);
    out.put_u32(0);
    payload(&mut Writer::new(out));
    let size = out.len() - start - HEADER_SIZE;
    let frame_size = size + FRAME_OVERHEAD as usize;
    if frame_max != 0 && frame_size > frame_max as usize {
        out.truncate(start);
        return Err(FrameTooLarge {
            size: frame_size,
            max: frame_max,
        });
    }
    out[start + 3..start + HEADER_SIZE].copy_from_slice(&(size as u32).to_be_bytes());
    out.put_u8(FRAME_END);
    Ok(())
}

/// Appends a method frame for `method` on `channel`.
///
/// `frame_max` is the negotiated limit (0: no limit). A method too large for it (huge argument
/// tables) is refused and nothing is appended.
pub fn encode_method<M: AmqpMethod>(
    out: &mut BytesMut,
    channel: u16,
    method: &M,
    frame_max: u32,
) -> Result<(), FrameTooLarge> {
    encode_frame(out, FRAME_METHOD, channel, frame_max, |w| {
        w.short(M::ID.class);
        w.short(M::ID.method);
        method.encode(w);
    })
}

/// Appends a method frame for any [`Method`]; see [`encode_method`].
pub fn encode_method_frame(
    out: &mut BytesMut,
    channel: u16,
    method: &Method,
    frame_max: u32,
) -> Result<(), FrameTooLarge> {
    encode_frame(out, FRAME_METHOD, channel, frame_max, |w| {
        let id = method.id();
        w.short(id.class);
        w.short(id.method);
        method.encode(w);
    })
}

/// Appends a content header frame announcing a body of `body_size` bytes.
pub fn encode_content_header<P: ContentProperties>(
    out: &mut BytesMut,
    channel: u16,
    properties: &P,
    body_size: u64,
    frame_max: u32,
) -> Result<(), FrameTooLarge> {
    encode_frame(out, FRAME_HEADER, channel, frame_max, |w| {
        w.short(P::CLASS_ID);
        w.short(0); // weight, unused
        w.longlong(body_size);
        properties.encode(w);
    })
}

/// Appends one body frame holding `chunk`, which the caller has sized to `frame_max - 8` or less.
pub fn encode_body(out: &mut BytesMut, channel: u16, chunk: &[u8]) {
    out.reserve(chunk.len() + FRAME_OVERHEAD as usize);
    out.put_u8(FRAME_BODY);
    out.put_u16(channel);
    // The caller bounds chunks by frame_max, a u32.
    out.put_u32(chunk.len() as u32);
    out.put_slice(chunk);
    out.put_u8(FRAME_END);
}

/// Appends a content header and the body frames of `body`, split at `frame_max - 8` bytes.
///
/// This copies the body into `out`; the connection driver instead hands large bodies to the
/// socket as they are.
pub fn encode_content<P: ContentProperties>(
    out: &mut BytesMut,
    channel: u16,
    properties: &P,
    body: &Bytes,
    frame_max: u32,
) -> Result<(), FrameTooLarge> {
    encode_content_header(out, channel, properties, body.len() as u64, frame_max)?;
    for chunk in body_chunks(body, frame_max) {
        encode_body(out, channel, &chunk);
    }
    Ok(())
}

/// Appends a heartbeat frame.
pub fn encode_heartbeat(out: &mut BytesMut) {
    out.put_slice(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END]);
}
