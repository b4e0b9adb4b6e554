//! How fast recovery restores a large topology, beside the same declarations made one round
//! trip at a time (the way RabbitMQ's Java client recovers), in the same run.
//!
//! ```sh
//! cargo run --release -p warren-bench --bin topology-recovery -- --entities 1000 --rounds 3
//! cargo run --release -p warren-bench --bin topology-recovery -- --rtt 1
//! ```
//!
//! Each round: a connection declares a direct exchange, then `--entities` queues, one binding
//! per queue and one consumer per queue (spread over 10 channels). The broker closes the
//! connection (`rabbitmqctl close_connection`), warren recovers it, and the round measures the
//! time from the loss to `Recovered` (reconnecting included; the backoff's first delay is set
//! to 1 ms); a message published to each queue must then reach its consumer. Then another
//! connection makes the same declarations one call at a time, each awaited before the next,
//! against the same broker state (the queues and the exchange exist, as they do when a client
//! recovers): that is the one-at-a-time time. Prints one line per round and the medians, as
//! markdown.
//!
//! On the loopback interface a round trip costs less than the broker's work on a request, so
//! one-at-a-time pays little for waiting and the ratio mostly measures how much of the
//! broker's work overlaps. `--rtt MS` puts a relay that delays each direction by half of that
//! in front of the broker, for both connections, as a network between client and broker
//! would; the round trip it gives is measured and printed (timers round up to about 1 ms).

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use warren::protocol::BasicProperties;
use warren::wire::{FieldTable, FieldValue, ShortString};
use warren::{
    BasicConsumeOptions, BasicPublishOptions, Connection, ConnectionEvent, ConnectionOptions,
    ExchangeDeclareOptions, ExchangeKind, QueueDeclareOptions, RecoveryPolicy,
};
use warren_bench::delay::DelayRelay;
use warren_bench::{BoxError, DEFAULT_URL, QUEUE_EXPIRES_MS, Result};

const CHANNELS: usize = 10;

struct Args {
    url: String,
    entities: usize,
    rounds: usize,
    /// The round trip to add between client and broker.
    rtt: Option<Duration>,
}

fn args() -> Result<Args> {
    let mut args = Args {
        url: std::env::var("AMQP_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned()),
        entities: 1000,
        rounds: 3,
        rtt: None,
    };
    let mut given = std::env::args().skip(1);
    while let Some(arg) = given.next() {
        let mut value = || given.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--url" => args.url = value()?,
            "--entities" => args.entities = value()?.parse()?,
            "--rounds" => args.rounds = value()?.parse()?,
            "--rtt" => args.rtt = Some(Duration::from_secs_f64(value()?.parse::<f64>()? / 1e3)),
            other => {
                return Err(format!(
                    "unknown option {other}; options: --url URL --entities N --rounds N --rtt MS"
                )
                .into());
            }
        }
    }
    Ok(args)
}

/// Declares the topology of a round on `channels`, one call at a time: a direct exchange, and
/// per queue the queue, its binding and a consumer. Returns the consumers.
async fn declare_one_at_a_time(
    channels: &[warren::Channel],
    name: &str,
    exchange: &str,
    entities: usize,
) -> Result<Vec<(String, warren::Consumer)>> {
    channels[0]
        .exchange_declare(
            exchange,
            ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
        )
        .await?;
    let mut expires = FieldTable::new();
    expires.insert(
        ShortString::from_static("x-expires"),
        FieldValue::I32(QUEUE_EXPIRES_MS),
    );
    let mut consumers = Vec::with_capacity(entities);
    for i in 0..entities {
        let channel = &channels[i % channels.len()];
        let queue = format!("{name}-q{i}");
        let options = QueueDeclareOptions {
            arguments: expires.clone(),
            ..Default::default()
        };
        channel.queue_declare(&queue, options).await?;
        channel
            .queue_bind(&queue, exchange, &queue, Default::default())
            .await?;
        let consumer = channel
            .basic_consume(
                &queue,
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
            )
            .await?;
        consumers.push((queue, consumer));
    }
    Ok(consumers)
}

async fn open_channels(connection: &Connection) -> Result<Vec<warren::Channel>> {
    let mut channels = Vec::new();
    for _ in 0..CHANNELS {
        channels.push(connection.open_channel().await?);
    }
    Ok(channels)
}

/// One round: (the declarations one round trip at a time, recovery of the same).
async fn round(
    options: &ConnectionOptions,
    args: &Args,
    round: usize,
) -> Result<(Duration, Duration)> {
    let name = format!("topology-recovery-{}-{round}", std::process::id());
    let exchange = format!("{name}-x");
    let options = options.clone();
    let connection = Connection::connect_with(
        options
            .clone()
            .connection_name(&name)
            .recovery(RecoveryPolicy::default().initial_delay(Duration::from_millis(1))),
    )
    .await?;
    let channels = open_channels(&connection).await?;
    let mut consumers = declare_one_at_a_time(&channels, &name, &exchange, args.entities).await?;

    let mut events = connection.events();
    let pid = connection_pid(&name)?;
    rabbitmqctl(&["close_connection", &pid, "topology recovery benchmark"])?;
    let recovered = loop {
        match tokio::time::timeout(Duration::from_secs(120), events.next()).await {
            Ok(Some(ConnectionEvent::Recovered { took, .. })) => break took,
            Ok(Some(ConnectionEvent::TopologyRecoveryFailed { entity, error })) => {
                return Err(format!("recovery failed for {entity}: {error}").into());
            }
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => return Err("the connection did not recover".into()),
        }
    };

    // Every queue is bound and consumed again.
    for (queue, _) in &consumers {
        channels[0]
            .basic_publish(
                &exchange,
                queue,
                BasicPublishOptions::default(),
                queue.clone(),
                BasicProperties::default(),
            )
            .await?;
    }
    for (queue, consumer) in &mut consumers {
        let delivery = tokio::time::timeout(Duration::from_secs(20), consumer.next())
            .await
            .map_err(|_| format!("nothing reached the consumer of {queue}"))?
            .ok_or("a consumer ended")??;
        if delivery.body != queue.as_bytes() {
            return Err(format!("the consumer of {queue} got another queue's message").into());
        }
    }

    // The same declarations, one round trip at a time, on another connection: what a client
    // that recovers entity by entity does, against the same broker state.
    let other = Connection::connect_with(options).await?;
    let other_channels = open_channels(&other).await?;
    let started = Instant::now();
    let _ = declare_one_at_a_time(&other_channels, &name, &exchange, args.entities).await?;
    let one_at_a_time = started.elapsed();

    other.close().await?;
    for (queue, _) in &consumers {
        channels[0].queue_delete(queue, Default::default()).await?;
    }
    channels[0]
        .exchange_delete(&exchange, Default::default())
        .await?;
    connection.close().await?;
    Ok((one_at_a_time, recovered))
}

fn rabbitmqctl(args: &[&str]) -> Result<String> {
    let output = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()?;
    if !output.status.success() {
        return Err(format!(
            "rabbitmqctl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The broker's pid of the connection named `name`.
fn connection_pid(name: &str) -> Result<String> {
    let listing = rabbitmqctl(&[
        "list_connections",
        "-q",
        "--no-table-headers",
        "pid",
        "client_properties",
    ])?;
    let needle = format!("{{\"connection_name\",\"{name}\"}}");
    listing
        .lines()
        .find(|line| line.contains(&needle))
        .and_then(|line| line.split('\t').next())
        .map(str::to_owned)
        .ok_or_else(|| BoxError::from(format!("the broker does not list {name}")))
}

/// The options to connect with: through a delaying relay when `--rtt` is given. Prints the
/// round trip they give.
async fn options(args: &Args) -> Result<ConnectionOptions> {
    let mut options: ConnectionOptions = args.url.parse()?;
    let mut through = "the broker";
    if let Some(rtt) = args.rtt {
        let broker = tokio::net::lookup_host((options.get_host(), options.get_port()))
            .await?
            .next()
            .ok_or("the broker's host has no address")?;
        let relay = DelayRelay::start(broker, rtt / 2).await?;
        options = options
            .host(relay.address().ip().to_string())
            .port(relay.address().port());
        through = "the delaying relay";
    }
    println!(
        "round trip to {through}: {:.2} ms (median of 50 basic.qos calls)\n",
        measured_rtt(&options).await?.as_secs_f64() * 1e3
    );
    Ok(options)
}

/// The median time of a call on a connection made with `options`.
async fn measured_rtt(options: &ConnectionOptions) -> Result<Duration> {
    let connection = Connection::connect_with(options.clone()).await?;
    let channel = connection.open_channel().await?;
    let mut times = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        channel.basic_qos(10, Default::default()).await?;
        times.push(started.elapsed());
    }
    connection.close().await?;
    Ok(median(times))
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

#[tokio::main]
async fn main() {
    let result = async {
        let args = args()?;
        let options = options(&args).await?;
        let mut sequential = Vec::new();
        let mut recovery = Vec::new();
        println!(
            "| round | one at a time ({n} queues + {n} bindings + {n} consumers) | recovery | ratio |",
            n = args.entities
        );
        println!("|--:|--:|--:|--:|");
        for i in 0..args.rounds {
            let (one, recovered) = round(&options, &args, i).await?;
            println!(
                "| {} | {:.0} ms | {:.0} ms | {:.1}x |",
                i + 1,
                one.as_secs_f64() * 1e3,
                recovered.as_secs_f64() * 1e3,
                one.as_secs_f64() / recovered.as_secs_f64()
            );
            sequential.push(one);
            recovery.push(recovered);
        }
        let (one, recovered) = (median(sequential), median(recovery));
        println!(
            "| median | {:.0} ms | {:.0} ms | {:.1}x |",
            one.as_secs_f64() * 1e3,
            recovered.as_secs_f64() * 1e3,
            one.as_secs_f64() / recovered.as_secs_f64()
        );
        Ok::<_, BoxError>(())
    }
    .await;
    if let Err(error) = result {
        eprintln!("topology-recovery: {error}");
        std::process::exit(1);
    }
}
