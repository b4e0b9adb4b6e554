//! [`LossChecker`]: what was published, confirmed and consumed, by message id; and what that
//! says about loss.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use warren::protocol::BasicProperties;
use warren::wire::ShortString;
use warren::{Confirmation, Delivery, Error};

/// The ledger of a run that publishes messages with unique ids and consumes them, shared by
/// the tasks that publish and consume (it is `Sync`: share it in an `Arc`).
///
/// Publishers take ids from [`LossChecker::next_id`], publish with
/// [`LossChecker::properties`] (the id in `message_id`), record the publish
/// ([`LossChecker::published`]) and then its outcome ([`LossChecker::outcome`], or
/// [`LossChecker::confirmed`] / [`LossChecker::nacked`] / [`LossChecker::unknown`]).
/// Consumers record each delivery ([`LossChecker::consumed_delivery`] or
/// [`LossChecker::consumed`]) with its `redelivered` flag. [`LossChecker::report`] then
/// compares: see [`LossReport`].
///
/// An id may be published more than once (republished after an unknown outcome): every
/// publish and every outcome counts.
#[derive(Debug, Default)]
pub struct LossChecker {
    next: AtomicU64,
    ledger: Mutex<Ledger>,
}

#[derive(Debug, Default)]
struct Ledger {
    /// Id → how many times it was published.
    published: BTreeMap<u64, u32>,
    confirmed: BTreeSet<u64>,
    nacked: BTreeSet<u64>,
    unknown: BTreeSet<u64>,
    /// Id → the `redelivered` flag of each delivery, in order.
    consumed: BTreeMap<u64, Vec<bool>>,
}

impl LossChecker {
    /// An empty ledger; ids start at 1.
    pub fn new() -> Self {
        Self::default()
    }

    /// A fresh id (1, 2, 3, … across all tasks).
    pub fn next_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Properties carrying `id` in `message_id`; `persistent` sets delivery mode 2.
    pub fn properties(id: u64, persistent: bool) -> BasicProperties {
        BasicProperties {
            message_id: Some(
                ShortString::try_from(id.to_string()).expect("a u64 fits in a short string"),
            ),
            delivery_mode: persistent.then_some(2),
            ..Default::default()
        }
    }

    /// The id a delivery carries in `message_id`, if it carries one.
    pub fn id_of(delivery: &Delivery) -> Option<u64> {
        Self::id_in(&delivery.properties)
    }

    /// The id in `properties.message_id`, if there is one.
    pub fn id_in(properties: &BasicProperties) -> Option<u64> {
        properties.message_id.as_ref()?.as_str().parse().ok()
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that `id` was handed to the client for publishing.
    pub fn published(&self, id: u64) {
        *self.ledger().published.entry(id).or_default() += 1;
    }

    /// Records that the broker acknowledged a publish of `id` (`basic.ack`).
    pub fn confirmed(&self, id: u64) {
        self.ledger().confirmed.insert(id);
    }

    /// Records that the broker refused a publish of `id` (`basic.nack`, or returned it).
    pub fn nacked(&self, id: u64) {
        self.ledger().nacked.insert(id);
    }

    /// Records that a publish of `id` has no known outcome (the connection or channel was lost
    /// before the broker answered): the broker may or may not have it.
    pub fn unknown(&self, id: u64) {
        self.ledger().unknown.insert(id);
    }

    /// Records the outcome of a publish of `id` as its confirmation future resolved: `Ack` is
    /// confirmed, `Nack` and `Returned` are nacked, anything else (an error, no confirm mode)
    /// is unknown.
    pub fn outcome(&self, id: u64, outcome: &Result<Confirmation, Error>) {
        match outcome {
            Ok(Confirmation::Ack) => self.confirmed(id),
            Ok(Confirmation::Nack | Confirmation::Returned(_)) => self.nacked(id),
            Ok(_) | Err(_) => self.unknown(id),
        }
    }

    /// Records a delivery of `id`, with its `redelivered` flag.
    pub fn consumed(&self, id: u64, redelivered: bool) {
        self.ledger()
            .consumed
            .entry(id)
            .or_default()
            .push(redelivered);
    }

    /// Records `delivery` by the id in its `message_id`; returns the id, or `None` (recorded
    /// nowhere) if it carries none, which [`LossReport`] cannot account for: treat it as a
    /// failure.
    pub fn consumed_delivery(&self, delivery: &Delivery) -> Option<u64> {
        let id = Self::id_of(delivery)?;
        self.consumed(id, delivery.envelope.redelivered);
        Some(id)
    }

    /// How many distinct ids were consumed so far (to wait for the consumers to catch up).
    pub fn consumed_count(&self) -> usize {
        self.ledger().consumed.len()
    }

    /// How many distinct ids were confirmed so far.
    pub fn confirmed_count(&self) -> usize {
        self.ledger().confirmed.len()
    }

    /// Whether every confirmed id has been consumed (nothing is missing yet).
    pub fn all_confirmed_consumed(&self) -> bool {
        let ledger = self.ledger();
        ledger
            .confirmed
            .iter()
            .all(|id| ledger.consumed.contains_key(id))
    }

    /// What the ledger says now.
    pub fn report(&self) -> LossReport {
        let ledger = self.ledger();
        let lost = ledger
            .confirmed
            .iter()
            .filter(|id| !ledger.consumed.contains_key(id))
            .copied()
            .collect();
        let unexpected = ledger
            .consumed
            .keys()
            .filter(|id| !ledger.published.contains_key(id))
            .copied()
            .collect();
        let mut duplicated_explained = Vec::new();
        let mut duplicated_unexplained = Vec::new();
        for (id, deliveries) in &ledger.consumed {
            if deliveries.len() < 2 {
                continue;
            }
            let redelivered = deliveries[1..].iter().any(|&flag| flag);
            let republished = ledger.published.get(id).is_some_and(|&n| n > 1);
            if redelivered || republished || ledger.unknown.contains(id) {
                duplicated_explained.push(*id);
            } else {
                duplicated_unexplained.push(*id);
            }
        }
        LossReport {
            published: ledger.published.len(),
            publishes: ledger.published.values().map(|&n| n as usize).sum(),
            confirmed: ledger.confirmed.len(),
            nacked: ledger.nacked.len(),
            unknown: ledger.unknown.len(),
            consumed: ledger.consumed.len(),
            deliveries: ledger.consumed.values().map(Vec::len).sum(),
            redeliveries: ledger
                .consumed
                .values()
                .flatten()
                .filter(|&&flag| flag)
                .count(),
            lost,
            unexpected,
            duplicated_explained,
            duplicated_unexplained,
        }
    }
}

/// The outcome of a run, from a [`LossChecker`]. Counts are of distinct ids unless they say
/// otherwise; the lists hold ids, in increasing order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LossReport {
    /// Ids published at least once.
    pub published: usize,
    /// Publishes, counting each republish of an id.
    pub publishes: usize,
    /// Ids the broker acknowledged.
    pub confirmed: usize,
    /// Ids the broker nacked or returned.
    pub nacked: usize,
    /// Ids with a publish of unknown outcome.
    pub unknown: usize,
    /// Ids consumed at least once.
    pub consumed: usize,
    /// Deliveries, counting each duplicate.
    pub deliveries: usize,
    /// Deliveries flagged `redelivered`.
    pub redeliveries: usize,
    /// Confirmed, never consumed: the broker lost them (or the consumers stopped too early).
    pub lost: Vec<u64>,
    /// Consumed, never published: someone else's messages, or a corrupted id.
    pub unexpected: Vec<u64>,
    /// Consumed more than once, with a reason the broker may do so: a delivery after the first
    /// was flagged `redelivered`, or the id had a publish of unknown outcome, or was published
    /// more than once.
    pub duplicated_explained: Vec<u64>,
    /// Consumed more than once with none of those reasons.
    pub duplicated_unexplained: Vec<u64>,
}

impl LossReport {
    /// No loss, nothing unexpected, no unexplained duplicate.
    pub fn is_clean(&self) -> bool {
        self.lost.is_empty() && self.unexpected.is_empty() && self.duplicated_unexplained.is_empty()
    }

    /// Fails the test with the report unless it [is clean](LossReport::is_clean).
    pub fn assert_clean(&self) {
        assert!(self.is_clean(), "the run lost or mixed up messages: {self}");
    }
}

/// At most this many ids of each list are shown.
const SHOWN_IDS: usize = 20;

fn ids(f: &mut fmt::Formatter<'_>, what: &str, ids: &[u64]) -> fmt::Result {
    write!(f, "; {what} {}", ids.len())?;
    if !ids.is_empty() {
        let shown: Vec<String> = ids.iter().take(SHOWN_IDS).map(u64::to_string).collect();
        let more = if ids.len() > SHOWN_IDS { ", …" } else { "" };
        write!(f, " [{}{more}]", shown.join(", "))?;
    }
    Ok(())
}

impl fmt::Display for LossReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "published {} ({} publishes), confirmed {}, nacked {}, unknown {}, consumed {} \
             ({} deliveries, {} redelivered)",
            self.published,
            self.publishes,
            self.confirmed,
            self.nacked,
            self.unknown,
            self.consumed,
            self.deliveries,
            self.redeliveries
        )?;
        ids(f, "lost", &self.lost)?;
        ids(f, "unexpected", &self.unexpected)?;
        ids(f, "duplicated (explained)", &self.duplicated_explained)?;
        ids(f, "duplicated (unexplained)", &self.duplicated_unexplained)
    }
}
