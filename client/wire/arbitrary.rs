//! Proptest strategies for the wire types, used by the round-trip tests of the primitives and
//! of every generated method (the generated `strategies` module calls these).

use bytes::Bytes;
use proptest::prelude::*;

use super::{Decimal, FieldTable, FieldValue, LongString, ShortString, Timestamp};

/// Any short string: UTF-8 of up to 255 bytes (mostly short, sometimes multi-byte, now and
/// then near or at the limit).
pub(crate) fn short_string() -> impl Strategy<Value = ShortString> {
    prop_oneof![
        9 => "\\PC{0,20}",
        1 => "[a-z\u{e9}]{120,255}",
    ]
    .prop_filter_map("at most 255 bytes", |s| ShortString::try_from(s).ok())
}

/// Any long string: arbitrary bytes, not necessarily UTF-8.
pub(crate) fn long_string() -> impl Strategy<Value = LongString> {
    proptest::collection::vec(any::<u8>(), 0..64).prop_map(LongString::from)
}

/// Any timestamp.
pub(crate) fn timestamp() -> impl Strategy<Value = Timestamp> {
    any::<u64>().prop_map(Timestamp)
}

/// Any field value of every tag, nested a few levels.
pub(crate) fn value() -> impl Strategy<Value = FieldValue> {
    let leaf = prop_oneof![
        any::<bool>().prop_map(FieldValue::Bool),
        any::<i8>().prop_map(FieldValue::I8),
        any::<u8>().prop_map(FieldValue::U8),
        any::<i16>().prop_map(FieldValue::I16),
        any::<u16>().prop_map(FieldValue::U16),
        any::<i32>().prop_map(FieldValue::I32),
        any::<u32>().prop_map(FieldValue::U32),
        any::<i64>().prop_map(FieldValue::I64),
        any::<f32>().prop_map(FieldValue::F32),
        any::<f64>().prop_map(FieldValue::F64),
        (any::<u8>(), any::<i32>())
            .prop_map(|(scale, value)| FieldValue::Decimal(Decimal { scale, value })),
        long_string().prop_map(FieldValue::LongString),
        timestamp().prop_map(FieldValue::Timestamp),
        Just(FieldValue::Void),
        proptest::collection::vec(any::<u8>(), 0..40)
            .prop_map(|b| FieldValue::ByteArray(Bytes::from(b))),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(FieldValue::from),
            proptest::collection::vec((short_string(), inner), 0..6)
                .prop_map(|entries| FieldValue::Table(entries.into_iter().collect())),
        ]
    })
}

/// Any table, with values of every tag nested a few levels.
pub(crate) fn table() -> impl Strategy<Value = FieldTable> {
    proptest::collection::vec((short_string(), value()), 0..8)
        .prop_map(|entries| entries.into_iter().collect())
}
