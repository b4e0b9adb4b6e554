//! How a [`Publisher`](super::Publisher) is set up: [`PublisherOptions`].

use std::time::Duration;

/// Channels a [`Publisher`](super::Publisher) opens by default.
pub const DEFAULT_PUBLISHER_CHANNELS: usize = 4;
/// Unconfirmed publishes a [`Publisher`](super::Publisher) allows by default, over all its
/// channels.
pub const DEFAULT_PUBLISHER_MAX_IN_FLIGHT: usize = 1024;

/// The settings of a [`Publisher`](super::Publisher), with [`Default`] and builder methods.
///
/// ```
/// use std::time::Duration;
/// use warren::PublisherOptions;
///
/// let options = PublisherOptions::default()
///     .channels(2)
///     .max_in_flight(256)
///     .timeout(Duration::from_secs(5))
///     .republish_attempts(3);
/// assert_eq!(options.get_channels(), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublisherOptions {
    channels: usize,
    max_in_flight: usize,
    timeout: Option<Duration>,
    republish_attempts: u32,
}

impl Default for PublisherOptions {
    fn default() -> Self {
        Self {
            channels: DEFAULT_PUBLISHER_CHANNELS,
            max_in_flight: DEFAULT_PUBLISHER_MAX_IN_FLIGHT,
            timeout: None,
            republish_attempts: 0,
        }
    }
}

impl PublisherOptions {
    /// The default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many confirm-mode channels the publisher spreads its publishes over (default
    /// [`DEFAULT_PUBLISHER_CHANNELS`]; at least 1, at most the connection's
    /// [`channel_max`](crate::Connection::channel_max)). A few are enough: each channel is served
    /// by one process on the broker, and more only cost memory.
    pub fn channels(mut self, channels: usize) -> Self {
        self.channels = channels;
        self
    }

    /// The most publishes awaiting their confirmation at once, over all the channels
    /// (default [`DEFAULT_PUBLISHER_MAX_IN_FLIGHT`]; at least 1). A publish over the limit
    /// waits, within its deadline, for an earlier one to be confirmed: this bounds the memory
    /// a fast publisher can make the client and the broker hold.
    pub fn max_in_flight(mut self, max_in_flight: usize) -> Self {
        self.max_in_flight = max_in_flight;
        self
    }

    /// The deadline of one publish, from the call until the broker's confirmation (default:
    /// the connection's operation timeout). It covers waiting for room in the in-flight
    /// window, for a blocked or recovering connection, and for the confirmation.
    /// `Duration::MAX` means no deadline.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// How many times a publish whose outcome is unknown (the connection was lost after it
    /// was sent and before the broker confirmed it) is published again on the recovered
    /// connection, within the publish's deadline. Default 0: such a publish fails with
    /// [`PublishError::OutcomeUnknown`](super::PublishError::OutcomeUnknown).
    ///
    /// **This makes delivery at-least-once**: the broker may have kept the first copy, so
    /// consumers may see a message twice and must deduplicate, on a `message_id` set by the
    /// publisher for example. A publish that caused its channel to be closed is never
    /// republished.
    pub fn republish_attempts(mut self, attempts: u32) -> Self {
        self.republish_attempts = attempts;
        self
    }

    /// See [`PublisherOptions::channels`].
    pub fn get_channels(&self) -> usize {
        self.channels
    }

    /// See [`PublisherOptions::max_in_flight`].
    pub fn get_max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// See [`PublisherOptions::timeout`]; `None` means the connection's operation timeout.
    pub fn get_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// See [`PublisherOptions::republish_attempts`].
    pub fn get_republish_attempts(&self) -> u32 {
        self.republish_attempts
    }
}
