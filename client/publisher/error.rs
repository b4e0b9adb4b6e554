//! What a [`Publisher`](super::Publisher) publish that was not confirmed turned into.

use crate::error::Error;
use crate::message::ReturnedMessage;
use crate::protocol::ReplyCode;

/// Why a [`Publisher::publish`](super::Publisher::publish) did not end in the broker's ack.
///
/// The variants say what is known of the message: [`PublishError::Nacked`] and
/// [`PublishError::Returned`] are the broker's answers; [`PublishError::OutcomeUnknown`]
/// means the message was sent and may or may not be in a queue; [`PublishError::Failed`]
/// covers the rest (the broker closed the channel over this publish, the connection is
/// closed, the publish could not be sent).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The broker refused the message (`basic.nack`, an internal error on its side). Publish
    /// it again.
    #[error("the broker nacked the publish (an internal error on its side); publish it again")]
    Nacked,
    /// The publish was `mandatory` and no queue took it: the broker returned it
    /// (`basic.return`). The returned message says why, usually `312 NO_ROUTE`.
    #[error(
        "the broker returned the mandatory publish: {} - {} (exchange '{}', routing key '{}'); \
         bind a queue that takes it",
        .0.reply_code, .0.reply_text, .0.exchange, .0.routing_key
    )]
    Returned(Box<ReturnedMessage>),
    /// The message was sent but its confirmation never came: the connection was lost before
    /// the broker confirmed it ([`Error::PublishOutcomeUnknown`], when no republish attempt
    /// was left), or the publish's deadline passed while waiting ([`Error::Timeout`]). The
    /// broker may or may not have the message; publishing it again may make a duplicate.
    /// `source()` says which.
    #[error("the publish was sent but not confirmed: the broker may or may not have the message")]
    OutcomeUnknown(#[source] Error),
    /// The publish failed: the broker closed its channel (e.g. `404 NOT_FOUND` for a missing
    /// exchange; other publishes in flight on the same channel fail with the same error, and
    /// the publisher replaces the channel), the connection is closed, the publish's deadline
    /// passed before it could be sent, the connection is blocked and its policy is to fail
    /// fast, or an argument cannot be sent. `source()` is the error.
    #[error("the publish failed")]
    Failed(#[source] Error),
}

impl PublishError {
    /// The underlying warren error, for [`PublishError::OutcomeUnknown`] and
    /// [`PublishError::Failed`].
    pub fn error(&self) -> Option<&Error> {
        match self {
            Self::OutcomeUnknown(error) | Self::Failed(error) => Some(error),
            Self::Nacked | Self::Returned(_) => None,
        }
    }

    /// The AMQP reply code of a channel or connection close behind the error (e.g. 404 for a
    /// missing exchange), or of a returned message.
    pub fn reply_code(&self) -> Option<ReplyCode> {
        match self {
            Self::Returned(message) => Some(message.reply_code),
            other => other.error().and_then(Error::reply_code),
        }
    }

    /// Whether the broker may have the message although no ack was reported
    /// ([`PublishError::OutcomeUnknown`]).
    pub fn is_outcome_unknown(&self) -> bool {
        matches!(self, Self::OutcomeUnknown(_))
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;
    use crate::error::{Close, Initiator};
    use crate::wire::ShortString;

    #[test]
    fn what_each_error_says_of_the_message() {
        let closed = Error::ChannelClosed {
            channel: 3,
            close: Close {
                code: ReplyCode::NOT_FOUND,
                text: "NOT_FOUND - no exchange 'x' in vhost '/'".to_owned(),
                method: None,
                initiator: Initiator::Server,
            },
        };
        let failed = PublishError::Failed(closed);
        assert_eq!(failed.reply_code(), Some(ReplyCode::NOT_FOUND));
        assert!(!failed.is_outcome_unknown());
        // The cause is the source, not repeated in the text.
        let source = failed.source().expect("a source").to_string();
        assert!(source.contains("no exchange 'x'"), "{source}");
        assert!(!failed.to_string().contains("no exchange"), "{failed}");

        let unknown = PublishError::OutcomeUnknown(Error::Timeout {
            operation: "publish confirmation",
            after: std::time::Duration::from_secs(1),
        });
        assert!(unknown.is_outcome_unknown());
        assert_eq!(unknown.reply_code(), None);

        let returned = PublishError::Returned(Box::new(ReturnedMessage {
            reply_code: ReplyCode::NO_ROUTE,
            reply_text: ShortString::from_static("NO_ROUTE"),
            exchange: ShortString::from_static("orders"),
            routing_key: ShortString::from_static("eu"),
            properties: Default::default(),
            body: bytes::Bytes::new(),
            skipped_body_size: None,
        }));
        assert_eq!(returned.reply_code(), Some(ReplyCode::NO_ROUTE));
        assert!(
            returned.to_string().contains("routing key 'eu'"),
            "{returned}"
        );
        assert!(returned.error().is_none() && PublishError::Nacked.error().is_none());
    }
}
