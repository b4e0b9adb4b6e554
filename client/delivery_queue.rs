//! The bounded queue between the driver and one consumer stream.
//!
//! A hand-written single-producer, single-consumer queue instead of `tokio::sync::mpsc`,
//! because an idle consumer should cost next to nothing: tokio's channel allocates its first
//! block of 32 slots when created (about 6 KB for deliveries), so 1000 idle consumers held
//! 6 MB; this queue allocates only as deliveries arrive, up to its capacity.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// A bounded queue of `T` with one sending and one receiving end.
pub(crate) fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            capacity: capacity.max(1),
            receiver_waker: None,
            sender_waker: None,
            senders: 1,
            receiver_gone: false,
        }),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

#[derive(Debug)]
struct Shared<T> {
    state: Mutex<State<T>>,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Nothing here panics while holding the lock, but a poisoned queue is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug)]
struct State<T> {
    items: VecDeque<T>,
    capacity: usize,
    receiver_waker: Option<Waker>,
    sender_waker: Option<Waker>,
    /// Sending handles alive; the stream ends when none is left.
    senders: usize,
    receiver_gone: bool,
}

/// Why an item could not be queued; the item comes back.
#[derive(Debug)]
pub(crate) enum TrySendError<T> {
    /// The queue holds `capacity` items.
    Full(T),
    /// The receiver is gone.
    Closed(T),
}

/// The driver's end.
#[derive(Debug)]
pub(crate) struct Sender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Sender<T> {
    /// Queues `item` if there is room and a receiver, and wakes the receiver.
    pub(crate) fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        if let Some(waker) = self.try_send_deferred(item)? {
            waker.wake();
        }
        Ok(())
    }

    /// Queues `item` like [`Sender::try_send`], but hands back the receiver's waker (if it
    /// waits) instead of waking it, so that the caller can queue more first and wake once.
    /// The caller must wake what it gets back.
    pub(crate) fn try_send_deferred(&self, item: T) -> Result<Option<Waker>, TrySendError<T>> {
        let mut state = self.shared.lock();
        if state.receiver_gone {
            return Err(TrySendError::Closed(item));
        }
        if state.items.len() >= state.capacity {
            return Err(TrySendError::Full(item));
        }
        state.items.push_back(item);
        Ok(state.receiver_waker.take())
    }

    /// Ready when an item would be accepted (`Ok`) or never will be (`Err`: the receiver is
    /// gone); otherwise registers to be woken when the receiver takes one.
    pub(crate) fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<Result<(), ()>> {
        let mut state = self.shared.lock();
        if state.receiver_gone {
            return Poll::Ready(Err(()));
        }
        if state.items.len() < state.capacity {
            return Poll::Ready(Ok(()));
        }
        state.sender_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// A second handle to the sending end (for the driver's stalled delivery).
    pub(crate) fn share(&self) -> Self {
        self.shared.lock().senders += 1;
        Self {
            shared: self.shared.clone(),
        }
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
}

impl<T> Receiver<T> {
    /// The next item; `None` once the sender is gone and the queue is empty.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut state = self.shared.lock();
        if let Some(item) = state.items.pop_front() {
            let waker = state.sender_waker.take();
            drop(state);
            if let Some(waker) = waker {
                waker.wake();
            }
            return Poll::Ready(Some(item));
        }
        if state.senders == 0 {
            return Poll::Ready(None);
        }
        state.receiver_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Stops accepting items and takes those queued.
    pub(crate) fn close(&mut self) -> VecDeque<T> {
        let mut state = self.shared.lock();
        state.receiver_gone = true;
        let waker = state.sender_waker.take();
        let items = std::mem::take(&mut state.items);
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
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

    #[test]
    fn bounded_in_order_and_closing_both_ways() {
        let mut cx = Context::from_waker(Waker::noop());
        let (sender, mut receiver) = channel(2);
        sender.try_send(1).unwrap();
        sender.try_send(2).unwrap();
        assert!(matches!(sender.try_send(3), Err(TrySendError::Full(3))));
        assert!(sender.poll_ready(&mut cx).is_pending());
        assert_eq!(receiver.poll_recv(&mut cx), Poll::Ready(Some(1)));
        assert_eq!(sender.poll_ready(&mut cx), Poll::Ready(Ok(())));
        drop(sender);
        assert_eq!(receiver.poll_recv(&mut cx), Poll::Ready(Some(2)));
        assert_eq!(receiver.poll_recv(&mut cx), Poll::Ready(None));

        let (sender, mut receiver) = channel(4);
        sender.try_send("a").unwrap();
        assert_eq!(receiver.close(), VecDeque::from(["a"]));
        assert!(matches!(
            sender.try_send("b"),
            Err(TrySendError::Closed("b"))
        ));
        assert_eq!(sender.poll_ready(&mut cx), Poll::Ready(Err(())));
    }

    #[test]
    fn a_shared_sender_keeps_the_stream_open() {
        let mut cx = Context::from_waker(Waker::noop());
        let (sender, mut receiver) = channel::<u8>(1);
        let stalled = sender.share();
        drop(sender);
        assert!(receiver.poll_recv(&mut cx).is_pending());
        drop(stalled);
        assert_eq!(receiver.poll_recv(&mut cx), Poll::Ready(None));
    }

    #[test]
    fn a_deferred_send_hands_back_the_waiting_receivers_waker() {
        let mut cx = Context::from_waker(Waker::noop());
        let (sender, mut receiver) = channel(4);
        // Nobody waits yet: nothing to wake.
        assert!(sender.try_send_deferred(1).unwrap().is_none());
        assert_eq!(receiver.poll_recv(&mut cx), Poll::Ready(Some(1)));
        assert!(receiver.poll_recv(&mut cx).is_pending());
        // The receiver waits: the first send hands its waker back, once.
        assert!(sender.try_send_deferred(2).unwrap().is_some());
        assert!(sender.try_send_deferred(3).unwrap().is_none());
        assert_eq!(receiver.poll_recv(&mut cx), Poll::Ready(Some(2)));
        assert_eq!(receiver.poll_recv(&mut cx), Poll::Ready(Some(3)));
    }

    #[test]
    fn nothing_is_allocated_until_an_item_arrives() {
        let (sender, _receiver) = channel::<u64>(256);
        assert_eq!(sender.shared.lock().items.capacity(), 0);
    }
}
