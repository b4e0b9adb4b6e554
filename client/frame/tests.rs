//! Frames written by hand from the specification, to pin the byte layout, and properties of
//! the frame decoder over arbitrary input.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;
use crate::protocol::{
    BasicDeliver, BasicProperties, BasicPublish, Class, ConnectionStartOk, Method,
};
use crate::wire::{
    ContentProperties, FieldTable, LongString, MethodId, Reader, ShortString, Timestamp,
};

/// Decodes every frame in `bytes`, which must hold whole frames only.
fn decode_all(bytes: &[u8], max: u32) -> Vec<Frame> {
    let decoder = FrameDecoder::new(max);
    let mut buf = BytesMut::from(bytes);
    let mut frames = Vec::new();
    while let Some(frame) = decoder.decode(&mut buf).unwrap() {
        frames.push(frame);
    }
    assert!(buf.is_empty(), "trailing bytes: {buf:?}");
    frames
}

#[test]
fn protocol_header_is_amqp_0_9_1() {
    assert_eq!(&PROTOCOL_HEADER, b"AMQP\x00\x00\x09\x01");
}

#[test]
fn heartbeat_frame_bytes() {
    let mut buf = BytesMut::new();
    encode_heartbeat(&mut buf);
    assert_eq!(&buf[..], &[8, 0, 0, 0, 0, 0, 0, 0xCE]);
    assert_eq!(decode_all(&buf, 4096), [Frame::Heartbeat]);
}

#[test]
fn connection_start_ok_bytes() {
    let start_ok = ConnectionStartOk {
        client_properties: FieldTable::new().with("product", "warren"),
        mechanism: ShortString::from_static("PLAIN"),
        response: LongString::from("\0guest\0guest"),
        locale: ShortString::from_static("en_US"),
    };
    let mut buf = BytesMut::new();
    encode_method(&mut buf, 0, &start_ok, 4096).unwrap();
    #[rustfmt::skip]
    let payload: &[u8] = &[
        0, 10, 0, 11,                                   // connection.start-ok
        0, 0, 0, 19,                                    // client-properties: 19 bytes
        7, b'p', b'r', b'o', b'd', b'u', b'c', b't',
        b'S', 0, 0, 0, 6, b'w', b'a', b'r', b'r', b'e', b'n',
        5, b'P', b'L', b'A', b'I', b'N',                // mechanism
        0, 0, 0, 12, 0, b'g', b'u', b'e', b's', b't', 0, b'g', b'u', b'e', b's', b't', // response
        5, b'e', b'n', b'_', b'U', b'S',                // locale
    ];
    let mut expected = vec![1, 0, 0];
    expected.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    expected.extend_from_slice(payload);
    expected.push(0xCE);
    assert_eq!(&buf[..], &expected[..]);
    assert_eq!(
        decode_all(&buf, 4096),
        [Frame::Method {
            channel: 0,
            method: Method::ConnectionStartOk(Box::new(start_ok))
        }]
    );
}

/// basic.publish on channel 1, its content header (content_type, delivery_mode and three
/// headers) and a 16-byte body, as the benchmark encodes them.
#[test]
fn basic_publish_with_content_bytes() {
    let publish = BasicPublish {
        exchange: ShortString::from_static("ex"),
        routing_key: ShortString::from_static("rk"),
        mandatory: true,
        immediate: false,
    };
    let properties = BasicProperties {
        content_type: Some(ShortString::from_static("text/plain")),
        delivery_mode: Some(2),
        headers: Some(
            FieldTable::new()
                .with("a", 1i32)
                .with("b", "x")
                .with("c", true),
        ),
        ..Default::default()
    };
    let body = Bytes::from_static(b"0123456789abcdef");
    let mut buf = BytesMut::new();
    encode_method(&mut buf, 1, &publish, 4096).unwrap();
    encode_content(&mut buf, 1, &properties, &body, 4096).unwrap();

    #[rustfmt::skip]
    let method: &[u8] = &[
        1, 0, 1, 0, 0, 0, 13,                 // method frame, channel 1, 13 bytes
        0, 60, 0, 40,                         // basic.publish
        0, 0,                                 // reserved-1 (ticket)
        2, b'e', b'x', 2, b'r', b'k',         // exchange, routing key
        0b01,                                 // mandatory, not immediate
        0xCE,
    ];
    #[rustfmt::skip]
    let header: &[u8] = &[
        2, 0, 1, 0, 0, 0, 49,                 // header frame, channel 1, 49 bytes
        0, 60, 0, 0,                          // class basic, weight 0
        0, 0, 0, 0, 0, 0, 0, 16,              // body size 16
        0b1011_0000, 0b0000_0000,             // content-type, headers, delivery-mode present
        10, b't', b'e', b'x', b't', b'/', b'p', b'l', b'a', b'i', b'n',
        0, 0, 0, 19,                          // headers: 19 bytes
        1, b'a', b'I', 0, 0, 0, 1,
        1, b'b', b'S', 0, 0, 0, 1, b'x',
        1, b'c', b't', 1,
        2,                                    // delivery-mode 2
        0xCE,
    ];
    #[rustfmt::skip]
    let body_frame: &[u8] = &[
        3, 0, 1, 0, 0, 0, 16,
        b'0', b'1', b'2', b'3', b'4', b'5', b'6', b'7', b'8', b'9', b'a', b'b', b'c', b'd', b'e', b'f',
        0xCE,
    ];
    let expected = [method, header, body_frame].concat();
    assert_eq!(&buf[..], &expected[..]);

    let frames = decode_all(&buf, 4096);
    assert_eq!(
        frames[0],
        Frame::Method {
            channel: 1,
            method: Method::BasicPublish(publish)
        }
    );
    let Frame::Header { channel: 1, header } = &frames[1] else {
        panic!("expected a header frame, got {:?}", frames[1]);
    };
    assert_eq!((header.class_id, header.body_size), (60, 16));
    let decoded = BasicProperties::decode(&mut Reader::new(&header.properties)).unwrap();
    assert_eq!(decoded, properties);
    assert_eq!(
        frames[2],
        Frame::Body {
            channel: 1,
            payload: body
        }
    );
}

#[test]
fn basic_deliver_decodes_zero_copy() {
    let deliver = BasicDeliver {
        consumer_tag: ShortString::from_static("ctag"),
        delivery_tag: 7,
        redelivered: true,
        exchange: ShortString::from_static(""),
        routing_key: ShortString::from_static("q"),
    };
    let mut buf = BytesMut::new();
    encode_method(&mut buf, 3, &deliver, 4096).unwrap();
    encode_content(
        &mut buf,
        3,
        &BasicProperties {
            timestamp: Some(Timestamp(1)),
            ..Default::default()
        },
        &Bytes::from_static(b"body"),
        4096,
    )
    .unwrap();
    let start = buf.as_ptr() as usize;
    let end = start + buf.len();
    let frames = decode_all(&buf.clone(), 4096);
    assert_eq!(
        frames[0],
        Frame::Method {
            channel: 3,
            method: Method::BasicDeliver(deliver)
        }
    );
    // The body is a slice of the buffer it was read from, not a copy.
    let decoder = FrameDecoder::new(4096);
    let mut read = buf;
    let mut last = None;
    while let Some(frame) = decoder.decode(&mut read).unwrap() {
        last = Some(frame);
    }
    let Some(Frame::Body { payload, .. }) = last else {
        panic!("expected a body frame last");
    };
    let at = payload.as_ptr() as usize;
    assert!((start..end).contains(&at), "body was copied");
}

#[test]
fn a_string_running_past_its_method_frame_is_truncated_though_more_bytes_follow() {
    // basic.deliver whose routing key claims 20 bytes when 2 are left in the payload; the
    // buffer goes on with a heartbeat and more, which must not be read as the key.
    let mut bytes = vec![FRAME_METHOD, 0, 1, 0, 0, 0, 19, 0, 60, 0, 60, 1, b'c'];
    bytes.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 20, b'a', b'b', FRAME_END]);
    bytes.extend_from_slice(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END]);
    bytes.extend_from_slice(&[b'x'; 40]);
    assert_eq!(
        FrameDecoder::default().decode(&mut BytesMut::from(&bytes[..])),
        Err(DecodeError::Truncated {
            needed: 20,
            remaining: 2
        })
    );
}

#[test]
fn declared_size_is_checked_before_the_payload_arrives() {
    // Only the 7-byte header of a 1 GiB frame.
    let mut buf = BytesMut::from(&[1u8, 0, 1, 0x40, 0, 0, 0][..]);
    assert_eq!(
        FrameDecoder::new(131_072).decode(&mut buf),
        Err(DecodeError::FrameTooLarge {
            size: 0x4000_0000 + 8,
            max: 131_072
        })
    );
}

#[test]
fn partial_frames_wait_for_more_bytes() {
    let mut whole = BytesMut::new();
    encode_heartbeat(&mut whole);
    let decoder = FrameDecoder::default();
    let mut buf = BytesMut::new();
    for &byte in &whole[..whole.len() - 1] {
        buf.extend_from_slice(&[byte]);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
    }
    buf.extend_from_slice(&whole[whole.len() - 1..]);
    assert_eq!(decoder.decode(&mut buf), Ok(Some(Frame::Heartbeat)));
}

#[test]
fn malformed_frames_are_typed_errors() {
    let decoder = FrameDecoder::default();
    let cases: [(&[u8], DecodeError); 7] = [
        (&[8, 0, 0, 0, 0, 0, 0, 0xCD], DecodeError::BadFrameEnd(0xCD)),
        (
            &[9, 0, 0, 0, 0, 0, 0, 0xCE],
            DecodeError::UnknownFrameType(9),
        ),
        (
            &[8, 0, 1, 0, 0, 0, 0, 0xCE],
            DecodeError::WrongChannel {
                frame: "heartbeat",
                channel: 1,
            },
        ),
        (
            &[3, 0, 0, 0, 0, 0, 0, 0xCE],
            DecodeError::WrongChannel {
                frame: "content body",
                channel: 0,
            },
        ),
        (
            &[1, 0, 1, 0, 0, 0, 4, 0, 99, 0, 1, 0xCE],
            DecodeError::UnknownMethod {
                class: 99,
                method: 1,
            },
        ),
        (
            &[
                2, 0, 1, 0, 0, 0, 14, 0, 99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xCE,
            ],
            DecodeError::UnknownContentClass(99),
        ),
        (
            &[1, 0, 1, 0, 0, 0, 3, 0, 60, 0, 0xCE],
            DecodeError::Truncated {
                needed: 2,
                remaining: 1,
            },
        ),
    ];
    for (bytes, expected) in cases {
        assert_eq!(
            decoder.decode(&mut BytesMut::from(bytes)),
            Err(expected.clone()),
            "{bytes:?}"
        );
    }
}

#[test]
fn oversized_methods_are_refused_without_writing() {
    let mut buf = BytesMut::from(&b"before"[..]);
    let big = ConnectionStartOk {
        response: LongString::from(vec![0u8; 5000]),
        ..Default::default()
    };
    let error = encode_method(&mut buf, 0, &big, 4096).unwrap_err();
    assert_eq!(error.max, 4096);
    assert_eq!(&buf[..], b"before");
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_the_frame_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let decoder = FrameDecoder::new(4096);
        let mut buf = BytesMut::from(&bytes[..]);
        // Each Ok(Some) consumes at least 8 bytes, so this ends.
        while let Ok(Some(_)) = decoder.decode(&mut buf) {}
    }

    #[test]
    fn arbitrary_payloads_in_valid_frames_never_panic(
        kind in prop_oneof![Just(1u8), Just(2), Just(3), Just(8)],
        channel in 0u16..3,
        payload in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut bytes = vec![kind];
        bytes.extend_from_slice(&channel.to_be_bytes());
        bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&payload);
        bytes.push(0xCE);
        let mut buf = BytesMut::from(&bytes[..]);
        if let Ok(Some(Frame::Header { header, .. })) = FrameDecoder::new(4096).decode(&mut buf) {
            let _ = BasicProperties::decode(&mut Reader::new(&header.properties));
        }
    }
}

/// Every method id of the specification, sorted (found by asking [`Method::name_of`] about
/// every method id of every class, once).
fn method_ids() -> &'static [MethodId] {
    static IDS: std::sync::LazyLock<Vec<MethodId>> = std::sync::LazyLock::new(|| {
        Class::ALL
            .iter()
            .flat_map(|class| (0..=u16::MAX).map(|m| MethodId::new(class.id(), m)))
            .filter(|&id| Method::name_of(id).is_some())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    });
    &IDS
}

#[test]
fn method_ids_are_every_method() {
    let ids = method_ids();
    assert_eq!(ids.len(), 64);
    assert!(ids.contains(&MethodId::new(85, 10)) && ids.contains(&MethodId::new(60, 120)));
}

proptest! {
    // Each case holds one value of each of the 64 methods: 64 cases give every method more
    // values than 256 cases of one method picked at random give most.
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every method of the specification, one arbitrary value of each in every case,
    /// survives a method frame: encode, frame, decode.
    #[test]
    fn every_method_round_trips_through_a_frame(
        methods in crate::protocol::strategies::every_method(),
        channel in any::<u16>(),
    ) {
        // Spec order is not id order (queue.purge, 50.30, follows queue.unbind, 50.50).
        let mut ids: Vec<MethodId> = methods.iter().map(Method::id).collect();
        ids.sort();
        prop_assert_eq!(&ids[..], method_ids());
        for method in methods {
            // Twice: the first is decoded with the second in the buffer after it, the second
            // with nothing after it.
            let mut buf = BytesMut::new();
            encode_method_frame(&mut buf, channel, &method, 0).unwrap();
            encode_method_frame(&mut buf, channel, &method, 0).unwrap();
            let frames = decode_all(&buf, u32::MAX);
            let frame = Frame::Method { channel, method };
            prop_assert_eq!(frames, vec![frame.clone(), frame]);
        }
    }

    /// Arbitrary arguments behind every method id the specification defines reach the
    /// argument decoders (random ids would nearly all stop at `UnknownMethod`): an error or a
    /// method, never a panic.
    #[test]
    fn arbitrary_arguments_of_every_method_never_panic(
        args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 64),
    ) {
        for (&id, args) in method_ids().iter().zip(args) {
            let mut payload = id.class.to_be_bytes().to_vec();
            payload.extend_from_slice(&id.method.to_be_bytes());
            payload.extend_from_slice(&args);
            let mut bytes = vec![FRAME_METHOD, 0, 1];
            bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            bytes.extend_from_slice(&payload);
            bytes.push(FRAME_END);
            match FrameDecoder::new(4096).decode(&mut BytesMut::from(&bytes[..])) {
                Ok(Some(Frame::Method { method, .. })) => prop_assert_eq!(method.id(), id),
                Ok(other) => prop_assert!(false, "{:?} from a whole method frame", other),
                Err(_) => {}
            }
        }
    }

    /// Every encoded method cut short anywhere is a typed error, never a panic or a method.
    #[test]
    fn truncated_arguments_of_every_method_are_errors(
        methods in crate::protocol::strategies::every_method(),
        cut in any::<proptest::sample::Index>(),
    ) {
        for method in methods {
            let mut args = BytesMut::new();
            method.encode(&mut crate::wire::Writer::new(&mut args));
            if args.is_empty() {
                continue;
            }
            let len = cut.index(args.len());
            prop_assert!(Method::decode(method.id(), &mut Reader::from_slice(&args[..len])).is_err());
        }
    }
}

proptest! {
    /// Content headers with any combination of the 14 basic properties round-trip.
    #[test]
    fn basic_properties_round_trip_through_a_header(
        properties in crate::protocol::strategies::basic_properties(),
        body_size in any::<u64>(),
    ) {
        let mut buf = BytesMut::new();
        encode_content_header(&mut buf, 1, &properties, body_size, 0).unwrap();
        let frames = decode_all(&buf, u32::MAX);
        let [Frame::Header { channel: 1, header }] = &frames[..] else {
            panic!("expected one header frame, got {frames:?}");
        };
        prop_assert_eq!(header.body_size, body_size);
        let mut input = Reader::new(&header.properties);
        prop_assert_eq!(BasicProperties::decode(&mut input)?, properties);
        prop_assert!(input.is_empty());
    }
}
