//! The driver's outgoing bytes: frames of many callers coalesced into few socket writes.
//!
//! Small frames are encoded straight into one growing buffer. Body chunks of at least
//! [`ZERO_COPY_MIN`] bytes are not copied: they are queued as the `Bytes` the application gave,
//! between the bytes before and after them, and go out in one vectored write.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::AsyncWrite;

use crate::frame::{FRAME_BODY, FRAME_END, body_chunks};

/// Body chunks at least this large are written from the application's buffer, not copied.
const ZERO_COPY_MIN: usize = 4096;

/// At most this many buffers go into one vectored write (Linux takes up to 1024).
const MAX_IOVECS: usize = 64;

/// Queued outgoing bytes.
#[derive(Debug, Default)]
pub(crate) struct WriteQueue {
    /// Bytes ready to go, in order, before `tail`.
    chunks: VecDeque<Bytes>,
    /// Where small frames are encoded; goes out after `chunks`.
    tail: BytesMut,
    /// Total bytes queued.
    len: usize,
}

impl WriteQueue {
    /// Number of bytes waiting to be written.
    pub(crate) fn len(&self) -> usize {
        self.len + self.tail.len()
    }

    /// Whether nothing waits to be written.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The buffer to encode frames into; what is appended is sent after everything queued.
    pub(crate) fn buffer(&mut self) -> &mut BytesMut {
        &mut self.tail
    }

    /// Queues the body frames of `body`, split at `frame_max - 8` bytes.
    /// Returns how many frames that made.
    pub(crate) fn push_body(&mut self, channel: u16, body: &Bytes, frame_max: u32) -> u64 {
        let mut frames = 0;
        for chunk in body_chunks(body, frame_max) {
            frames += 1;
            let tail = &mut self.tail;
            tail.reserve(
                8 + if chunk.len() < ZERO_COPY_MIN {
                    chunk.len()
                } else {
                    0
                },
            );
            tail.put_u8(FRAME_BODY);
            tail.put_u16(channel);
            tail.put_u32(chunk.len() as u32);
            if chunk.len() < ZERO_COPY_MIN {
                tail.put_slice(&chunk);
            } else {
                self.seal_tail();
                self.len += chunk.len();
                self.chunks.push_back(chunk);
            }
            self.tail.put_u8(FRAME_END);
        }
        frames
    }

    /// Moves the encoded bytes of `tail` into the chunk queue.
    fn seal_tail(&mut self) {
        if !self.tail.is_empty() {
            let sealed = self.tail.split().freeze();
            self.len += sealed.len();
            self.chunks.push_back(sealed);
        }
    }

    /// Writes as much as the socket takes without blocking; `Ready(Ok(()))` once all is written.
    pub(crate) fn poll_write<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        writer: &mut W,
    ) -> Poll<io::Result<()>> {
        self.seal_tail();
        while !self.chunks.is_empty() {
            let written = if writer.is_write_vectored() && self.chunks.len() > 1 {
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                let count = self.chunks.len().min(MAX_IOVECS);
                for (slice, chunk) in slices.iter_mut().zip(&self.chunks) {
                    *slice = IoSlice::new(chunk);
                }
                ready!(Pin::new(&mut *writer).poll_write_vectored(cx, &slices[..count]))?
            } else {
                ready!(Pin::new(&mut *writer).poll_write(cx, &self.chunks[0]))?
            };
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.advance(written);
        }
        Poll::Ready(Ok(()))
    }

    /// Drops `written` bytes from the front of the queue.
    fn advance(&mut self, mut written: usize) {
        self.len -= written;
        while written > 0 {
            let Some(front) = self.chunks.front_mut() else {
                return;
            };
            if written < front.len() {
                front.advance(written);
                return;
            }
            written -= front.len();
            self.chunks.pop_front();
        }
    }

    /// Drops everything queued (the connection is gone).
    pub(crate) fn clear(&mut self) {
        self.chunks.clear();
        self.tail.clear();
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `limit` bytes per call, to exercise partial writes.
    struct Trickle {
        written: Vec<u8>,
        limit: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.limit);
            self.written.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let mut n = 0;
            for buf in bufs {
                let take = buf.len().min(self.limit - n);
                self.written.extend_from_slice(&buf[..take]);
                n += take;
                if n == self.limit {
                    break;
                }
            }
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn frames_come_out_in_order_with_large_bodies_uncopied() {
        let mut queue = WriteQueue::default();
        queue.buffer().put_slice(b"method+header");
        let big = Bytes::from(vec![7u8; 10_000]);
        queue.push_body(1, &big, 4096);
        queue.buffer().put_slice(b"next");
        let small = Bytes::from_static(b"tiny");
        queue.push_body(2, &small, 4096);

        let mut expected = b"method+header".to_vec();
        for chunk in body_chunks(&big, 4096) {
            expected.extend_from_slice(&[3, 0, 1]);
            expected.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
            expected.extend_from_slice(&chunk);
            expected.push(0xCE);
        }
        expected.extend_from_slice(b"next");
        expected.extend_from_slice(&[3, 0, 2, 0, 0, 0, 4]);
        expected.extend_from_slice(b"tiny");
        expected.push(0xCE);
        assert_eq!(queue.len(), expected.len());

        let mut writer = Trickle {
            written: Vec::new(),
            limit: 1000,
        };
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(queue.poll_write(&mut cx, &mut writer).is_ready());
        assert_eq!(writer.written, expected);
        assert!(queue.is_empty());
    }
}
