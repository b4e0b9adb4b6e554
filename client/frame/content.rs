//! Content: a message body split into body frames for sending, and put back together on receipt.

use bytes::{Bytes, BytesMut};

use super::{ContentHeader, FRAME_OVERHEAD};
use crate::wire::DecodeError;

/// The largest body the client accepts by default: 64 MiB.
///
/// A body announced larger is not buffered: its frames are read and dropped, and the message
/// is reported as an error of its own (see [`ContentAssembler::header`]). RabbitMQ's own
/// limit (`max_message_size`) is 128 MiB by default; raise this cap in the connection options to
/// receive larger messages.
pub const DEFAULT_MAX_BODY_SIZE: u64 = 64 * 1024 * 1024;

/// Splits `body` into slices of at most `frame_max - 8` bytes, one per body frame, without copying.
///
/// `frame_max` 0 means no limit: the body goes in one frame (up to the 4 GiB a frame can hold).
/// An empty body gives no chunks: a content header announcing 0 bytes is followed by no body frame.
pub fn body_chunks(body: &Bytes, frame_max: u32) -> impl Iterator<Item = Bytes> + '_ {
    let chunk = body_chunk_len(frame_max);
    (0..body.len())
        .step_by(chunk)
        .map(move |start| body.slice(start..body.len().min(start + chunk)))
}

/// The most body bytes one body frame holds under `frame_max`: `frame_max - 8`, or 4 GiB - 1
/// when `frame_max` is 0 (no limit).
pub fn body_chunk_len(frame_max: u32) -> usize {
    match frame_max {
        0 => u32::MAX as usize,
        max => max.saturating_sub(FRAME_OVERHEAD).max(1) as usize,
    }
}

/// A content-carrying method with its header and whole body.
#[derive(Debug, Clone, PartialEq)]
pub struct Content<M> {
    /// The method that announced the content (`basic.deliver`, `basic.get-ok`, `basic.return`).
    pub method: M,
    /// The content header.
    pub header: ContentHeader,
    /// The body: a slice of the read buffer when it came in one frame, else the frames joined;
    /// or [`DecodeError::BodyTooLarge`] when the header announced more than the cap, in which
    /// case the body frames were read and dropped, never buffered.
    pub body: Result<Bytes, DecodeError>,
}

/// Reassembles content on one channel: a method, then a header, then body frames.
///
/// Enforces the content protocol (a header only after a content method, bodies only after a header,
/// nothing else in between) and that body frames do not overrun the announced size. A body over
/// the size cap (known at the header, before any body is read) is skipped: its frames are
/// counted and dropped, and the content completes with the error in place of the body, so that
/// one oversized message is an error of that message, not of the connection.
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
    /// The body is over the cap: its frames are counted, not kept.
    Skipping {
        method: M,
        header: ContentHeader,
        received: u64,
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
    ///
    /// A header announcing a body over the cap is not an error of the stream: the body frames
    /// that follow are dropped as they come, and the content completes with
    /// [`DecodeError::BodyTooLarge`] as its body.
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
            self.state = State::Skipping {
                method,
                header,
                received: 0,
            };
            return Ok(None);
        }
        if header.body_size == 0 {
            return Ok(Some(Content {
                method,
                header,
                body: Ok(Bytes::new()),
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
            State::Skipping {
                method,
                header,
                received,
            } => return self.skip(method, header, received, chunk.len() as u64),
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
            body: Ok(body.into_bytes()),
        }))
    }

    /// Counts (and drops) `len` more bytes of a body over the cap; completes the content,
    /// with the error as its body, after the last one.
    fn skip(
        &mut self,
        method: M,
        header: ContentHeader,
        received: u64,
        len: u64,
    ) -> Result<Option<Content<M>>, DecodeError> {
        // `received` is at most the announced size, which may be near u64::MAX; a sum past
        // that is an overrun all the same.
        let received = received.saturating_add(len);
        if received > header.body_size {
            return Err(DecodeError::BodyOverrun {
                expected: header.body_size,
                received,
            });
        }
        if received < header.body_size {
            self.state = State::Skipping {
                method,
                header,
                received,
            };
            return Ok(None);
        }
        let error = DecodeError::BodyTooLarge {
            size: header.body_size,
            max: self.max_body_size,
        };
        Ok(Some(Content {
            method,
            header,
            body: Err(error),
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
            State::AwaitingBody { .. } | State::Skipping { .. } => "a content body",
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
        assert_eq!(content.body, Ok(body));
        assert!(assembler.is_idle());
    }

    #[test]
    fn a_single_frame_body_is_not_copied() {
        let chunk = Bytes::from_static(b"hello");
        let mut assembler = ContentAssembler::new(DEFAULT_MAX_BODY_SIZE);
        assembler.start(()).unwrap();
        assembler.header(header(5)).unwrap();
        let content = assembler.body(chunk.clone()).unwrap().unwrap();
        assert_eq!(content.body.unwrap().as_ptr(), chunk.as_ptr());
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
        assert_eq!(content.body, Ok(Bytes::from_static(b"abcd")));
    }

    #[test]
    fn empty_bodies_complete_at_the_header() {
        assert_eq!(body_chunks(&Bytes::new(), 4096).count(), 0);
        let mut assembler = ContentAssembler::new(DEFAULT_MAX_BODY_SIZE);
        assembler.start(()).unwrap();
        let content = assembler.header(header(0)).unwrap().unwrap();
        assert!(content.body.unwrap().is_empty());
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
        assembler.reset();
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

    #[test]
    fn a_body_over_the_cap_is_skipped_and_completes_as_an_error() {
        let mut assembler = ContentAssembler::new(100);
        assembler.start("big").unwrap();
        assert_eq!(assembler.header(header(250)), Ok(None));
        // The frames are dropped as they come: nothing is kept.
        assert_eq!(assembler.body(Bytes::from(vec![0; 100])), Ok(None));
        assert_eq!(assembler.body(Bytes::new()), Ok(None));
        assert_eq!(assembler.body(Bytes::from(vec![0; 100])), Ok(None));
        assert!(matches!(
            assembler.state,
            State::Skipping { received: 200, .. }
        ));
        let content = assembler.body(Bytes::from(vec![0; 50])).unwrap().unwrap();
        assert_eq!(content.method, "big");
        assert_eq!(content.header.body_size, 250);
        assert_eq!(
            content.body,
            Err(DecodeError::BodyTooLarge {
                size: 250,
                max: 100
            })
        );
        // The next content on the channel is unaffected.
        assert!(assembler.is_idle());
        assembler.start("small").unwrap();
        assembler.header(header(2)).unwrap();
        let next = assembler.body(Bytes::from_static(b"ok")).unwrap().unwrap();
        assert_eq!(next.body, Ok(Bytes::from_static(b"ok")));

        // A skipped body must still be framed right: an overrun, or a method in its middle,
        // breaks the stream as for any body.
        assembler.start("big").unwrap();
        assembler.header(header(u64::MAX)).unwrap();
        assert!(matches!(
            assembler.start("again"),
            Err(DecodeError::UnexpectedFrame { got: "method", .. })
        ));
        // Counting cannot overflow, however large the announced size.
        assembler.reset();
        assembler.start("big").unwrap();
        assembler.header(header(u64::MAX - 1)).unwrap();
        assert!(matches!(
            assembler.state,
            State::Skipping { received: 0, .. }
        ));
        if let State::Skipping { received, .. } = &mut assembler.state {
            *received = u64::MAX - 3;
        }
        assert_eq!(assembler.body(Bytes::from_static(b"x")), Ok(None));
        assert_eq!(
            assembler.body(Bytes::from_static(b"xyz")),
            Err(DecodeError::BodyOverrun {
                expected: u64::MAX - 1,
                received: u64::MAX
            })
        );
        assembler.reset();
        assembler.start("big").unwrap();
        assembler.header(header(101)).unwrap();
        assert_eq!(
            assembler.body(Bytes::from(vec![0; 102])),
            Err(DecodeError::BodyOverrun {
                expected: 101,
                received: 102
            })
        );
    }
}
