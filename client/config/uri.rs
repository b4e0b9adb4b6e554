//! `amqp://` and `amqps://` URIs, as RabbitMQ specifies them.
//!
//! ```text
//! amqp://[user[:password]@]host[:port][/vhost][?name=value&name=value...]
//! amqps://...                 (TLS; the port defaults to 5671 instead of 5672)
//! ```
//!
//! Parse one with [`str::parse`] into [`ConnectionOptions`]:
//!
//! ```
//! use warren::ConnectionOptions;
//!
//! let options: ConnectionOptions =
//!     "amqps://billing:s3cr%40t@mq.example.com/billing?heartbeat=15&cacertfile=/etc/ca.pem".parse()?;
//! assert_eq!(options.get_port(), 5671);
//! assert_eq!(options.get_vhost(), "billing");
//! assert_eq!(options.to_string(), "amqps://billing:***@mq.example.com:5671/billing");
//! # Ok::<(), warren::Error>(())
//! ```
//!
//! # Syntax
//!
//! This follows the [RabbitMQ URI specification](https://www.rabbitmq.com/docs/uri-spec) and the
//! [query parameters](https://www.rabbitmq.com/docs/uri-query-parameters) of RabbitMQ's Erlang
//! client, with the choices below.
//!
//! - **Scheme**: `amqp` or `amqps`, in any case. `amqps` turns TLS on with the default
//!   [`TlsOptions`]: the default [`TrustRoots`] (the platform's) or, with `cacertfile`, only
//!   that file's CAs, and verification on.
//! - **User name and password** are percent-decoded. Characters outside RFC 3986's unreserved
//!   and sub-delims sets must be percent-encoded: `@` as `%40`, `:` in the password as `%3A`,
//!   `/` as `%2F`, `?` as `%3F`, `#` as `%23`, `%` as `%25`. With no user info the user is
//!   `guest` with password `guest`; with a user but no password the password is empty.
//! - **Host**: a name, an IPv4 address, or an IPv6 address in brackets (`[::1]`, stored without
//!   the brackets). It is percent-decoded. Names must be ASCII (write internationalised names in
//!   punycode, `xn--...`). An empty host means `localhost` (`amqp://`, `amqp:///vhost`), but
//!   **not** after user info: `amqp://user:pass@` is an error ([`UriError::MissingHost`]),
//!   because an empty host after credentials almost always is an unset variable in a template,
//!   and sending the credentials to `localhost` would hide the mistake. (The specification's
//!   examples accept it.)
//! - **Port**: 1 to 65535; 5672 for `amqp`, 5671 for `amqps` when absent. `host:` with an empty
//!   port is an error for the same reason as above.
//! - **Virtual host**: the path after the host, percent-decoded; it is a single segment, so a
//!   `/` in the vhost name must be written `%2F` (`amqp://host/%2F` is the vhost `/`), and a raw
//!   `/` inside it is an error ([`UriError::VhostContainsSlash`]).
//!
//!   | URI | vhost |
//!   | --- | --- |
//!   | `amqp://host` (no path) | `/`, the default |
//!   | `amqp://host/%2F` | `/` |
//!   | `amqp://host/` | `""`, the empty name |
//!   | `amqp://host/prod` | `prod` |
//!   | `amqp://host//` | error: write `%2F` for `/` |
//!
//!   The empty path gives the default vhost, but `amqp://host/` (a path holding one empty
//!   segment) gives the vhost named `""`: that is what the specification's examples say, what
//!   RabbitMQ's Java client does (`ConnectionFactory.setUri`; its maintainers declined to change
//!   it in rabbitmq-java-client#1978), and what the Erlang client does. Some other clients (pika,
//!   amqp091-go, the .NET client) read `amqp://host/` as `/` instead. RabbitMQ has no vhost
//!   `""`, so such a connection is refused at `connection.open`; write `%2F` or leave the path
//!   out.
//! - **Query parameters** (`?name=value&...`; names are case-sensitive, values are
//!   percent-decoded, `+` is a plus sign, not a space):
//!
//!   | name | value | sets |
//!   | --- | --- | --- |
//!   | `heartbeat` | whole seconds, 0 to 65535 (0 disables); a fraction such as `0.5` is refused, as AMQP negotiates whole seconds | [`ConnectionOptions::heartbeat`] |
//!   | `connection_timeout` | milliseconds, at least 1 | [`ConnectionOptions::connection_timeout`] |
//!   | `frame_max` | bytes, 0 to 4294967295 | [`ConnectionOptions::frame_max`] |
//!   | `channel_max` | 0 to 65535 | [`ConnectionOptions::channel_max`] |
//!   | `auth_mechanism` | `plain`, `amqplain` or `external` (any case); repeat it to list several, most preferred first | [`ConnectionOptions::auth_mechanisms`] |
//!   | `connection_name` | any text (warren's addition: it names the connection in the management UI) | [`ConnectionOptions::connection_name`] |
//!   | `cacertfile` | path of a PEM file of CA certificates, the only ones trusted (`amqps` only) | [`TlsOptions::ca_file`], and [`TlsOptions::roots`] = [`TrustRoots::None`] |
//!   | `certfile` | path of the PEM client certificate (`amqps` only) | [`TlsOptions::cert_file`] |
//!   | `keyfile` | path of the PEM client key (`amqps` only) | [`TlsOptions::key_file`] |
//!   | `server_name_indication` | the name to send in SNI and to verify the certificate against (`amqps` only) | [`TlsOptions::server_name`] |
//!   | `verify` | `verify_peer` (the default) or `verify_none` (`amqps` only) | [`TlsOptions::dangerous_skip_verification`] |
//!
//!   Only `auth_mechanism` may be repeated. Empty pieces (`?&heartbeat=5&`) are ignored.
//!   Unlike the Erlang client, `server_name_indication=disable` is refused: warren always
//!   sends SNI and always checks the name.
//!
//!   **Parameters warren does not know are ignored, with a warning in the log** (`tracing`,
//!   level WARN, naming the parameter but never its value). URIs are often shared between
//!   programs written with different clients, each with parameters of its own (pika's
//!   `connection_attempts`, `retry_delay` or `socket_timeout`, the Erlang client's
//!   `fail_if_no_peer_cert`), and ignoring a tuning option of another client is safe, as the
//!   Erlang client and pika do with parameters they do not know. Two kinds are errors instead,
//!   because ignoring them is not safe:
//!   - a name that is a known one in another case or at most two letters away from it
//!     (`Heartbeat`, `hearbeat`, `cacertfle`): a misspelled setting would silently not apply,
//!     and a misspelled `cacertfile` would trust the default roots instead of the one CA the
//!     URI names ([`UriError::UnknownParameter`], which suggests the known name);
//!   - the Erlang client's `depth` (a limit on the certificate chain, which warren does not
//!     enforce) and `password` (of an encrypted key, which warren cannot read)
//!     ([`UriError::UnsupportedParameter`]).
//! - A fragment (`#...`) is an error, and so is an `@` after the host (write it `%40`): both
//!   mostly come from an unencoded `#`, `/` or `?` in a password, which would otherwise cut the
//!   password in two and send the rest to the server as a host, port, vhost or parameter.
//! - Leading and trailing whitespace is ignored (URIs often come from files and environment
//!   variables with a final newline). Other characters that RFC 3986 does not allow raw (space,
//!   `"`, `<`, `>`, `\`, `^`, `` ` ``, `{`, `|`, `}`, controls) are errors; non-ASCII text is
//!   accepted as it is in the user name, password, vhost and parameters.
//!
//! # Errors never show the password
//!
//! [`UriError`] names the part at fault and never carries the password nor the URI: only the
//! scheme, a host, a parameter name, or one offending character outside the password. The
//! `Display` and `Debug` of [`ConnectionOptions`] show the URI as
//! `amqp://user:***@host:port/vhost`.

use std::collections::HashSet;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use super::options::{
    AuthMechanism, ConnectionOptions, DEFAULT_PORT, DEFAULT_TLS_PORT, Password, TlsOptions,
    TrustRoots,
};

/// The part of a URI that a [`UriError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UriPart {
    /// The user name, before the `:` of the user info.
    Username,
    /// The password, after the `:` of the user info.
    Password,
    /// The host.
    Host,
    /// The virtual host (the path).
    Vhost,
    /// The query (`?name=value&...`) as a whole, before it is split into parameters.
    Query,
    /// The name of a query parameter.
    ParameterName,
    /// The value of the named query parameter.
    Parameter(&'static str),
}

impl fmt::Display for UriPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Username => f.write_str("the user name"),
            Self::Password => f.write_str("the password"),
            Self::Host => f.write_str("the host"),
            Self::Vhost => f.write_str("the vhost"),
            Self::Query => f.write_str("the query"),
            Self::ParameterName => f.write_str("a query parameter name"),
            Self::Parameter(name) => write!(f, "the value of `{name}`"),
        }
    }
}

/// Why a host is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HostError {
    /// `[` without a closing `]`.
    UnclosedBracket,
    /// The text in brackets is not an IPv6 address (zone ids such as `%25eth0` are not supported).
    InvalidIpv6,
    /// An IPv6 address without brackets (`amqp://::1` instead of `amqp://[::1]`).
    UnbracketedIpv6,
    /// Something other than `:port` follows `]`.
    TextAfterBracket,
    /// A character that cannot be part of a host name (after percent-decoding).
    InvalidCharacter(char),
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnclosedBracket => f.write_str("`[` has no closing `]`"),
            Self::InvalidIpv6 => f.write_str(
                "the text in brackets is not an IPv6 address (zone ids are not supported)",
            ),
            Self::UnbracketedIpv6 => {
                f.write_str("an IPv6 address must be in brackets, as in amqp://[::1]:5672/")
            }
            Self::TextAfterBracket => f.write_str("only `:port` may follow `]`"),
            Self::InvalidCharacter(c) if !c.is_ascii() => write!(
                f,
                "{c:?} cannot be part of a host name; write internationalised names in punycode \
                 (xn--...)"
            ),
            Self::InvalidCharacter(c) => write!(f, "{c:?} cannot be part of a host name"),
        }
    }
}

/// Why a port is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PortError {
    /// `host:` with nothing after the colon.
    Empty,
    /// Not made of digits only.
    NotANumber,
    /// Port 0.
    Zero,
    /// Above 65535.
    TooLarge,
}

impl fmt::Display for PortError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Empty => "the port after `:` is empty",
            Self::NotANumber => "the port is not a number",
            Self::Zero => "port 0 cannot be connected to",
            Self::TooLarge => "the port is above 65535",
        })
    }
}

/// A malformed `amqp://` or `amqps://` URI.
///
/// Each variant names the part at fault. None ever contains the password or the whole URI: only
/// the scheme, a host, a parameter name, or a character outside the password.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UriError {
    /// The URI is empty (or only whitespace).
    Empty,
    /// The URI does not start with a scheme and `//`, as in `amqp://`.
    MissingScheme,
    /// The scheme is neither `amqp` nor `amqps`.
    UnsupportedScheme {
        /// The scheme found, e.g. `http`.
        scheme: String,
    },
    /// `amqp:` or `amqps:` is not followed by `//`.
    MissingSlashes,
    /// The URI has a fragment (`#...`); AMQP URIs have none, and a `#` in a password must be
    /// written `%23`.
    Fragment,
    /// An `@` after the host: a raw `@` in the vhost or a parameter, or, more likely, a `/`, `?`
    /// or `#` in the user info that was not percent-encoded and cut it short.
    AtSignAfterHost,
    /// A character that must be percent-encoded appears raw.
    InvalidCharacter {
        /// Where.
        part: UriPart,
        /// The character; `None` in the password, which errors never show.
        character: Option<char>,
    },
    /// A `%` not followed by two hexadecimal digits.
    InvalidPercentEncoding {
        /// Where.
        part: UriPart,
    },
    /// Percent-decoding gives bytes that are not UTF-8.
    NotUtf8 {
        /// Where.
        part: UriPart,
    },
    /// User info is given but the host is empty (`amqp://user:pass@/`).
    MissingHost,
    /// The host is malformed.
    InvalidHost {
        /// The host as written in the URI.
        host: String,
        /// What is wrong with it.
        reason: HostError,
    },
    /// The port is malformed or out of range.
    InvalidPort {
        /// What is wrong with it.
        reason: PortError,
    },
    /// The vhost contains a raw `/`; a vhost is one path segment, so write `/` as `%2F`.
    VhostContainsSlash,
    /// A query parameter warren does not know whose name is so close to one it knows
    /// (`hearbeat`, `Heartbeat`) that it is most likely a misspelling of it. Parameters that
    /// are not close to a known one are ignored with a warning (see the module docs).
    UnknownParameter {
        /// Its (percent-decoded) name.
        name: String,
        /// The known parameter it resembles.
        did_you_mean: &'static str,
    },
    /// A parameter of RabbitMQ's Erlang client that warren does not implement and will not
    /// ignore, because the connection would then be less strict than the URI asks.
    UnsupportedParameter {
        /// Its name.
        name: &'static str,
        /// Why warren refuses it, and what to do instead.
        reason: &'static str,
    },
    /// A query parameter that may appear once appears several times.
    DuplicateParameter {
        /// Its name.
        name: &'static str,
    },
    /// A query parameter without a value (`?heartbeat` or `?heartbeat=`).
    MissingValue {
        /// Its name.
        parameter: &'static str,
    },
    /// A query parameter with a value it cannot take.
    InvalidValue {
        /// Its name.
        parameter: &'static str,
        /// What it takes.
        expected: &'static str,
    },
    /// A TLS parameter (`cacertfile`, `certfile`, `keyfile`, `server_name_indication`, `verify`)
    /// in an `amqp://` URI, which does not use TLS.
    TlsParameterWithoutTls {
        /// Its name.
        parameter: &'static str,
    },
}

impl fmt::Display for UriError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("the URI is empty"),
            Self::MissingScheme => f.write_str("the URI must start with amqp:// or amqps://"),
            Self::UnsupportedScheme { scheme } => write!(
                f,
                "unsupported scheme {scheme:?}; use amqp:// or amqps:// (TLS)"
            ),
            Self::MissingSlashes => {
                f.write_str("the scheme must be followed by `//`, as in amqp://host")
            }
            Self::Fragment => f.write_str(
                "the URI has a fragment (`#...`); a `#` in the user name or password must be \
                 written %23",
            ),
            Self::AtSignAfterHost => f.write_str(
                "the URI has an `@` after the host; percent-encode `/`, `?`, `#` and `@` in the \
                 user name and password (%2F, %3F, %23, %40), and write an `@` in the vhost or a \
                 parameter as %40",
            ),
            Self::InvalidCharacter {
                part,
                character: Some(c),
            } => write!(f, "{part} contains {c:?}, which must be percent-encoded"),
            Self::InvalidCharacter {
                part,
                character: None,
            } => write!(
                f,
                "{part} contains a character that must be percent-encoded (`@` as %40, `:` as \
                 %3A, `/` as %2F, `?` as %3F, `#` as %23, `%` as %25, space as %20)"
            ),
            Self::InvalidPercentEncoding { part } => write!(
                f,
                "{part} has a `%` that is not followed by two hexadecimal digits (write a \
                 literal `%` as %25)"
            ),
            Self::NotUtf8 { part } => {
                write!(f, "{part} does not decode to UTF-8 text")
            }
            Self::MissingHost => {
                f.write_str("the URI has a user name but no host; write the host after the `@`")
            }
            Self::InvalidHost { host, reason } => write!(f, "invalid host {host:?}: {reason}"),
            Self::InvalidPort { reason } => {
                write!(f, "invalid port: {reason}; give a number from 1 to 65535")
            }
            Self::VhostContainsSlash => f.write_str(
                "the vhost contains `/`; write it as %2F (the vhost `/` is amqp://host/%2F)",
            ),
            Self::UnknownParameter { name, did_you_mean } => write!(
                f,
                "unknown query parameter {name:?}; did you mean `{did_you_mean}`? (names are \
                 case-sensitive)"
            ),
            Self::UnsupportedParameter { name, reason } => {
                write!(f, "query parameter `{name}` is not supported: {reason}")
            }
            Self::DuplicateParameter { name } => {
                write!(f, "query parameter `{name}` is given more than once")
            }
            Self::MissingValue { parameter } => {
                write!(f, "query parameter `{parameter}` has no value")
            }
            Self::InvalidValue {
                parameter,
                expected,
            } => write!(f, "invalid value for `{parameter}`: expected {expected}"),
            Self::TlsParameterWithoutTls { parameter } => write!(
                f,
                "`{parameter}` is a TLS parameter but the URI does not use TLS; use amqps://"
            ),
        }
    }
}

impl std::error::Error for UriError {}

impl From<UriError> for crate::Error {
    fn from(error: UriError) -> Self {
        crate::Error::Uri(error)
    }
}

/// Parses an `amqp://` or `amqps://` URI into options; see the [module docs](self) for the syntax.
pub(crate) fn parse(uri: &str) -> Result<ConnectionOptions, crate::Error> {
    parse_uri(uri).map_err(crate::Error::Uri)
}

/// Percent-encodes everything but RFC 3986's unreserved characters (`A-Z a-z 0-9 - . _ ~`), so
/// user names and vhosts can be shown inside a URI: `/` becomes `%2F`.
pub(crate) fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if is_unreserved(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    out
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// The TLS-only query parameters.
const TLS_PARAMETERS: [&str; 5] = [
    "cacertfile",
    "certfile",
    "keyfile",
    "server_name_indication",
    "verify",
];

/// Parameters of RabbitMQ's Erlang client that warren refuses rather than ignores, with why.
/// Ignoring either would connect with less than the URI asks for: a longer certificate chain
/// than `depth` allows, or a key that cannot be decrypted (reported late and less clearly).
const REFUSED_PARAMETERS: [(&str, &str); 2] = [
    (
        "depth",
        "warren does not limit the length of the certificate chain; remove it, or check the \
         chain on the broker's side",
    ),
    (
        "password",
        "it is the password of an encrypted client key, and warren reads unencrypted keys \
         only; decrypt the key (`openssl pkey -in KEY -out KEY.plain`) and remove it",
    ),
];

/// The known query parameters, to turn a decoded name into a `&'static str`.
const PARAMETERS: [&str; 11] = [
    "heartbeat",
    "connection_timeout",
    "frame_max",
    "channel_max",
    "auth_mechanism",
    "connection_name",
    "cacertfile",
    "certfile",
    "keyfile",
    "server_name_indication",
    "verify",
];

fn parse_uri(uri: &str) -> Result<ConnectionOptions, UriError> {
    let uri = uri.trim();
    if uri.is_empty() {
        return Err(UriError::Empty);
    }
    // First, before anything is split: a `#` may come from a password and must not cut it.
    if uri.contains('#') {
        return Err(UriError::Fragment);
    }

    let (tls, rest) = split_scheme(uri)?;
    let mut options = ConnectionOptions::default();
    if tls {
        options.tls = Some(TlsOptions::default());
    }

    // The authority ends at the first `/` or `?`.
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, after) = rest.split_at(authority_end);
    let (path, query) = match after.find('?') {
        Some(i) => (&after[..i], Some(&after[i + 1..])),
        None => (after, None),
    };
    // A `/` or `?` in an unencoded password ends the authority early; the rest of the password
    // then shows up before an `@` in the path or query. Refuse before any of it can be used
    // (as a host, a vhost, a parameter name) or echoed.
    if after.contains('@') {
        return Err(UriError::AtSignAfterHost);
    }

    // User info: up to the last `@` (another `@` inside it is then reported, not split on).
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    if let Some(userinfo) = userinfo {
        let (user, password) = match userinfo.find(':') {
            Some(i) => (&userinfo[..i], Some(&userinfo[i + 1..])),
            None => (userinfo, None),
        };
        check_chars(user, UriPart::Username, is_userinfo_char)?;
        options.username = decode(user, UriPart::Username)?;
        options.password = match password {
            Some(password) => {
                check_chars(password, UriPart::Password, is_userinfo_char)?;
                Password::new(decode(password, UriPart::Password)?)
            }
            None => Password::default(),
        };
    }

    let (host, port) = split_host_port(hostport, userinfo.is_some())?;
    match host {
        Some(host) => options.host = host,
        None if userinfo.is_some() => return Err(UriError::MissingHost),
        None => {} // the default, localhost
    }
    options.port = match port {
        Some(port) => port,
        None if tls => DEFAULT_TLS_PORT,
        None => DEFAULT_PORT,
    };

    if let Some(vhost) = path.strip_prefix('/') {
        if vhost.contains('/') {
            return Err(UriError::VhostContainsSlash);
        }
        check_chars(vhost, UriPart::Vhost, is_pchar)?;
        options.vhost = decode(vhost, UriPart::Vhost)?;
    }

    if let Some(query) = query {
        apply_query(query, &mut options)?;
    }
    Ok(options)
}

/// Splits `scheme://rest`; returns whether the scheme is `amqps`, and `rest`.
fn split_scheme(uri: &str) -> Result<(bool, &str), UriError> {
    let Some(colon) = uri.find(':') else {
        return Err(UriError::MissingScheme);
    };
    let (scheme, rest) = (&uri[..colon], &uri[colon + 1..]);
    let valid_scheme = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !valid_scheme {
        return Err(UriError::MissingScheme);
    }
    let tls = if scheme.eq_ignore_ascii_case("amqp") {
        false
    } else if scheme.eq_ignore_ascii_case("amqps") {
        true
    } else if rest.starts_with("//") {
        return Err(UriError::UnsupportedScheme {
            scheme: scheme.to_owned(),
        });
    } else {
        // `user:password@host` without a scheme lands here: do not echo `user`.
        return Err(UriError::MissingScheme);
    };
    match rest.strip_prefix("//") {
        Some(rest) => Ok((tls, rest)),
        None => Err(UriError::MissingSlashes),
    }
}

/// Splits and checks `host[:port]`. An empty host gives `None`.
///
/// Without user info before it, `hostport` may be `user:password` with the host forgotten, so
/// errors then show it only up to the first `:`, unless it is made of IPv6 address characters
/// only.
fn split_host_port(
    hostport: &str,
    after_userinfo: bool,
) -> Result<(Option<String>, Option<u16>), UriError> {
    let looks_like_ipv6 = hostport
        .bytes()
        .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.' | b'[' | b']'));
    let shown = match hostport.find(':') {
        Some(i) if !after_userinfo && !looks_like_ipv6 => format!("{}:...", &hostport[..i]),
        _ => hostport.to_owned(),
    };
    let (host, port) = if let Some(inner) = hostport.strip_prefix('[') {
        let invalid = |reason| UriError::InvalidHost {
            host: shown.clone(),
            reason,
        };
        let close = inner.find(']').ok_or(invalid(HostError::UnclosedBracket))?;
        let address = &inner[..close];
        let address: Ipv6Addr = address
            .parse()
            .map_err(|_| invalid(HostError::InvalidIpv6))?;
        let after = &inner[close + 1..];
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or(invalid(HostError::TextAfterBracket))?,
            ),
        };
        (Some(address.to_string()), port)
    } else {
        let (host, port) = match hostport.find(':') {
            Some(i) => (&hostport[..i], Some(&hostport[i + 1..])),
            None => (hostport, None),
        };
        if port.is_some_and(|port| port.contains(':')) {
            // `::1`: say how to write it; anything else with two colons is a bad port.
            return Err(if hostport.parse::<Ipv6Addr>().is_ok() {
                UriError::InvalidHost {
                    host: hostport.to_owned(),
                    reason: HostError::UnbracketedIpv6,
                }
            } else {
                UriError::InvalidPort {
                    reason: PortError::NotANumber,
                }
            });
        }
        let host = if host.is_empty() {
            None
        } else {
            Some(parse_reg_name(host)?)
        };
        (host, port)
    };
    let port = port.map(parse_port).transpose()?;
    Ok((host, port))
}

/// Checks and decodes a host name or IPv4 address.
fn parse_reg_name(raw: &str) -> Result<String, UriError> {
    let invalid = |reason| UriError::InvalidHost {
        host: raw.to_owned(),
        reason,
    };
    if let Some(c) = raw
        .chars()
        .find(|&c| !(c.is_ascii() && is_reg_name_char(c as u8)) && c != '%')
    {
        return Err(invalid(HostError::InvalidCharacter(c)));
    }
    let host = decode(raw, UriPart::Host)?;
    if host.parse::<Ipv4Addr>().is_ok() {
        return Ok(host);
    }
    match host
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
    {
        Some(c) => Err(invalid(HostError::InvalidCharacter(c))),
        None => Ok(host),
    }
}

fn parse_port(port: &str) -> Result<u16, UriError> {
    let invalid = |reason| UriError::InvalidPort { reason };
    if port.is_empty() {
        return Err(invalid(PortError::Empty));
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(PortError::NotANumber));
    }
    let digits = port.trim_start_matches('0');
    if digits.len() > 5 {
        return Err(invalid(PortError::TooLarge));
    }
    match digits.parse::<u32>().unwrap_or(0) {
        0 => Err(invalid(PortError::Zero)),
        n => u16::try_from(n).map_err(|_| invalid(PortError::TooLarge)),
    }
}

fn apply_query(query: &str, options: &mut ConnectionOptions) -> Result<(), UriError> {
    check_chars(query, UriPart::Query, is_query_char)?;
    let mut seen: HashSet<&'static str> = HashSet::new();
    let mut mechanisms: Vec<AuthMechanism> = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (raw_name, raw_value) = match pair.find('=') {
            Some(i) => (&pair[..i], Some(&pair[i + 1..])),
            None => (pair, None),
        };
        let name = decode(raw_name, UriPart::ParameterName)?;
        let Some(&name) = PARAMETERS.iter().find(|known| **known == name) else {
            unknown_parameter(name)?;
            continue;
        };
        if TLS_PARAMETERS.contains(&name) && options.tls.is_none() {
            return Err(UriError::TlsParameterWithoutTls { parameter: name });
        }
        if !seen.insert(name) && name != "auth_mechanism" {
            return Err(UriError::DuplicateParameter { name });
        }
        let value = decode(raw_value.unwrap_or(""), UriPart::Parameter(name))?;
        if value.is_empty() {
            return Err(UriError::MissingValue { parameter: name });
        }
        let invalid = |expected| UriError::InvalidValue {
            parameter: name,
            expected,
        };
        match name {
            "heartbeat" => {
                // Whole seconds only, as AMQP negotiates them: `0.5` is refused here rather
                // than rounded, since a URI can say `1` as easily.
                let secs = parse_number::<u16>(&value)
                    .ok_or(invalid("a whole number of seconds from 0 to 65535"))?;
                options.heartbeat = Duration::from_secs(u64::from(secs));
            }
            "connection_timeout" => {
                let millis = parse_number::<u64>(&value)
                    .filter(|&ms| ms > 0)
                    .ok_or(invalid("a whole number of milliseconds, at least 1"))?;
                options.connection_timeout = Duration::from_millis(millis);
            }
            "frame_max" => {
                options.frame_max = parse_number::<u32>(&value)
                    .ok_or(invalid("a whole number of bytes from 0 to 4294967295"))?;
            }
            "channel_max" => {
                options.channel_max =
                    parse_number::<u16>(&value).ok_or(invalid("a whole number from 0 to 65535"))?;
            }
            "auth_mechanism" => {
                let mechanism = AuthMechanism::from_name(&value)
                    .ok_or(invalid("plain, amqplain or external"))?;
                if !mechanisms.contains(&mechanism) {
                    mechanisms.push(mechanism);
                }
            }
            "connection_name" => options.connection_name = Some(value),
            _ => {
                let tls = options
                    .tls
                    .as_mut()
                    .expect("TLS parameters were refused without TLS above");
                match name {
                    "cacertfile" => {
                        // As in RabbitMQ's Erlang client, the file is the whole trust store:
                        // a URI naming its CA trusts no other.
                        tls.ca_file = Some(PathBuf::from(value));
                        tls.roots = TrustRoots::None;
                    }
                    "certfile" => tls.cert_file = Some(PathBuf::from(value)),
                    "keyfile" => tls.key_file = Some(PathBuf::from(value)),
                    "server_name_indication" => {
                        if value == "disable" || !is_server_name(&value) {
                            return Err(invalid(
                                "a host name or IP address (warren always sends SNI and checks \
                                 the name, so `disable` is not supported)",
                            ));
                        }
                        tls.server_name = Some(value);
                    }
                    "verify" => {
                        tls.dangerous_skip_verification =
                            if value.eq_ignore_ascii_case("verify_peer") {
                                false
                            } else if value.eq_ignore_ascii_case("verify_none") {
                                true
                            } else {
                                return Err(invalid("verify_peer or verify_none"));
                            };
                    }
                    _ => unreachable!("every known parameter is handled"),
                }
            }
        }
    }
    if !mechanisms.is_empty() {
        options.mechanisms = mechanisms;
    }
    Ok(())
}

/// Decides about a parameter warren does not know: an error if it is one of
/// [`REFUSED_PARAMETERS`] or looks like a misspelling of a known one, else a logged warning
/// (it is most likely another client's, such as pika's `connection_attempts`). The value is
/// never logged: it may be a secret.
fn unknown_parameter(name: String) -> Result<(), UriError> {
    if let Some(&(name, reason)) = REFUSED_PARAMETERS.iter().find(|(known, _)| *known == name) {
        return Err(UriError::UnsupportedParameter { name, reason });
    }
    if let Some(&known) = PARAMETERS.iter().find(|known| resembles(&name, known)) {
        return Err(UriError::UnknownParameter {
            name,
            did_you_mean: known,
        });
    }
    tracing::warn!(
        parameter = %name,
        "ignoring the URI query parameter `{name}`, which warren does not know"
    );
    Ok(())
}

/// Whether `name` is `known` in another case, or at most two edits (insertions, deletions,
/// substitutions) away from it. Names shorter than 5 characters are never close: too many
/// short names are that close to each other.
fn resembles(name: &str, known: &str) -> bool {
    if name.eq_ignore_ascii_case(known) {
        return true;
    }
    if name.len() < 5 || name.len().abs_diff(known.len()) > 2 {
        return false;
    }
    // Levenshtein distance, one row at a time.
    let (name, known) = (name.as_bytes(), known.as_bytes());
    let mut row: Vec<usize> = (0..=known.len()).collect();
    for (i, &a) in name.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &b) in known.iter().enumerate() {
            let substitution = diagonal + usize::from(a != b);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[known.len()] <= 2
}

/// A decimal number made of digits only (no sign, no spaces).
fn parse_number<T: std::str::FromStr>(value: &str) -> Option<T> {
    if value.bytes().all(|b| b.is_ascii_digit()) {
        value.parse().ok()
    } else {
        None
    }
}

/// Whether `name` can be a TLS server name: an IP address or an ASCII host name.
fn is_server_name(name: &str) -> bool {
    name.parse::<std::net::IpAddr>().is_ok()
        || name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

/// Reports the first character of `raw` that `allowed` refuses (`%` is checked by [`decode`]).
/// Non-ASCII characters are accepted as they are.
fn check_chars(raw: &str, part: UriPart, allowed: fn(u8) -> bool) -> Result<(), UriError> {
    match raw
        .chars()
        .find(|&c| c.is_ascii() && c != '%' && !allowed(c as u8))
    {
        None => Ok(()),
        Some(c) => Err(UriError::InvalidCharacter {
            part,
            character: (part != UriPart::Password).then_some(c),
        }),
    }
}

/// Percent-decodes `raw` into UTF-8 text.
fn decode(raw: &str, part: UriPart) -> Result<String, UriError> {
    if !raw.contains('%') {
        return Ok(raw.to_owned());
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |j: usize| bytes.get(j).and_then(|&b| char::from(b).to_digit(16));
            match (hex(i + 1), hex(i + 2)) {
                (Some(hi), Some(lo)) => {
                    out.push((hi * 16 + lo) as u8);
                    i += 3;
                }
                _ => return Err(UriError::InvalidPercentEncoding { part }),
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| UriError::NotUtf8 { part })
}

/// RFC 3986 `unreserved`.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 `sub-delims`.
fn is_sub_delim(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

/// A user name or password character: the RabbitMQ spec's `unreserved / sub-delims` (so no `:`
/// in either, and no `@`).
fn is_userinfo_char(b: u8) -> bool {
    is_unreserved(b) || is_sub_delim(b)
}

/// RFC 3986 `reg-name` characters.
fn is_reg_name_char(b: u8) -> bool {
    is_unreserved(b) || is_sub_delim(b)
}

/// RFC 3986 `pchar` (for the one-segment vhost).
fn is_pchar(b: u8) -> bool {
    is_unreserved(b) || is_sub_delim(b) || matches!(b, b':' | b'@')
}

/// RFC 3986 `query`.
fn is_query_char(b: u8) -> bool {
    is_pchar(b) || matches!(b, b'/' | b'?')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_handles_escapes_and_errors() {
        let part = UriPart::Vhost;
        assert_eq!(decode("plain", part).unwrap(), "plain");
        assert_eq!(decode("%2f%2F", part).unwrap(), "//");
        assert_eq!(decode("a%20b%25", part).unwrap(), "a b%");
        assert_eq!(decode("caf%C3%A9", part).unwrap(), "café");
        assert_eq!(decode("+", part).unwrap(), "+");
        for bad in ["%", "%2", "%zz", "a%g1", "%%41"] {
            assert_eq!(
                decode(bad, part),
                Err(UriError::InvalidPercentEncoding { part }),
                "{bad}"
            );
        }
        assert_eq!(decode("%ff", part), Err(UriError::NotUtf8 { part }));
        assert_eq!(decode("%C3", part), Err(UriError::NotUtf8 { part }));
    }

    #[test]
    fn encode_component_keeps_only_unreserved() {
        assert_eq!(encode_component("/"), "%2F");
        assert_eq!(encode_component("az-AZ.09_~"), "az-AZ.09_~");
        assert_eq!(encode_component("a b@c:d%"), "a%20b%40c%3Ad%25");
        assert_eq!(encode_component("café"), "caf%C3%A9");
        assert_eq!(encode_component(""), "");
        // encode then decode is the identity
        for s in ["/", "v/h ost", "ü@:?#%", "plain"] {
            assert_eq!(decode(&encode_component(s), UriPart::Vhost).unwrap(), s);
        }
    }

    #[test]
    fn split_scheme_cases() {
        assert_eq!(split_scheme("amqp://h"), Ok((false, "h")));
        assert_eq!(split_scheme("AMQPS://h"), Ok((true, "h")));
        assert_eq!(split_scheme("aMqP://"), Ok((false, "")));
        assert_eq!(split_scheme("amqp:h"), Err(UriError::MissingSlashes));
        assert_eq!(split_scheme("amqps:/h"), Err(UriError::MissingSlashes));
        assert_eq!(split_scheme("host"), Err(UriError::MissingScheme));
        assert_eq!(split_scheme("://h"), Err(UriError::MissingScheme));
        assert_eq!(split_scheme("1amqp://h"), Err(UriError::MissingScheme));
        assert_eq!(
            split_scheme("user:secret@host"),
            Err(UriError::MissingScheme)
        );
        assert_eq!(
            split_scheme("http://h"),
            Err(UriError::UnsupportedScheme {
                scheme: "http".into()
            })
        );
    }

    #[test]
    fn host_port_cases() {
        let ok = |s: &str| split_host_port(s, true).unwrap();
        assert_eq!(ok(""), (None, None));
        assert_eq!(ok("h"), (Some("h".into()), None));
        assert_eq!(ok("h:1"), (Some("h".into()), Some(1)));
        assert_eq!(ok(":99"), (None, Some(99)));
        assert_eq!(ok("[::1]"), (Some("::1".into()), None));
        assert_eq!(ok("[::1]:5671"), (Some("::1".into()), Some(5671)));
        assert_eq!(
            ok("[2001:DB8::0001]"),
            (Some("2001:db8::1".into()), None),
            "IPv6 addresses are normalised"
        );
        assert_eq!(ok("10.0.0.1:65535"), (Some("10.0.0.1".into()), Some(65535)));
        assert_eq!(ok("ho%61st"), (Some("hoast".into()), None));
        assert_eq!(ok("h:00080"), (Some("h".into()), Some(80)));
        let port = |reason| Err(UriError::InvalidPort { reason });
        assert_eq!(split_host_port("h:", true), port(PortError::Empty));
        assert_eq!(split_host_port("h:x", true), port(PortError::NotANumber));
        assert_eq!(split_host_port("h:-1", true), port(PortError::NotANumber));
        assert_eq!(split_host_port("h:+1", true), port(PortError::NotANumber));
        assert_eq!(split_host_port("h:0", true), port(PortError::Zero));
        assert_eq!(split_host_port("h:000", true), port(PortError::Zero));
        assert_eq!(split_host_port("h:65536", true), port(PortError::TooLarge));
        assert_eq!(
            split_host_port("h:99999999999999999999", true),
            port(PortError::TooLarge)
        );
        let host = |host: &str, reason| {
            Err(UriError::InvalidHost {
                host: host.into(),
                reason,
            })
        };
        assert_eq!(
            split_host_port("[::1", true),
            host("[::1", HostError::UnclosedBracket)
        );
        assert_eq!(
            split_host_port("[nope]", true),
            host("[nope]", HostError::InvalidIpv6)
        );
        assert_eq!(
            split_host_port("[fe80::1%25eth0]", true),
            host("[fe80::1%25eth0]", HostError::InvalidIpv6)
        );
        assert_eq!(
            split_host_port("[::1]x", true),
            host("[::1]x", HostError::TextAfterBracket)
        );
        assert_eq!(
            split_host_port("::1", true),
            host("::1", HostError::UnbracketedIpv6)
        );
        assert_eq!(split_host_port("a:b:c", true), port(PortError::NotANumber));
        // Without user info, `user:password` may stand where the host should: shown up to `:`.
        assert_eq!(
            split_host_port("[user:secret", false),
            host("[user:...", HostError::UnclosedBracket)
        );
        assert_eq!(
            split_host_port("[user:secret", true),
            host("[user:secret", HostError::UnclosedBracket)
        );
        assert_eq!(
            split_host_port("h st", true),
            host("h st", HostError::InvalidCharacter(' '))
        );
        assert_eq!(
            split_host_port("h%20st", true),
            host("h%20st", HostError::InvalidCharacter(' '))
        );
        assert_eq!(
            split_host_port("h%2Fst", true),
            host("h%2Fst", HostError::InvalidCharacter('/'))
        );
        assert_eq!(
            split_host_port("hôst", true),
            host("hôst", HostError::InvalidCharacter('ô'))
        );
        assert_eq!(
            split_host_port("h%", true),
            Err(UriError::InvalidPercentEncoding {
                part: UriPart::Host
            })
        );
    }

    #[test]
    fn userinfo_is_decoded() {
        let options = parse_uri("amqp://us%65r:p%40ss%3Aw%2Fo%3Frd%23%25@host").unwrap();
        assert_eq!(options.username, "user");
        assert_eq!(options.password.expose(), "p@ss:w/o?rd#%");
        let options = parse_uri("amqp://user%61:%61pass@ho%61st:10000/v%2fhost").unwrap();
        assert_eq!(
            (options.username.as_str(), options.password.expose()),
            ("usera", "apass")
        );
        assert_eq!((options.host.as_str(), options.port), ("hoast", 10000));
        assert_eq!(options.vhost, "v/host");
    }

    #[test]
    fn password_defaults() {
        let no_userinfo = parse_uri("amqp://host").unwrap();
        assert_eq!(
            (no_userinfo.username.as_str(), no_userinfo.password.expose()),
            ("guest", "guest")
        );
        let user_only = parse_uri("amqp://bob@host").unwrap();
        assert_eq!(
            (user_only.username.as_str(), user_only.password.expose()),
            ("bob", "")
        );
        let empty_password = parse_uri("amqp://bob:@host").unwrap();
        assert_eq!(empty_password.password.expose(), "");
        let empty_user = parse_uri("amqp://:pw@host").unwrap();
        assert_eq!(
            (empty_user.username.as_str(), empty_user.password.expose()),
            ("", "pw")
        );
        let non_ascii = parse_uri("amqp://j%C3%BCrgen:p%C3%A4ss@host").unwrap();
        assert_eq!(
            (non_ascii.username.as_str(), non_ascii.password.expose()),
            ("jürgen", "päss")
        );
        let raw_non_ascii = parse_uri("amqp://jürgen:päss@host").unwrap();
        assert_eq!(raw_non_ascii.password.expose(), "päss");
    }

    /// Every malformed URI that carries the password somewhere: no error shows it.
    #[test]
    fn errors_never_contain_the_password() {
        const SECRET: &str = "Zq7xSECRETpw";
        let uris = [
            "amqp://user:Zq7xSECRETpw@",
            "amqp://user:Zq7xSECRETpw@/",
            "amqp://user:Zq7x/SECRETpw@host",
            "amqp://user:Zq7x?SECRETpw@host",
            "amqp://user:Zq7x#SECRETpw@host",
            "amqp://user:Zq7xSECRETpw#@host",
            "amqp://user:Zq7x@SECRETpw@host",
            "amqp://user:Zq7x:SECRETpw@host",
            "amqp://user:Zq7x SECRETpw@host",
            "amqp://user:Zq7x%SECRETpw@host",
            "amqp://user:Zq7xSECRETpw%ff@host",
            "amqp://user:Zq7xSECRETpw@host:port",
            "amqp://user:Zq7xSECRETpw@host:0",
            "amqp://user:Zq7xSECRETpw@h st",
            "amqp://user:Zq7xSECRETpw@[::1",
            "amqp://user:Zq7xSECRETpw@host/a/b",
            "amqp://user:Zq7xSECRETpw@host?hearbeat=1",
            "amqp://user:Zq7xSECRETpw@host?heartbeat=x",
            "amqp://user:Zq7xSECRETpw@host?cacertfile=/x",
            "http://user:Zq7xSECRETpw@host",
            "user:Zq7xSECRETpw@host",
            "amqp:user:Zq7xSECRETpw@host",
            "amqp://user:Zq7xSECRETpw",
            "amqp://Zq7xSECRETpw@host:x",
            "amqp://user:Zq7xSECRETpw@host:1:2",
        ];
        for uri in uris {
            let error = parse_uri(uri).expect_err(uri);
            for text in [error.to_string(), format!("{error:?}")] {
                assert!(!text.contains(SECRET), "{uri} -> {text}");
                assert!(!text.contains("Zq7x"), "{uri} -> {text}");
                assert!(!text.contains("SECRETpw"), "{uri} -> {text}");
            }
        }
    }
}
