//! The byte stream under a connection: plain TCP or TLS over TCP.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;

use crate::config::{ConnectionOptions, Target};
use crate::error::{Error, Result};
use crate::shared::direct_writes::DirectWrites;
use crate::tls::TlsStream;

/// A connected socket, with or without TLS.
///
/// An enum rather than a boxed trait object: the driver's hot path polls it directly, and
/// recovery can put a new one in place of the old.
#[derive(Debug)]
pub(crate) enum Transport {
    /// Plain TCP, during the handshake.
    Tcp(TcpStream),
    /// Plain TCP once the driver runs it: the write half is shared with the threads that
    /// write their own acknowledgements ([`DirectWrites`]).
    SharedTcp(SharedTcp),
    /// TLS over TCP (boxed: the TLS state is large).
    Tls(Box<TlsStream<TcpStream>>),
    /// An in-memory stream, for the fuzz target that plays the server (feature `fuzzing`).
    #[cfg(feature = "fuzzing")]
    Memory(tokio::io::DuplexStream),
}

impl Transport {
    /// Opens TCP (and TLS when `options` say so) to `target`: the address one of the
    /// connection's endpoints resolved to. TLS checks the certificate against the endpoint's
    /// server name, or the options', or the endpoint's host.
    pub(crate) async fn connect(options: &ConnectionOptions, target: &Target) -> Result<Self> {
        // Before opening a socket: a build without TLS cannot make this connection at all.
        if options.tls.is_some() && !cfg!(feature = "tls") {
            return Err(Error::Tls(crate::tls::TlsError::NotEnabled));
        }
        let tcp = TcpStream::connect(target.address)
            .await
            .map_err(|e| Error::Connect {
                address: target.describe(),
                source: e.into(),
            })?;
        // AMQP is a request/response protocol with small frames: do not let Nagle delay them.
        tcp.set_nodelay(true).map_err(Error::io)?;
        match &options.tls {
            None => Ok(Self::Tcp(tcp)),
            Some(tls) => {
                let endpoint = &target.endpoint;
                let stream = match endpoint.get_server_name() {
                    Some(name) => {
                        let tls = crate::config::TlsOptions {
                            server_name: Some(name.to_owned()),
                            ..tls.clone()
                        };
                        crate::tls::connect(tcp, &tls, endpoint.host()).await
                    }
                    None => crate::tls::connect(tcp, tls, endpoint.host()).await,
                }
                .map_err(Error::Tls)?;
                Ok(Self::Tls(Box::new(stream)))
            }
        }
    }

    /// The transport the driver runs: plain TCP shares its write half through `writes`, so
    /// that a thread outside the runtime's tasks can write its acknowledgements and publishes
    /// itself; TLS stays the driver's alone. Only on a multi-thread runtime: on a
    /// current-thread one the driver runs on the application's thread, so handing work to it
    /// wakes no other thread, and writing directly would only write less at a time.
    pub(crate) fn share_writes(self, writes: &Arc<DirectWrites>) -> Self {
        let multi_thread = tokio::runtime::Handle::try_current().is_ok_and(|runtime| {
            runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
        });
        match self {
            Self::Tcp(tcp) if multi_thread => {
                let (read, write) = tcp.into_split();
                let generation = writes.attach(write);
                Self::SharedTcp(SharedTcp {
                    read,
                    writes: writes.clone(),
                    generation,
                })
            }
            other => other,
        }
    }

    /// The local TCP port, for the connection's span.
    pub(crate) fn local_port(&self) -> Option<u16> {
        let tcp = match self {
            Self::Tcp(tcp) => tcp,
            Self::SharedTcp(shared) => shared.read.as_ref(),
            #[cfg(feature = "tls")]
            Self::Tls(tls) => tls.get_ref().0,
            #[cfg(not(feature = "tls"))]
            Self::Tls(_) => return None,
            #[cfg(feature = "fuzzing")]
            Self::Memory(_) => return None,
        };
        tcp.local_addr().ok().map(|address| address.port())
    }

    /// Wraps an error from the socket, recognising a TLS alert the server sent after the
    /// handshake (TLS 1.3 reports a refused client certificate only then).
    pub(crate) fn classify_error(&self, error: io::Error) -> Error {
        if matches!(self, Self::Tls(_))
            && let Some(tls) = crate::tls::map_io_error(&error)
        {
            return Error::Tls(tls);
        }
        Error::io(error)
    }
}

impl Transport {
    /// [`Transport::classify_error`] for a failed write. With TLS 1.3 a server that refuses our
    /// client certificate sends an alert and closes right after the handshake, and the next
    /// write often fails (broken pipe, reset) before the alert is read: read once more to find it.
    pub(crate) async fn classify_write_error(&mut self, error: io::Error) -> Error {
        if let Self::Tls(stream) = self {
            let found = match crate::tls::map_io_error(&error) {
                Some(tls) => Some(tls),
                None => crate::tls::alert_after_write_error(stream.as_mut(), ALERT_WAIT).await,
            };
            if let Some(tls) = found {
                return Error::Tls(tls);
            }
        }
        Error::io(error)
    }
}

/// How long [`Transport::classify_write_error`] waits for a pending TLS alert.
const ALERT_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Self::SharedTcp(s) => Pin::new(&mut s.read).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            #[cfg(feature = "fuzzing")]
            Self::Memory(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Self::SharedTcp(s) => s.writes.poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            #[cfg(feature = "fuzzing")]
            Self::Memory(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::SharedTcp(s) => s.writes.poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            #[cfg(feature = "fuzzing")]
            Self::Memory(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Tcp(s) => s.is_write_vectored(),
            Self::SharedTcp(_) => true,
            Self::Tls(s) => s.is_write_vectored(),
            #[cfg(feature = "fuzzing")]
            Self::Memory(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_flush(cx),
            // TCP has nothing to flush.
            Self::SharedTcp(_) => Poll::Ready(Ok(())),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            #[cfg(feature = "fuzzing")]
            Self::Memory(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Self::SharedTcp(s) => s.writes.poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            #[cfg(feature = "fuzzing")]
            Self::Memory(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// A TCP socket whose write half is shared through [`DirectWrites`].
#[derive(Debug)]
pub(crate) struct SharedTcp {
    read: OwnedReadHalf,
    writes: Arc<DirectWrites>,
    /// Which socket of the connection this is, for [`DirectWrites::detach`].
    generation: u64,
}

impl Drop for SharedTcp {
    fn drop(&mut self) {
        // The socket is gone for the acknowledging threads too (closing its write half).
        self.writes.detach(self.generation);
    }
}
