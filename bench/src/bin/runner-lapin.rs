//! lapin's runner: each scenario written as an application would, with lapin's public API
//! (on tokio, without TLS).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use warren_bench::{
    BoxError, Meter, Outcome, Params, Result, Scenario, body, correlation_id, ensure, queue_name,
    raw,
};

fn main() {
    warren_bench::run_async("lapin", |p| async move {
        match p.scenario {
            Scenario::Publish => publish(&p).await,
            Scenario::Confirm => confirm(&p).await,
            Scenario::Consume => consume(&p).await,
            Scenario::Rpc => rpc(&p).await,
            Scenario::Fanin => fanin(&p).await,
            Scenario::Idle => idle(&p).await,
            Scenario::Publisher => Err(warren_bench::only_warren(&p)),
        }
    });
}

async fn connect(p: &Params) -> Result<Connection> {
    Ok(Connection::connect(&p.url.raw, ConnectionProperties::default()).await?)
}

async fn close(connection: Connection) -> Result<()> {
    connection.close(200, "bye".into()).await?;
    Ok(())
}

/// Polls a passive declare every millisecond until `queue` holds `n` messages.
async fn wait_for_count(channel: &Channel, queue: &str, n: u64) -> Result<()> {
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    loop {
        let declared = channel
            .queue_declare(queue.into(), passive, FieldTable::default())
            .await?;
        let count = u64::from(declared.message_count());
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
    let queue = queue_name("lapin", "publish");
    raw::declare_queues(&p.url, std::slice::from_ref(&queue))?;
    let connection = connect(p).await?;
    let channel = connection.create_channel().await?;
    let body = body(p.size);
    let routing_key = ShortString::from(queue.as_str());

    let meter = Meter::start(p.broker_pid, true);
    for _ in 0..p.messages {
        // Not in confirm mode: the confirmation is NotRequested, nothing to wait for.
        drop(
            channel
                .basic_publish(
                    "".into(),
                    routing_key.clone(),
                    BasicPublishOptions::default(),
                    &body,
                    BasicProperties::default(),
                )
                .await?,
        );
    }
    wait_for_count(&channel, &queue, p.messages).await?;
    let measured = meter.stop();

    close(connection).await?;
    raw::delete_queues(&p.url, &[queue])?;
    Ok(Outcome::new(measured, p.messages))
}

async fn confirm(p: &Params) -> Result<Outcome> {
    let queue = queue_name("lapin", "confirm");
    raw::declare_queues(&p.url, std::slice::from_ref(&queue))?;
    let connection = connect(p).await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let body = body(p.size);
    let routing_key = ShortString::from(queue.as_str());

    let meter = Meter::start(p.broker_pid, true);
    // The window: at most `window` confirmations outstanding; each is checked to be an ack.
    let mut window = VecDeque::with_capacity(p.window);
    let mut acked = 0u64;
    let is_ack = |c: Confirmation| matches!(c, Confirmation::Ack(None));
    for _ in 0..p.messages {
        if window.len() == p.window {
            let confirm: lapin::PublisherConfirm = window.pop_front().expect("a full window");
            ensure(is_ack(confirm.await?), || "a publish was not acked".into())?;
            acked += 1;
        }
        let confirm = channel
            .basic_publish(
                "".into(),
                routing_key.clone(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default(),
            )
            .await?;
        window.push_back(confirm);
    }
    for confirm in window {
        ensure(is_ack(confirm.await?), || "a publish was not acked".into())?;
        acked += 1;
    }
    let measured = meter.stop();
    ensure(acked == p.messages, || {
        format!("{acked} of {} acked", p.messages)
    })?;

    close(connection).await?;
    raw::delete_queues(&p.url, &[queue])?;
    Ok(Outcome::new(measured, p.messages))
}

async fn consume(p: &Params) -> Result<Outcome> {
    let n = p.messages;
    let queue = queue_name("lapin", "consume");
    raw::prefill(&p.url, &queue, n, p.size)?;
    let connection = connect(p).await?;
    let channel = connection.create_channel().await?;
    channel
        .basic_qos(p.prefetch, BasicQosOptions::default())
        .await?;

    let meter = Meter::start(p.broker_pid, true);
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut received = 0u64;
    while received < n {
        let delivery = consumer.next().await.ok_or("the consumer ended")??;
        received += 1;
        let tag = delivery.delivery_tag;
        ensure(tag == received && delivery.data.len() == p.size, || {
            format!(
                "delivery {received}: tag {tag}, {} bytes",
                delivery.data.len()
            )
        })?;
        if p.ack_every == 1 {
            delivery.ack(BasicAckOptions::default()).await?;
        } else if tag.is_multiple_of(p.ack_every) || tag == n {
            delivery.ack(BasicAckOptions { multiple: true }).await?;
        }
    }
    let measured = meter.stop();

    close(connection).await?;
    raw::verify_consumed_and_delete(&p.url, &queue)?;
    Ok(Outcome::new(measured, n))
}

async fn rpc(p: &Params) -> Result<Outcome> {
    let requests = queue_name("lapin", "rpc-requests");
    let replies = queue_name("lapin", "rpc-replies");
    raw::declare_queues(&p.url, &[requests.clone(), replies.clone()])?;
    let body = body(p.size);
    let total = p.warmup + p.messages;
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };

    // The server, on its own connection: answer each request to its reply_to.
    let server_connection = connect(p).await?;
    let server_channel = server_connection.create_channel().await?;
    let mut requests_in = server_channel
        .basic_consume(
            requests.as_str().into(),
            "".into(),
            no_ack,
            FieldTable::default(),
        )
        .await?;
    let server = {
        let body = body.clone();
        tokio::spawn(async move {
            for _ in 0..total {
                let request = requests_in
                    .next()
                    .await
                    .ok_or("the server's consumer ended")??;
                let reply_to = request
                    .properties
                    .reply_to()
                    .clone()
                    .ok_or("a request without reply_to")?;
                let mut properties = BasicProperties::default();
                if let Some(id) = request.properties.correlation_id() {
                    properties = properties.with_correlation_id(id.clone());
                }
                drop(
                    server_channel
                        .basic_publish(
                            "".into(),
                            reply_to,
                            BasicPublishOptions::default(),
                            &body,
                            properties,
                        )
                        .await?,
                );
            }
            Ok::<(), BoxError>(())
        })
    };

    let connection = connect(p).await?;
    let channel = connection.create_channel().await?;
    let mut replies_in = channel
        .basic_consume(
            replies.as_str().into(),
            "".into(),
            no_ack,
            FieldTable::default(),
        )
        .await?;
    let routing_key = ShortString::from(requests.as_str());
    let reply_to = ShortString::from(replies.as_str());
    let mut latencies = Vec::with_capacity(p.messages as usize);
    let mut meter = None;
    for i in 0..total {
        if i == p.warmup {
            meter = Some(Meter::start(p.broker_pid, true));
        }
        let id = correlation_id(i);
        let sent = Instant::now();
        let properties = BasicProperties::default()
            .with_correlation_id(id.as_str().into())
            .with_reply_to(reply_to.clone());
        drop(
            channel
                .basic_publish(
                    "".into(),
                    routing_key.clone(),
                    BasicPublishOptions::default(),
                    &body,
                    properties,
                )
                .await?,
        );
        let reply = replies_in
            .next()
            .await
            .ok_or("the reply consumer ended")??;
        ensure(
            reply
                .properties
                .correlation_id()
                .as_ref()
                .map(|s| s.as_str())
                == Some(id.as_str()),
            || "a reply to another request".into(),
        )?;
        if i >= p.warmup {
            latencies.push(sent.elapsed().as_nanos() as u64);
        }
    }
    let measured = meter.ok_or("no measured round trip")?.stop();
    server.await??;

    close(connection).await?;
    close(server_connection).await?;
    raw::delete_queues(&p.url, &[requests, replies])?;
    Ok(Outcome {
        measured,
        messages: p.messages,
        latencies_ns: latencies,
    })
}

async fn fanin(p: &Params) -> Result<Outcome> {
    let queue = queue_name("lapin", "fanin");
    raw::declare_queues(&p.url, std::slice::from_ref(&queue))?;
    let connection = connect(p).await?;
    let mut channels = Vec::new();
    for _ in 0..p.tasks {
        channels.push(connection.create_channel().await?);
    }
    let poll = connection.create_channel().await?;
    let body = body(p.size);
    let tasks = p.tasks as u64;
    let routing_key = ShortString::from(queue.as_str());

    let meter = Meter::start(p.broker_pid, true);
    let mut handles = Vec::new();
    for (i, channel) in (0..).zip(channels) {
        // Task i publishes its share; the first ones take the remainder.
        let share = p.messages / tasks + u64::from(i < p.messages % tasks);
        let (routing_key, body) = (routing_key.clone(), body.clone());
        handles.push(tokio::spawn(async move {
            for _ in 0..share {
                drop(
                    channel
                        .basic_publish(
                            "".into(),
                            routing_key.clone(),
                            BasicPublishOptions::default(),
                            &body,
                            BasicProperties::default(),
                        )
                        .await?,
                );
            }
            Ok::<(), BoxError>(())
        }));
    }
    for handle in handles {
        handle.await??;
    }
    wait_for_count(&poll, &queue, p.messages).await?;
    let measured = meter.stop();

    close(connection).await?;
    raw::delete_queues(&p.url, &[queue])?;
    Ok(Outcome::new(measured, p.messages))
}

async fn idle(p: &Params) -> Result<Outcome> {
    let meter = Meter::start(p.broker_pid, false);
    let queues: Vec<String> = (0..p.channels)
        .map(|c| queue_name("lapin", &format!("idle{c}")))
        .collect();
    raw::declare_queues(&p.url, &queues)?;
    let connection = connect(p).await?;
    let mut consumers = Vec::with_capacity(p.consumers);
    for queue in &queues {
        let channel = connection.create_channel().await?;
        for _ in 0..p.consumers / p.channels {
            consumers.push(
                channel
                    .basic_consume(
                        queue.as_str().into(),
                        "".into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await?,
            );
        }
    }
    tokio::time::sleep(Duration::from_secs_f64(p.idle_secs)).await;
    let measured = meter.stop();
    ensure(consumers.len() == p.consumers, || {
        "consumers missing".into()
    })?;

    close(connection).await?;
    raw::delete_queues(&p.url, &queues)?;
    Ok(Outcome::new(measured, p.consumers as u64))
}
