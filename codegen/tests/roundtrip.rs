//! The generated code at work: the fixture outputs (`fixtures/*.rs`) and the snapshot of
//! warren's own spec are compiled here against a stand-in runtime (`support/wire.rs`, with
//! the real byte layout) and their encoders and decoders are checked byte for byte.

#[path = "support/wire.rs"]
mod wire;

#[allow(dead_code)]
mod one_class {
    include!("fixtures/one_class.rs");
}
#[allow(dead_code)]
mod bit_runs {
    include!("fixtures/bit_runs.rs");
}
#[allow(dead_code)]
mod keywords {
    include!("fixtures/keywords.rs");
}
#[allow(dead_code)]
mod content {
    include!("fixtures/content.rs");
}
#[allow(dead_code)]
mod full_schema {
    include!("fixtures/full_schema.rs");
}
#[allow(dead_code)]
mod protocol {
    include!("snapshots/protocol.rs");
}

use wire::{
    AmqpMethod, ContentProperties, DecodeError, Direction, FieldTable, LongString, MethodId,
    Reader, ShortString, Timestamp, Writer,
};

fn encode<M: AmqpMethod>(m: &M) -> Vec<u8> {
    let mut buf = Vec::new();
    m.encode(&mut Writer::new(&mut buf));
    buf
}

fn decode<M: AmqpMethod>(bytes: &[u8]) -> Result<M, DecodeError> {
    let mut input = Reader::new(bytes.to_vec());
    let m = M::decode(&mut input)?;
    assert_eq!(input.remaining(), 0, "{} left bytes unread", M::NAME);
    Ok(m)
}

fn roundtrip<M: AmqpMethod + PartialEq + std::fmt::Debug>(m: &M, bytes: &[u8]) {
    assert_eq!(encode(m), bytes, "encoding of {}", M::NAME);
    assert_eq!(&decode::<M>(bytes).unwrap(), m, "decoding of {}", M::NAME);
}

fn props_bytes<P: ContentProperties>(p: &P) -> Vec<u8> {
    let mut buf = Vec::new();
    p.encode(&mut Writer::new(&mut buf));
    buf
}

fn props_decode<P: ContentProperties>(bytes: &[u8]) -> Result<P, DecodeError> {
    P::decode(&mut Reader::new(bytes.to_vec()))
}

// ===== one class, every wire type =====

#[test]
fn every_wire_type_has_its_byte_layout() {
    use one_class::*;
    let ping = EchoPing {
        an_octet: 0x11,
        a_short: 0x2233,
        a_long: 0x4455_6677,
        a_longlong: 0x8899_aabb_ccdd_eeff,
        a_shortstr: ShortString::from_static("hi"),
        a_longstr: LongString::from("abc"),
        a_table: FieldTable::from_raw(&[1, 2]),
        a_timestamp: Timestamp(7),
        a_bit: true,
    };
    let mut bytes = vec![0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77];
    bytes.extend([0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]);
    bytes.extend([2, b'h', b'i']);
    bytes.extend([0, 0, 0, 3, b'a', b'b', b'c']);
    bytes.extend([0, 0, 0, 2, 1, 2]);
    bytes.extend([0, 0, 0, 0, 0, 0, 0, 7]);
    bytes.push(1);
    roundtrip(&ping, &bytes);
    // Every strict prefix is truncated, never a panic.
    for n in 0..bytes.len() {
        assert_eq!(decode::<EchoPing>(&bytes[..n]), Err(DecodeError::Truncated));
    }
}

#[test]
fn method_constants_come_from_the_spec() {
    use one_class::*;
    assert_eq!(EchoPing::ID, MethodId::new(100, 10));
    assert_eq!(EchoPing::NAME, "echo.ping");
    const { assert!(EchoPing::SYNCHRONOUS) };
    const { assert!(!EchoPing::CARRIES_CONTENT) };
    assert_eq!(EchoPing::DIRECTION, Direction::ToServer);
    assert_eq!(EchoPong::DIRECTION, Direction::ToClient);
    const { assert!(!EchoNotice::SYNCHRONOUS) };
    // A unit struct for a method without arguments: nothing on the wire.
    roundtrip(&EchoNotice, &[]);
}

#[test]
fn method_enum_dispatches_by_id() {
    use one_class::*;
    let pong = EchoPong {
        payload: LongString::from("x"),
    };
    let bytes = encode(&pong);
    let method = Method::decode(MethodId::new(100, 11), &mut Reader::new(bytes.clone())).unwrap();
    assert_eq!(method, Method::EchoPong(pong.clone()));
    assert_eq!(method.id(), MethodId::new(100, 11));
    assert_eq!(method.name(), "echo.pong");
    assert_eq!(method.class(), Class::Echo);
    assert!(method.synchronous());
    assert!(!method.carries_content());
    assert_eq!(method.direction(), Direction::ToClient);
    let mut again = Vec::new();
    method.encode(&mut Writer::new(&mut again));
    assert_eq!(again, bytes);

    assert_eq!(
        Method::decode(MethodId::new(100, 99), &mut Reader::new(vec![])),
        Err(DecodeError::UnknownMethod {
            class: 100,
            method: 99
        })
    );
    assert_eq!(
        Method::decode(MethodId::new(7, 10), &mut Reader::new(vec![])),
        Err(DecodeError::UnknownMethod {
            class: 7,
            method: 10
        })
    );

    // From / TryFrom.
    let m: Method = pong.clone().into();
    assert_eq!(EchoPong::try_from(m.clone()), Ok(pong));
    assert_eq!(EchoPing::try_from(m.clone()), Err(m));
}

#[test]
fn requests_know_their_replies() {
    use one_class::*;
    fn replies<R: Request>() -> &'static [MethodId] {
        R::REPLIES
    }
    fn reply_of<R: Request>(m: Method) -> Result<R::Reply, Method> {
        R::Reply::try_from(m)
    }
    assert_eq!(replies::<EchoPing>(), &[MethodId::new(100, 11)]);
    let pong = EchoPong::default();
    assert_eq!(reply_of::<EchoPing>(pong.clone().into()), Ok(pong));
    // No no-wait field: never no-wait.
    assert!(!EchoPing::default().no_wait());
}

#[test]
fn constants_classes_and_reply_codes() {
    use one_class::*;
    assert_eq!(FRAME_END, 206u8);
    assert_eq!(DEFAULT_PORT, 5672);
    assert_eq!(PROTOCOL_VERSION, (0, 9, 1));
    assert_eq!(&PROTOCOL_HEADER, b"AMQP\x00\x00\x09\x01");
    assert_eq!(Class::from_id(100), Some(Class::Echo));
    assert_eq!(Class::from_id(101), None);
    assert_eq!(Class::Echo.id(), 100);
    assert_eq!(Class::Echo.name(), "echo");
    assert_eq!(Class::ALL, &[Class::Echo]);

    assert_eq!(ReplyCode::NOT_FOUND, ReplyCode(404));
    assert!(ReplyCode::NOT_FOUND.is_soft());
    assert!(!ReplyCode::NOT_FOUND.is_hard());
    assert_eq!(ReplyCode::NOT_FOUND.name(), Some("NOT_FOUND"));
    assert_eq!(ReplyCode::NOT_FOUND.to_string(), "404 NOT_FOUND");
    // An open set: unknown codes survive.
    assert_eq!(ReplyCode(999).to_string(), "999");
    assert_eq!(ReplyCode(999).name(), None);
    assert!(!ReplyCode(999).is_soft() && !ReplyCode(999).is_hard());
    assert_eq!(u16::from(ReplyCode::from(404)), 404);
}

// ===== bits =====

#[test]
fn bit_runs_are_packed_per_run_lsb_first() {
    use bit_runs::*;
    let m = FlagsMixed {
        first: true,
        second: false,
        third: true,
        fourth: true,
        name: ShortString::from_static("x"),
        no_wait: true,
    };
    // [first, second] | reserved short | [third, reserved, fourth] | name | [no_wait]
    roundtrip(&m, &[0b01, 0, 0, 0b101, 1, b'x', 0b1]);
    // A set reserved bit on the wire is ignored.
    let decoded: FlagsMixed = decode(&[0b01, 0, 0, 0b111, 1, b'x', 0b1]).unwrap();
    assert_eq!(decoded, m);
    assert!(m.no_wait());
    assert!(!FlagsMixed::default().no_wait());

    let many = FlagsMany {
        b1: true,
        b8: true,
        b9: true,
        ..FlagsMany::default()
    };
    roundtrip(&many, &[0b1000_0001, 0b1]);

    let reserved = FlagsReservedOnly { count: 0x0102 };
    roundtrip(&reserved, &[0, 1, 2]);
}

// ===== keywords =====

#[test]
fn keyword_fields_get_usable_names() {
    use keywords::*;
    let m = KwDeclare {
        kind: ShortString::from_static("direct"),
        r#match: ShortString::from_static("all"),
        self_: 1,
        input: 2,
        r#async: 3,
    };
    roundtrip(
        &m,
        &[
            6, b'd', b'i', b'r', b'e', b'c', b't', 3, b'a', b'l', b'l', 0, 1, 0, 2, 0, 3,
        ],
    );
}

// ===== content =====

#[test]
fn properties_set_one_presence_flag_each() {
    use content::*;
    assert_eq!(BasicProperties::CLASS_ID, 60);
    assert_eq!(props_bytes(&BasicProperties::default()), [0, 0]);
    let p = BasicProperties {
        content_type: Some(ShortString::from_static("a")),
        delivery_mode: Some(2),
        kind: Some(ShortString::from_static("t")),
        ..BasicProperties::default()
    };
    // content-type bit 15, delivery-mode bit 13, type bit 11.
    let bytes = [0b1010_1000, 0, 1, b'a', 2, 1, b't'];
    assert_eq!(props_bytes(&p), bytes);
    assert_eq!(props_decode::<BasicProperties>(&bytes).unwrap(), p);
    let all = BasicProperties {
        content_type: Some(ShortString::from_static("a")),
        headers: Some(FieldTable::from_raw(&[])),
        delivery_mode: Some(1),
        timestamp: Some(Timestamp(9)),
        kind: Some(ShortString::default()),
        invalid: None,
    };
    assert_eq!(
        props_decode::<BasicProperties>(&props_bytes(&all)).unwrap(),
        all
    );
}

#[test]
fn setters_set_one_property_each_and_record_a_string_too_long() {
    use content::*;
    let p = BasicProperties::default()
        .with_content_type("a")
        .with_delivery_mode(2)
        .with_timestamp(Timestamp(9));
    let expected = BasicProperties {
        content_type: Some(ShortString::from_static("a")),
        delivery_mode: Some(2),
        timestamp: Some(Timestamp(9)),
        ..BasicProperties::default()
    };
    assert_eq!(p, expected);

    // Over 255 bytes: not stored, recorded (the first one only), and the chain goes on.
    let long = "x".repeat(256);
    let p = BasicProperties::default()
        .with_content_type(long.as_str())
        .with_kind(long.as_str())
        .with_delivery_mode(1);
    assert_eq!(p.content_type, None);
    assert_eq!(p.kind, None);
    assert_eq!(p.delivery_mode, Some(1));
    let invalid = p
        .invalid
        .as_deref()
        .expect("the refused string is recorded");
    assert_eq!((invalid.property, invalid.len), ("content_type", 256));
    // A class without short strings has no record to keep.
    let _ = FileProperties::default().with_p1(1).with_p16(7);
}

#[test]
fn debug_shows_only_the_properties_that_are_set() {
    use content::*;
    assert_eq!(
        format!("{:?}", BasicProperties::default()),
        "BasicProperties"
    );
    let p = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("text/plain");
    assert_eq!(
        format!("{p:?}"),
        r#"BasicProperties { content_type: ShortString("text/plain"), delivery_mode: 2 }"#
    );
    let refused = BasicProperties::default().with_kind("y".repeat(300).as_str());
    assert_eq!(
        format!("{refused:?}"),
        r#"BasicProperties { invalid: InvalidProperty { property: "kind", len: 300 } }"#
    );
}

#[test]
fn undefined_property_flags_are_refused() {
    use content::*;
    // Bit 10 would be a sixth property; basic has five.
    assert_eq!(
        props_decode::<BasicProperties>(&[0b0000_0100, 0]),
        Err(DecodeError::UnknownProperty {
            class: 60,
            index: 5
        })
    );
    // Bit 1: the fourteenth.
    assert_eq!(
        props_decode::<BasicProperties>(&[0, 0b10]),
        Err(DecodeError::UnknownProperty {
            class: 60,
            index: 14
        })
    );
    // A further flag word that sets nothing is fine; one that does is refused.
    assert_eq!(
        props_decode::<BasicProperties>(&[0, 1, 0, 0]).unwrap(),
        BasicProperties::default()
    );
    assert_eq!(
        props_decode::<BasicProperties>(&[0, 1, 0, 1, 0b0100_0000, 0]),
        Err(DecodeError::UnknownProperty {
            class: 60,
            index: 31
        })
    );
    assert_eq!(
        props_decode::<BasicProperties>(&[0, 1]),
        Err(DecodeError::Truncated)
    );
}

#[test]
fn a_second_flag_word_holds_properties_sixteen_on() {
    use content::*;
    let first_only = FileProperties {
        p1: Some(1),
        p15: Some(15),
        ..FileProperties::default()
    };
    // No continuation bit when the second word would be empty.
    let bytes = [0b1000_0000, 0b0000_0010, 1, 15];
    assert_eq!(props_bytes(&first_only), bytes);
    assert_eq!(props_decode::<FileProperties>(&bytes).unwrap(), first_only);

    let second = FileProperties {
        p16: Some(0x1617),
        ..FileProperties::default()
    };
    let bytes = [0, 1, 0b1000_0000, 0, 0x16, 0x17];
    assert_eq!(props_bytes(&second), bytes);
    assert_eq!(props_decode::<FileProperties>(&bytes).unwrap(), second);

    // The second word's bit 13 would be an eighteenth property.
    assert_eq!(
        props_decode::<FileProperties>(&[0, 1, 0b0010_0000, 0]),
        Err(DecodeError::UnknownProperty {
            class: 70,
            index: 17
        })
    );
}

#[test]
fn content_methods_say_so() {
    use content::*;
    const { assert!(BasicPublish::CARRIES_CONTENT) };
    const { assert!(!BasicLogin::CARRIES_CONTENT) };
    let m = BasicPublish {
        exchange: ShortString::from_static("e"),
        mandatory: true,
    };
    roundtrip(&m, &[0, 0, 1, b'e', 1]);
    assert!(Method::from(m).carries_content());
}

#[test]
fn sensitive_fields_are_redacted_in_debug() {
    use content::*;
    let login = BasicLogin {
        user: ShortString::from_static("guest"),
        password: LongString::from("hunter2"),
    };
    let shown = format!("{login:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert_eq!(
        shown,
        r#"BasicLogin { user: ShortString("guest"), password: <redacted> }"#
    );
    // Through the Method enum too.
    assert!(!format!("{:?}", Method::from(login)).contains("hunter2"));

    let props = FileProperties {
        secret: Some(ShortString::from_static("s3cret")),
        ..FileProperties::default()
    };
    let shown = format!("{props:?}");
    assert!(
        !shown.contains("s3cret") && shown.contains("secret: <redacted>"),
        "{shown}"
    );
    assert!(!format!("{:?}", FileProperties::default()).contains("secret"));
}

// ===== the full schema =====

#[test]
fn several_responses_make_a_reply_enum() {
    use full_schema::*;
    assert_eq!(
        <QueueGet as Request>::REPLIES,
        &[MethodId::new(50, 71), MethodId::new(50, 72)]
    );
    let ok = QueueGetOk { message_count: 3 };
    assert_eq!(
        QueueGetReply::try_from(Method::from(ok.clone())),
        Ok(QueueGetReply::GetOk(ok.clone()))
    );
    assert_eq!(
        QueueGetReply::try_from(Method::from(QueueGetEmpty)),
        Ok(QueueGetReply::GetEmpty(QueueGetEmpty))
    );
    let other = Method::from(QueueCloseOk);
    assert_eq!(QueueGetReply::try_from(other.clone()), Err(other));
    assert_eq!(
        Method::from(QueueGetReply::GetOk(ok.clone())),
        Method::from(ok)
    );
}

#[test]
fn reserved_fields_of_every_type_are_zero_and_skipped() {
    use full_schema::*;
    let m = QueueClose { reply_code: 200 };
    let mut bytes = vec![0, 200];
    bytes.extend([0; 8]); // longlong
    bytes.extend([0; 4]); // long
    bytes.push(0); // octet
    bytes.extend([0; 4]); // longstr
    bytes.extend([0; 4]); // table
    bytes.extend([0; 8]); // timestamp
    roundtrip(&m, &bytes);
    // Reserved values that are not zero are skipped all the same.
    let mut odd = vec![0, 200];
    odd.extend([1; 8]);
    odd.extend([1; 4]);
    odd.push(1);
    odd.extend([0, 0, 0, 1, b'x']);
    odd.extend([0, 0, 0, 0]);
    odd.extend([1; 8]);
    assert_eq!(decode::<QueueClose>(&odd).unwrap(), m);
    assert_eq!(QueueClose::DIRECTION, Direction::Both);
    assert_eq!(QueueRecoverAsync::ID, MethodId::new(50, 100));
}

#[test]
fn domains_resolve_through_other_domains() {
    use full_schema::*;
    // `queue` has domain `queue-alias`, itself of domain `queue-name`: a short string.
    let m = QueueDeclare {
        queue: ShortString::from_static("q"),
        passive: true,
        no_wait: true,
        arguments: FieldTable::default(),
    };
    roundtrip(&m, &[0, 0, 1, b'q', 0b11, 0, 0, 0, 0]);
    assert!(m.no_wait());
    assert_eq!(HUGE_VALUE, 5_000_000_000u64);
    assert_eq!(BIG_VALUE, 70_000u32);
    assert_eq!(FRAME_MIN_SIZE, 4096u16);
    assert!(ReplyCode::FRAME_ERROR.is_hard());
    assert_eq!(ReplyCode::REPLY_SUCCESS.to_string(), "200 REPLY_SUCCESS");
    assert!(!ReplyCode::REPLY_SUCCESS.is_soft() && !ReplyCode::REPLY_SUCCESS.is_hard());
}

// ===== warren's own spec =====

/// Bytes for every argument of `m`, as the model lays them out: set bits for every
/// non-reserved bit, non-zero values for every non-reserved field, zeros for reserved ones.
fn sample_payload(m: &warren_codegen::model::Method) -> Vec<u8> {
    use warren_codegen::model::{Slot, Type};
    let mut out = Vec::new();
    for slot in m.layout() {
        match slot {
            Slot::Bits(run) => {
                let mut bytes = vec![0u8; run.len().div_ceil(8)];
                for (i, &f) in run.iter().enumerate() {
                    if !m.fields[f].reserved {
                        bytes[i / 8] |= 1 << (i % 8);
                    }
                }
                out.extend(bytes);
            }
            Slot::Value(f) => {
                let field = &m.fields[f];
                let z = field.reserved;
                match field.ty {
                    Type::Octet => out.push(if z { 0 } else { 0x11 }),
                    Type::Short => out.extend(if z { [0, 0] } else { [0x12, 0x34] }),
                    Type::Long => out.extend(if z { [0; 4] } else { [1, 2, 3, 4] }),
                    Type::LongLong | Type::Timestamp => {
                        out.extend(if z { [0; 8] } else { [1, 2, 3, 4, 5, 6, 7, 8] })
                    }
                    Type::ShortStr if z => out.push(0),
                    Type::ShortStr => out.extend([2, b'o', b'k']),
                    Type::LongStr | Type::Table if z => out.extend([0; 4]),
                    Type::LongStr | Type::Table => out.extend([0, 0, 0, 1, 0x7f]),
                    Type::Bit => unreachable!("bits are in runs"),
                }
            }
        }
    }
    out
}

#[test]
fn every_method_of_warrens_spec_matches_its_model() {
    use protocol::Method;
    let spec_path = expect_workspace().join("amqp-spec/amqp0-9-1.xml");
    let spec = warren_codegen::model::Spec::from_file(&spec_path).unwrap();
    let mut count = 0;
    for m in spec.methods() {
        let id = MethodId::new(m.class_id, m.id);
        let bytes = sample_payload(m);
        let decoded = Method::decode(id, &mut Reader::new(bytes.clone()))
            .unwrap_or_else(|e| panic!("{}: {e}", m.full_name()));
        assert_eq!(decoded.id(), id);
        assert_eq!(decoded.name(), m.full_name());
        assert_eq!(decoded.synchronous(), m.synchronous, "{}", m.full_name());
        assert_eq!(
            decoded.carries_content(),
            m.carries_content,
            "{}",
            m.full_name()
        );
        let direction = match (m.direction.to_server, m.direction.to_client) {
            (true, true) => Direction::Both,
            (false, true) => Direction::ToClient,
            _ => Direction::ToServer,
        };
        assert_eq!(decoded.direction(), direction, "{}", m.full_name());
        assert_eq!(decoded.class().id(), m.class_id);
        let mut again = Vec::new();
        decoded.encode(&mut Writer::new(&mut again));
        assert_eq!(
            again,
            bytes,
            "{} does not re-encode as decoded",
            m.full_name()
        );
        // One byte short is an error, not a panic, for methods with arguments.
        if !bytes.is_empty() {
            assert!(
                Method::decode(id, &mut Reader::new(bytes[..bytes.len() - 1].to_vec())).is_err()
            );
        }
        count += 1;
    }
    assert!(count >= 60, "only {count} methods");
}

#[test]
fn basic_properties_of_warrens_spec_roundtrip() {
    use protocol::BasicProperties;
    let all = BasicProperties {
        content_type: Some(ShortString::from_static("text/plain")),
        content_encoding: Some(ShortString::from_static("gzip")),
        headers: Some(FieldTable::default()),
        delivery_mode: Some(2),
        priority: Some(9),
        correlation_id: Some(ShortString::from_static("c")),
        reply_to: Some(ShortString::from_static("r")),
        expiration: Some(ShortString::from_static("60000")),
        message_id: Some(ShortString::from_static("m")),
        timestamp: Some(Timestamp(1)),
        kind: Some(ShortString::from_static("t")),
        user_id: Some(ShortString::from_static("guest")),
        app_id: Some(ShortString::from_static("a")),
        ..BasicProperties::default()
    };
    let bytes = props_bytes(&all);
    // Thirteen of fourteen properties: bits 15..=3 set.
    assert_eq!(&bytes[..2], &[0xff, 0xf8]);
    assert_eq!(props_decode::<BasicProperties>(&bytes).unwrap(), all);
    assert_eq!(<BasicProperties as ContentProperties>::CLASS_ID, 60);
}

fn expect_workspace() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The ids of every method of warren's spec, in spec order.
static SPEC_METHOD_IDS: std::sync::LazyLock<Vec<MethodId>> = std::sync::LazyLock::new(|| {
    let spec_path = expect_workspace().join("amqp-spec/amqp0-9-1.xml");
    let spec = warren_codegen::model::Spec::from_file(&spec_path).unwrap();
    spec.methods()
        .map(|m| MethodId::new(m.class_id, m.id))
        .collect()
});

proptest::proptest! {
    /// The snapshot's generated strategies give one value of every method of the spec in
    /// each case, and each encodes and decodes back to itself.
    #[test]
    fn generated_strategies_round_trip_every_snapshot_method(
        methods in protocol::strategies::every_method(),
    ) {
        let ids: Vec<MethodId> = methods.iter().map(protocol::Method::id).collect();
        proptest::prop_assert_eq!(&ids, &*SPEC_METHOD_IDS);
        for method in methods {
            let mut bytes = Vec::new();
            method.encode(&mut Writer::new(&mut bytes));
            let decoded = protocol::Method::decode(method.id(), &mut Reader::new(bytes)).unwrap();
            proptest::prop_assert_eq!(decoded, method);
        }
    }
}
