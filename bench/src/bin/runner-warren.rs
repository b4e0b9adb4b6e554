//! warren's runner: each scenario written as an application would, with warren's public API.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use warren::protocol::BasicProperties;
use warren::wire::ShortString;
use warren::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, Channel, ConfirmSelectOptions,
    Confirmation, Connection, PublishError, Publisher, PublisherOptions, QueueDeclareOptions,
};
use warren_bench::{
    Meter, Outcome, Params, Result, Scenario, body, correlation_id, ensure, queue_name, raw,
};

fn main() {
    warren_bench::run_async("warren", |p| async move {
        match p.scenario {
            Scenario::Publish => publish(&p).await,
            Scenario::Confirm => confirm(&p).await,
            Scenario::Consume => consume(&p).await,
            Scenario::Rpc => rpc(&p).await,
            Scenario::Fanin => fanin(&p).await,
            Scenario::Idle => idle(&p).await,
            Scenario::Publisher => publisher(&p).await,
        }
    });
}

/// Polls a passive declare every millisecond until `queue` holds `n` messages.
async fn wait_for_count(channel: &Channel, queue: &str, n: u64) -> Result<()> {
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    loop {
        let count = u64::from(
            channel
                .queue_declare(queue, passive.clone())
                .await?
                .message_count,
        );
        ensure(count <= n, || {
            format!("{queue} holds {count} messages, more than {n}")
        })?;
        if count == n {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn publish(p: &Params) -> Result<Outcome> {
    let queue = queue_name("warren", "publish");
    raw::declare_queues(&p.url, std::slice::from_ref(&queue))?;
    let connection = Connection::connect(&p.url.raw).await?;
    let channel = connection.open_channel().await?;
    let body = Bytes::from(body(p.size));

    let meter = Meter::start(p.broker_pid, true);
    for _ in 0..p.messages {
        // Not in confirm mode: the confirmation is NotRequested, nothing to wait for.
        drop(
            channel
                .basic_publish(
                    "",
                    &queue,
                    BasicPublishOptions::default(),
                    body.clone(),
                    BasicProperties::default(),
                )
                .await?,
        );
    }
    wait_for_count(&channel, &queue, p.messages).await?;
    let measured = meter.stop();

    connection.close().await?;
    raw::delete_queues(&p.url, &[queue])?;
    Ok(Outcome::new(measured, p.messages))
}

async fn confirm(p: &Params) -> Result<Outcome> {
    let queue = queue_name("warren", "confirm");
    raw::declare_queues(&p.url, std::slice::from_ref(&queue))?;
    let connection = Connection::connect(&p.url.raw).await?;
    let channel = connection.open_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let body = Bytes::from(body(p.size));

    let meter = Meter::start(p.broker_pid, true);
    // The window: at most `window` confirmations outstanding; each is checked to be an ack.
    let mut window = VecDeque::with_capacity(p.window);
    let mut acked = 0u64;
    for _ in 0..p.messages {
        if window.len() == p.window {
            let confirm: warren::PublishConfirm = window.pop_front().expect("a full window");
            ensure(confirm.await? == Confirmation::Ack, || {
                "a publish was not acked".into()
            })?;
            acked += 1;
        }
        let confirm = channel
            .basic_publish(
                "",
                &queue,
                BasicPublishOptions::default(),
                body.clone(),
                BasicProperties::default(),
            )
            .await?;
        window.push_back(confirm);
    }
    for confirm in window {
        ensure(confirm.await? == Confirmation::Ack, || {
            "a publish was not acked".into()
        })?;
        acked += 1;
    }
    let measured = meter.stop();
    ensure(acked == p.messages, || {
        format!("{acked} of {} acked", p.messages)
    })?;

    connection.close().await?;
    raw::delete_queues(&p.url, &[queue])?;
    Ok(Outcome::new(measured, p.messages))
}

/// `tasks` tasks publish through one `Publisher`, each keeping its share of the window in
/// flight (so that all of them together keep `window` unconfirmed, as `confirm` does on one
/// channel); every publish must end in an ack.
async fn publisher(p: &Params) -> Result<Outcome> {
    let queue = queue_name("warren", "publisher");
    raw::declare_queues(&p.url, std::slice::from_ref(&queue))?;
    let connection = Connection::connect(&p.url.raw).await?;
    let options = PublisherOptions::default()
        .channels(p.pool)
        .max_in_flight(p.window);
    let publisher = Publisher::new(&connection, options).await?;
    let body = Bytes::from(body(p.size));
    let per_task = (p.window / p.tasks).max(1);
    let tasks = p.tasks as u64;

    let meter = Meter::start(p.broker_pid, true);
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let count = p.messages / tasks + u64::from(task < p.messages % tasks);
            let (publisher, queue, body) = (publisher.clone(), queue.clone(), body.clone());
            tokio::spawn(async move {
                let publishes = (0..count).map(|_| {
                    publisher.publish(
                        "",
                        &queue,
                        BasicPublishOptions::default(),
                        body.clone(),
                        BasicProperties::default(),
                    )
                });
                let mut results = futures_util::stream::iter(publishes).buffer_unordered(per_task);
                let mut acked = 0u64;
                while let Some(result) = results.next().await {
                    result?;
                    acked += 1;
                }
                Ok::<_, PublishError>(acked)
            })
        })
        .collect();
    let mut acked = 0;
    for handle in handles {
        acked += handle.await??;
    }
    let measured = meter.stop();
    ensure(acked == p.messages, || {
        format!("{acked} of {} acked", p.messages)
    })?;

    connection.close().await?;
    raw::delete_queues(&p.url, &[queue])?;
    Ok(Outcome::new(measured, p.messages))
}

async fn consume(p: &Params) -> Result<Outcome> {
    let n = p.messages;
    let queue = queue_name("warren", "consume");
    raw::prefill(&p.url, &queue, n, p.size)?;
    let connection = Connection::connect(&p.url.raw).await?;
    let channel = connection.open_channel().await?;
    channel.basic_qos(p.prefetch, Default::default()).await?;

    let meter = Meter::start(p.broker_pid, true);
    let mut consumer = channel
        .basic_consume(&queue, BasicConsumeOptions::default())
        .await?;
    let mut received = 0u64;
    while received < n {
        let delivery = consumer.next().await.ok_or("the consumer ended")??;
        received += 1;
        let tag = delivery.delivery_tag();
        ensure(tag == received && delivery.body.len() == p.size, || {
            format!(
                "delivery {received}: tag {tag}, {} bytes",
                delivery.body.len()
            )
        })?;
        if p.ack_every == 1 {
            delivery.ack(BasicAckOptions::default()).await?;
        } else if tag.is_multiple_of(p.ack_every) || tag == n {
            delivery.ack(BasicAckOptions { multiple: true }).await?;
        }
    }
    let measured = meter.stop();

    connection.close().await?;
    raw::verify_consumed_and_delete(&p.url, &queue)?;
    Ok(Outcome::new(measured, n))
}

async fn rpc(p: &Params) -> Result<Outcome> {
    let requests = queue_name("warren", "rpc-requests");
    let replies = queue_name("warren", "rpc-replies");
    raw::declare_queues(&p.url, &[requests.clone(), replies.clone()])?;
    let body = Bytes::from(body(p.size));
    let total = p.warmup + p.messages;

    // The server, on its own connection: answer each request to its reply_to.
    let (server_connection, server) =
        warren_bench::rpc_server::spawn(&p.url.raw, &requests, body.clone(), total).await?;

    let connection = Connection::connect(&p.url.raw).await?;
    let channel = connection.open_channel().await?;
    let mut replies_in = channel
        .basic_consume(
            &replies,
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
        )
        .await?;
    let reply_to = ShortString::try_from(replies.as_str())?;
    let mut latencies = Vec::with_capacity(p.messages as usize);
    let mut meter = None;
    for i in 0..total {
        if i == p.warmup {
            meter = Some(Meter::start(p.broker_pid, true));
        }
        let id = correlation_id(i);
        let sent = Instant::now();
        let properties = BasicProperties {
            correlation_id: Some(ShortString::try_from(id.as_str())?),
            reply_to: Some(reply_to.clone()),
            ..Default::default()
        };
        drop(
            channel
                .basic_publish(
                    "",
                    &requests,
                    BasicPublishOptions::default(),
                    body.clone(),
                    properties,
                )
                .await?,
        );
        let reply = replies_in
            .next()
            .await
            .ok_or("the reply consumer ended")??;
        ensure(
            reply.properties.correlation_id.as_deref() == Some(id.as_str()),
            || "a reply to another request".into(),
        )?;
        if i >= p.warmup {
            latencies.push(sent.elapsed().as_nanos() as u64);
        }
    }
    let measured = meter.ok_or("no measured round trip")?.stop();
    server.await??;

    connection.close().await?;
    server_connection.close().await?;
    raw::delete_queues(&p.url, &[requests, replies])?;
    Ok(Outcome {
        measured,
        messages: p.messages,
        latencies_ns: latencies,
    })
}

async fn fanin(p: &Params) -> Result<Outcome> {
    let queue = queue_name("warren", "fanin");
    raw::declare_queues(&p.url, std::slice::from_ref(&queue))?;
    let connection = Connection::connect(&p.url.raw).await?;
    let mut channels = Vec::new();
    for _ in 0..p.tasks {
        channels.push(connection.open_channel().await?);
    }
    let poll = connection.open_channel().await?;
    let body = Bytes::from(body(p.size));
    let tasks = p.tasks as u64;

    let meter = Meter::start(p.broker_pid, true);
    let mut handles = Vec::new();
    for (i, channel) in (0..).zip(channels) {
        // Task i publishes its share; the first ones take the remainder.
        let share = p.messages / tasks + u64::from(i < p.messages % tasks);
        let (queue, body) = (queue.clone(), body.clone());
        handles.push(tokio::spawn(async move {
            for _ in 0..share {
                drop(
                    channel
                        .basic_publish(
                            "",
                            &queue,
                            BasicPublishOptions::default(),
                            body.clone(),
                            BasicProperties::default(),
                        )
                        .await?,
                );
            }
            Ok::<(), warren_bench::BoxError>(())
        }));
    }
    for handle in handles {
        handle.await??;
    }
    wait_for_count(&poll, &queue, p.messages).await?;
    let measured = meter.stop();

    connection.close().await?;
    raw::delete_queues(&p.url, &[queue])?;
    Ok(Outcome::new(measured, p.messages))
}

async fn idle(p: &Params) -> Result<Outcome> {
    let meter = Meter::start(p.broker_pid, false);
    let queues: Vec<String> = (0..p.channels)
        .map(|c| queue_name("warren", &format!("idle{c}")))
        .collect();
    raw::declare_queues(&p.url, &queues)?;
    let connection = Connection::connect(&p.url.raw).await?;
    let mut consumers = Vec::with_capacity(p.consumers);
    for queue in &queues {
        let channel = connection.open_channel().await?;
        for _ in 0..p.consumers / p.channels {
            consumers.push(
                channel
                    .basic_consume(queue, BasicConsumeOptions::default())
                    .await?,
            );
        }
    }
    tokio::time::sleep(Duration::from_secs_f64(p.idle_secs)).await;
    let measured = meter.stop();
    ensure(consumers.len() == p.consumers, || {
        "consumers missing".into()
    })?;

    connection.close().await?;
    raw::delete_queues(&p.url, &queues)?;
    Ok(Outcome::new(measured, p.consumers as u64))
}
