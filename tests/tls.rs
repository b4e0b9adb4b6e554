//! TLS against real RabbitMQ nodes: the ones `scripts/rabbitmq-tls-node.sh start` runs.
//!
//! ```sh
//! scripts/rabbitmq-tls-node.sh start
//! set -a; eval "$(scripts/rabbitmq-tls-node.sh env)"; set +a
//! cargo test --test tls
//! ```
//!
//! Without `WARREN_TLS_DIR` every test prints why it skips and passes, unless
//! `WARREN_REQUIRE_TLS_NODE=1` (CI sets it), which makes them fail instead.
//!
//! The main node requires a client certificate (`fail_if_no_peer_cert = true`) and offers
//! PLAIN, AMQPLAIN and EXTERNAL, with the certificate's CN as the EXTERNAL user name.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use warren::{
    AuthMechanism, Connection, ConnectionOptions, Error, QueueDeclareOptions, TlsError, TlsOptions,
    TrustRoots,
};

// ===== the nodes =====

/// What `scripts/rabbitmq-tls-node.sh env` exports.
struct Node {
    port: u16,
    /// The TLS 1.1-only node; `None` when the script could not start one.
    tls11_port: Option<u16>,
    /// The node serving an expired certificate.
    expired_port: Option<u16>,
    ca: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    expired_client_cert: PathBuf,
    other_ca: PathBuf,
    user: String,
    password: String,
    external_user: String,
    /// For `rabbitmqctl -n`.
    node_name: String,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn port_var(name: &str) -> Option<u16> {
    var(name).map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a port"))
    })
}

/// The node, or `None` (after saying why) when the tests should skip. Also installs the log
/// capture, before any test connects.
fn node() -> Option<Node> {
    logs();
    let Some(dir) = var("WARREN_TLS_DIR").map(PathBuf::from) else {
        let how = "start it with `scripts/rabbitmq-tls-node.sh start` and export its settings \
                   with `set -a; eval \"$(scripts/rabbitmq-tls-node.sh env)\"; set +a`";
        if required() {
            panic!("WARREN_REQUIRE_TLS_NODE=1 but WARREN_TLS_DIR is unset: no TLS node; {how}");
        }
        skip(&format!(
            "WARREN_TLS_DIR is unset: no TLS node to test against; {how}"
        ));
        return None;
    };
    let file = |var_name: &str, default: &str| {
        var(var_name).map_or_else(|| dir.join(default), PathBuf::from)
    };
    let hostname = Command::new("hostname")
        .arg("-s")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned());
    Some(Node {
        port: port_var("WARREN_TLS_PORT").unwrap_or(5671),
        tls11_port: port_var("WARREN_TLS11_PORT"),
        expired_port: port_var("WARREN_TLS_EXPIRED_PORT"),
        ca: file("WARREN_TLS_CA", "ca_certificate.pem"),
        client_cert: file("WARREN_TLS_CLIENT_CERT", "client_certificate.pem"),
        client_key: file("WARREN_TLS_CLIENT_KEY", "client_key.pem"),
        expired_client_cert: file(
            "WARREN_TLS_EXPIRED_CLIENT_CERT",
            "expired_client_certificate.pem",
        ),
        other_ca: file("WARREN_TLS_OTHER_CA", "other_ca_certificate.pem"),
        user: var("WARREN_TLS_USER").unwrap_or_else(|| "warren-tls".to_owned()),
        password: var("WARREN_TLS_PASSWORD").unwrap_or_else(|| "warren-tls-password".to_owned()),
        external_user: var("WARREN_TLS_EXTERNAL_USER").unwrap_or_else(|| "tls-client".to_owned()),
        node_name: var("WARREN_TLS_NODE").unwrap_or_else(|| format!("rabbittls@{hostname}")),
    })
}

/// Whether the tests must run rather than skip (`WARREN_REQUIRE_TLS_NODE=1`, as in CI).
fn required() -> bool {
    var("WARREN_REQUIRE_TLS_NODE").as_deref() == Some("1")
}

/// Says that the running test skips and why, past the test harness's output capture, so that
/// `cargo test` shows it and `scripts/test.sh` counts it: `SKIPPED tls: <test>: <reason>`.
fn skip(reason: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("unnamed-test");
    let _ = writeln!(std::io::stderr(), "SKIPPED tls: {test}: {reason}");
}

/// `port`, the TLS port of one of the extra nodes (from `var_name`), or `None` after saying why
/// the test skips; when the tests are [`required`], a missing node fails the test instead.
fn extra_node(port: Option<u16>, var_name: &str, what: &str) -> Option<u16> {
    if port.is_none() {
        let reason = format!("{var_name} is unset: the script started no node {what}");
        assert!(!required(), "WARREN_REQUIRE_TLS_NODE=1 but {reason}");
        skip(&reason);
    }
    port
}

macro_rules! node_or_skip {
    () => {
        match node() {
            Some(node) => node,
            None => return,
        }
    };
}

impl Node {
    /// TLS trusting the test CA only, with the client certificate.
    fn tls(&self) -> TlsOptions {
        TlsOptions {
            roots: TrustRoots::None,
            ca_file: Some(self.ca.clone()),
            cert_file: Some(self.client_cert.clone()),
            key_file: Some(self.client_key.clone()),
            ..TlsOptions::default()
        }
    }

    /// Options for the main node at `host`, named `name` so that `rabbitmqctl` can find it.
    fn options(&self, host: &str, name: &str) -> ConnectionOptions {
        ConnectionOptions::new()
            .host(host)
            .port(self.port)
            .tls(self.tls())
            .connection_name(name)
            .connection_timeout(Duration::from_secs(20))
    }

    /// The user of the connection named `name`, as the node reports it.
    fn user_of(&self, name: &str) -> String {
        let mut last = String::new();
        for _ in 0..50 {
            let output = Command::new("rabbitmqctl")
                .args([
                    "-q",
                    "-n",
                    &self.node_name,
                    "list_connections",
                    "user",
                    "client_properties",
                ])
                .output()
                .expect("running rabbitmqctl");
            last = String::from_utf8_lossy(&output.stdout).into_owned();
            if let Some(line) = last.lines().find(|line| line.contains(name)) {
                return line.split('\t').next().unwrap_or_default().to_owned();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "rabbitmqctl -n {} list_connections shows no connection named {name}:\n{last}",
            self.node_name
        );
    }
}

/// A name no other test or run uses.
fn unique(what: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("warren-tls-test-{what}-{}-{nanos}", std::process::id())
}

/// The TLS error inside `error`, or a panic naming what came instead.
fn tls_error(error: Error) -> TlsError {
    match error {
        Error::Tls(tls) => tls,
        other => panic!("expected Error::Tls, got {other:?} ({other})"),
    }
}

async fn connect_err(options: ConnectionOptions) -> Error {
    match Connection::connect_with(options).await {
        Ok(connection) => panic!("connecting should fail, but it worked: {connection:?}"),
        Err(error) => error,
    }
}

/// Uses the connection a little, so we know it really works.
async fn exercise(connection: &Connection) {
    let channel = connection
        .open_channel()
        .await
        .expect("opening a channel over TLS");
    let options = QueueDeclareOptions {
        exclusive: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare("", options)
        .await
        .expect("declaring a queue over TLS");
}

// ===== successful connections =====

#[tokio::test]
async fn mutual_tls_with_external_logs_in_as_the_certificate_cn() {
    let node = node_or_skip!();
    for host in ["localhost", "127.0.0.1"] {
        let name = unique("external");
        let options = node
            .options(host, &name)
            // Any user name here is ignored: EXTERNAL takes the identity from the certificate.
            .username("not-the-cn")
            .auth_mechanism(AuthMechanism::External);
        let connection = Connection::connect_with(options)
            .await
            .unwrap_or_else(|e| panic!("EXTERNAL over mutual TLS to {host}: {e}"));
        exercise(&connection).await;
        assert_eq!(node.user_of(&name), node.external_user, "{host}");
        connection.close().await.unwrap();
    }
}

#[tokio::test]
async fn plain_and_amqplain_over_tls() {
    let node = node_or_skip!();
    for mechanism in [AuthMechanism::Plain, AuthMechanism::AmqPlain] {
        let name = unique("plain");
        let options = node
            .options("localhost", &name)
            .username(node.user.as_str())
            .password(node.password.as_str())
            .auth_mechanism(mechanism);
        let connection = Connection::connect_with(options)
            .await
            .unwrap_or_else(|e| panic!("{mechanism} over TLS: {e}"));
        exercise(&connection).await;
        assert_eq!(node.user_of(&name), node.user, "{mechanism}");
        connection.close().await.unwrap();
    }
}

#[tokio::test]
async fn amqps_uris_with_tls_parameters() {
    let node = node_or_skip!();
    let query = format!(
        "cacertfile={}&certfile={}&keyfile={}&verify=verify_peer",
        node.ca.display(),
        node.client_cert.display(),
        node.client_key.display()
    );
    // EXTERNAL, by IP address (checked against the certificate's IP SAN).
    let name = unique("uri-external");
    let uri = format!(
        "amqps://127.0.0.1:{}/%2F?{query}&auth_mechanism=external&connection_name={name}",
        node.port
    );
    let connection = Connection::connect(&uri)
        .await
        .unwrap_or_else(|e| panic!("{uri}: {e}"));
    exercise(&connection).await;
    assert_eq!(node.user_of(&name), node.external_user);
    connection.close().await.unwrap();

    // PLAIN, reaching 127.0.0.1 under the certificate's name through server_name_indication.
    let name = unique("uri-plain");
    let uri = format!(
        "amqps://{}:{}@127.0.0.1:{}?{query}&server_name_indication=localhost&connection_name={name}",
        node.user, node.password, node.port
    );
    let connection = Connection::connect(&uri)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    exercise(&connection).await;
    assert_eq!(node.user_of(&name), node.user);
    connection.close().await.unwrap();
}

// ===== certificates the client refuses: before any AMQP byte =====
//
// `connect_with` completes the TLS handshake before it writes the AMQP protocol header, so a
// certificate the client refuses should end the connection while TLS is still negotiating.
// These tests do not take that on trust: each connects through a `Relay` that keeps every byte
// the client sends, and `check_no_amqp_byte` proves from those bytes that the client never got
// far enough to send application data.

/// A TCP relay in front of a node's TLS port that keeps every byte the client sends.
struct Relay {
    port: u16,
    task: tokio::task::JoinHandle<Vec<u8>>,
}

impl Relay {
    /// Listens on `ip`, any free port, and relays one connection to `127.0.0.1:to`.
    async fn start(ip: &str, to: u16) -> Self {
        let listener = TcpListener::bind((ip, 0))
            .await
            .unwrap_or_else(|e| panic!("binding a relay on {ip}: {e}"));
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (client, _) = listener.accept().await.expect("accepting the client");
            let server = TcpStream::connect(("127.0.0.1", to))
                .await
                .unwrap_or_else(|e| panic!("the relay connecting to port {to}: {e}"));
            let (mut from_client, mut to_client) = client.into_split();
            let (mut from_server, mut to_server) = server.into_split();
            let downstream = tokio::spawn(async move {
                let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
            });
            let mut sent = Vec::new();
            let mut buf = [0; 8192];
            // Until the client closes (or resets) its side.
            while let Ok(n @ 1..) = from_client.read(&mut buf).await {
                sent.extend_from_slice(&buf[..n]);
                if to_server.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
            downstream.abort();
            sent
        });
        Self { port, task }
    }

    /// Everything the client sent, once it has closed the connection.
    async fn sent(self) -> Vec<u8> {
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("the client closes its connection to the relay")
            .expect("the relay task")
    }
}

/// Checks that `sent`, everything a client sent on one connection, holds no AMQP byte, or says
/// what it holds instead.
///
/// The bytes must be TLS records only (the AMQP protocol header in the clear, `AMQP\0\0\x09\x01`,
/// does not parse as one), and they must show that the client never sent its side of the
/// handshake past the ClientHello: no data can be sent before the client's Finished (warren
/// does not enable TLS 1.3 early data), and the client sends its certificate, key exchange and
/// Finished only after it has accepted the server's certificate. By record type:
/// - handshake (22): a ClientHello, whole, and nothing else (TLS 1.2 would send the rest of
///   its flight in handshake records too, in the clear or, for the Finished, encrypted);
/// - change_cipher_spec (20): allowed (TLS 1.3 sends a dummy one; in TLS 1.2 the Finished
///   that follows it is a handshake record, refused above);
/// - alert (21): allowed, 2 bytes;
/// - application_data (23), which TLS 1.3 uses for every encrypted record: 19 bytes only, an
///   encrypted alert (2 bytes, the inner content type, a 16-byte AEAD tag). The client's
///   encrypted Finished alone takes at least 4 + 32 + 1 + 16 = 53 bytes, and an AMQP protocol
///   header 8 + 1 + 16 = 25.
fn check_no_amqp_byte(sent: &[u8]) -> Result<(), String> {
    const HANDSHAKE: u8 = 22;
    const CHANGE_CIPHER_SPEC: u8 = 20;
    const ALERT: u8 = 21;
    const APPLICATION_DATA: u8 = 23;
    const ENCRYPTED_ALERT_LEN: usize = 2 + 1 + 16;
    /// Whether `payload` is one whole ClientHello (handshake type 1, 24-bit length).
    fn is_client_hello(payload: &[u8]) -> bool {
        match *payload {
            [1, a, b, c, ref body @ ..] => u32::from_be_bytes([0, a, b, c]) as usize == body.len(),
            _ => false,
        }
    }

    if sent.is_empty() {
        return Err("the client sent nothing, not even a ClientHello".to_owned());
    }
    let mut rest = sent;
    let mut index = 0;
    while !rest.is_empty() {
        let at = sent.len() - rest.len();
        let [kind, major, _minor, len_hi, len_lo, ..] = *rest else {
            return Err(format!(
                "a truncated record header at byte {at}: {rest:02x?}"
            ));
        };
        let len = usize::from(u16::from_be_bytes([len_hi, len_lo]));
        if major != 3 || len > (1 << 14) + 256 {
            return Err(format!(
                "bytes that are not a TLS record at byte {at} (plain text?): {:02x?}",
                &rest[..rest.len().min(16)]
            ));
        }
        let Some(payload) = rest.get(5..5 + len) else {
            return Err(format!("record {index} is cut short at byte {at}"));
        };
        match (kind, payload) {
            (HANDSHAKE, _) if is_client_hello(payload) => {}
            (HANDSHAKE, _) => {
                return Err(format!(
                    "record {index} is a handshake record other than a ClientHello ({len} bytes): \
                     the client went on with the handshake"
                ));
            }
            (CHANGE_CIPHER_SPEC, [1]) => {}
            (ALERT, [_, _]) => {}
            (APPLICATION_DATA, _) if len == ENCRYPTED_ALERT_LEN => {}
            (APPLICATION_DATA, _) => {
                return Err(format!(
                    "record {index} is an encrypted record of {len} bytes, longer than an \
                     alert: handshake messages or application data"
                ));
            }
            _ => return Err(format!("record {index} has type {kind} and {len} bytes")),
        }
        rest = &rest[5 + len..];
        index += 1;
    }
    Ok(())
}

/// Connects with `options` (whose host must resolve to `ip`) through a relay on `ip` to the
/// TLS port `to`, expects a TLS error, and checks that the client sent no AMQP byte.
async fn refused_before_any_amqp_byte(options: ConnectionOptions, ip: &str, to: u16) -> TlsError {
    let relay = Relay::start(ip, to).await;
    let error = tls_error(connect_err(options.port(relay.port)).await);
    if let Err(what) = check_no_amqp_byte(&relay.sent().await) {
        panic!(
            "the connection failed with {error:?}, but the client sent more than a refused handshake: {what}"
        );
    }
    error
}

/// The check above is not vacuous: a working connection, through the same relay, fails it.
#[tokio::test]
async fn the_relay_sees_the_amqp_bytes_of_a_working_connection() {
    let node = node_or_skip!();
    let relay = Relay::start("127.0.0.1", node.port).await;
    let options = node
        .options("127.0.0.1", &unique("relay"))
        .port(relay.port)
        .auth_mechanism(AuthMechanism::External);
    let connection = Connection::connect_with(options).await.unwrap();
    exercise(&connection).await;
    connection.close().await.unwrap();
    drop(connection);
    let error = check_no_amqp_byte(&relay.sent().await)
        .expect_err("a working connection sends application data");
    assert!(error.contains("encrypted record"), "{error}");

    // Nor does the check accept plain AMQP.
    let error = check_no_amqp_byte(b"AMQP\x00\x00\x09\x01").unwrap_err();
    assert!(error.contains("not a TLS record"), "{error}");
}

#[tokio::test]
async fn a_wrong_host_name_is_refused() {
    let node = node_or_skip!();
    // 127.0.0.2 reaches the relay (all of 127/8 is loopback) but is not in the certificate.
    let options = node.options("127.0.0.2", "wrong-ip");
    let error = refused_before_any_amqp_byte(options, "127.0.0.2", node.port).await;
    assert!(
        matches!(&error, TlsError::NotValidForName { server_name, presented }
            if server_name == "127.0.0.2" && presented.iter().any(|n| n == "localhost")),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("not valid for \"127.0.0.2\""),
        "{error}"
    );
    // A name the certificate does not list, through SNI.
    let mut tls = node.tls();
    tls.server_name = Some("wrong.example".into());
    let options = node.options("127.0.0.1", "wrong-name").tls(tls);
    let error = refused_before_any_amqp_byte(options, "127.0.0.1", node.port).await;
    assert!(
        matches!(&error, TlsError::NotValidForName { server_name, .. } if server_name == "wrong.example"),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("not valid for \"wrong.example\""),
        "{error}"
    );
}

#[tokio::test]
async fn an_untrusted_ca_is_refused() {
    let node = node_or_skip!();
    let mut tls = node.tls();
    tls.ca_file = Some(node.other_ca.clone());
    let options = node.options("localhost", "other-ca").tls(tls);
    let error = refused_before_any_amqp_byte(options, "127.0.0.1", node.port).await;
    assert!(
        matches!(&error, TlsError::UnknownIssuer { server_name } if server_name == "localhost"),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("not signed by a trusted CA"),
        "{error}"
    );
    // With the platform roots only, the test CA is unknown too.
    let mut tls = node.tls();
    tls.roots = TrustRoots::Platform;
    tls.ca_file = None;
    match connect_err(node.options("localhost", "platform").tls(tls)).await {
        Error::Tls(TlsError::UnknownIssuer { .. } | TlsError::NoTrustRoots { .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_expired_server_certificate_is_refused() {
    let node = node_or_skip!();
    let Some(port) = extra_node(
        node.expired_port,
        "WARREN_TLS_EXPIRED_PORT",
        "with an expired certificate",
    ) else {
        return;
    };
    let options = node.options("localhost", "expired");
    let error = refused_before_any_amqp_byte(options, "127.0.0.1", port).await;
    assert!(matches!(error, TlsError::Expired { .. }), "{error:?}");
    assert!(error.to_string().contains("has expired"), "{error}");
}

#[tokio::test]
async fn dangerous_skip_verification_connects_anyway_and_warns() {
    let node = node_or_skip!();
    let Some(port) = extra_node(
        node.expired_port,
        "WARREN_TLS_EXPIRED_PORT",
        "with an expired certificate",
    ) else {
        return;
    };
    // Expired, and reached by a name the certificate does not list, with no CA at all.
    let uri = format!(
        "amqps://{}:{}@127.0.0.2:{port}?verify=verify_none",
        node.user, node.password
    );
    let connection = Connection::connect(&uri)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    connection.close().await.unwrap();
    let logs = logs().text();
    assert!(
        logs.lines().any(|line| line.contains("WARN")
            && line.contains("verification is off")
            && line.contains("127.0.0.2")),
        "{logs}"
    );
}

// ===== what the server refuses =====

#[tokio::test]
async fn a_missing_client_certificate_is_reported_clearly() {
    let node = node_or_skip!();
    // TLS 1.3 reports the refusal only after the handshake, on the first read or write; the
    // write sometimes fails first (broken pipe, reset). Repeat to meet both orders.
    for attempt in 0..8 {
        let mut tls = node.tls();
        tls.cert_file = None;
        tls.key_file = None;
        let options = node
            .options("localhost", "no-cert")
            .tls(tls)
            .username(node.user.as_str())
            .password(node.password.as_str());
        let error = connect_err(options).await;
        assert!(
            matches!(error, Error::Tls(TlsError::ClientCertificateRequired)),
            "attempt {attempt}: {error:?} ({error})"
        );
        assert!(error.to_string().contains("cert_file"), "{error}");
    }
}

#[tokio::test]
async fn an_expired_client_certificate_is_reported_clearly() {
    let node = node_or_skip!();
    let mut tls = node.tls();
    tls.cert_file = Some(node.expired_client_cert.clone());
    let options = node
        .options("localhost", "expired-client")
        .tls(tls)
        .auth_mechanism(AuthMechanism::External);
    let error = connect_err(options).await;
    assert!(
        matches!(&error, Error::Tls(TlsError::ClientCertificateRejected { alert }) if alert == "CertificateExpired"),
        "{error:?} ({error})"
    );
}

#[tokio::test]
async fn a_server_limited_to_tls_1_1_is_refused() {
    let node = node_or_skip!();
    let Some(port) = extra_node(node.tls11_port, "WARREN_TLS11_PORT", "limited to TLS 1.1") else {
        return;
    };
    let mut tls = node.tls();
    tls.cert_file = None;
    tls.key_file = None;
    let options = node.options("localhost", "tls11").tls(tls);
    let error = refused_before_any_amqp_byte(options, "127.0.0.1", port).await;
    assert!(matches!(error, TlsError::ProtocolVersion), "{error:?}");
    assert!(error.to_string().contains("TLS 1.2"), "{error}");
}

// ===== the password never shows =====

/// Every log line of this test binary, at TRACE level: a process-wide subscriber, because the
/// connection drivers run on runtime threads and per-thread subscribers miss events when tests
/// run in parallel.
fn logs() -> &'static Logs {
    static LOGS: OnceLock<Logs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other subscriber in this test binary");
        logs
    })
}

/// A buffer of log output.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One run with a unique password: a user that has it logs in over TLS, a wrong one is
/// refused, TLS failures happen with it set; the password is in no `Display`, `Debug`, error
/// text or log line (TRACE level, every test of this binary, the connection drivers included).
#[tokio::test]
async fn a_unique_password_shows_nowhere() {
    let node = node_or_skip!();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let password = format!("Pw{nanos:x}Zq{}", std::process::id());
    let user = unique("pw-user");
    let mut texts: Vec<String> = Vec::new();

    // A user with that password (removed at the end).
    let ctl = |args: &[&str]| {
        let status = Command::new("rabbitmqctl")
            .args(["-q", "-n", &node.node_name])
            .args(args)
            .output()
            .expect("running rabbitmqctl");
        assert!(status.status.success(), "rabbitmqctl {args:?}: {status:?}");
    };
    ctl(&["add_user", &user, &password]);
    ctl(&["set_permissions", "-p", "/", &user, ".*", ".*", ".*"]);

    let uri = format!(
        "amqps://{user}:{password}@localhost:{}/%2F?cacertfile={}&certfile={}&keyfile={}\
         &auth_mechanism=plain&heartbeat=5",
        node.port,
        node.ca.display(),
        node.client_cert.display(),
        node.client_key.display()
    );
    let options: ConnectionOptions = uri.parse().unwrap();
    texts.push(options.to_string());
    texts.push(format!("{options:?}"));
    texts.push(format!("{options:#?}"));

    // Success: the password is right.
    let connection = Connection::connect_with(options.clone()).await.unwrap();
    exercise(&connection).await;
    texts.push(format!("{connection:?}"));
    connection.close().await.unwrap();

    // Failures with the password set: wrong password, wrong host name, untrusted CA, no
    // client certificate, a malformed URI.
    let wrong = format!("{password}x");
    let mut failures = vec![
        options.clone().password(wrong.as_str()),
        options.clone().host("127.0.0.2"),
    ];
    let mut tls = node.tls();
    tls.ca_file = Some(node.other_ca.clone());
    failures.push(options.clone().tls(tls));
    let mut tls = node.tls();
    tls.cert_file = None;
    tls.key_file = None;
    failures.push(options.clone().tls(tls));
    for failing in failures {
        let error = connect_err(failing).await;
        texts.push(error.to_string());
        texts.push(format!("{error:?}"));
    }
    for bad in [
        format!("amqps://{user}:{password}@localhost:0/"),
        format!("amqps://{user}:{password}@localhost/a/b"),
        format!("amqps://{user}:{password}@"),
        format!("amqp://{user}:{password}@localhost?cacertfile=/x"),
    ] {
        let error = bad.parse::<ConnectionOptions>().unwrap_err();
        texts.push(error.to_string());
        texts.push(format!("{error:?}"));
    }
    ctl(&["delete_user", &user]);

    let logs = logs().text();
    assert!(
        logs.lines()
            .any(|line| line.contains("connected") && line.contains(&user)),
        "the connection's own log lines were captured:\n{logs}"
    );
    texts.push(logs);
    for text in &texts {
        assert!(!text.contains(&password), "the password shows in:\n{text}");
    }
}
