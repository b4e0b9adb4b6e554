//! The driver's per-channel protocol state, and the table that numbers channels.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::recovery::Step;
use crate::error::{Error, Result};
use crate::frame::ContentAssembler;
use crate::protocol::{BasicDeliver, BasicGetOk, BasicQos, BasicReturn, Method};
use crate::shared::channel::ChannelShared;
use crate::shared::command::{ChannelKey, OnReply, RpcReply};
use crate::shared::consumer::{ConsumerEvent, ConsumerShared};
use crate::shared::delivery_queue;
use crate::shared::ledger::ConfirmLedger;
use crate::shared::word_hash::WordHasher;
use crate::wire::{DecodeError, MethodId, ShortString};

/// Hashes consumer tags for the per-delivery lookup a word at a time: tags are short and come
/// from the broker or the application, never from an attacker who could choose collisions, so
/// the default SipHash's protection is not worth its cost on every delivery, and a broker tag
/// (`amq.ctag-` and 22 more bytes) is four words, where a byte-at-a-time hash took 31 steps
/// (callgrind: 143 instructions per delivery).
pub(super) type TagHasher = BuildHasherDefault<WordHasher>;

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
    pub waiter: Waiter,
}

/// Who waits for a request's reply.
#[derive(Debug)]
pub(super) enum Waiter {
    /// An application call.
    Caller(oneshot::Sender<Result<RpcReply>>),
    /// Nobody: the driver sent it on its own behalf (a cancel for a dropped consumer).
    Nobody,
    /// Recovery, restoring this step of the channel or topology.
    Restore(Step),
}

impl PendingRpc {
    /// A request an application call waits for.
    pub(super) fn caller(
        request: Method,
        replies: &'static [MethodId],
        on_reply: OnReply,
        reply: oneshot::Sender<Result<RpcReply>>,
    ) -> Self {
        Self {
            request,
            replies,
            on_reply,
            waiter: Waiter::Caller(reply),
        }
    }

    /// Fails the caller, if one waits.
    pub(super) fn fail(self, error: &Error) {
        if let Waiter::Caller(reply) = self.waiter {
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
    /// The last `basic.qos` the broker confirmed: per consumer (`[0]`) and per channel
    /// (`global`, `[1]`). Recovery applies them again.
    pub qos: [Option<BasicQos>; 2],
    /// Whether `tx.select` succeeded (recovery selects it again).
    pub tx: bool,
    /// Whether the channel was in confirm mode when its connection was lost (its ledger is
    /// gone until recovery selects confirms again).
    pub confirm: bool,
    /// Added to every delivery tag the broker sends (see `ChannelShared::is_stale`).
    pub tag_offset: u64,
    /// The highest delivery tag (offset included) handed to the application.
    pub last_tag: u64,
    /// A channel recovery opened for itself, not the application's.
    pub internal: bool,
    /// The channel's span (`telemetry::channel_span`), entered while the driver works for it.
    pub span: tracing::Span,
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
            qos: [None, None],
            tx: false,
            confirm: false,
            tag_offset: 0,
            last_tag: 0,
            internal: false,
            span: tracing::Span::none(),
        }
    }

    /// Whether the channel is in confirm mode (or was, and recovery will select it again).
    pub(super) fn in_confirm_mode(&self) -> bool {
        self.confirm || self.ledger.is_some()
    }

    /// The delivery tag the application sees for `wire_tag`, remembered as the highest so far.
    pub(super) fn visible_tag(&mut self, wire_tag: u64) -> u64 {
        let tag = wire_tag + self.tag_offset;
        self.last_tag = self.last_tag.max(tag);
        tag
    }

    /// The broker's delivery tag for a tag the application gave; `None` if it came on a
    /// connection since lost. Tag 0 (everything, with `multiple`) stays 0.
    pub(super) fn wire_tag(&self, tag: u64) -> Option<u64> {
        crate::shared::channel::wire_tag(tag, self.tag_offset)
    }

    pub(super) fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open)
    }

    /// Puts the channel in the state a lost connection leaves it in, to be restored by
    /// recovery under the same handles: pending calls fail with `lost`, unconfirmed publishes
    /// with `unknown`, deliveries still buffered for acknowledging consumers are dropped
    /// (the broker requeues them, and their tags mean nothing on the new connection), and
    /// tags from now on are offset past every tag handed out so far.
    pub(super) fn lose(&mut self, lost: &Error, unknown: &Error) {
        for rpc in self.rpcs.drain(..) {
            rpc.fail(lost);
        }
        if let Some(mut ledger) = self.ledger.take() {
            ledger.fail(unknown);
            self.confirm = true;
        }
        self.content.reset();
        self.forgotten.clear();
        for slot in self.consumers.values() {
            if !slot.no_ack {
                slot.events.purge();
            }
        }
        self.tag_offset = self.last_tag;
        self.shared
            .tag_offset
            .store(self.tag_offset, std::sync::atomic::Ordering::Release);
        // A paused channel is not paused on the new connection.
        self.shared.flow.send_replace(true);
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
    /// The connection's span, the parent of the channels'.
    span: tracing::Span,
}

impl ChannelTable {
    pub(super) fn new(channel_max: u16, span: tracing::Span) -> Self {
        Self {
            slots: Vec::new(),
            channel_max,
            next_epoch: 1,
            span,
        }
    }

    /// Whether the channels have spans: whether a subscriber wanted the connection's. When
    /// not, the driver skips looking them up for every frame and command.
    #[inline]
    pub(super) fn traced(&self) -> bool {
        !self.span.is_disabled()
    }

    /// The span of channel `id` (a disabled one if no subscriber wants it, or no such channel).
    pub(super) fn span(&self, id: u16) -> tracing::Span {
        match self.slots.get(usize::from(id)) {
            Some(Some(state)) => state.span.clone(),
            _ => tracing::Span::none(),
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
        let mut state = ChannelState::new(id, epoch, max_body_size, reply);
        state.span = crate::telemetry::channel_span(&self.span, id);
        self.insert(id, state);
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

    /// The state of channel `id`, on which a frame of kind `frame` arrived: a protocol error
    /// if the broker may not send frames on it (it is not open, opening or closing).
    pub(super) fn for_frame(&mut self, id: u16, frame: &'static str) -> Result<&mut ChannelState> {
        // `ok_or_else`: an `Error` made eagerly is also dropped eagerly, and its drop glue
        // (a match over every variant) cost 20 instructions per frame.
        self.get_mut(id)
            .ok_or_else(|| Error::Protocol(DecodeError::WrongChannel { frame, channel: id }))
    }

    /// Frees a channel number for reuse.
    pub(super) fn remove(&mut self, id: u16) -> Option<Box<ChannelState>> {
        self.slots.get_mut(usize::from(id))?.take()
    }

    pub(super) fn drain(&mut self) -> impl Iterator<Item = Box<ChannelState>> + '_ {
        self.slots.drain(..).flatten()
    }

    /// The numbers of the channels in the table, lowest first.
    pub(super) fn ids(&self) -> Vec<u16> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, slot)| slot.is_some())
            .map(|(id, _)| id as u16)
            .collect()
    }

    /// Every channel in the table.
    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = &mut ChannelState> + '_ {
        self.slots.iter_mut().flatten().map(Box::as_mut)
    }

    /// The negotiated channel_max of a new connection.
    pub(super) fn set_channel_max(&mut self, channel_max: u16) {
        self.channel_max = channel_max;
    }

    /// Adds a channel recovery opens for itself, already marked open (its `channel.open` is
    /// the first of the requests queued on it).
    pub(super) fn open_internal(&mut self, id: u16, max_body_size: u64) {
        let epoch = self.next_epoch;
        self.next_epoch += 1;
        let (reply, _) = oneshot::channel();
        let mut state = ChannelState::new(id, epoch, max_body_size, reply);
        state.phase = Phase::Open;
        state.internal = true;
        state.span = crate::telemetry::channel_span(&self.span, id);
        self.insert(id, state);
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
    fn broker_style_tags_that_differ_anywhere_hash_apart() {
        use std::hash::BuildHasher;
        let hasher = TagHasher::default();
        let hashes: std::collections::HashSet<u64> = (0..10_000)
            .map(|i| hasher.hash_one(ShortString::try_from(format!("amq.ctag-{i:022}")).unwrap()))
            .collect();
        assert_eq!(hashes.len(), 10_000, "no two of 10 000 tags collide");
        // A difference in the last, partial word counts too.
        let a = hasher.hash_one(ShortString::from_static("ctag-1a"));
        let b = hasher.hash_one(ShortString::from_static("ctag-1b"));
        assert_ne!(a, b);
    }

    #[test]
    fn a_reused_channel_number_is_not_the_old_channel() {
        let mut table = ChannelTable::new(2047, tracing::Span::none());
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
