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
    ///
    /// A method frame is decoded where it lies in `buf`, copying out its arguments; the
    /// payloads of content header and body frames become shared slices of `buf`'s storage.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        let Some((kind, channel, size)) = self.frame_header(buf)? else {
            return Ok(None);
        };
        let frame_size = size + FRAME_OVERHEAD as usize;
        let frame = match kind {
            FRAME_METHOD => {
                // Bytes past the payload (its frame-end octet, the next frames) may be looked
                // at, never read as values: see `Reader::with_lookahead`.
                let method = decode_method(Reader::with_lookahead(&buf[HEADER_SIZE..], size));
                buf.advance(frame_size);
                Frame::Method {
                    channel,
                    method: method?,
                }
            }
            FRAME_HEADER => Frame::Header {
                channel: content_channel(channel, "content header")?,
                header: content_header(split_payload(buf, frame_size))?,
            },
            FRAME_BODY => Frame::Body {
                channel: content_channel(channel, "content body")?,
                payload: split_payload(buf, frame_size),
            },
            FRAME_HEARTBEAT => {
                if channel != 0 {
                    return Err(DecodeError::WrongChannel {
                        frame: "heartbeat",
                        channel,
                    });
                }
                buf.advance(frame_size);
                Frame::Heartbeat
            }
            other => return Err(DecodeError::UnknownFrameType(other)),
        };
        Ok(Some(frame))
    }

    /// Checks the header of the frame at the front of `buf` and returns its type, channel and
    /// payload size, once the whole frame, with a valid frame-end octet, is in `buf`.
    fn frame_header(&self, buf: &mut BytesMut) -> Result<Option<(u8, u16, usize)>, DecodeError> {
        let Some(&[kind, c0, c1, s0, s1, s2, s3]) = buf.first_chunk::<HEADER_SIZE>() else {
            return Ok(None);
        };
        let channel = u16::from_be_bytes([c0, c1]);
        let size = u32::from_be_bytes([s0, s1, s2, s3]);
        let frame_size = u64::from(size) + u64::from(FRAME_OVERHEAD);
        if frame_size > u64::from(self.max_frame_size) {
            return Err(DecodeError::FrameTooLarge {
                size: frame_size,
                max: self.max_frame_size,
            });
        }
        // Bounded by max_frame_size above, so this fits in usize and is a legal allocation.
        let frame_size = frame_size as usize;
        let Some(&end) = buf.get(frame_size - 1) else {
            buf.reserve(frame_size - buf.len());
            return Ok(None);
        };
        if end != FRAME_END {
            return Err(DecodeError::BadFrameEnd(end));
        }
        Ok(Some((kind, channel, size as usize)))
    }
}

/// Decodes a method frame's payload: its class and method ids, then its arguments.
fn decode_method(mut input: Reader<'_>) -> Result<Method, DecodeError> {
    let id = MethodId::new(input.short()?, input.short()?);
    Method::decode(id, &mut input)
}

/// Splits the frame of `frame_size` bytes off the front of `buf` and returns its payload.
#[inline]
fn split_payload(buf: &mut BytesMut, frame_size: usize) -> Bytes {
    let mut payload = buf.split_to(frame_size - 1).freeze();
    buf.advance(1); // the frame-end octet
    payload.advance(HEADER_SIZE);
    payload
}

/// `channel`, unless it is 0, which carries no content.
fn content_channel(channel: u16, frame: &'static str) -> Result<u16, DecodeError> {
    if channel == 0 {
        return Err(DecodeError::WrongChannel { frame, channel });
    }
    Ok(channel)
}

/// Parses a content header frame's payload: class id, weight (unused), body size and the
/// properties, which stay undecoded.
fn content_header(mut payload: Bytes) -> Result<ContentHeader, DecodeError> {
    let Some(&[c0, c1, _, _, b0, b1, b2, b3, b4, b5, b6, b7]) = payload.first_chunk() else {
        return Err(DecodeError::Truncated {
            needed: 12,
            remaining: payload.len(),
        });
    };
    let class_id = u16::from_be_bytes([c0, c1]);
    // basic is the one class of AMQP 0-9-1 with content.
    if class_id != BasicProperties::CLASS_ID {
        return Err(DecodeError::UnknownContentClass(class_id));
    }
    let body_size = u64::from_be_bytes([b0, b1, b2, b3, b4, b5, b6, b7]);
    payload.advance(12);
    Ok(ContentHeader {
        class_id,
        body_size,
        properties: payload,
    })
}

/// A frame that would exceed the negotiated frame size; nothing was appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a frame of {size} bytes exceeds the negotiated frame_max of {max} bytes")]
pub struct FrameTooLarge {
    /// Size the frame would have had, in bytes.
    pub size: usize,
    /// The negotiated limit.
    pub max: u32,
}

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
