//! TLS in a build without the `tls` feature: every attempt fails with
//! [`TlsError::NotEnabled`], and the stream type cannot be constructed.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::TlsError;
use crate::connection::TlsOptions;

/// A TLS stream that cannot exist: without rustls there is no way to make one.
#[derive(Debug)]
pub(crate) enum TlsStream<S> {
    #[allow(dead_code)] // never constructed: it only carries the type parameter
    Never(std::convert::Infallible, std::marker::PhantomData<S>),
}

impl<S> TlsStream<S> {
    fn unreachable(&self) -> ! {
        match *self {
            Self::Never(never, _) => match never {},
        }
    }
}

/// Refuses TLS: this build has none.
pub(crate) async fn connect(
    _tcp: TcpStream,
    _options: &TlsOptions,
    _host: &str,
) -> Result<TlsStream<TcpStream>, TlsError> {
    Err(TlsError::NotEnabled)
}

/// No I/O error comes from TLS when there is no TLS.
pub(crate) fn map_io_error(_error: &io::Error) -> Option<TlsError> {
    None
}

/// There is no TLS stream to read an alert from.
pub(crate) async fn alert_after_write_error<S>(
    stream: &mut TlsStream<S>,
    _within: Duration,
) -> Option<TlsError> {
    stream.unreachable()
}

impl<S> AsyncRead for TlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        _buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.unreachable()
    }
}

impl<S> AsyncWrite for TlsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        _buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.unreachable()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        _bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.unreachable()
    }

    fn is_write_vectored(&self) -> bool {
        self.unreachable()
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.unreachable()
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.unreachable()
    }
}

#[cfg(test)]
mod tests {
    use super::TlsError;

    /// Run with `cargo test -p warren-amqp --no-default-features --lib`.
    #[tokio::test]
    async fn an_amqps_uri_fails_naming_the_feature_before_any_socket_is_opened() {
        // Nothing listens on port 1: a build that opened TCP first would report that instead.
        let error = crate::Connection::connect("amqps://guest:guest@127.0.0.1:1/")
            .await
            .unwrap_err();
        assert!(
            matches!(error, crate::Error::Tls(TlsError::NotEnabled)),
            "{error:?}"
        );
        assert!(error.to_string().contains("`tls` Cargo feature"), "{error}");
        // The options themselves are fine: parsing does not need TLS.
        let options: crate::ConnectionOptions = "amqps://h?cacertfile=/ca.pem".parse().unwrap();
        assert!(options.get_tls().is_some());
    }
}
