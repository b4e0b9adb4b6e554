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
    ConfirmSelectOptions, Confirmation, Connection, ConnectionOptions, Error, PublishConfirm,
    QueueDeclareOptions, QueueDeleteOptions, ReplyCode,
};

use crate::cli::{PerfArgs, QueueType};
use crate::failure::{Failure, close, connect_options, describe};
use crate::histogram::Histogram;
use crate::loss::{Ledger, Order, PRODUCER_HEADER, SEQUENCE_HEADER};

/// Exit status of `perf` when a message the broker confirmed was never received.
const EXIT_LOST: u8 = 6;

/// The header that carries a message's send time, in nanoseconds since the Unix epoch.
const SENT_HEADER: &str = "x-warren-sent";

/// What every producer and consumer task shares with the run.
struct Shared {
    sent: AtomicU64,
    confirmed: AtomicU64,
    nacked: AtomicU64,
    /// Publishes whose outcome a lost connection made unknown.
    unknown: AtomicU64,
    received: AtomicU64,
    reordered: AtomicU64,
    /// Who sent what, what was confirmed and what received.
    ledger: Ledger,
    /// What every connection of the run is made with.
    options: ConnectionOptions,
    recover: bool,
    /// Set when producers must stop publishing.
    stop_producers: AtomicBool,
    /// The first task failure; the run stops at once.
    failure: Mutex<Option<Failure>>,
    failed: Notify,
}

impl Shared {
    fn new(args: &PerfArgs, options: ConnectionOptions) -> Self {
        Self {
            sent: AtomicU64::new(0),
            confirmed: AtomicU64::new(0),
            nacked: AtomicU64::new(0),
            unknown: AtomicU64::new(0),
            received: AtomicU64::new(0),
            reordered: AtomicU64::new(0),
            ledger: Ledger::new(args.producers),
            options,
            recover: !args.no_recover,
            stop_producers: AtomicBool::new(false),
            failure: Mutex::new(None),
            failed: Notify::new(),
        }
    }

    /// Connects for `purpose`, recovering (and saying so on stderr) unless --no-recover.
    async fn connect(&self, purpose: &str) -> Result<Connection, Failure> {
        connect_options(self.options.clone(), purpose, self.recover).await
    }

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
    /// Consuming a stream: from its first message (`x-stream-offset`).
    stream: bool,
}

#[derive(Default)]
struct ProducerReport {
    confirm_latency: Histogram,
    last_sent: Option<Instant>,
    last_confirmed: Option<Instant>,
    /// The longest time between two consecutive publishes of this producer.
    max_pause: Duration,
}

#[derive(Default)]
struct ConsumerReport {
    latency: Histogram,
    last_received: Option<Instant>,
    /// The longest time between two consecutive deliveries to this consumer.
    max_pause: Duration,
}

pub async fn run(url: &str, args: PerfArgs) -> Result<(), Failure> {
    check(&args)?;
    let options: ConnectionOptions = match args.uris.as_slice() {
        [] => url.parse()?,
        uris => ConnectionOptions::from_uris(uris)?,
    };
    let admin = connect_options(options.clone(), "perf", false).await?;
    let result = with_queue(options, &admin, args).await;
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
    if args.queue_type == QueueType::Stream && args.autoack {
        return Err(Failure::new(
            "a stream is consumed with acknowledgements (and a prefetch): drop --autoack",
        ));
    }
    if !args.rate.is_finite() || args.rate < 0.0 || (args.rate > 0.0 && args.rate < MIN_RATE) {
        return Err(Failure::new(format!(
            "--rate must be a number of messages per second: 0 (no limit) or at least {MIN_RATE}"
        )));
    }
    Ok(())
}

/// The slowest `--rate` taken: one message every 1 000 seconds. Slower ones would make the
/// pacing's arithmetic overflow, and mean nothing in a benchmark.
const MIN_RATE: f64 = 0.001;

/// `wait` after `start`, at most a century: a wait too long for the clock (`--duration
/// 1e15h`) would make the sum panic, and a century is as good as forever here.
fn later(start: Instant, wait: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    start + wait.min(CENTURY)
}

/// The declaration of a queue of `kind`: quorum queues and streams are durable.
fn queue_options(kind: QueueType) -> QueueDeclareOptions {
    match kind {
        QueueType::Classic => QueueDeclareOptions::default(),
        QueueType::Quorum | QueueType::Stream => QueueDeclareOptions {
            durable: true,
            arguments: FieldTable::new().with("x-queue-type", kind.name()),
            ..Default::default()
        },
    }
}

/// Sets up the queue, runs, and deletes the queue if this run created it.
async fn with_queue(
    options: ConnectionOptions,
    admin: &Connection,
    args: PerfArgs,
) -> Result<(), Failure> {
    let declare = queue_options(args.queue_type);
    let (queue, created) = match &args.queue {
        Some(name) => {
            ensure_queue(admin, name, declare).await?;
            (name.clone(), false)
        }
        None => {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let name = format!("warren-perf-{}-{nanos}", std::process::id());
            let channel = admin.open_channel().await?;
            channel.queue_declare(&name, declare).await?;
            let _ = channel.close().await;
            (name, true)
        }
    };
    let result = perf(options, &queue, &args).await;
    if created && let Ok(channel) = admin.open_channel().await {
        // A big backlog takes a while to delete.
        let _ = channel
            .with_timeout(Duration::from_secs(60))
            .queue_delete(&queue, QueueDeleteOptions::default())
            .await;
    }
    result
}

/// Declares `queue` with `declare` unless it exists (whatever its flags).
async fn ensure_queue(
    admin: &Connection,
    queue: &str,
    declare: QueueDeclareOptions,
) -> Result<(), Failure> {
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
            channel.queue_declare(queue, declare).await?;
            let _ = channel.close().await;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

async fn perf(options: ConnectionOptions, queue: &str, args: &PerfArgs) -> Result<(), Failure> {
    let shared = Arc::new(Shared::new(args, options));
    let (stop_consumers, stop_consumers_rx) = watch::channel(false);
    let stream = args.queue_type == QueueType::Stream;
    let consumer_settings = ConsumerSettings {
        autoack: args.autoack,
        multiple_ack: args.multiple_ack,
        // A stream needs a prefetch to deliver at all.
        prefetch: if stream && args.prefetch == 0 {
            1000
        } else {
            args.prefetch
        },
        stream,
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
    let deadline = args.duration.map(|d| later(start, d));
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

    // Draining: consumers may catch up with what was sent (with confirms: with everything
    // confirmed), within the drain timeout.
    if args.consumers > 0 && args.producers > 0 && !has_failed(&shared) {
        let sent = shared.sent.load(Ordering::Acquire);
        let drain_deadline = later(stopped, args.drain_timeout);
        let caught_up = || match args.confirm {
            Some(_) => shared.ledger.all_confirmed_received(),
            None => shared.ledger.received_count() >= sent,
        };
        while !caught_up() && Instant::now() < drain_deadline {
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

    let report = report(
        args,
        queue,
        &shared,
        start,
        stopped,
        &producer_reports,
        &consumer_reports,
    );
    print!(
        "{}",
        if args.json {
            json(&report)
        } else {
            text(&report)
        }
    );
    match report.lost {
        Some(lost) if lost > 0 => Err(Failure::with_code(
            format!("{lost} messages the broker confirmed were never received"),
            EXIT_LOST,
        )),
        _ => Ok(()),
    }
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
    queue: String,
    settings: ProducerSettings,
    shared: Arc<Shared>,
    start: Instant,
) -> ProducerReport {
    let connection = match shared.connect(&format!("perf producer {id}")).await {
        Ok(connection) => connection,
        Err(failure) => {
            shared.fail(failure);
            return ProducerReport::default();
        }
    };
    let report = match produce(id, &connection, &queue, &settings, &shared, start).await {
        Ok(report) => report,
        Err(error) => {
            shared.fail(Failure::new(format!("producer {id}: {}", describe(&error))));
            ProducerReport::default()
        }
    };
    close(&connection).await;
    report
}

/// A publish waiting for its confirm: when it was sent, its sequence number, its confirm, its
/// place in the window.
type InFlight = (Instant, u64, PublishConfirm, OwnedSemaphorePermit);

async fn produce(
    id: u32,
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
    let collector = tokio::spawn(collect(
        id,
        confirms,
        shared.clone(),
        settings.drain_timeout,
    ));

    let body = Bytes::from(vec![b'x'; settings.size]);
    let interval = (settings.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / settings.rate));
    let sent_header = ShortString::from_static(SENT_HEADER);
    let producer_header = ShortString::from_static(PRODUCER_HEADER);
    let sequence_header = ShortString::from_static(SEQUENCE_HEADER);
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
        headers.insert(producer_header.clone(), FieldValue::I64(i64::from(id)));
        headers.insert(sequence_header.clone(), FieldValue::I64(sent as i64));
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
        let sequence = sent;
        sent += 1;
        shared.sent.fetch_add(1, Ordering::Relaxed);
        if let Some(previous) = report.last_sent {
            report.max_pause = report.max_pause.max(published - previous);
        }
        report.last_sent = Some(published);
        match permit {
            Some(permit) => {
                let _ = in_flight.send((published, sequence, confirm, permit));
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

/// Awaits the confirms of producer `id` as they come, in any order; once the producer stops,
/// waits at most `drain` for the rest.
async fn collect(
    id: u32,
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
                Some((sent_at, sequence, confirm, permit)) => pending.push(async move {
                    let outcome = confirm.await;
                    drop(permit);
                    (sent_at, sequence, outcome)
                }),
                None => {
                    open = false;
                    drain_until = later(Instant::now(), drain);
                }
            },
            Some((sent_at, sequence, outcome)) = pending.next(), if !pending.is_empty() => {
                let now = Instant::now();
                match outcome {
                    Ok(Confirmation::Ack) => {
                        shared.confirmed.fetch_add(1, Ordering::Relaxed);
                        shared.ledger.confirmed(id, sequence);
                        histogram.record(micros(now - sent_at));
                        last = Some(now);
                    }
                    Ok(_) => {
                        shared.nacked.fetch_add(1, Ordering::Relaxed);
                    }
                    // The connection was lost before the broker answered: it may or may not
                    // have the message.
                    Err(error) if error.is_retryable() => {
                        shared.unknown.fetch_add(1, Ordering::Relaxed);
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
    queue: String,
    settings: ConsumerSettings,
    shared: Arc<Shared>,
    ready: oneshot::Sender<()>,
    stop: watch::Receiver<bool>,
) -> ConsumerReport {
    let connection = match shared.connect(&format!("perf consumer {id}")).await {
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
    let arguments = match settings.stream {
        true => FieldTable::new().with("x-stream-offset", "first"),
        false => FieldTable::new(),
    };
    let mut consumer = channel
        .basic_consume(
            queue,
            BasicConsumeOptions {
                no_ack: settings.autoack,
                arguments,
                ..Default::default()
            },
        )
        .await?;
    let _ = ready.send(());

    let mut report = ConsumerReport::default();
    let mut order = Order::default();
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
        if let Some(previous) = report.last_received {
            report.max_pause = report.max_pause.max(now - previous);
        }
        report.last_received = Some(now);
        let header = |name: &str| {
            delivery
                .properties
                .headers
                .as_ref()
                .and_then(|headers| headers.get(name))
                .and_then(FieldValue::as_i64)
        };
        if let Some(sent) = header(SENT_HEADER) {
            let nanos = (unix_nanos() - sent).max(0) as u64;
            report.latency.record(nanos / 1000);
        }
        if let (Some(producer), Some(sequence)) = (header(PRODUCER_HEADER), header(SEQUENCE_HEADER))
            && let (Ok(producer), Ok(sequence)) = (u32::try_from(producer), u64::try_from(sequence))
            && shared.ledger.received(producer, sequence)
        {
            order.note(producer, sequence);
        }
        if !settings.autoack {
            unacked += 1;
            last_tag = delivery.delivery_tag();
            if unacked >= settings.multiple_ack {
                let options = BasicAckOptions {
                    multiple: settings.multiple_ack > 1,
                };
                match channel.basic_ack(last_tag, options).await {
                    // From before a lost connection: the broker delivers them again.
                    Ok(()) | Err(Error::StaleDelivery { .. }) => {}
                    Err(error) => break Err(error),
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
    shared
        .reordered
        .fetch_add(order.reordered, Ordering::Relaxed);
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

/// The final report's numbers, for the text summary and for `--json`.
struct Report {
    queue: String,
    setup: Vec<String>,
    elapsed: Duration,
    /// Counts and rates: the rate is over the time from the start to the last such event.
    sent: Option<(u64, f64)>,
    confirmed: Option<(u64, f64)>,
    nacked: u64,
    /// Publishes still waiting for an answer when the run ended (the unknown ones apart).
    unconfirmed: u64,
    /// Publishes whose outcome a lost connection made unknown.
    unknown: u64,
    received: Option<(u64, f64)>,
    /// Loss checks, when the run both produced and consumed.
    lost: Option<u64>,
    duplicated: Option<u64>,
    reordered: Option<u64>,
    confirm_latency: Option<Histogram>,
    end_to_end_latency: Option<Histogram>,
    max_publish_pause: Option<Duration>,
    max_consume_pause: Option<Duration>,
}

#[allow(clippy::too_many_arguments)]
fn report(
    args: &PerfArgs,
    queue: &str,
    shared: &Shared,
    start: Instant,
    stopped: Instant,
    producers: &[ProducerReport],
    consumers: &[ConsumerReport],
) -> Report {
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
    let unknown = shared.unknown.load(Ordering::Acquire);
    let received = shared.received.load(Ordering::Acquire);
    let loss = shared.ledger.loss();
    let checked = args.producers > 0 && args.consumers > 0;
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
    let producing = args.producers > 0;
    let confirming = args.confirm.is_some();
    let consuming = args.consumers > 0;
    Report {
        queue: queue.to_owned(),
        setup,
        elapsed: stopped - start,
        sent: producing.then(|| (sent, rate(sent, span(last_sent)))),
        confirmed: confirming.then(|| (confirmed, rate(confirmed, span(last_confirmed)))),
        nacked,
        unconfirmed: sent.saturating_sub(confirmed + nacked + unknown),
        unknown,
        received: consuming.then(|| (received, rate(received, span(last_received)))),
        lost: (checked && confirming).then_some(loss.lost),
        duplicated: checked.then_some(loss.duplicated),
        reordered: checked.then(|| shared.reordered.load(Ordering::Acquire)),
        confirm_latency: confirming.then_some(confirm_latency),
        end_to_end_latency: consuming.then_some(end_to_end),
        max_publish_pause: producing.then(|| {
            producers
                .iter()
                .map(|p| p.max_pause)
                .max()
                .unwrap_or_default()
        }),
        max_consume_pause: consuming.then(|| {
            consumers
                .iter()
                .map(|c| c.max_pause)
                .max()
                .unwrap_or_default()
        }),
    }
}

/// The report as text, a line per measure.
fn text(report: &Report) -> String {
    let mut out = format!(
        "warren perf on queue {}: {}\n",
        report.queue,
        report.setup.join(", ")
    );
    out += &format!("time:       {:.2} s\n", report.elapsed.as_secs_f64());
    if let Some((sent, rate)) = report.sent {
        out += &format!("sent:       {sent} msgs, {rate:.0} msgs/s\n");
    }
    if let Some((confirmed, rate)) = report.confirmed {
        out += &format!(
            "confirmed:  {confirmed} msgs, {rate:.0} msgs/s ({} nacked, {} unconfirmed, {} \
             unknown after a lost connection)\n",
            report.nacked, report.unconfirmed, report.unknown
        );
    }
    if let Some((received, rate)) = report.received {
        out += &format!("received:   {received} msgs, {rate:.0} msgs/s\n");
    }
    if let (Some(duplicated), Some(reordered)) = (report.duplicated, report.reordered) {
        let lost = report
            .lost
            .map_or("not checked (no confirms)".to_owned(), |n| n.to_string());
        out += &format!(
            "loss:       lost {lost} (confirmed, never received), duplicated {duplicated}, \
             reordered {reordered}\n"
        );
    }
    if let Some(latency) = &report.confirm_latency {
        out += &format!("publish-to-confirm latency: {}\n", percentiles(latency));
    }
    if let Some(latency) = &report.end_to_end_latency {
        out += &format!("end-to-end latency:         {}\n", percentiles(latency));
    }
    let pauses: Vec<String> = [
        ("between publishes", report.max_publish_pause),
        ("between deliveries", report.max_consume_pause),
    ]
    .into_iter()
    .filter_map(|(what, pause)| Some(format!("{what} {}", millis(pause?))))
    .collect();
    out += &format!("longest pause:              {}\n", pauses.join(", "));
    out
}

/// The report as one JSON object on one line. Absent measures (no producers, no confirms,
/// no consumers) are `null`; times are in seconds (`elapsed_s`) or milliseconds (`*_ms`).
fn json(report: &Report) -> String {
    fn number(out: &mut String, key: &str, value: Option<impl std::fmt::Display>) {
        match value {
            Some(value) => out.push_str(&format!(",\"{key}\":{value}")),
            None => out.push_str(&format!(",\"{key}\":null")),
        }
    }
    fn latency(out: &mut String, key: &str, histogram: Option<&Histogram>) {
        let ms = |micros: u64| micros as f64 / 1000.0;
        match histogram {
            Some(h) if h.len() > 0 => out.push_str(&format!(
                ",\"{key}\":{{\"p50\":{},\"p95\":{},\"p99\":{},\"max\":{},\"samples\":{}}}",
                ms(h.percentile(50.0)),
                ms(h.percentile(95.0)),
                ms(h.percentile(99.0)),
                ms(h.max()),
                h.len()
            )),
            _ => out.push_str(&format!(",\"{key}\":null")),
        }
    }
    let ms = |pause: Duration| pause.as_secs_f64() * 1000.0;
    let mut out = String::from("{\"queue\":");
    crate::show::json_string(&mut out, &report.queue);
    out.push_str(",\"setup\":");
    crate::show::json_string(&mut out, &report.setup.join(", "));
    number(&mut out, "elapsed_s", Some(report.elapsed.as_secs_f64()));
    number(&mut out, "sent", report.sent.map(|(n, _)| n));
    number(&mut out, "sent_per_s", report.sent.map(|(_, r)| r));
    number(&mut out, "confirmed", report.confirmed.map(|(n, _)| n));
    number(
        &mut out,
        "confirmed_per_s",
        report.confirmed.map(|(_, r)| r),
    );
    number(&mut out, "nacked", report.confirmed.map(|_| report.nacked));
    number(
        &mut out,
        "unconfirmed",
        report.confirmed.map(|_| report.unconfirmed),
    );
    number(
        &mut out,
        "unknown",
        report.confirmed.map(|_| report.unknown),
    );
    number(&mut out, "received", report.received.map(|(n, _)| n));
    number(&mut out, "received_per_s", report.received.map(|(_, r)| r));
    number(&mut out, "lost", report.lost);
    number(&mut out, "duplicated", report.duplicated);
    number(&mut out, "reordered", report.reordered);
    latency(
        &mut out,
        "confirm_latency_ms",
        report.confirm_latency.as_ref(),
    );
    latency(
        &mut out,
        "end_to_end_latency_ms",
        report.end_to_end_latency.as_ref(),
    );
    number(
        &mut out,
        "max_publish_pause_ms",
        report.max_publish_pause.map(ms),
    );
    number(
        &mut out,
        "max_consume_pause_ms",
        report.max_consume_pause.map(ms),
    );
    out.push_str("}\n");
    out
}

fn millis(duration: Duration) -> String {
    format!("{:.3} ms", duration.as_secs_f64() * 1000.0)
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
