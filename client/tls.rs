//! TLS for `amqps` connections, through tokio-rustls.
//!
//! - **Crypto provider**: rustls's `ring` provider, chosen explicitly for every connection
//!   ([`ClientConfig::builder_with_provider`]), never the process-wide default, so the build has
//!   one provider and warren does not depend on what else the application installs. `ring`
//!   builds with a C compiler only (no cmake, no nasm), unlike `aws-lc-rs`.
//! - **Versions**: TLS 1.3 and TLS 1.2; a server offering only older versions is refused
//!   ([`TlsError::ProtocolVersion`]).
//! - **Verification**: the certificate chain and the server name are always checked, against
//!   [`TlsOptions::server_name`] or else the host; an IP address is checked against the
//!   certificate's IP address SANs. The only way around it is
//!   [`TlsOptions::dangerous_skip_verification`], which still checks the handshake signatures
//!   and logs a warning for every connection.
//! - **Trust roots**: [`TrustRoots::Platform`] (the default; the operating system's store
//!   through `rustls-native-certs`, loaded once per process), [`TrustRoots::Bundled`]
//!   (Mozilla's roots compiled in through `webpki-roots`, for containers without a store;
//!   Cargo feature `webpki-roots`, and the default when it is on and `native-roots` is off) or
//!   [`TrustRoots::None`], plus [`TlsOptions::ca_file`].
//! - **Client certificates** (mutual TLS, SASL EXTERNAL): [`TlsOptions::cert_file`] and
//!   [`TlsOptions::key_file`], PEM. The key may be PKCS#8, PKCS#1 (RSA) or SEC1 (EC), not
//!   encrypted.
//! - **The handshake completes while connecting**, so a bad certificate fails before any AMQP
//!   byte is sent. One check comes later: with TLS 1.3 the server judges our client certificate
//!   (or its absence) after our side of the handshake is done, so a refusal shows up on the
//!   first read or write, and warren reports it as [`TlsError::ClientCertificateRequired`]
//!   or [`TlsError::ClientCertificateRejected`].
//!
//! PEM files are read on every connect, so a renewed certificate is picked up by the next
//! connection.
//!
//! # The `tls` feature
//!
//! TLS is a Cargo feature, `tls`, on by default. A build with `default-features = false`
//! compiles neither rustls nor ring (most of warren's build time); [`TlsOptions`] and this
//! module's types still exist, so code compiles the same either way, but a connection with
//! TLS options (an `amqps` URI) then fails before opening a socket, with
//! [`TlsError::NotEnabled`], whose message names the feature.
//!
//! # Example
//!
//! Trust your own CA, present a client certificate, and log in with SASL EXTERNAL, so that the
//! broker takes the user name from the certificate (README.md, section TLS, shows the broker's
//! side). The builder and the URI give the same options:
//!
//! ```
//! use warren::{AuthMechanism, Connection, ConnectionOptions, TlsOptions, TrustRoots};
//!
//! let options = ConnectionOptions::new()
//!     .host("mq.example.com")
//!     .tls(TlsOptions {
//!         // Trust this CA only (a `cacertfile` in a URI does the same).
//!         roots: TrustRoots::None,
//!         ca_file: Some("/etc/warren/ca_certificate.pem".into()),
//!         cert_file: Some("/etc/warren/client_certificate.pem".into()),
//!         key_file: Some("/etc/warren/client_key.pem".into()),
//!         ..Default::default()
//!     })
//!     .auth_mechanism(AuthMechanism::External);
//!
//! let uri = "amqps://mq.example.com?cacertfile=/etc/warren/ca_certificate.pem\
//!            &certfile=/etc/warren/client_certificate.pem&keyfile=/etc/warren/client_key.pem\
//!            &auth_mechanism=external";
//! assert_eq!(uri.parse::<ConnectionOptions>()?, options);
//! assert_eq!(options.get_port(), 5671);
//!
//! # async fn connect(options: ConnectionOptions) -> Result<(), warren::Error> {
//! let connection = Connection::connect_with(options).await?;
//! # Ok(()) }
//! # Ok::<(), warren::Error>(())
//! ```

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

#[cfg(feature = "tls")]
use rustls::client::ResolvesClientCert;
#[cfg(feature = "tls")]
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
#[cfg(feature = "tls")]
use rustls::crypto::CryptoProvider;
#[cfg(feature = "tls")]
use rustls::pki_types::pem::{self, PemObject};
#[cfg(feature = "tls")]
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
#[cfg(feature = "tls")]
use rustls::sign::CertifiedKey;
#[cfg(feature = "tls")]
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, PeerIncompatible,
    RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;
#[cfg(feature = "tls")]
use tokio_rustls::TlsConnector;
#[cfg(feature = "tls")]
pub(crate) use tokio_rustls::client::TlsStream;

// Without the `tls` feature: the same functions, which refuse TLS, and a stream type that
// cannot exist, so the transport compiles unchanged.
#[cfg(not(feature = "tls"))]
mod disabled;
#[cfg(not(feature = "tls"))]
pub(crate) use disabled::{TlsStream, alert_after_write_error, connect, map_io_error};

use crate::config::{TlsOptions, TrustRoots};

/// What went wrong with TLS: which check failed, and what to do about it.
///
/// Returned inside [`Error::Tls`](crate::Error::Tls). No variant contains a password or key
/// material.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum TlsError {
    /// The server's certificate is not valid for the name warren connected to.
    NotValidForName {
        /// The name checked: [`TlsOptions::server_name`] or the host.
        server_name: String,
        /// The names the certificate is valid for (DNS names and IP addresses), when known.
        presented: Vec<String>,
    },
    /// The server's certificate chain does not lead to a trusted CA.
    UnknownIssuer {
        /// The server name.
        server_name: String,
    },
    /// The server's certificate (or one in its chain) has expired.
    Expired {
        /// The server name.
        server_name: String,
    },
    /// The server's certificate (or one in its chain) is not valid yet.
    NotYetValid {
        /// The server name.
        server_name: String,
    },
    /// The server's certificate is invalid for another reason (bad signature, revoked, wrong
    /// key usage, ...).
    InvalidCertificate {
        /// The server name.
        server_name: String,
        /// What rustls found.
        reason: String,
    },
    /// The server requires a client certificate and none was configured.
    ClientCertificateRequired,
    /// The server refused our client certificate.
    ClientCertificateRejected {
        /// The TLS alert the server sent, e.g. `UnknownCA`, `BadCertificate`.
        alert: String,
    },
    /// The server supports no TLS version warren accepts (TLS 1.2 and 1.3).
    ProtocolVersion,
    /// The server aborted the handshake with another alert.
    AlertReceived {
        /// The TLS alert, e.g. `HandshakeFailure`.
        alert: String,
    },
    /// The peer does not speak TLS (for example a plain AMQP port).
    NotTls,
    /// A PEM file could not be read or holds nothing usable.
    Pem {
        /// The file.
        path: PathBuf,
        /// What the file was for.
        kind: PemKind,
        /// What went wrong (never the file's contents).
        reason: String,
    },
    /// [`TlsOptions::cert_file`] is set but [`TlsOptions::key_file`] is not.
    MissingClientKey {
        /// The certificate file that has no key.
        cert_file: PathBuf,
    },
    /// [`TlsOptions::key_file`] is set but [`TlsOptions::cert_file`] is not.
    MissingClientCertificate {
        /// The key file that has no certificate.
        key_file: PathBuf,
    },
    /// The client certificate and key cannot be used together (the key does not match the
    /// certificate, or its type is not supported).
    InvalidClientIdentity {
        /// What rustls found.
        reason: String,
    },
    /// There is no CA to trust: [`TrustRoots::None`] without [`TlsOptions::ca_file`], an empty
    /// platform store, or bundled roots requested without the `webpki-roots` feature.
    NoTrustRoots {
        /// Which of these.
        reason: String,
    },
    /// The host (or [`TlsOptions::server_name`]) is not a valid DNS name or IP address.
    InvalidServerName {
        /// The name.
        name: String,
    },
    /// The connection failed during the handshake at the socket level (reset, closed); the
    /// I/O error is also the [`source`](std::error::Error::source).
    Io(Arc<io::Error>),
    /// This build of warren has no TLS: it was compiled without the `tls` Cargo feature
    /// (on by default), so `amqps` connections are not possible.
    NotEnabled,
    /// Another TLS failure; the text is rustls's.
    Other {
        /// The message.
        message: String,
    },
}

/// What a PEM file named in [`TlsOptions`] is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PemKind {
    /// [`TlsOptions::ca_file`].
    CaCertificates,
    /// [`TlsOptions::cert_file`].
    ClientCertificate,
    /// [`TlsOptions::key_file`].
    ClientKey,
}

impl fmt::Display for PemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::CaCertificates => "CA file (ca_file, cacertfile)",
            Self::ClientCertificate => "client certificate file (cert_file, certfile)",
            Self::ClientKey => "client key file (key_file, keyfile)",
        })
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotValidForName {
                server_name,
                presented,
            } => {
                write!(
                    f,
                    "the server's certificate is not valid for {server_name:?}"
                )?;
                if !presented.is_empty() {
                    write!(f, " (it is valid for {})", presented.join(", "))?;
                }
                f.write_str(
                    "; connect with a name the certificate lists, or set server_name \
                     (server_name_indication) to one",
                )
            }
            Self::UnknownIssuer { server_name } => write!(
                f,
                "the certificate of {server_name:?} is not signed by a trusted CA; add the CA \
                 that signed it with ca_file (cacertfile), or check that this is the right server"
            ),
            Self::Expired { server_name } => write!(
                f,
                "the certificate of {server_name:?} has expired; the server needs a renewed \
                 certificate (or check this machine's clock)"
            ),
            Self::NotYetValid { server_name } => write!(
                f,
                "the certificate of {server_name:?} is not valid yet; check this machine's clock"
            ),
            Self::InvalidCertificate {
                server_name,
                reason,
            } => write!(f, "the certificate of {server_name:?} is invalid: {reason}"),
            Self::ClientCertificateRequired => f.write_str(
                "the server requires a client certificate; set cert_file and key_file \
                 (certfile, keyfile)",
            ),
            Self::ClientCertificateRejected { alert } => write!(
                f,
                "the server refused our client certificate (TLS alert {alert}); check that it \
                 is signed by a CA the server trusts, is valid now, and is meant for client \
                 authentication"
            ),
            Self::ProtocolVersion => f.write_str(
                "the server supports no TLS version warren accepts (TLS 1.2 or 1.3); upgrade \
                 the server's TLS settings (ssl_options.versions)",
            ),
            Self::AlertReceived { alert } => {
                write!(f, "the server aborted the TLS handshake (alert {alert})")?;
                if alert == "HandshakeFailure" {
                    f.write_str(
                        "; it may require a client certificate (cert_file, key_file), or share \
                         no cipher suite with warren",
                    )?;
                }
                Ok(())
            }
            Self::NotTls => f.write_str(
                "the server does not speak TLS on this port; use amqps with the server's TLS \
                 port (5671 by default) or amqp:// for a plain port",
            ),
            Self::Pem { path, kind, reason } => {
                write!(f, "cannot use the {kind} {}: {reason}", path.display())
            }
            Self::MissingClientKey { cert_file } => write!(
                f,
                "a client certificate ({}) is set without its key; set key_file (keyfile) too",
                cert_file.display()
            ),
            Self::MissingClientCertificate { key_file } => write!(
                f,
                "a client key ({}) is set without its certificate; set cert_file (certfile) too",
                key_file.display()
            ),
            Self::InvalidClientIdentity { reason } => write!(
                f,
                "the client certificate and key cannot be used: {reason}; check that the key \
                 belongs to the certificate"
            ),
            Self::NoTrustRoots { reason } => write!(f, "TLS has no CA to trust: {reason}"),
            Self::InvalidServerName { name } => write!(
                f,
                "{name:?} is not a valid TLS server name (a DNS name or an IP address)"
            ),
            // The I/O error is the source, for reporters to print once.
            Self::Io(_) => f.write_str("the connection failed during the TLS handshake"),
            Self::NotEnabled => f.write_str(
                "this program was built without TLS support: amqps connections need warren's \
                 `tls` Cargo feature (on by default; enable it, or use amqp://)",
            ),
            Self::Other { message } => write!(f, "TLS failed: {message}"),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(error) => Some(error.as_ref()),
            _ => None,
        }
    }
}

impl From<TlsError> for crate::Error {
    fn from(error: TlsError) -> Self {
        crate::Error::Tls(error)
    }
}

#[cfg(feature = "tls")]
/// The crypto provider of every warren TLS connection: rustls's *ring* provider.
///
/// rustls 0.23.48 deprecates `rustls::crypto::ring::default_provider` because *ring* has no
/// post-quantum key exchange, and offers no other way to get that provider (its own docs still
/// name this function). The choice of *ring* is deliberate (it builds with a C compiler alone;
/// see README, TLS), so the deprecation is acknowledged here, in this one place, rather than
/// worked around by rebuilding the provider from its parts. Moving to aws-lc-rs, the provider
/// with post-quantum key exchange, is a separate decision. `.ci/run` checks the workspace with
/// the newest compatible dependencies, so the next deprecation shows up there first.
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            // `allow`, not `expect`: with rustls before 0.23.48 there is nothing to allow.
            #[allow(deprecated)]
            let ring = rustls::crypto::ring::default_provider();
            Arc::new(ring)
        })
        .clone()
}

/// Builds the rustls configuration for `options`: TLS 1.2 and 1.3, roots per
/// [`TrustRoots`] plus the CA file, the client certificate if any.
///
/// [`connect`] builds its own (to learn whether the server asked for a client certificate);
/// this is for checking options up front.
#[cfg(feature = "tls")]
#[allow(dead_code)] // used by the tests; kept for validating options before connecting
pub(crate) fn client_config(options: &TlsOptions) -> Result<Arc<ClientConfig>, TlsError> {
    Ok(build_config(options)?.0)
}

/// [`client_config`], plus the client certificate resolver, which records whether the server
/// asked for a certificate.
#[cfg(feature = "tls")]
fn build_config(
    options: &TlsOptions,
) -> Result<(Arc<ClientConfig>, Arc<ClientIdentity>), TlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Other {
            message: e.to_string(),
        })?;
    let builder = if options.dangerous_skip_verification {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SkipVerification {
                provider: provider.clone(),
            }))
    } else {
        builder.with_root_certificates(root_store(options)?)
    };
    let identity = match (&options.cert_file, &options.key_file) {
        (Some(cert_file), Some(key_file)) => {
            let chain = read_certificates(cert_file, PemKind::ClientCertificate)?;
            let key = read_private_key(key_file)?;
            let key = CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
                TlsError::InvalidClientIdentity {
                    reason: e.to_string(),
                }
            })?;
            Some(Arc::new(key))
        }
        (Some(cert_file), None) => {
            return Err(TlsError::MissingClientKey {
                cert_file: cert_file.clone(),
            });
        }
        (None, Some(key_file)) => {
            return Err(TlsError::MissingClientCertificate {
                key_file: key_file.clone(),
            });
        }
        (None, None) => None,
    };
    let identity = Arc::new(ClientIdentity {
        key: identity,
        requested: AtomicBool::new(false),
    });
    let config = builder.with_client_cert_resolver(identity.clone());
    Ok((Arc::new(config), identity))
}

/// Opens TLS over `tcp` and completes the handshake, so that a certificate problem fails here,
/// before any AMQP byte is sent.
///
/// The name sent in SNI and checked against the certificate is [`TlsOptions::server_name`], or
/// else `host`; an IP address (`127.0.0.1`, `::1`) is checked against the certificate's IP
/// address SANs.
#[cfg(feature = "tls")]
pub(crate) async fn connect(
    tcp: TcpStream,
    options: &TlsOptions,
    host: &str,
) -> Result<TlsStream<TcpStream>, TlsError> {
    let (config, identity) = build_config(options)?;
    let name = options.server_name.as_deref().unwrap_or(host);
    let server_name =
        ServerName::try_from(name.to_owned()).map_err(|_| TlsError::InvalidServerName {
            name: name.to_owned(),
        })?;
    if options.dangerous_skip_verification {
        tracing::warn!(
            server_name = name,
            "TLS certificate verification is off (dangerous_skip_verification / \
             verify=verify_none): anyone between this client and {name} can read and change \
             the traffic, credentials included"
        );
    }
    let stream = TlsConnector::from(config)
        .connect(server_name, tcp)
        .await
        .map_err(|e| handshake_error(e, name, &identity))?;
    let (_, session) = stream.get_ref();
    tracing::debug!(
        server_name = name,
        version = ?session.protocol_version(),
        cipher_suite = ?session.negotiated_cipher_suite().map(|s| s.suite()),
        "TLS handshake complete"
    );
    Ok(stream)
}

/// Recognises a TLS failure in an I/O error from a TLS stream after the handshake: with TLS 1.3
/// the server's refusal of our client certificate (or of its absence) arrives as an alert on the
/// first read or write. Returns `None` for errors that are not TLS alerts or TLS errors (a
/// reset, a plain EOF).
///
/// A write can fail with `BrokenPipe` or `ConnectionReset` before the alert has been read: see
/// [`alert_after_write_error`].
#[cfg(feature = "tls")]
pub(crate) fn map_io_error(error: &io::Error) -> Option<TlsError> {
    let rustls_error = error.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(from_rustls(rustls_error, None))
}

/// After a write on a TLS stream failed, reads once (for at most `within`) to find the alert
/// the server sent before it closed the connection, and maps it.
///
/// With TLS 1.3 a server that refuses our client certificate (or its absence) sends an alert
/// and closes right after the handshake; our next write then often fails with `BrokenPipe` or
/// `ConnectionReset` while the alert still waits in the receive buffer (seen against RabbitMQ
/// in about two connections of five). Call this with the write's error already checked by
/// [`map_io_error`]; it returns `None` if the read brings data, a plain EOF or no TLS error.
#[cfg(feature = "tls")]
pub(crate) async fn alert_after_write_error<S>(stream: &mut S, within: Duration) -> Option<TlsError>
where
    S: AsyncRead + Unpin,
{
    let mut buf = [0; 64];
    match tokio::time::timeout(within, stream.read(&mut buf)).await {
        Ok(Err(error)) => map_io_error(&error),
        Ok(Ok(_)) | Err(_) => None,
    }
}

/// Maps a handshake failure.
#[cfg(feature = "tls")]
fn handshake_error(error: io::Error, server_name: &str, identity: &ClientIdentity) -> TlsError {
    let Some(rustls_error) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return TlsError::Io(Arc::new(error));
    };
    match rustls_error {
        // TLS 1.2 servers that require a certificate we do not have abort the handshake with
        // a generic `handshake_failure`; we know the server asked for one.
        rustls::Error::AlertReceived(AlertDescription::HandshakeFailure)
            if identity.key.is_none() && identity.requested.load(Ordering::Relaxed) =>
        {
            TlsError::ClientCertificateRequired
        }
        rustls_error => from_rustls(rustls_error, Some(server_name)),
    }
}

/// Maps a rustls error; `server_name` is known during the handshake.
#[cfg(feature = "tls")]
fn from_rustls(error: &rustls::Error, server_name: Option<&str>) -> TlsError {
    use rustls::Error as E;
    let server_name = server_name.unwrap_or("the server").to_owned();
    match error {
        E::InvalidCertificate(certificate_error) => match certificate_error {
            CertificateError::NotValidForName => TlsError::NotValidForName {
                server_name,
                presented: Vec::new(),
            },
            CertificateError::NotValidForNameContext { presented, .. } => {
                TlsError::NotValidForName {
                    server_name,
                    presented: presented.iter().map(|name| presented_name(name)).collect(),
                }
            }
            CertificateError::UnknownIssuer => TlsError::UnknownIssuer { server_name },
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                TlsError::Expired { server_name }
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                TlsError::NotYetValid { server_name }
            }
            _ => TlsError::InvalidCertificate {
                server_name,
                reason: error.to_string(),
            },
        },
        E::AlertReceived(alert) => match alert {
            AlertDescription::CertificateRequired => TlsError::ClientCertificateRequired,
            AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::AccessDenied => TlsError::ClientCertificateRejected {
                alert: format!("{alert:?}"),
            },
            AlertDescription::ProtocolVersion => TlsError::ProtocolVersion,
            _ => TlsError::AlertReceived {
                alert: format!("{alert:?}"),
            },
        },
        E::PeerIncompatible(
            PeerIncompatible::ServerDoesNotSupportTls12Or13
            | PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig
            | PeerIncompatible::SupportedVersionsExtensionRequired,
        ) => TlsError::ProtocolVersion,
        E::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => TlsError::NotTls,
        _ => TlsError::Other {
            message: error.to_string(),
        },
    }
}

/// `localhost` and `127.0.0.1` from rustls's `DnsName("localhost")` and `IpAddress(127.0.0.1)`.
fn presented_name(name: &str) -> String {
    if let Some(dns) = name
        .strip_prefix("DnsName(\"")
        .and_then(|rest| rest.strip_suffix("\")"))
    {
        return dns.to_owned();
    }
    if let Some(ip) = name
        .strip_prefix("IpAddress(")
        .and_then(|rest| rest.strip_suffix(')'))
    {
        // rustls writes `::1` as `0::1`; std writes the canonical form.
        return match ip.parse::<std::net::IpAddr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => ip.to_owned(),
        };
    }
    name.to_owned()
}

/// The trust roots for `options`.
#[cfg(feature = "tls")]
fn root_store(options: &TlsOptions) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    match options.roots {
        TrustRoots::Platform => {
            roots.add_parsable_certificates(platform_roots().iter().cloned());
        }
        TrustRoots::Bundled => add_bundled_roots(&mut roots)?,
        TrustRoots::None => {}
        // `TrustRoots` is non-exhaustive; a variant added there must be handled here.
        #[allow(unreachable_patterns)]
        _ => {
            return Err(TlsError::NoTrustRoots {
                reason: format!("{:?} is not supported", options.roots),
            });
        }
    }
    if let Some(ca_file) = &options.ca_file {
        for certificate in read_certificates(ca_file, PemKind::CaCertificates)? {
            roots.add(certificate).map_err(|e| TlsError::Pem {
                path: ca_file.clone(),
                kind: PemKind::CaCertificates,
                reason: format!("a certificate cannot be used as a trust anchor ({e})"),
            })?;
        }
    }
    if roots.is_empty() {
        return Err(TlsError::NoTrustRoots {
            reason: match options.roots {
                TrustRoots::Platform if !cfg!(feature = "native-roots") => {
                    "TrustRoots::Platform needs warren's `native-roots` Cargo feature; enable it, \
                     set ca_file, or use TrustRoots::Bundled (feature `webpki-roots`)"
                        .to_owned()
                }
                TrustRoots::Platform => {
                    "the operating system's certificate store is empty or unreadable; install \
                     it (ca-certificates), set ca_file, or use TrustRoots::Bundled"
                        .to_owned()
                }
                _ => "TrustRoots::None is set and ca_file is not; set ca_file (cacertfile)"
                    .to_owned(),
            },
        });
    }
    Ok(roots)
}

/// The operating system's roots, loaded once per process.
#[cfg(feature = "native-roots")]
fn platform_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let result = rustls_native_certs::load_native_certs();
        for error in &result.errors {
            tracing::debug!(%error, "skipped part of the platform certificate store");
        }
        result.certs
    })
}

#[cfg(feature = "tls")]
#[cfg(not(feature = "native-roots"))]
fn platform_roots() -> &'static [CertificateDer<'static>] {
    &[]
}

#[cfg(feature = "webpki-roots")]
fn add_bundled_roots(roots: &mut RootCertStore) -> Result<(), TlsError> {
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    Ok(())
}

#[cfg(feature = "tls")]
#[cfg(not(feature = "webpki-roots"))]
fn add_bundled_roots(_roots: &mut RootCertStore) -> Result<(), TlsError> {
    Err(TlsError::NoTrustRoots {
        reason: "TrustRoots::Bundled needs warren's `webpki-roots` Cargo feature".to_owned(),
    })
}

/// Reads a PEM file.
fn read_pem(path: &Path, kind: PemKind) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Pem {
        path: path.to_owned(),
        kind,
        reason: e.to_string(),
    })
}

/// The certificates of a PEM file; at least one.
#[cfg(feature = "tls")]
fn read_certificates(path: &Path, kind: PemKind) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_pem(path, kind)?;
    let invalid = |reason: String| TlsError::Pem {
        path: path.to_owned(),
        kind,
        reason,
    };
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(pem_error(&e)))?;
    if certificates.is_empty() {
        return Err(invalid(
            "no certificate in it (expected PEM sections `-----BEGIN CERTIFICATE-----`)".to_owned(),
        ));
    }
    Ok(certificates)
}

/// The first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
#[cfg(feature = "tls")]
fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_pem(path, PemKind::ClientKey)?;
    let invalid = |reason: String| TlsError::Pem {
        path: path.to_owned(),
        kind: PemKind::ClientKey,
        reason,
    };
    match PrivateKeyDer::from_pem_slice(&pem) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => {
            let encrypted = pem
                .windows(b"ENCRYPTED PRIVATE KEY".len())
                .any(|w| w == b"ENCRYPTED PRIVATE KEY")
                || pem
                    .windows(b"Proc-Type: 4,ENCRYPTED".len())
                    .any(|w| w == b"Proc-Type: 4,ENCRYPTED");
            Err(invalid(if encrypted {
                "the key is encrypted, which is not supported; decrypt it with \
                 `openssl pkey -in KEY -out KEY.plain`"
                    .to_owned()
            } else {
                "no private key in it (expected a PEM section `-----BEGIN PRIVATE KEY-----`, \
                 `RSA PRIVATE KEY` or `EC PRIVATE KEY`)"
                    .to_owned()
            }))
        }
        Err(e) => Err(invalid(pem_error(&e))),
    }
}

/// Describes a PEM parse error without quoting the file.
#[cfg(feature = "tls")]
fn pem_error(error: &pem::Error) -> String {
    match error {
        pem::Error::MissingSectionEnd { .. } => "a PEM section has no `-----END` line".to_owned(),
        pem::Error::IllegalSectionStart { .. } => "a `-----BEGIN` line is malformed".to_owned(),
        pem::Error::Base64Decode(_) => "a PEM section is not valid base64".to_owned(),
        pem::Error::Io(e) => e.to_string(),
        pem::Error::NoItemsFound => "nothing usable in it".to_owned(),
        _ => "it is not valid PEM".to_owned(),
    }
}

/// Presents the client certificate, if any, when the server asks for one, and records that it
/// asked.
#[cfg(feature = "tls")]
#[derive(Debug)]
struct ClientIdentity {
    key: Option<Arc<CertifiedKey>>,
    requested: AtomicBool,
}

#[cfg(feature = "tls")]
impl ResolvesClientCert for ClientIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.requested.store(true, Ordering::Relaxed);
        if self.key.is_none() {
            tracing::debug!("the server asked for a client certificate and none is configured");
        }
        self.key.clone()
    }

    fn has_certs(&self) -> bool {
        self.key.is_some()
    }
}

/// Accepts any server certificate, for [`TlsOptions::dangerous_skip_verification`], but still
/// checks that the server's handshake signatures are made with the key of the certificate it
/// sent, with the provider's algorithms.
#[cfg(feature = "tls")]
#[derive(Debug)]
struct SkipVerification {
    provider: Arc<CryptoProvider>,
}

#[cfg(feature = "tls")]
impl ServerCertVerifier for SkipVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(all(test, feature = "tls"))]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::AtomicUsize;

    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    use rustls::server::WebPkiClientVerifier;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    // ===== fixtures =====

    /// A CA and certificates made for one test, written to a fresh directory.
    struct Pki {
        dir: PathBuf,
        ca: rcgen::Certificate,
        ca_key: KeyPair,
    }

    /// A certificate and its key, as files and DER.
    struct Identity {
        cert_file: PathBuf,
        key_file: PathBuf,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    }

    impl Pki {
        fn new(name: &str) -> Self {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "warren-tls-{}-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed),
                name
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let ca_key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(DnType::CommonName, format!("{name} test CA"));
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let ca = params.self_signed(&ca_key).unwrap();
            std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
            Self { dir, ca, ca_key }
        }

        fn ca_file(&self) -> PathBuf {
            self.dir.join("ca.pem")
        }

        fn file(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
            let path = self.dir.join(name);
            std::fs::write(&path, contents).unwrap();
            path
        }

        /// A leaf certificate; `edit` adjusts the parameters (validity, ...).
        fn issue(
            &self,
            file_name: &str,
            names: &[&str],
            common_name: &str,
            client: bool,
            edit: impl FnOnce(&mut CertificateParams),
        ) -> Identity {
            let key = KeyPair::generate().unwrap();
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            let mut params = CertificateParams::new(names).unwrap();
            params
                .distinguished_name
                .push(DnType::CommonName, common_name);
            params.extended_key_usages = vec![if client {
                ExtendedKeyUsagePurpose::ClientAuth
            } else {
                ExtendedKeyUsagePurpose::ServerAuth
            }];
            edit(&mut params);
            let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
            Identity {
                cert_file: self.file(&format!("{file_name}.crt"), cert.pem()),
                key_file: self.file(&format!("{file_name}.key"), key.serialize_pem()),
                chain: vec![cert.der().clone()],
                key: PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            }
        }

        fn server(&self) -> Identity {
            self.issue(
                "server",
                &["localhost", "127.0.0.1", "::1"],
                "localhost",
                false,
                |_| {},
            )
        }

        fn client(&self) -> Identity {
            self.issue("client", &[], "tls-client", true, |_| {})
        }

        /// Options trusting only this CA.
        fn options(&self) -> TlsOptions {
            TlsOptions {
                roots: TrustRoots::None,
                ca_file: Some(self.ca_file()),
                ..TlsOptions::default()
            }
        }
    }

    impl Drop for Pki {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn config_error(options: &TlsOptions) -> TlsError {
        client_config(options).expect_err("the configuration should be refused")
    }

    // ===== configuration =====

    #[test]
    fn a_valid_configuration_builds() {
        let pki = Pki::new("valid");
        let client = pki.client();
        let options = TlsOptions {
            cert_file: Some(client.cert_file),
            key_file: Some(client.key_file),
            ..pki.options()
        };
        let config = client_config(&options).unwrap();
        assert!(config.client_auth_cert_resolver.has_certs());
        assert!(!pki.options().dangerous_skip_verification);
        assert!(
            !client_config(&pki.options())
                .unwrap()
                .client_auth_cert_resolver
                .has_certs()
        );
    }

    #[test]
    fn a_certificate_without_a_key_names_the_certificate() {
        let pki = Pki::new("nokey");
        let client = pki.client();
        let error = config_error(&TlsOptions {
            cert_file: Some(client.cert_file.clone()),
            ..pki.options()
        });
        assert!(
            matches!(&error, TlsError::MissingClientKey { cert_file } if *cert_file == client.cert_file),
            "{error:?}"
        );
        assert!(error.to_string().contains("key_file"), "{error}");
        assert!(
            error
                .to_string()
                .contains(&*client.cert_file.to_string_lossy())
        );
    }

    #[test]
    fn a_key_without_a_certificate_names_the_key() {
        let pki = Pki::new("nocert");
        let client = pki.client();
        let error = config_error(&TlsOptions {
            key_file: Some(client.key_file.clone()),
            ..pki.options()
        });
        assert!(
            matches!(&error, TlsError::MissingClientCertificate { key_file } if *key_file == client.key_file),
            "{error:?}"
        );
        assert!(error.to_string().contains("cert_file"), "{error}");
    }

    #[test]
    fn an_unreadable_file_is_named_with_its_role() {
        let pki = Pki::new("unreadable");
        let client = pki.client();
        let missing = pki.dir.join("does-not-exist.pem");
        let cases = [
            (
                TlsOptions {
                    ca_file: Some(missing.clone()),
                    ..pki.options()
                },
                PemKind::CaCertificates,
            ),
            (
                TlsOptions {
                    cert_file: Some(missing.clone()),
                    key_file: Some(client.key_file.clone()),
                    ..pki.options()
                },
                PemKind::ClientCertificate,
            ),
            (
                TlsOptions {
                    cert_file: Some(client.cert_file.clone()),
                    key_file: Some(missing.clone()),
                    ..pki.options()
                },
                PemKind::ClientKey,
            ),
        ];
        for (options, expected_kind) in cases {
            let error = config_error(&options);
            let TlsError::Pem { path, kind, .. } = &error else {
                panic!("{error:?}");
            };
            assert_eq!((path, *kind), (&missing, expected_kind));
            let text = error.to_string();
            assert!(text.contains("does-not-exist.pem"), "{text}");
            assert!(text.contains("No such file"), "{text}");
        }
    }

    #[test]
    fn garbage_pem_is_refused_without_quoting_it() {
        let pki = Pki::new("garbage");
        let client = pki.client();
        let secret = "SECRETKEYMATERIALxyz";
        let cases: [(&str, String, PemKind, &str); 7] = [
            (
                "ca-text.pem",
                format!("hello {secret}\n"),
                PemKind::CaCertificates,
                "no certificate",
            ),
            (
                "ca-empty.pem",
                String::new(),
                PemKind::CaCertificates,
                "no certificate",
            ),
            (
                "ca-unterminated.pem",
                format!("-----BEGIN CERTIFICATE-----\n{secret}\n"),
                PemKind::CaCertificates,
                "END",
            ),
            (
                "ca-base64.pem",
                format!("-----BEGIN CERTIFICATE-----\n{secret}!!!\n-----END CERTIFICATE-----\n"),
                PemKind::CaCertificates,
                "base64",
            ),
            (
                "key-text.pem",
                format!("{secret}\n"),
                PemKind::ClientKey,
                "no private key",
            ),
            (
                "key-encrypted.pem",
                format!(
                    "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n{secret}\n"
                ),
                PemKind::ClientKey,
                "encrypted",
            ),
            (
                "cert-text.pem",
                format!("{secret}\n"),
                PemKind::ClientCertificate,
                "no certificate",
            ),
        ];
        for (name, contents, kind, expected) in cases {
            let path = pki.file(name, &contents);
            let options = match kind {
                PemKind::CaCertificates => TlsOptions {
                    ca_file: Some(path.clone()),
                    ..pki.options()
                },
                PemKind::ClientKey => TlsOptions {
                    cert_file: Some(client.cert_file.clone()),
                    key_file: Some(path.clone()),
                    ..pki.options()
                },
                PemKind::ClientCertificate => TlsOptions {
                    cert_file: Some(path.clone()),
                    key_file: Some(client.key_file.clone()),
                    ..pki.options()
                },
            };
            let error = config_error(&options);
            assert!(
                matches!(&error, TlsError::Pem { path: p, kind: k, .. } if *p == path && *k == kind),
                "{name}: {error:?}"
            );
            let (text, debug) = (error.to_string(), format!("{error:?}"));
            assert!(text.contains(expected), "{name}: {text}");
            assert!(text.contains(name), "{name}: {text}");
            assert!(
                !text.contains(secret) && !debug.contains(secret),
                "{name}: {text}"
            );
        }
    }

    #[test]
    fn a_key_that_does_not_match_the_certificate_is_refused() {
        let pki = Pki::new("mismatch");
        let client = pki.client();
        let other = pki.issue("other", &[], "other", true, |_| {});
        let error = config_error(&TlsOptions {
            cert_file: Some(client.cert_file),
            key_file: Some(other.key_file),
            ..pki.options()
        });
        assert!(
            matches!(error, TlsError::InvalidClientIdentity { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn no_roots_without_a_ca_file_is_refused() {
        let error = config_error(&TlsOptions {
            roots: TrustRoots::None,
            ..TlsOptions::default()
        });
        assert!(matches!(error, TlsError::NoTrustRoots { .. }), "{error:?}");
        assert!(error.to_string().contains("ca_file"), "{error}");
    }

    #[test]
    fn skipping_verification_needs_no_roots() {
        let options = TlsOptions {
            roots: TrustRoots::None,
            dangerous_skip_verification: true,
            ..TlsOptions::default()
        };
        client_config(&options).unwrap();
    }

    #[test]
    fn bundled_roots_follow_the_feature() {
        let options = TlsOptions {
            roots: TrustRoots::Bundled,
            ..TlsOptions::default()
        };
        let result = client_config(&options);
        if cfg!(feature = "webpki-roots") {
            result.unwrap();
        } else {
            let error = result.unwrap_err();
            assert!(error.to_string().contains("webpki-roots"), "{error}");
        }
    }

    #[test]
    fn the_default_roots_follow_the_features_and_load_or_say_why_not() {
        let expected = if cfg!(all(feature = "webpki-roots", not(feature = "native-roots"))) {
            TrustRoots::Bundled
        } else {
            TrustRoots::Platform
        };
        assert_eq!(TrustRoots::default(), expected);
        match client_config(&TlsOptions::default()) {
            Ok(_) if cfg!(any(feature = "native-roots", feature = "webpki-roots")) => {}
            // No feature, or an empty platform store.
            Err(TlsError::NoTrustRoots { reason }) => {
                assert!(reason.contains("ca_file"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn io_errors_that_are_not_tls_are_not_mapped() {
        let error = io::Error::new(io::ErrorKind::BrokenPipe, "Broken pipe");
        assert!(map_io_error(&error).is_none());
        let error = io::Error::other("not rustls");
        assert!(map_io_error(&error).is_none());
    }

    #[test]
    fn rustls_errors_are_mapped() {
        let wrap = |e: rustls::Error| io::Error::new(io::ErrorKind::InvalidData, e);
        type Check = fn(&TlsError) -> bool;
        let cases: Vec<(rustls::Error, Check)> = vec![
            (
                rustls::Error::AlertReceived(AlertDescription::CertificateRequired),
                |e| matches!(e, TlsError::ClientCertificateRequired),
            ),
            (
                rustls::Error::AlertReceived(AlertDescription::UnknownCA),
                |e| matches!(e, TlsError::ClientCertificateRejected { alert } if alert == "UnknownCA"),
            ),
            (
                rustls::Error::AlertReceived(AlertDescription::BadCertificate),
                |e| matches!(e, TlsError::ClientCertificateRejected { .. }),
            ),
            (
                rustls::Error::AlertReceived(AlertDescription::ProtocolVersion),
                |e| matches!(e, TlsError::ProtocolVersion),
            ),
            (
                rustls::Error::PeerIncompatible(PeerIncompatible::ServerDoesNotSupportTls12Or13),
                |e| matches!(e, TlsError::ProtocolVersion),
            ),
            (
                rustls::Error::AlertReceived(AlertDescription::HandshakeFailure),
                |e| matches!(e, TlsError::AlertReceived { alert } if alert == "HandshakeFailure"),
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
                |e| matches!(e, TlsError::UnknownIssuer { .. }),
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::Expired),
                |e| matches!(e, TlsError::Expired { .. }),
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::NotValidYet),
                |e| matches!(e, TlsError::NotYetValid { .. }),
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::BadSignature),
                |e| matches!(e, TlsError::InvalidCertificate { .. }),
            ),
            (
                rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
                |e| matches!(e, TlsError::NotTls),
            ),
            (
                rustls::Error::General("something else".into()),
                |e| matches!(e, TlsError::Other { message } if message.contains("something else")),
            ),
        ];
        for (rustls_error, check) in cases {
            let text = format!("{rustls_error:?}");
            let mapped = map_io_error(&wrap(rustls_error)).expect("a rustls error is mapped");
            assert!(check(&mapped), "{text} -> {mapped:?}");
        }
    }

    // ===== handshakes against an in-process rustls server =====

    static TLS13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
    static TLS12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];

    /// How the test server behaves.
    struct Server {
        identity: Identity,
        /// Client certificates: `None` = not asked; `Some((roots, required))`.
        client_auth: Option<(RootCertStore, bool)>,
        versions: &'static [&'static rustls::SupportedProtocolVersion],
    }

    /// What the server saw of a completed handshake.
    #[derive(Debug, PartialEq)]
    struct Accepted {
        /// The SNI name the client sent.
        server_name: Option<String>,
        /// The client certificate, if the client presented one.
        client_certificate: Option<CertificateDer<'static>>,
    }

    /// What the server saw, or its handshake error.
    type Seen = Result<Accepted, String>;

    impl Server {
        fn new(identity: Identity) -> Self {
            Self {
                identity,
                client_auth: None,
                versions: rustls::ALL_VERSIONS,
            }
        }

        /// Serves one connection: handshake, then `AMQP` and wait for EOF.
        async fn start(self) -> (SocketAddr, tokio::task::JoinHandle<Seen>) {
            let provider = provider();
            let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(self.versions)
                .unwrap();
            let builder = match self.client_auth {
                None => builder.with_no_client_auth(),
                Some((roots, required)) => {
                    let verifier =
                        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                    let verifier = if required {
                        verifier.build()
                    } else {
                        verifier.allow_unauthenticated().build()
                    };
                    builder.with_client_cert_verifier(verifier.unwrap())
                }
            };
            let config = builder
                .with_single_cert(self.identity.chain, self.identity.key)
                .unwrap();
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap();
            let task = tokio::spawn(async move {
                let (tcp, _) = listener.accept().await.unwrap();
                let mut stream = tokio_rustls::TlsAcceptor::from(Arc::new(config))
                    .accept(tcp)
                    .await
                    .map_err(|e| e.to_string())?;
                let session = stream.get_ref().1;
                let accepted = Accepted {
                    server_name: session.server_name().map(str::to_owned),
                    client_certificate: session
                        .peer_certificates()
                        .and_then(|chain| chain.first().cloned()),
                };
                let _ = stream.write_all(b"AMQP").await;
                let _ = stream.flush().await;
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest).await;
                Ok(accepted)
            });
            (address, task)
        }
    }

    async fn tls_connect(
        address: SocketAddr,
        options: &TlsOptions,
        host: &str,
    ) -> Result<TlsStream<TcpStream>, TlsError> {
        let tcp = TcpStream::connect(address).await.unwrap();
        connect(tcp, options, host).await
    }

    /// Reads the server's greeting, or the TLS error that comes instead.
    async fn first_read(stream: &mut TlsStream<TcpStream>) -> Result<Vec<u8>, io::Error> {
        let mut buf = [0; 4];
        stream.read_exact(&mut buf).await?;
        Ok(buf.to_vec())
    }

    #[tokio::test]
    async fn verified_connections_by_name_and_by_ip() {
        // SNI carries host names only (RFC 6066), never IP addresses.
        for (host, sni) in [("localhost", Some("localhost")), ("127.0.0.1", None)] {
            let pki = Pki::new("ok");
            let (address, server) = Server::new(pki.server()).start().await;
            let mut stream = tls_connect(address, &pki.options(), host).await.unwrap();
            assert_eq!(first_read(&mut stream).await.unwrap(), b"AMQP");
            drop(stream);
            let accepted = Accepted {
                server_name: sni.map(str::to_owned),
                client_certificate: None,
            };
            assert_eq!(server.await.unwrap(), Ok(accepted), "{host}");
        }
    }

    #[tokio::test]
    async fn a_wrong_name_fails_the_handshake() {
        for host in ["wrong.example", "127.0.0.2"] {
            let pki = Pki::new("wrongname");
            let (address, server) = Server::new(pki.server()).start().await;
            let error = tls_connect(address, &pki.options(), host)
                .await
                .unwrap_err();
            let TlsError::NotValidForName {
                server_name,
                presented,
            } = &error
            else {
                panic!("{error:?}");
            };
            assert_eq!(server_name, host);
            assert_eq!(presented, &["localhost", "127.0.0.1", "::1"]);
            assert!(
                error.to_string().contains("valid for localhost, 127.0.0.1"),
                "{error}"
            );
            // The server never got past the handshake: no AMQP byte was exchanged.
            assert!(server.await.unwrap().is_err());
        }
    }

    #[tokio::test]
    async fn server_name_overrides_the_host() {
        let pki = Pki::new("sni");
        let (address, server) = Server::new(pki.server()).start().await;
        let options = TlsOptions {
            server_name: Some("localhost".into()),
            ..pki.options()
        };
        let mut stream = tls_connect(address, &options, "mq.internal").await.unwrap();
        assert_eq!(first_read(&mut stream).await.unwrap(), b"AMQP");
        drop(stream);
        let accepted = server.await.unwrap().unwrap();
        assert_eq!(accepted.server_name.as_deref(), Some("localhost"), "SNI");
    }

    #[tokio::test]
    async fn an_invalid_server_name_is_refused_before_connecting() {
        let pki = Pki::new("badname");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let error = connect(tcp, &pki.options(), "not a host!")
            .await
            .unwrap_err();
        assert!(
            matches!(&error, TlsError::InvalidServerName { name } if name == "not a host!"),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn an_untrusted_ca_fails_the_handshake() {
        let pki = Pki::new("untrusted");
        let other = Pki::new("other");
        let (address, server) = Server::new(pki.server()).start().await;
        let error = tls_connect(address, &other.options(), "localhost")
            .await
            .unwrap_err();
        assert!(
            matches!(&error, TlsError::UnknownIssuer { server_name } if server_name == "localhost"),
            "{error:?}"
        );
        assert!(error.to_string().contains("ca_file"), "{error}");
        assert!(server.await.unwrap().is_err());
    }

    #[tokio::test]
    async fn expired_and_future_certificates_fail_the_handshake() {
        let pki = Pki::new("dates");
        let expired = pki.issue("expired", &["localhost"], "localhost", false, |p| {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2020, 1, 2);
        });
        let (address, server) = Server::new(expired).start().await;
        let error = tls_connect(address, &pki.options(), "localhost")
            .await
            .unwrap_err();
        assert!(matches!(error, TlsError::Expired { .. }), "{error:?}");
        assert!(error.to_string().contains("has expired"), "{error}");
        // The server never got past the handshake: no AMQP byte was exchanged.
        assert!(server.await.unwrap().is_err());

        let future = pki.issue("future", &["localhost"], "localhost", false, |p| {
            p.not_before = rcgen::date_time_ymd(2999, 1, 1);
            p.not_after = rcgen::date_time_ymd(3000, 1, 1);
        });
        let (address, server) = Server::new(future).start().await;
        let error = tls_connect(address, &pki.options(), "localhost")
            .await
            .unwrap_err();
        assert!(matches!(error, TlsError::NotYetValid { .. }), "{error:?}");
        assert!(server.await.unwrap().is_err());
    }

    #[tokio::test]
    async fn skipping_verification_accepts_any_certificate() {
        let pki = Pki::new("skip");
        let other = Pki::new("skip-other");
        let expired = pki.issue("expired", &["localhost"], "localhost", false, |p| {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2020, 1, 2);
        });
        let (address, server) = Server::new(expired).start().await;
        let options = TlsOptions {
            dangerous_skip_verification: true,
            ..other.options()
        };
        let mut stream = tls_connect(address, &options, "wrong.example")
            .await
            .unwrap();
        assert_eq!(first_read(&mut stream).await.unwrap(), b"AMQP");
        drop(stream);
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn mutual_tls_presents_the_client_certificate() {
        for versions in [TLS13, TLS12] {
            let pki = Pki::new("mtls");
            let client = pki.client();
            let mut roots = RootCertStore::empty();
            roots.add(pki.ca.der().clone()).unwrap();
            let server = Server {
                client_auth: Some((roots, true)),
                versions,
                ..Server::new(pki.server())
            };
            let (address, server) = server.start().await;
            let options = TlsOptions {
                cert_file: Some(client.cert_file.clone()),
                key_file: Some(client.key_file.clone()),
                ..pki.options()
            };
            let mut stream = tls_connect(address, &options, "localhost").await.unwrap();
            assert_eq!(first_read(&mut stream).await.unwrap(), b"AMQP");
            drop(stream);
            let accepted = server.await.unwrap().unwrap();
            assert_eq!(accepted.client_certificate, Some(client.chain[0].clone()));
        }
    }

    #[tokio::test]
    async fn a_missing_client_certificate_is_reported_clearly() {
        // TLS 1.2: the server aborts the handshake itself.
        let pki = Pki::new("required12");
        let mut roots = RootCertStore::empty();
        roots.add(pki.ca.der().clone()).unwrap();
        let server = Server {
            client_auth: Some((roots.clone(), true)),
            versions: TLS12,
            ..Server::new(pki.server())
        };
        let (address, _server) = server.start().await;
        let error = tls_connect(address, &pki.options(), "localhost")
            .await
            .unwrap_err();
        assert!(
            matches!(error, TlsError::ClientCertificateRequired),
            "{error:?}"
        );

        // TLS 1.3: our side of the handshake completes; the refusal comes on the first read.
        let server = Server {
            client_auth: Some((roots, true)),
            versions: TLS13,
            ..Server::new(pki.server())
        };
        let (address, _server) = server.start().await;
        let mut stream = tls_connect(address, &pki.options(), "localhost")
            .await
            .unwrap();
        let error = first_read(&mut stream).await.unwrap_err();
        let mapped = map_io_error(&error);
        assert!(
            matches!(mapped, Some(TlsError::ClientCertificateRequired)),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn a_refusal_hidden_behind_a_failed_write_is_found() {
        let pki = Pki::new("epipe");
        let mut roots = RootCertStore::empty();
        roots.add(pki.ca.der().clone()).unwrap();
        let server = Server {
            client_auth: Some((roots, true)),
            versions: TLS13,
            ..Server::new(pki.server())
        };
        let (address, server) = server.start().await;
        let mut stream = tls_connect(address, &pki.options(), "localhost")
            .await
            .unwrap();
        // The server refuses at once and closes; wait until it has, so writes fail.
        assert!(server.await.unwrap().is_err());
        let mut write_error = None;
        for _ in 0..100 {
            let written = async {
                stream.write_all(&[0; 1024]).await?;
                stream.flush().await
            };
            if let Err(e) = written.await {
                write_error = Some(e);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let write_error = write_error.expect("writing to a closed connection fails");
        assert!(map_io_error(&write_error).is_none(), "{write_error:?}");
        let found = alert_after_write_error(&mut stream, Duration::from_secs(5)).await;
        assert!(
            matches!(found, Some(TlsError::ClientCertificateRequired)),
            "{found:?}"
        );
    }

    #[tokio::test]
    async fn no_alert_after_a_write_error_gives_none() {
        let (mut client, mut server) = tokio::io::duplex(64);
        server.write_all(b"data").await.unwrap();
        assert!(
            alert_after_write_error(&mut client, Duration::from_secs(1))
                .await
                .is_none()
        );
        drop(server);
        assert!(
            alert_after_write_error(&mut client, Duration::from_secs(1))
                .await
                .is_none()
        );
        let (mut silent, _keep) = tokio::io::duplex(64);
        let found = alert_after_write_error(&mut silent, Duration::from_millis(10)).await;
        assert!(found.is_none());
    }

    #[tokio::test]
    async fn an_untrusted_client_certificate_is_reported_clearly() {
        let pki = Pki::new("rejected");
        let rogue_pki = Pki::new("rogue");
        let rogue = rogue_pki.client();
        let mut roots = RootCertStore::empty();
        roots.add(pki.ca.der().clone()).unwrap();
        let server = Server {
            client_auth: Some((roots, true)),
            versions: TLS13,
            ..Server::new(pki.server())
        };
        let (address, _server) = server.start().await;
        let options = TlsOptions {
            cert_file: Some(rogue.cert_file.clone()),
            key_file: Some(rogue.key_file.clone()),
            ..pki.options()
        };
        let mut stream = tls_connect(address, &options, "localhost").await.unwrap();
        let error = first_read(&mut stream).await.unwrap_err();
        let mapped = map_io_error(&error).expect("a TLS alert");
        assert!(
            matches!(mapped, TlsError::ClientCertificateRejected { .. }),
            "{mapped:?}"
        );
    }

    #[tokio::test]
    async fn a_plain_amqp_port_is_recognised() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut hello = [0; 16];
            let _ = tcp.read(&mut hello).await;
            // What RabbitMQ answers to a protocol header it does not support.
            let _ = tcp.write_all(b"AMQP\x00\x00\x09\x01").await;
        });
        let pki = Pki::new("plain");
        let error = tls_connect(address, &pki.options(), "localhost")
            .await
            .unwrap_err();
        assert!(matches!(error, TlsError::NotTls), "{error:?}");
    }

    #[tokio::test]
    async fn a_server_that_hangs_up_gives_an_io_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            drop(tcp);
        });
        let pki = Pki::new("hangup");
        let error = tls_connect(address, &pki.options(), "localhost")
            .await
            .unwrap_err();
        let TlsError::Io(io_error) = &error else {
            panic!("{error:?}");
        };
        let source = std::error::Error::source(&error).expect("the I/O error is the source");
        assert_eq!(source.to_string(), io_error.to_string());
    }
}
