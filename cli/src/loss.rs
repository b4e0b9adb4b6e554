//! What `warren perf` checks for loss: every message carries its producer and a sequence
//! number; producers record what the broker confirmed, consumers what they received, and the
//! difference is what was lost.

use std::sync::Mutex;

/// The header that carries a message's producer (1, 2, ...).
pub const PRODUCER_HEADER: &str = "x-warren-producer";
/// The header that carries a message's sequence number within its producer (0, 1, ...).
pub const SEQUENCE_HEADER: &str = "x-warren-seq";

/// A set of sequence numbers (dense from 0), a bit each.
#[derive(Debug, Default)]
struct Bits(Vec<u64>);

impl Bits {
    /// Adds `n`; returns whether it was there already.
    fn insert(&mut self, n: u64) -> bool {
        let (word, bit) = ((n / 64) as usize, n % 64);
        if self.0.len() <= word {
            self.0.resize(word + 1, 0);
        }
        let was = self.0[word] & (1 << bit) != 0;
        self.0[word] |= 1 << bit;
        was
    }

    fn len(&self) -> u64 {
        self.0.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// How many of `self` are not in `other`.
    fn missing_from(&self, other: &Bits) -> u64 {
        self.0
            .iter()
            .enumerate()
            .map(|(i, word)| {
                let theirs = other.0.get(i).copied().unwrap_or(0);
                u64::from((word & !theirs).count_ones())
            })
            .sum()
    }
}

/// One producer's messages.
#[derive(Debug, Default)]
struct Producer {
    confirmed: Bits,
    received: Bits,
    /// Deliveries of a sequence number already received.
    duplicated: u64,
}

/// The loss ledger of a run: per producer, what was confirmed and what was received.
#[derive(Debug)]
pub struct Ledger {
    producers: Vec<Mutex<Producer>>,
}

/// What the ledger says at the end of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Loss {
    /// Confirmed by the broker and never received.
    pub lost: u64,
    /// Deliveries of a message received before.
    pub duplicated: u64,
    /// Distinct messages received.
    pub received: u64,
}

impl Ledger {
    /// A ledger for `producers` producers, numbered from 1.
    pub fn new(producers: u32) -> Self {
        Self {
            producers: (0..producers).map(|_| Mutex::default()).collect(),
        }
    }

    fn producer(&self, producer: u32) -> Option<std::sync::MutexGuard<'_, Producer>> {
        let index = usize::try_from(producer).ok()?.checked_sub(1)?;
        let slot = self.producers.get(index)?;
        Some(slot.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The broker confirmed message `sequence` of `producer`.
    pub fn confirmed(&self, producer: u32, sequence: u64) {
        if let Some(mut p) = self.producer(producer) {
            p.confirmed.insert(sequence);
        }
    }

    /// A consumer received message `sequence` of `producer`; `false` for a producer this run
    /// does not know (another run's message in a shared queue).
    pub fn received(&self, producer: u32, sequence: u64) -> bool {
        let Some(mut p) = self.producer(producer) else {
            return false;
        };
        if p.received.insert(sequence) {
            p.duplicated += 1;
        }
        true
    }

    /// Whether every confirmed message was received.
    pub fn all_confirmed_received(&self) -> bool {
        self.producers.iter().all(|p| {
            let p = p.lock().unwrap_or_else(|e| e.into_inner());
            p.confirmed.missing_from(&p.received) == 0
        })
    }

    /// The distinct messages received so far.
    pub fn received_count(&self) -> u64 {
        self.producers
            .iter()
            .map(|p| p.lock().unwrap_or_else(|e| e.into_inner()).received.len())
            .sum()
    }

    /// The loss, duplicates and receptions so far.
    pub fn loss(&self) -> Loss {
        let mut loss = Loss::default();
        for p in &self.producers {
            let p = p.lock().unwrap_or_else(|e| e.into_inner());
            loss.lost += p.confirmed.missing_from(&p.received);
            loss.duplicated += p.duplicated;
            loss.received += p.received.len();
        }
        loss
    }
}

/// Per consumer: the highest sequence number received from each producer, to count messages
/// that came after a later one of the same producer.
#[derive(Debug, Default)]
pub struct Order {
    highest: Vec<Option<u64>>,
    /// Messages received after a later message of their producer.
    pub reordered: u64,
}

impl Order {
    /// Notes message `sequence` of `producer`.
    pub fn note(&mut self, producer: u32, sequence: u64) {
        let index = producer.saturating_sub(1) as usize;
        if self.highest.len() <= index {
            self.highest.resize(index + 1, None);
        }
        match self.highest[index] {
            Some(highest) if sequence < highest => self.reordered += 1,
            Some(highest) if sequence == highest => {}
            _ => self.highest[index] = Some(sequence),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_is_confirmed_and_never_received() {
        let ledger = Ledger::new(2);
        for n in 0..200 {
            ledger.confirmed(1, n);
        }
        ledger.confirmed(2, 0);
        for n in (0..200).filter(|n| n % 50 != 7) {
            assert!(ledger.received(1, n));
        }
        // Received without a confirm (an unknown outcome that made it): not lost, not extra.
        assert!(ledger.received(2, 5));
        assert!(ledger.received(2, 0));
        assert!(ledger.received(1, 3));
        assert!(!ledger.received(3, 0), "no such producer");
        assert!(!ledger.all_confirmed_received());
        let loss = ledger.loss();
        assert_eq!(loss.lost, 4, "7, 57, 107 and 157");
        assert_eq!(loss.duplicated, 1);
        assert_eq!(loss.received, 196 + 2);
        for n in [7, 57, 107, 157] {
            ledger.received(1, n);
        }
        assert!(ledger.all_confirmed_received());
    }

    #[test]
    fn order_counts_what_comes_after_a_later_message() {
        let mut order = Order::default();
        for (producer, sequence) in [(1, 0), (1, 1), (2, 0), (1, 3), (1, 2), (2, 1), (1, 3)] {
            order.note(producer, sequence);
        }
        assert_eq!(
            order.reordered, 1,
            "1:2 after 1:3; a duplicate of 1:3 is not reordered"
        );
    }
}
