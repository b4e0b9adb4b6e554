//! The queue class: declare, bind, unbind, purge and delete queues.

use super::{
    Channel, DeclaredQueue, DeletedQueue, PurgedQueue, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions, QueuePurgeOptions, QueueUnbindOptions,
};
use crate::error::Result;
use crate::protocol::{QueueBind, QueueDeclare, QueueDelete, QueuePurge, QueueUnbind};
use crate::wire::ShortString;

impl Channel {
    /// Declares a queue (`queue.declare`): creates it, or checks that an existing one has the
    /// same flags and arguments (a mismatch closes the channel with 406 PRECONDITION_FAILED).
    ///
    /// An empty name asks the broker to choose one; [`DeclaredQueue::name`] has it. With
    /// `passive`, only checks that the queue exists (404 NOT_FOUND closes the channel if not)
    /// and reports its counts.
    ///
    /// ```no_run
    /// # async fn example(channel: warren::Channel) -> Result<(), warren::Error> {
    /// use warren::QueueDeclareOptions;
    ///
    /// let queue = channel
    ///     .queue_declare("", QueueDeclareOptions { exclusive: true, ..Default::default() })
    ///     .await?;
    /// println!("the broker named the queue {}", queue.name);
    /// # Ok(()) }
    /// ```
    pub async fn queue_declare(
        &self,
        queue: &str,
        options: QueueDeclareOptions,
    ) -> Result<DeclaredQueue> {
        let QueueDeclareOptions {
            passive,
            durable,
            exclusive,
            auto_delete,
            arguments,
        } = options;
        let ok = self
            .call(QueueDeclare {
                queue: ShortString::try_from(queue)?,
                passive,
                durable,
                exclusive,
                auto_delete,
                no_wait: false,
                arguments,
            })
            .await?;
        Ok(DeclaredQueue {
            name: ok.queue,
            message_count: ok.message_count,
            consumer_count: ok.consumer_count,
        })
    }

    /// Binds a queue to an exchange (`queue.bind`): messages the exchange routes with a
    /// matching key go to the queue.
    pub async fn queue_bind(
        &self,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        options: QueueBindOptions,
    ) -> Result<()> {
        self.call(QueueBind {
            queue: ShortString::try_from(queue)?,
            exchange: ShortString::try_from(exchange)?,
            routing_key: ShortString::try_from(routing_key)?,
            no_wait: false,
            arguments: options.arguments,
        })
        .await?;
        Ok(())
    }

    /// Removes a binding (`queue.unbind`).
    pub async fn queue_unbind(
        &self,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        options: QueueUnbindOptions,
    ) -> Result<()> {
        self.call(QueueUnbind {
            queue: ShortString::try_from(queue)?,
            exchange: ShortString::try_from(exchange)?,
            routing_key: ShortString::try_from(routing_key)?,
            arguments: options.arguments,
        })
        .await?;
        Ok(())
    }

    /// Removes every ready message from a queue (`queue.purge`); unacknowledged ones stay.
    pub async fn queue_purge(
        &self,
        queue: &str,
        options: QueuePurgeOptions,
    ) -> Result<PurgedQueue> {
        let QueuePurgeOptions {} = options;
        let ok = self
            .call(QueuePurge {
                queue: ShortString::try_from(queue)?,
                no_wait: false,
            })
            .await?;
        Ok(PurgedQueue {
            message_count: ok.message_count,
        })
    }

    /// Deletes a queue (`queue.delete`); its consumers are cancelled (their streams end with
    /// [`Error::ConsumerCancelled`](crate::Error::ConsumerCancelled)). Deleting a queue that
    /// does not exist succeeds with a count of 0.
    pub async fn queue_delete(
        &self,
        queue: &str,
        options: QueueDeleteOptions,
    ) -> Result<DeletedQueue> {
        let ok = self
            .call(QueueDelete {
                queue: ShortString::try_from(queue)?,
                if_unused: options.if_unused,
                if_empty: options.if_empty,
                no_wait: false,
            })
            .await?;
        Ok(DeletedQueue {
            message_count: ok.message_count,
        })
    }
}
