//! Decoding: a cursor over one payload received from the peer.

use bytes::Bytes;

use super::table::{Decimal, FieldArray, FieldTable, FieldValue, Timestamp};
use super::{DecodeError, LongString, ShortString, WireType, check};

#[cfg(doc)]
use super::MAX_NESTING;

/// Reads AMQP values from the front of a payload.
///
/// Every read checks the length it needs against the bytes that remain before it touches or
/// allocates anything, so no input can make it panic, loop or allocate more than a small multiple
/// of the payload's size.
///
/// A reader borrows its payload. Over a [`Bytes`] ([`Reader::new`]), long strings, byte arrays
/// and field tables are zero-copy slices of it; over a plain slice ([`Reader::from_slice`]),
/// they are copies. Short strings are always copies: inline up to 31 bytes (see
/// [`ShortString`]).
///
/// ```
/// use bytes::Bytes;
/// use warren::wire::Reader;
///
/// let payload = Bytes::from_static(b"\x00\x2a\x05hello");
/// let mut input = Reader::new(&payload);
/// assert_eq!(input.short()?, 42);
/// assert_eq!(input.short_string()?, "hello");
/// assert!(input.is_empty());
/// # Ok::<(), warren::wire::DecodeError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    /// From the next unread byte of the payload to the end of the memory the reader may look
    /// at, which can extend past the payload (see [`Reader::with_lookahead`]).
    data: &'a [u8],
    /// How many bytes of `data` are payload not yet read: every read is bounded by this.
    remaining: usize,
    /// The whole payload as [`Bytes`], when slices of it can be shared instead of copied.
    shared: Option<&'a Bytes>,
}

impl<'a> Reader<'a> {
    /// A reader over `payload`, whose long strings, byte arrays and tables are shared slices
    /// of it.
    pub fn new(payload: &'a Bytes) -> Self {
        Self {
            data: payload,
            remaining: payload.len(),
            shared: Some(payload),
        }
    }

    /// A reader over `payload`, copying out long strings, byte arrays and tables.
    pub fn from_slice(payload: &'a [u8]) -> Self {
        Self {
            data: payload,
            remaining: payload.len(),
            shared: None,
        }
    }

    /// A reader over the first `len` bytes of `data` that may look at the bytes after them
    /// (never read as values): a short string near the end of the payload is then still
    /// copied in one fixed-size move. `len` must be at most `data.len()`.
    pub(crate) fn with_lookahead(data: &'a [u8], len: usize) -> Self {
        debug_assert!(len <= data.len());
        Self {
            data,
            remaining: len.min(data.len()),
            shared: None,
        }
    }

    /// Number of bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.remaining
    }

    /// Whether every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.remaining == 0
    }

    /// The bytes not yet read, consuming the reader: shared with the payload or copied, as
    /// long strings are.
    pub fn into_rest(mut self) -> Bytes {
        let len = self.remaining;
        self.take_bytes(len)
    }

    /// The payload not yet read.
    #[inline]
    fn rest(&self) -> &'a [u8] {
        &self.data[..self.remaining]
    }

    #[inline]
    fn need(&self, needed: usize) -> Result<(), DecodeError> {
        if self.remaining < needed {
            return Err(self.truncated(needed));
        }
        Ok(())
    }

    /// The error for a read of `needed` bytes past the end.
    fn truncated(&self, needed: usize) -> DecodeError {
        DecodeError::Truncated {
            needed,
            remaining: self.remaining,
        }
    }

    /// Moves past `len` bytes, which [`Reader::need`] has checked are there.
    #[inline]
    fn advance(&mut self, len: usize) {
        self.data = &self.data[len..];
        self.remaining -= len;
    }

    /// Takes the next `len` bytes, which [`Reader::need`] has checked are there, as [`Bytes`].
    fn take_bytes(&mut self, len: usize) -> Bytes {
        let bytes = &self.data[..len];
        let taken = match self.shared {
            Some(payload) => payload.slice_ref(bytes),
            None => Bytes::copy_from_slice(bytes),
        };
        self.advance(len);
        taken
    }

    /// Takes the next `len` bytes: a shared slice of the payload, or a copy (see
    /// [`Reader::from_slice`]).
    #[inline]
    pub fn bytes(&mut self, len: usize) -> Result<Bytes, DecodeError> {
        self.need(len)?;
        Ok(self.take_bytes(len))
    }

    /// Takes the next `N` bytes by value.
    #[inline]
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let Some(&bytes) = self.rest().first_chunk::<N>() else {
            return Err(self.truncated(N));
        };
        self.advance(N);
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
            *bit = self.data[i / 8] & (1 << (i % 8)) != 0;
        }
        self.advance(octets);
        Ok(bits)
    }

    /// Reads a `shortstr`: a length octet and that many bytes of UTF-8.
    #[inline]
    pub fn short_string(&mut self) -> Result<ShortString, DecodeError> {
        // The common case, small enough to inline: an ASCII string of at most 31 bytes, with
        // at least 32 bytes from its length octet in the buffer.
        if let Some(field) = self.data.first_chunk() {
            let len = usize::from(field[0]);
            if len < self.remaining
                && let Some(string) = ShortString::from_short_ascii(field)
            {
                self.advance(1 + len);
                return Ok(string);
            }
        }
        self.any_short_string()
    }

    /// Reads a `shortstr` of any kind: what [`Reader::short_string`] does not do in line.
    #[inline(never)]
    fn any_short_string(&mut self) -> Result<ShortString, DecodeError> {
        let field = self.data;
        let len = usize::from(self.octet()?);
        self.need(len)?;
        let string = ShortString::from_wire(field)?;
        self.advance(len);
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
        check::table(&self.data[..len], 1)?;
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
        self.advance(len);
        Ok(())
    }

    /// Takes the next `len` bytes, which [`check::table`] accepted, as a table.
    fn checked_table(&mut self, len: usize) -> FieldTable {
        if len == 0 {
            return FieldTable::new();
        }
        FieldTable::from_checked_wire(self.take_bytes(len))
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
        self.need(len)?;
        let mut values = Reader {
            data: self.data,
            remaining: len,
            shared: self.shared,
        };
        self.advance(len);
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
            // `U` and `L`: the specification's tags for `s` and `l` (see `table.rs`).
            b's' | b'U' => FieldValue::I16(self.short()? as i16),
            b'u' => FieldValue::U16(self.short()?),
            b'I' => FieldValue::I32(self.long()? as i32),
            b'i' => FieldValue::U32(self.long()?),
            b'l' | b'L' => FieldValue::I64(self.longlong()? as i64),
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
