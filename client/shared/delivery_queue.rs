//! The queue between the driver and one consumer stream, and the byte budget that bounds what
//! all the queues of a connection hold.
//!
//! A hand-written single-producer, single-consumer queue instead of `tokio::sync::mpsc`,
//! because an idle consumer should cost next to nothing: tokio's channel allocates its first
//! block of 32 slots when created (about 6 KB for deliveries), so 1000 idle consumers held
//! 6 MB; this queue allocates only as deliveries arrive.
//!
//! The driver never waits to push: a consumer that is not read must not hold up the other
//! channels of its connection. Instead each queue has an *allowance* of items that cost
//! nothing (the consumer's prefetch count: the broker never sends more unacknowledged
//! deliveries than that, so they are bounded already), and every item beyond it is charged,
//! by its size, to the connection's [`Budget`]. The driver stops reading from the socket while
//! the budget is exceeded and resumes when the consumers have taken enough.
//!
//! The two ends usually run on different threads (the driver on a runtime worker, a consumer
//! in `#[tokio::main]`'s `block_on`), so the receiver takes everything queued within the
//! allowance at once, swapping the queue for its own empty one under one lock, rather than
//! taking the lock (and pulling its cache line from the driver's core) once per item.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// What an item costs against the budget, in bytes (an estimate of the memory it holds).
pub(crate) trait Weigh {
    fn weight(&self) -> usize;
}

/// A connection's budget, in bytes, for the queued items that exceed their queue's allowance.
#[derive(Debug)]
pub(crate) struct Budget {
    limit: usize,
    used: AtomicUsize,
    /// Set while the driver waits for `used` to fall to the resume mark.
    waiting: AtomicBool,
    driver: Mutex<Option<Waker>>,
}

impl Budget {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            used: AtomicUsize::new(0),
            waiting: AtomicBool::new(false),
            driver: Mutex::new(None),
        }
    }

    /// Bytes charged now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }

    /// The budget.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Whether more than the budget is charged.
    pub(crate) fn is_exceeded(&self) -> bool {
        self.used() > self.limit
    }

    /// Usage at or below which a stalled driver reads again: three quarters of the budget, so
    /// that reading resumes in strides rather than one delivery at a time.
    fn resume_mark(&self) -> usize {
        self.limit - self.limit / 4
    }

    /// Ready once usage is at or below the resume mark; otherwise registers the driver's
    /// waker, which the consumer that brings it there wakes.
    pub(crate) fn poll_resume(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.used() <= self.resume_mark() {
            return Poll::Ready(());
        }
        *lock(&self.driver) = Some(cx.waker().clone());
        self.waiting.store(true, Ordering::SeqCst);
        // A consumer may have taken items between the first check and `waiting`.
        if self.used() <= self.resume_mark() {
            self.waiting.store(false, Ordering::SeqCst);
            return Poll::Ready(());
        }
        Poll::Pending
    }

    fn charge(&self, bytes: usize) {
        self.used.fetch_add(bytes, Ordering::SeqCst);
    }

    fn release(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let after = self.used.fetch_sub(bytes, Ordering::SeqCst) - bytes;
        if self.waiting.load(Ordering::SeqCst)
            && after <= self.resume_mark()
            && let Some(waker) = lock(&self.driver).take()
        {
            self.waiting.store(false, Ordering::SeqCst);
            waker.wake();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing here panics while holding a lock, but a poisoned queue is still usable.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A queue of `T` with one sending and one receiving end. The first `allowance` items queued
/// at any time cost nothing; each one beyond is charged to `budget` until it is taken.
pub(crate) fn channel<T: Weigh>(allowance: usize, budget: Arc<Budget>) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            allowance,
            charged: 0,
            exempt: false,
            receiver_waker: None,
            senders: 1,
            receiver_gone: false,
        }),
        budget,
        purges: AtomicU64::new(0),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver {
            shared,
            taken: VecDeque::new(),
            taken_at: 0,
        },
    )
}

#[derive(Debug)]
struct Shared<T> {
    state: Mutex<State<T>>,
    budget: Arc<Budget>,
    /// How many times the sender purged the queue: items the receiver took before a purge
    /// are dropped as the queued ones were.
    purges: AtomicU64,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        lock(&self.state)
    }
}

#[derive(Debug)]
struct State<T> {
    /// Each item with what it was charged (0 within the allowance).
    items: VecDeque<(T, usize)>,
    allowance: usize,
    /// Bytes this queue has charged to the budget.
    charged: usize,
    /// Set when the queue no longer charges the budget (its consumer was cancelled for lagging).
    exempt: bool,
    receiver_waker: Option<Waker>,
    /// Sending handles alive; the stream ends when none is left.
    senders: usize,
    receiver_gone: bool,
}

impl<T> State<T> {
    /// Removes every item, returning them and the bytes to release from the budget.
    fn take_all(&mut self) -> (VecDeque<T>, usize) {
        let items = std::mem::take(&mut self.items)
            .into_iter()
            .map(|(item, _)| item)
            .collect();
        (items, std::mem::take(&mut self.charged))
    }
}

/// The driver's end.
#[derive(Debug)]
pub(crate) struct Sender<T> {
    shared: Arc<Shared<T>>,
}

/// What [`Sender::send_deferred`] did.
#[derive(Debug)]
pub(crate) struct Sent {
    /// The receiver's waker, to wake once the batch is queued.
    pub waker: Option<Waker>,
    /// Whether the item was charged to the budget (so the budget may now be exceeded).
    pub charged: bool,
}

/// The receiver is gone; the item comes back.
#[derive(Debug)]
pub(crate) struct Closed<T>(pub T);

impl<T: Weigh> Sender<T> {
    /// Queues `item` and wakes the receiver.
    #[cfg(test)]
    pub(crate) fn send(&self, item: T) -> Result<(), Closed<T>> {
        if let Some(waker) = self.send_deferred(item)?.waker {
            waker.wake();
        }
        Ok(())
    }

    /// Queues `item` (charging the budget if the queue is past its allowance), but hands back
    /// the receiver's waker (if it waits) instead of waking it, so that the caller can queue
    /// more first and wake once. The caller must wake what it gets back.
    pub(crate) fn send_deferred(&self, item: T) -> Result<Sent, Closed<T>> {
        let mut state = self.shared.lock();
        if state.receiver_gone {
            return Err(Closed(item));
        }
        let charge = if state.items.len() < state.allowance || state.exempt {
            0
        } else {
            item.weight()
        };
        if charge > 0 {
            state.charged += charge;
            self.shared.budget.charge(charge);
        }
        state.items.push_back((item, charge));
        Ok(Sent {
            waker: state.receiver_waker.take(),
            charged: charge > 0,
        })
    }
}

impl<T> Sender<T> {
    /// Bytes this queue holds beyond its allowance.
    pub(crate) fn charged(&self) -> usize {
        self.shared.lock().charged
    }

    /// Drops every queued item (deliveries that can no longer be acknowledged), including
    /// those the receiver has taken in a batch but not handed out yet.
    pub(crate) fn purge(&self) -> usize {
        let mut state = self.shared.lock();
        self.shared.purges.fetch_add(1, Ordering::AcqRel);
        let (items, charged) = state.take_all();
        drop(state);
        self.shared.budget.release(charged);
        items.len()
    }

    /// Stops charging the budget for this queue and releases what it charged; returns the
    /// bytes released. Its items stay queued for the receiver.
    pub(crate) fn exempt(&self) -> usize {
        let mut state = self.shared.lock();
        state.exempt = true;
        for (_, charge) in &mut state.items {
            *charge = 0;
        }
        let charged = std::mem::take(&mut state.charged);
        drop(state);
        self.shared.budget.release(charged);
        charged
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.senders -= 1;
        if state.senders > 0 {
            return;
        }
        let waker = state.receiver_waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The consumer stream's end.
#[derive(Debug)]
pub(crate) struct Receiver<T> {
    shared: Arc<Shared<T>>,
    /// Items taken from the queue in one batch, not handed out yet; none of them is charged.
    taken: VecDeque<(T, usize)>,
    /// `Shared::purges` when `taken` was filled.
    taken_at: u64,
}

impl<T> Receiver<T> {
    /// The next item; `None` once the sender is gone and the queue is empty.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        if !self.taken.is_empty() {
            if self.shared.purges.load(Ordering::Acquire) == self.taken_at {
                let (item, _) = self.taken.pop_front().expect("not empty");
                return Poll::Ready(Some(item));
            }
            // Purged since they were taken: they go the way of the queued ones.
            self.taken.clear();
        }
        let mut state = self.shared.lock();
        if state.charged == 0 && state.items.len() > 1 {
            // Nothing queued is charged to the budget: take it all, leaving the (empty)
            // storage of the previous batch for the sender to fill.
            std::mem::swap(&mut state.items, &mut self.taken);
            self.taken_at = self.shared.purges.load(Ordering::Acquire);
            drop(state);
            let (item, _) = self
                .taken
                .pop_front()
                .expect("more than one item was queued");
            return Poll::Ready(Some(item));
        }
        if let Some((item, charge)) = state.items.pop_front() {
            state.charged -= charge;
            drop(state);
            self.shared.budget.release(charge);
            return Poll::Ready(Some(item));
        }
        if state.senders == 0 {
            return Poll::Ready(None);
        }
        state.receiver_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Whether items taken in the last batch wait to be handed out (without a lock: the
    /// shared queue may hold more).
    pub(crate) fn has_taken(&self) -> bool {
        !self.taken.is_empty()
    }

    /// Items waiting to be handed out.
    pub(crate) fn len(&self) -> usize {
        self.taken.len() + self.shared.lock().items.len()
    }

    /// Stops accepting items and takes those not handed out yet.
    pub(crate) fn close(&mut self) -> VecDeque<T> {
        let mut state = self.shared.lock();
        state.receiver_gone = true;
        let (queued, charged) = state.take_all();
        drop(state);
        self.shared.budget.release(charged);
        if self.shared.purges.load(Ordering::Acquire) != self.taken_at {
            self.taken.clear();
        }
        let mut items: VecDeque<T> = std::mem::take(&mut self.taken)
            .into_iter()
            .map(|(item, _)| item)
            .collect();
        items.extend(queued);
        items
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    impl Weigh for u32 {
        fn weight(&self) -> usize {
            *self as usize
        }
    }

    #[test]
    fn in_order_and_closing_both_ways() {
        let mut cx = Context::from_waker(Waker::noop());
        let budget = Arc::new(Budget::new(1000));
        let (sender, mut receiver) = channel(2, budget.clone());
        sender.send(1).unwrap();
        sender.send(2).unwrap();
        assert_eq!(receiver.poll_recv(&mut cx), Poll::Ready(Some(1)));
        drop(sender);
        assert_eq!(receiver.poll_recv(&mut cx), Poll::Ready(Some(2)));
        assert_eq!(receiver.poll_recv(&mut cx), Poll::Ready(None));

        let (sender, mut receiver) = channel(4, budget);
        sender.send(7).unwrap();
        assert_eq!(receiver.close(), VecDeque::from([7]));
        assert!(matches!(sender.send(8), Err(Closed(8))));
    }

    #[test]
    fn items_past_the_allowance_are_charged_until_taken() {
        let mut cx = Context::from_waker(Waker::noop());
        let budget = Arc::new(Budget::new(100));
        let (sender, mut receiver) = channel::<u32>(1, budget.clone());
        sender.send(40).unwrap();
        assert_eq!(budget.used(), 0, "the first item is within the allowance");
        sender.send(50).unwrap();
        sender.send(60).unwrap();
        assert_eq!(budget.used(), 110);
        assert!(budget.is_exceeded());
        assert_eq!(sender.charged(), 110);
        // Taking the free item releases nothing; the charged ones release their own charge.
        assert_eq!(receiver.poll_recv(&mut cx), Poll::Ready(Some(40)));
        assert_eq!(budget.used(), 110);
        assert_eq!(receiver.poll_recv(&mut cx), Poll::Ready(Some(50)));
        assert_eq!(budget.used(), 60);
        drop(receiver);
        assert_eq!(budget.used(), 0, "a dropped stream releases what it held");
    }

    #[test]
    fn the_driver_is_woken_when_usage_falls_to_the_resume_mark() {
        use std::sync::atomic::AtomicUsize;
        use std::task::Wake;
        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let woken = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(woken.clone());
        let mut driver = Context::from_waker(&waker);
        let mut cx = Context::from_waker(Waker::noop());

        let budget = Arc::new(Budget::new(100));
        let (sender, mut receiver) = channel::<u32>(0, budget.clone());
        for _ in 0..4 {
            sender.send(30).unwrap();
        }
        assert!(budget.poll_resume(&mut driver).is_pending());
        assert!(receiver.poll_recv(&mut cx).is_ready());
        assert_eq!(
            woken.0.load(Ordering::SeqCst),
            0,
            "90 is above the mark of 75"
        );
        assert!(receiver.poll_recv(&mut cx).is_ready());
        assert_eq!(
            woken.0.load(Ordering::SeqCst),
            1,
            "60 is at or below the mark"
        );
        assert!(budget.poll_resume(&mut driver).is_ready());
    }

    #[test]
    fn purge_and_exempt_release_the_budget() {
        let mut cx = Context::from_waker(Waker::noop());
        let budget = Arc::new(Budget::new(100));
        let (sender, mut receiver) = channel::<u32>(0, budget.clone());
        sender.send(10).unwrap();
        sender.send(20).unwrap();
        assert_eq!(sender.purge(), 2);
        assert_eq!(budget.used(), 0);
        assert!(receiver.poll_recv(&mut cx).is_pending());

        sender.send(30).unwrap();
        assert_eq!(sender.exempt(), 30);
        sender.send(40).unwrap();
        assert_eq!(budget.used(), 0, "an exempt queue charges nothing");
        assert_eq!(receiver.poll_recv(&mut cx), Poll::Ready(Some(30)));
        assert_eq!(receiver.poll_recv(&mut cx), Poll::Ready(Some(40)));
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn the_receiver_takes_what_is_within_the_allowance_in_one_batch() {
        let mut cx = Context::from_waker(Waker::noop());
        let budget = Arc::new(Budget::new(1000));
        let (sender, mut receiver) = channel::<u32>(4, budget.clone());
        for item in 1..=3 {
            sender.send(item).unwrap();
        }
        assert_eq!(receiver.poll_recv(&mut cx), Poll::Ready(Some(1)));
        assert!(sender.shared.lock().items.is_empty(), "all taken at once");
        assert_eq!(receiver.len(), 2);
        sender.send(4).unwrap();
        assert_eq!(receiver.len(), 3);
        for item in 2..=4 {
            assert_eq!(receiver.poll_recv(&mut cx), Poll::Ready(Some(item)));
        }
        // Past the allowance, charged items are taken one at a time, releasing their charge.
        for item in 5..=10 {
            sender.send(item * 10).unwrap();
        }
        assert_eq!(budget.used(), 90 + 100);
        assert_eq!(receiver.poll_recv(&mut cx), Poll::Ready(Some(50)));
        assert_eq!(budget.used(), 190, "the first items were free");
        for item in 6..=10 {
            assert_eq!(receiver.poll_recv(&mut cx), Poll::Ready(Some(item * 10)));
        }
        assert_eq!(budget.used(), 0);
        assert!(receiver.poll_recv(&mut cx).is_pending());
    }

    #[test]
    fn a_purge_drops_what_the_receiver_took_but_did_not_hand_out() {
        let mut cx = Context::from_waker(Waker::noop());
        let (sender, mut receiver) = channel::<u32>(8, Arc::new(Budget::new(100)));
        for item in 1..=3 {
            sender.send(item).unwrap();
        }
        assert_eq!(receiver.poll_recv(&mut cx), Poll::Ready(Some(1)));
        sender.purge();
        assert!(receiver.poll_recv(&mut cx).is_pending());
        sender.send(4).unwrap();
        sender.send(5).unwrap();
        assert_eq!(receiver.poll_recv(&mut cx), Poll::Ready(Some(4)));
        sender.send(6).unwrap();
        assert_eq!(
            receiver.close(),
            VecDeque::from([5, 6]),
            "taken first, then queued"
        );
    }

    #[test]
    fn nothing_is_allocated_until_an_item_arrives() {
        let (sender, _receiver) = channel::<u32>(256, Arc::new(Budget::new(1)));
        assert_eq!(sender.shared.lock().items.capacity(), 0);
    }
}
