//! The codec bench's delivery decode as a plain program, for callgrind and perf: the same
//! frames and decoding as `benches/codec.rs` (shared in `benches/codec/cases.rs`), in batches
//! of 256 like criterion's timed loop, without criterion's own work around it.
//!
//! ```sh
//! cargo build --release -p warren-bench --example codec_profile
//! # instructions per decode: only the decoding function is counted
//! valgrind --tool=callgrind --toggle-collect=codec_profile::decode_delivery \
//!     target/release/examples/codec_profile warren 25600     # then divide by 25600
//! # ns per decode, warren and amq-protocol alternating batch by batch
//! target/release/examples/codec_profile time 1000000
//! ```
//!
//! Modes: `warren` (decode), `headers` (decode, then read every header), `amq-protocol`,
//! each run `count` times (rounded up to whole batches); `time` runs all three, alternating,
//! and prints the median and fastest batch of each in ns per decode.

use std::hint::black_box;
use std::process::ExitCode;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use warren::frame::{Frame, encode_content, encode_method};
use warren::protocol::BasicProperties;

#[path = "../benches/codec/cases.rs"]
#[allow(dead_code)] // the publish and encoding cases are the bench's alone
mod cases;

use cases::*;

/// Inputs prepared, and outputs kept, per batch, as in the bench.
const BATCH: usize = 256;

/// The three frames of a delivery: what the decoders parse.
fn delivery_frames() -> Bytes {
    let mut buf = BytesMut::new();
    encode_method(&mut buf, 1, &warren_deliver(), FRAME_MAX).expect("fits");
    let body = Bytes::from_static(BODY);
    encode_content(&mut buf, 1, &warren_properties(), &body, FRAME_MAX).expect("fits");
    buf.freeze()
}

// One symbol per decoder, so that callgrind can count them alone (`--toggle-collect`).

#[inline(never)]
fn decode_delivery(buf: BytesMut) -> (Frame, BasicProperties, Frame) {
    warren_decode(buf)
}

#[inline(never)]
fn decode_delivery_and_read_headers(buf: BytesMut) -> (Frame, BasicProperties, Frame) {
    warren_decode_and_read_headers(buf)
}

#[inline(never)]
fn decode_delivery_amq(bytes: &[u8]) -> [amq_protocol::frame::AMQPFrame; 3] {
    amq_decode(bytes)
}

/// Runs `decode` over one batch of inputs from `input`, keeping the outputs until the batch
/// ends; returns ns per decode.
fn batch<I, O>(input: impl Fn() -> I, decode: impl Fn(I) -> O, outputs: &mut Vec<O>) -> f64 {
    let inputs: Vec<I> = (0..BATCH).map(|_| input()).collect();
    let start = Instant::now();
    for input in inputs {
        outputs.push(decode(black_box(input)));
    }
    let elapsed = start.elapsed();
    black_box(&outputs);
    outputs.clear();
    elapsed.as_nanos() as f64 / BATCH as f64
}

/// Median and minimum of `samples`.
fn summary(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    (samples[samples.len() / 2], samples[0])
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(mode), Some(Ok(count))) = (args.next(), args.next().map(|n| n.parse::<usize>()))
    else {
        eprintln!("usage: codec_profile warren|headers|amq-protocol|time COUNT");
        return ExitCode::FAILURE;
    };
    let frames = delivery_frames();
    let batches = count.div_ceil(BATCH).max(1);
    let warren_input = || read_buffer(&frames);
    let amq_input = || frames.to_vec();
    let amq = |bytes: Vec<u8>| decode_delivery_amq(&bytes);
    let (mut decoded, mut amq_decoded) = (Vec::with_capacity(BATCH), Vec::with_capacity(BATCH));
    match mode.as_str() {
        "warren" => (0..batches).for_each(|_| {
            batch(warren_input, decode_delivery, &mut decoded);
        }),
        "headers" => (0..batches).for_each(|_| {
            batch(warren_input, decode_delivery_and_read_headers, &mut decoded);
        }),
        "amq-protocol" => (0..batches).for_each(|_| {
            batch(amq_input, amq, &mut amq_decoded);
        }),
        "time" => {
            let (mut warren, mut headers, mut amq_protocol) = (vec![], vec![], vec![]);
            for _ in 0..batches {
                warren.push(batch(warren_input, decode_delivery, &mut decoded));
                let read = decode_delivery_and_read_headers;
                headers.push(batch(warren_input, read, &mut decoded));
                amq_protocol.push(batch(amq_input, amq, &mut amq_decoded));
            }
            let (warren, headers, amq_protocol) =
                (summary(warren), summary(headers), summary(amq_protocol));
            println!(
                "ns per delivery (median, fastest batch): warren {:.1} ({:.1}), with headers \
                 {:.1} ({:.1}), amq-protocol {:.1} ({:.1}); amq-protocol / warren {:.2}",
                warren.0,
                warren.1,
                headers.0,
                headers.1,
                amq_protocol.0,
                amq_protocol.1,
                amq_protocol.0 / warren.0
            );
        }
        other => {
            eprintln!("unknown mode {other:?}: warren, headers, amq-protocol or time");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
