//! AMQP's two string types: `shortstr` (UTF-8, at most 255 bytes) and `longstr` (any bytes).
//!
//! A [`ShortString`] holds its bytes itself (inline up to 31 bytes, else in a shared allocation),
//! so one decoded from a frame never keeps the frame alive; a [`LongString`] is backed by
//! [`Bytes`], so decoding one can be a reference-counted slice of the frame that carried it.
//! Either made from a `&'static str` is not copied.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use bytes::Bytes;

use super::DecodeError;

/// An AMQP short string: valid UTF-8 of at most [`ShortString::MAX_LEN`] bytes.
///
/// Exchange and queue names, routing keys, consumer tags and most message properties are short
/// strings. The length limit is part of the type: a `ShortString` that exists can always be encoded.
///
/// A `ShortString` takes 32 bytes, and so does an `Option<ShortString>`. Strings of up to 31
/// bytes (names, keys, the consumer tags RabbitMQ generates) are stored inline, so decoding
/// one copies a few bytes and touches no allocator or shared counter; longer ones are copied
/// once into a shared allocation, which clones share. Literals are never copied. A decoded
/// string never keeps the frame it came in alive.
///
/// ```
/// use warren::wire::ShortString;
///
/// let queue = ShortString::from_static("orders");
/// let key: ShortString = format!("orders.{}", 42).try_into()?;
/// assert_eq!(key, "orders.42");
/// assert!(ShortString::try_from("x".repeat(256)).is_err());
/// # Ok::<(), warren::wire::ShortStringTooLong>(())
/// ```
#[derive(Clone)]
pub struct ShortString(Repr);

/// Longest string stored inline: with its length octet it fills the 32 bytes the type takes.
const INLINE_MAX: usize = 31;

#[derive(Clone)]
enum Repr {
    Inline(Inline),
    Static(&'static str),
    Heap(Arc<str>),
}

/// A string of at most [`INLINE_MAX`] bytes, laid out as AMQP puts a short string on the wire:
/// its length octet, then its bytes. The bytes past `len` are unspecified and never read.
#[derive(Clone, Copy)]
#[repr(C)]
struct Inline {
    len: InlineLen,
    bytes: [u8; INLINE_MAX],
}

/// Declares [`InlineLen`], whose values are the lengths 0 to [`INLINE_MAX`], and the table
/// that maps a length to its value.
macro_rules! inline_len {
    ($($variant:ident = $len:literal),* $(,)?) => {
        /// The length of an inline string, as a type with only the values 0 to [`INLINE_MAX`]:
        /// the other 224 values of its byte are a niche, which the compiler uses to tell the
        /// variants of [`Repr`] and an `Option<ShortString>`'s `None` apart without a field of
        /// their own.
        #[derive(Clone, Copy)]
        #[repr(u8)]
        enum InlineLen {
            $($variant = $len),*
        }

        /// `INLINE_LENS[n]` is the length `n`.
        const INLINE_LENS: [InlineLen; INLINE_MAX + 1] = [$(InlineLen::$variant),*];
    };
}

inline_len! {
    L0 = 0, L1 = 1, L2 = 2, L3 = 3, L4 = 4, L5 = 5, L6 = 6, L7 = 7, L8 = 8, L9 = 9, L10 = 10,
    L11 = 11, L12 = 12, L13 = 13, L14 = 14, L15 = 15, L16 = 16, L17 = 17, L18 = 18, L19 = 19,
    L20 = 20, L21 = 21, L22 = 22, L23 = 23, L24 = 24, L25 = 25, L26 = 26, L27 = 27, L28 = 28,
    L29 = 29, L30 = 30, L31 = 31,
}

// The niche at work: neither the variants nor `Option` make the type larger than its inline
// form.
const _: () = assert!(std::mem::size_of::<ShortString>() == 32);
const _: () = assert!(std::mem::size_of::<Option<ShortString>>() == 32);

impl ShortString {
    /// The longest short string AMQP can carry, in bytes.
    pub const MAX_LEN: usize = 255;

    /// Wraps a string literal without copying it.
    ///
    /// # Panics
    ///
    /// If `s` is longer than [`ShortString::MAX_LEN`] bytes. In a `const` this is a compile-time
    /// error; use [`ShortString::try_from`] for strings that are not literals.
    pub const fn from_static(s: &'static str) -> Self {
        assert!(
            s.len() <= Self::MAX_LEN,
            "an AMQP short string holds at most 255 bytes"
        );
        Self(Repr::Static(s))
    }

    /// `s`, which is at most 255 bytes of UTF-8: inline if it is short enough, else copied to
    /// the heap. Out of line, so that decoding's common path stays one fixed-size move.
    #[inline(never)]
    fn copy_of(s: &str) -> Self {
        match INLINE_LENS.get(s.len()) {
            Some(&len) => {
                let mut bytes = [0; INLINE_MAX];
                bytes[..s.len()].copy_from_slice(s.as_bytes());
                Self(Repr::Inline(Inline { len, bytes }))
            }
            None => Self(Repr::Heap(Arc::from(s))),
        }
    }

    /// Decodes the `shortstr` field at the start of `field` if it is ASCII and at most
    /// [`INLINE_MAX`] bytes (`None` otherwise, for [`ShortString::from_wire`] to decode):
    /// one fixed-size move, and a check of four words. The caller has checked that the field
    /// lies within its payload; the bytes after it are not read as part of the string.
    #[inline]
    pub(crate) fn from_short_ascii(field: &[u8; size_of::<Inline>()]) -> Option<Self> {
        let len = usize::from(field[0]);
        // The length octet itself is ASCII when `len` fits inline.
        if len > INLINE_MAX || first_non_ascii(field) <= len {
            return None;
        }
        // SAFETY: `Inline` is `repr(C)`, a length octet and `INLINE_MAX` bytes with no
        // padding, as large as `field`; its first octet is `len`, at most `INLINE_MAX`, so a
        // valid `InlineLen`, and any bytes are valid for the rest. The string's bytes are
        // ASCII, so UTF-8.
        Some(Self(Repr::Inline(unsafe {
            std::mem::transmute::<[u8; 32], Inline>(*field)
        })))
    }

    /// Decodes a `shortstr` field as it is on the wire: `field` starts with the length octet,
    /// and may extend past the string (the bytes after it are not read as part of it).
    #[inline]
    pub(crate) fn from_wire(field: &[u8]) -> Result<Self, DecodeError> {
        let len = field.first().map_or(0, |&len| usize::from(len));
        let Some(bytes) = field.get(1..=len) else {
            return Err(DecodeError::Truncated {
                needed: len + 1,
                remaining: field.len(),
            });
        };
        // Names, keys and tags are nearly always ASCII, which a word-at-a-time check confirms
        // far faster than the general UTF-8 validator.
        if !bytes.is_ascii() && std::str::from_utf8(bytes).is_err() {
            return Err(DecodeError::InvalidUtf8);
        }
        match field.first_chunk::<{ size_of::<Inline>() }>() {
            // The field as it is, in one fixed-size move: what makes decoding fast.
            // SAFETY: `Inline` is `repr(C)`, a length octet and `INLINE_MAX` bytes with no
            // padding, as large as the chunk; the chunk's first octet is `len`, at most
            // `INLINE_MAX` here, so a valid `InlineLen`, and any bytes are valid for the rest.
            Some(&chunk) if len <= INLINE_MAX => Ok(Self(Repr::Inline(unsafe {
                std::mem::transmute::<[u8; 32], Inline>(chunk)
            }))),
            // Too long to store inline, or too near the end of the input for the fixed move.
            // SAFETY: checked to be UTF-8 above.
            _ => Ok(Self::copy_of(unsafe {
                std::str::from_utf8_unchecked(bytes)
            })),
        }
    }

    /// The string.
    #[inline]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // SAFETY: inline bytes are only ever copied from a `str` or from input validated
            // as UTF-8 (`from_wire`), up to `len`, and never mutated.
            Repr::Inline(Inline { len, bytes }) => unsafe {
                std::str::from_utf8_unchecked(&bytes[..*len as usize])
            },
            Repr::Static(s) => s,
            Repr::Heap(s) => s,
        }
    }

    /// The UTF-8 bytes.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        self.as_str().as_bytes()
    }

    /// Length in bytes (0 to 255).
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// Whether the string is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The UTF-8 bytes as [`Bytes`] (a copy unless the string is a literal).
    pub fn into_bytes(self) -> Bytes {
        match self.0 {
            Repr::Static(s) => Bytes::from_static(s.as_bytes()),
            _ => Bytes::copy_from_slice(self.as_bytes()),
        }
    }
}

/// The index of the first byte of `bytes` that is not ASCII, or 32 if all are: a word at a
/// time, without a loop over bytes.
#[inline]
fn first_non_ascii(bytes: &[u8; 32]) -> usize {
    const HIGH_BITS: u64 = u64::from_ne_bytes([0x80; 8]);
    let (words, _) = bytes.as_chunks::<8>();
    for (i, word) in words.iter().enumerate() {
        let high = u64::from_le_bytes(*word) & HIGH_BITS;
        if high != 0 {
            return i * 8 + high.trailing_zeros() as usize / 8;
        }
    }
    32
}

impl Default for ShortString {
    fn default() -> Self {
        Self::from_static("")
    }
}

impl PartialEq for ShortString {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for ShortString {}

impl PartialOrd for ShortString {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ShortString {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl std::hash::Hash for ShortString {
    /// Hashes like `str`, as `Borrow<str>` requires.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

/// A string was too long to be an AMQP short string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "string of {len} bytes is too long for an AMQP short string (at most 255 bytes); shorten \
     the name, key or property"
)]
pub struct ShortStringTooLong {
    /// Length of the rejected string, in bytes.
    pub len: usize,
}

impl TryFrom<&str> for ShortString {
    type Error = ShortStringTooLong;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        if s.len() > Self::MAX_LEN {
            return Err(ShortStringTooLong { len: s.len() });
        }
        Ok(Self::copy_of(s))
    }
}

impl TryFrom<&String> for ShortString {
    type Error = ShortStringTooLong;

    fn try_from(s: &String) -> Result<Self, Self::Error> {
        Self::try_from(s.as_str())
    }
}

impl TryFrom<String> for ShortString {
    type Error = ShortStringTooLong;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        if s.len() > Self::MAX_LEN {
            return Err(ShortStringTooLong { len: s.len() });
        }
        Ok(Self::copy_of(&s))
    }
}

/// A value a [`ShortString`] can be made from, with the 255-byte limit checked: `&str`,
/// `String`, `&String`, `ShortString` or `&ShortString`.
///
/// The chainable setters of [`BasicProperties`](crate::protocol::BasicProperties) take one,
/// so that `with_content_type("text/plain")` and `with_reply_to(queue.name.clone())` both read
/// naturally.
pub trait IntoShortString {
    /// The short string, or how long the string was if it is over 255 bytes.
    fn into_short_string(self) -> Result<ShortString, ShortStringTooLong>;
}

impl IntoShortString for &str {
    fn into_short_string(self) -> Result<ShortString, ShortStringTooLong> {
        ShortString::try_from(self)
    }
}

impl IntoShortString for String {
    fn into_short_string(self) -> Result<ShortString, ShortStringTooLong> {
        ShortString::try_from(self)
    }
}

impl IntoShortString for &String {
    fn into_short_string(self) -> Result<ShortString, ShortStringTooLong> {
        ShortString::try_from(self.as_str())
    }
}

impl IntoShortString for ShortString {
    fn into_short_string(self) -> Result<ShortString, ShortStringTooLong> {
        Ok(self)
    }
}

impl IntoShortString for &ShortString {
    fn into_short_string(self) -> Result<ShortString, ShortStringTooLong> {
        Ok(self.clone())
    }
}

/// A value a properties setter could not store (see [`IntoShortString`]): the property, and
/// the length of the string that does not fit in an AMQP short string.
///
/// Kept in the properties' `invalid` field; publishing them fails with
/// [`Error::InvalidArgument`](crate::Error::InvalidArgument) and this text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "message property `{property}` cannot hold a string of {len} bytes: AMQP short strings hold \
     at most 255 bytes"
)]
pub struct InvalidProperty {
    /// The property, as its field is named (`content_type`; `headers` for a header name).
    pub property: &'static str,
    /// Length of the refused string, in bytes.
    pub len: usize,
}

impl InvalidProperty {
    /// The record of `error`, which happened setting `property`.
    pub fn new(property: &'static str, error: ShortStringTooLong) -> Self {
        Self {
            property,
            len: error.len,
        }
    }
}

impl From<ShortString> for String {
    fn from(s: ShortString) -> Self {
        s.as_str().to_owned()
    }
}

impl Deref for ShortString {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for ShortString {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for ShortString {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq<str> for ShortString {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ShortString {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<ShortString> for str {
    fn eq(&self, other: &ShortString) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<ShortString> for &str {
    fn eq(&self, other: &ShortString) -> bool {
        *self == other.as_str()
    }
}

impl fmt::Debug for ShortString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for ShortString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An AMQP long string: any bytes, up to 4 GiB on the wire.
///
/// AMQP does not require long strings to be UTF-8, and RabbitMQ relays whatever publishers put in
/// them, so they are kept as bytes. [`LongString::to_str`] gives the text when it is UTF-8.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LongString(Bytes);

impl LongString {
    /// Wraps a string literal without copying it.
    pub const fn from_static(s: &'static str) -> Self {
        Self(Bytes::from_static(s.as_bytes()))
    }

    /// The bytes, shared without copying.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// The text, if the bytes are UTF-8.
    pub fn to_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the string is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Unwraps the bytes.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl From<Bytes> for LongString {
    fn from(bytes: Bytes) -> Self {
        Self(bytes)
    }
}

impl From<Vec<u8>> for LongString {
    fn from(bytes: Vec<u8>) -> Self {
        Self(Bytes::from(bytes))
    }
}

impl From<&[u8]> for LongString {
    fn from(bytes: &[u8]) -> Self {
        Self(Bytes::copy_from_slice(bytes))
    }
}

impl From<&str> for LongString {
    fn from(s: &str) -> Self {
        Self(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<String> for LongString {
    fn from(s: String) -> Self {
        Self(Bytes::from(s.into_bytes()))
    }
}

impl From<ShortString> for LongString {
    fn from(s: ShortString) -> Self {
        Self(s.into_bytes())
    }
}

impl AsRef<[u8]> for LongString {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl PartialEq<str> for LongString {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for LongString {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<[u8]> for LongString {
    fn eq(&self, other: &[u8]) -> bool {
        self.0 == other
    }
}

impl fmt::Debug for LongString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_str() {
            Some(text) => fmt::Debug::fmt(text, f),
            None => write!(f, "b\"{}\"", self.0.escape_ascii()),
        }
    }
}

impl fmt::Display for LongString {
    /// Shows the text, with invalid UTF-8 replaced by U+FFFD.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_string_enforces_255_bytes() {
        assert!(ShortString::try_from("a".repeat(255)).is_ok());
        assert_eq!(
            ShortString::try_from("a".repeat(256).as_str()),
            Err(ShortStringTooLong { len: 256 })
        );
    }

    /// `text` as a `shortstr` field, followed by `after` more bytes.
    fn field(text: &[u8], after: usize) -> Vec<u8> {
        let mut field = vec![text.len() as u8];
        field.extend_from_slice(text);
        field.resize(field.len() + after, b'#');
        field
    }

    #[test]
    fn short_string_from_wire_rejects_invalid_utf8_and_truncation() {
        let wire = |text: &[u8]| ShortString::from_wire(&field(text, 0));
        assert_eq!(wire(b"\xff\xfe"), Err(DecodeError::InvalidUtf8));
        assert_eq!(wire(&[b'a'; 40]).unwrap(), "a".repeat(40).as_str());
        assert_eq!(wire(b"ok").unwrap(), "ok");
        assert_eq!(wire("caf\u{e9}".as_bytes()).unwrap(), "caf\u{e9}");
        let truncated = DecodeError::Truncated {
            needed: 6,
            remaining: 3,
        };
        assert_eq!(ShortString::from_wire(b"\x05ab"), Err(truncated));
        assert!(ShortString::from_wire(b"").is_err());
    }

    #[test]
    fn short_string_from_wire_keeps_only_its_own_bytes_at_every_length() {
        let text: Vec<u8> = (0..255u8).map(|i| b'a' + i % 26).collect();
        for len in [0, 1, 5, 30, 31, 32, 33, 200, 255] {
            let expected = std::str::from_utf8(&text[..len]).unwrap();
            // With input to spare after the string (the fixed-size move), and ending with it.
            for after in [0, 1, 40] {
                let decoded = ShortString::from_wire(&field(&text[..len], after)).unwrap();
                assert_eq!(decoded, expected, "len {len}, {after} bytes after");
                assert_eq!(decoded.len(), len);
            }
        }
    }

    #[test]
    fn reading_a_short_string_ignores_what_follows_it_whatever_its_bytes() {
        let texts = [
            "",
            "q",
            "orders.created.eu",
            "caf\u{e9}",
            &"z".repeat(31),
            &"y".repeat(32),
        ];
        for text in texts {
            for after in [0, 1, 40] {
                // Bytes after the string that are not ASCII must not send it down a wrong path.
                let mut bytes = field(text.as_bytes(), 0);
                bytes.resize(bytes.len() + after, 0xFF);
                let mut input = crate::wire::Reader::from_slice(&bytes);
                assert_eq!(input.short_string().unwrap(), text, "{after} bytes after");
                assert_eq!(input.remaining(), after);
            }
        }
    }

    #[test]
    fn first_non_ascii_finds_the_first_high_bit_in_every_word() {
        let mut bytes = [b'a'; 32];
        assert_eq!(first_non_ascii(&bytes), 32);
        for at in [31, 17, 8, 7, 0] {
            bytes[at] = 0x80;
            assert_eq!(first_non_ascii(&bytes), at);
        }
    }

    #[test]
    fn decoded_strings_do_not_borrow_their_input() {
        for len in [3, 31, 200] {
            let input = field(&vec![b'b'; len], 40);
            let decoded = ShortString::from_wire(&input).unwrap();
            assert!(
                !input.as_ptr_range().contains(&decoded.as_bytes().as_ptr()),
                "a string of {len} bytes points into the frame"
            );
        }
    }

    #[test]
    fn every_form_of_a_short_string_compares_and_hashes_by_its_text() {
        use std::hash::BuildHasher;
        let hasher = std::hash::RandomState::new();
        const LONG: &str = "a literal longer than the thirty-one bytes stored inline";
        for text in ["", "orders", LONG] {
            let forms = [
                ShortString::from_static(text),
                ShortString::try_from(text).unwrap(),
                ShortString::try_from(text.to_owned()).unwrap(),
                ShortString::from_wire(&field(text.as_bytes(), 0)).unwrap(),
            ];
            for form in &forms {
                assert_eq!(form, &forms[0]);
                assert_eq!(form.clone(), text);
                assert_eq!(hasher.hash_one(form), hasher.hash_one(text));
                assert_eq!(form.clone().into_bytes(), text.as_bytes());
            }
        }
    }

    #[test]
    fn long_string_debug_shows_text_or_escaped_bytes() {
        assert_eq!(format!("{:?}", LongString::from("hi")), "\"hi\"");
        assert_eq!(
            format!("{:?}", LongString::from(vec![0xff, b'a'])),
            "b\"\\xffa\""
        );
    }
}
