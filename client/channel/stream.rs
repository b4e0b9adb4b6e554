//! RabbitMQ streams over AMQP 0-9-1: declaring a queue of type `stream` and consuming it from
//! an offset, with typed arguments instead of hand-written tables.
//!
//! A stream is an append-only log: consuming it does not remove messages, and each consumer
//! says where to start reading with `x-stream-offset` ([`StreamOffset`]). RabbitMQ 3.9+ serves
//! streams over AMQP 0-9-1 without a plugin, with two rules a consumer must follow: it
//! acknowledges manually (no `no_ack`), and its channel has a prefetch (`basic.qos`), which
//! bounds the messages in flight to it. [`Channel::stream_consume`] checks both before
//! sending anything; [`Channel::basic_consume`] checks them too when its arguments hold
//! `x-stream-offset`.
//!
//! Each delivery from a stream carries its offset in the `x-stream-offset` header
//! ([`Delivery::stream_offset`](crate::Delivery::stream_offset)); resume after it with
//! `StreamOffset::Offset(offset + 1)`.
//!
//! ```no_run
//! # async fn example(channel: warren::Channel) -> Result<(), warren::Error> {
//! use std::time::Duration;
//! use futures_util::StreamExt;
//! use warren::{BasicAckOptions, BasicQosOptions, StreamConsumeOptions, StreamDeclareOptions, StreamOffset};
//!
//! let options = StreamDeclareOptions {
//!     max_length_bytes: Some(1 << 30),
//!     max_age: Some(Duration::from_secs(7 * 24 * 3600)),
//!     ..Default::default()
//! };
//! channel.stream_declare("events", options).await?;
//! channel.basic_qos(100, BasicQosOptions::default()).await?;
//! let mut consumer = channel
//!     .stream_consume("events", StreamConsumeOptions::from(StreamOffset::First))
//!     .await?;
//! while let Some(delivery) = consumer.next().await {
//!     let delivery = delivery?;
//!     println!("offset {:?}: {:?}", delivery.stream_offset(), delivery.body);
//!     delivery.ack(BasicAckOptions::default()).await?;
//! }
//! # Ok(()) }
//! ```
//!
//! On automatic recovery a stream consumer resumes after the last delivery its
//! [`Consumer`] stream handed to the application: it is consumed again with `x-stream-offset`
//! = that delivery's offset + 1, so it reads nothing it handed out again (even from
//! [`StreamOffset::First`]) and skips nothing published while the connection was down (even
//! from [`StreamOffset::Next`]); deliveries it had buffered but not handed out were dropped
//! with the connection and come again. One that had handed out nothing yet is restored with
//! its original offset. A delivery counts once the stream yields it, acknowledged or not:
//! keep your own offset, and consume again from it, if what your application had taken but
//! not processed when it stopped matters.

use std::time::{Duration, SystemTime};

use super::{BasicConsumeOptions, Channel, DeclaredQueue, QueueDeclareOptions};
use crate::consumer::Consumer;
use crate::error::{Error, Result};
use crate::wire::{FieldTable, FieldValue, ShortString, Timestamp};

/// The consume argument that says where a stream consumer starts.
pub const STREAM_OFFSET_ARGUMENT: &str = "x-stream-offset";

/// Where a stream consumer starts reading (`x-stream-offset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StreamOffset {
    /// The first message still in the stream.
    First,
    /// The last chunk of the stream (a few messages before its end, then on).
    Last,
    /// Only messages published from now on (RabbitMQ's default).
    #[default]
    Next,
    /// The message at this offset (or the first one, if the stream no longer holds it).
    Offset(u64),
    /// The first chunk of messages published at or after this time (to the second; a
    /// stream stores messages in chunks, so a few earlier ones may come first).
    Timestamp(SystemTime),
}

impl StreamOffset {
    /// The `x-stream-offset` value for this offset, as RabbitMQ expects it: `first`, `last`
    /// or `next` as strings, an offset as a signed 64-bit integer, a time as a timestamp in
    /// seconds. Fails for an offset over `i64::MAX` and for a time before 1970.
    pub fn to_field_value(&self) -> Result<FieldValue> {
        Ok(match *self {
            Self::First => FieldValue::from("first"),
            Self::Last => FieldValue::from("last"),
            Self::Next => FieldValue::from("next"),
            Self::Offset(offset) => FieldValue::I64(i64::try_from(offset).map_err(|_| {
                Error::InvalidArgument(format!(
                    "stream offset {offset} is over the largest RabbitMQ takes ({})",
                    i64::MAX
                ))
            })?),
            Self::Timestamp(time) => {
                let since_epoch = time.duration_since(SystemTime::UNIX_EPOCH).map_err(|_| {
                    Error::InvalidArgument(
                        "a stream offset timestamp must not be before 1970".to_owned(),
                    )
                })?;
                FieldValue::Timestamp(Timestamp(since_epoch.as_secs()))
            }
        })
    }
}

/// Options of [`Channel::stream_declare`]: the stream's retention and storage. `None` leaves
/// a setting to the broker's default (or policy).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamDeclareOptions {
    /// Only check that the stream exists (404 closes the channel if not); create nothing.
    pub passive: bool,
    /// `x-max-length-bytes`: the size beyond which the oldest segments are removed.
    pub max_length_bytes: Option<u64>,
    /// `x-max-age`: how long messages are kept (whole seconds, at least one); older segments
    /// are removed.
    pub max_age: Option<Duration>,
    /// `x-stream-max-segment-size-bytes`: the size of the segment files on disk (retention
    /// removes whole segments; RabbitMQ's default is 500 MB).
    pub max_segment_size_bytes: Option<u64>,
    /// `x-initial-cluster-size`: on how many nodes of a cluster the stream is replicated.
    pub initial_cluster_size: Option<u32>,
    /// Further arguments, added as given (the typed fields above win over the same keys).
    pub arguments: FieldTable,
}

impl StreamDeclareOptions {
    /// The `queue.declare` options that declare this stream: durable (RabbitMQ requires it),
    /// neither exclusive nor auto-delete, with `x-queue-type = stream` and the typed
    /// arguments. Fails, before anything is sent, on a value RabbitMQ would refuse.
    pub fn to_queue_declare_options(&self) -> Result<QueueDeclareOptions> {
        let mut arguments = self.arguments.clone();
        let mut set = |key: &'static str, value: FieldValue| {
            arguments.insert(ShortString::from_static(key), value);
        };
        set("x-queue-type", FieldValue::from("stream"));
        if let Some(bytes) = self.max_length_bytes {
            set(
                "x-max-length-bytes",
                FieldValue::I64(to_i64("max_length_bytes", bytes)?),
            );
        }
        if let Some(age) = self.max_age {
            if age.as_secs() == 0 || age.subsec_nanos() != 0 {
                return Err(Error::InvalidArgument(format!(
                    "StreamDeclareOptions::max_age must be a whole number of seconds, at least \
                     one (RabbitMQ counts in seconds), not {age:?}"
                )));
            }
            set("x-max-age", FieldValue::from(format!("{}s", age.as_secs())));
        }
        if let Some(bytes) = self.max_segment_size_bytes {
            let bytes = to_i64("max_segment_size_bytes", bytes)?;
            set("x-stream-max-segment-size-bytes", FieldValue::I64(bytes));
        }
        if let Some(size) = self.initial_cluster_size {
            set("x-initial-cluster-size", FieldValue::I64(size.into()));
        }
        Ok(QueueDeclareOptions {
            passive: self.passive,
            durable: true,
            exclusive: false,
            auto_delete: false,
            arguments,
        })
    }
}

/// A size as the signed 64-bit integer RabbitMQ reads, or an error naming the option.
fn to_i64(option: &str, value: u64) -> Result<i64> {
    i64::try_from(value).map_err(|_| {
        Error::InvalidArgument(format!(
            "StreamDeclareOptions::{option} is over the largest RabbitMQ takes ({})",
            i64::MAX
        ))
    })
}

/// Options of [`Channel::stream_consume`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamConsumeOptions {
    /// Where to start reading (default: [`StreamOffset::Next`]).
    pub offset: StreamOffset,
    /// The consumer tag; empty lets the broker choose one.
    pub consumer_tag: String,
    /// Further consume arguments (e.g. `x-priority`); `x-stream-offset` comes from `offset`.
    pub arguments: FieldTable,
}

impl From<StreamOffset> for StreamConsumeOptions {
    fn from(offset: StreamOffset) -> Self {
        Self {
            offset,
            ..Default::default()
        }
    }
}

impl Channel {
    /// Declares a stream (`queue.declare` with `x-queue-type = stream`, durable), or checks
    /// that an existing one has the same arguments (a mismatch closes the channel with 406).
    pub async fn stream_declare(
        &self,
        name: &str,
        options: StreamDeclareOptions,
    ) -> Result<DeclaredQueue> {
        if name.is_empty() {
            return Err(Error::InvalidArgument(
                "a stream needs a name: RabbitMQ does not name streams".to_owned(),
            ));
        }
        self.queue_declare(name, options.to_queue_declare_options()?)
            .await
    }

    /// Consumes a stream from `options.offset` (`basic.consume` with `x-stream-offset`),
    /// acknowledging manually, as RabbitMQ requires.
    ///
    /// The channel needs a prefetch first ([`Channel::basic_qos`] with a count above 0 and
    /// `global: false`): without one this fails with [`Error::InvalidArgument`] before
    /// anything is sent, where the broker would close the channel. Acknowledge each
    /// delivery: the broker sends no more than the prefetch unacknowledged ones (acks on a
    /// stream only make room; they remove nothing).
    pub async fn stream_consume(
        &self,
        name: &str,
        options: StreamConsumeOptions,
    ) -> Result<Consumer> {
        let StreamConsumeOptions {
            offset,
            consumer_tag,
            mut arguments,
        } = options;
        arguments.insert(
            ShortString::from_static(STREAM_OFFSET_ARGUMENT),
            offset.to_field_value()?,
        );
        self.basic_consume(
            name,
            BasicConsumeOptions {
                consumer_tag,
                no_ack: false,
                arguments,
                ..Default::default()
            },
        )
        .await
    }

    /// What RabbitMQ requires of a stream consumer, checked before `basic.consume` is sent
    /// when its arguments hold `x-stream-offset`: manual acknowledgements and a prefetch.
    pub(super) fn check_stream_consume(&self, options: &BasicConsumeOptions) -> Result<()> {
        if !options.arguments.contains_key(STREAM_OFFSET_ARGUMENT) {
            return Ok(());
        }
        if options.no_ack {
            return Err(Error::InvalidArgument(
                "a stream consumer (x-stream-offset) must acknowledge manually: RabbitMQ \
                 refuses no_ack on streams"
                    .to_owned(),
            ));
        }
        let prefetch = self
            .shared()
            .prefetch
            .load(std::sync::atomic::Ordering::Acquire);
        if prefetch == 0 {
            return Err(Error::InvalidArgument(
                "a stream consumer (x-stream-offset) needs a prefetch: call \
                 channel.basic_qos(n, BasicQosOptions::default()) with n > 0 first; RabbitMQ \
                 refuses stream consumers without one"
                    .to_owned(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_the_values_rabbitmq_expects() {
        assert_eq!(
            StreamOffset::First.to_field_value().unwrap(),
            FieldValue::from("first")
        );
        assert_eq!(
            StreamOffset::Last.to_field_value().unwrap(),
            FieldValue::from("last")
        );
        assert_eq!(
            StreamOffset::Next.to_field_value().unwrap(),
            FieldValue::from("next")
        );
        assert_eq!(StreamOffset::default(), StreamOffset::Next);
        assert_eq!(
            StreamOffset::Offset(42).to_field_value().unwrap(),
            FieldValue::I64(42)
        );
        let time = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_900);
        assert_eq!(
            StreamOffset::Timestamp(time).to_field_value().unwrap(),
            FieldValue::Timestamp(Timestamp(1_700_000_000))
        );
        assert!(StreamOffset::Offset(u64::MAX).to_field_value().is_err());
        let before = SystemTime::UNIX_EPOCH - Duration::from_secs(1);
        assert!(StreamOffset::Timestamp(before).to_field_value().is_err());
    }

    #[test]
    fn declare_options_build_the_stream_arguments() {
        let options = StreamDeclareOptions {
            max_length_bytes: Some(1_000_000),
            max_age: Some(Duration::from_secs(3600)),
            max_segment_size_bytes: Some(100_000),
            initial_cluster_size: Some(3),
            arguments: FieldTable::new()
                .with("x-queue-type", "classic")
                .with("x-other", 1i32),
            ..Default::default()
        };
        let declare = options.to_queue_declare_options().unwrap();
        assert!(declare.durable && !declare.exclusive && !declare.auto_delete);
        let args = &declare.arguments;
        assert_eq!(args.get("x-queue-type"), Some(&FieldValue::from("stream")));
        assert_eq!(
            args.get("x-max-length-bytes"),
            Some(&FieldValue::I64(1_000_000))
        );
        assert_eq!(args.get("x-max-age"), Some(&FieldValue::from("3600s")));
        assert_eq!(
            args.get("x-stream-max-segment-size-bytes"),
            Some(&FieldValue::I64(100_000))
        );
        assert_eq!(
            args.get("x-initial-cluster-size"),
            Some(&FieldValue::I64(3))
        );
        assert_eq!(args.get("x-other"), Some(&FieldValue::I32(1)));
        assert_eq!(args.len(), 6);

        for bad in [Duration::ZERO, Duration::from_millis(1500)] {
            let options = StreamDeclareOptions {
                max_age: Some(bad),
                ..Default::default()
            };
            assert!(options.to_queue_declare_options().is_err(), "{bad:?}");
        }
        let options = StreamDeclareOptions {
            max_length_bytes: Some(u64::MAX),
            ..Default::default()
        };
        let error = options.to_queue_declare_options().unwrap_err();
        assert!(error.to_string().contains("max_length_bytes"), "{error}");
    }
}
