//! The ledger of a confirm-mode channel: what each publish turned into, and the unconfirmed
//! publishes by delivery tag.
//!
//! After `confirm.select`, RabbitMQ numbers every publish on the channel from 1 and answers each
//! with `basic.ack` or `basic.nack`, possibly several at once (`multiple`), possibly out of order.
//! A mandatory publish that no queue took comes back as `basic.return` first, then is acked.
//! When the channel or connection goes away, every publish not yet answered resolves to an
//! error: warren never reports a publish as confirmed that the broker did not confirm.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, oneshot};

use super::messages::ReturnedMessage;
use super::stats::Counter;
use crate::error::{Error, Result};
use crate::wire::ShortString;

/// The outcome of one publish.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Confirmation {
    /// The broker took responsibility for the message (`basic.ack`): it is in every queue it
    /// was routed to (on disk, for persistent messages in durable queues), or it was routed
    /// nowhere and not mandatory.
    Ack,
    /// The broker could not take the message (`basic.nack`, an internal error). Publish it again.
    Nack,
    /// The message was mandatory and no queue took it: the broker returned it (`basic.return`)
    /// before acknowledging it. The returned message says why.
    Returned(Box<ReturnedMessage>),
    /// The channel is not in confirm mode, so the broker sends no confirmation; the message
    /// was handed to the connection for sending.
    NotRequested,
}

impl Confirmation {
    /// Whether the broker took responsibility for the message ([`Confirmation::Ack`]).
    pub fn is_ack(&self) -> bool {
        matches!(self, Self::Ack)
    }
}

/// How many publishes settled without an ack since the previous
/// [`Channel::wait_for_confirms`](crate::Channel::wait_for_confirms).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConfirmSummary {
    /// Publishes the broker nacked.
    pub nacked: u64,
    /// Mandatory publishes the broker returned as unroutable.
    pub returned: u64,
}

impl ConfirmSummary {
    /// Whether every publish was acked and routed.
    pub fn all_acked(&self) -> bool {
        self.nacked == 0 && self.returned == 0
    }
}

/// What a `basic.return` of a mandatory publish carries, kept to recognise it.
#[derive(Debug)]
pub(crate) struct Mandatory {
    pub exchange: ShortString,
    pub routing_key: ShortString,
    /// Shared with the message sent, not copied.
    pub body: Bytes,
}

impl Mandatory {
    fn is_returned_as(&self, message: &ReturnedMessage) -> bool {
        self.exchange == message.exchange
            && self.routing_key == message.routing_key
            && match message.skipped_body_size {
                // Over max_body_size, the body was not kept: its size must do.
                Some(size) => self.body.len() as u64 == size,
                None => self.body == message.body,
            }
    }
}

/// One publish the broker has not answered yet.
#[derive(Debug)]
pub(crate) struct Unconfirmed {
    /// `None` when the publisher did not ask (it published before `confirm.select` returned).
    pub reply: Option<oneshot::Sender<Result<Confirmation>>>,
    /// Set for mandatory publishes, the only ones the broker returns.
    pub mandatory: Option<Box<Mandatory>>,
    /// A returned message matched to this publish, given with its ack.
    pub returned: Option<Box<ReturnedMessage>>,
    /// Releases a place in the channel's in-flight limit when dropped: after the
    /// confirmation is sent, so that a publish let in by the place finds it settled.
    pub permit: Option<OwnedSemaphorePermit>,
}

/// Confirmations settled during a turn of the driver, handed to their publishers when the
/// turn ends ([`SettledConfirms::send`]).
///
/// Why not at once: a publisher on a thread outside the runtime's tasks (a loop in
/// `#[tokio::main]`) woken in the middle of a turn runs while the driver is still busy, so
/// its next publish goes through the driver's queue (and wakes it) instead of to the socket
/// (`shared/direct_writes.rs`). Woken after the turn, it finds the driver idle. The delay is
/// the rest of one turn. A publish's place in the channel's in-flight limit is kept until its
/// confirmation is sent, so that no publish gets a place while the confirmation that freed
/// it is still held here.
#[derive(Debug, Default)]
pub(crate) struct SettledConfirms {
    confirms: Vec<Settled>,
    summaries: Vec<(oneshot::Sender<Result<ConfirmSummary>>, ConfirmSummary)>,
}

/// One settled publish, until the turn ends.
#[derive(Debug)]
struct Settled {
    reply: Option<oneshot::Sender<Result<Confirmation>>>,
    outcome: Confirmation,
    permit: Option<OwnedSemaphorePermit>,
}

impl SettledConfirms {
    /// Hands every settled confirmation to its publisher, then answers the
    /// `wait_for_confirms` callers the same settling completed, so that a caller told that
    /// everything is confirmed finds each publish's confirmation there.
    pub(crate) fn send(&mut self) {
        for settled in self.confirms.drain(..) {
            if let Some(reply) = settled.reply {
                let _ = reply.send(Ok(settled.outcome));
            }
            drop(settled.permit);
        }
        for (reply, summary) in self.summaries.drain(..) {
            let _ = reply.send(Ok(summary));
        }
    }
}

/// A caller of `wait_for_confirms`, waiting until every tag up to `up_to` is settled.
#[derive(Debug)]
struct Waiter {
    up_to: u64,
    reply: oneshot::Sender<Result<ConfirmSummary>>,
}

/// The driver's record of a confirm-mode channel's unconfirmed publishes.
///
/// Tags are consecutive, so the ledger is a deque indexed by `tag - first_tag`, with settled
/// entries left as `None` until the front is settled: every operation is O(1) per publish.
#[derive(Debug)]
pub(crate) struct ConfirmLedger {
    /// Tag of `pending[0]`.
    first_tag: u64,
    pending: VecDeque<Option<Unconfirmed>>,
    /// Number of `Some` entries in `pending`.
    unsettled: usize,
    /// Returns received since the last ack, waiting to be matched to the publish the ack covers.
    returns: Vec<ReturnedMessage>,
    waiters: Vec<Waiter>,
    summary: ConfirmSummary,
    /// The connection's count of unsettled publishes, kept in step with `unsettled`.
    awaiting: Arc<Counter>,
}

impl Drop for ConfirmLedger {
    fn drop(&mut self) {
        self.awaiting.sub(self.unsettled as u64);
    }
}

impl ConfirmLedger {
    #[cfg(test)]
    pub(crate) fn new() -> Self {
        Self::counting(Arc::default())
    }

    /// A ledger that keeps `awaiting` in step with its unsettled publishes.
    pub(crate) fn counting(awaiting: Arc<Counter>) -> Self {
        Self {
            awaiting,
            first_tag: 1,
            pending: VecDeque::new(),
            unsettled: 0,
            returns: Vec::new(),
            waiters: Vec::new(),
            summary: ConfirmSummary::default(),
        }
    }

    /// The tag the next publish gets.
    pub(crate) fn next_tag(&self) -> u64 {
        self.first_tag + self.pending.len() as u64
    }

    /// Records a publish; returns its delivery tag.
    pub(crate) fn push(&mut self, publish: Unconfirmed) -> u64 {
        let tag = self.next_tag();
        self.pending.push_back(Some(publish));
        self.unsettled += 1;
        self.awaiting.incr();
        tag
    }

    /// Number of publishes not yet confirmed.
    #[cfg(test)]
    pub(crate) fn unsettled(&self) -> usize {
        self.unsettled
    }

    /// Keeps a `basic.return` until the ack that follows it names its publish.
    pub(crate) fn returned(&mut self, message: ReturnedMessage) {
        self.returns.push(message);
    }

    /// Settles `tag` (and every earlier tag if `multiple`) with an ack or a nack, the
    /// outcomes going to `settled` for the end of the driver's turn.
    /// A multiple ack with tag 0 settles everything outstanding. Returns how many publishes
    /// it settled.
    pub(crate) fn settle(
        &mut self,
        tag: u64,
        multiple: bool,
        ack: bool,
        settled_out: &mut SettledConfirms,
    ) -> u64 {
        let mut settled = 0;
        let newest = self.next_tag().saturating_sub(1);
        let last = if multiple && tag == 0 {
            newest
        } else {
            tag.min(newest)
        };
        self.attach_returns(last, multiple);
        let first = if multiple { self.first_tag } else { tag };
        for t in first..=last {
            let Some(index) = t.checked_sub(self.first_tag) else {
                continue;
            };
            let Some(entry) = self.pending.get_mut(index as usize).and_then(Option::take) else {
                continue;
            };
            self.unsettled -= 1;
            settled += 1;
            let outcome = match (ack, entry.returned) {
                (_, Some(message)) => {
                    self.summary.returned += 1;
                    Confirmation::Returned(message)
                }
                (true, None) => Confirmation::Ack,
                (false, None) => {
                    self.summary.nacked += 1;
                    Confirmation::Nack
                }
            };
            if entry.reply.is_some() || entry.permit.is_some() {
                settled_out.confirms.push(Settled {
                    reply: entry.reply,
                    outcome,
                    permit: entry.permit,
                });
            }
        }
        while let Some(None) = self.pending.front() {
            self.pending.pop_front();
            self.first_tag += 1;
        }
        self.awaiting.sub(settled);
        self.answer_waiters(settled_out);
        settled
    }

    /// Matches the returns received so far to the publishes this ack covers.
    ///
    /// RabbitMQ sends a mandatory publish's `basic.return` before its ack, but acks of earlier
    /// publishes (confirmed by their queues meanwhile) may come in between. So a return waits
    /// for the first ack that covers a publish it can be: same exchange, routing key and body,
    /// mandatory, not yet matched. Among several, the newest covered one is taken: RabbitMQ
    /// acks an unroutable publish as soon as it has handled it, so it is the highest tag of that
    /// ack. A return no unsettled publish can be is dropped here (it still went to the
    /// returns streams).
    fn attach_returns(&mut self, last: u64, multiple: bool) {
        if self.returns.is_empty() {
            return;
        }
        let first = if multiple { self.first_tag } else { last };
        let mut waiting = Vec::new();
        for message in std::mem::take(&mut self.returns).into_iter().rev() {
            let is_candidate = |entry: &Unconfirmed| {
                entry.returned.is_none()
                    && entry
                        .mandatory
                        .as_ref()
                        .is_some_and(|m| m.is_returned_as(&message))
            };
            let covered = (first..=last).rev().find_map(|tag| {
                let index = tag.checked_sub(self.first_tag)? as usize;
                self.pending
                    .get(index)?
                    .as_ref()
                    .is_some_and(is_candidate)
                    .then_some(index)
            });
            if let Some(entry) = covered.and_then(|i| self.pending.get_mut(i)?.as_mut()) {
                entry.returned = Some(Box::new(message));
            } else if self.pending.iter().flatten().any(is_candidate) {
                waiting.push(message);
            } else {
                tracing::debug!(
                    routing_key = %message.routing_key,
                    "a returned message matches no unconfirmed publish"
                );
            }
        }
        waiting.reverse();
        self.returns = waiting;
    }

    /// Registers a caller waiting for every publish so far, answered through `settled` once
    /// they are all settled (in this turn if nothing is pending).
    pub(crate) fn wait(
        &mut self,
        reply: oneshot::Sender<Result<ConfirmSummary>>,
        settled: &mut SettledConfirms,
    ) {
        let up_to = self.next_tag() - 1;
        self.waiters.push(Waiter { up_to, reply });
        self.answer_waiters(settled);
    }

    fn answer_waiters(&mut self, settled: &mut SettledConfirms) {
        if self.waiters.is_empty() {
            return;
        }
        // Every tag below the first pending one is settled.
        let settled_below = self.first_tag;
        let mut i = 0;
        while i < self.waiters.len() {
            if self.waiters[i].up_to < settled_below {
                let waiter = self.waiters.swap_remove(i);
                let summary = std::mem::take(&mut self.summary);
                settled.summaries.push((waiter.reply, summary));
            } else {
                i += 1;
            }
        }
    }

    /// Fails every unconfirmed publish and waiter with `error` (the channel or connection closed).
    pub(crate) fn fail(&mut self, error: &Error) {
        for entry in self.pending.drain(..).flatten() {
            if let Some(reply) = entry.reply {
                let _ = reply.send(Err(error.clone()));
            }
            // The place is freed after the error is sent.
            drop(entry.permit);
        }
        self.awaiting.sub(self.unsettled as u64);
        self.unsettled = 0;
        for waiter in self.waiters.drain(..) {
            let _ = waiter.reply.send(Err(error.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Close, Initiator};
    use crate::protocol::{BasicProperties, ReplyCode};

    fn publish(
        ledger: &mut ConfirmLedger,
        key: &'static str,
    ) -> oneshot::Receiver<Result<Confirmation>> {
        let (reply, receiver) = oneshot::channel();
        ledger.push(Unconfirmed {
            reply: Some(reply),
            mandatory: Some(Box::new(Mandatory {
                exchange: ShortString::from_static("x"),
                routing_key: ShortString::from_static(key),
                body: Bytes::from_static(b"body"),
            })),
            returned: None,
            permit: None,
        });
        receiver
    }

    fn returned(key: &'static str) -> ReturnedMessage {
        ReturnedMessage {
            reply_code: ReplyCode::NO_ROUTE,
            reply_text: ShortString::from_static("NO_ROUTE"),
            exchange: ShortString::from_static("x"),
            routing_key: ShortString::from_static(key),
            properties: BasicProperties::default(),
            body: Bytes::from_static(b"body"),
            skipped_body_size: None,
        }
    }

    /// Settles as the driver does, and ends the turn.
    fn settle(ledger: &mut ConfirmLedger, tag: u64, multiple: bool, ack: bool) -> u64 {
        let mut settled = SettledConfirms::default();
        let count = ledger.settle(tag, multiple, ack, &mut settled);
        settled.send();
        count
    }

    fn outcome(mut rx: oneshot::Receiver<Result<Confirmation>>) -> Option<Result<Confirmation>> {
        rx.try_recv().ok()
    }

    fn confirmed(rx: oneshot::Receiver<Result<Confirmation>>) -> Confirmation {
        outcome(rx)
            .expect("the publish was settled")
            .expect("the publish was confirmed")
    }

    #[test]
    fn acks_nacks_and_multiple_settle_the_right_tags() {
        let mut ledger = ConfirmLedger::new();
        let rx: Vec<_> = (0..5).map(|_| publish(&mut ledger, "k")).collect();
        let mut rx = rx.into_iter();
        settle(&mut ledger, 2, false, false);
        settle(&mut ledger, 3, true, true);
        assert_eq!(ledger.unsettled(), 2);
        let results: Vec<_> = rx.by_ref().take(3).map(confirmed).collect();
        assert_eq!(
            results,
            [Confirmation::Ack, Confirmation::Nack, Confirmation::Ack]
        );
        assert_eq!(ledger.next_tag(), 6);
        let error = Error::ChannelClosed {
            channel: 1,
            close: Close::normal(Initiator::Client),
        };
        ledger.fail(&error);
        for rx in rx {
            assert!(matches!(
                outcome(rx),
                Some(Err(Error::ChannelClosed { .. }))
            ));
        }
    }

    #[test]
    fn a_return_attaches_to_the_publish_its_ack_covers() {
        let mut ledger = ConfirmLedger::new();
        let first = publish(&mut ledger, "routed");
        let second = publish(&mut ledger, "unroutable");
        ledger.returned(returned("unroutable"));
        settle(&mut ledger, 2, true, true);
        assert_eq!(confirmed(first), Confirmation::Ack);
        match confirmed(second) {
            Confirmation::Returned(message) => assert_eq!(message.routing_key, "unroutable"),
            other => panic!("expected a returned confirmation, got {other:?}"),
        }
    }

    #[test]
    fn a_return_waits_for_the_ack_that_covers_its_publish() {
        let mut ledger = ConfirmLedger::new();
        let routed = publish(&mut ledger, "routed");
        let unroutable = publish(&mut ledger, "unroutable");
        // The return of tag 2, then the queue's ack of tag 1, then the ack of tag 2.
        ledger.returned(returned("unroutable"));
        settle(&mut ledger, 1, true, true);
        assert_eq!(confirmed(routed), Confirmation::Ack);
        settle(&mut ledger, 2, false, true);
        assert!(matches!(confirmed(unroutable), Confirmation::Returned(_)));
    }

    #[test]
    fn waiters_complete_when_everything_before_them_settles() {
        let mut ledger = ConfirmLedger::new();
        let _a = publish(&mut ledger, "k");
        let _b = publish(&mut ledger, "k");
        let (tx, mut rx) = oneshot::channel();
        ledger.wait(tx, &mut SettledConfirms::default());
        let _c = publish(&mut ledger, "k");
        settle(&mut ledger, 1, false, false);
        assert!(rx.try_recv().is_err(), "tag 2 is still pending");
        settle(&mut ledger, 2, false, true);
        assert_eq!(
            rx.try_recv().unwrap().unwrap(),
            ConfirmSummary {
                nacked: 1,
                returned: 0
            }
        );
    }

    #[test]
    fn waiting_with_nothing_pending_completes_at_once() {
        let mut ledger = ConfirmLedger::new();
        let (tx, mut rx) = oneshot::channel();
        let mut settled = SettledConfirms::default();
        ledger.wait(tx, &mut settled);
        settled.send();
        assert!(rx.try_recv().unwrap().unwrap().all_acked());
    }

    #[test]
    fn settled_confirmations_reach_their_publishers_when_the_turn_ends() {
        let mut ledger = ConfirmLedger::new();
        let mut first = publish(&mut ledger, "k");
        let second = publish(&mut ledger, "k");
        let (tx, mut waiter) = oneshot::channel();
        let mut settled = SettledConfirms::default();
        ledger.wait(tx, &mut settled);
        assert_eq!(ledger.settle(2, true, true, &mut settled), 2);
        assert_eq!(ledger.unsettled(), 0);
        assert!(
            first.try_recv().is_err(),
            "nothing is handed out during the turn"
        );
        assert!(waiter.try_recv().is_err(), "nor is the waiter answered");
        settled.send();
        assert_eq!(confirmed(first), Confirmation::Ack);
        assert_eq!(confirmed(second), Confirmation::Ack);
        assert!(waiter.try_recv().unwrap().unwrap().all_acked());
    }

    #[test]
    fn a_place_in_the_in_flight_limit_is_freed_after_the_confirmation_is_sent() {
        let limit = Arc::new(tokio::sync::Semaphore::new(1));
        let mut ledger = ConfirmLedger::new();
        let (reply, mut receiver) = oneshot::channel();
        ledger.push(Unconfirmed {
            reply: Some(reply),
            mandatory: None,
            returned: None,
            permit: Some(limit.clone().try_acquire_owned().expect("a place")),
        });
        let mut settled = SettledConfirms::default();
        ledger.settle(1, false, true, &mut settled);
        assert_eq!(limit.available_permits(), 0, "held with the confirmation");
        settled.send();
        assert_eq!(limit.available_permits(), 1);
        assert_eq!(receiver.try_recv().unwrap().unwrap(), Confirmation::Ack);
    }
}
