//! `warren perf`: producers and consumers on their own connections, live rates, and a
//! summary with throughput and latency percentiles, in the manner of RabbitMQ's PerfTest.

use std::io::IsTerminal;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::join_all;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::sleep_until;
use warren::wire::{FieldTable, FieldValue, ShortString};
use warren::{
    BasicAckOptions, BasicConsumeOptions, BasicProperties, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, Confirmation, Connection, Error, PublishConfirm, QueueDeclareOptions,
    QueueDeleteOptions, ReplyCode,
};

use crate::cli::PerfArgs;
use crate::failure::{Failure, close, connect, describe};
use crate::histogram::Histogram;

/// The header that carries a message's send time, in nanoseconds since the Unix epoch.
const SENT_HEADER: &str = "x-warren-sent";

/// What every producer and consumer task shares with the run.
#[derive(Default)]
struct Shared {
    sent: AtomicU64,
    confirmed: AtomicU64,
    nacked: AtomicU64,
    received: AtomicU64,
    /// Set when producers must stop publishing.
    stop_producers: AtomicBool,
    /// The first task failure; the run stops at once.
    failure: Mutex<Option<Failure>>,
    failed: Notify,
}

impl Shared {
    fn fail(&self, failure: Failure) {
        let mut first = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert(failure);
        self.stop_producers.store(true, Ordering::Release);
        self.failed.notify_one();
    }
}

#[derive(Clone)]
struct ProducerSettings {
    size: usize,
    rate: f64,
    confirm: Option<u32>,
    count: Option<u64>,
    persistent: bool,
    drain_timeout: Duration,
}

#[derive(Clone, Copy)]
struct ConsumerSettings {
    autoack: bool,
    multiple_ack: u32,
    prefetch: u16,
}

#[derive(Default)]
struct ProducerReport {
    confirm_latency: Histogram,
    last_sent: Option<Instant>,
    last_confirmed: Option<Instant>,
}

#[derive(Default)]
struct ConsumerReport {
    latency: Histogram,
    last_received: Option<Instant>,
}

pub async fn run(url: &str, args: PerfArgs) -> Result<(), Failure> {
    check(&args)?;
    let admin = connect(url, "perf").await?;
    let result = with_queue(url, &admin, args).await;
    close(&admin).await;
    result
}

fn check(args: &PerfArgs) -> Result<(), Failure> {
    if args.producers == 0 && args.consumers == 0 {
        return Err(Failure::new("perf needs at least one producer or consumer"));
    }
    if args.confirm == Some(0) {
        return Err(Failure::new("--confirm must be at least 1"));
    }
    if args.multiple_ack == 0 {
        return Err(Failure::new("--multiple-ack must be at least 1"));
    }
    if !args.autoack && args.prefetch > 0 && args.multiple_ack > u32::from(args.prefetch) {
        return Err(Failure::new(format!(
            "--multiple-ack {} exceeds --prefetch {}: consumers would wait for messages the \
             broker holds back until they acknowledge",
            args.multiple_ack, args.prefetch
        )));
    }
    if !args.rate.is_finite() || args.rate < 0.0 {
        return Err(Failure::new(
            "--rate must be a number of messages per second, 0 or more",
        ));
    }
    Ok(())
}

/// Sets up the queue, runs, and deletes the queue if this run created it.
async fn with_queue(url: &str, admin: &Connection, args: PerfArgs) -> Result<(), Failure> {
    let (queue, created) = match &args.queue {
        Some(name) => {
            ensure_queue(admin, name).await?;
            (name.clone(), false)
        }
        None => {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let name = format!("warren-perf-{}-{nanos}", std::process::id());
            let channel = admin.open_channel().await?;
            channel
                .queue_declare(&name, QueueDeclareOptions::default())
                .await?;
            let _ = channel.close().await;
            (name, true)
        }
    };
    let result = perf(url, &queue, &args).await;
    if created && let Ok(channel) = admin.open_channel().await {
        // A big backlog takes a while to delete.
        let _ = channel
            .with_timeout(Duration::from_secs(60))
            .queue_delete(&queue, QueueDeleteOptions::default())
            .await;
    }
    result
}

/// Declares `queue` with default flags unless it exists (whatever its flags).
async fn ensure_queue(admin: &Connection, queue: &str) -> Result<(), Failure> {
    let channel = admin.open_channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    match channel.queue_declare(queue, passive).await {
        Ok(_) => {
            let _ = channel.close().await;
            Ok(())
        }
        // The 404 closed that channel.
        Err(e) if e.reply_code() == Some(ReplyCode::NOT_FOUND) => {
            let channel = admin.open_channel().await?;
            channel
                .queue_declare(queue, QueueDeclareOptions::default())
                .await?;
            let _ = channel.close().await;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

async fn perf(url: &str, queue: &str, args: &PerfArgs) -> Result<(), Failure> {
    let shared = Arc::new(Shared::default());
    let (stop_consumers, stop_consumers_rx) = watch::channel(false);
    let consumer_settings = ConsumerSettings {
        autoack: args.autoack,
        multiple_ack: args.multiple_ack,
        prefetch: args.prefetch,
    };
    let producer_settings = ProducerSettings {
        size: args.size,
        rate: args.rate,
        confirm: args.confirm,
        count: args.count,
        persistent: args.persistent,
        drain_timeout: args.drain_timeout,
    };

    // Consumers first, so that the first messages find them consuming.
    let mut consumers: Vec<JoinHandle<ConsumerReport>> = Vec::new();
    let mut ready = Vec::new();
    for id in 1..=args.consumers {
        let (ready_tx, ready_rx) = oneshot::channel();
        ready.push(ready_rx);
        consumers.push(tokio::spawn(consumer(
            id,
            url.to_owned(),
            queue.to_owned(),
            consumer_settings,
            shared.clone(),
            ready_tx,
            stop_consumers_rx.clone(),
        )));
    }
    for ready in ready {
        // A consumer that failed to start drops its sender, then records why.
        if ready.await.is_err() {
            let _ = stop_consumers.send(true);
            join_all(consumers).await;
            return Err(take_failure(&shared)
                .unwrap_or_else(|| Failure::new("a consumer stopped before it started")));
        }
    }

    let start = Instant::now();
    let mut producers: Vec<JoinHandle<ProducerReport>> = (1..=args.producers)
        .map(|id| {
            tokio::spawn(producer(
                id,
                url.to_owned(),
                queue.to_owned(),
                producer_settings.clone(),
                shared.clone(),
                start,
            ))
        })
        .collect();
    let progress = tokio::spawn(progress(
        shared.clone(),
        start,
        args.producers > 0,
        args.confirm.is_some(),
        args.consumers > 0,
    ));

    // Publishing: until the producers are done (--count), the deadline (--duration), Ctrl-C,
    // or a failure.
    let mut interrupted = pin!(crate::failure::stop_requested());
    let deadline = args.duration.map(|d| start + d);
    let until_deadline = async {
        match deadline {
            Some(deadline) => sleep_until(deadline.into()).await,
            None => std::future::pending().await,
        }
    };
    let production = async {
        if args.producers > 0 {
            join_all(producers.iter_mut()).await
        } else {
            // Consumers only: --count is what they receive in all.
            loop {
                let received = shared.received.load(Ordering::Relaxed);
                if args.count.is_some_and(|count| received >= count) {
                    break Vec::new();
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let mut produced = None;
    tokio::select! {
        results = production => produced = Some(results),
        () = until_deadline => {}
        _ = &mut interrupted => {}
        () = shared.failed.notified() => {}
    }
    shared.stop_producers.store(true, Ordering::Release);
    let produced = match produced {
        Some(results) => results,
        None => join_all(producers).await,
    };
    let producer_reports: Vec<ProducerReport> = produced.into_iter().flatten().collect();
    let stopped = Instant::now();

    // Draining: consumers may catch up with what was sent, within the drain timeout.
    if args.consumers > 0 && args.producers > 0 && !has_failed(&shared) {
        let sent = shared.sent.load(Ordering::Acquire);
        let drain_deadline = stopped + args.drain_timeout;
        while shared.received.load(Ordering::Acquire) < sent && Instant::now() < drain_deadline {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(10)) => {}
                _ = &mut interrupted => break,
                () = shared.failed.notified() => break,
            }
        }
    }
    let _ = stop_consumers.send(true);
    let consumer_reports: Vec<ConsumerReport> =
        join_all(consumers).await.into_iter().flatten().collect();
    progress.abort();
    let _ = progress.await;
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
    if let Some(failure) = take_failure(&shared) {
        return Err(failure);
    }

    let summary = summarize(
        args,
        queue,
        &shared,
        start,
        stopped,
        &producer_reports,
        &consumer_reports,
    );
    print!("{summary}");
    Ok(())
}

fn take_failure(shared: &Shared) -> Option<Failure> {
    shared
        .failure
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
}

fn has_failed(shared: &Shared) -> bool {
    shared
        .failure
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .is_some()
}

fn unix_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

// ===== producers =====

async fn producer(
    id: u32,
    url: String,
    queue: String,
    settings: ProducerSettings,
    shared: Arc<Shared>,
    start: Instant,
) -> ProducerReport {
    let connection = match connect(&url, &format!("perf producer {id}")).await {
        Ok(connection) => connection,
        Err(failure) => {
            shared.fail(failure);
            return ProducerReport::default();
        }
    };
    let report = match produce(&connection, &queue, &settings, &shared, start).await {
        Ok(report) => report,
        Err(error) => {
            shared.fail(Failure::new(format!("producer {id}: {}", describe(&error))));
            ProducerReport::default()
        }
    };
    close(&connection).await;
    report
}

type InFlight = (Instant, PublishConfirm, OwnedSemaphorePermit);

async fn produce(
    connection: &Connection,
    queue: &str,
    settings: &ProducerSettings,
    shared: &Arc<Shared>,
    start: Instant,
) -> Result<ProducerReport, Error> {
    let channel = connection.open_channel().await?;
    // The window is ours rather than ConfirmSelectOptions::max_in_flight, so that the send
    // time is taken once a place in the window is free, not before waiting for one.
    let window = match settings.confirm {
        Some(size) => {
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            Some(Arc::new(Semaphore::new(size as usize)))
        }
        None => None,
    };
    let (in_flight, confirms) = mpsc::unbounded_channel::<InFlight>();
    let collector = tokio::spawn(collect(confirms, shared.clone(), settings.drain_timeout));

    let body = Bytes::from(vec![b'x'; settings.size]);
    let interval = (settings.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / settings.rate));
    let sent_header = ShortString::from_static(SENT_HEADER);
    let mut report = ProducerReport::default();
    let mut sent = 0u64;
    let result = loop {
        if shared.stop_producers.load(Ordering::Acquire)
            || settings.count.is_some_and(|count| sent >= count)
        {
            break Ok(());
        }
        if let Some(interval) = interval {
            let due = start + interval.mul_f64(sent as f64);
            // Sleep in slices, to notice a stop while waiting at a slow rate.
            let now = Instant::now();
            if due > now {
                sleep_until((now + (due - now).min(Duration::from_millis(100))).into()).await;
                continue;
            }
        }
        let permit = match &window {
            Some(window) => match window.clone().acquire_owned().await {
                Ok(permit) => Some(permit),
                Err(_) => break Ok(()),
            },
            None => None,
        };
        let mut headers = FieldTable::new();
        headers.insert(sent_header.clone(), FieldValue::I64(unix_nanos()));
        let properties = BasicProperties {
            headers: Some(headers),
            delivery_mode: settings.persistent.then_some(2),
            ..Default::default()
        };
        let confirm = match channel
            .basic_publish(
                "",
                queue,
                BasicPublishOptions::default(),
                body.clone(),
                properties,
            )
            .await
        {
            Ok(confirm) => confirm,
            Err(error) => break Err(error),
        };
        let published = Instant::now();
        sent += 1;
        shared.sent.fetch_add(1, Ordering::Relaxed);
        report.last_sent = Some(published);
        match permit {
            Some(permit) => {
                let _ = in_flight.send((published, confirm, permit));
            }
            // Without confirm mode there is nothing to wait for.
            None => drop(confirm),
        }
    };
    drop(in_flight);
    if let Ok((histogram, last)) = collector.await {
        report.confirm_latency = histogram;
        report.last_confirmed = last;
    }
    result.map(|()| report)
}

/// Awaits the confirms of one producer as they come, in any order; once the producer stops,
/// waits at most `drain` for the rest.
async fn collect(
    mut in_flight: mpsc::UnboundedReceiver<InFlight>,
    shared: Arc<Shared>,
    drain: Duration,
) -> (Histogram, Option<Instant>) {
    let mut pending = FuturesUnordered::new();
    let mut histogram = Histogram::new();
    let mut last = None;
    let mut open = true;
    let mut drain_until = Instant::now();
    loop {
        tokio::select! {
            item = in_flight.recv(), if open => match item {
                Some((sent_at, confirm, permit)) => pending.push(async move {
                    let outcome = confirm.await;
                    drop(permit);
                    (sent_at, outcome)
                }),
                None => {
                    open = false;
                    drain_until = Instant::now() + drain;
                }
            },
            Some((sent_at, outcome)) = pending.next(), if !pending.is_empty() => {
                let now = Instant::now();
                match outcome {
                    Ok(Confirmation::Ack) => {
                        shared.confirmed.fetch_add(1, Ordering::Relaxed);
                        histogram.record(micros(now - sent_at));
                        last = Some(now);
                    }
                    Ok(_) => {
                        shared.nacked.fetch_add(1, Ordering::Relaxed);
                    }
                    // The channel closed: the producer reports why.
                    Err(_) => {}
                }
            }
            () = sleep_until(drain_until.into()), if !open && !pending.is_empty() => break,
            else => break,
        }
    }
    (histogram, last)
}

// ===== consumers =====

async fn consumer(
    id: u32,
    url: String,
    queue: String,
    settings: ConsumerSettings,
    shared: Arc<Shared>,
    ready: oneshot::Sender<()>,
    stop: watch::Receiver<bool>,
) -> ConsumerReport {
    let connection = match connect(&url, &format!("perf consumer {id}")).await {
        Ok(connection) => connection,
        Err(failure) => {
            shared.fail(failure);
            return ConsumerReport::default();
        }
    };
    let report = match consume(&connection, &queue, settings, &shared, ready, stop).await {
        Ok(report) => report,
        Err(error) => {
            shared.fail(Failure::new(format!("consumer {id}: {}", describe(&error))));
            ConsumerReport::default()
        }
    };
    close(&connection).await;
    report
}

async fn consume(
    connection: &Connection,
    queue: &str,
    settings: ConsumerSettings,
    shared: &Shared,
    ready: oneshot::Sender<()>,
    mut stop: watch::Receiver<bool>,
) -> Result<ConsumerReport, Error> {
    let channel = connection.open_channel().await?;
    if settings.prefetch > 0 {
        channel
            .basic_qos(settings.prefetch, BasicQosOptions::default())
            .await?;
    }
    let mut consumer = channel
        .basic_consume(
            queue,
            BasicConsumeOptions {
                no_ack: settings.autoack,
                ..Default::default()
            },
        )
        .await?;
    let _ = ready.send(());

    let mut report = ConsumerReport::default();
    let mut unacked = 0u32;
    let mut last_tag = 0;
    let result = loop {
        let delivery = tokio::select! {
            biased;
            _ = stop.changed() => break Ok(()),
            item = consumer.next() => match item {
                Some(Ok(delivery)) => delivery,
                Some(Err(error)) => break Err(error),
                None => break Ok(()),
            },
        };
        let now = Instant::now();
        shared.received.fetch_add(1, Ordering::Relaxed);
        report.last_received = Some(now);
        let sent = delivery
            .properties
            .headers
            .as_ref()
            .and_then(|headers| headers.get(SENT_HEADER))
            .and_then(FieldValue::as_i64);
        if let Some(sent) = sent {
            let nanos = (unix_nanos() - sent).max(0) as u64;
            report.latency.record(nanos / 1000);
        }
        if !settings.autoack {
            unacked += 1;
            last_tag = delivery.delivery_tag();
            if unacked >= settings.multiple_ack {
                let options = BasicAckOptions {
                    multiple: settings.multiple_ack > 1,
                };
                if let Err(error) = channel.basic_ack(last_tag, options).await {
                    break Err(error);
                }
                unacked = 0;
            }
        }
    };
    if unacked > 0 {
        let _ = channel
            .basic_ack(last_tag, BasicAckOptions { multiple: true })
            .await;
    }
    result.map(|()| report)
}

// ===== progress and summary =====

/// A line on stderr once a second with the rates of the last second: rewritten in place on a
/// terminal, one line per second otherwise.
async fn progress(
    shared: Arc<Shared>,
    start: Instant,
    producers: bool,
    confirms: bool,
    consumers: bool,
) {
    let tty = std::io::stderr().is_terminal();
    let second = Duration::from_secs(1);
    let mut ticker = tokio::time::interval_at((start + second).into(), second);
    let mut previous = (start, 0, 0, 0);
    let mut width = 0;
    loop {
        ticker.tick().await;
        let now = Instant::now();
        let counts = (
            shared.sent.load(Ordering::Relaxed),
            shared.confirmed.load(Ordering::Relaxed),
            shared.received.load(Ordering::Relaxed),
        );
        let seconds = (now - previous.0).as_secs_f64().max(1e-9);
        let rate = |now: u64, before: u64| (now - before) as f64 / seconds;
        let mut line = format!("warren perf: {:>3} s", (now - start).as_secs());
        if producers {
            line += &format!(" | sent {:.0} msg/s", rate(counts.0, previous.1));
        }
        if confirms {
            line += &format!(" | confirmed {:.0} msg/s", rate(counts.1, previous.2));
        }
        if consumers {
            line += &format!(" | received {:.0} msg/s", rate(counts.2, previous.3));
        }
        if tty {
            width = width.max(line.len());
            eprint!("\r{line:<width$}");
        } else {
            eprintln!("{line}");
        }
        previous = (now, counts.0, counts.1, counts.2);
    }
}

#[allow(clippy::too_many_arguments)]
fn summarize(
    args: &PerfArgs,
    queue: &str,
    shared: &Shared,
    start: Instant,
    stopped: Instant,
    producers: &[ProducerReport],
    consumers: &[ConsumerReport],
) -> String {
    let plural = |n: u32, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    let mut setup = vec![
        plural(args.producers, "producer"),
        plural(args.consumers, "consumer"),
        format!("{}-byte bodies", args.size),
    ];
    if args.rate > 0.0 {
        setup.push(format!("{} msg/s per producer", args.rate));
    }
    setup.push(match args.confirm {
        Some(window) => format!("confirms (window {window})"),
        None => "no confirms".to_owned(),
    });
    if args.consumers > 0 {
        setup.push(if args.autoack {
            "autoack".to_owned()
        } else if args.multiple_ack > 1 {
            format!("manual ack every {}", args.multiple_ack)
        } else {
            "manual ack".to_owned()
        });
        if args.prefetch > 0 {
            setup.push(format!("prefetch {}", args.prefetch));
        }
    }
    if args.persistent {
        setup.push("persistent".to_owned());
    }

    let sent = shared.sent.load(Ordering::Acquire);
    let confirmed = shared.confirmed.load(Ordering::Acquire);
    let nacked = shared.nacked.load(Ordering::Acquire);
    let received = shared.received.load(Ordering::Acquire);
    let span = |last: Option<Instant>| last.map_or(0.0, |last| (last - start).as_secs_f64());
    let rate = |count: u64, seconds: f64| {
        if seconds > 0.0 {
            count as f64 / seconds
        } else {
            0.0
        }
    };
    let last_sent = producers.iter().filter_map(|p| p.last_sent).max();
    let last_confirmed = producers.iter().filter_map(|p| p.last_confirmed).max();
    let last_received = consumers.iter().filter_map(|c| c.last_received).max();
    let mut confirm_latency = Histogram::new();
    for producer in producers {
        confirm_latency.merge(&producer.confirm_latency);
    }
    let mut end_to_end = Histogram::new();
    for consumer in consumers {
        end_to_end.merge(&consumer.latency);
    }

    let mut out = format!("warren perf on queue {queue}: {}\n", setup.join(", "));
    out += &format!("time:       {:.2} s\n", (stopped - start).as_secs_f64());
    if args.producers > 0 {
        out += &format!(
            "sent:       {sent} msgs, {:.0} msgs/s\n",
            rate(sent, span(last_sent))
        );
    }
    if args.confirm.is_some() {
        let unconfirmed = sent.saturating_sub(confirmed + nacked);
        out += &format!(
            "confirmed:  {confirmed} msgs, {:.0} msgs/s ({nacked} nacked, {unconfirmed} \
             unconfirmed)\n",
            rate(confirmed, span(last_confirmed))
        );
    }
    if args.consumers > 0 {
        out += &format!(
            "received:   {received} msgs, {:.0} msgs/s\n",
            rate(received, span(last_received))
        );
    }
    if args.confirm.is_some() {
        out += &format!(
            "publish-to-confirm latency: {}\n",
            percentiles(&confirm_latency)
        );
    }
    if args.consumers > 0 {
        out += &format!("end-to-end latency:         {}\n", percentiles(&end_to_end));
    }
    out
}

fn percentiles(histogram: &Histogram) -> String {
    if histogram.len() == 0 {
        return "no samples".to_owned();
    }
    let ms = |micros: u64| format!("{:.3} ms", micros as f64 / 1000.0);
    format!(
        "p50 {}, p95 {}, p99 {}, max {} ({} samples)",
        ms(histogram.percentile(50.0)),
        ms(histogram.percentile(95.0)),
        ms(histogram.percentile(99.0)),
        ms(histogram.max()),
        histogram.len()
    )
}
