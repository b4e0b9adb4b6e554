//! Byte-level tests of the primitives: vectors written by hand from the specification and
//! RabbitMQ's errata, and properties over arbitrary input.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;

fn encode_table(table: &FieldTable) -> BytesMut {
    let mut buf = BytesMut::new();
    Writer::new(&mut buf).table(table);
    buf
}

/// Reads a table and builds every entry at every level, failing the test if bytes the check
/// accepted do not decode: the promise that lets [`FieldTable`] build its entries lazily.
fn decode_table(bytes: &[u8]) -> Result<FieldTable, DecodeError> {
    let table = Reader::from_slice(bytes).table()?;
    assert_decodes_fully(&table);
    Ok(table)
}

fn assert_decodes_fully(table: &FieldTable) {
    if let Some(wire) = table.wire() {
        let entries = Reader::new(wire).checked_table_entries();
        assert!(
            entries.is_ok(),
            "checked bytes failed to decode: {entries:?}"
        );
    }
    for (_, value) in table {
        assert_value_decodes_fully(value);
    }
}

fn assert_value_decodes_fully(value: &FieldValue) {
    match value {
        FieldValue::Table(table) => assert_decodes_fully(table),
        FieldValue::Array(array) => array.0.iter().for_each(assert_value_decodes_fully),
        _ => {}
    }
}

/// One entry per tag RabbitMQ uses, with the bytes each must encode to.
#[test]
fn table_with_every_tag_matches_hand_written_bytes() {
    let table = FieldTable::new()
        .with("t", true)
        .with("b", -2i8)
        .with("B", 254u8)
        .with("s", -3i16)
        .with("u", 65_000u16)
        .with("I", -4i32)
        .with("i", 4_000_000_000u32)
        .with("l", -5i64)
        .with("f", 1.5f32)
        .with("d", -2.25f64)
        .with(
            "D",
            Decimal {
                scale: 2,
                value: 12345,
            },
        )
        .with("S", "hi")
        .with("A", vec![FieldValue::I8(1), FieldValue::Void])
        .with("T", Timestamp(0x0102_0304_0506_0708))
        .with("F", FieldTable::new().with("k", false))
        .with("V", FieldValue::Void)
        .with("x", Bytes::from_static(b"\x00\xff"));
    #[rustfmt::skip]
    let entries: &[u8] = &[
        1, b't', b't', 1,
        1, b'b', b'b', 0xfe,
        1, b'B', b'B', 254,
        1, b's', b's', 0xff, 0xfd,
        1, b'u', b'u', 0xfd, 0xe8,
        1, b'I', b'I', 0xff, 0xff, 0xff, 0xfc,
        1, b'i', b'i', 0xee, 0x6b, 0x28, 0x00,
        1, b'l', b'l', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfb,
        1, b'f', b'f', 0x3f, 0xc0, 0x00, 0x00,
        1, b'd', b'd', 0xc0, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        1, b'D', b'D', 2, 0x00, 0x00, 0x30, 0x39,
        1, b'S', b'S', 0, 0, 0, 2, b'h', b'i',
        1, b'A', b'A', 0, 0, 0, 3, b'b', 1, b'V',
        1, b'T', b'T', 1, 2, 3, 4, 5, 6, 7, 8,
        1, b'F', b'F', 0, 0, 0, 4, 1, b'k', b't', 0,
        1, b'V', b'V',
        1, b'x', b'x', 0, 0, 0, 2, 0x00, 0xff,
    ];
    let mut expected = (entries.len() as u32).to_be_bytes().to_vec();
    expected.extend_from_slice(entries);

    assert_eq!(&encode_table(&table)[..], &expected[..]);
    assert_eq!(decode_table(&expected).unwrap(), table);
}

/// Nested tables built as key "a" -> `F` -> table, `depth` levels deep: 7 bytes a level.
fn nested_tables(depth: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(depth * 7 + 4);
    for level in (2..=depth).rev() {
        // A table `level` deep holds 7 bytes per level below it.
        bytes.extend_from_slice(&(7 * (level as u32 - 1)).to_be_bytes());
        bytes.extend_from_slice(&[1, b'a', b'F']);
    }
    bytes.extend_from_slice(&0u32.to_be_bytes());
    bytes
}

#[test]
fn nesting_up_to_the_limit_decodes_and_deeper_is_a_typed_error() {
    assert!(decode_table(&nested_tables(MAX_NESTING)).is_ok());
    assert_eq!(
        decode_table(&nested_tables(MAX_NESTING + 1)),
        Err(DecodeError::NestingTooDeep { limit: MAX_NESTING })
    );
    // The depth that aborts recursive decoders (RABBITMQ.md section 2) is only an error here.
    assert_eq!(
        decode_table(&nested_tables(100_000)),
        Err(DecodeError::NestingTooDeep { limit: MAX_NESTING })
    );
}

#[test]
fn arrays_count_towards_nesting() {
    // table -> array -> array -> ... : every level is one deeper.
    let mut inner: Vec<u8> = 0u32.to_be_bytes().to_vec(); // empty array
    for _ in 0..MAX_NESTING {
        let mut outer = ((inner.len() + 1) as u32).to_be_bytes().to_vec();
        outer.push(b'A');
        outer.extend_from_slice(&inner);
        inner = outer;
    }
    let mut table = ((inner.len() + 3) as u32).to_be_bytes().to_vec();
    table.extend_from_slice(&[1, b'a', b'A']);
    table.extend_from_slice(&inner);
    assert_eq!(
        decode_table(&table),
        Err(DecodeError::NestingTooDeep { limit: MAX_NESTING })
    );
}

#[test]
fn lengths_beyond_the_input_are_refused_before_allocating() {
    // A table claiming 4 GiB of entries, with 3 bytes present.
    assert_eq!(
        decode_table(&[0xff, 0xff, 0xff, 0xff, 1, b'a', b'V']),
        Err(DecodeError::Truncated {
            needed: 0xffff_ffff,
            remaining: 3
        })
    );
    // A long string inside claiming more than its table holds.
    let bytes = [0, 0, 0, 7, 1, b'a', b'S', 0, 0, 0, 9];
    assert_eq!(
        decode_table(&bytes),
        Err(DecodeError::Truncated {
            needed: 9,
            remaining: 0
        })
    );
}

#[test]
fn unknown_tags_are_typed_errors() {
    for tag in [b'Z', b'c', 0, 0xff] {
        assert_eq!(
            decode_table(&[0, 0, 0, 3, 1, b'a', tag]),
            Err(DecodeError::UnknownFieldTag(tag))
        );
    }
}

/// `U` and `L`, the specification's tags that other clients send for signed 16- and 64-bit
/// integers, are read as RabbitMQ's `s` and `l`, in tables and arrays; a changed table is
/// written with RabbitMQ's tags only.
#[test]
fn the_specifications_u_and_l_tags_are_read_as_rabbitmqs_s_and_l() {
    #[rustfmt::skip]
    let entries: &[u8] = &[
        1, b'U', b'U', 0xff, 0xfd,
        1, b'L', b'L', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfb,
        1, b'A', b'A', 0, 0, 0, 12, b'U', 0, 7, b'L', 0, 0, 0, 0, 0, 0, 0, 8,
    ];
    let mut wire = (entries.len() as u32).to_be_bytes().to_vec();
    wire.extend_from_slice(entries);
    let mut table = decode_table(&wire).unwrap();
    assert_eq!(table.get("U"), Some(&FieldValue::I16(-3)));
    assert_eq!(table.get("L"), Some(&FieldValue::I64(-5)));
    assert_eq!(
        table.get("A"),
        Some(&FieldValue::from(vec![
            FieldValue::I16(7),
            FieldValue::I64(8)
        ]))
    );
    // Unchanged, it goes back as it came.
    assert_eq!(&encode_table(&table)[..], &wire[..]);

    table.insert(ShortString::from_static("x"), true);
    let written = encode_table(&table);
    #[rustfmt::skip]
    let expected: &[u8] = &[
        1, b'U', b's', 0xff, 0xfd,
        1, b'L', b'l', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfb,
        1, b'A', b'A', 0, 0, 0, 12, b's', 0, 7, b'l', 0, 0, 0, 0, 0, 0, 0, 8,
        1, b'x', b't', 1,
    ];
    assert_eq!(&written[4..], expected);
}

#[test]
fn a_received_table_is_written_back_as_it_came_until_changed() {
    // Bytes no encoder of ours would write: a duplicate key and a boolean sent as 2.
    let entries: &[u8] = &[1, b'a', b't', 2, 1, b'a', b'I', 0, 0, 0, 7];
    let mut wire = (entries.len() as u32).to_be_bytes().to_vec();
    wire.extend_from_slice(entries);
    let mut table = decode_table(&wire).unwrap();

    assert_eq!(table.len(), 2);
    assert_eq!(table.get("a"), Some(&FieldValue::Bool(true)));
    assert_eq!(&encode_table(&table)[..], &wire[..]);

    table.insert(ShortString::from_static("b"), 1u8);
    assert_eq!(table.wire(), None);
    let rewritten = decode_table(&encode_table(&table)).unwrap();
    let entries: Vec<_> = rewritten
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    assert_eq!(
        entries,
        [
            ("a", FieldValue::Bool(true)),
            ("a", FieldValue::I32(7)),
            ("b", FieldValue::U8(1)),
        ]
    );
}

#[test]
fn nested_tables_are_built_level_by_level() {
    let table = decode_table(&encode_table(
        &FieldTable::new().with("outer", FieldTable::new().with("inner", 5i64)),
    ))
    .unwrap();
    let inner = table.get("outer").and_then(FieldValue::as_table).unwrap();
    assert!(
        inner.wire().is_some(),
        "the nested table waits until looked at"
    );
    assert_eq!(inner.get("inner"), Some(&FieldValue::I64(5)));
}

#[test]
fn bits_pack_least_significant_first_across_octets() {
    let mut buf = BytesMut::new();
    let mut bits = [false; 10];
    bits[0] = true;
    bits[2] = true;
    bits[9] = true;
    Writer::new(&mut buf).bits(bits);
    assert_eq!(&buf[..], &[0b0000_0101, 0b0000_0010]);
    assert_eq!(Reader::from_slice(&buf).bits::<10>().unwrap(), bits);
}

#[test]
fn reserved_fields_are_zero_and_skippable() {
    let types = [
        WireType::Octet,
        WireType::Short,
        WireType::Long,
        WireType::LongLong,
        WireType::ShortStr,
        WireType::LongStr,
        WireType::Table,
        WireType::Timestamp,
    ];
    let mut buf = BytesMut::new();
    let mut out = Writer::new(&mut buf);
    for ty in types {
        out.zero(ty);
    }
    assert_eq!(buf.len(), 1 + 2 + 4 + 8 + 1 + 4 + 4 + 8);
    assert!(buf.iter().all(|&b| b == 0));
    let mut input = Reader::from_slice(&buf);
    for ty in types {
        input.skip(ty).unwrap();
    }
    assert!(input.is_empty());
}

proptest! {
    #[test]
    fn tables_round_trip(table in arbitrary::table()) {
        let bytes = encode_table(&table).freeze();
        // Sharing the payload's storage, and copying out of a slice.
        for mut input in [Reader::new(&bytes), Reader::from_slice(&bytes)] {
            prop_assert_eq!(input.table()?, table.clone());
            prop_assert!(input.is_empty());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_table_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_table(&bytes);
    }

    /// Valid tables with one byte changed anywhere reach every branch of the decoder with
    /// hostile lengths and tags: a table or an error, never a panic.
    #[test]
    fn corrupted_tables_never_panic(
        table in arbitrary::table(),
        at in any::<proptest::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut bytes = encode_table(&table);
        let i = at.index(bytes.len());
        bytes[i] = byte;
        let _ = decode_table(&bytes);
    }

    /// A valid table cut short anywhere is a typed error.
    #[test]
    fn truncated_tables_are_errors(table in arbitrary::table(), at in any::<proptest::sample::Index>()) {
        let bytes = encode_table(&table);
        let cut = at.index(bytes.len());
        prop_assert!(decode_table(&bytes[..cut]).is_err());
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_prefix_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        // A length that matches the body, so the decoder reaches the entries.
        let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&body);
        let _ = decode_table(&bytes);
    }
}

fn nested(depth: usize) -> FieldTable {
    let mut table = FieldTable::new().with("bottom", 1i8);
    for _ in 1..depth {
        table = FieldTable::new().with("n", table);
    }
    table
}

#[test]
fn sending_is_as_strict_as_receiving_about_nesting() {
    let too_deep = Err(EncodeError::NestingTooDeep { limit: MAX_NESTING });
    assert_eq!(nested(MAX_NESTING).check_sendable(), Ok(()));
    assert_eq!(nested(MAX_NESTING + 1).check_sendable(), too_deep);
    // What passes the check, the receiving side accepts, and the other way round.
    assert!(decode_table(&encode_table(&nested(MAX_NESTING))).is_ok());
    // Far deeper than any stack could recurse: the check stops at the limit, and the table
    // drops without recursion.
    assert_eq!(nested(50_000).check_sendable(), too_deep);
    // Arrays are levels too.
    let in_array = FieldTable::new().with(
        "list",
        FieldValue::from(vec![FieldValue::Table(nested(MAX_NESTING - 1))]),
    );
    assert_eq!(in_array.check_sendable(), too_deep);
    // A received table (kept as bytes) nested inside a new one counts with its depth.
    let received = decode_table(&encode_table(&nested(MAX_NESTING))).unwrap();
    assert!(received.wire().is_some());
    assert_eq!(received.check_sendable(), Ok(()));
    assert_eq!(
        FieldTable::new().with("wrapped", received).check_sendable(),
        too_deep
    );
}

#[test]
fn non_finite_floats_are_not_sendable() {
    for value in [
        FieldValue::F32(f32::NAN),
        FieldValue::F32(f32::INFINITY),
        FieldValue::F64(f64::NEG_INFINITY),
        FieldValue::F64(-f64::NAN),
    ] {
        let refused = Err(EncodeError::NonFiniteFloat {
            key: ShortString::from_static("x"),
        });
        assert_eq!(
            FieldTable::new().with("x", value.clone()).check_sendable(),
            refused
        );
        let nested = FieldTable::new().with("a", FieldTable::new().with("x", vec![value]));
        assert_eq!(nested.check_sendable(), refused);
    }
    let fine = FieldTable::new()
        .with("max", f64::MAX)
        .with("tiny", f32::MIN_POSITIVE)
        .with("zero", -0.0f64);
    assert_eq!(fine.check_sendable(), Ok(()));
}
