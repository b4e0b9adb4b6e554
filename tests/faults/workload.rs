//! [`Workload`]: confirmed persistent publishes and a consumer acking each, on connections of
//! their own, while a fault runs; what it returns says what was lost and how long things
//! paused.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use warren::wire::FieldTable;
use warren::{
    BasicConsumeOptions, BasicPublishOptions, Confirmation, Connection, ConnectionEvent,
    ConnectionOptions, Error, ExchangeKind, QueueDeclareOptions,
};

use super::loss::{LossChecker, LossReport};

/// What a workload does; build it with [`Workload::new`] and the setters.
#[derive(Debug, Clone)]
pub struct Workload {
    publisher: ConnectionOptions,
    consumer: ConnectionOptions,
    queue: String,
    queue_arguments: FieldTable,
    exchange: Option<String>,
    transient_queue: Option<String>,
    total: usize,
    rate: f64,
    window: usize,
    outside_tasks: bool,
}

/// Progress of a running workload, for the fault to look at.
#[derive(Debug)]
pub struct Progress {
    /// The ledger of ids.
    pub checker: Arc<LossChecker>,
    confirms: Mutex<Vec<Instant>>,
    consumes: Mutex<Vec<Instant>>,
    /// Set when every publish has its outcome.
    pub published_all: AtomicBool,
}

impl Progress {
    /// Distinct ids confirmed so far.
    pub fn confirmed(&self) -> usize {
        self.checker.confirmed_count()
    }

    /// Waits until at least `count` ids are confirmed, or every publish has its outcome
    /// (within a minute).
    pub async fn wait_confirmed(&self, count: usize) {
        self.wait_until("publishing progress", || self.confirmed() >= count)
            .await;
    }

    /// Waits until `reached` holds, or every publish has its outcome (within a minute).
    async fn wait_until(&self, what: &str, reached: impl Fn() -> bool) {
        crate::common::eventually_within(Duration::from_secs(60), what, || {
            let reached = reached() || self.published_all.load(Ordering::Acquire);
            async move { reached }
        })
        .await;
    }

    /// Deliveries acknowledged so far (an acknowledgement the broker could not take, made on
    /// a connection that was lost since, is not counted).
    pub fn consumed(&self) -> usize {
        lock(&self.consumes).len()
    }

    /// Waits until at least `count` deliveries are acknowledged, or every publish has its
    /// outcome (within a minute). After a fault, waiting for both this and
    /// [`Progress::wait_confirmed`] means both connections work again, so that the next fault
    /// is a recovery of its own rather than one merged into the last.
    pub async fn wait_consumed(&self, count: usize) {
        self.wait_until("consuming progress", || self.consumed() >= count)
            .await;
    }
}

/// What a workload found.
#[derive(Debug)]
pub struct Outcome {
    pub report: LossReport,
    /// How long each recovery of the consumer's connection took (loss to consuming again).
    pub recoveries: Vec<Duration>,
    /// The endpoints the consumer's connection recovered to, in order.
    pub recovered_to: Vec<String>,
    /// Acknowledgements refused as stale (deliveries from before a loss).
    pub stale_acks: usize,
    /// The longest time without a confirm, and without a delivery, while the run lasted.
    pub max_publish_pause: Duration,
    pub max_consume_pause: Duration,
    /// Acknowledgements and publishes the loops' threads wrote to the socket themselves
    /// (`ConnectionStats::direct_writes` of both connections).
    pub direct_writes: u64,
}

impl Outcome {
    /// The report, the recoveries and the pauses on one line.
    pub fn summary(&self) -> String {
        format!(
            "{}; recoveries {} (p50 {:?}, max {:?}) to {:?}; stale acks {}; longest pause \
             publishing {:?}, consuming {:?}",
            self.report,
            self.recoveries.len(),
            percentile(&self.recoveries, 0.5),
            percentile(&self.recoveries, 1.0),
            self.recovered_to,
            self.stale_acks,
            self.max_publish_pause,
            self.max_consume_pause
        )
    }
}

/// The `p` quantile of `times` (zero when empty).
pub fn percentile(times: &[Duration], p: f64) -> Duration {
    let mut times = times.to_vec();
    if times.is_empty() {
        return Duration::ZERO;
    }
    times.sort();
    times[((times.len() - 1) as f64 * p).round() as usize]
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn longest_gap(times: &[Instant]) -> Duration {
    times
        .windows(2)
        .map(|pair| pair[1] - pair[0])
        .max()
        .unwrap_or_default()
}

async fn connect(options: ConnectionOptions) -> Connection {
    crate::common::within("connecting", Connection::connect_with(options))
        .await
        .expect("connecting for the workload")
}

impl Workload {
    /// `total` persistent messages, at most `rate` a second and 100 unconfirmed at a time,
    /// published by a connection made with `publisher` to durable queue `queue`, consumed by
    /// one made with `consumer` (prefetch 100, an ack each). Give each options its own
    /// `connection_name`.
    pub fn new(
        publisher: ConnectionOptions,
        consumer: ConnectionOptions,
        queue: &str,
        total: usize,
        rate: f64,
    ) -> Self {
        Self {
            publisher,
            consumer,
            queue: queue.to_owned(),
            queue_arguments: FieldTable::new(),
            exchange: None,
            transient_queue: None,
            total,
            rate,
            window: 100,
            outside_tasks: false,
        }
    }

    /// Runs the publishing and the consuming loop each on a thread of its own in `block_on`
    /// (as in `#[tokio::main]`), outside the runtime's tasks, where they write their
    /// publishes and acknowledgements to the socket themselves while the driver is idle;
    /// by default they run in tasks.
    pub fn outside_tasks(mut self) -> Self {
        self.outside_tasks = true;
        self
    }

    /// The queue.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The `connection_name`s of the publisher's and the consumer's connections.
    pub fn connection_names(&self) -> [String; 2] {
        [&self.publisher, &self.consumer]
            .map(|options| options.get_connection_name().unwrap_or_default().to_owned())
    }

    /// Declares the queue with these arguments (`x-queue-type`, ...).
    pub fn queue_arguments(mut self, arguments: FieldTable) -> Self {
        self.queue_arguments = arguments;
        self
    }

    /// Publishes through transient direct exchange `exchange`, bound to the queue: recovery
    /// must declare it and the binding again after a node restart.
    pub fn through_exchange(mut self, exchange: &str) -> Self {
        self.exchange = Some(exchange.to_owned());
        self
    }

    /// The consumer also declares transient queue `queue`, which must exist at the end.
    pub fn with_transient_queue(mut self, queue: &str) -> Self {
        self.transient_queue = Some(queue.to_owned());
        self
    }

    /// Runs the workload and `fault` together; returns once the publisher is done, the fault
    /// has returned and every confirmed message was consumed (or fails the test). Deletes what
    /// it declared.
    pub async fn run<F, Fut>(self, fault: F) -> Outcome
    where
        F: FnOnce(Arc<Progress>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let progress = Arc::new(Progress {
            checker: Arc::new(LossChecker::new()),
            confirms: Mutex::new(Vec::new()),
            consumes: Mutex::new(Vec::new()),
            published_all: AtomicBool::new(false),
        });
        let publisher = connect(self.publisher.clone()).await;
        let consumer = connect(self.consumer.clone()).await;
        let durable = QueueDeclareOptions {
            durable: true,
            arguments: self.queue_arguments.clone(),
            ..Default::default()
        };

        let channel = crate::common::confirm_channel(&publisher).await;
        crate::common::declare_queue_with(&channel, &self.queue, durable.clone()).await;
        let (exchange, routing_key) = match &self.exchange {
            Some(exchange) => {
                crate::common::declare_exchange(&channel, exchange, ExchangeKind::Direct).await;
                crate::common::within(
                    "queue.bind",
                    channel.queue_bind(&self.queue, exchange, "k", Default::default()),
                )
                .await
                .expect("queue.bind");
                (exchange.clone(), "k".to_owned())
            }
            None => (String::new(), self.queue.clone()),
        };

        let consuming = crate::common::open(&consumer).await;
        crate::common::within("basic.qos", consuming.basic_qos(100, Default::default()))
            .await
            .expect("basic.qos");
        crate::common::declare_queue_with(&consuming, &self.queue, durable).await;
        if let Some(queue) = &self.transient_queue {
            crate::common::declare_queue(&consuming, queue).await;
        }
        let mut stream = crate::common::within(
            "basic.consume",
            consuming.basic_consume(&self.queue, BasicConsumeOptions::default()),
        )
        .await
        .expect("basic.consume");

        let recoveries = Arc::new(Mutex::new(Vec::new()));
        let not_restored = Arc::new(Mutex::new(Vec::new()));
        let mut watching = Vec::new();
        for (who, connection) in [("publisher", &publisher), ("consumer", &consumer)] {
            let mut events = connection.events();
            let recoveries = recoveries.clone();
            let not_restored = not_restored.clone();
            watching.push(tokio::spawn(async move {
                let show = std::env::var_os("WARREN_TEST_EVENTS").is_some();
                while let Some(event) = events.next().await {
                    if show {
                        eprintln!("[{who}] {event:?}");
                    }
                    match event {
                        ConnectionEvent::Recovered { took, endpoint, .. } if who == "consumer" => {
                            lock(&recoveries).push((took, endpoint))
                        }
                        ConnectionEvent::TopologyRecoveryFailed { entity, error } => {
                            lock(&not_restored).push(format!("the {who}'s {entity}: {error}"))
                        }
                        _ => {}
                    }
                }
            }));
        }

        let stop = Arc::new(AtomicBool::new(false));
        let consuming_task = {
            let progress = progress.clone();
            let stop = stop.clone();
            self.start(async move {
                let mut stale = 0;
                while !stop.load(Ordering::Acquire) {
                    let next =
                        tokio::time::timeout(Duration::from_millis(200), stream.next()).await;
                    let delivery = match next {
                        Err(_) => continue,
                        Ok(Some(Ok(delivery))) => delivery,
                        Ok(Some(Err(error))) => panic!("the consumer's stream failed: {error}"),
                        Ok(None) => panic!("the consumer's stream ended"),
                    };
                    progress
                        .checker
                        .consumed_delivery(&delivery)
                        .expect("every message carries an id");
                    match delivery.ack(Default::default()).await {
                        Ok(()) => lock(&progress.consumes).push(Instant::now()),
                        Err(Error::StaleDelivery { .. }) => stale += 1,
                        Err(error) => panic!("acking: {error}"),
                    }
                }
                stale
            })
        };

        let publishing_task = {
            let progress = progress.clone();
            let (total, rate, window_size) = (self.total, self.rate, self.window);
            self.start(async move {
                let started = Instant::now();
                let mut window = VecDeque::new();
                let settle = |id: u64, outcome: Result<Confirmation, Error>| {
                    if matches!(outcome, Ok(Confirmation::Ack)) {
                        lock(&progress.confirms).push(Instant::now());
                    }
                    progress.checker.outcome(id, &outcome);
                };
                for n in 0..total {
                    let id = progress.checker.next_id();
                    progress.checker.published(id);
                    let publish = channel.basic_publish(
                        &exchange,
                        &routing_key,
                        BasicPublishOptions::default(),
                        format!("message {id}"),
                        LossChecker::properties(id, true),
                    );
                    match publish.await {
                        Ok(confirm) => window.push_back((id, confirm)),
                        Err(_) => progress.checker.unknown(id),
                    }
                    while window.len() >= window_size {
                        let (id, confirm) = window.pop_front().expect("a full window");
                        settle(id, confirm.await);
                    }
                    if n % 100 == 99 {
                        let due = Duration::from_secs_f64((n + 1) as f64 / rate);
                        if let Some(wait) = due.checked_sub(started.elapsed()) {
                            tokio::time::sleep(wait).await;
                        }
                    }
                }
                for (id, confirm) in window {
                    settle(id, confirm.await);
                }
                progress.published_all.store(true, Ordering::Release);
            })
        };

        let reporting = std::env::var_os("WARREN_TEST_EVENTS").map(|_| {
            let progress = progress.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    eprintln!("[progress] {}", progress.checker.report());
                }
            })
        });
        let faulting = fault(progress.clone());
        let publishing = async {
            crate::common::within_for(Duration::from_secs(300), "publishing", publishing_task)
                .await
                .expect("the publisher did not panic");
        };
        tokio::join!(faulting, publishing);

        crate::common::eventually_within(
            Duration::from_secs(90),
            "every confirmed message to be consumed",
            || {
                let caught_up = progress.checker.all_confirmed_consumed();
                async move { caught_up }
            },
        )
        .await;
        // A little longer, to see duplicates that were on their way.
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, Ordering::Release);
        let stale_acks = crate::common::within("the consumer to stop", consuming_task)
            .await
            .expect("the consumer did not panic");

        // What recovery declared again is there; then everything goes.
        let observer = crate::common::open(&consumer).await;
        if let Some(queue) = &self.transient_queue {
            assert!(
                crate::common::queue_exists(&consumer, queue).await,
                "the transient queue was declared again"
            );
            let _ = observer.queue_delete(queue, Default::default()).await;
        }
        if let Some(exchange) = &self.exchange {
            assert!(
                crate::common::exchange_exists(&consumer, exchange).await,
                "the transient exchange was declared again"
            );
            let _ = observer.exchange_delete(exchange, Default::default()).await;
        }
        let _ = observer.queue_delete(&self.queue, Default::default()).await;
        let direct_writes = publisher.stats().direct_writes + consumer.stats().direct_writes;
        for connection in [&publisher, &consumer] {
            let _ = crate::common::within("connection.close", connection.close()).await;
        }
        for task in watching.into_iter().chain(reporting) {
            task.abort();
        }
        let not_restored = lock(&not_restored).clone();
        assert!(
            not_restored.is_empty(),
            "recovery did not restore {not_restored:?}"
        );
        let recovered: Vec<(Duration, String)> = lock(&recoveries).clone();
        let confirms = lock(&progress.confirms).clone();
        let consumes = lock(&progress.consumes).clone();
        Outcome {
            report: progress.checker.report(),
            recoveries: recovered.iter().map(|(took, _)| *took).collect(),
            recovered_to: recovered
                .into_iter()
                .map(|(_, endpoint)| endpoint)
                .collect(),
            stale_acks,
            max_publish_pause: longest_gap(&confirms),
            max_consume_pause: longest_gap(&consumes),
            direct_writes,
        }
    }

    /// Runs one of the loops: in a task, or on a thread of its own in `block_on` (see
    /// [`Workload::outside_tasks`]). Resolves to its output, or to an error if it panicked.
    fn start<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> impl Future<Output = Result<T, String>> + 'static {
        let (done, result) = tokio::sync::oneshot::channel();
        if self.outside_tasks {
            let runtime = tokio::runtime::Handle::current();
            std::thread::spawn(move || {
                let _ = done.send(runtime.block_on(work));
            });
        } else {
            tokio::spawn(async move {
                let _ = done.send(work.await);
            });
        }
        async move { result.await.map_err(|_| "the loop panicked".to_owned()) }
    }
}
