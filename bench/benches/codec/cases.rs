//! The frames both codecs encode and decode, and the decoding each does: shared by the
//! criterion bench (`benches/codec.rs`) and the profiling target
//! (`examples/codec_profile.rs`), so that both measure the same work.

use std::hint::black_box;

use amq_protocol::frame::{AMQPContentHeader, AMQPFrame, gen_frame, parse_frame};
use amq_protocol::protocol::{AMQPClass, BasicProperties as AmqBasicProperties, basic};
use amq_protocol::types::{AMQPValue, FieldTable as AmqFieldTable, ShortString as AmqShortString};
use bytes::{Bytes, BytesMut};
use warren::frame::{Frame, FrameDecoder, encode_content, encode_method};
use warren::protocol::{BasicDeliver, BasicProperties, BasicPublish};
use warren::wire::{ContentProperties, FieldTable, Reader, ShortString};

/// The body of every message.
pub const BODY: &[u8; 16] = b"0123456789abcdef";
/// The frame size limit both sides use.
pub const FRAME_MAX: u32 = 131_072;

/// warren's content properties: content_type, delivery_mode and three headers.
pub fn warren_properties() -> BasicProperties {
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

/// The same properties as amq-protocol's.
pub fn amq_properties() -> AmqBasicProperties {
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

/// warren's basic.publish.
pub fn warren_publish() -> BasicPublish {
    BasicPublish {
        exchange: ShortString::from_static("orders"),
        routing_key: ShortString::from_static("orders.created.eu"),
        mandatory: true,
        immediate: false,
    }
}

/// warren's basic.deliver, with a consumer tag as RabbitMQ generates them (31 bytes).
pub fn warren_deliver() -> BasicDeliver {
    BasicDeliver {
        consumer_tag: ShortString::from_static("amq.ctag-Qx5tBDxfd0tEZB1qL0Xnzg"),
        delivery_tag: 42_000,
        redelivered: false,
        exchange: ShortString::from_static("orders"),
        routing_key: ShortString::from_static("orders.created.eu"),
    }
}

/// amq-protocol's three frames for `method`.
pub fn amq_frames(method: basic::AMQPMethod) -> [AMQPFrame; 3] {
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

/// amq-protocol's basic.publish.
pub fn amq_publish() -> basic::AMQPMethod {
    basic::AMQPMethod::Publish(basic::Publish {
        exchange: AmqShortString::from("orders"),
        routing_key: AmqShortString::from("orders.created.eu"),
        mandatory: true,
        immediate: false,
    })
}

/// amq-protocol's basic.deliver.
pub fn amq_deliver() -> basic::AMQPMethod {
    basic::AMQPMethod::Deliver(basic::Deliver {
        consumer_tag: AmqShortString::from("amq.ctag-Qx5tBDxfd0tEZB1qL0Xnzg"),
        delivery_tag: 42_000,
        redelivered: false,
        exchange: AmqShortString::from("orders"),
        routing_key: AmqShortString::from("orders.created.eu"),
    })
}

/// Encodes warren's three frames into `buf`, cleared first.
pub fn warren_encode<M: warren::wire::AmqpMethod>(
    buf: &mut BytesMut,
    method: &M,
    properties: &BasicProperties,
    body: &Bytes,
) {
    buf.clear();
    encode_method(buf, 1, method, FRAME_MAX).unwrap();
    encode_content(buf, 1, properties, body, FRAME_MAX).unwrap();
}

/// Encodes amq-protocol's three frames into `buf`, cleared first.
pub fn amq_encode(buf: &mut Vec<u8>, frames: &[AMQPFrame; 3]) {
    buf.clear();
    for frame in frames {
        let (written, _) = cookie_factory::r#gen(gen_frame(frame), std::mem::take(buf)).unwrap();
        *buf = written;
    }
}

/// The frames in a buffer like the connection's read buffer: its storage already shared with
/// earlier frames, as it is after the first frame split off it (a one-time cost per buffer,
/// not per frame).
pub fn read_buffer(frames: &[u8]) -> BytesMut {
    let mut buf = BytesMut::with_capacity(frames.len() + 64);
    buf.extend_from_slice(frames);
    drop(buf.split_off(frames.len()));
    buf
}

/// Decodes the three frames and the content properties.
pub fn warren_decode(mut buf: BytesMut) -> (Frame, BasicProperties, Frame) {
    let decoder = FrameDecoder::new(FRAME_MAX);
    let method = decoder.decode(&mut buf).unwrap().unwrap();
    let Some(Frame::Header { header, .. }) = decoder.decode(&mut buf).unwrap() else {
        unreachable!("the second frame is a header")
    };
    let properties = BasicProperties::decode(&mut Reader::new(&header.properties)).unwrap();
    let body = decoder.decode(&mut buf).unwrap().unwrap();
    (method, properties, body)
}

/// Decodes and then reads every header, as a consumer that looks at them does.
pub fn warren_decode_and_read_headers(buf: BytesMut) -> (Frame, BasicProperties, Frame) {
    let decoded = warren_decode(buf);
    if let Some(headers) = &decoded.1.headers {
        for entry in headers {
            black_box(entry);
        }
    }
    decoded
}

/// Parses the three frames.
pub fn amq_decode(bytes: &[u8]) -> [AMQPFrame; 3] {
    let (rest, method) = parse_frame(bytes).unwrap();
    let (rest, header) = parse_frame(rest).unwrap();
    let (_, body) = parse_frame(rest).unwrap();
    [method, header, body]
}
