//! Publisher confirms as futures: [`PublishConfirm`] resolves to the [`Confirmation`] the
//! channel's ledger (in the driver) records for the publish.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use crate::channel::Channel;
use crate::error::{Error, Result};
pub use crate::shared::ledger::{ConfirmSummary, Confirmation};

/// A publish in flight: await it for its [`Confirmation`].
///
/// Awaiting is optional: on a channel without confirms there is nothing to learn, and
/// dropping it never cancels the publish. In confirm mode, await it (or call
/// [`Channel::wait_for_confirms`](crate::Channel::wait_for_confirms)) to know the message is
/// safe.
///
/// It resolves to an error if the publish could not be sent (the channel closed first, or the
/// headers do not fit in a frame), or if the channel or connection closed before the broker
/// confirmed it: such a message may or may not have reached a queue.
#[derive(Debug)]
pub struct PublishConfirm(ConfirmState);

#[derive(Debug)]
enum ConfirmState {
    /// Confirm mode: the driver answers when the broker does.
    Pending {
        receiver: oneshot::Receiver<Result<Confirmation>>,
        /// Asked for the close reason if the driver vanished without answering.
        channel: Channel,
    },
    /// Known at once (no confirm mode), or already taken.
    Ready(Option<Confirmation>),
}

impl PublishConfirm {
    pub(crate) fn pending(
        receiver: oneshot::Receiver<Result<Confirmation>>,
        channel: Channel,
    ) -> Self {
        Self(ConfirmState::Pending { receiver, channel })
    }

    pub(crate) fn not_requested() -> Self {
        Self(ConfirmState::Ready(Some(Confirmation::NotRequested)))
    }
}

impl Future for PublishConfirm {
    type Output = Result<Confirmation>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            ConfirmState::Pending { receiver, channel } => match Pin::new(receiver).poll(cx) {
                Poll::Ready(Ok(result)) => Poll::Ready(result),
                Poll::Ready(Err(_)) => Poll::Ready(Err(channel.closed_error())),
                Poll::Pending => {
                    // Publishes this thread held (`shared/direct_writes.rs`) go out before it
                    // waits.
                    channel.connection_inner().state.flush_direct_writes();
                    Poll::Pending
                }
            },
            ConfirmState::Ready(confirmation) => Poll::Ready(confirmation.take().ok_or(
                Error::InvalidState("a publish confirmation was awaited after it completed"),
            )),
        }
    }
}
