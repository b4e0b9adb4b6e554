//! Connection options: where to connect, how to log in, what to negotiate.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::frame::DEFAULT_MAX_BODY_SIZE;
use crate::wire::FieldTable;

/// A password that never shows up in `Debug`, `Display`, logs or errors.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(password: impl Into<String>) -> Self {
        Self(password.into())
    }

    /// The password itself. Use it only to authenticate.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the password is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<&str> for Password {
    fn from(password: &str) -> Self {
        Self::new(password)
    }
}

impl From<String> for Password {
    fn from(password: String) -> Self {
        Self(password)
    }
}

/// A SASL mechanism for logging in to the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthMechanism {
    /// `PLAIN`: user name and password (RFC 4616). RabbitMQ's default.
    Plain,
    /// `AMQPLAIN`: user name and password in an AMQP field table (a RabbitMQ legacy mechanism).
    AmqPlain,
    /// `EXTERNAL`: identity from the TLS client certificate; needs RabbitMQ's
    /// `rabbitmq_auth_mechanism_ssl` plugin. The password is not sent.
    External,
}

impl AuthMechanism {
    /// The mechanism's name as SASL and RabbitMQ write it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::AmqPlain => "AMQPLAIN",
            Self::External => "EXTERNAL",
        }
    }

    /// The mechanism with this name, ignoring case.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Plain, Self::AmqPlain, Self::External]
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for AuthMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where the TLS client gets the certificates it trusts, besides [`TlsOptions::ca_file`].
///
/// The default is [`TrustRoots::Platform`]: the operating system's store is the one its
/// administrators keep up to date (removals of distrusted CAs included) and extend with their
/// own CAs. A build with the `webpki-roots` feature and without `native-roots` (a default
/// feature) defaults to [`TrustRoots::Bundled`] instead, so that `amqps://` URIs, which cannot
/// name the roots, work in containers without a certificate store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrustRoots {
    /// The operating system's certificate store (through `rustls-native-certs`; Cargo feature
    /// `native-roots`, on by default), read once per process.
    Platform,
    /// Mozilla's root set compiled into the program (through `webpki-roots`; Cargo feature
    /// `webpki-roots`), for containers without a certificate store. It is as recent as the
    /// build.
    Bundled,
    /// Only the certificates of [`TlsOptions::ca_file`].
    None,
}

impl Default for TrustRoots {
    /// [`TrustRoots::Platform`], or [`TrustRoots::Bundled`] in a build with the `webpki-roots`
    /// feature but not `native-roots`.
    fn default() -> Self {
        if cfg!(all(feature = "webpki-roots", not(feature = "native-roots"))) {
            Self::Bundled
        } else {
            Self::Platform
        }
    }
}

/// TLS settings for `amqps` connections.
///
/// Certificate chain and host name verification are always on, with TLS 1.2 as the oldest
/// version accepted. The only way to skip verification is
/// [`TlsOptions::dangerous_skip_verification`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// Trust roots besides [`TlsOptions::ca_file`].
    pub roots: TrustRoots,
    /// A PEM file of CA certificates to trust (e.g. your own CA's).
    pub ca_file: Option<PathBuf>,
    /// A PEM client certificate (chain) for mutual TLS.
    pub cert_file: Option<PathBuf>,
    /// The PEM private key of [`TlsOptions::cert_file`].
    pub key_file: Option<PathBuf>,
    /// The name to send in SNI and to verify the server certificate against; the host by default.
    pub server_name: Option<String>,
    /// Accept any server certificate. This removes all protection against a man in the middle;
    /// use it only against a test broker.
    pub dangerous_skip_verification: bool,
}

/// Everything needed to open a connection.
///
/// Build it with the setters, from a URI (`"amqp://user:pass@host/vhost".parse()`), or both:
///
/// ```
/// use std::time::Duration;
/// use warren::ConnectionOptions;
///
/// let options: ConnectionOptions = "amqp://guest:guest@localhost:5672/%2f".parse()?;
/// let options = options
///     .connection_name("billing-worker")
///     .heartbeat(Duration::from_secs(15));
/// assert_eq!(options.get_vhost(), "/");
/// // The password never shows:
/// assert_eq!(options.to_string(), "amqp://guest:***@localhost:5672/%2F");
/// # Ok::<(), warren::Error>(())
/// ```
#[derive(Clone, PartialEq)]
pub struct ConnectionOptions {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) tls: Option<TlsOptions>,
    pub(crate) username: String,
    pub(crate) password: Password,
    pub(crate) vhost: String,
    pub(crate) mechanisms: Vec<AuthMechanism>,
    pub(crate) insist: bool,
    pub(crate) client_properties: FieldTable,
    pub(crate) connection_name: Option<String>,
    pub(crate) channel_max: u16,
    pub(crate) frame_max: u32,
    pub(crate) heartbeat: Duration,
    pub(crate) connection_timeout: Duration,
    pub(crate) operation_timeout: Duration,
    pub(crate) max_body_size: u64,
    pub(crate) locale: String,
}

/// The default plain AMQP port.
pub const DEFAULT_PORT: u16 = 5672;
/// The default AMQP-over-TLS port.
pub const DEFAULT_TLS_PORT: u16 = 5671;

impl Default for ConnectionOptions {
    /// `amqp://guest:guest@localhost:5672/`, PLAIN, channel_max 2047, frame_max 128 KiB,
    /// heartbeat 60 s, connection timeout 30 s, operation timeout 60 s, bodies up to 64 MiB.
    fn default() -> Self {
        Self {
            host: "localhost".to_owned(),
            port: DEFAULT_PORT,
            tls: None,
            username: "guest".to_owned(),
            password: Password::new("guest"),
            vhost: "/".to_owned(),
            mechanisms: vec![AuthMechanism::Plain],
            insist: false,
            client_properties: FieldTable::new(),
            connection_name: None,
            channel_max: 2047,
            frame_max: 131_072,
            heartbeat: Duration::from_secs(60),
            connection_timeout: Duration::from_secs(30),
            operation_timeout: Duration::from_secs(60),
            max_body_size: DEFAULT_MAX_BODY_SIZE,
            locale: "en_US".to_owned(),
        }
    }
}

impl ConnectionOptions {
    /// The defaults; see [`ConnectionOptions::default`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Host name or IP address of the broker.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }

    /// TCP port (5672 for `amqp`, 5671 for `amqps` by default).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// User name (`login` in aioamqp).
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.username = username.into();
        self
    }

    /// Password. It never appears in `Debug`, `Display`, logs or errors.
    pub fn password(mut self, password: impl Into<Password>) -> Self {
        self.password = password.into();
        self
    }

    /// Virtual host (`/` by default).
    pub fn vhost(mut self, vhost: impl Into<String>) -> Self {
        self.vhost = vhost.into();
        self
    }

    /// SASL mechanisms to use, in order of preference; the first one the broker offers is used.
    pub fn auth_mechanisms(mut self, mechanisms: impl IntoIterator<Item = AuthMechanism>) -> Self {
        self.mechanisms = mechanisms.into_iter().collect();
        self
    }

    /// Use one SASL mechanism (`login_method` in aioamqp).
    pub fn auth_mechanism(self, mechanism: AuthMechanism) -> Self {
        self.auth_mechanisms([mechanism])
    }

    /// AMQP 0-8's `insist` flag, kept for aioamqp users.
    ///
    /// AMQP 0-9-1 reserves this bit of `connection.open` and requires it to be sent as 0, and
    /// RabbitMQ ignores it, so it has no effect on the wire.
    pub fn insist(mut self, insist: bool) -> Self {
        self.insist = insist;
        self
    }

    /// Connects over TLS with these settings (the `amqps` scheme).
    ///
    /// Like an `amqps` URI, this moves the port to 5671 when it is still plain AMQP's 5672; set
    /// the port after this to use another.
    pub fn tls(mut self, tls: TlsOptions) -> Self {
        self.tls = Some(tls);
        if self.port == DEFAULT_PORT {
            self.port = DEFAULT_TLS_PORT;
        }
        self
    }

    /// Client properties to send; they are merged over warren's (product, version, platform,
    /// capabilities), and an entry here replaces warren's entry with the same key.
    pub fn client_properties(mut self, properties: FieldTable) -> Self {
        self.client_properties = properties;
        self
    }

    /// A name for the connection, shown in RabbitMQ's management UI and logs.
    pub fn connection_name(mut self, name: impl Into<String>) -> Self {
        self.connection_name = Some(name.into());
        self
    }

    /// Highest channel number to ask for (0: no limit of ours; the broker's applies).
    pub fn channel_max(mut self, channel_max: u16) -> Self {
        self.channel_max = channel_max;
        self
    }

    /// Largest frame to ask for, in bytes (0: no limit of ours; raised to at least 4096).
    pub fn frame_max(mut self, frame_max: u32) -> Self {
        self.frame_max = frame_max;
        self
    }

    /// Heartbeat interval to ask for, in whole seconds (zero disables heartbeats if the broker
    /// agrees). A peer silent for two intervals is considered dead.
    pub fn heartbeat(mut self, heartbeat: Duration) -> Self {
        self.heartbeat = heartbeat;
        self
    }

    /// Deadline for connecting: TCP, TLS and the AMQP handshake together.
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout;
        self
    }

    /// Default deadline for every operation that waits for the broker; each call can override it.
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// Largest message body to accept, in bytes; larger deliveries close the connection.
    pub fn max_body_size(mut self, max: u64) -> Self {
        self.max_body_size = max;
        self
    }

    /// Locale to ask for (`en_US` by default; RabbitMQ only knows that one).
    pub fn locale(mut self, locale: impl Into<String>) -> Self {
        self.locale = locale.into();
        self
    }

    /// The host.
    pub fn get_host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn get_port(&self) -> u16 {
        self.port
    }

    /// The user name.
    pub fn get_username(&self) -> &str {
        &self.username
    }

    /// The virtual host.
    pub fn get_vhost(&self) -> &str {
        &self.vhost
    }

    /// The TLS settings, if the connection uses TLS.
    pub fn get_tls(&self) -> Option<&TlsOptions> {
        self.tls.as_ref()
    }

    /// The SASL mechanisms, in order of preference.
    pub fn get_auth_mechanisms(&self) -> &[AuthMechanism] {
        &self.mechanisms
    }

    /// The heartbeat interval asked for.
    pub fn get_heartbeat(&self) -> Duration {
        self.heartbeat
    }

    /// The frame_max asked for.
    pub fn get_frame_max(&self) -> u32 {
        self.frame_max
    }

    /// The channel_max asked for.
    pub fn get_channel_max(&self) -> u16 {
        self.channel_max
    }

    /// The connection deadline.
    pub fn get_connection_timeout(&self) -> Duration {
        self.connection_timeout
    }

    /// The default operation deadline.
    pub fn get_operation_timeout(&self) -> Duration {
        self.operation_timeout
    }

    /// The connection name, if set.
    pub fn get_connection_name(&self) -> Option<&str> {
        self.connection_name.as_deref()
    }
}

impl fmt::Display for ConnectionOptions {
    /// Shows the options as a URI, `amqp://user:***@host:port/vhost`, with the password hidden.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls.is_some() { "amqps" } else { "amqp" };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(
            f,
            "{scheme}://{}:***@{host}:{}/{}",
            super::uri::encode_component(&self.username),
            self.port,
            super::uri::encode_component(&self.vhost)
        )
    }
}

impl fmt::Debug for ConnectionOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionOptions")
            .field("uri", &format_args!("{self}"))
            .field("tls", &self.tls)
            .field("auth_mechanisms", &self.mechanisms)
            .field("connection_name", &self.connection_name)
            .field("client_properties", &self.client_properties)
            .field("channel_max", &self.channel_max)
            .field("frame_max", &self.frame_max)
            .field("heartbeat", &self.heartbeat)
            .field("connection_timeout", &self.connection_timeout)
            .field("operation_timeout", &self.operation_timeout)
            .field("max_body_size", &self.max_body_size)
            .finish_non_exhaustive()
    }
}

impl std::str::FromStr for ConnectionOptions {
    type Err = crate::Error;

    /// Parses an `amqp://` or `amqps://` URI; see the [`uri`](super::uri) module for the syntax.
    fn from_str(uri: &str) -> Result<Self, Self::Err> {
        super::uri::parse(uri)
    }
}
