//! The ceiling: the least work a client can do for each scenario, so that its rates are what
//! this broker on this machine gives any client.
//!
//! Blocking sockets and plain threads, no runtime. The handshake and the few synchronous
//! calls go through [`RawConnection`] (warren's codec); the hot paths write frames encoded
//! once into a large buffer, in large writes, and read frames in place ([`FrameReader`]),
//! looking only at the fields they need at fixed offsets: a `basic.ack`'s tag and `multiple`
//! bit, a `basic.deliver`'s tag, a body frame's length, a correlation id.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use warren::frame::{FRAME_BODY, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD};
use warren::protocol::{BasicConsume, BasicProperties, BasicQos, ConfirmSelect};
use warren::wire::ShortString;
use warren_bench::raw::{
    self, FrameReader, RawConnection, ack_frame, ids, method_id, publish_frames, repeat,
    unexpected_method, write_messages,
};
use warren_bench::{
    CORRELATION_ID_LEN, Meter, Outcome, Params, Result, Scenario, body, correlation_id, ensure,
    queue_name,
};

/// Consecutive messages per channel in the fan-in's writes: the broker takes runs on one
/// channel faster than messages alternating between channels (in quick, noisy tests here with
/// 200k x 16 B: runs of 256 to 1024 gave 130-155k msgs/s, alternating 113-117k).
const RUN: usize = 1024;

/// Bytes per write on the publishing paths.
const BATCH_BYTES: usize = 512 * 1024;

fn main() {
    warren_bench::run_blocking("ceiling", |p| match p.scenario {
        Scenario::Publish => publish(p, 1),
        Scenario::Fanin => publish(p, u16::try_from(p.tasks)?),
        Scenario::Confirm => confirm(p),
        Scenario::Consume => consume(p),
        Scenario::Rpc => rpc(p),
        Scenario::Idle => idle(p),
        Scenario::Publisher => Err(warren_bench::only_warren(p)),
    });
}

/// Publishes on `channels` channels of one connection, in runs of [`RUN`] messages per
/// channel (fan-in is publish with the tasks' channels: the ceiling has no tasks to
/// coordinate).
fn publish(p: &Params, channels: u16) -> Result<Outcome> {
    let queue = queue_name("ceiling", p.scenario.name());
    let mut conn = RawConnection::connect(&p.url)?;
    for channel in 1..=channels {
        conn.open_channel(channel)?;
    }
    conn.declare(1, &queue)?;
    let body = Bytes::from(body(p.size));
    let run = if channels == 1 { 1 } else { RUN };
    let mut template = BytesMut::new();
    for channel in 1..=channels {
        for _ in 0..run {
            publish_frames(
                &mut template,
                channel,
                &queue,
                &body,
                &BasicProperties::default(),
                conn.frame_max(),
            )?;
        }
    }
    // Every message has the same length whatever its channel.
    let len = template.len() / usize::from(channels) / run;
    let (batch, copies) = repeat(&template, BATCH_BYTES);

    let meter = Meter::start(p.broker_pid, true);
    write_messages(
        conn.stream(),
        &batch,
        copies * usize::from(channels) * run,
        len,
        p.messages,
    )?;
    conn.wait_for_count(1, &queue, p.messages)?;
    let measured = meter.stop();

    conn.delete(1, &queue)?;
    conn.close()?;
    Ok(Outcome::new(measured, p.messages))
}

/// Confirmed publishing: this thread writes while fewer than `window` are unconfirmed, a
/// reader thread counts the acks.
fn confirm(p: &Params) -> Result<Outcome> {
    let n = p.messages;
    let window = p.window as u64;
    let queue = queue_name("ceiling", "confirm");
    let mut conn = RawConnection::connect(&p.url)?;
    conn.open_channel(1)?;
    conn.declare(1, &queue)?;
    conn.call(1, ConfirmSelect { no_wait: false })?;
    let mut template = BytesMut::new();
    publish_frames(
        &mut template,
        1,
        &queue,
        &Bytes::from(body(p.size)),
        &BasicProperties::default(),
        conn.frame_max(),
    )?;
    let len = template.len();
    let (batch, per_batch) = repeat(&template, BATCH_BYTES.min(len * p.window));
    let leftover = conn.take_read_buf();
    let read_stream = conn.stream().try_clone()?;
    let confirmed = Arc::new(AtomicU64::new(0));
    let writer = std::thread::current();

    let meter = Meter::start(p.broker_pid, true);
    let reader = {
        let confirmed = confirmed.clone();
        std::thread::spawn(move || {
            let result = count_confirms(&read_stream, &leftover, n, &confirmed, &writer);
            writer.unpark();
            result
        })
    };
    let mut sent = 0u64;
    let mut stream = conn.stream();
    while sent < n {
        let room = window - (sent - confirmed.load(Ordering::Acquire));
        if room == 0 {
            if reader.is_finished() {
                break;
            }
            std::thread::park_timeout(Duration::from_millis(100));
            continue;
        }
        let k = room.min(n - sent).min(per_batch as u64);
        stream.write_all(&batch[..k as usize * len])?;
        sent += k;
    }
    reader.join().map_err(|_| "the ack reader panicked")??;
    let measured = meter.stop();
    ensure(sent == n, || format!("sent {sent} of {n}"))?;

    conn.delete(1, &queue)?;
    conn.close()?;
    Ok(Outcome::new(measured, n))
}

/// Reads acks until all of tags `1..=n` are acked; a nack or anything else is an error.
fn count_confirms(
    stream: &std::net::TcpStream,
    leftover: &[u8],
    n: u64,
    confirmed: &AtomicU64,
    writer: &std::thread::Thread,
) -> Result<()> {
    let mut reader = FrameReader::new(leftover);
    let mut acked = vec![false; n as usize + 1];
    // Every tag up to `low` is acked; `count` tags in all.
    let mut low = 0u64;
    let mut count = 0u64;
    loop {
        reader.scan(|kind, _channel, payload| {
            if kind == FRAME_HEARTBEAT {
                return Ok(());
            }
            ensure(kind == FRAME_METHOD, || {
                format!("unexpected frame type {kind}")
            })?;
            match method_id(payload) {
                ids::ACK => {
                    let tag = u64::from_be_bytes(payload[4..12].try_into()?);
                    let multiple = payload[12] & 1 == 1;
                    ensure(tag <= n && tag > 0, || format!("ack of unknown tag {tag}"))?;
                    let first = if multiple { low + 1 } else { tag };
                    for t in first..=tag {
                        if !acked[t as usize] {
                            acked[t as usize] = true;
                            count += 1;
                        }
                    }
                    while low < n && acked[low as usize + 1] {
                        low += 1;
                    }
                    Ok(())
                }
                ids::NACK => Err("the broker nacked a publish".into()),
                _ => Err(unexpected_method(payload)),
            }
        })?;
        confirmed.store(count, Ordering::Release);
        if count == n {
            return Ok(());
        }
        // Room may have opened.
        writer.unpark();
        reader.fill(stream)?;
    }
}

/// Consumes the pre-filled queue; after each read, the acks for what it held go out in one
/// write.
fn consume(p: &Params) -> Result<Outcome> {
    let n = p.messages;
    let queue = queue_name("ceiling", "consume");
    raw::prefill(&p.url, &queue, n, p.size)?;
    let mut conn = RawConnection::connect(&p.url)?;
    conn.open_channel(1)?;
    conn.call(
        1,
        BasicQos {
            prefetch_size: 0,
            prefetch_count: p.prefetch,
            global: false,
        },
    )?;
    // The deliver's tag follows class, method and the consumer tag "c".
    const TAG_OFFSET: usize = 4 + 1 + 1;

    let meter = Meter::start(p.broker_pid, true);
    conn.call(
        1,
        BasicConsume {
            queue: ShortString::try_from(queue.as_str())?,
            consumer_tag: ShortString::from_static("c"),
            ..Default::default()
        },
    )?;
    let mut reader = FrameReader::new(&conn.take_read_buf());
    let stream = conn.stream();
    let mut received = 0u64;
    let mut body_bytes = 0u64;
    let mut acks = Vec::with_capacity(64 * 1024);
    let expected_bytes = n * p.size as u64;
    loop {
        reader.scan(|kind, _channel, payload| {
            match kind {
                FRAME_METHOD => {
                    ensure(method_id(payload) == ids::DELIVER, || {
                        unexpected_method(payload).to_string()
                    })?;
                    let tag = u64::from_be_bytes(payload[TAG_OFFSET..TAG_OFFSET + 8].try_into()?);
                    received += 1;
                    ensure(tag == received, || {
                        format!("delivery tag {tag}, expected {received}")
                    })?;
                    if p.ack_every == 1 {
                        acks.extend_from_slice(&ack_frame(1, tag, false));
                    } else if tag.is_multiple_of(p.ack_every) || tag == n {
                        acks.extend_from_slice(&ack_frame(1, tag, true));
                    }
                }
                FRAME_BODY => body_bytes += payload.len() as u64,
                FRAME_HEADER | FRAME_HEARTBEAT => {}
                other => return Err(format!("unexpected frame type {other}").into()),
            }
            Ok(())
        })?;
        if !acks.is_empty() {
            (&mut &*stream).write_all(&acks)?;
            acks.clear();
        }
        if received >= n && body_bytes >= expected_bytes {
            break;
        }
        reader.fill(stream)?;
    }
    let measured = meter.stop();
    ensure(received == n && body_bytes == expected_bytes, || {
        format!(
            "received {received} deliveries and {body_bytes} body bytes, expected {n} and {expected_bytes}"
        )
    })?;

    conn.close()?;
    raw::verify_consumed_and_delete(&p.url, &queue)?;
    Ok(Outcome::new(measured, n))
}

/// A placeholder correlation id, patched in the pre-encoded frames.
const PLACEHOLDER: &[u8; CORRELATION_ID_LEN] = b"@@@@@@@@@@@@@@@@";

/// Where the placeholder correlation id sits in `frames`.
fn placeholder_offset(frames: &[u8]) -> Result<usize> {
    frames
        .windows(CORRELATION_ID_LEN)
        .position(|w| w == PLACEHOLDER)
        .ok_or_else(|| "no correlation id in the template".into())
}

/// Request/reply: a server thread answers on its own connection; this thread sends one
/// request at a time and waits for its reply.
fn rpc(p: &Params) -> Result<Outcome> {
    let requests = queue_name("ceiling", "rpc-requests");
    let replies = queue_name("ceiling", "rpc-replies");
    ensure(p.size > 0, || {
        "rpc needs a body of at least one byte".into()
    })?;
    raw::declare_queues(&p.url, &[requests.clone(), replies.clone()])?;
    let total = p.warmup + p.messages;
    let body = Bytes::from(body(p.size));

    // The server: consume requests (no ack), answer each to its reply_to.
    let mut server = RawConnection::connect(&p.url)?;
    server.open_channel(1)?;
    server.call(
        1,
        BasicConsume {
            queue: ShortString::try_from(requests.as_str())?,
            consumer_tag: ShortString::from_static("s"),
            no_ack: true,
            ..Default::default()
        },
    )?;
    let mut reply = BytesMut::new();
    publish_frames(
        &mut reply,
        1,
        &replies,
        &body,
        &BasicProperties {
            correlation_id: Some(ShortString::try_from(std::str::from_utf8(PLACEHOLDER)?)?),
            ..Default::default()
        },
        server.frame_max(),
    )?;
    let server = {
        let replies = replies.clone();
        std::thread::spawn(move || serve(server, reply.to_vec(), &replies, total))
    };

    // The client.
    let mut client = RawConnection::connect(&p.url)?;
    client.open_channel(1)?;
    client.call(
        1,
        BasicConsume {
            queue: ShortString::try_from(replies.as_str())?,
            consumer_tag: ShortString::from_static("r"),
            no_ack: true,
            ..Default::default()
        },
    )?;
    let mut request = BytesMut::new();
    publish_frames(
        &mut request,
        1,
        &requests,
        &body,
        &BasicProperties {
            correlation_id: Some(ShortString::try_from(std::str::from_utf8(PLACEHOLDER)?)?),
            reply_to: Some(ShortString::try_from(replies.as_str())?),
            ..Default::default()
        },
        client.frame_max(),
    )?;
    let mut request = request.to_vec();
    let at = placeholder_offset(&request)?;
    let mut reader = FrameReader::new(&client.take_read_buf());
    let mut stream = client.stream();
    let mut latencies = Vec::with_capacity(p.messages as usize);
    let mut meter = None;
    for i in 0..total {
        if i == p.warmup {
            meter = Some(Meter::start(p.broker_pid, true));
        }
        let id = correlation_id(i);
        request[at..at + CORRELATION_ID_LEN].copy_from_slice(id.as_bytes());
        let sent = Instant::now();
        stream.write_all(&request)?;
        let mut matched = false;
        let mut got_body = 0;
        while got_body < p.size || !matched {
            reader.scan(|kind, _channel, payload| {
                match kind {
                    FRAME_METHOD => ensure(method_id(payload) == ids::DELIVER, || {
                        unexpected_method(payload).to_string()
                    })?,
                    FRAME_HEADER => {
                        // class, weight, body size, flags (correlation_id only), the id.
                        ensure(payload[12..14] == [0x04, 0x00], || {
                            "unexpected reply properties".into()
                        })?;
                        let len = usize::from(payload[14]);
                        ensure(&payload[15..15 + len] == id.as_bytes(), || {
                            "a reply to another request".into()
                        })?;
                        matched = true;
                    }
                    FRAME_BODY => got_body += payload.len(),
                    _ => {}
                }
                Ok(())
            })?;
            if got_body < p.size || !matched {
                reader.fill(stream)?;
            }
        }
        if i >= p.warmup {
            latencies.push(sent.elapsed().as_nanos() as u64);
        }
    }
    let measured = meter.ok_or("no measured round trip")?.stop();
    server.join().map_err(|_| "the server panicked")??;

    client.close()?;
    raw::delete_queues(&p.url, &[requests, replies])?;
    Ok(Outcome {
        measured,
        messages: p.messages,
        latencies_ns: latencies,
    })
}

/// The RPC server: reads each request's correlation id and reply_to at fixed offsets and
/// writes the pre-encoded reply with the id patched in.
fn serve(mut conn: RawConnection, mut reply: Vec<u8>, replies: &str, total: u64) -> Result<()> {
    let at = placeholder_offset(&reply)?;
    let mut reader = FrameReader::new(&conn.take_read_buf());
    let mut stream = conn.stream();
    let mut answered = 0u64;
    let mut pending = false;
    loop {
        reader.scan(|kind, _channel, payload| {
            match kind {
                FRAME_METHOD => ensure(method_id(payload) == ids::DELIVER, || {
                    unexpected_method(payload).to_string()
                })?,
                FRAME_HEADER => {
                    // flags: correlation_id and reply_to.
                    ensure(payload[12..14] == [0x06, 0x00], || {
                        "unexpected request properties".into()
                    })?;
                    let len = usize::from(payload[14]);
                    ensure(len == CORRELATION_ID_LEN, || "bad correlation id".into())?;
                    reply[at..at + len].copy_from_slice(&payload[15..15 + len]);
                    let to = &payload[16 + len..16 + len + usize::from(payload[15 + len])];
                    ensure(to == replies.as_bytes(), || "unexpected reply_to".into())?;
                    pending = true;
                }
                FRAME_BODY if pending => {
                    stream.write_all(&reply)?;
                    pending = false;
                    answered += 1;
                }
                _ => {}
            }
            Ok(())
        })?;
        if answered >= total {
            break;
        }
        reader.fill(stream)?;
    }
    conn.close()
}

/// Idle consumers: a connection, channels, consumers, nothing else.
fn idle(p: &Params) -> Result<Outcome> {
    let meter = Meter::start(p.broker_pid, false);
    let per_channel = p.consumers / p.channels;
    let queues: Vec<String> = (0..p.channels)
        .map(|c| queue_name("ceiling", &format!("idle{c}")))
        .collect();
    raw::declare_queues(&p.url, &queues)?;
    let mut conn = RawConnection::connect(&p.url)?;
    for (channel, queue) in (1..).zip(&queues) {
        conn.open_channel(channel)?;
        for k in 0..per_channel {
            conn.call(
                channel,
                BasicConsume {
                    queue: ShortString::try_from(queue.as_str())?,
                    consumer_tag: ShortString::try_from(format!("c{k}"))?,
                    ..Default::default()
                },
            )?;
        }
    }
    std::thread::sleep(Duration::from_secs_f64(p.idle_secs));
    let measured = meter.stop();
    conn.close()?;
    raw::delete_queues(&p.url, &queues)?;
    Ok(Outcome::new(measured, p.consumers as u64))
}
