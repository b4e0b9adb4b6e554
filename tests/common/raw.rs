//! A publisher that speaks AMQP to the real broker by hand, for messages warren refuses to
//! send (headers nested too deep, non-finite floats) or cannot (field tags only other clients
//! write): the tests need the broker to hold such messages, or to see what it does with them.
//!
//! It does the handshake with PLAIN, opens channel 1 in confirm mode, and publishes a content
//! header whose property bytes are given raw. Every wait is bounded by [`super::STEP`].

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use warren::frame::{self, Frame, FrameDecoder, PROTOCOL_HEADER};
use warren::protocol::{
    BasicPublish, ChannelOpen, ConfirmSelect, ConnectionClose, ConnectionOpen, ConnectionStartOk,
    ConnectionTuneOk, Method,
};
use warren::wire::{AmqpMethod, FieldTable, LongString, ShortString};

/// Channel the raw publisher uses.
const CHANNEL: u16 = 1;

/// How the broker answered a raw publish.
#[derive(Debug, PartialEq, Eq)]
pub enum RawOutcome {
    /// `basic.ack`: the broker took the message.
    Acked,
    /// The broker closed the connection: reply code and text.
    ConnectionClosed(u16, String),
    /// The broker closed the channel: reply code and text.
    ChannelClosed(u16, String),
}

/// A connection opened by hand, with channel 1 in confirm mode.
pub struct RawPublisher {
    stream: TcpStream,
    read_buf: BytesMut,
    decoder: FrameDecoder,
    frame_max: u32,
}

impl RawPublisher {
    /// Connects to the test broker ([`super::options`]) and opens channel 1 in confirm mode.
    pub async fn connect() -> Self {
        super::within("the raw publisher's handshake", Self::open()).await
    }

    async fn open() -> Self {
        let options = super::options();
        let (user, password) = credentials(&super::broker_url());
        let stream = TcpStream::connect((options.get_host(), options.get_port()))
            .await
            .expect("connecting the raw publisher to the broker");
        let mut raw = Self {
            stream,
            read_buf: BytesMut::new(),
            decoder: FrameDecoder::default(),
            frame_max: frame::FRAME_MIN_SIZE,
        };
        raw.stream.write_all(&PROTOCOL_HEADER).await.unwrap();
        let Method::ConnectionStart(_) = raw.next_method().await else {
            panic!("expected connection.start");
        };
        let mut response = vec![0];
        response.extend_from_slice(user.as_bytes());
        response.push(0);
        response.extend_from_slice(password.as_bytes());
        raw.send(
            0,
            &ConnectionStartOk {
                client_properties: FieldTable::new().with("product", "warren tests, raw"),
                mechanism: ShortString::from_static("PLAIN"),
                response: LongString::from(response),
                locale: ShortString::from_static("en_US"),
            },
        )
        .await;
        let Method::ConnectionTune(tune) = raw.next_method().await else {
            panic!("expected connection.tune (are the credentials right?)");
        };
        raw.frame_max = tune.frame_max;
        raw.decoder.set_max_frame_size(tune.frame_max);
        raw.send(
            0,
            &ConnectionTuneOk {
                channel_max: tune.channel_max,
                frame_max: tune.frame_max,
                heartbeat: 0,
            },
        )
        .await;
        raw.send(
            0,
            &ConnectionOpen {
                virtual_host: ShortString::try_from(options.get_vhost()).unwrap(),
            },
        )
        .await;
        let Method::ConnectionOpenOk(_) = raw.next_method().await else {
            panic!("expected connection.open-ok");
        };
        raw.send(CHANNEL, &ChannelOpen {}).await;
        let Method::ChannelOpenOk(_) = raw.next_method().await else {
            panic!("expected channel.open-ok");
        };
        raw.send(CHANNEL, &ConfirmSelect { no_wait: false }).await;
        let Method::ConfirmSelectOk(_) = raw.next_method().await else {
            panic!("expected confirm.select-ok");
        };
        raw
    }

    /// Publishes `body` to `routing_key` on the default exchange with basic-class property
    /// bytes `properties` (flags and list, exactly as they go on the wire), and waits for the
    /// broker's answer.
    pub async fn publish(
        &mut self,
        routing_key: &str,
        properties: &[u8],
        body: &[u8],
    ) -> RawOutcome {
        let mut out = BytesMut::new();
        let publish = BasicPublish {
            exchange: ShortString::default(),
            routing_key: ShortString::try_from(routing_key).unwrap(),
            mandatory: false,
            immediate: false,
        };
        frame::encode_method(&mut out, CHANNEL, &publish, self.frame_max).unwrap();
        let mut header = 60u16.to_be_bytes().to_vec();
        header.extend_from_slice(&0u16.to_be_bytes());
        header.extend_from_slice(&(body.len() as u64).to_be_bytes());
        header.extend_from_slice(properties);
        out.extend_from_slice(&[frame::FRAME_HEADER]);
        out.extend_from_slice(&CHANNEL.to_be_bytes());
        out.extend_from_slice(&(header.len() as u32).to_be_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&[frame::FRAME_END]);
        frame::encode_body(&mut out, CHANNEL, body);
        self.stream.write_all(&out).await.unwrap();
        super::within("the broker's answer to a raw publish", async {
            loop {
                match self.next_frame().await {
                    Some(Frame::Method {
                        method: Method::BasicAck(_),
                        ..
                    }) => return RawOutcome::Acked,
                    Some(Frame::Method {
                        method: Method::ConnectionClose(close),
                        ..
                    }) => {
                        return RawOutcome::ConnectionClosed(
                            close.reply_code,
                            close.reply_text.to_string(),
                        );
                    }
                    Some(Frame::Method {
                        method: Method::ChannelClose(close),
                        ..
                    }) => {
                        return RawOutcome::ChannelClosed(
                            close.reply_code,
                            close.reply_text.to_string(),
                        );
                    }
                    Some(_) => {}
                    None => panic!("the broker closed the socket without a word"),
                }
            }
        })
        .await
    }

    /// Closes the connection (best effort: the broker may have closed it already).
    pub async fn close(mut self) {
        let close = ConnectionClose {
            reply_code: 200,
            reply_text: ShortString::from_static("bye"),
            class_id: 0,
            method_id: 0,
        };
        let mut out = BytesMut::new();
        frame::encode_method(&mut out, 0, &close, self.frame_max).unwrap();
        let _ = self.stream.write_all(&out).await;
        let _ = tokio::time::timeout(super::STEP, async {
            while let Some(frame) = self.next_frame().await {
                if let Frame::Method {
                    method: Method::ConnectionCloseOk(_),
                    ..
                } = frame
                {
                    break;
                }
            }
        })
        .await;
    }

    async fn send<M: AmqpMethod>(&mut self, channel: u16, method: &M) {
        let mut out = BytesMut::new();
        frame::encode_method(&mut out, channel, method, self.frame_max).unwrap();
        self.stream.write_all(&out).await.unwrap();
    }

    async fn next_method(&mut self) -> Method {
        loop {
            match self.next_frame().await {
                Some(Frame::Method { method, .. }) => return method,
                Some(Frame::Heartbeat) => {}
                other => panic!("expected a method from the broker, got {other:?}"),
            }
        }
    }

    /// The broker's next frame, or `None` when it closed the socket.
    async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.read_buf).unwrap() {
                return Some(frame);
            }
            match self.stream.read_buf(&mut self.read_buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }
}

/// User and password of an `amqp://user:password@host...` URL (`guest`, `guest` when absent);
/// percent-escapes are decoded.
fn credentials(url: &str) -> (String, String) {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let Some((userinfo, _)) = authority.rsplit_once('@') else {
        return ("guest".to_owned(), "guest".to_owned());
    };
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    (percent_decode(user), percent_decode(password))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = text
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Basic-class property bytes holding only a `headers` table, given as its entry bytes
/// (without the table's length).
pub fn properties_with_header_entries(entries: &[u8]) -> Vec<u8> {
    // Property flags: bit 13 is `headers`.
    let mut out = 0x2000u16.to_be_bytes().to_vec();
    out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    out.extend_from_slice(entries);
    out
}

/// The entry bytes of a header table nested `depth` tables deep (counting the headers table
/// itself), each level holding one entry `"n" => F <next>`, the innermost one entry
/// `"bottom" => S "reached"`. Built without recursion.
pub fn nested_header_entries(depth: usize) -> Vec<u8> {
    assert!(depth >= 1);
    let mut inner = vec![6];
    inner.extend_from_slice(b"bottom");
    inner.push(b'S');
    inner.extend_from_slice(&7u32.to_be_bytes());
    inner.extend_from_slice(b"reached");
    for _ in 1..depth {
        let mut outer = vec![1, b'n', b'F'];
        outer.extend_from_slice(&(inner.len() as u32).to_be_bytes());
        outer.extend_from_slice(&inner);
        inner = outer;
    }
    inner
}
