//! Content: a message body split into body frames for sending, and put back together on receipt.

use bytes::{Bytes, BytesMut};

use super::{ContentHeader, FRAME_OVERHEAD};
use crate::wire::DecodeError;

/// The largest body the client accepts by default: 64 MiB.
///
/// A content header announcing more is refused before any body byte is read. RabbitMQ's own
/// limit (`max_message_size`) is 128 MiB by default; raise this cap in the connection options to
/// receive larger messages.
pub const DEFAULT_MAX_BODY_SIZE: u64 = 64 * 1024 * 1024;

/// Splits `body` into slices of at most `frame_max - 8` bytes, one per body frame, without copying.
///
/// `frame_max` 0 means no limit: the body goes in one frame (up to the 4 GiB a frame can hold).
/// An empty body gives no chunks: a content header announcing 0 bytes is followed by no body frame.
pub fn body_chunks(body: &Bytes, frame_max: u32) -> impl Iterator<Item = Bytes> + '_ {
    let chunk = match frame_max {
        0 => u32::MAX as usize,
        max => max.saturating_sub(FRAME_OVERHEAD).max(1) as usize,
    };
    (0..body.len())
        .step_by(chunk)
        .map(move |start| body.slice(start..body.len().min(start + chunk)))
}

/// A content-carrying method with its header and whole body.
#[derive(Debug, Clone, PartialEq)]
pub struct Content<M> {
    /// The method that announced the content (`basic.deliver`, `basic.get-ok`, `basic.return`).
    pub method: M,
    /// The content header.
    pub header: ContentHeader,
    /// The body: a slice of the read buffer when it came in one frame, else the frames joined.
    pub body: Bytes,
}

/// Reassembles content on one channel: a method, then a header, then body frames.
///
/// Enforces the content protocol (a header only after a content method, bodies only after a header,
/// nothing else in between), the body size cap (checked at the header, before any body is read),
/// and that body frames do not overrun the announced size.
#[derive(Debug)]
pub struct ContentAssembler<M> {
    max_body_size: u64,
    state: State<M>,
}

#[derive(Debug)]
enum State<M> {
    Idle,
    AwaitingHeader(M),
    AwaitingBody {
        method: M,
        header: ContentHeader,
        body: Body,
    },
}

/// The body received so far: the frames' payloads, kept as the slices of the read buffer
/// they are, and joined once the last one arrives.
///
/// Nothing is allocated for the body before its bytes have arrived: a peer that announces a
/// large body and sends little of it costs what it sent, not what it announced.
#[derive(Debug)]
enum Body {
    Empty,
    One(Bytes),
    Many { chunks: Vec<Bytes>, len: u64 },
}

impl Body {
    fn len(&self) -> u64 {
        match self {
            Self::Empty => 0,
            Self::One(b) => b.len() as u64,
            Self::Many { len, .. } => *len,
        }
    }

    fn push(&mut self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        *self = match std::mem::replace(self, Self::Empty) {
            Self::Empty => Self::One(chunk),
            Self::One(first) => Self::Many {
                len: (first.len() + chunk.len()) as u64,
                chunks: vec![first, chunk],
            },
            Self::Many { mut chunks, len } => {
                let len = len + chunk.len() as u64;
                chunks.push(chunk);
                Self::Many { chunks, len }
            }
        };
    }

    /// The whole body: the one frame's payload as it is, or every payload copied once into
    /// a buffer of exactly the received size.
    fn into_bytes(self) -> Bytes {
        match self {
            Self::Empty => Bytes::new(),
            Self::One(b) => b,
            Self::Many { chunks, len } => {
                // `len` bytes have arrived, and the header's cap bounds them.
                let mut joined = BytesMut::with_capacity(len as usize);
                for chunk in chunks {
                    joined.extend_from_slice(&chunk);
                }
                joined.freeze()
            }
        }
    }
}

impl<M> ContentAssembler<M> {
    /// An assembler refusing bodies over `max_body_size` bytes.
    pub fn new(max_body_size: u64) -> Self {
        Self {
            max_body_size,
            state: State::Idle,
        }
    }

    /// Whether no content is in progress, so a method frame may arrive.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle)
    }

    /// Starts a content announced by `method`.
    pub fn start(&mut self, method: M) -> Result<(), DecodeError> {
        if !self.is_idle() {
            return Err(DecodeError::UnexpectedFrame {
                got: "method",
                expected: self.expected(),
            });
        }
        self.state = State::AwaitingHeader(method);
        Ok(())
    }

    /// Takes the content header; returns the content when the body is empty.
    pub fn header(&mut self, header: ContentHeader) -> Result<Option<Content<M>>, DecodeError> {
        let method = match std::mem::replace(&mut self.state, State::Idle) {
            State::AwaitingHeader(method) => method,
            other => {
                self.state = other;
                return Err(DecodeError::UnexpectedFrame {
                    got: "content header",
                    expected: self.expected(),
                });
            }
        };
        if header.body_size > self.max_body_size {
            return Err(DecodeError::BodyTooLarge {
                size: header.body_size,
                max: self.max_body_size,
            });
        }
        if header.body_size == 0 {
            return Ok(Some(Content {
                method,
                header,
                body: Bytes::new(),
            }));
        }
        self.state = State::AwaitingBody {
            method,
            header,
            body: Body::Empty,
        };
        Ok(None)
    }

    /// Takes a body frame's payload; returns the content once the whole body has arrived.
    pub fn body(&mut self, chunk: Bytes) -> Result<Option<Content<M>>, DecodeError> {
        let (method, header, mut body) = match std::mem::replace(&mut self.state, State::Idle) {
            State::AwaitingBody {
                method,
                header,
                body,
            } => (method, header, body),
            other => {
                self.state = other;
                return Err(DecodeError::UnexpectedFrame {
                    got: "content body",
                    expected: self.expected(),
                });
            }
        };
        let received = body.len() + chunk.len() as u64;
        if received > header.body_size {
            return Err(DecodeError::BodyOverrun {
                expected: header.body_size,
                received,
            });
        }
        body.push(chunk);
        if received < header.body_size {
            self.state = State::AwaitingBody {
                method,
                header,
                body,
            };
            return Ok(None);
        }
        Ok(Some(Content {
            method,
            header,
            body: body.into_bytes(),
        }))
    }

    /// Drops any content in progress (when its channel closes).
    pub fn reset(&mut self) {
        self.state = State::Idle;
    }

    fn expected(&self) -> &'static str {
        match self.state {
            State::Idle => "a method",
            State::AwaitingHeader(_) => "a content header",
            State::AwaitingBody { .. } => "a content body",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(body_size: u64) -> ContentHeader {
        ContentHeader {
            class_id: 60,
            body_size,
            properties: Bytes::new(),
        }
    }

    #[test]
    fn chunks_respect_frame_max_and_reassemble() {
        let body = Bytes::from((0..10_000u32).map(|i| i as u8).collect::<Vec<_>>());
        let chunks: Vec<Bytes> = body_chunks(&body, 4096).collect();
        assert_eq!(
            chunks.iter().map(Bytes::len).collect::<Vec<_>>(),
            [4088, 4088, 1824]
        );
        let mut assembler = ContentAssembler::new(DEFAULT_MAX_BODY_SIZE);
        assembler.start("deliver").unwrap();
        assert_eq!(assembler.header(header(10_000)).unwrap(), None);
        let mut done = None;
        for chunk in chunks {
            assert!(done.is_none());
            done = assembler.body(chunk).unwrap();
        }
        let content = done.unwrap();
        assert_eq!(content.method, "deliver");
        assert_eq!(content.body, body);
        assert!(assembler.is_idle());
    }

    #[test]
    fn a_single_frame_body_is_not_copied() {
        let chunk = Bytes::from_static(b"hello");
        let mut assembler = ContentAssembler::new(DEFAULT_MAX_BODY_SIZE);
        assembler.start(()).unwrap();
        assembler.header(header(5)).unwrap();
        let content = assembler.body(chunk.clone()).unwrap().unwrap();
        assert_eq!(content.body.as_ptr(), chunk.as_ptr());
    }

    #[test]
    fn empty_body_frames_add_nothing() {
        let mut assembler = ContentAssembler::new(DEFAULT_MAX_BODY_SIZE);
        assembler.start(()).unwrap();
        assembler.header(header(4)).unwrap();
        assert_eq!(assembler.body(Bytes::new()).unwrap(), None);
        assert_eq!(assembler.body(Bytes::from_static(b"ab")).unwrap(), None);
        assert_eq!(assembler.body(Bytes::new()).unwrap(), None);
        let content = assembler.body(Bytes::from_static(b"cd")).unwrap().unwrap();
        assert_eq!(content.body, "abcd");
    }

    #[test]
    fn empty_bodies_complete_at_the_header() {
        assert_eq!(body_chunks(&Bytes::new(), 4096).count(), 0);
        let mut assembler = ContentAssembler::new(DEFAULT_MAX_BODY_SIZE);
        assembler.start(()).unwrap();
        let content = assembler.header(header(0)).unwrap().unwrap();
        assert!(content.body.is_empty());
        assert!(assembler.is_idle());
    }

    #[test]
    fn protocol_violations_are_typed_errors() {
        let mut assembler = ContentAssembler::<()>::new(100);
        assert!(matches!(
            assembler.header(header(1)),
            Err(DecodeError::UnexpectedFrame {
                got: "content header",
                ..
            })
        ));
        assert!(matches!(
            assembler.body(Bytes::from_static(b"x")),
            Err(DecodeError::UnexpectedFrame {
                got: "content body",
                ..
            })
        ));
        assembler.start(()).unwrap();
        assert!(matches!(
            assembler.start(()),
            Err(DecodeError::UnexpectedFrame { got: "method", .. })
        ));
        assert_eq!(
            assembler.header(header(101)),
            Err(DecodeError::BodyTooLarge {
                size: 101,
                max: 100
            })
        );
        assembler.start(()).unwrap();
        assembler.header(header(3)).unwrap();
        assert_eq!(
            assembler.body(Bytes::from_static(b"abcd")),
            Err(DecodeError::BodyOverrun {
                expected: 3,
                received: 4
            })
        );
    }
}
