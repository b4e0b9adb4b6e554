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

use bytes::{Bytes, BytesMut};
use criterion::{Bencher, Criterion, criterion_group, criterion_main};

#[path = "codec/cases.rs"]
mod cases;

use cases::*;

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
