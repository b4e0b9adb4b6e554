//! `warren declare`, `bind`, `unbind`, `purge` and `delete`.

use warren::wire::FieldValue;
use warren::{
    ExchangeBindOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, ExchangeKind,
    ExchangeUnbindOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
    QueuePurgeOptions, QueueUnbindOptions,
};

use crate::cli::{Binding, Declare, Delete, PurgeArgs};
use crate::failure::{Failure, with_connection};
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
        let channel = connection.open_channel().await?;
        match what {
            Delete::Queue(queue) => {
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
