//! A scripted fake broker, for the tests of what a real RabbitMQ cannot be made to send
//! (malformed frames, a silent peer, hostile header tables), in the style of h2's
//! `tests/h2-support`: a [`Peer`] the test drives step by step, and [`frames`], builders for
//! frames both well-formed and broken.
//!
//! [`FakeBroker::bind`] listens on `127.0.0.1:0`; [`FakeBroker::accept`] takes one connection.
//! [`Peer::handshake`] plays the broker's side of the AMQP handshake (protocol header,
//! `connection.start` offering `PLAIN AMQPLAIN`, start-ok, `connection.tune` with the
//! [`Tune`] given, tune-ok, open, open-ok); after that the test scripts the rest: read the
//! client's next frame ([`Peer::next_frame`], typed through `warren::frame::FrameDecoder`),
//! send frames ([`Peer::send_method`], [`Peer::send_raw`] with bytes from [`frames`]), send
//! slowly ([`Peer::send_raw_in_pieces`], h2's `tx_rem` knob), stop answering (just stop calling
//! the peer; the socket stays open while the `Peer` lives), or close the socket.
//!
//! Every wait is bounded (by [`STEP`] unless told otherwise), so a client that never sends
//! what a test expects fails the test instead of hanging it.

#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use warren::frame::{self, Frame, FrameDecoder};
use warren::protocol::{
    BasicProperties, ChannelOpen, ChannelOpenOk, ConnectionClose, ConnectionOpen, ConnectionOpenOk,
    ConnectionStart, ConnectionStartOk, ConnectionTune, ConnectionTuneOk, Method,
};
use warren::wire::{AmqpMethod, ContentProperties, FieldTable, LongString, ShortString};
use warren::{Connection, ConnectionOptions};

/// How long any single step of a script may take before the test fails.
pub const STEP: Duration = Duration::from_secs(5);

/// The AMQP 0-9-1 protocol header.
pub const PROTOCOL_HEADER: [u8; 8] = *b"AMQP\x00\x00\x09\x01";

/// Awaits `future`, failing the test with `what` if it takes longer than `limit`.
pub async fn within<F: Future>(limit: Duration, what: &str, future: F) -> F::Output {
    match tokio::time::timeout(limit, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// What the fake broker proposes in `connection.tune`.
#[derive(Debug, Clone, Copy)]
pub struct Tune {
    pub channel_max: u16,
    pub frame_max: u32,
    /// Seconds; 0 turns heartbeats off (when the client asks for 0 too).
    pub heartbeat: u16,
}

impl Default for Tune {
    /// RabbitMQ's proposal, without heartbeats (so that only the tests about them see any).
    fn default() -> Self {
        Self {
            channel_max: 2047,
            frame_max: 131_072,
            heartbeat: 0,
        }
    }
}

/// A listening fake broker.
pub struct FakeBroker {
    listener: TcpListener,
    port: u16,
}

impl FakeBroker {
    /// Listens on an ephemeral port of 127.0.0.1.
    pub async fn bind() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the fake broker");
        let port = listener.local_addr().expect("local address").port();
        Self { listener, port }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Options pointing at this broker: no heartbeats, short deadlines, no recovery.
    pub fn options(&self) -> ConnectionOptions {
        ConnectionOptions::new()
            .host("127.0.0.1")
            .port(self.port)
            .heartbeat(Duration::ZERO)
            .connection_timeout(STEP)
            .operation_timeout(STEP)
            // The fake broker answers one connection: these tests are about how it ends.
            .recovery(warren::RecoveryPolicy::disabled())
    }

    /// Accepts the one connection of the test; nothing is read yet.
    pub async fn accept(&self) -> Peer {
        let (stream, _) = within(STEP, "the client to connect", self.listener.accept())
            .await
            .expect("accepting the client");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        Peer {
            stream,
            read_buf: BytesMut::with_capacity(64 * 1024),
            // The client never sends a large frame in these tests; accept anything sane.
            decoder: FrameDecoder::new(16 * 1024 * 1024),
        }
    }
}

/// Connects a client to a fresh fake broker and runs the handshake with `tune`.
///
/// `configure` adjusts the [`FakeBroker::options`] (heartbeat, timeouts, limits).
pub async fn connect(
    configure: impl FnOnce(ConnectionOptions) -> ConnectionOptions,
    tune: Tune,
) -> (Connection, Peer) {
    let broker = FakeBroker::bind().await;
    let options = configure(broker.options());
    let (connection, peer) = tokio::join!(
        within(
            STEP,
            "Connection::connect_with",
            Connection::connect_with(options)
        ),
        async {
            let mut peer = broker.accept().await;
            peer.handshake(tune).await;
            peer
        }
    );
    (connection.expect("connecting to the fake broker"), peer)
}

/// The broker's side of one TCP connection.
pub struct Peer {
    stream: TcpStream,
    read_buf: BytesMut,
    decoder: FrameDecoder,
}

impl Peer {
    // ===== handshake =====

    /// Reads the eight bytes the client opens with.
    pub async fn read_protocol_header(&mut self) -> [u8; 8] {
        let mut header = [0; 8];
        within(
            STEP,
            "the protocol header",
            self.stream.read_exact(&mut header),
        )
        .await
        .expect("reading the protocol header");
        header
    }

    /// `connection.start` as RabbitMQ sends it (version 0-9, `PLAIN AMQPLAIN`, `en_US`).
    pub fn start_method(server_properties: FieldTable) -> ConnectionStart {
        ConnectionStart {
            version_major: 0,
            version_minor: 9,
            server_properties,
            mechanisms: LongString::from("PLAIN AMQPLAIN"),
            locales: LongString::from("en_US"),
        }
    }

    /// Reads the protocol header, sends `connection.start` and returns the client's start-ok.
    pub async fn start(&mut self) -> ConnectionStartOk {
        assert_eq!(self.read_protocol_header().await, PROTOCOL_HEADER);
        let properties = FieldTable::new().with("product", "fake-broker").with(
            "capabilities",
            FieldTable::new().with("publisher_confirms", true),
        );
        self.send_method(0, &Self::start_method(properties)).await;
        self.expect_method::<ConnectionStartOk>(0).await
    }

    /// The whole handshake, broker side: start, tune (with `tune`), open.
    pub async fn handshake(&mut self, tune: Tune) {
        let start_ok = self.start().await;
        assert_eq!(start_ok.mechanism, "PLAIN");
        self.send_method(
            0,
            &ConnectionTune {
                channel_max: tune.channel_max,
                frame_max: tune.frame_max,
                heartbeat: tune.heartbeat,
            },
        )
        .await;
        let _: ConnectionTuneOk = self.expect_method(0).await;
        let _: ConnectionOpen = self.expect_method(0).await;
        self.send_method(0, &ConnectionOpenOk {}).await;
    }

    /// Answers the client's next `channel.open` with open-ok; returns the channel number.
    pub async fn accept_channel(&mut self) -> u16 {
        let (channel, _) = self.expect_method_any::<ChannelOpen>().await;
        self.send_method(channel, &ChannelOpenOk {}).await;
        channel
    }

    // ===== reading =====

    /// The client's next frame (heartbeats included), or `None` when it closed the socket.
    ///
    /// Cancel-safe: bytes read stay in the buffer if the future is dropped.
    pub async fn next_frame(&mut self) -> Option<Frame> {
        within(STEP, "a frame from the client", self.read_frame()).await
    }

    /// Like [`Peer::next_frame`] with a deadline of the caller's; `Err(())` when it passed.
    pub async fn next_frame_within(&mut self, limit: Duration) -> Result<Option<Frame>, ()> {
        tokio::time::timeout(limit, self.read_frame())
            .await
            .map_err(drop)
    }

    async fn read_frame(&mut self) -> Option<Frame> {
        loop {
            match self.decoder.decode(&mut self.read_buf) {
                Ok(Some(frame)) => return Some(frame),
                Ok(None) => {}
                Err(e) => panic!("the client sent an undecodable frame: {e}"),
            }
            match self.stream.read_buf(&mut self.read_buf).await {
                Ok(0) => {
                    assert!(
                        self.read_buf.is_empty(),
                        "the client closed the socket in the middle of a frame"
                    );
                    return None;
                }
                Ok(_) => {}
                // A reset after the client closed is the same as a close for these tests.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("reading from the client: {e}"),
            }
        }
    }

    /// The client's next method frame, skipping heartbeats; panics on anything else.
    pub async fn next_method(&mut self) -> (u16, Method) {
        loop {
            match self.next_frame().await {
                Some(Frame::Heartbeat) => continue,
                Some(Frame::Method { channel, method }) => return (channel, method),
                Some(other) => panic!("expected a method frame, the client sent {other:?}"),
                None => panic!("expected a method frame, the client closed the socket"),
            }
        }
    }

    /// The client's next method, which must be an `M` on `channel`.
    pub async fn expect_method<M>(&mut self, channel: u16) -> M
    where
        M: AmqpMethod + TryFrom<Method, Error = Method>,
    {
        let (got_channel, method) = self.expect_method_any::<M>().await;
        assert_eq!(got_channel, channel, "{} on the wrong channel", M::NAME);
        method
    }

    /// The client's next method, which must be an `M`, on whatever channel.
    pub async fn expect_method_any<M>(&mut self) -> (u16, M)
    where
        M: AmqpMethod + TryFrom<Method, Error = Method>,
    {
        let (channel, method) = self.next_method().await;
        match M::try_from(method) {
            Ok(m) => (channel, m),
            Err(other) => panic!(
                "expected {} from the client, got {} on channel {channel}: {other:?}",
                M::NAME,
                other.name()
            ),
        }
    }

    /// The client's `connection.close` (after a protocol violation of ours).
    pub async fn expect_connection_close(&mut self) -> ConnectionClose {
        self.expect_method(0).await
    }

    /// Waits until the client closes the socket, skipping whatever it sends before.
    pub async fn expect_eof(&mut self) {
        within(STEP, "the client to close the socket", async {
            while self.read_frame().await.is_some() {}
        })
        .await
    }

    // ===== writing =====

    /// Sends a method frame (no frame_max check: the peer may break the rules).
    pub async fn send_method<M: AmqpMethod>(&mut self, channel: u16, method: &M) {
        self.send_raw(&frames::method(channel, method)).await;
    }

    /// Sends bytes as they are.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        within(STEP, "writing to the client", self.stream.write_all(bytes))
            .await
            .expect("writing to the client");
    }

    /// Sends bytes, giving up quietly after `limit` or when the client has closed the socket:
    /// for bytes that the client may rightly stop reading (the rest of a refused frame).
    pub async fn send_raw_best_effort(&mut self, bytes: &[u8], limit: Duration) {
        let _ = tokio::time::timeout(limit, self.stream.write_all(bytes)).await;
    }

    /// Sends bytes cut at the offsets in `cuts`, pausing `pause` between the pieces: a slow
    /// writer (h2's `tx_rem`), to exercise frames that arrive in parts.
    pub async fn send_raw_in_pieces(&mut self, bytes: &[u8], cuts: &[usize], pause: Duration) {
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&bytes.len())) {
            self.send_raw(&bytes[start..cut]).await;
            start = cut;
            if start < bytes.len() {
                tokio::time::sleep(pause).await;
            }
        }
    }

    /// Sends a heartbeat frame.
    pub async fn send_heartbeat(&mut self) {
        self.send_raw(&frames::heartbeat()).await;
    }

    /// Closes the sending half (the client reads end-of-stream); reading still works.
    pub async fn shutdown_write(&mut self) {
        // The client may have closed already; that is fine.
        let _ = self.stream.shutdown().await;
    }
}

/// Frame builders, well-formed and not.
pub mod frames {
    use super::*;

    /// A method frame for `method` on `channel`.
    pub fn method<M: AmqpMethod>(channel: u16, method: &M) -> Vec<u8> {
        let mut out = BytesMut::new();
        frame::encode_method(&mut out, channel, method, 0).expect("no frame_max");
        out.to_vec()
    }

    /// A frame of any type with any payload, well delimited.
    pub fn raw(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
        raw_with_end(kind, channel, payload, frame::FRAME_END)
    }

    /// A frame of any type and payload, ending with `end` instead of 0xCE.
    pub fn raw_with_end(kind: u8, channel: u16, payload: &[u8], end: u8) -> Vec<u8> {
        let mut out = frame_header(kind, channel, payload.len() as u32);
        out.extend_from_slice(payload);
        out.push(end);
        out
    }

    /// Only the seven header bytes of a frame declaring a payload of `size` bytes.
    pub fn frame_header(kind: u8, channel: u16, size: u32) -> Vec<u8> {
        let mut out = vec![kind];
        out.extend_from_slice(&channel.to_be_bytes());
        out.extend_from_slice(&size.to_be_bytes());
        out
    }

    /// A method frame with class and method ids of our choice and raw argument bytes.
    pub fn method_raw(channel: u16, class: u16, method: u16, arguments: &[u8]) -> Vec<u8> {
        let mut payload = class.to_be_bytes().to_vec();
        payload.extend_from_slice(&method.to_be_bytes());
        payload.extend_from_slice(arguments);
        raw(frame::FRAME_METHOD, channel, &payload)
    }

    /// A content header frame with raw property bytes (flags and list, as they go on the wire).
    pub fn content_header_raw(
        channel: u16,
        class_id: u16,
        body_size: u64,
        properties: &[u8],
    ) -> Vec<u8> {
        let mut payload = class_id.to_be_bytes().to_vec();
        payload.extend_from_slice(&0u16.to_be_bytes()); // weight
        payload.extend_from_slice(&body_size.to_be_bytes());
        payload.extend_from_slice(properties);
        raw(frame::FRAME_HEADER, channel, &payload)
    }

    /// A well-formed content header frame.
    pub fn content_header(channel: u16, properties: &BasicProperties, body_size: u64) -> Vec<u8> {
        let mut out = BytesMut::new();
        frame::encode_content_header(&mut out, channel, properties, body_size, 0)
            .expect("no frame_max");
        out.to_vec()
    }

    /// A body frame.
    pub fn body(channel: u16, chunk: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        frame::encode_body(&mut out, channel, chunk);
        out.to_vec()
    }

    /// A method, a content header and one body frame: a whole delivery (or get-ok, return).
    pub fn content<M: AmqpMethod>(
        channel: u16,
        method: &M,
        properties: &BasicProperties,
        body: &[u8],
    ) -> Vec<u8> {
        let mut out = self::method(channel, method);
        out.extend(content_header(channel, properties, body.len() as u64));
        if !body.is_empty() {
            out.extend(self::body(channel, body));
        }
        out
    }

    /// A heartbeat frame.
    pub fn heartbeat() -> Vec<u8> {
        let mut out = BytesMut::new();
        frame::encode_heartbeat(&mut out);
        out.to_vec()
    }

    /// The wire encoding of a field table nested `depth` levels deep (counting the outermost):
    /// each level is one entry `"a" => F <next table>`, 7 bytes, the innermost table empty.
    ///
    /// Built without recursion and in linear time, so depths in the hundreds of thousands are
    /// cheap.
    pub fn deep_table(depth: usize) -> Vec<u8> {
        assert!(depth >= 1);
        let mut out = Vec::with_capacity(7 * depth);
        for level in (1..=depth).rev() {
            // A table `level` deep is 7 * level - 3 bytes: its 4-byte length, then 7 * (level - 1).
            let content = 7 * (level - 1);
            out.extend_from_slice(&(content as u32).to_be_bytes());
            if level > 1 {
                out.extend_from_slice(&[1, b'a', b'F']);
            }
        }
        debug_assert_eq!(out.len(), 7 * depth - 3);
        out
    }

    /// Basic-class property bytes holding only a `headers` table given as raw bytes.
    pub fn properties_with_raw_headers(table: &[u8]) -> Vec<u8> {
        // Property flags: bit 15 content-type, 14 content-encoding, 13 headers.
        let mut out = 0x2000u16.to_be_bytes().to_vec();
        out.extend_from_slice(table);
        out
    }

    /// `connection.start` arguments with raw server-properties bytes.
    pub fn connection_start_raw(server_properties: &[u8]) -> Vec<u8> {
        let mut arguments = vec![0, 9];
        arguments.extend_from_slice(server_properties);
        for text in [&b"PLAIN AMQPLAIN"[..], b"en_US"] {
            arguments.extend_from_slice(&(text.len() as u32).to_be_bytes());
            arguments.extend_from_slice(text);
        }
        method_raw(0, 10, 10, &arguments)
    }

    /// Encoded properties, for building headers by hand.
    pub fn encode_properties(properties: &BasicProperties) -> Vec<u8> {
        let mut out = BytesMut::new();
        properties.encode(&mut warren::wire::Writer::new(&mut out));
        out.to_vec()
    }

    /// A short string, for building argument bytes by hand.
    pub fn short_string(s: &str) -> Vec<u8> {
        let s = ShortString::try_from(s).expect("short string");
        let mut out = vec![s.len() as u8];
        out.extend_from_slice(s.as_bytes());
        out
    }
}
