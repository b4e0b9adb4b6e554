//! The tx class: transactions, and the confirm class: publisher confirms.

use std::sync::Arc;

use tokio::sync::{Semaphore, oneshot};

use super::{Channel, ConfirmSelectOptions};
use crate::error::{Error, Result};
use crate::protocol::{ConfirmSelect, TxCommit, TxRollback, TxSelect};
use crate::shared::command::Command;
use crate::shared::ledger::ConfirmSummary;

impl Channel {
    /// Puts the channel in transaction mode (`tx.select`): publishes and acknowledgements take
    /// effect only at [`Channel::tx_commit`]. A channel cannot use both transactions and
    /// confirms.
    pub async fn tx_select(&self) -> Result<()> {
        self.call(TxSelect {}).await?;
        Ok(())
    }

    /// Commits the current transaction (`tx.commit`).
    pub async fn tx_commit(&self) -> Result<()> {
        self.call(TxCommit {}).await?;
        Ok(())
    }

    /// Discards the publishes and acknowledgements of the current transaction (`tx.rollback`).
    /// Rolled-back acknowledgements are not redelivered until the channel closes or recovers.
    pub async fn tx_rollback(&self) -> Result<()> {
        self.call(TxRollback {}).await?;
        Ok(())
    }

    /// Puts the channel in confirm mode (`confirm.select`, a RabbitMQ extension): from now on,
    /// the [`PublishConfirm`](crate::PublishConfirm) of every publish resolves to the
    /// broker's answer. Selecting again does nothing.
    ///
    /// With [`ConfirmSelectOptions::max_in_flight`], `basic_publish` waits while that many
    /// publishes await confirmation.
    pub async fn confirm_select(&self, options: ConfirmSelectOptions) -> Result<()> {
        if let Some(limit) = options.max_in_flight {
            if limit == 0 || limit > Semaphore::MAX_PERMITS {
                return Err(Error::InvalidArgument(format!(
                    "max_in_flight must be between 1 and {} (None: no limit)",
                    Semaphore::MAX_PERMITS
                )));
            }
            let _ = self.shared().in_flight.set(Arc::new(Semaphore::new(limit)));
        }
        self.call(ConfirmSelect { no_wait: false }).await?;
        Ok(())
    }

    /// Waits until the broker has answered every publish made on this channel so far, and
    /// reports how many were not acked since the previous call.
    ///
    /// Fails with [`Error::InvalidState`] if the channel is not in confirm mode, and with the
    /// close reason if the channel or connection closes first (then some publishes may or may
    /// not have reached their queues: publish them again).
    pub async fn wait_for_confirms(&self) -> Result<ConfirmSummary> {
        let (reply, receiver) = oneshot::channel();
        let wait = async {
            self.command(Command::WaitForConfirms {
                channel: self.key(),
                reply,
            })
            .await?;
            receiver.await.map_err(|_| self.closed_error())?
        };
        tokio::time::timeout(self.timeout(), wait)
            .await
            .map_err(|_| Error::Timeout {
                operation: "wait_for_confirms",
                after: self.timeout(),
            })?
    }
}
