//! The driver's per-channel protocol state, and the table that numbers channels.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use tokio::sync::oneshot;

use crate::channel::ChannelShared;
use crate::confirms::ConfirmLedger;
use crate::connection::command::{ChannelKey, OnReply, RpcReply};
use crate::consumer::{ConsumerEvent, ConsumerShared};
use crate::delivery_queue;
use crate::error::{Error, Result};
use crate::frame::ContentAssembler;
use crate::protocol::{BasicDeliver, BasicGetOk, BasicReturn, Method};
use crate::wire::{MethodId, ShortString};

/// Hashes consumer tags for the per-delivery lookup with FNV-1a: tags are short and come from
/// the broker or the application, never from an attacker who could choose collisions, so the
/// default SipHash's protection is not worth its cost on every delivery.
pub(super) type TagHasher = BuildHasherDefault<Fnv1a>;

/// The FNV-1a hash function.
pub(super) struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A content-carrying method waiting for its header and body.
#[derive(Debug)]
pub(super) enum ContentMethod {
    Deliver(BasicDeliver),
    GetOk(BasicGetOk),
    Return(BasicReturn),
}

/// A request sent on a channel whose reply has not arrived.
#[derive(Debug)]
pub(super) struct PendingRpc {
    /// The request, kept for the bookkeeping its reply triggers (topology, prefetch).
    pub request: Method,
    pub replies: &'static [MethodId],
    pub on_reply: OnReply,
    /// `None` for requests the driver sent on its own behalf.
    pub reply: Option<oneshot::Sender<Result<RpcReply>>>,
}

impl PendingRpc {
    pub(super) fn fail(self, error: &Error) {
        if let Some(reply) = self.reply {
            let _ = reply.send(Err(error.clone()));
        }
    }
}

/// Where a consumer's deliveries go.
#[derive(Debug)]
pub(super) struct ConsumerSlot {
    pub events: delivery_queue::Sender<ConsumerEvent>,
    pub shared: Arc<ConsumerShared>,
    pub no_ack: bool,
}

impl ConsumerSlot {
    /// Ends the consumer's stream, with `reason` as its last item (`None`: it just ends).
    pub(super) fn end(self, reason: Option<Error>) {
        if let Some(reason) = reason {
            self.shared.set_end(reason);
        }
        // Dropping `events` closes the stream once it has drained.
    }
}

/// Where a channel is in its life.
#[derive(Debug)]
pub(super) enum Phase {
    /// `channel.open` sent; the caller waits for the handle.
    Opening(Option<oneshot::Sender<Result<Arc<ChannelShared>>>>),
    Open,
    /// `channel.close` sent; these callers wait for `close-ok`.
    Closing(Vec<oneshot::Sender<Result<()>>>),
}

/// The driver's state of one channel.
#[derive(Debug)]
pub(super) struct ChannelState {
    pub shared: Arc<ChannelShared>,
    pub phase: Phase,
    pub rpcs: VecDeque<PendingRpc>,
    pub content: ContentAssembler<ContentMethod>,
    pub consumers: HashMap<ShortString, ConsumerSlot, TagHasher>,
    /// Consumers whose streams were dropped: their late deliveries are requeued.
    /// The value says whether the consumer was `no_ack` (then there is nothing to requeue).
    pub forgotten: HashMap<ShortString, bool, TagHasher>,
    pub ledger: Option<ConfirmLedger>,
}

impl ChannelState {
    pub(super) fn new(
        id: u16,
        epoch: u64,
        max_body_size: u64,
        reply: oneshot::Sender<Result<Arc<ChannelShared>>>,
    ) -> Self {
        Self {
            shared: Arc::new(ChannelShared::new(id, epoch)),
            phase: Phase::Opening(Some(reply)),
            rpcs: VecDeque::new(),
            content: ContentAssembler::new(max_body_size),
            consumers: HashMap::default(),
            forgotten: HashMap::default(),
            ledger: None,
        }
    }

    pub(super) fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open)
    }

    /// Fails everything waiting on the channel with `error` and marks its handles closed.
    pub(super) fn fail(&mut self, error: &Error) {
        self.shared.set_closed(error.clone());
        for rpc in self.rpcs.drain(..) {
            rpc.fail(error);
        }
        if let Some(ledger) = &mut self.ledger {
            ledger.fail(error);
        }
        for (_, consumer) in self.consumers.drain() {
            consumer.end(Some(error.clone()));
        }
        self.content.reset();
        match std::mem::replace(&mut self.phase, Phase::Closing(Vec::new())) {
            Phase::Opening(Some(reply)) => {
                let _ = reply.send(Err(error.clone()));
            }
            Phase::Closing(replies) => {
                // The close these callers asked for happened, one way or another.
                for reply in replies {
                    let _ = reply.send(Ok(()));
                }
            }
            Phase::Opening(None) | Phase::Open => {}
        }
    }
}

/// Channels by number, with the lowest free number handed out first.
#[derive(Debug)]
pub(super) struct ChannelTable {
    slots: Vec<Option<Box<ChannelState>>>,
    channel_max: u16,
    /// The epoch of the next channel opened (see [`ChannelKey`]).
    next_epoch: u64,
}

impl ChannelTable {
    pub(super) fn new(channel_max: u16) -> Self {
        Self {
            slots: Vec::new(),
            channel_max,
            next_epoch: 1,
        }
    }

    /// Adds channel `id`, being opened, under an epoch never handed out before; returns its key.
    pub(super) fn open(
        &mut self,
        id: u16,
        max_body_size: u64,
        reply: oneshot::Sender<Result<Arc<ChannelShared>>>,
    ) -> ChannelKey {
        let epoch = self.next_epoch;
        self.next_epoch += 1;
        self.insert(id, ChannelState::new(id, epoch, max_body_size, reply));
        ChannelKey { id, epoch }
    }

    /// The channel a command is for, if that opening of its number is still in the table.
    pub(super) fn get_key(&mut self, key: ChannelKey) -> Option<&mut ChannelState> {
        self.get_mut(key.id).filter(|c| c.shared.epoch == key.epoch)
    }

    /// [`ChannelTable::get_key`], if the channel is also open (not opening or closing).
    pub(super) fn get_open(&mut self, key: ChannelKey) -> Option<&mut ChannelState> {
        self.get_key(key).filter(|c| c.is_open())
    }

    /// The lowest channel number not in use, or `None` if all up to channel_max are.
    pub(super) fn free_id(&self) -> Option<u16> {
        let in_use = |id: usize| self.slots.get(id).is_some_and(Option::is_some);
        (1..=usize::from(self.channel_max))
            .find(|&id| !in_use(id))
            .map(|id| id as u16)
    }

    fn insert(&mut self, id: u16, state: ChannelState) {
        let index = usize::from(id);
        if self.slots.len() <= index {
            self.slots.resize_with(index + 1, || None);
        }
        self.slots[index] = Some(Box::new(state));
    }

    pub(super) fn get_mut(&mut self, id: u16) -> Option<&mut ChannelState> {
        self.slots.get_mut(usize::from(id))?.as_deref_mut()
    }

    /// Frees a channel number for reuse.
    pub(super) fn remove(&mut self, id: u16) -> Option<Box<ChannelState>> {
        self.slots.get_mut(usize::from(id))?.take()
    }

    pub(super) fn drain(&mut self) -> impl Iterator<Item = Box<ChannelState>> + '_ {
        self.slots.drain(..).flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opened(table: &mut ChannelTable, id: u16) -> ChannelKey {
        let (reply, _receiver) = oneshot::channel();
        table.open(id, 1 << 20, reply)
    }

    #[test]
    fn a_reused_channel_number_is_not_the_old_channel() {
        let mut table = ChannelTable::new(2047);
        let old = opened(&mut table, 1);
        assert!(table.get_key(old).is_some());
        table.remove(1);
        assert_eq!(table.free_id(), Some(1), "the lowest number is reused");
        let new = opened(&mut table, 1);
        assert_eq!(new.id, old.id);
        assert!(table.get_key(new).is_some());
        // A command still queued for the old channel finds nothing.
        assert!(table.get_key(old).is_none());
        assert!(table.get_mut(1).is_some());
    }
}
