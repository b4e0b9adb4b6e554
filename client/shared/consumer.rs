//! A consumer's state shared between its stream and the driver, and what the driver hands it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use super::delivery_queue::Weigh;
use crate::error::Error;
use crate::frame::ContentHeader;
use crate::protocol::BasicDeliver;
use crate::wire::DecodeError;

/// A delivery as the driver assembled it; properties are decoded in the consumer's task.
#[derive(Debug)]
pub(crate) struct RawDelivery {
    pub deliver: BasicDeliver,
    pub header: ContentHeader,
    /// [`DecodeError::BodyTooLarge`] when the body was over `max_body_size` and skipped.
    pub body: Result<Bytes, DecodeError>,
}

/// What the driver sends a consumer.
pub(crate) type ConsumerEvent = RawDelivery;

impl Weigh for RawDelivery {
    /// The bytes the delivery keeps alive: its body and properties (slices of the read
    /// buffer), its names, and the queue slot and struct around them.
    fn weight(&self) -> usize {
        const OVERHEAD: usize = std::mem::size_of::<RawDelivery>() + 64;
        self.body.as_ref().map_or(0, Bytes::len)
            + self.header.properties.len()
            + self.deliver.consumer_tag.len()
            + self.deliver.exchange.len()
            + self.deliver.routing_key.len()
            + OVERHEAD
    }
}

/// State shared by a consumer stream and the driver.
#[derive(Debug, Default)]
pub(crate) struct ConsumerShared {
    /// Why the stream ended, set by the driver before it drops its sender; `None` when the
    /// application cancelled.
    end: Mutex<Option<Error>>,
    /// A stream consumer (its arguments hold `x-stream-offset`): its stream records the
    /// offset of each delivery it hands out, so that recovery resumes after it.
    stream: bool,
    /// For a stream consumer, the offset to resume from (one past the last delivery the
    /// application took from the stream), stored plus one: 0 means none was taken yet.
    resume: AtomicU64,
}

impl ConsumerShared {
    /// The state of a new consumer; `stream` when its arguments hold `x-stream-offset`.
    pub(crate) fn new(stream: bool) -> Self {
        Self {
            stream,
            ..Self::default()
        }
    }

    /// Whether this is a stream consumer, whose handed-out offsets are recorded.
    pub(crate) fn is_stream(&self) -> bool {
        self.stream
    }

    /// Records that the application took the delivery at stream offset `offset`.
    pub(crate) fn handed_out(&self, offset: u64) {
        // Offsets only grow on one stream; `max` keeps the furthest should one repeat.
        self.resume
            .fetch_max(offset.saturating_add(2), Ordering::Release);
    }

    /// The stream offset to consume again from after a connection loss: one past the last
    /// delivery handed to the application; `None` if none was (recovery then keeps the
    /// consumer's original `x-stream-offset`).
    pub(crate) fn resume_offset(&self) -> Option<u64> {
        match self.resume.load(Ordering::Acquire) {
            0 => None,
            stored => Some(stored - 1),
        }
    }

    pub(crate) fn set_end(&self, reason: Error) {
        let mut end = self.end.lock().unwrap_or_else(|e| e.into_inner());
        end.get_or_insert(reason);
    }

    pub(crate) fn take_end(&self) -> Option<Error> {
        self.end.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resume_offset_is_one_past_the_furthest_delivery_handed_out() {
        let shared = ConsumerShared::new(true);
        assert!(shared.is_stream());
        assert_eq!(shared.resume_offset(), None, "nothing handed out yet");
        shared.handed_out(0);
        assert_eq!(shared.resume_offset(), Some(1));
        shared.handed_out(41);
        assert_eq!(shared.resume_offset(), Some(42));
        shared.handed_out(7);
        assert_eq!(shared.resume_offset(), Some(42), "never goes back");
        assert!(!ConsumerShared::default().is_stream());
    }
}
