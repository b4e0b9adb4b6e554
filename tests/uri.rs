//! `amqp://` and `amqps://` URIs through the public API: `str::parse::<ConnectionOptions>()`.
//!
//! Table-driven: valid URIs with every field they set, invalid URIs with the exact error, and
//! the rule that no password ever shows in `Display`, `Debug` or an error.

use std::path::PathBuf;
use std::time::Duration;

use warren::{
    AuthMechanism, ConnectionOptions, Error, HostError, PortError, TlsOptions, TrustRoots,
    UriError, UriPart,
};

fn parse(uri: &str) -> Result<ConnectionOptions, UriError> {
    match uri.parse::<ConnectionOptions>() {
        Ok(options) => Ok(options),
        Err(Error::Uri(error)) => Err(error),
        Err(other) => panic!("{uri}: expected Error::Uri, got {other:?}"),
    }
}

fn tls() -> Option<TlsOptions> {
    Some(TlsOptions::default())
}

/// (uri, tls, user, host, port, vhost)
type Authority = (
    &'static str,
    Option<TlsOptions>,
    &'static str,
    &'static str,
    u16,
    &'static str,
);

/// The parts of the URI before the query.
#[test]
fn valid_uris_set_user_host_port_and_vhost() {
    #[rustfmt::skip]
    let cases: &[Authority] = &[
        // The RabbitMQ URI specification's examples (appendix A); `amqp://user:pass@` and
        // `amqp://:@/` are errors in warren (MissingHost, below).
        ("amqp://user:pass@host:10000/vhost", None, "user", "host", 10000, "vhost"),
        ("amqp://user%61:%61pass@ho%61st:10000/v%2fhost", None, "usera", "hoast", 10000, "v/host"),
        ("amqp://", None, "guest", "localhost", 5672, "/"),
        ("amqp://host", None, "guest", "host", 5672, "/"),
        ("amqp://:10000", None, "guest", "localhost", 10000, "/"),
        ("amqp:///vhost", None, "guest", "localhost", 5672, "vhost"),
        ("amqp://host/", None, "guest", "host", 5672, ""),
        ("amqp://host/%2f", None, "guest", "host", 5672, "/"),
        ("amqp://[::1]", None, "guest", "::1", 5672, "/"),
        // Schemes, ports, TLS.
        ("amqps://host", tls(), "guest", "host", 5671, "/"),
        ("AMQPS://host:1234", tls(), "guest", "host", 1234, "/"),
        ("AmQp://host", None, "guest", "host", 5672, "/"),
        ("amqp://host:65535", None, "guest", "host", 65535, "/"),
        ("amqp://host:1", None, "guest", "host", 1, "/"),
        ("amqp://host:05672", None, "guest", "host", 5672, "/"),
        // Hosts.
        ("amqp://127.0.0.1", None, "guest", "127.0.0.1", 5672, "/"),
        ("amqp://[::1]:5673/v", None, "guest", "::1", 5673, "v"),
        ("amqps://[2001:db8::1]", tls(), "guest", "2001:db8::1", 5671, "/"),
        ("amqp://[::FFFF:127.0.0.1]", None, "guest", "::ffff:127.0.0.1", 5672, "/"),
        ("amqp://mq-1.internal_zone.example.com", None, "guest", "mq-1.internal_zone.example.com", 5672, "/"),
        ("amqp://xn--bcher-kva.example", None, "guest", "xn--bcher-kva.example", 5672, "/"),
        // User info.
        ("amqp://user@host", None, "user", "host", 5672, "/"),
        ("amqp://:@host", None, "", "host", 5672, "/"),
        ("amqp://:secret@host", None, "", "host", 5672, "/"),
        ("amqp://a%40b%3Ac%2Fd:x@host", None, "a@b:c/d", "host", 5672, "/"),
        ("amqp://j%C3%BCrgen@host", None, "jürgen", "host", 5672, "/"),
        ("amqp://jürgen@host", None, "jürgen", "host", 5672, "/"),
        ("amqp://o'brien+ops!@host", None, "o'brien+ops!", "host", 5672, "/"),
        // Vhosts.
        ("amqp://host/%2F", None, "guest", "host", 5672, "/"),
        ("amqp://host/%2Fprod%2Feu", None, "guest", "host", 5672, "/prod/eu"),
        ("amqp://host/caf%C3%A9", None, "guest", "host", 5672, "café"),
        ("amqp://host/a:b", None, "guest", "host", 5672, "a:b"),
        ("amqp://host/%40", None, "guest", "host", 5672, "@"),
        ("amqp://host/a+b", None, "guest", "host", 5672, "a+b"),
        ("amqp://host/a%20b", None, "guest", "host", 5672, "a b"),
        // Whitespace around the URI (a final newline from a file) is ignored; an empty query too.
        ("  amqp://host/v\n", None, "guest", "host", 5672, "v"),
        ("amqp://host/v?", None, "guest", "host", 5672, "v"),
        ("amqp://host?", None, "guest", "host", 5672, "/"),
    ];
    for (uri, tls, user, host, port, vhost) in cases {
        let options = parse(uri).unwrap_or_else(|e| panic!("{uri}: {e}"));
        assert_eq!(options.get_tls(), tls.as_ref(), "{uri}: tls");
        assert_eq!(options.get_username(), *user, "{uri}: user");
        assert_eq!(options.get_host(), *host, "{uri}: host");
        assert_eq!(options.get_port(), *port, "{uri}: port");
        assert_eq!(options.get_vhost(), *vhost, "{uri}: vhost");
        // Nothing else changes.
        let defaults = ConnectionOptions::default();
        assert_eq!(options.get_heartbeat(), defaults.get_heartbeat(), "{uri}");
        assert_eq!(
            options.get_auth_mechanisms(),
            defaults.get_auth_mechanisms(),
            "{uri}"
        );
    }
}

/// Query parameters: each sets one option.
#[test]
fn valid_query_parameters() {
    type Check = fn(&ConnectionOptions) -> bool;
    #[rustfmt::skip]
    let cases: &[(&str, Check)] = &[
        ("amqp://h?heartbeat=5", |o| o.get_heartbeat() == Duration::from_secs(5)),
        ("amqp://h?heartbeat=0", |o| o.get_heartbeat() == Duration::ZERO),
        ("amqp://h?heartbeat=65535", |o| o.get_heartbeat() == Duration::from_secs(65535)),
        ("amqp://h?connection_timeout=10000", |o| o.get_connection_timeout() == Duration::from_secs(10)),
        ("amqp://h?connection_timeout=1", |o| o.get_connection_timeout() == Duration::from_millis(1)),
        ("amqp://h?frame_max=131072", |o| o.get_frame_max() == 131_072),
        ("amqp://h?frame_max=0", |o| o.get_frame_max() == 0),
        ("amqp://h?frame_max=4294967295", |o| o.get_frame_max() == u32::MAX),
        ("amqp://h?channel_max=0", |o| o.get_channel_max() == 0),
        ("amqp://h?channel_max=65535", |o| o.get_channel_max() == 65535),
        ("amqp://h?auth_mechanism=external", |o| o.get_auth_mechanisms() == [AuthMechanism::External]),
        ("amqp://h?auth_mechanism=PLAIN", |o| o.get_auth_mechanisms() == [AuthMechanism::Plain]),
        ("amqp://h?auth_mechanism=amqplain&auth_mechanism=plain",
            |o| o.get_auth_mechanisms() == [AuthMechanism::AmqPlain, AuthMechanism::Plain]),
        ("amqp://h?auth_mechanism=External&auth_mechanism=plain&auth_mechanism=EXTERNAL",
            |o| o.get_auth_mechanisms() == [AuthMechanism::External, AuthMechanism::Plain]),
        ("amqp://h?connection_name=billing%20worker%2F1", |o| o.get_connection_name() == Some("billing worker/1")),
        ("amqp://h?connection_name=a+b", |o| o.get_connection_name() == Some("a+b")),
        ("amqp://h?&heartbeat=7&&channel_max=9&", |o| o.get_heartbeat() == Duration::from_secs(7) && o.get_channel_max() == 9),
        ("amqp://h/v?heartbeat=1&frame_max=8192&channel_max=16&connection_timeout=500&connection_name=n",
            |o| o.get_vhost() == "v" && o.get_heartbeat() == Duration::from_secs(1) && o.get_frame_max() == 8192
                && o.get_channel_max() == 16 && o.get_connection_timeout() == Duration::from_millis(500)
                && o.get_connection_name() == Some("n")),
        // The file is the whole trust store, as in RabbitMQ's Erlang client.
        ("amqps://h?cacertfile=/etc/ca.pem", |o| o.get_tls().unwrap().ca_file == Some(PathBuf::from("/etc/ca.pem"))
            && o.get_tls().unwrap().roots == TrustRoots::None),
        ("amqps://h", |o| o.get_tls().unwrap().roots == TrustRoots::default()),
        ("amqps://h?cacertfile=%2Fmy%20certs%2Fca.pem", |o| o.get_tls().unwrap().ca_file == Some(PathBuf::from("/my certs/ca.pem"))),
        ("amqps://h?certfile=c.pem&keyfile=k.pem", |o| {
            let tls = o.get_tls().unwrap();
            tls.cert_file == Some(PathBuf::from("c.pem")) && tls.key_file == Some(PathBuf::from("k.pem"))
        }),
        ("amqps://10.0.0.5?server_name_indication=mq.example.com",
            |o| o.get_tls().unwrap().server_name.as_deref() == Some("mq.example.com") && o.get_host() == "10.0.0.5"),
        ("amqps://h?server_name_indication=127.0.0.1", |o| o.get_tls().unwrap().server_name.as_deref() == Some("127.0.0.1")),
        ("amqps://h?verify=verify_peer", |o| !o.get_tls().unwrap().dangerous_skip_verification),
        ("amqps://h?verify=verify_none", |o| o.get_tls().unwrap().dangerous_skip_verification),
        ("amqps://h?verify=VERIFY_NONE", |o| o.get_tls().unwrap().dangerous_skip_verification),
        // Example B of RabbitMQ's query parameter page.
        ("amqps://myhost?cacertfile=/path/to/ca_certificate.pem&certfile=/path/to/client_certificate.pem\
          &keyfile=/path/to/client_key.pem&verify=verify_peer&server_name_indication=myhost", |o| {
            *o.get_tls().unwrap() == TlsOptions {
                roots: TrustRoots::None,
                ca_file: Some("/path/to/ca_certificate.pem".into()),
                cert_file: Some("/path/to/client_certificate.pem".into()),
                key_file: Some("/path/to/client_key.pem".into()),
                server_name: Some("myhost".into()),
                dangerous_skip_verification: false,
            }
        }),
    ];
    for (uri, check) in cases {
        let options = parse(uri).unwrap_or_else(|e| panic!("{uri}: {e}"));
        assert!(check(&options), "{uri}: {options:?}");
    }
}

#[test]
fn invalid_uris_name_the_part_at_fault() {
    use HostError as H;
    use PortError as P;
    use UriError as E;
    use UriPart::*;
    let host = |host: &str, reason| E::InvalidHost {
        host: host.into(),
        reason,
    };
    let port = |reason| E::InvalidPort { reason };
    #[rustfmt::skip]
    let cases: Vec<(&str, UriError)> = vec![
        ("", E::Empty),
        (" \n", E::Empty),
        ("localhost", E::MissingScheme),
        ("localhost:5672", E::MissingScheme),
        ("user:pass@host", E::MissingScheme),
        ("//host", E::MissingScheme),
        ("http://host", E::UnsupportedScheme { scheme: "http".into() }),
        ("amqp+ssl://host", E::UnsupportedScheme { scheme: "amqp+ssl".into() }),
        ("amqp:host", E::MissingSlashes),
        ("amqps:/host", E::MissingSlashes),
        ("amqp://host#fragment", E::Fragment),
        ("amqp://host/v#", E::Fragment),
        ("amqp://user:pa#ss@host", E::Fragment),
        ("amqp://user:pa/ss@host", E::AtSignAfterHost),
        ("amqp://user:pa?ss@host", E::AtSignAfterHost),
        ("amqp://host/v@h", E::AtSignAfterHost),
        ("amqp://host?connection_name=a@b", E::AtSignAfterHost),
        ("amqp://us er@host", E::InvalidCharacter { part: Username, character: Some(' ') }),
        ("amqp://us@er:pass@host", E::InvalidCharacter { part: Username, character: Some('@') }),
        ("amqp://user[1]@host", E::InvalidCharacter { part: Username, character: Some('[') }),
        ("amqp://user:pa ss@host", E::InvalidCharacter { part: Password, character: None }),
        ("amqp://user:p@ss@host", E::InvalidCharacter { part: Password, character: None }),
        ("amqp://user:pa:ss@host", E::InvalidCharacter { part: Password, character: None }),
        ("amqp://user:pa\"ss@host", E::InvalidCharacter { part: Password, character: None }),
        ("amqp://user%@host", E::InvalidPercentEncoding { part: Username }),
        ("amqp://user:pa%zzss@host", E::InvalidPercentEncoding { part: Password }),
        ("amqp://user:pass%4@host", E::InvalidPercentEncoding { part: Password }),
        ("amqp://ho%zzst", E::InvalidPercentEncoding { part: Host }),
        ("amqp://host/%zz", E::InvalidPercentEncoding { part: Vhost }),
        ("amqp://host?%zz=1", E::InvalidPercentEncoding { part: ParameterName }),
        ("amqp://host?heartbeat=%zz", E::InvalidPercentEncoding { part: Parameter("heartbeat") }),
        ("amqp://%ff@host", E::NotUtf8 { part: Username }),
        ("amqp://user:%ff@host", E::NotUtf8 { part: Password }),
        ("amqp://host/%ff", E::NotUtf8 { part: Vhost }),
        ("amqp://host?connection_name=%C3", E::NotUtf8 { part: Parameter("connection_name") }),
        ("amqp://user:pass@", E::MissingHost),
        ("amqp://user@/vhost", E::MissingHost),
        ("amqp://user@:5672", E::MissingHost),
        ("amqp://:@/", E::MissingHost),
        ("amqp://[::1", host("[::1", H::UnclosedBracket)),
        ("amqp://[::g]", host("[:...", H::InvalidIpv6)),
        ("amqp://[127.0.0.1]", host("[127.0.0.1]", H::InvalidIpv6)),
        ("amqp://[fe80::1%25eth0]", host("[fe80:...", H::InvalidIpv6)),
        ("amqp://u@[fe80::1%25eth0]", host("[fe80::1%25eth0]", H::InvalidIpv6)),
        ("amqp://[::1]5672", host("[::1]5672", H::TextAfterBracket)),
        ("amqp://::1", host("::1", H::UnbracketedIpv6)),
        ("amqp://2001:db8::1/v", host("2001:db8::1", H::UnbracketedIpv6)),
        ("amqp://ho st", host("ho st", H::InvalidCharacter(' '))),
        ("amqp://ho%20st", host("ho%20st", H::InvalidCharacter(' '))),
        ("amqp://host!", host("host!", H::InvalidCharacter('!'))),
        ("amqp://hôst", host("hôst", H::InvalidCharacter('ô'))),
        ("amqp://ho%C3%B4st", host("ho%C3%B4st", H::InvalidCharacter('ô'))),
        ("amqp://host:", port(P::Empty)),
        ("amqp://host:/v", port(P::Empty)),
        ("amqp://host:abc", port(P::NotANumber)),
        ("amqp://host:-1", port(P::NotANumber)),
        ("amqp://host: 1", port(P::NotANumber)),
        ("amqp://host:1:2", port(P::NotANumber)),
        ("amqp://host:0", port(P::Zero)),
        ("amqp://host:65536", port(P::TooLarge)),
        ("amqp://host:4294967297", port(P::TooLarge)),
        ("amqp://host/a/b", E::VhostContainsSlash),
        ("amqp://host//", E::VhostContainsSlash),
        ("amqp://host/a b", E::InvalidCharacter { part: Vhost, character: Some(' ') }),
        ("amqp://host/a%b", E::InvalidPercentEncoding { part: Vhost }),
        ("amqp://host/a[b]", E::InvalidCharacter { part: Vhost, character: Some('[') }),
        ("amqp://host?a b=1", E::InvalidCharacter { part: Query, character: Some(' ') }),
        ("amqp://host?a=<1>", E::InvalidCharacter { part: Query, character: Some('<') }),
        ("amqp://host?Heartbeat=1", E::UnknownParameter { name: "Heartbeat".into(), did_you_mean: "heartbeat" }),
        ("amqp://host?hearbeat=1", E::UnknownParameter { name: "hearbeat".into(), did_you_mean: "heartbeat" }),
        ("amqp://host?heart%62eat=1&h%65artbeet=2", E::UnknownParameter { name: "heartbeet".into(), did_you_mean: "heartbeat" }),
        ("amqps://host?cacertfle=/ca.pem", E::UnknownParameter { name: "cacertfle".into(), did_you_mean: "cacertfile" }),
        ("amqps://host?CONNECTION_NAME=x", E::UnknownParameter { name: "CONNECTION_NAME".into(), did_you_mean: "connection_name" }),
        ("amqp://host?password=x", E::UnsupportedParameter { name: "password", reason: "" }),
        ("amqps://host?depth=2", E::UnsupportedParameter { name: "depth", reason: "" }),
        ("amqp://host?heartbeat=1&heartbeat=2", E::DuplicateParameter { name: "heartbeat" }),
        ("amqp://host?connection_name=a&connection_name=b", E::DuplicateParameter { name: "connection_name" }),
        ("amqps://host?verify=verify_peer&verify=verify_none", E::DuplicateParameter { name: "verify" }),
        ("amqp://host?heartbeat", E::MissingValue { parameter: "heartbeat" }),
        ("amqp://host?heartbeat=", E::MissingValue { parameter: "heartbeat" }),
        ("amqp://host?auth_mechanism=", E::MissingValue { parameter: "auth_mechanism" }),
        ("amqps://host?cacertfile=", E::MissingValue { parameter: "cacertfile" }),
        ("amqp://host?cacertfile=/ca.pem", E::TlsParameterWithoutTls { parameter: "cacertfile" }),
        ("amqp://host?certfile=/c.pem", E::TlsParameterWithoutTls { parameter: "certfile" }),
        ("amqp://host?keyfile=/k.pem", E::TlsParameterWithoutTls { parameter: "keyfile" }),
        ("amqp://host?server_name_indication=h", E::TlsParameterWithoutTls { parameter: "server_name_indication" }),
        ("amqp://host?verify=verify_peer", E::TlsParameterWithoutTls { parameter: "verify" }),
    ];
    for (uri, expected) in &cases {
        match (parse(uri), expected) {
            // The reason is prose; the name is what matters here.
            (
                Err(E::UnsupportedParameter { name, reason }),
                E::UnsupportedParameter { name: expected, .. },
            ) => {
                assert_eq!(name, *expected, "{uri}");
                assert!(!reason.is_empty(), "{uri}");
            }
            (result, expected) => assert_eq!(result.as_ref().err(), Some(expected), "{uri}"),
        }
    }

    // Bad values: the error names the parameter and says what it takes.
    #[rustfmt::skip]
    let bad_values: &[(&str, &str)] = &[
        ("amqp://host?heartbeat=x", "heartbeat"),
        ("amqp://host?heartbeat=-1", "heartbeat"),
        ("amqp://host?heartbeat=+1", "heartbeat"),
        ("amqp://host?heartbeat=1.5", "heartbeat"),
        ("amqp://host?heartbeat=65536", "heartbeat"),
        ("amqp://host?connection_timeout=0", "connection_timeout"),
        ("amqp://host?connection_timeout=1s", "connection_timeout"),
        ("amqp://host?frame_max=4294967296", "frame_max"),
        ("amqp://host?channel_max=65536", "channel_max"),
        ("amqp://host?auth_mechanism=scram-sha-256", "auth_mechanism"),
        ("amqps://host?verify=maybe", "verify"),
        ("amqps://host?verify=true", "verify"),
        ("amqps://host?server_name_indication=disable", "server_name_indication"),
        ("amqps://host?server_name_indication=bad%20name", "server_name_indication"),
    ];
    for (uri, name) in bad_values {
        match parse(uri) {
            Err(E::InvalidValue {
                parameter,
                expected,
            }) => {
                assert_eq!(parameter, *name, "{uri}");
                assert!(!expected.is_empty(), "{uri}");
            }
            other => panic!("{uri}: {other:?}"),
        }
    }
}

/// Parameters of other clients are ignored with a warning naming them (never their value), so
/// that a URI written for pika or the Erlang client works; they change nothing.
#[test]
fn unknown_parameters_of_other_clients_are_ignored_with_a_warning() {
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Logs(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Logs {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let uri = "amqp://user:Kx9Unique7Pw@host?connection_attempts=3&heartbeat=7\
               &retry_delay=Secret42Value&fail_if_no_peer_cert=true&nope";
    let options = tracing::subscriber::with_default(subscriber, || parse(uri)).unwrap();
    let plain = parse("amqp://user:Kx9Unique7Pw@host?heartbeat=7").unwrap();
    assert_eq!(options, plain, "ignored parameters change nothing");

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    for name in [
        "connection_attempts",
        "retry_delay",
        "fail_if_no_peer_cert",
        "nope",
    ] {
        assert!(
            text.lines()
                .any(|line| line.contains("WARN") && line.contains(&format!("`{name}`"))),
            "no warning names {name}:\n{text}"
        );
    }
    assert!(
        !text.contains("heartbeat"),
        "known parameters are not warned about:\n{text}"
    );
    for secret in ["Secret42Value", "Kx9Unique7Pw"] {
        assert!(!text.contains(secret), "a value shows in the log:\n{text}");
    }
}

#[test]
fn errors_are_typed_cloneable_and_say_what_to_do() {
    let error = "amqp://host/a/b".parse::<ConnectionOptions>().unwrap_err();
    let Error::Uri(uri_error) = &error else {
        panic!("{error:?}")
    };
    assert_eq!(uri_error.clone(), UriError::VhostContainsSlash);
    assert_eq!(
        error.to_string(),
        "invalid AMQP URI: the vhost contains `/`; write it as %2F (the vhost `/` is \
         amqp://host/%2F)"
    );
    // The UriError is printed, not returned as the source as well: reporters would print it
    // twice.
    assert!(std::error::Error::source(&error).is_none());

    let texts = [
        ("amqp://host:0", "port"),
        ("amqp://host?hearbeat=5", "did you mean `heartbeat`"),
        ("amqp://host?password=s3cret", "encrypted client key"),
        ("amqp://host?cacertfile=/x", "amqps://"),
        ("amqp://user:p@ss@host", "%40"),
        ("amqp://user:pa/ss@host", "%2F"),
        ("amqp://host/a/b", "%2F"),
        ("http://host", "\"http\""),
        ("amqp://hôst", "punycode"),
        ("amqp://[::1", "[::1"),
    ];
    for (uri, needle) in texts {
        let text = parse(uri).unwrap_err().to_string();
        assert!(text.contains(needle), "{uri}: {text:?} lacks {needle:?}");
    }
}

#[test]
fn display_and_debug_hide_the_password() {
    #[rustfmt::skip]
    let cases = [
        ("amqp://user:pass@host:10000/vhost", "amqp://user:***@host:10000/vhost"),
        ("amqp://host", "amqp://guest:***@host:5672/%2F"),
        ("amqp://host/", "amqp://guest:***@host:5672/"),
        ("amqps://[::1]/%2f", "amqps://guest:***@[::1]:5671/%2F"),
        ("amqp://a%40b%20c:x@h/caf%C3%A9", "amqp://a%40b%20c:***@h:5672/caf%C3%A9"),
        ("amqp://bob@h", "amqp://bob:***@h:5672/%2F"),
    ];
    for (uri, shown) in cases {
        let options = parse(uri).unwrap();
        assert_eq!(options.to_string(), shown, "{uri}");
        let debug = format!("{options:?}");
        assert!(debug.contains(shown), "{uri}: {debug}");
        // What Display shows parses back to the same place.
        let again = parse(shown).unwrap();
        assert_eq!(
            (
                again.get_username(),
                again.get_host(),
                again.get_port(),
                again.get_vhost()
            ),
            (
                options.get_username(),
                options.get_host(),
                options.get_port(),
                options.get_vhost()
            ),
            "{uri}"
        );
    }
}

/// A unique password through valid and invalid URIs: it shows in no `Display`, `Debug` or
/// error text, whole or in part.
#[test]
fn a_unique_password_never_shows() {
    const PASSWORD: &str = "Kx9Unique7Pw";
    const PARTS: [&str; 3] = ["Kx9Unique7Pw", "Kx9", "Unique7Pw"];
    let valid = [
        format!("amqp://user:{PASSWORD}@host/vhost"),
        format!("amqps://user:{PASSWORD}@host?cacertfile=/ca.pem&verify=verify_none"),
        "amqp://user:Kx9%2FUnique7Pw@host".to_owned(),
        format!("amqp://:{PASSWORD}@[::1]:5673/%2F?heartbeat=5&connection_name=c"),
    ];
    for uri in &valid {
        let options = parse(uri).unwrap();
        for text in [
            options.to_string(),
            format!("{options:?}"),
            format!("{options:#?}"),
        ] {
            for part in PARTS {
                assert!(!text.contains(part), "{uri}: {text}");
            }
        }
    }
    let invalid = [
        "amqp://user:Kx9Unique7Pw@",
        "amqp://user:Kx9Unique7Pw@/vhost",
        "amqp://user:Kx9/Unique7Pw@host",
        "amqp://user:Kx9?Unique7Pw@host",
        "amqp://user:Kx9#Unique7Pw@host",
        "amqp://user:Kx9@Unique7Pw@host",
        "amqp://user:Kx9:Unique7Pw@host",
        "amqp://user:Kx9 Unique7Pw@host",
        "amqp://user:Kx9%Unique7Pw@host",
        "amqp://user:Kx9Unique7Pw%ff@host",
        "amqp://user:Kx9Unique7Pw@host:port",
        "amqp://user:Kx9Unique7Pw@host:0",
        "amqp://user:Kx9Unique7Pw@ho st",
        "amqp://user:Kx9Unique7Pw@[::1",
        "amqp://user:Kx9Unique7Pw@host/a/b",
        "amqp://user:Kx9Unique7Pw@host?hearbeat=1",
        "amqp://user:Kx9Unique7Pw@host?heartbeat=x",
        "amqp://user:Kx9Unique7Pw@host?cacertfile=/x",
        "amqp://user:Kx9Unique7Pw",
        "amqp://user:Kx9:Unique7Pw",
        "amqp://[user:Kx9Unique7Pw",
        "amqp:user:Kx9Unique7Pw@host",
        "http://user:Kx9Unique7Pw@host",
        "user:Kx9Unique7Pw@host",
        "amqp://user:Kx9Unique7Pw@host:1:2",
        "amqp://user:Kx9Unique7Pw@hôst",
    ];
    for uri in invalid {
        let error = uri.parse::<ConnectionOptions>().expect_err(uri);
        let Error::Uri(uri_error) = &error else {
            panic!("{uri}: {error:?}")
        };
        for text in [
            error.to_string(),
            format!("{error:?}"),
            uri_error.to_string(),
            format!("{uri_error:?}"),
        ] {
            for part in PARTS {
                assert!(!text.contains(part), "{uri}: {text}");
            }
        }
    }
}
