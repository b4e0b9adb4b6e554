//! What publishing does while the broker blocks the connection: [`BlockedPolicy`].

/// What a publish does while the broker has blocked the connection (`connection.blocked`,
/// sent when a resource alarm, memory or disk, goes off on a node), set with
/// [`ConnectionOptions::blocked_policy`](crate::ConnectionOptions::blocked_policy).
///
/// A blocked broker reads nothing more from the connection until the alarm clears, which can
/// take minutes; other operations on the connection then wait within their own deadlines.
/// [`Connection::close`](crate::Connection::close) does not wait for a blocked broker: it
/// gives the broker a moment to answer, then closes the socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum BlockedPolicy {
    /// A publish waits until the broker unblocks the connection, within the channel's
    /// deadline (the operation timeout, or [`Channel::with_timeout`](crate::Channel::with_timeout);
    /// a [`Publisher`](crate::Publisher)'s own timeout), and fails with
    /// [`Error::Timeout`](crate::Error::Timeout) if that passes first. Nothing is sent while
    /// it waits. The default.
    #[default]
    Wait,
    /// A publish fails at once with [`Error::Blocked`](crate::Error::Blocked) while the
    /// connection is blocked; nothing is sent. For applications that would rather shed load,
    /// buffer elsewhere or answer their own callers with an error than wait.
    FailFast,
}
