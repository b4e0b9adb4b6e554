//! The timer that bounds how long threads outside the runtime hold frames for the socket.

use std::pin::Pin;
use std::task::Context;

use tokio::time::{Instant, Sleep};

use crate::shared::direct_writes::SWEEP;

/// The timer that bounds how long frames that threads outside the runtime hold for the
/// socket wait (`shared/direct_writes.rs`): while it is armed, they may hold frames, and each
/// expiry starts a turn, which takes them. It re-arms itself while they keep writing, and
/// expires for good after an interval without.
#[derive(Debug, Default)]
pub(super) struct Sweep {
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether threads wrote since the timer was last set.
    used: bool,
}

impl Sweep {
    /// Threads wrote: keep sweeping.
    pub(super) fn arm(&mut self) {
        self.used = true;
        if self.timer.is_none() {
            self.timer = Some(Box::pin(tokio::time::sleep(SWEEP)));
        }
    }

    /// Polls the timer; on expiry, sets it again if threads wrote meanwhile. Returns `true`
    /// when it expired after an interval without any: the threads must stop holding.
    pub(super) fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(timer) = self.timer.as_mut() else {
            return false;
        };
        if timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        if std::mem::take(&mut self.used) {
            timer.as_mut().reset(Instant::now() + SWEEP);
            // Registers the waker for the new deadline.
            let _ = timer.as_mut().poll(cx);
            return false;
        }
        self.timer = None;
        true
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn it_sweeps_while_threads_write_and_stops_after_an_interval_without() {
        let mut cx = Context::from_waker(Waker::noop());
        let mut sweep = Sweep::default();
        assert!(!sweep.poll_expired(&mut cx), "not armed: nothing to expire");
        sweep.arm();
        assert!(!sweep.poll_expired(&mut cx));
        tokio::time::advance(SWEEP).await;
        // Threads wrote during the interval (`arm` said so): it sweeps and goes on.
        assert!(!sweep.poll_expired(&mut cx));
        assert!(sweep.timer.is_some());
        tokio::time::advance(SWEEP / 2).await;
        assert!(!sweep.poll_expired(&mut cx), "not due yet");
        tokio::time::advance(SWEEP / 2).await;
        // An interval without: the threads must stop holding.
        assert!(sweep.poll_expired(&mut cx));
        assert!(sweep.timer.is_none());
        assert!(!sweep.poll_expired(&mut cx));
    }
}
