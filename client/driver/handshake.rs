//! Opening a connection: protocol header, start/start-ok, secure/secure-ok, tune/tune-ok,
//! open/open-ok.
//!
//! The handshake runs on the socket directly, before the driver task exists: it is strictly
//! request/response, and doing it here lets `connect` return every failure (refused login,
//! unknown virtual host, a peer that is not RabbitMQ) as the error of the call.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, trace};

use super::transport::Transport;
use crate::config::{AuthMechanism, ConnectionOptions};
use crate::error::{Close, Error, Result};
use crate::frame::{self, FRAME_MIN_SIZE, Frame, FrameDecoder, PROTOCOL_HEADER};
use crate::protocol::{
    ConnectionClose, ConnectionCloseOk, ConnectionOpen, ConnectionSecureOk, ConnectionStart,
    ConnectionStartOk, ConnectionTune, ConnectionTuneOk, Method,
};
use crate::shared::connection::Tuning;
use crate::wire::{AmqpMethod, FieldTable, LongString, ShortString, Writer};

/// The largest frame warren accepts when the broker proposes no limit (frame_max 0) and the
/// options ask for none either.
pub(crate) const FRAME_MAX_CAP: u32 = 1024 * 1024;

impl Tuning {
    /// Negotiates from the server's proposal and the client's wishes, as RabbitMQ's clients do:
    /// channel_max and frame_max take the smaller non-zero value (0 means no limit; a channel
    /// limit of none is 65535, a frame limit of none is [`FRAME_MAX_CAP`]); the heartbeat takes
    /// the larger value if either side is 0, else the smaller.
    pub(crate) fn negotiate(server: &ConnectionTune, options: &ConnectionOptions) -> Self {
        fn smaller_limit<T: Ord + Copy>(a: T, b: T, zero: T, none: T) -> T {
            let a = if a == zero { none } else { a };
            let b = if b == zero { none } else { b };
            a.min(b)
        }
        let client_heartbeat = u16::try_from(options.heartbeat.as_secs()).unwrap_or(u16::MAX);
        let heartbeat = if client_heartbeat == 0 || server.heartbeat == 0 {
            client_heartbeat.max(server.heartbeat)
        } else {
            client_heartbeat.min(server.heartbeat)
        };
        Self {
            channel_max: smaller_limit(server.channel_max, options.channel_max, 0, u16::MAX),
            frame_max: smaller_limit(server.frame_max, options.frame_max, 0, FRAME_MAX_CAP)
                .max(FRAME_MIN_SIZE),
            heartbeat: Duration::from_secs(heartbeat.into()),
        }
    }
}

/// A connection that completed the handshake.
#[derive(Debug)]
pub(crate) struct Opened {
    pub transport: Transport,
    /// Bytes read past `connection.open-ok`, which the driver must decode first.
    pub read_buf: BytesMut,
    pub tuning: Tuning,
    pub server_properties: FieldTable,
}

/// Runs the handshake on a fresh transport.
pub(crate) async fn open(transport: Transport, options: &ConnectionOptions) -> Result<Opened> {
    let mut io = HandshakeIo {
        transport,
        read_buf: BytesMut::with_capacity(FRAME_MIN_SIZE as usize),
        write_buf: BytesMut::with_capacity(FRAME_MIN_SIZE as usize),
        decoder: FrameDecoder::default(),
        heard: false,
    };
    match negotiate(&mut io, options).await {
        Ok((tuning, server_properties)) => Ok(Opened {
            transport: io.transport,
            read_buf: io.read_buf,
            tuning,
            server_properties,
        }),
        Err(Error::Protocol(error)) => {
            // Tell the peer why, as after the handshake; it may not listen any more.
            if !matches!(error, crate::wire::DecodeError::ProtocolMismatch { .. }) {
                let close = ConnectionClose {
                    reply_code: error.reply_code(),
                    reply_text: ShortString::try_from(error.to_string()).unwrap_or_default(),
                    class_id: 0,
                    method_id: 0,
                };
                let _ = io.send(&close).await;
            }
            Err(Error::Protocol(error))
        }
        Err(error) => Err(error),
    }
}

/// The handshake proper: everything up to `connection.open-ok`.
async fn negotiate(
    io: &mut HandshakeIo,
    options: &ConnectionOptions,
) -> Result<(Tuning, FieldTable)> {
    if let Err(e) = io.transport.write_all(&PROTOCOL_HEADER).await {
        return Err(io.transport.classify_write_error(e).await);
    }

    let start: ConnectionStart = io.expect_method("connection.start").await?;
    if (start.version_major, start.version_minor) != (0, 9) {
        return Err(Error::Handshake(format!(
            "the broker speaks AMQP {}-{}, warren speaks 0-9-1",
            start.version_major, start.version_minor
        )));
    }
    let mechanism = choose_mechanism(&start, options)?;
    debug!(%mechanism, "authenticating");
    let start_ok = ConnectionStartOk {
        client_properties: client_properties(options),
        mechanism: ShortString::from_static(mechanism.name()),
        response: sasl_response(mechanism, options),
        locale: ShortString::try_from(options.locale.as_str())?,
    };
    io.send(&start_ok).await?;
    io.scrub_write_buffer();
    scrub(start_ok.response);

    let tune = loop {
        match io.next_method("connection.tune").await {
            Ok(Method::ConnectionTune(tune)) => break tune,
            Ok(Method::ConnectionSecure(_)) => {
                // None of the mechanisms warren offers uses challenges; answer as the
                // mechanism would (again), so the broker decides.
                let secure_ok = ConnectionSecureOk {
                    response: sasl_response(mechanism, options),
                };
                io.send(&secure_ok).await?;
                io.scrub_write_buffer();
                scrub(secure_ok.response);
            }
            Ok(Method::ConnectionClose(close)) => {
                let close = io.answer_close(close).await;
                return Err(Error::Authentication {
                    mechanism: mechanism.name().to_owned(),
                    reason: Some(close),
                });
            }
            Ok(other) => return Err(unexpected(&other, "connection.tune")),
            // A broker without authentication_failure_close drops the socket instead.
            Err(Error::Io(_)) => {
                return Err(Error::Authentication {
                    mechanism: mechanism.name().to_owned(),
                    reason: None,
                });
            }
            Err(e) => return Err(e),
        }
    };
    let tuning = Tuning::negotiate(&tune, options);
    debug!(?tuning, "tuned");
    io.send(&ConnectionTuneOk {
        channel_max: tuning.channel_max,
        frame_max: tuning.frame_max,
        heartbeat: u16::try_from(tuning.heartbeat.as_secs()).unwrap_or(u16::MAX),
    })
    .await?;
    io.decoder.set_max_frame_size(tuning.frame_max);

    io.send(&ConnectionOpen {
        virtual_host: ShortString::try_from(options.vhost.as_str())?,
    })
    .await?;
    match io.next_method("connection.open-ok").await? {
        Method::ConnectionOpenOk(_) => {}
        Method::ConnectionClose(close) => {
            let close = io.answer_close(close).await;
            return Err(Error::ConnectionClosed(close));
        }
        other => return Err(unexpected(&other, "connection.open-ok")),
    }
    debug!(vhost = %options.vhost, "connection open");
    Ok((tuning, start.server_properties))
}

/// The first of the configured mechanisms that the broker offers.
fn choose_mechanism(start: &ConnectionStart, options: &ConnectionOptions) -> Result<AuthMechanism> {
    let offered = String::from_utf8_lossy(start.mechanisms.as_bytes()).into_owned();
    options
        .mechanisms
        .iter()
        .copied()
        // EXTERNAL without a client certificate can only be refused; try the next one.
        .filter(|&m| m != AuthMechanism::External || has_client_certificate(options))
        .find(|m| offered.split_ascii_whitespace().any(|o| o == m.name()))
        .ok_or_else(|| {
            let wanted: Vec<&str> = options.mechanisms.iter().map(|m| m.name()).collect();
            Error::Handshake(format!(
                "the broker offers the SASL mechanisms [{offered}] but the connection is \
                 configured for [{}]; enable one of them on the broker or change \
                 auth_mechanism",
                wanted.join(", ")
            ))
        })
}

/// Whether the connection presents a TLS client certificate, which SASL EXTERNAL needs.
fn has_client_certificate(options: &ConnectionOptions) -> bool {
    options
        .tls
        .as_ref()
        .is_some_and(|tls| tls.cert_file.is_some())
}

/// Refuses, before any network traffic, options whose only SASL mechanism is EXTERNAL but
/// that present no client certificate: the broker could only refuse them.
pub(super) fn check_mechanisms(options: &ConnectionOptions) -> Result<()> {
    let only_external = !options.mechanisms.is_empty()
        && options
            .mechanisms
            .iter()
            .all(|&m| m == AuthMechanism::External);
    if only_external && !has_client_certificate(options) {
        return Err(Error::Config(
            "SASL EXTERNAL takes the user from the TLS client certificate, but none is set: \
             set TlsOptions::cert_file and key_file (certfile and keyfile in an amqps URI), \
             or choose another auth_mechanism"
                .into(),
        ));
    }
    Ok(())
}

/// The SASL response for `mechanism`. It holds the password: it is only ever encoded, and the
/// buffer it was encoded into is zeroed after sending.
fn sasl_response(mechanism: AuthMechanism, options: &ConnectionOptions) -> LongString {
    let user = options.username.as_bytes();
    let password = options.password.expose().as_bytes();
    match mechanism {
        AuthMechanism::Plain => {
            let mut response = Vec::with_capacity(2 + user.len() + password.len());
            response.push(0);
            response.extend_from_slice(user);
            response.push(0);
            response.extend_from_slice(password);
            response.into()
        }
        AuthMechanism::AmqPlain => {
            // A field table's entries without its length prefix, as RabbitMQ parses it.
            let table = FieldTable::new()
                .with("LOGIN", LongString::from(user))
                .with("PASSWORD", LongString::from(password));
            let mut buf = BytesMut::new();
            Writer::new(&mut buf).table(&table);
            LongString::from(Bytes::from(buf.split_off(4)))
        }
        AuthMechanism::External => LongString::default(),
    }
}

/// Zeroes a SASL response's bytes before freeing them, when nothing else shares them.
fn scrub(response: LongString) {
    if let Ok(mut bytes) = response.into_bytes().try_into_mut() {
        bytes.fill(0);
    }
}

/// warren's client properties, with the application's merged over them.
fn client_properties(options: &ConnectionOptions) -> FieldTable {
    let capabilities = FieldTable::new()
        .with("publisher_confirms", true)
        .with("exchange_exchange_bindings", true)
        .with("basic.nack", true)
        .with("consumer_cancel_notify", true)
        .with("connection.blocked", true)
        .with("authentication_failure_close", true)
        .with("per_consumer_qos", true)
        .with("direct_reply_to", true);
    let mut properties = FieldTable::new()
        .with("product", "warren")
        .with("version", env!("CARGO_PKG_VERSION"))
        .with("platform", "Rust")
        .with("information", env!("CARGO_PKG_REPOSITORY"))
        .with("capabilities", capabilities);
    if let Some(name) = &options.connection_name {
        properties = properties.with("connection_name", name.as_str());
    }
    for (key, value) in &options.client_properties {
        properties.insert(key.clone(), value.clone());
    }
    properties
}

fn unexpected(method: &Method, expected: &str) -> Error {
    Error::Handshake(format!(
        "the broker sent {} where {expected} was expected",
        method.name()
    ))
}

/// Frame-level I/O for the handshake: whole frames in, whole frames out, one at a time.
struct HandshakeIo {
    transport: Transport,
    read_buf: BytesMut,
    write_buf: BytesMut,
    decoder: FrameDecoder,
    /// Whether the peer has sent a whole frame yet.
    heard: bool,
}

impl HandshakeIo {
    async fn send<M: AmqpMethod>(&mut self, method: &M) -> Result<()> {
        trace!(method = M::NAME, "sending");
        frame::encode_method(
            &mut self.write_buf,
            0,
            method,
            self.decoder.max_frame_size(),
        )?;
        let result = self.transport.write_all(&self.write_buf).await;
        self.write_buf.clear();
        match result {
            Ok(()) => Ok(()),
            Err(e) => Err(self.transport.classify_write_error(e).await),
        }
    }

    /// Overwrites the bytes of the last frame sent (it held the SASL response).
    fn scrub_write_buffer(&mut self) {
        let capacity = self.write_buf.capacity();
        self.write_buf.resize(capacity, 0);
        self.write_buf.clear();
    }

    /// The next method on channel 0, skipping heartbeats.
    async fn next_method(&mut self, expected: &'static str) -> Result<Method> {
        loop {
            // A peer that does not speak 0-9-1 answers with its own protocol header. No frame
            // starts with 'A', so a buffer that could still become "AMQP" waits for more.
            let prefix = &self.read_buf[..self.read_buf.len().min(4)];
            if !prefix.is_empty() && b"AMQP".starts_with(prefix) {
                if self.read_buf.len() >= 8 {
                    let mut header = [0; 8];
                    header.copy_from_slice(&self.read_buf[..8]);
                    return Err(Error::Protocol(
                        crate::wire::DecodeError::ProtocolMismatch { header },
                    ));
                }
                self.read_more(expected).await?;
                continue;
            }
            // An AMQP broker's first frame is a method (connection.start). Anything else first is
            // another protocol (an HTTP server on the port, say): say so, rather than report its
            // bytes as an oversized frame.
            if !self.heard
                && let Some(&first) = self.read_buf.first()
                && first != frame::FRAME_METHOD
                && first != frame::FRAME_HEARTBEAT
            {
                let shown = &self.read_buf[..self.read_buf.len().min(32)];
                return Err(Error::Handshake(format!(
                    "the server does not speak AMQP: it answered \"{}\"; check the host and port",
                    shown.escape_ascii()
                )));
            }
            let decoded = self.decoder.decode(&mut self.read_buf)?;
            self.heard |= decoded.is_some();
            match decoded {
                Some(Frame::Method { channel: 0, method }) => {
                    trace!(method = method.name(), "received");
                    return Ok(method);
                }
                Some(Frame::Heartbeat) => continue,
                Some(other) => {
                    return Err(Error::Handshake(format!(
                        "the broker sent a frame on channel {} where {expected} was expected",
                        other.channel()
                    )));
                }
                None => self.read_more(expected).await?,
            }
        }
    }

    /// Reads more bytes into the buffer; the peer closing the socket is an error.
    async fn read_more(&mut self, expected: &'static str) -> Result<()> {
        let read = self
            .transport
            .read_buf(&mut self.read_buf)
            .await
            .map_err(|e| self.transport.classify_error(e))?;
        if read == 0 {
            return Err(Error::io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("the broker closed the connection while warren waited for {expected}"),
            )));
        }
        Ok(())
    }

    async fn expect_method<M>(&mut self, expected: &'static str) -> Result<M>
    where
        M: TryFrom<Method, Error = Method>,
    {
        let method = self.next_method(expected).await?;
        M::try_from(method).map_err(|other| unexpected(&other, expected))
    }

    /// Acknowledges a `connection.close` from the broker and returns its reason.
    async fn answer_close(&mut self, close: ConnectionClose) -> Close {
        // Best effort: the broker closes the socket right after, and the close reason is what
        // the caller needs.
        let _ = self.send(&ConnectionCloseOk {}).await;
        let close = Close::from_connection_close(&close);
        debug!(%close, "broker closed the connection during the handshake");
        close
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::FieldValue;

    fn tune(channel_max: u16, frame_max: u32, heartbeat: u16) -> ConnectionTune {
        ConnectionTune {
            channel_max,
            frame_max,
            heartbeat,
        }
    }

    #[test]
    fn negotiation_follows_rabbitmq_rules() {
        let options = ConnectionOptions::default()
            .channel_max(2047)
            .frame_max(131_072)
            .heartbeat(Duration::from_secs(30));
        let t = Tuning::negotiate(&tune(0, 0, 60), &options);
        assert_eq!(
            t,
            Tuning {
                channel_max: 2047,
                frame_max: 131_072,
                heartbeat: Duration::from_secs(30)
            }
        );
        let options = ConnectionOptions::default()
            .channel_max(0)
            .frame_max(0)
            .heartbeat(Duration::ZERO);
        let t = Tuning::negotiate(&tune(0, 0, 60), &options);
        assert_eq!(t.channel_max, u16::MAX);
        assert_eq!(t.frame_max, FRAME_MAX_CAP);
        // One side 0: the larger value wins.
        assert_eq!(t.heartbeat, Duration::from_secs(60));
        let t = Tuning::negotiate(&tune(100, 2000, 0), &options);
        assert_eq!(t.channel_max, 100);
        assert_eq!(t.frame_max, FRAME_MIN_SIZE, "raised to the AMQP minimum");
        assert_eq!(t.heartbeat, Duration::ZERO);
    }

    #[test]
    fn plain_and_amqplain_responses() {
        let options = ConnectionOptions::default()
            .username("user")
            .password("secret");
        assert_eq!(
            sasl_response(AuthMechanism::Plain, &options),
            b"\0user\0secret"[..]
        );
        let amqplain = sasl_response(AuthMechanism::AmqPlain, &options);
        assert_eq!(
            amqplain,
            b"\x05LOGINS\x00\x00\x00\x04user\x08PASSWORDS\x00\x00\x00\x06secret"[..]
        );
        assert!(sasl_response(AuthMechanism::External, &options).is_empty());
    }

    #[test]
    fn external_needs_a_client_certificate() {
        let start = ConnectionStart {
            mechanisms: LongString::from("PLAIN AMQPLAIN EXTERNAL"),
            ..Default::default()
        };
        let external_only = ConnectionOptions::default().auth_mechanism(AuthMechanism::External);
        let error = check_mechanisms(&external_only).unwrap_err();
        assert!(matches!(error, Error::Config(_)), "{error:?}");
        assert!(error.to_string().contains("cert_file"), "{error}");

        // With a fallback, EXTERNAL is skipped rather than sent without a certificate.
        let with_fallback = ConnectionOptions::default()
            .auth_mechanisms([AuthMechanism::External, AuthMechanism::Plain]);
        check_mechanisms(&with_fallback).unwrap();
        assert_eq!(
            choose_mechanism(&start, &with_fallback).unwrap(),
            AuthMechanism::Plain
        );

        let with_certificate = external_only.tls(crate::TlsOptions {
            cert_file: Some("client_certificate.pem".into()),
            key_file: Some("client_key.pem".into()),
            ..Default::default()
        });
        check_mechanisms(&with_certificate).unwrap();
        assert_eq!(
            choose_mechanism(&start, &with_certificate).unwrap(),
            AuthMechanism::External
        );
    }

    #[test]
    fn application_properties_override_warrens() {
        let options = ConnectionOptions::default()
            .connection_name("orders")
            .client_properties(FieldTable::new().with("product", "my-app"));
        let properties = client_properties(&options);
        assert_eq!(properties.get("product"), Some(&FieldValue::from("my-app")));
        assert_eq!(
            properties.get("connection_name"),
            Some(&FieldValue::from("orders"))
        );
        let capabilities = properties.get("capabilities").unwrap().as_table().unwrap();
        assert_eq!(capabilities.len(), 8);
        assert!(capabilities.iter().all(|(_, v)| v.as_bool() == Some(true)));
    }
}
