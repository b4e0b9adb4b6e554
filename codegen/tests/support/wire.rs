//! A stand-in for warren's `wire` facade (`client/wire/`), with the signatures generated code
//! calls and the real AMQP byte layout, so that codegen's tests can compile and run generated
//! code without the client crate. Tables are opaque bytes here: only their length prefix
//! matters to the generated code.

#![allow(dead_code)]

use std::fmt;

/// `shortstr`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShortString(String);

impl ShortString {
    /// From a string of at most 255 bytes.
    pub fn from_static(s: &'static str) -> Self {
        assert!(s.len() <= 255);
        ShortString(s.to_owned())
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A string over 255 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShortStringTooLong {
    /// Its length.
    pub len: usize,
}

/// What a short string can be made from.
pub trait IntoShortString {
    /// The short string, or the error for a string over 255 bytes.
    fn into_short_string(self) -> Result<ShortString, ShortStringTooLong>;
}

impl IntoShortString for &str {
    fn into_short_string(self) -> Result<ShortString, ShortStringTooLong> {
        match self.len() {
            len @ 256.. => Err(ShortStringTooLong { len }),
            _ => Ok(ShortString(self.to_owned())),
        }
    }
}

/// A value a properties setter refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidProperty {
    /// The property.
    pub property: &'static str,
    /// The string's length.
    pub len: usize,
}

impl InvalidProperty {
    /// The record of `error` for `property`.
    pub fn new(property: &'static str, error: ShortStringTooLong) -> Self {
        Self {
            property,
            len: error.len,
        }
    }
}

/// `longstr`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LongString(Vec<u8>);

impl From<&str> for LongString {
    fn from(s: &str) -> Self {
        LongString(s.as_bytes().to_vec())
    }
}

/// `table`: kept as its encoded entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldTable(Vec<u8>);

impl FieldTable {
    /// A table whose encoded entries are `bytes`.
    pub fn from_raw(bytes: &[u8]) -> Self {
        FieldTable(bytes.to_vec())
    }
}

/// `timestamp`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timestamp(pub u64);

/// Wire types of reserved fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireType {
    /// 8 bits.
    Octet,
    /// 16 bits.
    Short,
    /// 32 bits.
    Long,
    /// 64 bits.
    LongLong,
    /// Length octet and bytes.
    ShortStr,
    /// 32-bit length and bytes.
    LongStr,
    /// 32-bit length and entries.
    Table,
    /// 64 bits.
    Timestamp,
}

/// Class and method id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodId {
    /// Class id.
    pub class: u16,
    /// Method id.
    pub method: u16,
}

impl MethodId {
    /// The id `class`.`method`.
    pub const fn new(class: u16, method: u16) -> Self {
        Self { class, method }
    }
}

/// Who sends a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The client.
    ToServer,
    /// The server.
    ToClient,
    /// Either.
    Both,
}

/// Decoding failures.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// Not enough bytes.
    Truncated,
    /// A short string that is not UTF-8.
    InvalidUtf8,
    /// Unknown ids.
    UnknownMethod {
        /// Class id.
        class: u16,
        /// Method id.
        method: u16,
    },
    /// A presence flag for an undefined property.
    UnknownProperty {
        /// Class id.
        class: u16,
        /// Property position.
        index: usize,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

/// Reads values from a payload.
#[derive(Debug, Clone)]
pub struct Reader {
    buf: Vec<u8>,
    pos: usize,
}

impl Reader {
    /// A reader over `buf`.
    pub fn new(buf: Vec<u8>) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated);
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// `octet`.
    pub fn octet(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    /// `short`.
    pub fn short(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().unwrap()))
    }

    /// `long`.
    pub fn long(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }

    /// `longlong`.
    pub fn longlong(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().unwrap()))
    }

    /// `timestamp`.
    pub fn timestamp(&mut self) -> Result<Timestamp, DecodeError> {
        self.longlong().map(Timestamp)
    }

    /// `N` packed bits, first bit lowest.
    pub fn bits<const N: usize>(&mut self) -> Result<[bool; N], DecodeError> {
        let bytes = self.take(N.div_ceil(8))?.to_vec();
        Ok(std::array::from_fn(|i| bytes[i / 8] & (1 << (i % 8)) != 0))
    }

    /// `shortstr`.
    pub fn short_string(&mut self) -> Result<ShortString, DecodeError> {
        let n = self.octet()? as usize;
        let bytes = self.take(n)?.to_vec();
        String::from_utf8(bytes)
            .map(ShortString)
            .map_err(|_| DecodeError::InvalidUtf8)
    }

    /// `longstr`.
    pub fn long_string(&mut self) -> Result<LongString, DecodeError> {
        let n = self.long()? as usize;
        Ok(LongString(self.take(n)?.to_vec()))
    }

    /// `table`.
    pub fn table(&mut self) -> Result<FieldTable, DecodeError> {
        let n = self.long()? as usize;
        Ok(FieldTable(self.take(n)?.to_vec()))
    }

    /// Skips a reserved field.
    pub fn skip(&mut self, ty: WireType) -> Result<(), DecodeError> {
        match ty {
            WireType::Octet => self.octet().map(drop),
            WireType::Short => self.short().map(drop),
            WireType::Long => self.long().map(drop),
            WireType::LongLong | WireType::Timestamp => self.longlong().map(drop),
            WireType::ShortStr => self.short_string().map(drop),
            WireType::LongStr => self.long_string().map(drop),
            WireType::Table => self.table().map(drop),
        }
    }
}

/// Appends values to a buffer.
#[derive(Debug)]
pub struct Writer<'a> {
    buf: &'a mut Vec<u8>,
}

impl<'a> Writer<'a> {
    /// A writer appending to `buf`.
    pub fn new(buf: &'a mut Vec<u8>) -> Self {
        Self { buf }
    }

    /// `octet`.
    pub fn octet(&mut self, v: u8) {
        self.buf.push(v);
    }

    /// `short`.
    pub fn short(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// `long`.
    pub fn long(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// `longlong`.
    pub fn longlong(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// `timestamp`.
    pub fn timestamp(&mut self, v: Timestamp) {
        self.longlong(v.0);
    }

    /// `N` packed bits, first bit lowest.
    pub fn bits<const N: usize>(&mut self, bits: [bool; N]) {
        let mut bytes = vec![0u8; N.div_ceil(8)];
        for (i, bit) in bits.iter().enumerate() {
            if *bit {
                bytes[i / 8] |= 1 << (i % 8);
            }
        }
        self.buf.extend_from_slice(&bytes);
    }

    /// `shortstr`.
    pub fn short_string(&mut self, v: &ShortString) {
        self.octet(v.0.len() as u8);
        self.buf.extend_from_slice(v.0.as_bytes());
    }

    /// `longstr`.
    pub fn long_string(&mut self, v: &LongString) {
        self.long(v.0.len() as u32);
        self.buf.extend_from_slice(&v.0);
    }

    /// `table`.
    pub fn table(&mut self, v: &FieldTable) {
        self.long(v.0.len() as u32);
        self.buf.extend_from_slice(&v.0);
    }

    /// The zero value of a reserved field.
    pub fn zero(&mut self, ty: WireType) {
        match ty {
            WireType::Octet | WireType::ShortStr => self.octet(0),
            WireType::Short => self.short(0),
            WireType::Long | WireType::LongStr | WireType::Table => self.long(0),
            WireType::LongLong | WireType::Timestamp => self.longlong(0),
        }
    }
}

/// A method's identity and argument codec.
pub trait AmqpMethod: Sized {
    /// Ids.
    const ID: MethodId;
    /// Dotted name.
    const NAME: &'static str;
    /// `synchronous="1"`.
    const SYNCHRONOUS: bool;
    /// `content="1"`.
    const CARRIES_CONTENT: bool;
    /// Who sends it.
    const DIRECTION: Direction;
    /// Writes the arguments.
    fn encode(&self, out: &mut Writer<'_>);
    /// Reads the arguments.
    fn decode(input: &mut Reader) -> Result<Self, DecodeError>;
}

/// A content class's properties.
pub trait ContentProperties: Sized {
    /// Class id.
    const CLASS_ID: u16;
    /// Writes flags and values.
    fn encode(&self, out: &mut Writer<'_>);
    /// Reads flags and values.
    fn decode(input: &mut Reader) -> Result<Self, DecodeError>;
}

/// Stand-ins for the runtime's proptest strategies, which the generated `strategies` module
/// (emitted for the snapshot) calls. Both exist only in test builds, as in the runtime.
#[cfg(test)]
pub mod arbitrary {
    use proptest::prelude::*;

    use super::{FieldTable, LongString, ShortString, Timestamp};

    /// Any short string.
    pub fn short_string() -> impl Strategy<Value = ShortString> {
        "[a-z]{0,8}".prop_map(ShortString)
    }

    /// Any long string.
    pub fn long_string() -> impl Strategy<Value = LongString> {
        proptest::collection::vec(any::<u8>(), 0..16).prop_map(LongString)
    }

    /// Any table: an empty or one-entry table (`k` -> void).
    pub fn table() -> impl Strategy<Value = FieldTable> {
        prop_oneof![
            Just(FieldTable(Vec::new())),
            Just(FieldTable(vec![1, b'k', b'V'])),
        ]
    }

    /// Any timestamp.
    pub fn timestamp() -> impl Strategy<Value = Timestamp> {
        any::<u64>().prop_map(Timestamp)
    }
}
