//! Encoding: appends AMQP values to a buffer.

use bytes::{BufMut, BytesMut};

use super::table::{FieldArray, FieldTable, FieldValue, Timestamp};
use super::{LongString, ShortString, WireType};

/// Appends AMQP values to a [`BytesMut`].
///
/// Writing cannot fail: every value the writer accepts is valid by construction (a
/// [`ShortString`] is at most 255 bytes). Whether the result fits in a frame is checked by the
/// frame encoder.
///
/// ```
/// use bytes::BytesMut;
/// use warren::wire::{ShortString, Writer};
///
/// let mut buf = BytesMut::new();
/// let mut out = Writer::new(&mut buf);
/// out.short(42);
/// out.short_string(&ShortString::from_static("hello"));
/// assert_eq!(&buf[..], b"\x00\x2a\x05hello");
/// ```
#[derive(Debug)]
pub struct Writer<'a> {
    buf: &'a mut BytesMut,
}

impl<'a> Writer<'a> {
    /// A writer appending to `buf`.
    pub fn new(buf: &'a mut BytesMut) -> Self {
        Self { buf }
    }

    /// Bytes in the underlying buffer, including what was there before this writer.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether the underlying buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Appends raw bytes.
    #[inline]
    pub fn raw(&mut self, bytes: &[u8]) {
        self.buf.put_slice(bytes);
    }

    /// Writes an `octet`.
    #[inline]
    pub fn octet(&mut self, value: u8) {
        self.buf.put_u8(value);
    }

    /// Writes a `short` (16 bits, big-endian).
    #[inline]
    pub fn short(&mut self, value: u16) {
        self.buf.put_u16(value);
    }

    /// Writes a `long` (32 bits, big-endian).
    #[inline]
    pub fn long(&mut self, value: u32) {
        self.buf.put_u32(value);
    }

    /// Writes a `longlong` (64 bits, big-endian).
    #[inline]
    pub fn longlong(&mut self, value: u64) {
        self.buf.put_u64(value);
    }

    /// Writes a `timestamp`.
    #[inline]
    pub fn timestamp(&mut self, value: Timestamp) {
        self.longlong(value.0);
    }

    /// Writes a run of packed bits: `ceil(N / 8)` octets, least significant bit first.
    #[inline]
    pub fn bits<const N: usize>(&mut self, bits: [bool; N]) {
        let mut octet = 0u8;
        for (i, bit) in bits.into_iter().enumerate() {
            octet |= u8::from(bit) << (i % 8);
            if i % 8 == 7 {
                self.buf.put_u8(octet);
                octet = 0;
            }
        }
        if !N.is_multiple_of(8) {
            self.buf.put_u8(octet);
        }
    }

    /// Writes a `shortstr`.
    #[inline]
    pub fn short_string(&mut self, value: &ShortString) {
        let bytes = value.as_bytes();
        // A ShortString is at most 255 bytes by construction.
        self.buf.put_u8(bytes.len() as u8);
        self.buf.put_slice(bytes);
    }

    /// Writes a `longstr`.
    #[inline]
    pub fn long_string(&mut self, value: &LongString) {
        self.long_bytes(value.as_bytes());
    }

    /// Writes a field `table`. A table received from the peer and not changed since is written
    /// back as the bytes that came in.
    ///
    /// Writing recurses once per nesting level: check a table built by hand with
    /// [`FieldTable::check_sendable`] first (the client does, for everything it sends), which
    /// refuses tables nested deeper than [`MAX_NESTING`](super::MAX_NESTING) and non-finite
    /// floats.
    pub fn table(&mut self, table: &FieldTable) {
        if let Some(wire) = table.wire() {
            // A table that arrived in a frame is shorter than u32::MAX bytes.
            self.long_bytes(wire);
            return;
        }
        let start = self.begin_sized();
        for (key, value) in table {
            self.short_string(key);
            self.value(value);
        }
        self.end_sized(start);
    }

    /// Writes the zero value of a reserved field: 0, an empty string or an empty table.
    #[inline]
    pub fn zero(&mut self, ty: WireType) {
        match ty {
            WireType::Octet | WireType::ShortStr => self.buf.put_u8(0),
            WireType::Short => self.buf.put_u16(0),
            WireType::Long | WireType::LongStr | WireType::Table => self.buf.put_u32(0),
            WireType::LongLong | WireType::Timestamp => self.buf.put_u64(0),
        }
    }

    fn long_bytes(&mut self, bytes: &[u8]) {
        self.buf.put_u32(wire_len(bytes.len()));
        self.buf.put_slice(bytes);
    }

    fn array(&mut self, array: &FieldArray) {
        let start = self.begin_sized();
        for value in &array.0 {
            self.value(value);
        }
        self.end_sized(start);
    }

    fn value(&mut self, value: &FieldValue) {
        self.buf.put_u8(value.tag());
        match value {
            FieldValue::Bool(v) => self.buf.put_u8(u8::from(*v)),
            FieldValue::I8(v) => self.buf.put_i8(*v),
            FieldValue::U8(v) => self.buf.put_u8(*v),
            FieldValue::I16(v) => self.buf.put_i16(*v),
            FieldValue::U16(v) => self.buf.put_u16(*v),
            FieldValue::I32(v) => self.buf.put_i32(*v),
            FieldValue::U32(v) => self.buf.put_u32(*v),
            FieldValue::I64(v) => self.buf.put_i64(*v),
            FieldValue::F32(v) => self.buf.put_f32(*v),
            FieldValue::F64(v) => self.buf.put_f64(*v),
            FieldValue::Decimal(d) => {
                self.buf.put_u8(d.scale);
                self.buf.put_i32(d.value);
            }
            FieldValue::LongString(s) => self.long_string(s),
            FieldValue::Array(a) => self.array(a),
            FieldValue::Timestamp(t) => self.timestamp(*t),
            FieldValue::Table(t) => self.table(t),
            FieldValue::Void => {}
            FieldValue::ByteArray(b) => self.long_bytes(b),
        }
    }

    /// Reserves a 32-bit length prefix and returns where its content starts.
    fn begin_sized(&mut self) -> usize {
        self.buf.put_u32(0);
        self.buf.len()
    }

    /// Fills in the length prefix reserved by [`Writer::begin_sized`].
    fn end_sized(&mut self, start: usize) {
        let len = wire_len(self.buf.len() - start);
        self.buf[start - 4..start].copy_from_slice(&len.to_be_bytes());
    }
}

/// A length as AMQP's 32-bit length prefix.
///
/// A value over 4 GiB cannot travel in any frame. Its prefix saturates instead of wrapping, and the
/// frame that holds it then exceeds frame_max, which the frame encoder reports as an error before
/// anything is sent.
fn wire_len(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}
