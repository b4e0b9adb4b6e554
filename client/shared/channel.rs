//! A channel's state shared between its handles and the driver.

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::BytesMut;
use tokio::sync::{Semaphore, broadcast, watch};

use super::acks::{AckOutbox, Acknowledgement};
use super::command::ChannelKey;
use super::messages::ReturnedMessage;
use crate::error::Error;

/// How many returned messages a returns stream buffers before the oldest are dropped.
const RETURNS_CAPACITY: usize = 1024;

/// A channel's state shared between its handles and the driver.
#[derive(Debug)]
pub(crate) struct ChannelShared {
    pub id: u16,
    /// Which opening of channel number `id` this is (see [`ChannelKey`]).
    pub epoch: u64,
    open: AtomicBool,
    closed: Mutex<Option<Error>>,
    /// Set by the driver when `confirm.select-ok` arrives.
    pub confirm_mode: AtomicBool,
    /// The limit on unconfirmed publishes, if the application asked for one.
    pub in_flight: OnceLock<Arc<Semaphore>>,
    /// Prefetch count of the last `basic.qos`, which sizes consumer buffers.
    pub prefetch: AtomicU16,
    /// `false` while the broker has paused the channel with `channel.flow`.
    pub flow: watch::Sender<bool>,
    /// Where returned messages go.
    returns: Mutex<ReturnsSender>,
    /// Where publishers encode their method and header frames: frames are split off it, so
    /// one allocation serves many publishes.
    pub encode_buffer: Mutex<BytesMut>,
    /// Delivery tags up to this one came on a connection since lost (see [`Self::is_stale`]).
    pub tag_offset: AtomicU64,
    /// Acknowledgements waiting for the driver, in batches.
    pub acks: AckOutbox,
    /// The highest tag a `multiple` ack or nack settled, with all below it (see
    /// [`Self::settled_by_multiple`]).
    settled_through: AtomicU64,
    /// The highest tag handed out before the last `basic.recover` (see
    /// [`Self::requeued_by_recover`]).
    recovered_through: AtomicU64,
}

/// The sender of a channel's returns streams. It is made by the first `returns()` call, not
/// with the channel: its buffer is sized for a burst of returns, and most channels never
/// listen.
#[derive(Debug)]
enum ReturnsSender {
    NobodyListened,
    Listening(broadcast::Sender<Arc<ReturnedMessage>>),
    /// The channel closed; dropping the sender ended the streams.
    Closed,
}

impl ChannelShared {
    pub(crate) fn new(id: u16, epoch: u64) -> Self {
        Self {
            id,
            epoch,
            open: AtomicBool::new(true),
            closed: Mutex::new(None),
            confirm_mode: AtomicBool::new(false),
            in_flight: OnceLock::new(),
            prefetch: AtomicU16::new(0),
            flow: watch::Sender::new(true),
            returns: Mutex::new(ReturnsSender::NobodyListened),
            encode_buffer: Mutex::new(BytesMut::new()),
            tag_offset: AtomicU64::new(0),
            acks: AckOutbox::default(),
            settled_through: AtomicU64::new(0),
            recovered_through: AtomicU64::new(0),
        }
    }

    /// Records an acknowledgement on its way: one with `multiple` settles every delivery up to
    /// its tag. (Tag 0, "everything so far", is not recorded: which tags it covers is known to
    /// the broker only.)
    pub(crate) fn note_settled(&self, ack: Acknowledgement) {
        if let Acknowledgement::Ack {
            delivery_tag,
            multiple: true,
        }
        | Acknowledgement::Nack {
            delivery_tag,
            multiple: true,
            ..
        } = ack
        {
            self.settled_through
                .fetch_max(delivery_tag, Ordering::AcqRel);
        }
    }

    /// Whether a `multiple` ack or nack already settled `delivery_tag`: acknowledging it again
    /// would make the broker close the channel (406, unknown delivery tag).
    pub(crate) fn settled_by_multiple(&self, delivery_tag: u64) -> bool {
        delivery_tag <= self.settled_through.load(Ordering::Acquire)
    }

    /// Records a `basic.recover`: every delivery up to `last_tag`, the highest tag handed out
    /// before it, that was not settled is back in its queue and comes again under a new tag.
    pub(crate) fn note_recovered(&self, last_tag: u64) {
        self.recovered_through.fetch_max(last_tag, Ordering::AcqRel);
    }

    /// Whether a `basic.recover` requeued `delivery_tag` (if it was not settled before):
    /// settling it now would make the broker close the channel (406, unknown delivery tag).
    /// Tag 0 (with `multiple`, "everything so far") is never refused.
    pub(crate) fn requeued_by_recover(&self, delivery_tag: u64) -> bool {
        delivery_tag != 0 && delivery_tag <= self.recovered_through.load(Ordering::Acquire)
    }

    /// Whether `delivery_tag` came on a connection since lost and recovered.
    ///
    /// Delivery tags restart at 1 on every connection, so after a recovery the driver adds an
    /// offset (the highest tag handed out before) to every new tag, as RabbitMQ's Java client
    /// does: tags stay unique per channel handle, and a tag at or below the offset is known
    /// to be from before. Tag 0 (with `multiple`, "everything so far") is never stale.
    pub(crate) fn is_stale(&self, delivery_tag: u64) -> bool {
        delivery_tag != 0 && delivery_tag <= self.tag_offset.load(Ordering::Acquire)
    }

    pub(crate) fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// The key commands for this channel carry.
    pub(crate) fn key(&self) -> ChannelKey {
        ChannelKey {
            id: self.id,
            epoch: self.epoch,
        }
    }

    /// Marks the channel closed for good with `reason` (only the first reason is kept).
    pub(crate) fn set_closed(&self, reason: Error) {
        let mut closed = self.closed.lock().unwrap_or_else(|e| e.into_inner());
        if closed.is_none() {
            *closed = Some(reason);
        }
        self.open.store(false, Ordering::Release);
        drop(closed);
        // Wake publishers waiting for flow, so they see the close.
        self.flow.send_replace(true);
        // End the returns streams.
        *self.returns.lock().unwrap_or_else(|e| e.into_inner()) = ReturnsSender::Closed;
    }

    /// Passes a returned message to the returns streams; `false` if nobody listens.
    pub(crate) fn publish_return(&self, message: &ReturnedMessage) -> bool {
        match &*self.returns.lock().unwrap_or_else(|e| e.into_inner()) {
            ReturnsSender::Listening(sender) => sender.send(Arc::new(message.clone())).is_ok(),
            ReturnsSender::NobodyListened | ReturnsSender::Closed => false,
        }
    }

    /// A receiver of returned messages; already ended if the channel is closed.
    pub(crate) fn subscribe_returns(&self) -> broadcast::Receiver<Arc<ReturnedMessage>> {
        let mut returns = self.returns.lock().unwrap_or_else(|e| e.into_inner());
        match &*returns {
            ReturnsSender::Listening(sender) => sender.subscribe(),
            ReturnsSender::NobodyListened => {
                let sender = broadcast::Sender::new(RETURNS_CAPACITY);
                let receiver = sender.subscribe();
                *returns = ReturnsSender::Listening(sender);
                receiver
            }
            ReturnsSender::Closed => broadcast::Sender::new(1).subscribe(),
        }
    }

    /// Why the channel is closed, if it is.
    pub(crate) fn closed_reason(&self) -> Option<Error> {
        if self.is_open() {
            return None;
        }
        self.closed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The broker's delivery tag for a tag the application gave, given the channel's tag offset;
/// `None` if it came on a connection since lost. Tag 0 (everything, with `multiple`) stays 0.
pub(crate) fn wire_tag(tag: u64, tag_offset: u64) -> Option<u64> {
    match tag {
        0 => Some(0),
        tag if tag <= tag_offset => None,
        tag => Some(tag - tag_offset),
    }
}
