//! Decoding: a cursor over one payload received from the peer.

use bytes::{Buf, Bytes};

use super::table::{Decimal, FieldArray, FieldTable, FieldValue, Timestamp};
use super::{DecodeError, LongString, ShortString, WireType, check};

#[cfg(doc)]
use super::MAX_NESTING;

/// Reads AMQP values from the front of a payload.
///
/// Every read checks the length it needs against the bytes that remain before it touches or
/// allocates anything, so no input can make it panic, loop or allocate more than a small multiple
/// of the payload's size. Strings and byte arrays are zero-copy slices of the payload.
///
/// ```
/// use bytes::Bytes;
/// use warren::wire::Reader;
///
/// let mut input = Reader::new(Bytes::from_static(b"\x00\x2a\x05hello"));
/// assert_eq!(input.short()?, 42);
/// assert_eq!(input.short_string()?, "hello");
/// assert!(input.is_empty());
/// # Ok::<(), warren::wire::DecodeError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Reader {
    buf: Bytes,
}

impl Reader {
    /// A reader over `payload`.
    pub fn new(payload: Bytes) -> Self {
        Self { buf: payload }
    }

    /// Number of bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Whether every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The bytes not yet read, consuming the reader.
    pub fn into_rest(self) -> Bytes {
        self.buf
    }

    #[inline]
    fn need(&self, needed: usize) -> Result<(), DecodeError> {
        if self.remaining() < needed {
            return Err(self.truncated(needed));
        }
        Ok(())
    }

    /// The error for a read of `needed` bytes past the end.
    fn truncated(&self, needed: usize) -> DecodeError {
        DecodeError::Truncated {
            needed,
            remaining: self.remaining(),
        }
    }

    /// Takes the next `len` bytes as a shared slice.
    #[inline]
    pub fn bytes(&mut self, len: usize) -> Result<Bytes, DecodeError> {
        self.need(len)?;
        Ok(self.buf.split_to(len))
    }

    /// Takes the next `N` bytes by value.
    #[inline]
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let Some(&bytes) = self.buf.first_chunk::<N>() else {
            return Err(self.truncated(N));
        };
        self.buf.advance(N);
        Ok(bytes)
    }

    /// Reads an `octet`.
    #[inline]
    pub fn octet(&mut self) -> Result<u8, DecodeError> {
        self.array().map(u8::from_be_bytes)
    }

    /// Reads a `short` (16 bits, big-endian).
    #[inline]
    pub fn short(&mut self) -> Result<u16, DecodeError> {
        self.array().map(u16::from_be_bytes)
    }

    /// Reads a `long` (32 bits, big-endian).
    #[inline]
    pub fn long(&mut self) -> Result<u32, DecodeError> {
        self.array().map(u32::from_be_bytes)
    }

    /// Reads a `longlong` (64 bits, big-endian).
    #[inline]
    pub fn longlong(&mut self) -> Result<u64, DecodeError> {
        self.array().map(u64::from_be_bytes)
    }

    /// Reads a `timestamp` (64-bit seconds since the epoch).
    #[inline]
    pub fn timestamp(&mut self) -> Result<Timestamp, DecodeError> {
        self.longlong().map(Timestamp)
    }

    /// Reads a run of `N` packed bits: `ceil(N / 8)` octets, least significant bit first.
    #[inline]
    pub fn bits<const N: usize>(&mut self) -> Result<[bool; N], DecodeError> {
        let octets = N.div_ceil(8);
        self.need(octets)?;
        let mut bits = [false; N];
        for (i, bit) in bits.iter_mut().enumerate() {
            *bit = self.buf[i / 8] & (1 << (i % 8)) != 0;
        }
        self.buf.advance(octets);
        Ok(bits)
    }

    /// Reads a `shortstr`: a length octet and that many bytes of UTF-8.
    #[inline]
    pub fn short_string(&mut self) -> Result<ShortString, DecodeError> {
        let len = usize::from(self.octet()?);
        self.need(len)?;
        let string = ShortString::from_wire(&self.buf, len, || self.buf.slice(..len))?;
        self.buf.advance(len);
        Ok(string)
    }

    /// Reads a `longstr`: a 32-bit length and that many bytes.
    #[inline]
    pub fn long_string(&mut self) -> Result<LongString, DecodeError> {
        let len = self.long()? as usize;
        self.bytes(len).map(LongString::from)
    }

    /// Reads a field `table`.
    ///
    /// The whole table is checked here: tables and arrays may nest [`MAX_NESTING`] levels deep,
    /// counting this table as the first (deeper input is [`DecodeError::NestingTooDeep`]), and
    /// every length, tag and key must be valid. Its entries are built when first looked at (see
    /// [`FieldTable`]), which then cannot fail.
    pub fn table(&mut self) -> Result<FieldTable, DecodeError> {
        let len = self.long()? as usize;
        self.need(len)?;
        check::table(&self.buf[..len], 1)?;
        Ok(self.checked_table(len))
    }

    /// Skips a reserved field of the given type, checking only that its bytes are present.
    pub fn skip(&mut self, ty: WireType) -> Result<(), DecodeError> {
        let len = match ty {
            WireType::Octet => 1,
            WireType::Short => 2,
            WireType::Long => 4,
            WireType::LongLong | WireType::Timestamp => 8,
            WireType::ShortStr => usize::from(self.octet()?),
            WireType::LongStr | WireType::Table => self.long()? as usize,
        };
        self.need(len)?;
        self.buf.advance(len);
        Ok(())
    }

    /// Takes the next `len` bytes, which [`check::table`] accepted, as a table.
    fn checked_table(&mut self, len: usize) -> FieldTable {
        if len == 0 {
            return FieldTable::new();
        }
        FieldTable::from_checked_wire(self.buf.split_to(len))
    }

    /// Decodes the entries of a table that [`check::table`] accepted: the whole of this reader.
    /// Nested tables stay in their wire form.
    pub(crate) fn checked_table_entries(
        mut self,
    ) -> Result<Vec<(ShortString, FieldValue)>, DecodeError> {
        let mut entries = Vec::new();
        while !self.is_empty() {
            let key = self.short_string()?;
            let value = self.checked_value()?;
            entries.push((key, value));
        }
        Ok(entries)
    }

    /// Decodes a checked array.
    fn checked_array(&mut self) -> Result<FieldArray, DecodeError> {
        let len = self.long()? as usize;
        let mut values = Reader::new(self.bytes(len)?);
        let mut array = Vec::new();
        while !values.is_empty() {
            array.push(values.checked_value()?);
        }
        Ok(FieldArray(array))
    }

    /// Decodes a tagged value inside a checked table or array. The checks stay (they cost
    /// little), so a value the check let through by mistake is an error, never a panic.
    fn checked_value(&mut self) -> Result<FieldValue, DecodeError> {
        let tag = self.octet()?;
        Ok(match tag {
            b't' => FieldValue::Bool(self.octet()? != 0),
            b'b' => FieldValue::I8(self.octet()? as i8),
            b'B' => FieldValue::U8(self.octet()?),
            b's' => FieldValue::I16(self.short()? as i16),
            b'u' => FieldValue::U16(self.short()?),
            b'I' => FieldValue::I32(self.long()? as i32),
            b'i' => FieldValue::U32(self.long()?),
            b'l' => FieldValue::I64(self.longlong()? as i64),
            b'f' => FieldValue::F32(f32::from_bits(self.long()?)),
            b'd' => FieldValue::F64(f64::from_bits(self.longlong()?)),
            b'D' => FieldValue::Decimal(Decimal {
                scale: self.octet()?,
                value: self.long()? as i32,
            }),
            b'S' => FieldValue::LongString(self.long_string()?),
            b'A' => FieldValue::Array(self.checked_array()?),
            b'T' => FieldValue::Timestamp(self.timestamp()?),
            b'F' => {
                let len = self.long()? as usize;
                self.need(len)?;
                FieldValue::Table(self.checked_table(len))
            }
            b'V' => FieldValue::Void,
            b'x' => FieldValue::ByteArray(self.long_string()?.into_bytes()),
            other => return Err(DecodeError::UnknownFieldTag(other)),
        })
    }
}
