//! OpenTelemetry (feature `opentelemetry`): spans through the global tracer provider, W3C
//! trace context in message headers through the global propagator, metrics through the global
//! meter provider.
//!
//! The names follow the OpenTelemetry semantic conventions for messaging (RabbitMQ): spans
//! `{exchange} publish` (producer), `{queue} process` (consumer, a child of the context the
//! publisher injected), `ack`/`nack`/`reject` (settle) and one per synchronous method
//! (`queue.declare`, client); metrics `messaging.client.sent.messages`,
//! `messaging.client.consumed.messages`, `messaging.client.operation.duration` and
//! `messaging.process.duration`, plus warren's own `warren.*` instruments observed from the
//! connections' counters.
//!
//! The metric instruments are made once, from the meter provider installed at the first use:
//! install it before connecting.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Instant;

use opentelemetry::metrics::{Counter, Histogram, Meter};
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue, global};

use super::{SYSTEM, Server, exchange_name};
use crate::Error;
use crate::message::Envelope;
use crate::protocol::BasicProperties;
use crate::shared::connection::ConnectionShared;
use crate::wire::{FieldTable, FieldValue, LongString, ShortString};

/// The instrumentation scope of warren's spans and metrics.
const SCOPE: &str = "warren";

/// The W3C trace context headers: an application that set one keeps its own.
const TRACEPARENT: &str = "traceparent";

/// warren's tracer, from the tracer provider installed when it is first needed.
fn tracer() -> &'static global::BoxedTracer {
    static TRACER: OnceLock<global::BoxedTracer> = OnceLock::new();
    TRACER.get_or_init(|| global::tracer(SCOPE))
}

/// Starts a span under `parent`; its attributes are made only if it records (a no-op or
/// unsampled span costs little more than its name).
fn start_span(
    name: impl Into<Cow<'static, str>>,
    kind: SpanKind,
    parent: &Context,
    attributes: impl FnOnce() -> Vec<KeyValue>,
) -> Context {
    let tracer = tracer();
    let mut span = tracer
        .span_builder(name)
        .with_kind(kind)
        .start_with_context(tracer, parent);
    if span.is_recording() {
        span.set_attributes(attributes());
    }
    parent.with_span(span)
}

/// One operation's OpenTelemetry span (publish, settle, synchronous method), with what its
/// metrics need.
pub(crate) struct Operation {
    cx: Context,
    started: Instant,
    /// Attributes of its metrics (`None`: it records none).
    metric: Option<Vec<KeyValue>>,
}

impl Operation {
    /// Starts a publish's span as a child of the current context, and injects its context
    /// into a copy of `properties` (returned) unless they carry a `traceparent` already or the
    /// propagator injects nothing.
    pub(crate) fn publish(
        exchange: &str,
        routing_key: &str,
        properties: &BasicProperties,
        body_size: usize,
        server: impl FnOnce() -> Server,
    ) -> (Self, Option<BasicProperties>) {
        let server = server();
        let exchange = exchange_name(exchange).to_owned();
        let cx = start_span(
            format!("{exchange} publish"),
            SpanKind::Producer,
            &Context::current(),
            || {
                let mut attributes = vec![
                    KeyValue::new("messaging.system", SYSTEM),
                    KeyValue::new("messaging.operation.type", "send"),
                    KeyValue::new("messaging.operation.name", "publish"),
                    KeyValue::new("messaging.destination.name", exchange.clone()),
                    KeyValue::new(
                        "messaging.rabbitmq.destination.routing_key",
                        routing_key.to_owned(),
                    ),
                    KeyValue::new("messaging.message.body.size", body_size as i64),
                    KeyValue::new("server.address", server.address.clone()),
                    KeyValue::new("server.port", i64::from(server.port)),
                ];
                message_ids(properties, &mut attributes);
                attributes
            },
        );
        let injected = inject(&cx, properties);
        let operation = Self {
            cx,
            started: Instant::now(),
            metric: Some(vec![
                KeyValue::new("messaging.system", SYSTEM),
                KeyValue::new("messaging.operation.name", "publish"),
                KeyValue::new("messaging.destination.name", exchange),
                KeyValue::new("server.address", server.address),
                KeyValue::new("server.port", i64::from(server.port)),
            ]),
        };
        (operation, injected)
    }

    /// Starts the span of a synchronous method (`queue.declare`, ...).
    pub(crate) fn rpc(method: &'static str, channel: u16, server: impl FnOnce() -> Server) -> Self {
        let server = server();
        let cx = start_span(method, SpanKind::Client, &Context::current(), || {
            vec![
                KeyValue::new("messaging.system", SYSTEM),
                KeyValue::new("messaging.operation.name", method),
                KeyValue::new("messaging.rabbitmq.channel", i64::from(channel)),
                KeyValue::new("server.address", server.address.clone()),
                KeyValue::new("server.port", i64::from(server.port)),
            ]
        });
        Self {
            cx,
            started: Instant::now(),
            metric: Some(vec![
                KeyValue::new("messaging.system", SYSTEM),
                KeyValue::new("messaging.operation.name", method),
                KeyValue::new("server.address", server.address),
                KeyValue::new("server.port", i64::from(server.port)),
            ]),
        }
    }

    /// Starts the span of an acknowledgement (`ack`, `nack` or `reject`): a child of the
    /// current context, which [`within`] makes the delivery's `process` span.
    pub(crate) fn settle(operation: &'static str, delivery_tag: u64) -> Self {
        let cx = start_span(operation, SpanKind::Client, &Context::current(), || {
            vec![
                KeyValue::new("messaging.system", SYSTEM),
                KeyValue::new("messaging.operation.type", "settle"),
                KeyValue::new("messaging.operation.name", operation),
                KeyValue::new(
                    "messaging.rabbitmq.message.delivery_tag",
                    delivery_tag as i64,
                ),
            ]
        });
        Self {
            cx,
            started: Instant::now(),
            metric: None,
        }
    }

    /// Ends the span (with `error.type` and an error status on failure) and records the
    /// operation's metrics.
    pub(crate) fn end(self, error: Option<&Error>) {
        let span = self.cx.span();
        if let Some(error) = error {
            span.set_attribute(KeyValue::new("error.type", error.kind_name()));
            span.set_status(Status::error(error.to_string()));
        }
        span.end();
        let Some(mut attributes) = self.metric else {
            return;
        };
        if let Some(error) = error {
            attributes.push(KeyValue::new("error.type", error.kind_name()));
        }
        let instruments = instruments();
        instruments
            .operation_duration
            .record(self.started.elapsed().as_secs_f64(), &attributes);
        if attributes.iter().any(|kv| {
            kv.key.as_str() == "messaging.operation.name" && kv.value.as_str() == "publish"
        }) {
            instruments.sent.add(1, &attributes);
        }
    }
}

/// A delivery's `process` span, ended (and its duration recorded) when the delivery is
/// dropped.
pub(crate) struct Process {
    cx: Context,
    started: Instant,
    attributes: Vec<KeyValue>,
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("span_context", self.cx.span().span_context())
            .finish_non_exhaustive()
    }
}

impl Process {
    /// Starts the span of processing a delivery from `queue`: a child of the trace context in
    /// its headers (as the global propagator reads them), or of the current context if they
    /// carry none.
    pub(crate) fn start(
        queue: &str,
        envelope: &Envelope,
        properties: &BasicProperties,
        body_size: usize,
        server: impl FnOnce() -> Server,
    ) -> Self {
        let server = server();
        let parent = match &properties.headers {
            Some(headers) => {
                let extracted = global::get_text_map_propagator(|propagator| {
                    propagator.extract_with_context(&Context::current(), &HeaderExtractor(headers))
                });
                if extracted.span().span_context().is_valid() {
                    extracted
                } else {
                    Context::current()
                }
            }
            None => Context::current(),
        };
        let cx = start_span(
            format!("{queue} process"),
            SpanKind::Consumer,
            &parent,
            || {
                let mut attributes = vec![
                    KeyValue::new("messaging.system", SYSTEM),
                    KeyValue::new("messaging.operation.type", "process"),
                    KeyValue::new("messaging.operation.name", "process"),
                    KeyValue::new("messaging.destination.name", queue.to_owned()),
                    KeyValue::new(
                        "messaging.rabbitmq.destination.routing_key",
                        envelope.routing_key.to_string(),
                    ),
                    KeyValue::new(
                        "messaging.rabbitmq.message.delivery_tag",
                        envelope.delivery_tag as i64,
                    ),
                    KeyValue::new(
                        "messaging.consumer.group.name",
                        envelope.consumer_tag.to_string(),
                    ),
                    KeyValue::new("messaging.message.body.size", body_size as i64),
                    KeyValue::new("server.address", server.address.clone()),
                    KeyValue::new("server.port", i64::from(server.port)),
                ];
                message_ids(properties, &mut attributes);
                attributes
            },
        );
        let metric = vec![
            KeyValue::new("messaging.system", SYSTEM),
            KeyValue::new("messaging.operation.name", "process"),
            KeyValue::new("messaging.destination.name", queue.to_owned()),
            KeyValue::new("server.address", server.address),
            KeyValue::new("server.port", i64::from(server.port)),
        ];
        instruments().consumed.add(1, &metric);
        Self {
            cx,
            started: Instant::now(),
            attributes: metric,
        }
    }

    /// The context holding the span, for the application to attach or parent its own spans.
    pub(crate) fn context(&self) -> &Context {
        &self.cx
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.cx.span().end();
        instruments()
            .process_duration
            .record(self.started.elapsed().as_secs_f64(), &self.attributes);
    }
}

/// Runs `future` within the delivery's process context (if any), so that the spans it
/// starts are children of the `process` span.
pub(crate) async fn within<F: Future>(process: Option<&Process>, future: F) -> F::Output {
    use opentelemetry::context::FutureExt;
    match process {
        Some(process) => future.with_context(process.cx.clone()).await,
        None => future.await,
    }
}

/// `messaging.message.id` and `messaging.message.conversation_id`, when the message has them.
fn message_ids(properties: &BasicProperties, attributes: &mut Vec<KeyValue>) {
    if let Some(id) = &properties.message_id {
        attributes.push(KeyValue::new("messaging.message.id", id.to_string()));
    }
    if let Some(id) = &properties.correlation_id {
        attributes.push(KeyValue::new(
            "messaging.message.conversation_id",
            id.to_string(),
        ));
    }
}

/// `properties` with the trace context of `cx` in their headers, if the propagator wrote
/// any and the application had not set a `traceparent` itself.
fn inject(cx: &Context, properties: &BasicProperties) -> Option<BasicProperties> {
    if properties
        .headers
        .as_ref()
        .is_some_and(|headers| headers.get(TRACEPARENT).is_some())
    {
        return None;
    }
    let mut fields = Fields(Vec::new());
    global::get_text_map_propagator(|propagator| propagator.inject_context(cx, &mut fields));
    if fields.0.is_empty() {
        // A no-op propagator: the properties go as they are, not copied.
        return None;
    }
    let mut properties = properties.clone();
    let headers = properties.headers.get_or_insert_with(FieldTable::new);
    for (key, value) in fields.0 {
        headers.insert(key, FieldValue::LongString(LongString::from(value)));
    }
    Some(properties)
}

/// The propagation fields a propagator writes, before they become headers.
struct Fields(Vec<(ShortString, String)>);

impl Injector for Fields {
    fn set(&mut self, key: &str, value: String) {
        // Propagators write short ASCII keys; a key over 255 bytes cannot be a header.
        if let Ok(key) = ShortString::try_from(key) {
            self.0.push((key, value));
        }
    }
}

/// Reads propagation fields from headers (long strings that are UTF-8).
struct HeaderExtractor<'a>(&'a FieldTable);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match self.0.get(key)? {
            FieldValue::LongString(value) => value.to_str(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(key, _)| key.as_str()).collect()
    }
}

/// The instruments, made once from the global meter provider.
struct Instruments {
    sent: Counter<u64>,
    consumed: Counter<u64>,
    operation_duration: Histogram<f64>,
    process_duration: Histogram<f64>,
}

fn meter() -> Meter {
    global::meter(SCOPE)
}

fn instruments() -> &'static Instruments {
    static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();
    INSTRUMENTS.get_or_init(|| {
        let meter = meter();
        // Durations of messaging operations are short: the conventions' buckets.
        let buckets = vec![
            0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
        ];
        register_observed(&meter);
        Instruments {
            sent: meter
                .u64_counter("messaging.client.sent.messages")
                .with_unit("{message}")
                .with_description("Messages the client published")
                .build(),
            consumed: meter
                .u64_counter("messaging.client.consumed.messages")
                .with_unit("{message}")
                .with_description("Deliveries the application took from consumer streams")
                .build(),
            operation_duration: meter
                .f64_histogram("messaging.client.operation.duration")
                .with_unit("s")
                .with_description("Duration of publishes and synchronous methods")
                .with_boundaries(buckets.clone())
                .build(),
            process_duration: meter
                .f64_histogram("messaging.process.duration")
                .with_unit("s")
                .with_description(
                    "Time from taking a delivery from its stream to dropping it (processing)",
                )
                .with_boundaries(buckets)
                .build(),
        }
    })
}

/// The live connections whose counters the observed instruments report.
fn connections() -> &'static Mutex<Vec<Weak<ConnectionShared>>> {
    static CONNECTIONS: OnceLock<Mutex<Vec<Weak<ConnectionShared>>>> = OnceLock::new();
    CONNECTIONS.get_or_init(Mutex::default)
}

/// Makes a new connection's counters observable through warren's own instruments.
pub(crate) fn register(shared: &Arc<ConnectionShared>) {
    let _ = instruments();
    let mut connections = connections().lock().unwrap_or_else(|e| e.into_inner());
    connections.retain(|weak| weak.strong_count() > 0);
    connections.push(Arc::downgrade(shared));
}

/// Calls `observe` with each live connection and its attributes.
fn each_connection(mut observe: impl FnMut(&ConnectionShared, &[KeyValue])) {
    let connections = connections().lock().unwrap_or_else(|e| e.into_inner());
    for shared in connections.iter().filter_map(Weak::upgrade) {
        let server = shared.server();
        let attributes = [
            KeyValue::new("messaging.system", SYSTEM),
            KeyValue::new("server.address", server.address),
            KeyValue::new("server.port", i64::from(server.port)),
        ];
        observe(&shared, &attributes);
    }
}

/// warren's own instruments, read from the connections' counters when the reader collects.
fn register_observed(meter: &Meter) {
    type Read = fn(&ConnectionShared) -> u64;
    let counters: [(&'static str, &'static str, &'static str, Read); 5] = [
        (
            "warren.publish.nacked",
            "{message}",
            "Publishes the broker refused (basic.nack)",
            |shared| shared.counters.snapshot().nacked,
        ),
        (
            "warren.publish.returned",
            "{message}",
            "Messages the broker returned as unroutable (basic.return)",
            |shared| shared.counters.snapshot().returned,
        ),
        (
            "warren.connection.recoveries",
            "{recovery}",
            "Times a lost connection was reconnected and restored",
            |shared| shared.counters.snapshot().recoveries,
        ),
        (
            "warren.connection.blocked.duration",
            "ms",
            "Time the broker kept the connection blocked (resource alarms)",
            |shared| shared.blocked_millis(),
        ),
        (
            "warren.connection.disconnects",
            "{disconnect}",
            "Times the connection was lost without the application asking",
            |shared| shared.counters.snapshot().disconnects,
        ),
    ];
    for (name, unit, description, read) in counters {
        let _ = meter
            .u64_observable_counter(Cow::Borrowed(name))
            .with_unit(unit)
            .with_description(description)
            .with_callback(move |observer| {
                each_connection(|shared, attributes| observer.observe(read(shared), attributes))
            })
            .build();
    }
    let gauges: [(&'static str, &'static str, &'static str, Read); 2] = [
        (
            "warren.publish.awaiting_confirms",
            "{message}",
            "Publishes sent in confirm mode and not yet confirmed",
            |shared| shared.awaiting_confirms(),
        ),
        (
            "warren.consumer.buffer.size",
            "By",
            "Bytes of deliveries consumers hold beyond their prefetch",
            |shared| shared.consumer_budget.used() as u64,
        ),
    ];
    for (name, unit, description, read) in gauges {
        let _ = meter
            .u64_observable_gauge(Cow::Borrowed(name))
            .with_unit(unit)
            .with_description(description)
            .with_callback(move |observer| {
                each_connection(|shared, attributes| observer.observe(read(shared), attributes))
            })
            .build();
    }
}
