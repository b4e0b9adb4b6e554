//! A minimal AMQP 0-9-1 client on a blocking `std::net::TcpStream`, on warren's codec
//! (`warren::frame`, `warren::protocol`, `warren::wire`) and nothing else.
//!
//! [`RawConnection`] does the handshake by hand and synchronous calls (declare, delete, a
//! passive declare's message count) frame by frame. The hot paths of the ceiling do not go
//! through it: they write frames encoded once ([`publish_frames`], [`repeat`], [`ack_frame`])
//! and read with [`FrameReader`], which hands out whole frames as byte slices for the caller
//! to pick the few fields it needs at fixed offsets.
//!
//! The runners also use it for setup and checks outside the measured interval, so that every
//! client gets the same queues, filled the same way.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use warren::frame::{self, FRAME_METHOD, Frame, FrameDecoder, PROTOCOL_HEADER};
use warren::protocol::{
    BasicProperties, BasicPublish, ChannelOpen, ConnectionClose, ConnectionCloseOk, ConnectionOpen,
    ConnectionOpenOk, ConnectionStart, ConnectionStartOk, ConnectionTune, ConnectionTuneOk, Method,
    QueueDeclare, QueueDeclareOk, QueueDelete, Request,
};
use warren::wire::{AmqpMethod, FieldTable, LongString, MethodId, Reader, ShortString};

use crate::{AmqpUrl, QUEUE_EXPIRES_MS, Result, ensure};

/// The frame_max the raw connection asks for (RabbitMQ's default, and warren's).
pub const FRAME_MAX: u32 = 131_072;

/// A connection to the broker, opened by hand, heartbeats off.
#[derive(Debug)]
pub struct RawConnection {
    stream: TcpStream,
    read_buf: BytesMut,
    decoder: FrameDecoder,
    frame_max: u32,
    server_properties: FieldTable,
}

impl RawConnection {
    /// Connects and opens the virtual host: protocol header, start/start-ok (PLAIN),
    /// tune/tune-ok, open/open-ok.
    pub fn connect(url: &AmqpUrl) -> Result<Self> {
        let stream = TcpStream::connect((url.host.as_str(), url.port))
            .map_err(|e| format!("connecting to {url:?}: {e}"))?;
        stream.set_nodelay(true)?;
        let mut conn = Self {
            stream,
            read_buf: BytesMut::with_capacity(64 * 1024),
            decoder: FrameDecoder::default(),
            frame_max: frame::FRAME_MIN_SIZE,
            server_properties: FieldTable::new(),
        };
        conn.stream.write_all(&PROTOCOL_HEADER)?;
        let start: ConnectionStart = conn.expect(0)?;
        conn.server_properties = start.server_properties;
        let mut response = vec![0];
        response.extend_from_slice(url.user.as_bytes());
        response.push(0);
        response.extend_from_slice(url.password.as_bytes());
        conn.send(
            0,
            &ConnectionStartOk {
                client_properties: FieldTable::new().with("product", "warren-bench raw"),
                mechanism: ShortString::from_static("PLAIN"),
                response: LongString::from(response),
                locale: ShortString::from_static("en_US"),
            },
        )?;
        let tune: ConnectionTune = conn.expect(0)?;
        let frame_max = match tune.frame_max {
            0 => FRAME_MAX,
            max => max.min(FRAME_MAX),
        };
        let channel_max = match tune.channel_max {
            0 => 2047,
            max => max.min(2047),
        };
        conn.send(
            0,
            &ConnectionTuneOk {
                channel_max,
                frame_max,
                heartbeat: 0,
            },
        )?;
        conn.frame_max = frame_max;
        conn.decoder.set_max_frame_size(frame_max);
        conn.send(
            0,
            &ConnectionOpen {
                virtual_host: ShortString::try_from(url.vhost.as_str())?,
            },
        )?;
        let _: ConnectionOpenOk = conn.expect(0)?;
        Ok(conn)
    }

    /// The negotiated frame_max.
    pub fn frame_max(&self) -> u32 {
        self.frame_max
    }

    /// What the broker said about itself in `connection.start`.
    pub fn server_properties(&self) -> &FieldTable {
        &self.server_properties
    }

    /// The socket, for the hot paths (`&TcpStream` reads and writes).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Bytes read past the last frame handed out; a hot path that takes over reading
    /// must start with them.
    pub fn take_read_buf(&mut self) -> BytesMut {
        std::mem::take(&mut self.read_buf)
    }

    /// Sends one method frame.
    pub fn send<M: AmqpMethod>(&mut self, channel: u16, method: &M) -> Result<()> {
        let mut out = BytesMut::new();
        frame::encode_method(&mut out, channel, method, self.frame_max)?;
        self.stream.write_all(&out)?;
        Ok(())
    }

    /// The next frame, reading as needed.
    pub fn next_frame(&mut self) -> Result<Frame> {
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.read_buf)? {
                return Ok(frame);
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.stream.read(&mut chunk)?;
            ensure(n > 0, || "the broker closed the connection".into())?;
            self.read_buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Waits for method `R` on `channel`; a close or any other frame is an error.
    pub fn expect<R: TryFrom<Method, Error = Method>>(&mut self, channel: u16) -> Result<R> {
        loop {
            match self.next_frame()? {
                Frame::Heartbeat => continue,
                Frame::Method { channel: c, method } if c == channel => {
                    return R::try_from(method).map_err(|other| unexpected(&other).into());
                }
                Frame::Method { method, .. } => return Err(unexpected(&method).into()),
                other => {
                    return Err(format!("unexpected frame on a raw call: {other:?}").into());
                }
            }
        }
    }

    /// Sends a synchronous method and waits for its reply.
    pub fn call<M: Request>(&mut self, channel: u16, method: M) -> Result<M::Reply> {
        self.send(channel, &method)?;
        self.expect(channel)
    }

    /// Opens `channel`.
    pub fn open_channel(&mut self, channel: u16) -> Result<()> {
        self.call(channel, ChannelOpen)?;
        Ok(())
    }

    /// Declares a transient queue (expiring after ten minutes unused).
    pub fn declare(&mut self, channel: u16, queue: &str) -> Result<()> {
        self.call(
            channel,
            QueueDeclare {
                queue: ShortString::try_from(queue)?,
                arguments: FieldTable::new().with("x-expires", QUEUE_EXPIRES_MS),
                ..Default::default()
            },
        )?;
        Ok(())
    }

    /// A passive declare: the queue's ready messages and consumers.
    pub fn inspect(&mut self, channel: u16, queue: &str) -> Result<QueueDeclareOk> {
        self.call(
            channel,
            QueueDeclare {
                queue: ShortString::try_from(queue)?,
                passive: true,
                ..Default::default()
            },
        )
    }

    /// Polls a passive declare every millisecond until the queue holds `n` messages.
    pub fn wait_for_count(&mut self, channel: u16, queue: &str, n: u64) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let count = u64::from(self.inspect(channel, queue)?.message_count);
            ensure(count <= n, || {
                format!("{queue} holds {count} messages, more than {n}")
            })?;
            if count == n {
                return Ok(());
            }
            ensure(Instant::now() < deadline, || {
                format!("{queue} holds {count} of {n} messages after 300 s")
            })?;
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Deletes a queue; returns the messages it held.
    pub fn delete(&mut self, channel: u16, queue: &str) -> Result<u32> {
        let ok = self.call(
            channel,
            QueueDelete {
                queue: ShortString::try_from(queue)?,
                ..Default::default()
            },
        )?;
        Ok(ok.message_count)
    }

    /// Closes the connection politely.
    pub fn close(mut self) -> Result<()> {
        self.send(
            0,
            &ConnectionClose {
                reply_code: 200,
                reply_text: ShortString::from_static("bye"),
                class_id: 0,
                method_id: 0,
            },
        )?;
        loop {
            // Frames still in flight on other channels are skipped.
            if let Frame::Method {
                channel: 0,
                method: Method::ConnectionCloseOk(ConnectionCloseOk {}),
            } = self.next_frame()?
            {
                return Ok(());
            }
        }
    }
}

fn unexpected(method: &Method) -> String {
    match method {
        Method::ChannelClose(close) => format!(
            "the broker closed the channel: {} {}",
            close.reply_code, close.reply_text
        ),
        Method::ConnectionClose(close) => format!(
            "the broker closed the connection: {} {}",
            close.reply_code, close.reply_text
        ),
        other => format!("unexpected {}", other.name()),
    }
}

/// Appends a whole publish (method, header and body frames) to `out`.
pub fn publish_frames(
    out: &mut BytesMut,
    channel: u16,
    routing_key: &str,
    body: &Bytes,
    properties: &BasicProperties,
    frame_max: u32,
) -> Result<()> {
    let method = BasicPublish {
        exchange: ShortString::default(),
        routing_key: ShortString::try_from(routing_key)?,
        mandatory: false,
        immediate: false,
    };
    frame::encode_method(out, channel, &method, frame_max)?;
    frame::encode_content(out, channel, properties, body, frame_max)?;
    Ok(())
}

/// `template` repeated as often as fits in about `target` bytes (at least once); returns the
/// buffer and the number of copies.
pub fn repeat(template: &[u8], target: usize) -> (Vec<u8>, usize) {
    let copies = (target / template.len().max(1)).max(1);
    (template.repeat(copies), copies)
}

/// Writes `n` messages from `batch` (`per_batch` copies of a `len`-byte publish) in writes of
/// a whole batch.
pub fn write_messages(
    mut stream: &TcpStream,
    batch: &[u8],
    per_batch: usize,
    len: usize,
    n: u64,
) -> Result<()> {
    let mut left = n;
    while left > 0 {
        let k = left.min(per_batch as u64) as usize;
        stream.write_all(&batch[..k * len])?;
        left -= k as u64;
    }
    Ok(())
}

/// A `basic.ack` frame: 7 header bytes, class and method, the tag, the `multiple` bit, the
/// frame end. The tag sits at [`ACK_TAG_OFFSET`].
pub fn ack_frame(channel: u16, tag: u64, multiple: bool) -> [u8; 21] {
    let mut f = [0u8; 21];
    f[0] = FRAME_METHOD;
    f[1..3].copy_from_slice(&channel.to_be_bytes());
    f[3..7].copy_from_slice(&13u32.to_be_bytes());
    f[7..9].copy_from_slice(&60u16.to_be_bytes());
    f[9..11].copy_from_slice(&80u16.to_be_bytes());
    f[ACK_TAG_OFFSET..ACK_TAG_OFFSET + 8].copy_from_slice(&tag.to_be_bytes());
    f[19] = u8::from(multiple);
    f[20] = frame::FRAME_END;
    f
}

/// Where the delivery tag sits in an [`ack_frame`].
pub const ACK_TAG_OFFSET: usize = 11;

/// `basic` class id and the methods the hot paths recognise by their ids.
pub mod ids {
    /// `basic.deliver`.
    pub const DELIVER: (u16, u16) = (60, 60);
    /// `basic.ack`.
    pub const ACK: (u16, u16) = (60, 80);
    /// `basic.nack`.
    pub const NACK: (u16, u16) = (60, 120);
}

/// The class and method ids at the start of a method frame's payload.
pub fn method_id(payload: &[u8]) -> (u16, u16) {
    (
        u16::from_be_bytes([payload[0], payload[1]]),
        u16::from_be_bytes([payload[2], payload[3]]),
    )
}

/// The error a method the hot path did not expect stands for (a close tells why).
pub fn unexpected_method(payload: &[u8]) -> crate::BoxError {
    let (class, method) = method_id(payload);
    let mut reader = Reader::from_slice(&payload[4..]);
    match Method::decode(MethodId::new(class, method), &mut reader) {
        Ok(m) => unexpected(&m).into(),
        Err(e) => format!("undecodable method {class}.{method}: {e}").into(),
    }
}

/// A read buffer handing out whole frames as `(type, channel, payload)` slices, without
/// copying or decoding them.
#[derive(Debug)]
pub struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl FrameReader {
    /// A reader holding `initial` (bytes already read from the socket); room for the largest
    /// frame and more.
    pub fn new(initial: &[u8]) -> Self {
        let mut buf = vec![0; (4 * FRAME_MAX as usize).max(initial.len())];
        buf[..initial.len()].copy_from_slice(initial);
        Self {
            buf,
            start: 0,
            end: initial.len(),
        }
    }

    /// Reads once from `stream` (blocking), after moving what is left to the front.
    pub fn fill(&mut self, mut stream: &TcpStream) -> Result<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let n = stream.read(&mut self.buf[self.end..])?;
        ensure(n > 0, || "the broker closed the connection".into())?;
        self.end += n;
        Ok(())
    }

    /// Calls `f(type, channel, payload)` for every whole frame buffered, and drops them.
    pub fn scan(&mut self, mut f: impl FnMut(u8, u16, &[u8]) -> Result<()>) -> Result<()> {
        loop {
            let data = &self.buf[self.start..self.end];
            if data.len() < 7 {
                return Ok(());
            }
            let size = u32::from_be_bytes([data[3], data[4], data[5], data[6]]) as usize;
            ensure(size + 8 <= self.buf.len(), || {
                format!("a frame of {size} bytes is larger than the buffer")
            })?;
            if data.len() < size + 8 {
                return Ok(());
            }
            ensure(data[7 + size] == frame::FRAME_END, || {
                "bad frame end".into()
            })?;
            let channel = u16::from_be_bytes([data[1], data[2]]);
            f(data[0], channel, &data[7..7 + size])?;
            self.start += size + 8;
        }
    }
}

/// Declares `queues` (on one raw connection).
pub fn declare_queues(url: &AmqpUrl, queues: &[String]) -> Result<()> {
    let mut conn = RawConnection::connect(url)?;
    conn.open_channel(1)?;
    for queue in queues {
        conn.declare(1, queue)?;
    }
    conn.close()
}

/// Deletes `queues` (on one raw connection).
pub fn delete_queues(url: &AmqpUrl, queues: &[String]) -> Result<()> {
    let mut conn = RawConnection::connect(url)?;
    conn.open_channel(1)?;
    for queue in queues {
        conn.delete(1, queue)?;
    }
    conn.close()
}

/// Declares `queue` and publishes `n` bodies of `size` bytes into it, in large writes; returns
/// once the broker holds them all.
pub fn prefill(url: &AmqpUrl, queue: &str, n: u64, size: usize) -> Result<()> {
    let mut conn = RawConnection::connect(url)?;
    conn.open_channel(1)?;
    conn.declare(1, queue)?;
    let body = Bytes::from(crate::body(size));
    let mut template = BytesMut::new();
    publish_frames(
        &mut template,
        1,
        queue,
        &body,
        &BasicProperties::default(),
        conn.frame_max(),
    )?;
    let (batch, per_batch) = repeat(&template, 256 * 1024);
    write_messages(conn.stream(), &batch, per_batch, template.len(), n)?;
    conn.wait_for_count(1, queue, n)?;
    conn.close()
}

/// Checks, after a consumer's connection closed, that `queue` is empty (every delivery was
/// acknowledged: unacknowledged ones would have been requeued) and has no consumer left, then
/// deletes it.
pub fn verify_consumed_and_delete(url: &AmqpUrl, queue: &str) -> Result<()> {
    let mut conn = RawConnection::connect(url)?;
    conn.open_channel(1)?;
    // The broker requeues a closed channel's unacknowledged messages asynchronously.
    std::thread::sleep(Duration::from_millis(300));
    let ok = conn.inspect(1, queue)?;
    ensure(ok.message_count == 0 && ok.consumer_count == 0, || {
        format!(
            "after consuming, {queue} holds {} messages (unacknowledged ones requeued?) and {} consumers",
            ok.message_count, ok.consumer_count
        )
    })?;
    conn.delete(1, queue)?;
    conn.close()
}
