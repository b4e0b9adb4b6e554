//! Acknowledgements and confirmed publishes that the application's own thread writes to the
//! socket.
//!
//! In `#[tokio::main]` the application's loop runs in `block_on`, on a thread that is not one
//! of the runtime's workers, and every hand-over to the connection's driver crosses threads:
//! the driver sleeps in `epoll_wait` on a worker once it has caught up, so the first
//! acknowledgement or publish of every batch wakes it (an `eventfd` write, a context switch,
//! often a second worker woken to look for work) only for it to write a few bytes. That cost,
//! per batch, kept a loop in `block_on` at 80-90 % of the same loop in a spawned task, at twice
//! its CPU per message.
//!
//! Instead, while the driver is idle (it ended its last turn with nothing left to write and
//! nothing queued for it, on an open connection), such a thread encodes its frames here and
//! writes them to the socket itself, many in one `write`. Frames from the two writers never
//! interleave: a caller writes only while the driver is idle, under this lock, and the driver
//! takes the lock to start every turn, taking what callers held ahead of anything the turn
//! writes, and the publishes they wrote into its confirm ledgers before it reads any
//! confirmation. What the socket does not take at once is left for the driver, which is then
//! woken. With TLS there is no shared socket (the rustls session is the driver's alone), and
//! callers always go through the driver.
//!
//! Frames are *held* here rather than written one `write` each, but never for long: only
//! while the driver's sweep is armed, a timer that makes the driver take what is held at most
//! [`SWEEP`] later whatever the application does. The driver arms it when it finds that
//! callers wrote since its last turn, and disarms it after a sweep interval without any.
//! While it is disarmed (the first frames after a quiet spell), callers write at once. They
//! also write what they hold when they would wait: a consumer stream that runs dry, a
//! confirmation not there yet; when they acknowledge the last delivery they had in hand;
//! and once [`HOLD_MAX`] frames are held.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWrite;
use tokio::net::tcp::OwnedWriteHalf;
use tracing::debug;

use super::command::Publish;
use super::stats::Counters;

/// Held frames are written once this many wait (acknowledgements, or publishes of a few
/// hundred bytes: one `write` of a few kilobytes at most).
pub(crate) const HOLD_MAX: usize = 32;
/// The longest the driver leaves held frames unwritten: its sweep's interval.
pub(crate) const SWEEP: Duration = Duration::from_millis(10);

thread_local! {
    /// Whether the last delivery this thread took from a consumer stream left more in the
    /// stream's hands, ready to be taken without waiting: the thread is then in the middle
    /// of a batch and will be back for the next delivery.
    static MORE_IN_HAND: Cell<bool> = const { Cell::new(false) };
}

/// Records, for this thread, whether the consumer stream it just took a delivery from has more
/// ready (`false` when it ran dry).
pub(crate) fn note_more_in_hand(more: bool) {
    MORE_IN_HAND.set(more);
}

/// Whether this thread is in the middle of a batch of deliveries (see [`note_more_in_hand`]).
pub(crate) fn more_in_hand() -> bool {
    MORE_IN_HAND.get()
}

/// Whether the caller runs outside the runtime's tasks (`block_on`, or a thread of its own),
/// where a hand-over to the driver costs a thread wake-up: only there do frames take the
/// direct way. (A task hands over to the driver cheaply, and its worker may be the one to run
/// the driver next.)
pub(crate) fn outside_tasks() -> bool {
    tokio::task::try_id().is_none()
}

/// The socket's write side, shared by the driver and the threads that write directly.
#[derive(Debug, Default)]
pub(crate) struct DirectWrites {
    state: Mutex<State>,
    /// Whether `held` has bytes: lets the callers' flushes skip the lock when nothing is held.
    has_held: AtomicBool,
    /// Whether a socket is attached: lets callers on a connection that never shares its
    /// socket (TLS, a current-thread runtime) skip the lock on every acknowledgement.
    attached: AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    /// The write half of the connection's TCP socket; `None` with TLS, and between sockets.
    socket: Option<OwnedWriteHalf>,
    /// Counts the sockets attached, so that an old socket's end does not detach a new one.
    generation: u64,
    /// Whether the driver ended its last turn with nothing to write and nothing queued, on an
    /// open connection, and has not started another. Only then may a caller write.
    driver_idle: bool,
    /// Whether the driver's sweep is armed: it will take what is held within [`SWEEP`].
    /// Callers hold frames only then.
    sweep_armed: bool,
    /// Whether callers wrote or held frames since the driver's last turn began.
    used: bool,
    /// Wakes the driver when bytes are left for it.
    driver: Option<Waker>,
    /// Encoded frames not written yet, in order.
    held: BytesMut,
    /// How many acknowledgements and publishes `held` has.
    held_count: usize,
    /// Publishes in confirm mode written or held here, in order, for the driver to enter in
    /// its channels' ledgers when its next turn begins (their frames and bodies are in
    /// `held` or already on the wire; theirs are empty here).
    publishes: Vec<Publish>,
}

/// What the driver learns when its turn begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TurnStart {
    /// Callers wrote or held frames since the last turn: the sweep must be armed (it now is,
    /// as far as the callers know).
    pub used: bool,
}

impl DirectWrites {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing here panics while holding the lock.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    // ===== the driver's side =====

    /// Shares a new socket's write half (the driver, when it installs the socket). Returns
    /// the socket's generation, for [`detach`](Self::detach).
    pub(crate) fn attach(&self, socket: OwnedWriteHalf) -> u64 {
        let mut state = self.lock();
        state.generation += 1;
        state.socket = Some(socket);
        state.driver_idle = false;
        self.attached.store(true, Ordering::Release);
        state.generation
    }

    /// Drops the socket of `generation` (the connection is gone), with the bytes held for it:
    /// acknowledgements of deliveries from a lost connection are not sent, as the driver does
    /// not send those queued for it. Publishes are not here when the driver loses a socket (it
    /// takes them at the start of the turn in which it finds the loss); if the driver itself
    /// is gone (its runtime shut down), dropping them ends their confirmations with the
    /// connection's error, as dropping its queue does for those queued.
    pub(crate) fn detach(&self, generation: u64) {
        let mut state = self.lock();
        if state.generation != generation {
            return;
        }
        if state.held_count > 0 {
            debug!(
                frames = state.held_count,
                "dropping frames held for a connection that is gone"
            );
        }
        state.socket = None;
        self.attached.store(false, Ordering::Release);
        state.driver_idle = false;
        state.clear_held();
        state.publishes.clear();
        self.has_held.store(false, Ordering::Release);
    }

    /// Starts a turn of the driver: callers stop writing, and what they held is appended to
    /// `out`, to go out before anything the turn writes. The publishes they wrote or held are
    /// swapped into `publishes` (empty on entry), to be entered in the ledgers, in order,
    /// before anything else.
    pub(crate) fn begin_turn(&self, out: &mut BytesMut, publishes: &mut Vec<Publish>) -> TurnStart {
        let mut state = self.lock();
        state.driver_idle = false;
        if !state.publishes.is_empty() {
            std::mem::swap(&mut state.publishes, publishes);
        }
        if !state.held.is_empty() {
            out.extend_from_slice(&state.held);
            state.clear_held();
            self.has_held.store(false, Ordering::Release);
        }
        let used = std::mem::take(&mut state.used);
        state.sweep_armed |= used;
        TurnStart { used }
    }

    /// The driver's sweep went a whole interval without callers writing: they write at once
    /// from now on, until the driver arms it again.
    pub(crate) fn disarm_sweep(&self) {
        self.lock().sweep_armed = false;
    }

    /// Ends a turn of the driver that left nothing to write and nothing queued, on an open
    /// connection: callers may write until the next turn begins.
    pub(crate) fn end_turn(&self, waker: &Waker) {
        let mut state = self.lock();
        if state.socket.is_none() {
            return;
        }
        state.driver_idle = true;
        match &mut state.driver {
            Some(driver) => driver.clone_from(waker),
            None => state.driver = Some(waker.clone()),
        }
    }

    /// Writes through the shared write half (the driver's transport).
    pub(crate) fn poll_write(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match &mut self.lock().socket {
            Some(socket) => std::pin::Pin::new(socket).poll_write(cx, buf),
            None => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }

    /// Writes a vectored buffer through the shared write half (the driver's transport).
    pub(crate) fn poll_write_vectored(
        &self,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match &mut self.lock().socket {
            Some(socket) => std::pin::Pin::new(socket).poll_write_vectored(cx, bufs),
            None => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }

    /// Shuts the shared write half down (the driver, at the end of a close).
    pub(crate) fn poll_shutdown(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.lock().socket {
            Some(socket) => std::pin::Pin::new(socket).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    // ===== the writing thread's side =====

    /// Whether a socket is shared at all (a hint, without the lock: whether a caller may
    /// write is decided under it).
    pub(crate) fn is_attached(&self) -> bool {
        self.attached.load(Ordering::Acquire)
    }

    /// Writes or holds an acknowledgement whose frame `encode` appends, if the driver is idle:
    /// returns `false`, with nothing encoded, if it is not (the caller then goes through the
    /// driver). `encode` runs under the lock and returns whether it appended a frame (it may
    /// decide, with the driver known idle on the current socket, that there is nothing to
    /// send).
    ///
    /// What is held is written at once when `last` (the caller has no more deliveries in hand).
    pub(crate) fn acknowledge(
        &self,
        counters: &Counters,
        last: bool,
        encode: impl FnOnce(&mut BytesMut) -> bool,
    ) -> bool {
        let mut state = self.lock();
        if !state.driver_idle {
            return false;
        }
        if encode(&mut state.held) {
            self.added(&mut state, counters, last);
        }
        true
    }

    /// Writes or holds a publish in confirm mode whose frames `encode` appends, if the driver
    /// is idle; gives it back if it is not, or if `encode` finds it cannot go this way (it
    /// returns `false`, having appended nothing). The driver enters it in the channel's ledger
    /// when its next turn begins, before it reads any confirmation.
    pub(crate) fn publish(
        &self,
        counters: &Counters,
        publish: Publish,
        encode: impl FnOnce(&mut BytesMut) -> bool,
    ) -> Option<Publish> {
        let mut state = self.lock();
        if !state.driver_idle || !encode(&mut state.held) {
            return Some(publish);
        }
        state.publishes.push(publish);
        self.added(&mut state, counters, false);
        None
    }

    /// Writes what is held, if anything is and the driver is idle: the caller is about to
    /// wait (a consumer stream that ran dry or was dropped, a confirmation not there yet).
    pub(crate) fn flush(&self, counters: &Counters) {
        if !self.has_held.load(Ordering::Acquire) {
            return;
        }
        let mut state = self.lock();
        if state.driver_idle && !state.held.is_empty() {
            self.write_held(&mut state, counters);
        }
    }

    /// Accounts for a frame just appended: holds it while the sweep is armed, unless `last` or
    /// [`HOLD_MAX`] are held; writes what is held otherwise.
    fn added(&self, state: &mut State, counters: &Counters, last: bool) {
        counters.direct_writes.incr();
        state.used = true;
        state.held_count += 1;
        if last || !state.sweep_armed || state.held_count >= HOLD_MAX {
            self.write_held(state, counters);
        } else {
            self.has_held.store(true, Ordering::Release);
        }
    }

    /// Writes the held bytes without blocking; what the socket does not take is left for the
    /// driver, which is woken (it takes them first when its turn begins).
    fn write_held(&self, state: &mut State, counters: &Counters) {
        if let Some(socket) = state.socket.as_ref() {
            while !state.held.is_empty() {
                match socket.try_write(&state.held) {
                    Ok(0) => break,
                    Ok(written) => {
                        counters.bytes_sent.add(written as u64);
                        state.held.advance(written);
                    }
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(error) => {
                        // The driver's next read or write finds the failure and reports it;
                        // what was held belonged to the failed connection.
                        debug!(%error, "writing held frames failed");
                        state.held.clear();
                    }
                }
            }
        }
        if state.held.is_empty() {
            state.clear_held();
            self.has_held.store(false, Ordering::Release);
            return;
        }
        // The socket is full: the driver takes the rest, with its own wait for room.
        state.driver_idle = false;
        self.has_held.store(true, Ordering::Release);
        if let Some(driver) = state.driver.as_ref() {
            driver.wake_by_ref();
        }
    }
}

impl State {
    fn clear_held(&mut self) {
        self.held.clear();
        self.held_count = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// Shared writes over a loopback socket; returns them with the reading end.
    async fn shared() -> (DirectWrites, TcpStream, u64) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let (server, _) = accepted.unwrap();
        // The read half is dropped: the socket stays open until the write half goes.
        let (_, write) = client.unwrap().into_split();
        let writes = DirectWrites::default();
        let generation = writes.attach(write);
        (writes, server, generation)
    }

    fn frame(byte: u8) -> impl FnOnce(&mut BytesMut) -> bool {
        move |held| {
            held.extend_from_slice(&[byte; 4]);
            true
        }
    }

    async fn read_now(server: &mut TcpStream, len: usize) -> Vec<u8> {
        let mut bytes = vec![0; len];
        tokio::time::timeout(Duration::from_secs(5), server.read_exact(&mut bytes))
            .await
            .expect("the bytes arrive")
            .unwrap();
        bytes
    }

    #[tokio::test]
    async fn callers_write_only_while_the_driver_is_idle() {
        let (writes, mut server, _) = shared().await;
        let counters = Counters::default();
        // The driver has not ended a turn: callers go through it.
        assert!(!writes.acknowledge(&counters, true, frame(1)));
        writes.end_turn(Waker::noop());
        // Idle, sweep not armed: written at once even when not the last.
        assert!(writes.acknowledge(&counters, false, frame(2)));
        assert_eq!(read_now(&mut server, 4).await, [2; 4]);
        assert_eq!(counters.bytes_sent.get(), 4);
        // A turn begins: callers stop, and the driver learns they wrote.
        let mut out = BytesMut::new();
        let mut publishes = Vec::new();
        assert_eq!(
            writes.begin_turn(&mut out, &mut publishes),
            TurnStart { used: true }
        );
        assert!(out.is_empty());
        assert!(!writes.acknowledge(&counters, true, frame(3)));
    }

    #[tokio::test]
    async fn while_the_sweep_is_armed_frames_are_held_until_the_last_or_the_driver() {
        let (writes, mut server, _) = shared().await;
        let counters = Counters::default();
        writes.end_turn(Waker::noop());
        assert!(writes.acknowledge(&counters, false, frame(1)));
        let mut out = BytesMut::new();
        let mut publishes = Vec::new();
        writes.begin_turn(&mut out, &mut publishes); // arms the sweep
        writes.end_turn(Waker::noop());
        assert!(writes.acknowledge(&counters, false, frame(2)));
        assert!(writes.acknowledge(&counters, false, frame(3)));
        // The last delivery in hand: everything held goes, in order.
        assert!(writes.acknowledge(&counters, true, frame(4)));
        assert_eq!(
            read_now(&mut server, 16).await,
            [[1; 4], [2; 4], [3; 4], [4; 4]].concat()
        );
        // Held, then taken by the driver's next turn, ahead of what it writes.
        assert!(writes.acknowledge(&counters, false, frame(5)));
        assert_eq!(
            writes.begin_turn(&mut out, &mut publishes),
            TurnStart { used: true }
        );
        assert_eq!(&out[..], [5; 4]);
        // A flush when the driver is not idle writes nothing; when it is, what is held.
        writes.end_turn(Waker::noop());
        for byte in 6..6 + HOLD_MAX as u8 - 1 {
            assert!(writes.acknowledge(&counters, false, frame(byte)));
        }
        writes.flush(&counters);
        let expected: Vec<u8> = (6..6 + HOLD_MAX as u8 - 1).flat_map(|b| [b; 4]).collect();
        assert_eq!(read_now(&mut server, expected.len()).await, expected);
        // HOLD_MAX held are written without a flush.
        for byte in 0..HOLD_MAX as u8 {
            assert!(writes.acknowledge(&counters, false, frame(byte)));
        }
        let expected: Vec<u8> = (0..HOLD_MAX as u8).flat_map(|b| [b; 4]).collect();
        assert_eq!(read_now(&mut server, expected.len()).await, expected);
    }

    #[tokio::test]
    async fn a_disarmed_sweep_and_a_detached_socket_stop_the_holding() {
        let (writes, mut server, generation) = shared().await;
        let counters = Counters::default();
        writes.end_turn(Waker::noop());
        assert!(writes.acknowledge(&counters, false, frame(1)));
        let (mut out, mut publishes) = (BytesMut::new(), Vec::new());
        writes.begin_turn(&mut out, &mut publishes);
        writes.disarm_sweep();
        writes.end_turn(Waker::noop());
        // Disarmed: written at once.
        assert!(writes.acknowledge(&counters, false, frame(2)));
        assert_eq!(read_now(&mut server, 8).await, [[1; 4], [2; 4]].concat());
        writes.begin_turn(&mut out, &mut publishes);
        writes.end_turn(Waker::noop());
        assert!(writes.acknowledge(&counters, false, frame(3)));
        // The connection is gone: what was held for it is dropped, and callers go through
        // the driver until a new socket is attached and the driver is idle again.
        writes.detach(generation + 1);
        assert!(
            writes.is_attached(),
            "another socket's end detaches nothing"
        );
        writes.detach(generation);
        assert!(!writes.is_attached());
        assert!(!writes.acknowledge(&counters, true, frame(4)));
        writes.begin_turn(&mut out, &mut publishes);
        assert!(out.is_empty());
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), server.read_to_end(&mut rest))
            .await
            .expect("the socket closes")
            .unwrap();
        assert!(rest.is_empty(), "nothing held was written: {rest:?}");
    }
}
