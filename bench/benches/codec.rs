//! Codec speed against lapin's amq-protocol 10.x, measured in the same run.
//!
//! Each case encodes or decodes three frames: a method (basic.publish or basic.deliver), its
//! content header (content_type, delivery_mode and three headers) and a 16-byte body. Values
//! are built once outside the timed loop; encoders append into a buffer that is cleared each
//! iteration; decoders parse the frames from bytes prepared outside the timed loop and decode
//! the content properties, which amq-protocol always does. warren checks the headers table in
//! full but builds its entries only when they are read, so `decode+headers/warren` also reads
//! every header: what a consumer that looks at its headers pays.
//!
//! Decoders are timed by [`time_decoding`], not criterion's `iter_batched`: that one keeps
//! each output in memory it allocates fresh per batch, so the timed loop also pays page faults
//! in proportion to the outputs' size, which has nothing to do with the codec.
//!
//! Run: `cargo bench -p warren-bench --bench codec`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use amq_protocol::frame::{AMQPContentHeader, AMQPFrame, gen_frame, parse_frame};
use amq_protocol::protocol::{AMQPClass, BasicProperties as AmqBasicProperties, basic};
use amq_protocol::types::{AMQPValue, FieldTable as AmqFieldTable, ShortString as AmqShortString};
use bytes::{Bytes, BytesMut};
use criterion::{Bencher, Criterion, criterion_group, criterion_main};
use warren::frame::{Frame, FrameDecoder, encode_content, encode_method};
use warren::protocol::{BasicDeliver, BasicProperties, BasicPublish};
use warren::wire::{ContentProperties, FieldTable, Reader, ShortString};

const BODY: &[u8; 16] = b"0123456789abcdef";
const FRAME_MAX: u32 = 131_072;

fn warren_properties() -> BasicProperties {
    BasicProperties {
        content_type: Some(ShortString::from_static("application/json")),
        delivery_mode: Some(2),
        headers: Some(
            // In key order, as amq-protocol's BTreeMap writes them, so the bytes compare equal.
            FieldTable::new()
                .with("x-retries", 3i32)
                .with("x-trace-id", "4bf92f3577b34da6")
                .with("x-urgent", true),
        ),
        ..Default::default()
    }
}

fn amq_properties() -> AmqBasicProperties {
    let mut headers = AmqFieldTable::default();
    headers.insert(
        "x-trace-id".into(),
        AMQPValue::LongString("4bf92f3577b34da6".into()),
    );
    headers.insert("x-retries".into(), AMQPValue::LongInt(3));
    headers.insert("x-urgent".into(), AMQPValue::Boolean(true));
    AmqBasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_headers(headers)
}

fn warren_publish() -> BasicPublish {
    BasicPublish {
        exchange: ShortString::from_static("orders"),
        routing_key: ShortString::from_static("orders.created.eu"),
        mandatory: true,
        immediate: false,
    }
}

fn warren_deliver() -> BasicDeliver {
    BasicDeliver {
        consumer_tag: ShortString::from_static("amq.ctag-Qx5tBDxfd0tEZB1qL0Xnzg"),
        delivery_tag: 42_000,
        redelivered: false,
        exchange: ShortString::from_static("orders"),
        routing_key: ShortString::from_static("orders.created.eu"),
    }
}

fn amq_frames(method: basic::AMQPMethod) -> [AMQPFrame; 3] {
    [
        AMQPFrame::Method(1, AMQPClass::Basic(method)),
        AMQPFrame::Header(
            1,
            AMQPContentHeader {
                class_id: 60,
                body_size: BODY.len() as u64,
                properties: amq_properties(),
            },
        ),
        AMQPFrame::Body(1, BODY.to_vec()),
    ]
}

fn amq_publish() -> basic::AMQPMethod {
    basic::AMQPMethod::Publish(basic::Publish {
        exchange: AmqShortString::from("orders"),
        routing_key: AmqShortString::from("orders.created.eu"),
        mandatory: true,
        immediate: false,
    })
}

fn amq_deliver() -> basic::AMQPMethod {
    basic::AMQPMethod::Deliver(basic::Deliver {
        consumer_tag: AmqShortString::from("amq.ctag-Qx5tBDxfd0tEZB1qL0Xnzg"),
        delivery_tag: 42_000,
        redelivered: false,
        exchange: AmqShortString::from("orders"),
        routing_key: AmqShortString::from("orders.created.eu"),
    })
}

fn warren_encode<M: warren::wire::AmqpMethod>(
    buf: &mut BytesMut,
    method: &M,
    properties: &BasicProperties,
    body: &Bytes,
) {
    buf.clear();
    encode_method(buf, 1, method, FRAME_MAX).unwrap();
    encode_content(buf, 1, properties, body, FRAME_MAX).unwrap();
}

fn amq_encode(buf: &mut Vec<u8>, frames: &[AMQPFrame; 3]) {
    buf.clear();
    for frame in frames {
        let (written, _) = cookie_factory::r#gen(gen_frame(frame), std::mem::take(buf)).unwrap();
        *buf = written;
    }
}

/// The frames in a buffer like the connection's read buffer: its storage already shared with
/// earlier frames, as it is after the first frame split off it (a one-time cost per buffer,
/// not per frame).
fn read_buffer(frames: &[u8]) -> BytesMut {
    let mut buf = BytesMut::with_capacity(frames.len() + 64);
    buf.extend_from_slice(frames);
    drop(buf.split_off(frames.len()));
    buf
}

/// Decodes the three frames and the content properties.
fn warren_decode(mut buf: BytesMut) -> (Frame, BasicProperties, Frame) {
    let decoder = FrameDecoder::new(FRAME_MAX);
    let method = decoder.decode(&mut buf).unwrap().unwrap();
    let Some(Frame::Header { header, .. }) = decoder.decode(&mut buf).unwrap() else {
        unreachable!("the second frame is a header")
    };
    let properties = BasicProperties::decode(&mut Reader::new(header.properties)).unwrap();
    let body = decoder.decode(&mut buf).unwrap().unwrap();
    (method, properties, body)
}

/// Decodes and then reads every header, as a consumer that looks at them does.
fn warren_decode_and_read_headers(buf: BytesMut) -> (Frame, BasicProperties, Frame) {
    let decoded = warren_decode(buf);
    if let Some(headers) = &decoded.1.headers {
        for entry in headers {
            black_box(entry);
        }
    }
    decoded
}

/// How many inputs are prepared, and outputs kept, per timed batch: small enough that both
/// stay in cache, large enough that reading the clock is a negligible part of the time.
const DECODE_BATCH: usize = 256;

/// Times `decode` over inputs from `input`, prepared before each batch. The outputs are kept
/// until the batch ends, as with `iter_batched`, but in a buffer allocated (and touched) once,
/// and dropped outside the timed loop.
fn time_decoding<I, O>(b: &mut Bencher, input: impl Fn() -> I, decode: impl Fn(I) -> O) {
    let mut outputs: Vec<O> = Vec::with_capacity(DECODE_BATCH);
    b.iter_custom(|iters| {
        let mut timed = Duration::ZERO;
        let mut left = iters;
        while left > 0 {
            let batch = left.min(DECODE_BATCH as u64);
            let inputs: Vec<I> = (0..batch).map(|_| input()).collect();
            let start = Instant::now();
            for input in inputs {
                outputs.push(decode(black_box(input)));
            }
            timed += start.elapsed();
            black_box(&outputs);
            outputs.clear();
            left -= batch;
        }
        timed
    });
}

fn amq_decode(bytes: &[u8]) -> [AMQPFrame; 3] {
    let (rest, method) = parse_frame(bytes).unwrap();
    let (rest, header) = parse_frame(rest).unwrap();
    let (_, body) = parse_frame(rest).unwrap();
    [method, header, body]
}

fn codec(c: &mut Criterion) {
    let properties = warren_properties();
    let body = Bytes::from_static(BODY);
    for (name, amq_method) in [("publish", amq_publish()), ("deliver", amq_deliver())] {
        let mut group = c.benchmark_group(name);
        let amq = amq_frames(amq_method);
        let mut warren_buf = BytesMut::with_capacity(1024);
        let mut amq_buf = Vec::with_capacity(1024);

        // Both encoders must produce the same bytes, or the comparison means nothing.
        if name == "publish" {
            warren_encode(&mut warren_buf, &warren_publish(), &properties, &body);
        } else {
            warren_encode(&mut warren_buf, &warren_deliver(), &properties, &body);
        }
        amq_encode(&mut amq_buf, &amq);
        assert_eq!(
            &warren_buf[..],
            &amq_buf[..],
            "{name}: the encoders disagree"
        );
        let encoded = warren_buf.clone().freeze();
        println!("{name}: {} bytes in three frames", encoded.len());

        match name {
            "publish" => {
                let method = warren_publish();
                group.bench_function("encode/warren", |b| {
                    b.iter(|| {
                        warren_encode(&mut warren_buf, black_box(&method), &properties, &body)
                    })
                });
            }
            _ => {
                let method = warren_deliver();
                group.bench_function("encode/warren", |b| {
                    b.iter(|| {
                        warren_encode(&mut warren_buf, black_box(&method), &properties, &body)
                    })
                });
            }
        }
        group.bench_function("encode/amq-protocol", |b| {
            b.iter(|| amq_encode(&mut amq_buf, black_box(&amq)))
        });
        group.bench_function("decode/warren", |b| {
            time_decoding(b, || read_buffer(&encoded), warren_decode)
        });
        group.bench_function("decode+headers/warren", |b| {
            time_decoding(b, || read_buffer(&encoded), warren_decode_and_read_headers)
        });
        group.bench_function("decode/amq-protocol", |b| {
            time_decoding(b, || encoded.to_vec(), |bytes| amq_decode(&bytes))
        });
        group.finish();
    }
}

criterion_group!(benches, codec);
criterion_main!(benches);
