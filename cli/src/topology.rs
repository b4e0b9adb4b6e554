//! `warren declare`, `bind`, `unbind`, `purge` and `delete`.

use warren::wire::FieldValue;
use warren::{
    Connection, Error, ExchangeBindOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    ExchangeKind, ExchangeUnbindOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
    QueuePurgeOptions, QueueUnbindOptions, ReplyCode,
};

use crate::cli::{Binding, Declare, Delete, PurgeArgs};
use crate::failure::{EXIT_NOT_FOUND, Failure, with_connection};
use crate::values::table;

pub async fn declare(url: &str, what: Declare) -> Result<(), Failure> {
    with_connection(url, "declare", |connection| async move {
        let channel = connection.open_channel().await?;
        match what {
            Declare::Queue(queue) => {
                let mut arguments = queue.arguments;
                if let Some(kind) = queue.kind {
                    arguments.push(("x-queue-type".to_owned(), FieldValue::from(kind)));
                }
                let declared = channel
                    .queue_declare(
                        &queue.name,
                        QueueDeclareOptions {
                            passive: queue.passive,
                            durable: queue.durable,
                            exclusive: queue.exclusive,
                            auto_delete: queue.auto_delete,
                            arguments: table(arguments),
                        },
                    )
                    .await?;
                println!(
                    "queue {:?} {}: {} messages, {} consumers",
                    declared.name.as_str(),
                    if queue.passive { "exists" } else { "declared" },
                    declared.message_count,
                    declared.consumer_count
                );
            }
            Declare::Exchange(exchange) => {
                let kind = exchange_kind(&exchange.kind);
                channel
                    .exchange_declare(
                        &exchange.name,
                        kind.clone(),
                        ExchangeDeclareOptions {
                            passive: exchange.passive,
                            durable: exchange.durable,
                            auto_delete: exchange.auto_delete,
                            internal: exchange.internal,
                            arguments: table(exchange.arguments),
                        },
                    )
                    .await?;
                if exchange.passive {
                    println!("exchange {:?} exists", exchange.name);
                } else {
                    println!("exchange {:?} ({kind}) declared", exchange.name);
                }
            }
        }
        Ok(())
    })
    .await
}

fn exchange_kind(name: &str) -> ExchangeKind {
    match name {
        "direct" => ExchangeKind::Direct,
        "fanout" => ExchangeKind::Fanout,
        "topic" => ExchangeKind::Topic,
        "headers" => ExchangeKind::Headers,
        other => ExchangeKind::Custom(other.to_owned()),
    }
}

/// `bind` (`add`) or `unbind` (not `add`).
pub async fn bind(url: &str, what: Binding, add: bool) -> Result<(), Failure> {
    let purpose = if add { "bind" } else { "unbind" };
    with_connection(url, purpose, |connection| async move {
        let channel = connection.open_channel().await?;
        let done = if add { "bound" } else { "unbound" };
        match what {
            Binding::Queue(b) => {
                let arguments = table(b.arguments);
                if add {
                    let options = QueueBindOptions { arguments };
                    channel
                        .queue_bind(&b.queue, &b.exchange, &b.routing_key, options)
                        .await?;
                } else {
                    let options = QueueUnbindOptions { arguments };
                    channel
                        .queue_unbind(&b.queue, &b.exchange, &b.routing_key, options)
                        .await?;
                }
                println!(
                    "{done} queue {:?} {} exchange {:?} with routing key {:?}",
                    b.queue,
                    if add { "to" } else { "from" },
                    b.exchange,
                    b.routing_key
                );
            }
            Binding::Exchange(b) => {
                let arguments = table(b.arguments);
                if add {
                    let options = ExchangeBindOptions { arguments };
                    channel
                        .exchange_bind(&b.destination, &b.source, &b.routing_key, options)
                        .await?;
                } else {
                    let options = ExchangeUnbindOptions { arguments };
                    channel
                        .exchange_unbind(&b.destination, &b.source, &b.routing_key, options)
                        .await?;
                }
                println!(
                    "{done} exchange {:?} {} exchange {:?} with routing key {:?}",
                    b.destination,
                    if add { "to" } else { "from" },
                    b.source,
                    b.routing_key
                );
            }
        }
        Ok(())
    })
    .await
}

pub async fn purge(url: &str, args: PurgeArgs) -> Result<(), Failure> {
    with_connection(url, "purge", |connection| async move {
        let channel = connection.open_channel().await?;
        let purged = channel
            .queue_purge(&args.queue, QueuePurgeOptions::default())
            .await?;
        println!(
            "purged {} messages from queue {:?}",
            purged.message_count, args.queue
        );
        Ok(())
    })
    .await
}

pub async fn delete(url: &str, what: Delete) -> Result<(), Failure> {
    with_connection(url, "delete", |connection| async move {
        // RabbitMQ deletes a missing queue or exchange "successfully": ask first, so that a
        // mistyped name is not reported as deleted.
        match what {
            Delete::Queue(queue) => {
                if !queue_exists(&connection, &queue.name).await? {
                    return did_not_exist("queue", &queue.name, queue.if_exists);
                }
                let channel = connection.open_channel().await?;
                let deleted = channel
                    .queue_delete(
                        &queue.name,
                        QueueDeleteOptions {
                            if_unused: queue.if_unused,
                            if_empty: queue.if_empty,
                        },
                    )
                    .await?;
                println!(
                    "deleted queue {:?} ({} messages)",
                    queue.name, deleted.message_count
                );
            }
            Delete::Exchange(exchange) => {
                if !exchange_exists(&connection, &exchange.name).await? {
                    return did_not_exist("exchange", &exchange.name, exchange.if_exists);
                }
                let channel = connection.open_channel().await?;
                channel
                    .exchange_delete(
                        &exchange.name,
                        ExchangeDeleteOptions {
                            if_unused: exchange.if_unused,
                        },
                    )
                    .await?;
                println!("deleted exchange {:?}", exchange.name);
            }
        }
        Ok(())
    })
    .await
}

/// Whether `queue` exists: a passive declare, on a channel of its own, which a 404 closes.
async fn queue_exists(connection: &Connection, queue: &str) -> Result<bool, Failure> {
    let channel = connection.open_channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    not_found_is_false(channel.queue_declare(queue, passive).await.map(drop))
}

/// Whether `exchange` exists, as [`queue_exists`] finds out for a queue.
async fn exchange_exists(connection: &Connection, exchange: &str) -> Result<bool, Failure> {
    let channel = connection.open_channel().await?;
    let passive = ExchangeDeclareOptions {
        passive: true,
        ..Default::default()
    };
    // The kind is not checked by a passive declare.
    not_found_is_false(
        channel
            .exchange_declare(exchange, ExchangeKind::Direct, passive)
            .await,
    )
}

fn not_found_is_false(result: Result<(), Error>) -> Result<bool, Failure> {
    match result {
        Ok(()) => Ok(true),
        Err(error) if error.reply_code() == Some(ReplyCode::NOT_FOUND) => Ok(false),
        Err(error) => Err(error.into()),
    }
}

/// The outcome of deleting what does not exist: a line on stdout with `--if-exists`, else an
/// error with its own exit status.
fn did_not_exist(what: &str, name: &str, if_exists: bool) -> Result<(), Failure> {
    if if_exists {
        println!("{what} {name:?} did not exist; nothing to delete");
        return Ok(());
    }
    Err(Failure::with_code(
        format!("{what} {name:?} did not exist; nothing deleted (--if-exists accepts that)"),
        EXIT_NOT_FOUND,
    ))
}
