//! [`Relay`]: a TCP proxy between a client and a broker that fails on command.

use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use warren::ConnectionOptions;

/// Bytes a link holds per direction: all the buffering a link does (its memory is bounded
/// whatever the load; TCP back-pressure does the rest).
pub const LINK_BUFFER: usize = 16 * 1024;

/// How long a link waits for the upstream's TCP connect before it closes the client's socket.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the relay does with bytes and connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Accept connections and forward bytes both ways.
    Forward,
    /// Forward nothing and accept nothing; close nothing either.
    Blackhole,
    /// New connections are refused (the listener is closed); links keep forwarding.
    Refuse,
}

/// What every task of the relay watches: the mode, and how many cuts happened (a link ends
/// when the count moves past the one it started with).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Control {
    mode: Mode,
    cuts: u64,
}

/// What the accept task and the links share with the [`Relay`] handle.
#[derive(Debug)]
struct Shared {
    upstream: Mutex<SocketAddr>,
    live_links: AtomicUsize,
    accepted: AtomicUsize,
}

/// A TCP proxy on `127.0.0.1` (an ephemeral port) in front of a broker, with controls to fail
/// the way networks and peers fail.
///
/// Each accepted connection gets its own connection to the upstream (the address at accept
/// time) and a *link* that copies bytes both ways through one [`LINK_BUFFER`] per direction,
/// so that a relay under load holds a bounded amount of memory per link. A FIN from either side
/// is passed on as a FIN (half-close), an error ends the link.
///
/// Controls (they act on every link at once and on the listener):
/// - [`Relay::cut`]: drop every current link, both directions (what a dropped connection looks
///   like to both ends); new connections are accepted as before.
/// - [`Relay::blackhole`]: stop moving bytes and stop accepting, while every socket stays open
///   (no FIN, no RST): a peer that went silent. Connections made meanwhile wait in the kernel's
///   backlog, complete as TCP connections, and get no AMQP byte.
/// - [`Relay::refuse`]: close the listener, so that new connections are refused
///   (`ECONNREFUSED`); links keep forwarding (combine with `cut` for a dead node).
/// - [`Relay::restore`]: forward and accept again, on the same port (the bytes held during a
///   blackhole flow on, connections from the backlog are linked).
/// - [`Relay::set_upstream`]: new links go to another address; current links stay where they
///   are until cut.
///
/// Dropping the relay closes the listener and every link.
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    shared: Arc<Shared>,
    control: watch::Sender<Control>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl Relay {
    /// Starts a relay to `upstream` on an ephemeral port of 127.0.0.1.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the relay on 127.0.0.1:0");
        let addr = listener.local_addr().expect("the relay's address");
        let shared = Arc::new(Shared {
            upstream: Mutex::new(upstream),
            live_links: AtomicUsize::new(0),
            accepted: AtomicUsize::new(0),
        });
        let control = watch::Sender::new(Control {
            mode: Mode::Forward,
            cuts: 0,
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone(), control.subscribe()));
        Self {
            addr,
            shared,
            control,
            accept: Mutex::new(Some(accept)),
        }
    }

    /// Starts a relay to `127.0.0.1:port`.
    pub async fn to_port(port: u16) -> Self {
        Self::start(SocketAddr::from(([127, 0, 0, 1], port))).await
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/%2f` through the relay.
    pub fn uri(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port())
    }

    /// `options` pointed at the relay (host and port replaced).
    pub fn options(&self, options: ConnectionOptions) -> ConnectionOptions {
        options.host("127.0.0.1").port(self.port())
    }

    /// Where new links connect to.
    pub fn upstream(&self) -> SocketAddr {
        *lock(&self.shared.upstream)
    }

    /// Points new links at `upstream`; links already made stay on their address.
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *lock(&self.shared.upstream) = upstream;
    }

    /// Links currently open (accepted and connected upstream, not yet ended).
    pub fn live_links(&self) -> usize {
        self.shared.live_links.load(Ordering::SeqCst)
    }

    /// Connections accepted since the start.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Closes every current link, both sockets of each at once; new connections are accepted
    /// (and linked, unless the relay black-holes or refuses). The links' tasks close their
    /// sockets as soon as they run: [`Relay::live_links`] drops to 0 within moments.
    pub fn cut(&self) {
        self.control.send_modify(|control| control.cuts += 1);
    }

    /// Stops forwarding bytes both ways and stops accepting connections; every socket stays
    /// open (no FIN, no RST), as when a peer or the network goes silent. [`Relay::restore`]
    /// resumes.
    pub fn blackhole(&self) {
        self.control
            .send_modify(|control| control.mode = Mode::Blackhole);
    }

    /// Closes the listener: new connections are refused until [`Relay::restore`]. Current links
    /// keep forwarding. Returns once the listener is closed.
    pub async fn refuse(&self) {
        self.control
            .send_modify(|control| control.mode = Mode::Refuse);
        let accept = lock(&self.accept).take();
        if let Some(accept) = accept {
            accept.abort();
            // The task's future (and so the listener) is dropped before its handle completes.
            let _ = accept.await;
        }
    }

    /// Forwards and accepts again, after [`Relay::blackhole`] or [`Relay::refuse`] (listening
    /// again on the same port).
    pub async fn restore(&self) {
        let relisten = lock(&self.accept).is_none();
        if relisten {
            let listener = listen_again(self.addr)
                .unwrap_or_else(|e| panic!("the relay cannot listen on {} again: {e}", self.addr));
            let accept = tokio::spawn(accept_loop(
                listener,
                self.shared.clone(),
                self.control.subscribe(),
            ));
            *lock(&self.accept) = Some(accept);
        }
        self.control
            .send_modify(|control| control.mode = Mode::Forward);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // The links end when the control sender (dropped with the relay) goes away.
        if let Some(accept) = lock(&self.accept).take() {
            accept.abort();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A listener on `addr` again, after the previous one closed (SO_REUSEADDR, as tokio's bind).
fn listen_again(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Accepts connections while the mode is `Forward`, and links each to the upstream.
async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut control: watch::Receiver<Control>,
) {
    loop {
        if control.borrow_and_update().mode != Mode::Forward {
            // Not accepting: connections wait in the backlog.
            if control.changed().await.is_err() {
                return;
            }
            continue;
        }
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    shared.accepted.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(link(client, shared.clone(), control.clone()));
                }
                // E.g. out of file descriptors: try again shortly rather than spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            changed = control.changed() => if changed.is_err() {
                return;
            },
        }
    }
}

/// Counts a link as live while it exists.
struct LiveLink<'a>(&'a AtomicUsize);

impl<'a> LiveLink<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for LiveLink<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How one direction of a link ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// The reading side sent a FIN; it was passed on.
    Eof,
    /// Reading or writing failed, or the relay went away: the whole link ends.
    Failed,
}

/// Forwards between `client` and a new connection to the upstream until both directions end,
/// one fails, or a cut.
async fn link(client: TcpStream, shared: Arc<Shared>, mut control: watch::Receiver<Control>) {
    let started_at_cut = control.borrow().cuts;
    let upstream_addr = *lock(&shared.upstream);
    let upstream =
        match tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, TcpStream::connect(upstream_addr))
            .await
        {
            Ok(Ok(upstream)) => upstream,
            // Nothing to link to: the client sees its connection closed.
            _ => return,
        };
    let _live = LiveLink::new(&shared.live_links);
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    let mut up = pin!(pump(client_read, upstream_write, control.clone()));
    let mut down = pin!(pump(upstream_read, client_write, control.clone()));
    let (mut up_done, mut down_done) = (false, false);
    while !(up_done && down_done) {
        tokio::select! {
            ended = &mut up, if !up_done => {
                if ended == Ended::Failed {
                    return;
                }
                up_done = true;
            }
            ended = &mut down, if !down_done => {
                if ended == Ended::Failed {
                    return;
                }
                down_done = true;
            }
            () = until_cut(&mut control, started_at_cut) => return,
        }
    }
}

/// Returns when a cut happens after `started_at_cut`, or when the relay is dropped.
async fn until_cut(control: &mut watch::Receiver<Control>, started_at_cut: u64) {
    loop {
        if control.borrow_and_update().cuts != started_at_cut {
            return;
        }
        if control.changed().await.is_err() {
            return;
        }
    }
}

/// Returns once the relay is not black-holing; `false` if the relay went away.
async fn until_flowing(control: &mut watch::Receiver<Control>) -> bool {
    loop {
        if control.borrow_and_update().mode != Mode::Blackhole {
            return true;
        }
        if control.changed().await.is_err() {
            return false;
        }
    }
}

/// Copies `from` to `to` through one bounded buffer, holding still while black-holed.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut control: watch::Receiver<Control>,
) -> Ended {
    let mut buffer = vec![0; LINK_BUFFER];
    loop {
        if !until_flowing(&mut control).await {
            return Ended::Failed;
        }
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            // A mode change: look again before reading (a blackhole must stop reading).
            changed = control.changed() => {
                if changed.is_err() {
                    return Ended::Failed;
                }
                continue;
            }
        };
        let n = match read {
            Ok(0) => {
                let _ = to.shutdown().await;
                return Ended::Eof;
            }
            Ok(n) => n,
            Err(_) => return Ended::Failed,
        };
        // Bytes read just as a blackhole began are held until it ends.
        if !until_flowing(&mut control).await {
            return Ended::Failed;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return Ended::Failed;
        }
    }
}
