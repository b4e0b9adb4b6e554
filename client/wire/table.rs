//! Field tables, field arrays and the values they hold.
//!
//! The value tags are RabbitMQ's (its errata to AMQP 0-9-1, shared by the Java, Go and .NET
//! clients), not the ones in the 0-9-1 specification's own table, which no broker uses:
//!
//! | tag | value | Rust |
//! | --- | --- | --- |
//! | `t` | boolean | [`FieldValue::Bool`] |
//! | `b` / `B` | signed / unsigned 8-bit | [`FieldValue::I8`] / [`FieldValue::U8`] |
//! | `s` / `u` | signed / unsigned 16-bit | [`FieldValue::I16`] / [`FieldValue::U16`] |
//! | `I` / `i` | signed / unsigned 32-bit | [`FieldValue::I32`] / [`FieldValue::U32`] |
//! | `l` | signed 64-bit | [`FieldValue::I64`] |
//! | `f` / `d` | IEEE 754 single / double | [`FieldValue::F32`] / [`FieldValue::F64`] |
//! | `D` | decimal | [`FieldValue::Decimal`] |
//! | `S` | long string | [`FieldValue::LongString`] |
//! | `A` | array | [`FieldValue::Array`] |
//! | `T` | timestamp | [`FieldValue::Timestamp`] |
//! | `F` | nested table | [`FieldValue::Table`] |
//! | `V` | no value | [`FieldValue::Void`] |
//! | `x` | byte array | [`FieldValue::ByteArray`] |
//!
//! Two more tags are read but never written: `U` (a signed 16-bit integer, read as
//! [`FieldValue::I16`]) and `L` (a signed 64-bit integer, read as [`FieldValue::I64`]). They are
//! the specification's own tags for what RabbitMQ writes `s` and `l`; clients that follow the
//! specification's table (amq-protocol, pika, pamqp) still send them. RabbitMQ (3.10) relays
//! message headers holding `L` untouched (it closes a connection that publishes `U` with 541).
//! A received table is written back with its original bytes while unchanged; once changed,
//! its entries are written with RabbitMQ's tags.

use std::fmt;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::{LongString, Reader, ShortString};

/// Seconds since the Unix epoch, as AMQP's `timestamp` domain and the `T` field tag carry them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The current time, truncated to whole seconds.
    pub fn now() -> Self {
        Self::from(SystemTime::now())
    }

    /// Seconds since the Unix epoch.
    pub fn as_secs(self) -> u64 {
        self.0
    }

    /// The time as a [`SystemTime`], or `None` if the platform cannot represent it.
    pub fn to_system_time(self) -> Option<SystemTime> {
        UNIX_EPOCH.checked_add(Duration::from_secs(self.0))
    }
}

impl From<SystemTime> for Timestamp {
    /// Converts, truncating to whole seconds; times before the epoch become 0.
    fn from(time: SystemTime) -> Self {
        Self(time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
    }
}

/// A decimal number: `value` × 10^-`scale` (tag `D`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Decimal {
    /// Number of decimal digits after the point.
    pub scale: u8,
    /// The unscaled value.
    pub value: i32,
}

/// One value in a [`FieldTable`] or [`FieldArray`].
///
/// Equality compares floats by their bits, so a value equals its decoded copy even when it is NaN,
/// and `0.0` differs from `-0.0`.
#[derive(Debug, Clone)]
pub enum FieldValue {
    /// `t`: a boolean.
    Bool(bool),
    /// `b`: a signed 8-bit integer.
    I8(i8),
    /// `B`: an unsigned 8-bit integer.
    U8(u8),
    /// `s`: a signed 16-bit integer.
    I16(i16),
    /// `u`: an unsigned 16-bit integer.
    U16(u16),
    /// `I`: a signed 32-bit integer.
    I32(i32),
    /// `i`: an unsigned 32-bit integer.
    U32(u32),
    /// `l`: a signed 64-bit integer.
    I64(i64),
    /// `f`: a single-precision float.
    F32(f32),
    /// `d`: a double-precision float.
    F64(f64),
    /// `D`: a decimal.
    Decimal(Decimal),
    /// `S`: a long string (bytes, usually UTF-8 text).
    LongString(LongString),
    /// `A`: an array of values.
    Array(FieldArray),
    /// `T`: a timestamp.
    Timestamp(Timestamp),
    /// `F`: a nested table.
    Table(FieldTable),
    /// `V`: no value.
    Void,
    /// `x`: raw bytes.
    ByteArray(Bytes),
}

impl FieldValue {
    /// The tag octet that introduces this value on the wire.
    pub fn tag(&self) -> u8 {
        match self {
            Self::Bool(_) => b't',
            Self::I8(_) => b'b',
            Self::U8(_) => b'B',
            Self::I16(_) => b's',
            Self::U16(_) => b'u',
            Self::I32(_) => b'I',
            Self::U32(_) => b'i',
            Self::I64(_) => b'l',
            Self::F32(_) => b'f',
            Self::F64(_) => b'd',
            Self::Decimal(_) => b'D',
            Self::LongString(_) => b'S',
            Self::Array(_) => b'A',
            Self::Timestamp(_) => b'T',
            Self::Table(_) => b'F',
            Self::Void => b'V',
            Self::ByteArray(_) => b'x',
        }
    }

    /// The value as a signed integer, if it is any integer type that fits in an `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Self::I8(v) => Some(v.into()),
            Self::U8(v) => Some(v.into()),
            Self::I16(v) => Some(v.into()),
            Self::U16(v) => Some(v.into()),
            Self::I32(v) => Some(v.into()),
            Self::U32(v) => Some(v.into()),
            Self::I64(v) => Some(v),
            _ => None,
        }
    }

    /// The value as text, if it is a long string holding UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::LongString(s) => s.to_str(),
            _ => None,
        }
    }

    /// The value as a boolean, if it is one.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// The nested table, if the value is one.
    pub fn as_table(&self) -> Option<&FieldTable> {
        match self {
            Self::Table(t) => Some(t),
            _ => None,
        }
    }
}

impl PartialEq for FieldValue {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Bool(a), Self::Bool(b)) => a == b,
            (Self::I8(a), Self::I8(b)) => a == b,
            (Self::U8(a), Self::U8(b)) => a == b,
            (Self::I16(a), Self::I16(b)) => a == b,
            (Self::U16(a), Self::U16(b)) => a == b,
            (Self::I32(a), Self::I32(b)) => a == b,
            (Self::U32(a), Self::U32(b)) => a == b,
            (Self::I64(a), Self::I64(b)) => a == b,
            (Self::F32(a), Self::F32(b)) => a.to_bits() == b.to_bits(),
            (Self::F64(a), Self::F64(b)) => a.to_bits() == b.to_bits(),
            (Self::Decimal(a), Self::Decimal(b)) => a == b,
            (Self::LongString(a), Self::LongString(b)) => a == b,
            (Self::Array(a), Self::Array(b)) => a == b,
            (Self::Timestamp(a), Self::Timestamp(b)) => a == b,
            (Self::Table(a), Self::Table(b)) => a == b,
            (Self::Void, Self::Void) => true,
            (Self::ByteArray(a), Self::ByteArray(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for FieldValue {}

macro_rules! field_value_from {
    ($($source:ty => $variant:ident),* $(,)?) => {
        $(impl From<$source> for FieldValue {
            fn from(value: $source) -> Self {
                Self::$variant(value.into())
            }
        })*
    };
}

field_value_from! {
    bool => Bool, i8 => I8, u8 => U8, i16 => I16, u16 => U16, i32 => I32, u32 => U32, i64 => I64,
    f32 => F32, f64 => F64, Decimal => Decimal, LongString => LongString, &str => LongString,
    String => LongString, ShortString => LongString, FieldArray => Array, Timestamp => Timestamp,
    FieldTable => Table, Bytes => ByteArray,
}

impl From<Vec<FieldValue>> for FieldValue {
    fn from(values: Vec<FieldValue>) -> Self {
        Self::Array(FieldArray(values))
    }
}

/// One entry of a [`FieldTable`].
type Entry = (ShortString, FieldValue);

/// An AMQP field table: named values, in the order they were inserted or received.
///
/// Tables carry queue and exchange arguments (`x-queue-type`, `x-message-ttl`, …), message headers
/// and the peer properties exchanged at connection start. Lookups are linear, which is the fastest
/// choice for the handful of entries tables hold in practice.
///
/// A table read from the wire is checked completely when it is read (lengths, tags, nesting,
/// UTF-8 keys: every error decoding could meet), but its entries are built only when first
/// looked at. A consumer that never reads a message's headers pays no allocation for them, and a
/// table passed on unchanged (a delivery's headers republished) is written back as the bytes
/// that came in. Changing a table drops its wire bytes.
///
/// ```
/// use warren::wire::{FieldTable, FieldValue};
///
/// let args = FieldTable::new()
///     .with("x-queue-type", "quorum")
///     .with("x-max-length", 10_000i64);
/// assert_eq!(args.get("x-max-length"), Some(&FieldValue::I64(10_000)));
/// ```
#[derive(Clone, Default)]
pub struct FieldTable {
    /// The entries, in order. Unset means "decode them from `wire`" (or, with no `wire`, none).
    entries: OnceLock<Vec<Entry>>,
    /// For a table read from the peer and not changed since: its entries' bytes (without the
    /// length prefix), already checked by [`check::table`](super::check::table), so decoding
    /// them cannot fail.
    wire: Option<Bytes>,
}

impl FieldTable {
    /// An empty table.
    pub const fn new() -> Self {
        Self {
            entries: OnceLock::new(),
            wire: None,
        }
    }

    /// A table over entry bytes that [`check::table`](super::check::table) accepted.
    pub(crate) fn from_checked_wire(wire: Bytes) -> Self {
        Self {
            entries: OnceLock::new(),
            wire: Some(wire),
        }
    }

    /// The entries' wire bytes, if the table came from the peer and was not changed since.
    pub(crate) fn wire(&self) -> Option<&Bytes> {
        self.wire.as_ref()
    }

    /// The entries, decoded from the wire bytes on first use.
    fn entries(&self) -> &[Entry] {
        self.entries.get_or_init(|| self.decode_wire())
    }

    /// Decodes the checked wire bytes; an empty list when there are none.
    fn decode_wire(&self) -> Vec<Entry> {
        let Some(wire) = &self.wire else {
            return Vec::new();
        };
        let decoded = Reader::new(wire).checked_table_entries();
        debug_assert!(decoded.is_ok(), "checked table bytes failed to decode");
        decoded.unwrap_or_default()
    }

    /// Runs `change` on the decoded entries; the wire bytes no longer describe the table.
    fn change<R>(&mut self, change: impl FnOnce(&mut Vec<Entry>) -> R) -> R {
        let mut entries = std::mem::take(&mut self.entries)
            .into_inner()
            .unwrap_or_else(|| self.decode_wire());
        self.wire = None;
        let result = change(&mut entries);
        self.entries = OnceLock::from(entries);
        result
    }

    /// Adds an entry under a literal key, replacing any entry with that key, and returns the table.
    ///
    /// # Panics
    ///
    /// If `key` is longer than 255 bytes (see [`ShortString::from_static`]); use
    /// [`FieldTable::insert`] for keys that are not literals.
    pub fn with(mut self, key: &'static str, value: impl Into<FieldValue>) -> Self {
        self.insert(ShortString::from_static(key), value);
        self
    }

    /// Adds an entry, replacing and returning the value of any entry with that key.
    pub fn insert(&mut self, key: ShortString, value: impl Into<FieldValue>) -> Option<FieldValue> {
        let value = value.into();
        self.change(
            |entries| match entries.iter_mut().find(|(k, _)| *k == key) {
                Some((_, slot)) => Some(std::mem::replace(slot, value)),
                None => {
                    entries.push((key, value));
                    None
                }
            },
        )
    }

    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<&FieldValue> {
        self.entries()
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// Removes and returns the value under `key`.
    pub fn remove(&mut self, key: &str) -> Option<FieldValue> {
        self.change(|entries| {
            let index = entries.iter().position(|(k, _)| k == key)?;
            Some(entries.remove(index).1)
        })
    }

    /// Whether the table has an entry under `key`.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The entries, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&ShortString, &FieldValue)> {
        self.into_iter()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// Whether the table has no entries.
    pub fn is_empty(&self) -> bool {
        match &self.wire {
            Some(wire) => wire.is_empty(),
            None => self.entries.get().is_none_or(Vec::is_empty),
        }
    }
}

impl Drop for FieldTable {
    /// Drops nested tables and arrays one level at a time from a list, not by recursion, so
    /// that a table built thousands of levels deep (which
    /// [`check_sendable`](FieldTable::check_sendable) refuses to send) does not overflow the
    /// stack when it goes away.
    fn drop(&mut self) {
        let Some(entries) = self.entries.get_mut() else {
            return;
        };
        let nested = |v: &FieldValue| matches!(v, FieldValue::Table(_) | FieldValue::Array(_));
        if !entries.iter().any(|(_, v)| nested(v)) {
            return;
        }
        let mut pending: Vec<FieldValue> = entries.drain(..).map(|(_, v)| v).collect();
        while let Some(value) = pending.pop() {
            match value {
                // `table` drops here with its entries taken: no deeper call.
                FieldValue::Table(mut table) => {
                    if let Some(entries) = table.entries.get_mut() {
                        pending.extend(entries.drain(..).map(|(_, v)| v));
                    }
                }
                FieldValue::Array(FieldArray(values)) => pending.extend(values),
                _ => {}
            }
        }
    }
}

impl PartialEq for FieldTable {
    /// Tables are equal when their entries are, in order (bytes received are decoded to compare).
    fn eq(&self, other: &Self) -> bool {
        self.entries() == other.entries()
    }
}

impl Eq for FieldTable {}

impl fmt::Debug for FieldTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("FieldTable").field(&self.entries()).finish()
    }
}

impl FromIterator<(ShortString, FieldValue)> for FieldTable {
    /// Collects entries; a later entry replaces an earlier one with the same key.
    fn from_iter<I: IntoIterator<Item = (ShortString, FieldValue)>>(iter: I) -> Self {
        let mut table = Self::new();
        for (key, value) in iter {
            table.insert(key, value);
        }
        table
    }
}

impl IntoIterator for FieldTable {
    type Item = (ShortString, FieldValue);
    type IntoIter = std::vec::IntoIter<(ShortString, FieldValue)>;

    fn into_iter(mut self) -> Self::IntoIter {
        self.change(std::mem::take).into_iter()
    }
}

impl<'a> IntoIterator for &'a FieldTable {
    type Item = (&'a ShortString, &'a FieldValue);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (ShortString, FieldValue)>,
        fn(&'a (ShortString, FieldValue)) -> (&'a ShortString, &'a FieldValue),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.entries().iter().map(|(k, v)| (k, v))
    }
}

impl fmt::Display for FieldTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// An AMQP field array (tag `A`): values in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldArray(pub Vec<FieldValue>);

impl FieldArray {
    /// An empty array.
    pub const fn new() -> Self {
        Self(Vec::new())
    }
}

impl FromIterator<FieldValue> for FieldArray {
    fn from_iter<I: IntoIterator<Item = FieldValue>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_replaces_and_keeps_order() {
        let mut table = FieldTable::new().with("a", 1i32).with("b", 2i32);
        assert_eq!(
            table.insert(ShortString::from_static("a"), 3i32),
            Some(FieldValue::I32(1))
        );
        let keys: Vec<&str> = table.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "b"]);
        assert_eq!(table.get("a"), Some(&FieldValue::I32(3)));
        assert_eq!(table.remove("b"), Some(FieldValue::I32(2)));
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn float_equality_is_bitwise() {
        assert_eq!(FieldValue::F64(f64::NAN), FieldValue::F64(f64::NAN));
        assert_ne!(FieldValue::F32(0.0), FieldValue::F32(-0.0));
    }

    #[test]
    fn timestamp_converts_to_and_from_system_time() {
        let ts = Timestamp(1_700_000_000);
        assert_eq!(Timestamp::from(ts.to_system_time().unwrap()), ts);
        assert_eq!(Timestamp(u64::MAX).to_system_time(), None);
    }
}
