//! The exchange class: declare, delete, bind and unbind exchanges.

use super::{
    Channel, ExchangeBindOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, ExchangeKind,
    ExchangeUnbindOptions,
};
use crate::error::Result;
use crate::protocol::{ExchangeBind, ExchangeDeclare, ExchangeDelete, ExchangeUnbind};
use crate::wire::ShortString;

impl Channel {
    /// Declares an exchange (`exchange.declare`): creates it, or checks that an existing one has
    /// the same type and flags (a mismatch closes the channel with 406 PRECONDITION_FAILED).
    ///
    /// ```no_run
    /// # async fn example(channel: warren::Channel) -> Result<(), warren::Error> {
    /// use warren::{ExchangeDeclareOptions, ExchangeKind};
    ///
    /// channel
    ///     .exchange_declare(
    ///         "logs",
    ///         ExchangeKind::Fanout,
    ///         ExchangeDeclareOptions { durable: true, ..Default::default() },
    ///     )
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn exchange_declare(
        &self,
        exchange: &str,
        kind: ExchangeKind,
        options: ExchangeDeclareOptions,
    ) -> Result<()> {
        let ExchangeDeclareOptions {
            passive,
            durable,
            auto_delete,
            internal,
            arguments,
        } = options;
        self.call(ExchangeDeclare {
            exchange: ShortString::try_from(exchange)?,
            kind: ShortString::try_from(kind.as_str())?,
            passive,
            durable,
            auto_delete,
            internal,
            no_wait: false,
            arguments,
        })
        .await?;
        Ok(())
    }

    /// Deletes an exchange (`exchange.delete`) and its bindings. Deleting an exchange that does
    /// not exist succeeds.
    pub async fn exchange_delete(
        &self,
        exchange: &str,
        options: ExchangeDeleteOptions,
    ) -> Result<()> {
        self.call(ExchangeDelete {
            exchange: ShortString::try_from(exchange)?,
            if_unused: options.if_unused,
            no_wait: false,
        })
        .await?;
        Ok(())
    }

    /// Binds exchange `destination` to exchange `source` (`exchange.bind`, a RabbitMQ
    /// extension): messages routed by `source` with a matching key also go through `destination`.
    pub async fn exchange_bind(
        &self,
        destination: &str,
        source: &str,
        routing_key: &str,
        options: ExchangeBindOptions,
    ) -> Result<()> {
        self.call(ExchangeBind {
            destination: ShortString::try_from(destination)?,
            source: ShortString::try_from(source)?,
            routing_key: ShortString::try_from(routing_key)?,
            no_wait: false,
            arguments: options.arguments,
        })
        .await?;
        Ok(())
    }

    /// Removes a binding made with [`Channel::exchange_bind`] (`exchange.unbind`).
    pub async fn exchange_unbind(
        &self,
        destination: &str,
        source: &str,
        routing_key: &str,
        options: ExchangeUnbindOptions,
    ) -> Result<()> {
        self.call(ExchangeUnbind {
            destination: ShortString::try_from(destination)?,
            source: ShortString::try_from(source)?,
            routing_key: ShortString::try_from(routing_key)?,
            no_wait: false,
            arguments: options.arguments,
        })
        .await?;
        Ok(())
    }
}
