//! How a connection recovers after it was lost: whether it does, and how often it retries.

use std::time::Duration;

/// Automatic recovery: what a connection does when it is lost without the application asking
/// (an I/O error, the broker closing it, a missed heartbeat, a protocol violation).
///
/// On by default. The connection reconnects with the same options, credentials (including
/// the latest [`Connection::update_secret`](crate::Connection::update_secret)) and TLS
/// settings, then reopens its channels under the same handles with their prefetch, confirm
/// and transaction modes, declares its exchanges, queues and bindings again and restarts its
/// consumers, feeding the same [`Consumer`](crate::Consumer) streams. See the "Recovery"
/// section of the README for what comes back and what in-flight work gets.
///
/// Attempts are spaced by exponential backoff with full jitter: before attempt `n` (from 1)
/// the connection waits a random time between zero and
/// `min(max_delay, initial_delay × multiplier^(n-1))`, and each attempt is bounded by the
/// connection timeout. It gives up after `max_attempts` attempts or `max_duration` since the
/// loss, whichever comes first (by default it never gives up); the connection is then closed
/// with [`Error::RecoveryFailed`](crate::Error::RecoveryFailed), which holds the last error.
///
/// ```
/// use std::time::Duration;
/// use warren::{ConnectionOptions, RecoveryPolicy};
///
/// let options = ConnectionOptions::new().recovery(
///     RecoveryPolicy::default()
///         .initial_delay(Duration::from_millis(200))
///         .max_delay(Duration::from_secs(10))
///         .max_attempts(20),
/// );
/// let no_recovery = ConnectionOptions::new().recovery(RecoveryPolicy::disabled());
/// # let _ = (options, no_recovery);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RecoveryPolicy {
    enabled: bool,
    topology: bool,
    initial_delay: Duration,
    max_delay: Duration,
    multiplier: f64,
    max_attempts: Option<u32>,
    max_duration: Option<Duration>,
    failover_delay: Duration,
}

impl Default for RecoveryPolicy {
    /// Enabled, topology included; backoff from 100 ms, doubling, up to 30 s; no limit; at
    /// least 1 s before moving to another node.
    fn default() -> Self {
        Self {
            enabled: true,
            topology: true,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(30),
            multiplier: 2.0,
            max_attempts: None,
            max_duration: None,
            failover_delay: Duration::from_secs(1),
        }
    }
}

impl RecoveryPolicy {
    /// No recovery: a lost connection is closed, as [`Connection::closed`](crate::Connection::closed)
    /// then reports.
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }

    /// Turns recovery on or off.
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Whether to declare the recorded exchanges, queues and bindings again and restart the
    /// consumers (default `true`). Without it only the connection and its channels come back.
    pub fn topology(mut self, topology: bool) -> Self {
        self.topology = topology;
        self
    }

    /// The upper bound of the first attempt's random delay (default 100 ms).
    pub fn initial_delay(mut self, delay: Duration) -> Self {
        self.initial_delay = delay;
        self
    }

    /// The largest upper bound of a delay (default 30 s).
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// How much the delay's bound grows per attempt (default 2; values below 1 count as 1).
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// Gives up after this many attempts (default: never).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// Gives up when this long has passed since the connection was lost (default: never).
    pub fn max_duration(mut self, duration: Duration) -> Self {
        self.max_duration = Some(duration);
        self
    }

    /// The least time to wait before connecting to another node than the one the connection
    /// was lost on (default 1 s; zero to move at once).
    ///
    /// A node's death moves the leaders of its quorum queues to other nodes, which takes the
    /// cluster a few hundred milliseconds to agree on. RabbitMQ before 3.11 has a channel
    /// that first uses a quorum queue within that time talk to the dead leader for good
    /// (rabbitmq-server#9241): every publish is nacked and nothing is delivered, on that
    /// channel only. Waiting this long before restoring on another node avoids it; on a
    /// single node, or when the lost node answers again, there is no wait.
    pub fn failover_delay(mut self, delay: Duration) -> Self {
        self.failover_delay = delay;
        self
    }

    /// The least delay before connecting to another node.
    pub fn get_failover_delay(&self) -> Duration {
        self.failover_delay
    }

    /// Whether a lost connection recovers.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Whether recovery restores the topology and consumers.
    pub fn recovers_topology(&self) -> bool {
        self.topology
    }

    /// The attempt limit, if any.
    pub fn get_max_attempts(&self) -> Option<u32> {
        self.max_attempts
    }

    /// The time limit, if any.
    pub fn get_max_duration(&self) -> Option<Duration> {
        self.max_duration
    }

    /// The bound of the random delay before attempt `attempt` (from 1).
    pub fn delay_bound(&self, attempt: u32) -> Duration {
        let multiplier = self.multiplier.max(1.0);
        let exponent = attempt.saturating_sub(1).min(64) as i32;
        let bound = self.initial_delay.as_secs_f64() * multiplier.powi(exponent);
        let max = self.max_delay.as_secs_f64();
        // A bound past what a `Duration` holds (a `max_delay` of `Duration::MAX` rounds up to
        // 2^64 seconds as a float) is the maximum itself, not a panic.
        Duration::try_from_secs_f64(bound.min(max)).unwrap_or(self.max_delay)
    }

    /// Whether another attempt is allowed after `attempts` failed ones, `elapsed` after the loss.
    pub(crate) fn allows(&self, attempts: u32, elapsed: Duration) -> bool {
        self.max_attempts.is_none_or(|max| attempts < max)
            && self.max_duration.is_none_or(|max| elapsed < max)
    }
}

/// Full jitter: a random duration in `[0, bound]`.
pub(crate) fn jitter(bound: Duration) -> Duration {
    bound.mul_f64(random_unit())
}

/// A random number in `[0, 1)`, good enough to spread reconnecting clients apart (not for
/// anything secret). Seeded per call from the standard library's per-process random hash keys.
pub(crate) fn random_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    // The top 53 bits, as a fraction.
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_grows_geometrically_up_to_the_maximum() {
        let policy = RecoveryPolicy::default()
            .initial_delay(Duration::from_millis(100))
            .multiplier(2.0)
            .max_delay(Duration::from_secs(1));
        let bounds: Vec<_> = (1..=6).map(|n| policy.delay_bound(n).as_millis()).collect();
        assert_eq!(bounds, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(policy.delay_bound(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn bounds_too_large_for_a_duration_are_the_maximum() {
        let unbounded = RecoveryPolicy::default()
            .initial_delay(Duration::MAX)
            .max_delay(Duration::MAX);
        assert_eq!(unbounded.delay_bound(1), Duration::MAX);
        let growing = RecoveryPolicy::default()
            .initial_delay(Duration::from_millis(50))
            .multiplier(10.0)
            .max_delay(Duration::MAX);
        assert_eq!(growing.delay_bound(2), Duration::from_millis(500));
        assert_eq!(growing.delay_bound(u32::MAX), Duration::MAX);
        assert!(jitter(Duration::MAX) <= Duration::MAX);
    }

    #[test]
    fn jitter_stays_within_the_bound_and_varies() {
        let bound = Duration::from_secs(1);
        let delays: Vec<_> = (0..100).map(|_| jitter(bound)).collect();
        assert!(delays.iter().all(|d| *d <= bound));
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 90, "jitter should spread: {distinct:?}");
    }

    #[test]
    fn limits_stop_further_attempts() {
        let unlimited = RecoveryPolicy::default();
        assert!(unlimited.allows(1_000_000, Duration::from_secs(1_000_000)));
        let policy = RecoveryPolicy::default()
            .max_attempts(3)
            .max_duration(Duration::from_secs(10));
        assert!(policy.allows(2, Duration::from_secs(1)));
        assert!(!policy.allows(3, Duration::from_secs(1)));
        assert!(!policy.allows(1, Duration::from_secs(10)));
    }
}
