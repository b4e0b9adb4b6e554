//! AMQP's two string types: `shortstr` (UTF-8, at most 255 bytes) and `longstr` (any bytes).
//!
//! Both are backed by [`Bytes`], so decoding one is a reference-counted slice of the frame that
//! carried it, and a `&'static str` becomes one without copying.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

use bytes::Bytes;

use super::DecodeError;

/// An AMQP short string: valid UTF-8 of at most [`ShortString::MAX_LEN`] bytes.
///
/// Exchange and queue names, routing keys, consumer tags and most message properties are short
/// strings. The length limit is part of the type: a `ShortString` that exists can always be encoded.
///
/// Strings of up to 23 bytes (most names and keys) are stored inline, so decoding one copies a
/// few bytes and touches no shared counter; longer ones are reference-counted slices of the
/// frame they came in. Literals are never copied.
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

/// Longest string stored inline: with its length octet it fills the space a `Bytes` takes.
const INLINE_MAX: usize = 23;

#[derive(Clone)]
enum Repr {
    Inline { len: u8, bytes: [u8; INLINE_MAX] },
    Shared(Bytes),
}

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
        Self(Repr::Shared(Bytes::from_static(s.as_bytes())))
    }

    /// Copies `s` inline if it is short enough.
    fn inline(s: &[u8]) -> Option<Self> {
        if s.len() > INLINE_MAX {
            return None;
        }
        let mut bytes = [0; INLINE_MAX];
        bytes[..s.len()].copy_from_slice(s);
        Some(Self(Repr::Inline {
            len: s.len() as u8,
            bytes,
        }))
    }

    /// Validates the first `len` bytes of `input`, which holds at least that many, read from
    /// the wire (`len` is at most 255). `shared` slices them out of the frame when they are too
    /// long to store inline.
    #[inline]
    pub(crate) fn from_wire(
        input: &[u8],
        len: usize,
        shared: impl FnOnce() -> Bytes,
    ) -> Result<Self, DecodeError> {
        let bytes = &input[..len];
        // Names, keys and tags are nearly always ASCII, which a word-at-a-time check confirms
        // far faster than the general UTF-8 validator.
        if !bytes.is_ascii() && std::str::from_utf8(bytes).is_err() {
            return Err(DecodeError::InvalidUtf8);
        }
        if len > INLINE_MAX {
            return Ok(Self(Repr::Shared(shared())));
        }
        let mut inline = [0; INLINE_MAX];
        match input.get(..INLINE_MAX) {
            // A fixed-size copy is a few moves; the bytes past `len` are never read.
            Some(ahead) => inline.copy_from_slice(ahead),
            None => inline[..len].copy_from_slice(bytes),
        }
        Ok(Self(Repr::Inline {
            len: len as u8,
            bytes: inline,
        }))
    }

    /// The string.
    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor checks that the bytes are UTF-8 (`from_static` takes a `str`,
        // `from_wire` and the `TryFrom` impls validate), and the bytes are never mutated.
        unsafe { std::str::from_utf8_unchecked(self.as_bytes()) }
    }

    /// The UTF-8 bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Repr::Shared(bytes) => bytes,
        }
    }

    /// Length in bytes (0 to 255).
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// Whether the string is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The UTF-8 bytes as [`Bytes`] (a copy only for strings stored inline).
    pub fn into_bytes(self) -> Bytes {
        match self.0 {
            Repr::Inline { len, bytes } => Bytes::copy_from_slice(&bytes[..usize::from(len)]),
            Repr::Shared(bytes) => bytes,
        }
    }
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShortStringTooLong {
    /// Length of the rejected string, in bytes.
    pub len: usize,
}

impl fmt::Display for ShortStringTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "string of {} bytes is too long for an AMQP short string (at most 255 bytes); \
             shorten the name, key or property",
            self.len
        )
    }
}

impl std::error::Error for ShortStringTooLong {}

impl TryFrom<&str> for ShortString {
    type Error = ShortStringTooLong;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        if s.len() > Self::MAX_LEN {
            return Err(ShortStringTooLong { len: s.len() });
        }
        Ok(Self::inline(s.as_bytes())
            .unwrap_or_else(|| Self(Repr::Shared(Bytes::copy_from_slice(s.as_bytes())))))
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
        Ok(Self::inline(s.as_bytes())
            .unwrap_or_else(|| Self(Repr::Shared(Bytes::from(s.into_bytes())))))
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

    #[test]
    fn short_string_from_wire_rejects_invalid_utf8() {
        let wire = |b: &'static [u8]| ShortString::from_wire(b, b.len(), || Bytes::from_static(b));
        assert_eq!(wire(b"\xff\xfe"), Err(DecodeError::InvalidUtf8));
        assert_eq!(wire(b"ok").unwrap(), "ok");
        assert_eq!(wire("caf\u{e9}".as_bytes()).unwrap(), "caf\u{e9}");
        let long = "a".repeat(200);
        let shared = Bytes::from(long.clone());
        let decoded = ShortString::from_wire(&shared, shared.len(), || shared.clone()).unwrap();
        // A short string read from a longer input keeps only its own bytes.
        let prefix = ShortString::from_wire(&shared, 5, || shared.slice(..5)).unwrap();
        assert_eq!(prefix, "aaaaa");
        assert_eq!(prefix.len(), 5);
        assert_eq!(decoded, long.as_str());
        assert_eq!(
            decoded.into_bytes().as_ptr(),
            shared.as_ptr(),
            "long strings are not copied"
        );
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
