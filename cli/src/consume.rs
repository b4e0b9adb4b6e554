//! `warren consume` and `warren get`.

use std::pin::pin;

use futures_util::StreamExt;
use warren::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicQosOptions,
    Connection, Error,
};

use crate::cli::{AckMode, ConsumeArgs, GetArgs};
use crate::failure::{Failure, close, connect_with, with_connection};
use crate::show::Sink;

/// `warren consume`: the connection recovers by default (`--no-recover` turns it off), and the
/// consumer goes on after it, saying so on stderr.
pub async fn consume(url: &str, args: ConsumeArgs) -> Result<(), Failure> {
    let mut sink = Sink::new(&args.output)?;
    let connection = connect_with(url, "consume", !args.no_recover).await?;
    let result = run_consumer(&connection, &args, &mut sink).await;
    close(&connection).await;
    result
}

async fn run_consumer(
    connection: &Connection,
    args: &ConsumeArgs,
    sink: &mut Sink,
) -> Result<(), Failure> {
    let no_ack = args.no_ack || args.ack == AckMode::Auto;
    let limit = args.count.unwrap_or(u64::MAX);
    if limit == 0 {
        return Ok(());
    }
    let channel = connection.open_channel().await?;
    // Never ask for more than --count: what is prefetched beyond it would only go back.
    let prefetch = match args.count {
        Some(count) if args.prefetch == 0 || u64::from(args.prefetch) > count => {
            u16::try_from(count).unwrap_or(u16::MAX)
        }
        _ => args.prefetch,
    };
    if !no_ack && prefetch > 0 {
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
    }
    let mut consumer = channel
        .basic_consume(
            &args.queue,
            BasicConsumeOptions {
                no_ack,
                ..Default::default()
            },
        )
        .await?;

    let mut interrupted = pin!(crate::failure::stop_requested());
    let mut handled = 0u64;
    while handled < limit {
        let next = async {
            match args.idle_timeout {
                Some(idle) => tokio::time::timeout(idle, consumer.next()).await.ok(),
                None => Some(consumer.next().await),
            }
        };
        let item = tokio::select! {
            _ = &mut interrupted => break,
            item = next => item,
        };
        let delivery = match item {
            None => {
                eprintln!(
                    "warren: no message for {:?}: stopping after {handled}",
                    args.idle_timeout.unwrap_or_default()
                );
                break;
            }
            Some(None) => break,
            Some(Some(delivery)) => delivery?,
        };
        // Shown (and flushed) before it is acknowledged: a failed write leaves it unacked.
        sink.show(&delivery, None)?;
        if !no_ack {
            match delivery.ack(BasicAckOptions::default()).await {
                Ok(()) => {}
                Err(Error::StaleDelivery { .. }) => {
                    // It came before the connection was lost: the broker requeued it and
                    // delivers it again, so it is not counted yet.
                    eprintln!(
                        "warren: the last message came before the connection was lost; the \
                         broker delivers it again"
                    );
                    continue;
                }
                Err(error) => return Err(error.into()),
            }
        }
        handled += 1;
    }
    // Deliveries buffered beyond the count go back to the queue when the consumer is dropped.
    let _ = consumer.cancel().await;
    Ok(())
}

pub async fn get(url: &str, args: GetArgs) -> Result<(), Failure> {
    let mut sink = Sink::new(&args.output)?;
    with_connection(url, "get", |connection| async move {
        run_get(&connection, &args, &mut sink).await
    })
    .await
}

async fn run_get(connection: &Connection, args: &GetArgs, sink: &mut Sink) -> Result<(), Failure> {
    let channel = connection.open_channel().await?;
    let options = BasicGetOptions {
        no_ack: args.no_ack,
    };
    let mut last_tag = None;
    let mut result = Ok(());
    for fetched in 0..args.count {
        let Some(message) = channel.basic_get(&args.queue, options).await? else {
            if fetched == 0 {
                eprintln!("queue {:?} is empty", args.queue);
            }
            break;
        };
        if let Err(failure) = sink.show(&message, Some(message.message_count)) {
            result = Err(failure);
            break;
        }
        if args.no_ack {
            continue;
        }
        if args.requeue {
            // Requeued at once, the message would be the next one got: keep it until the end.
            last_tag = Some(message.delivery_tag());
        } else {
            message.ack(BasicAckOptions::default()).await?;
        }
    }
    if let (true, Some(tag)) = (args.requeue, last_tag) {
        channel
            .basic_nack(
                tag,
                BasicNackOptions {
                    multiple: true,
                    requeue: true,
                },
            )
            .await?;
    }
    // A message whose output failed is not acknowledged: closing the channel requeues it.
    channel.close().await?;
    result
}
