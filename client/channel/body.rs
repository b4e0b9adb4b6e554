//! The body of a publish: bytes the application owns and hands over, or bytes it lends.

use bytes::{Bytes, BytesMut};

/// Borrowed bodies shorter than this are encoded straight after the content header, in the
/// channel's encode buffer: one copy and no allocation. Longer ones are copied into a
/// [`Bytes`] of their own, which the connection writes without copying again (it copies body
/// frames under 4 KiB into its write buffer, and writes larger ones from the body itself).
pub(crate) const INLINE_MAX: usize = 4096;

/// The body of a message to publish, as [`Channel::basic_publish`](crate::Channel::basic_publish)
/// takes it: anything that converts into one.
///
/// - **Owned** bytes are sent as they are, without copying the large ones: [`Bytes`] (also
///   `&Bytes`, a reference-counted clone), `Vec<u8>`, `String`, `Box<[u8]>`, [`BytesMut`].
/// - **Borrowed** bytes, `&str`, `&[u8]`, `&[u8; N]`, `&String`, `&Vec<u8>`, of any lifetime,
///   are copied before `basic_publish` returns, so the borrow ends with the call. A string
///   literal is borrowed too: to publish a large constant body without copying it, wrap it in
///   [`Bytes::from_static`].
///
/// ```no_run
/// # async fn example(channel: warren::Channel) -> Result<(), warren::Error> {
/// use warren::{BasicProperties, BasicPublishOptions};
///
/// let order = format!("order {}", 42);
/// // Borrowed: copied, so `order` can be changed or dropped right after.
/// channel
///     .basic_publish("", "orders", BasicPublishOptions::default(), &order, BasicProperties::default())
///     .await?;
/// // Owned: the buffer is handed over.
/// channel
///     .basic_publish("", "orders", BasicPublishOptions::default(), order, BasicProperties::default())
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body<'a>(Repr<'a>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Repr<'a> {
    Shared(Bytes),
    Borrowed(&'a [u8]),
}

impl<'a> Body<'a> {
    /// Length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes.
    #[inline]
    pub fn as_slice(&self) -> &[u8] {
        match &self.0 {
            Repr::Shared(bytes) => bytes,
            Repr::Borrowed(slice) => slice,
        }
    }

    /// The body as the publish path takes it: the bytes to hand to the connection, or, for a
    /// borrowed body short enough to copy into the encode buffer after the content header,
    /// no bytes and that slice.
    #[inline]
    pub(crate) fn into_parts(self) -> (Bytes, Option<&'a [u8]>) {
        match self.0 {
            Repr::Shared(bytes) => (bytes, None),
            Repr::Borrowed(slice) if slice.len() < INLINE_MAX => (Bytes::new(), Some(slice)),
            Repr::Borrowed(slice) => (Bytes::copy_from_slice(slice), None),
        }
    }

    /// The body as [`Bytes`]: owned bytes as they are, borrowed ones copied.
    pub fn into_bytes(self) -> Bytes {
        match self.0 {
            Repr::Shared(bytes) => bytes,
            Repr::Borrowed(slice) => Bytes::copy_from_slice(slice),
        }
    }
}

impl From<Bytes> for Body<'_> {
    #[inline]
    fn from(bytes: Bytes) -> Self {
        Self(Repr::Shared(bytes))
    }
}

impl From<&Bytes> for Body<'_> {
    #[inline]
    fn from(bytes: &Bytes) -> Self {
        Self(Repr::Shared(bytes.clone()))
    }
}

impl From<BytesMut> for Body<'_> {
    #[inline]
    fn from(bytes: BytesMut) -> Self {
        Self(Repr::Shared(bytes.freeze()))
    }
}

impl From<Vec<u8>> for Body<'_> {
    #[inline]
    fn from(bytes: Vec<u8>) -> Self {
        Self(Repr::Shared(Bytes::from(bytes)))
    }
}

impl From<Box<[u8]>> for Body<'_> {
    #[inline]
    fn from(bytes: Box<[u8]>) -> Self {
        Self(Repr::Shared(Bytes::from(bytes)))
    }
}

impl From<String> for Body<'_> {
    #[inline]
    fn from(text: String) -> Self {
        Self(Repr::Shared(Bytes::from(text)))
    }
}

impl<'a> From<&'a [u8]> for Body<'a> {
    #[inline]
    fn from(bytes: &'a [u8]) -> Self {
        Self(Repr::Borrowed(bytes))
    }
}

impl<'a, const N: usize> From<&'a [u8; N]> for Body<'a> {
    #[inline]
    fn from(bytes: &'a [u8; N]) -> Self {
        Self(Repr::Borrowed(bytes))
    }
}

impl<'a> From<&'a Vec<u8>> for Body<'a> {
    #[inline]
    fn from(bytes: &'a Vec<u8>) -> Self {
        Self(Repr::Borrowed(bytes))
    }
}

impl<'a> From<&'a str> for Body<'a> {
    #[inline]
    fn from(text: &'a str) -> Self {
        Self(Repr::Borrowed(text.as_bytes()))
    }
}

impl<'a> From<&'a String> for Body<'a> {
    #[inline]
    fn from(text: &'a String) -> Self {
        Self(Repr::Borrowed(text.as_bytes()))
    }
}
