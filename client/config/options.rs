//! Connection options: where to connect, how to log in, what to negotiate.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::endpoint::{Endpoint, EndpointOrder};
use super::recovery::RecoveryPolicy;
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
    pub(crate) recovery: RecoveryPolicy,
    pub(crate) consumer_buffer_budget: usize,
    pub(crate) consumer_stall_timeout: Duration,
    pub(crate) blocked_policy: super::BlockedPolicy,
    /// Endpoints besides `host` and `port`, which are the first.
    pub(crate) more_endpoints: Vec<Endpoint>,
    /// The TLS server name of the first endpoint, if set on it.
    pub(crate) first_server_name: Option<String>,
    pub(crate) endpoint_order: EndpointOrder,
}

/// The default plain AMQP port.
pub const DEFAULT_PORT: u16 = 5672;
/// The default AMQP-over-TLS port.
pub const DEFAULT_TLS_PORT: u16 = 5671;

impl Default for ConnectionOptions {
    /// `amqp://guest:guest@localhost:5672/`, PLAIN, channel_max 2047, frame_max 128 KiB,
    /// heartbeat 60 s, connection timeout 30 s, operation timeout 60 s, bodies up to 64 MiB,
    /// automatic recovery on, consumer buffers up to 64 MiB per connection, publishes wait while the
    /// connection is blocked.
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
            recovery: RecoveryPolicy::default(),
            consumer_buffer_budget: DEFAULT_CONSUMER_BUFFER_BUDGET,
            consumer_stall_timeout: DEFAULT_CONSUMER_STALL_TIMEOUT,
            blocked_policy: super::BlockedPolicy::Wait,
            more_endpoints: Vec::new(),
            first_server_name: None,
            endpoint_order: EndpointOrder::default(),
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

    /// Heartbeat interval to ask for (zero disables heartbeats if the broker agrees). A peer
    /// silent for two intervals is considered dead.
    ///
    /// AMQP negotiates the interval in whole seconds, from 0 to 65535, so the value is rounded
    /// **up** to the next whole second (500 ms asks for 1 s, 1.5 s for 2 s) and capped at
    /// 65535 s. Rounding down would turn a sub-second wish into 0, which AMQP reads as "no
    /// preference", so that the broker's 60 s would apply instead of the fast heartbeat asked
    /// for. [`ConnectionOptions::get_heartbeat`] returns the rounded value, the one sent.
    pub fn heartbeat(mut self, heartbeat: Duration) -> Self {
        self.heartbeat = whole_heartbeat_seconds(heartbeat);
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

    /// Largest message body to accept, in bytes (64 MiB by default).
    ///
    /// A larger delivery or `basic.get` answer is not buffered: its body frames are read and
    /// dropped, and it comes out as [`Error::UndecodableDelivery`](crate::Error) with
    /// [`DecodeError::BodyTooLarge`](crate::wire::DecodeError), carrying the delivery tag so
    /// that the application can reject it to a dead-letter exchange. A larger returned message
    /// comes with an empty body and [`ReturnedMessage::skipped_body_size`](crate::ReturnedMessage)
    /// set. The connection and the other messages are unaffected.
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

/// The longest heartbeat interval AMQP can express (`connection.tune-ok` carries a 16-bit count
/// of seconds).
const MAX_HEARTBEAT_SECS: u64 = u16::MAX as u64;

/// `heartbeat` rounded up to whole seconds and capped at [`MAX_HEARTBEAT_SECS`].
fn whole_heartbeat_seconds(heartbeat: Duration) -> Duration {
    let secs = heartbeat
        .as_secs()
        .saturating_add(u64::from(heartbeat.subsec_nanos() > 0));
    Duration::from_secs(secs.min(MAX_HEARTBEAT_SECS))
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
            .field("more_endpoints", &self.more_endpoints)
            .field("endpoint_order", &self.endpoint_order)
            .field("recovery", &self.recovery)
            .field("consumer_buffer_budget", &self.consumer_buffer_budget)
            .field("blocked_policy", &self.blocked_policy)
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

/// The default of [`ConnectionOptions::consumer_buffer_budget`]: 64 MiB.
pub const DEFAULT_CONSUMER_BUFFER_BUDGET: usize = 64 << 20;
/// The default of [`ConnectionOptions::consumer_stall_timeout`]: 30 s.
pub const DEFAULT_CONSUMER_STALL_TIMEOUT: Duration = Duration::from_secs(30);

// ===== recovery and consumer buffering =====

impl ConnectionOptions {
    /// What to do when the connection is lost: reconnect and restore it (the default), with
    /// which backoff, or not at all ([`RecoveryPolicy::disabled`]).
    pub fn recovery(mut self, policy: RecoveryPolicy) -> Self {
        self.recovery = policy;
        self
    }

    /// The recovery policy.
    pub fn get_recovery(&self) -> &RecoveryPolicy {
        &self.recovery
    }

    /// How many bytes of deliveries the connection buffers, across all its consumers, for
    /// consumers whose deliveries no prefetch bounds (`no_ack` consumers, and consumers on a
    /// channel without [`basic_qos`](crate::Channel::basic_qos)); default 64 MiB.
    ///
    /// Up to this budget a consumer that is not read never holds up the connection: its other
    /// channels, its other consumers, heartbeats and the broker's close all go on. Past it the
    /// connection stops reading from the socket (the broker then holds the messages) and
    /// reports [`ConnectionEvent::ConsumerLagging`](crate::ConnectionEvent::ConsumerLagging),
    /// naming the consumer holding the most; if that lasts longer than
    /// [`consumer_stall_timeout`](Self::consumer_stall_timeout), that consumer is cancelled on
    /// the broker and its stream ends, after the deliveries it holds, with
    /// [`Error::ConsumerLagged`](crate::Error::ConsumerLagged), and reading resumes.
    /// Consumers bounded by a prefetch count never count against the budget (the broker
    /// never sends them more than fits).
    pub fn consumer_buffer_budget(mut self, bytes: usize) -> Self {
        self.consumer_buffer_budget = bytes.max(1);
        self
    }

    /// The consumer buffer budget.
    pub fn get_consumer_buffer_budget(&self) -> usize {
        self.consumer_buffer_budget
    }

    /// How long the connection stops reading because its consumer buffers are over budget
    /// before it cancels the consumer that holds the most (default 30 s); see
    /// [`consumer_buffer_budget`](Self::consumer_buffer_budget).
    pub fn consumer_stall_timeout(mut self, timeout: Duration) -> Self {
        self.consumer_stall_timeout = timeout;
        self
    }

    /// The consumer stall timeout.
    pub fn get_consumer_stall_timeout(&self) -> Duration {
        self.consumer_stall_timeout
    }

    /// What publishes do while the broker blocks the connection (a resource alarm): wait
    /// within their deadline (the default) or fail at once; see [`BlockedPolicy`](super::BlockedPolicy).
    pub fn blocked_policy(mut self, policy: super::BlockedPolicy) -> Self {
        self.blocked_policy = policy;
        self
    }

    /// The blocked policy.
    pub fn get_blocked_policy(&self) -> super::BlockedPolicy {
        self.blocked_policy
    }
}

// ===== endpoints =====

impl ConnectionOptions {
    /// The broker nodes to connect to, replacing [`host`](Self::host) and [`port`](Self::port)
    /// (the first endpoint becomes them). The first connection and every recovery try them in
    /// the [`endpoint_order`](Self::endpoint_order); see [`Endpoint`]. An empty list changes
    /// nothing.
    ///
    /// ```
    /// use warren::{ConnectionOptions, Endpoint, EndpointOrder};
    ///
    /// let options = ConnectionOptions::new()
    ///     .endpoints([
    ///         Endpoint::new("rabbit-1.example", 5672),
    ///         Endpoint::new("rabbit-2.example", 5672),
    ///         Endpoint::new("rabbit-3.example", 5672),
    ///     ])
    ///     .endpoint_order(EndpointOrder::AsGiven);
    /// assert_eq!(options.get_endpoints().len(), 3);
    /// assert_eq!(options.get_host(), "rabbit-1.example");
    /// ```
    pub fn endpoints(mut self, endpoints: impl IntoIterator<Item = Endpoint>) -> Self {
        let mut endpoints = endpoints.into_iter();
        let Some(first) = endpoints.next() else {
            return self;
        };
        self.host = first.host().to_owned();
        self.port = first.port();
        self.first_server_name = first.get_server_name().map(str::to_owned);
        self.more_endpoints = endpoints.collect();
        self
    }

    /// Adds a broker node to connect to, after those already set.
    pub fn add_endpoint(mut self, endpoint: Endpoint) -> Self {
        self.more_endpoints.push(endpoint);
        self
    }

    /// The order the endpoints are tried in (default [`EndpointOrder::Shuffled`]).
    pub fn endpoint_order(mut self, order: EndpointOrder) -> Self {
        self.endpoint_order = order;
        self
    }

    /// Every endpoint, the first being [`host`](Self::get_host) and [`port`](Self::get_port).
    pub fn get_endpoints(&self) -> Vec<Endpoint> {
        let mut first = Endpoint::new(self.host.clone(), self.port);
        if let Some(name) = &self.first_server_name {
            first = first.server_name(name.clone());
        }
        std::iter::once(first)
            .chain(self.more_endpoints.iter().cloned())
            .collect()
    }

    /// The order the endpoints are tried in.
    pub fn get_endpoint_order(&self) -> EndpointOrder {
        self.endpoint_order
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_are_rounded_up_to_whole_seconds() {
        let asked = |d| ConnectionOptions::new().heartbeat(d).get_heartbeat();
        assert_eq!(asked(Duration::from_millis(500)), Duration::from_secs(1));
        assert_eq!(asked(Duration::from_nanos(1)), Duration::from_secs(1));
        assert_eq!(asked(Duration::from_millis(1500)), Duration::from_secs(2));
        assert_eq!(asked(Duration::from_secs(15)), Duration::from_secs(15));
        assert_eq!(asked(Duration::ZERO), Duration::ZERO);
        assert_eq!(
            asked(Duration::from_secs(1 << 40)),
            Duration::from_secs(65535)
        );
        assert_eq!(asked(Duration::MAX), Duration::from_secs(65535));
    }
}
