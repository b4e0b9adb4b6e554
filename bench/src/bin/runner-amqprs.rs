//! amqprs's runner: each scenario written as an application would, with amqprs's public API
//! (no TLS). Publisher confirms come to a channel callback; the confirm window is built on it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amqprs::callbacks::ChannelCallback;
use amqprs::channel::{
    BasicAckArguments, BasicConsumeArguments, BasicPublishArguments, BasicQosArguments, Channel,
    ConfirmSelectArguments, QueueDeclareArguments,
};
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::{Ack, BasicProperties, Cancel, CloseChannel, Nack, Return};
use async_trait::async_trait;
use tokio::sync::watch;
use warren_bench::{
    BoxError, Meter, Outcome, Params, Result, Scenario, body, correlation_id, ensure, queue_name,
    raw,
};

fn main() {
    warren_bench::run_async("amqprs", |p| async move {
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
    let url = &p.url;
    let args = OpenConnectionArguments::new(&url.host, url.port, &url.user, &url.password)
        .virtual_host(&url.vhost)
        .finish();
    Ok(Connection::open(&args).await?)
}

/// Polls a passive declare every millisecond until `queue` holds `n` messages.
async fn wait_for_count(channel: &Channel, queue: &str, n: u64) -> Result<()> {
    let passive = QueueDeclareArguments::new(queue).passive(true).finish();
    loop {
        let (_, count, _) = channel
            .queue_declare(passive.clone())
            .await?
            .ok_or("no declare-ok")?;
        let count = u64::from(count);
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
    let queue = queue_name("amqprs", "publish");
    raw::declare_queues(&p.url, std::slice::from_ref(&queue))?;
    let connection = connect(p).await?;
    let channel = connection.open_channel(None).await?;
    let body = body(p.size);
    let args = BasicPublishArguments::new("", &queue);

    let meter = Meter::start(p.broker_pid, true);
    for _ in 0..p.messages {
        channel
            .basic_publish(BasicProperties::default(), body.clone(), args.clone())
            .await?;
    }
    wait_for_count(&channel, &queue, p.messages).await?;
    let measured = meter.stop();

    connection.close().await?;
    raw::delete_queues(&p.url, &[queue])?;
    Ok(Outcome::new(measured, p.messages))
}

/// Which publishes the broker confirmed, fed by [`ConfirmCallback`].
struct Confirms {
    /// `acked[tag]`; tags up to `low` are all settled.
    state: Mutex<(Vec<bool>, u64)>,
    /// How many publishes are settled (acked or nacked).
    settled: watch::Sender<u64>,
    nacked: watch::Sender<u64>,
}

impl Confirms {
    fn new(n: u64) -> Self {
        Self {
            state: Mutex::new((vec![false; n as usize + 1], 0)),
            settled: watch::Sender::new(0),
            nacked: watch::Sender::new(0),
        }
    }

    fn settle(&self, tag: u64, multiple: bool) -> u64 {
        let mut state = self.state.lock().expect("not poisoned");
        let (settled, low) = &mut *state;
        let n = settled.len() as u64 - 1;
        let tag = tag.min(n);
        let first = if multiple { *low + 1 } else { tag };
        let mut newly = 0;
        for t in first..=tag {
            if !settled[t as usize] {
                settled[t as usize] = true;
                newly += 1;
            }
        }
        while *low < n && settled[*low as usize + 1] {
            *low += 1;
        }
        self.settled.send_modify(|s| *s += newly);
        newly
    }
}

struct ConfirmCallback(Arc<Confirms>);

#[async_trait]
impl ChannelCallback for ConfirmCallback {
    async fn close(
        &mut self,
        _channel: &Channel,
        _close: CloseChannel,
    ) -> std::result::Result<(), amqprs::error::Error> {
        Ok(())
    }
    async fn cancel(
        &mut self,
        _channel: &Channel,
        _cancel: Cancel,
    ) -> std::result::Result<(), amqprs::error::Error> {
        Ok(())
    }
    async fn flow(
        &mut self,
        _channel: &Channel,
        active: bool,
    ) -> std::result::Result<bool, amqprs::error::Error> {
        Ok(active)
    }
    async fn publish_ack(&mut self, _channel: &Channel, ack: Ack) {
        self.0.settle(ack.delivery_tag(), ack.mutiple());
    }
    async fn publish_nack(&mut self, _channel: &Channel, nack: Nack) {
        let newly = self.0.settle(nack.delivery_tag(), nack.multiple());
        self.0.nacked.send_modify(|n| *n += newly);
    }
    async fn publish_return(
        &mut self,
        _channel: &Channel,
        _ret: Return,
        _properties: BasicProperties,
        _content: Vec<u8>,
    ) {
    }
}

async fn confirm(p: &Params) -> Result<Outcome> {
    let n = p.messages;
    let window = p.window as u64;
    let queue = queue_name("amqprs", "confirm");
    raw::declare_queues(&p.url, std::slice::from_ref(&queue))?;
    let connection = connect(p).await?;
    let channel = connection.open_channel(None).await?;
    let confirms = Arc::new(Confirms::new(n));
    channel
        .register_callback(ConfirmCallback(confirms.clone()))
        .await?;
    channel
        .confirm_select(ConfirmSelectArguments::default())
        .await?;
    let body = body(p.size);
    let args = BasicPublishArguments::new("", &queue);
    let mut settled = confirms.settled.subscribe();

    let meter = Meter::start(p.broker_pid, true);
    for sent in 0..n {
        // The window: wait while `window` publishes are unconfirmed.
        settled.wait_for(|&done| sent - done < window).await?;
        channel
            .basic_publish(BasicProperties::default(), body.clone(), args.clone())
            .await?;
    }
    settled.wait_for(|&done| done == n).await?;
    let measured = meter.stop();
    let nacked = *confirms.nacked.borrow();
    ensure(nacked == 0, || format!("{nacked} publishes were nacked"))?;

    connection.close().await?;
    raw::delete_queues(&p.url, &[queue])?;
    Ok(Outcome::new(measured, n))
}

async fn consume(p: &Params) -> Result<Outcome> {
    let n = p.messages;
    let queue = queue_name("amqprs", "consume");
    raw::prefill(&p.url, &queue, n, p.size)?;
    let connection = connect(p).await?;
    let channel = connection.open_channel(None).await?;
    channel
        .basic_qos(BasicQosArguments::new(0, p.prefetch, false))
        .await?;

    let meter = Meter::start(p.broker_pid, true);
    let (_tag, mut deliveries) = channel
        .basic_consume_rx(BasicConsumeArguments::new(&queue, "bench").finish())
        .await?;
    let mut received = 0u64;
    while received < n {
        let message = deliveries.recv().await.ok_or("the consumer ended")?;
        received += 1;
        let tag = message.deliver.as_ref().ok_or("no deliver")?.delivery_tag();
        let len = message.content.as_ref().map_or(0, Vec::len);
        ensure(tag == received && len == p.size, || {
            format!("delivery {received}: tag {tag}, {len} bytes")
        })?;
        if p.ack_every == 1 {
            channel
                .basic_ack(BasicAckArguments::new(tag, false))
                .await?;
        } else if tag.is_multiple_of(p.ack_every) || tag == n {
            channel.basic_ack(BasicAckArguments::new(tag, true)).await?;
        }
    }
    let measured = meter.stop();

    connection.close().await?;
    raw::verify_consumed_and_delete(&p.url, &queue)?;
    Ok(Outcome::new(measured, n))
}

async fn rpc(p: &Params) -> Result<Outcome> {
    let requests = queue_name("amqprs", "rpc-requests");
    let replies = queue_name("amqprs", "rpc-replies");
    raw::declare_queues(&p.url, &[requests.clone(), replies.clone()])?;
    let body = body(p.size);
    let total = p.warmup + p.messages;

    // The server, on its own connection: answer each request to its reply_to.
    let server_connection = connect(p).await?;
    let server_channel = server_connection.open_channel(None).await?;
    let (_tag, mut requests_in) = server_channel
        .basic_consume_rx(
            BasicConsumeArguments::new(&requests, "server")
                .auto_ack(true)
                .finish(),
        )
        .await?;
    let server = {
        let body = body.clone();
        tokio::spawn(async move {
            for _ in 0..total {
                let request = requests_in
                    .recv()
                    .await
                    .ok_or("the server's consumer ended")?;
                let properties = request
                    .basic_properties
                    .as_ref()
                    .ok_or("a request without properties")?;
                let reply_to = properties.reply_to().ok_or("a request without reply_to")?;
                let mut reply = BasicProperties::default();
                if let Some(id) = properties.correlation_id() {
                    reply.with_correlation_id(id);
                }
                server_channel
                    .basic_publish(
                        reply,
                        body.clone(),
                        BasicPublishArguments::new("", reply_to),
                    )
                    .await?;
            }
            Ok::<(), BoxError>(())
        })
    };

    let connection = connect(p).await?;
    let channel = connection.open_channel(None).await?;
    let (_tag, mut replies_in) = channel
        .basic_consume_rx(
            BasicConsumeArguments::new(&replies, "client")
                .auto_ack(true)
                .finish(),
        )
        .await?;
    let args = BasicPublishArguments::new("", &requests);
    let mut latencies = Vec::with_capacity(p.messages as usize);
    let mut meter = None;
    for i in 0..total {
        if i == p.warmup {
            meter = Some(Meter::start(p.broker_pid, true));
        }
        let id = correlation_id(i);
        let sent = Instant::now();
        let properties = BasicProperties::default()
            .with_correlation_id(&id)
            .with_reply_to(&replies)
            .finish();
        channel
            .basic_publish(properties, body.clone(), args.clone())
            .await?;
        let reply = replies_in.recv().await.ok_or("the reply consumer ended")?;
        let got = reply
            .basic_properties
            .as_ref()
            .and_then(|p| p.correlation_id());
        ensure(got.map(String::as_str) == Some(id.as_str()), || {
            "a reply to another request".into()
        })?;
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
    let queue = queue_name("amqprs", "fanin");
    raw::declare_queues(&p.url, std::slice::from_ref(&queue))?;
    let connection = connect(p).await?;
    let mut channels = Vec::new();
    for _ in 0..p.tasks {
        channels.push(connection.open_channel(None).await?);
    }
    let poll = connection.open_channel(None).await?;
    let body = body(p.size);
    let tasks = p.tasks as u64;
    let args = BasicPublishArguments::new("", &queue);

    let meter = Meter::start(p.broker_pid, true);
    let mut handles = Vec::new();
    for (i, channel) in (0..).zip(channels) {
        // Task i publishes its share; the first ones take the remainder.
        let share = p.messages / tasks + u64::from(i < p.messages % tasks);
        let (args, body) = (args.clone(), body.clone());
        handles.push(tokio::spawn(async move {
            for _ in 0..share {
                channel
                    .basic_publish(BasicProperties::default(), body.clone(), args.clone())
                    .await?;
            }
            Ok::<(), BoxError>(())
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
        .map(|c| queue_name("amqprs", &format!("idle{c}")))
        .collect();
    raw::declare_queues(&p.url, &queues)?;
    let connection = connect(p).await?;
    let mut consumers = Vec::with_capacity(p.consumers);
    let mut channels = Vec::with_capacity(p.channels);
    for queue in &queues {
        let channel = connection.open_channel(None).await?;
        for k in 0..p.consumers / p.channels {
            let args = BasicConsumeArguments::new(queue, &format!("c{k}")).finish();
            consumers.push(channel.basic_consume_rx(args).await?);
        }
        channels.push(channel);
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
