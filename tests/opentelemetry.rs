//! Feature `opentelemetry` against the real broker, with opentelemetry_sdk's in-memory
//! exporters: the spans of a publish, a delivery's processing, an acknowledgement and a
//! synchronous method, with their attributes; the trace context carried from publisher to
//! consumer in the headers; the metrics.
//!
//! The providers are global, so every test of this binary shares one set (installed once,
//! before the first connection) and finds its own spans and points by unique queue names.

mod common;

use std::sync::OnceLock;

use common::*;
use futures_util::StreamExt;
use opentelemetry::context::FutureExt;
use opentelemetry::trace::{SpanKind, TraceContextExt, TraceId, Tracer};
use opentelemetry::{Context, KeyValue, Value, global};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use warren::protocol::BasicProperties;
use warren::wire::{FieldValue, LongString};
use warren::{BasicAckOptions, BasicConsumeOptions, Channel, QueueDeclareOptions};

struct Telemetry {
    spans: InMemorySpanExporter,
    metrics: InMemoryMetricExporter,
    meter_provider: SdkMeterProvider,
}

fn telemetry() -> &'static Telemetry {
    static TELEMETRY: OnceLock<Telemetry> = OnceLock::new();
    TELEMETRY.get_or_init(|| {
        let spans = InMemorySpanExporter::default();
        let tracer_provider = SdkTracerProvider::builder()
            .with_simple_exporter(spans.clone())
            .build();
        global::set_tracer_provider(tracer_provider);
        global::set_text_map_propagator(TraceContextPropagator::new());
        let metrics = InMemoryMetricExporter::default();
        let meter_provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(metrics.clone()).build())
            .build();
        global::set_meter_provider(meter_provider.clone());
        Telemetry {
            spans,
            metrics,
            meter_provider,
        }
    })
}

fn finished_spans() -> Vec<SpanData> {
    telemetry()
        .spans
        .get_finished_spans()
        .expect("finished spans")
}

/// The finished spans of trace `trace_id`.
fn spans_of(trace_id: TraceId) -> Vec<SpanData> {
    finished_spans()
        .into_iter()
        .filter(|span| span.span_context.trace_id() == trace_id)
        .collect()
}

/// Publishes `body` to `queue` within a new span `span` of the application's (ended after
/// the publish), and returns its trace id.
async fn publish_in_a_trace(
    channel: &Channel,
    queue: &str,
    span: &'static str,
    body: &[u8],
    properties: BasicProperties,
) -> TraceId {
    let tracer = global::tracer("the-application");
    let parent_cx = Context::current_with_span(tracer.start(span));
    let trace_id = parent_cx.span().span_context().trace_id();
    publish_with(channel, "", queue, body, properties)
        .with_context(parent_cx.clone())
        .await;
    parent_cx.span().end();
    trace_id
}

fn span_named(spans: &[SpanData], name: &str) -> SpanData {
    spans
        .iter()
        .find(|span| span.name == name)
        .cloned()
        .unwrap_or_else(|| {
            let names: Vec<_> = spans.iter().map(|s| s.name.to_string()).collect();
            panic!("no span {name:?} among {names:?}")
        })
}

fn attribute(span: &SpanData, key: &str) -> Value {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.clone())
        .unwrap_or_else(|| panic!("span {:?} has no {key}: {:?}", span.name, span.attributes))
}

#[tokio::test]
async fn the_consumer_continues_the_publishers_trace() {
    telemetry();
    run(async {
        let connection = connect().await;
        let channel = confirm_channel(&connection).await;
        let queue = exclusive_queue(&channel).await;

        // The application's own span, current while it publishes.
        let properties = BasicProperties::default()
            .with_message_id("order-17")
            .with_correlation_id("conversation-3");
        let trace_id =
            publish_in_a_trace(&channel, &queue, "handle-order", b"payload", properties).await;

        // Consumed outside any context: the trace comes from the headers only.
        let mut consumer = within(
            "basic.consume",
            channel.basic_consume(&queue, BasicConsumeOptions::default()),
        )
        .await
        .expect("basic.consume");
        let delivery = next_delivery(&mut consumer).await;
        let headers = delivery.properties.headers.as_ref().expect("headers");
        let Some(FieldValue::LongString(traceparent)) = headers.get("traceparent") else {
            panic!("no traceparent header: {headers:?}");
        };
        assert!(
            traceparent
                .to_str()
                .unwrap()
                .contains(&trace_id.to_string()),
            "{traceparent:?}"
        );
        let cx = delivery.otel_context().expect("a process context").clone();
        assert_eq!(cx.span().span_context().trace_id(), trace_id);
        delivery.ack(BasicAckOptions::default()).await.expect("ack");
        drop(delivery);
        connection.close().await.expect("close");

        let spans = spans_of(trace_id);
        let application = span_named(&spans, "handle-order");
        let publish = span_named(&spans, "amq.default publish");
        assert_eq!(publish.span_kind, SpanKind::Producer);
        assert_eq!(publish.parent_span_id, application.span_context.span_id());
        assert_eq!(
            attribute(&publish, "messaging.system"),
            Value::from("rabbitmq")
        );
        assert_eq!(
            attribute(&publish, "messaging.operation.type"),
            Value::from("send")
        );
        assert_eq!(
            attribute(&publish, "messaging.destination.name"),
            Value::from("amq.default")
        );
        assert_eq!(
            attribute(&publish, "messaging.rabbitmq.destination.routing_key"),
            Value::from(queue.clone())
        );
        assert_eq!(
            attribute(&publish, "messaging.message.id"),
            Value::from("order-17")
        );
        assert_eq!(
            attribute(&publish, "messaging.message.conversation_id"),
            Value::from("conversation-3")
        );
        assert_eq!(
            attribute(&publish, "messaging.message.body.size"),
            Value::I64(7)
        );
        attribute(&publish, "server.address");
        attribute(&publish, "server.port");

        let process = span_named(&spans, &format!("{queue} process"));
        assert_eq!(process.span_kind, SpanKind::Consumer);
        assert_eq!(process.parent_span_id, publish.span_context.span_id());
        assert!(process.parent_span_is_remote);
        assert_eq!(
            attribute(&process, "messaging.operation.type"),
            Value::from("process")
        );
        assert_eq!(
            attribute(&process, "messaging.destination.name"),
            Value::from(queue.clone())
        );
        assert_eq!(
            attribute(&process, "messaging.rabbitmq.message.delivery_tag"),
            Value::I64(1)
        );
        assert_eq!(
            attribute(&process, "messaging.message.id"),
            Value::from("order-17")
        );

        let ack = span_named(&spans, "ack");
        assert_eq!(ack.parent_span_id, process.span_context.span_id());
        assert_eq!(
            attribute(&ack, "messaging.operation.type"),
            Value::from("settle")
        );
    })
    .await;
}

#[tokio::test]
async fn a_message_got_continues_the_publishers_trace() {
    telemetry();
    run(async {
        let connection = connect().await;
        let channel = confirm_channel(&connection).await;
        let queue = exclusive_queue(&channel).await;
        let properties = BasicProperties::default();
        let trace_id =
            publish_in_a_trace(&channel, &queue, "send-invoice", b"got", properties).await;

        // Got outside any context: the trace comes from the headers only.
        let got = within(
            "basic.get",
            channel.basic_get(&queue, warren::BasicGetOptions::default()),
        )
        .await
        .expect("basic.get")
        .expect("a message");
        let cx = got.otel_context().expect("a process context").clone();
        assert_eq!(cx.span().span_context().trace_id(), trace_id);
        got.ack(BasicAckOptions::default()).await.expect("ack");
        drop(got);
        connection.close().await.expect("close");

        let spans = spans_of(trace_id);
        let publish = span_named(&spans, "amq.default publish");
        let process = span_named(&spans, &format!("{queue} process"));
        assert_eq!(process.span_kind, SpanKind::Consumer);
        assert_eq!(process.parent_span_id, publish.span_context.span_id());
        assert_eq!(
            attribute(&process, "messaging.destination.name"),
            Value::from(queue.clone())
        );
        let ack = span_named(&spans, "ack");
        assert_eq!(ack.parent_span_id, process.span_context.span_id());
    })
    .await;
}

#[tokio::test]
async fn a_synchronous_method_has_a_client_span_and_failures_an_error_type() {
    telemetry();
    run(async {
        let connection = connect().await;
        let channel = open(&connection).await;
        let tracer = global::tracer("the-application");
        let parent_cx = Context::current_with_span(tracer.start("setup"));
        let trace_id = parent_cx.span().span_context().trace_id();
        let missing = unique("missing");
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let error = async {
            exclusive_queue(&channel).await;
            channel.queue_declare(&missing, passive).await
        }
        .with_context(parent_cx.clone())
        .await
        .expect_err("a passive declare of a missing queue fails");
        parent_cx.span().end();
        connection.close().await.expect("close");

        let spans = spans_of(trace_id);
        let declares: Vec<&SpanData> = spans
            .iter()
            .filter(|span| span.name == "queue.declare")
            .collect();
        assert_eq!(declares.len(), 2, "{spans:?}");
        for declare in &declares {
            assert_eq!(declare.span_kind, SpanKind::Client);
            assert_eq!(
                attribute(declare, "messaging.operation.name"),
                Value::from("queue.declare")
            );
        }
        let failed = declares
            .iter()
            .find(|span| {
                span.attributes
                    .iter()
                    .any(|kv| kv.key.as_str() == "error.type")
            })
            .expect("the failed declare has error.type");
        assert_eq!(
            attribute(failed, "error.type"),
            Value::from(error.kind_name())
        );
    })
    .await;
}

#[tokio::test]
async fn an_application_traceparent_is_kept() {
    telemetry();
    run(async {
        let connection = connect().await;
        let channel = confirm_channel(&connection).await;
        let queue = exclusive_queue(&channel).await;
        let own = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let properties = BasicProperties::default()
            .with_header("traceparent", FieldValue::LongString(LongString::from(own)));
        let tracer = global::tracer("the-application");
        let cx = Context::current_with_span(tracer.start("other"));
        publish_with(&channel, "", &queue, b"x", properties)
            .with_context(cx)
            .await;
        let message = get_message(&channel, &queue).await;
        let headers = message.properties.headers.as_ref().expect("headers");
        assert_eq!(
            headers.get("traceparent"),
            Some(&FieldValue::LongString(LongString::from(own)))
        );
        connection.close().await.expect("close");
    })
    .await;
}

#[tokio::test]
async fn a_publisher_publish_carries_the_current_trace() {
    telemetry();
    run(async {
        let connection = connect().await;
        let channel = confirm_channel(&connection).await;
        let queue = exclusive_queue(&channel).await;
        let publisher = warren::Publisher::new(&connection, warren::PublisherOptions::default())
            .await
            .expect("a publisher");
        let tracer = global::tracer("the-application");
        let cx = Context::current_with_span(tracer.start("publishing through a Publisher"));
        let trace_id = cx.span().span_context().trace_id().to_string();
        publisher
            .publish(
                "",
                &queue,
                Default::default(),
                b"x".as_slice(),
                BasicProperties::default(),
            )
            .with_context(cx)
            .await
            .expect("confirmed");
        let message = get_message(&channel, &queue).await;
        let headers = message.properties.headers.as_ref().expect("headers");
        let Some(FieldValue::LongString(traceparent)) = headers.get("traceparent") else {
            panic!("no traceparent in {headers:?}");
        };
        let traceparent = String::from_utf8_lossy(traceparent.as_bytes()).into_owned();
        assert!(
            traceparent.contains(&trace_id),
            "{traceparent} continues trace {trace_id}"
        );
        publisher.close().await.expect("close the publisher");
        connection.close().await.expect("close");
    })
    .await;
}

async fn get_message(channel: &Channel, queue: &str) -> warren::GetMessage {
    within(
        "basic.get",
        channel.basic_get(queue, warren::BasicGetOptions { no_ack: true }),
    )
    .await
    .expect("basic.get")
    .expect("a message")
}

/// The value of the sum or gauge `name` whose point has `attribute`, or the count of the
/// histogram's.
fn point(metrics: &[ResourceMetrics], name: &str, attribute: &KeyValue) -> Option<f64> {
    let metric = metrics
        .iter()
        .rev()
        .flat_map(|resource| resource.scope_metrics())
        .flat_map(|scope| scope.metrics())
        .find(|metric| metric.name() == name)?;
    let has = |mut attributes: std::slice::Iter<'_, KeyValue>| attributes.any(|kv| kv == attribute);
    match metric.data() {
        AggregatedMetrics::U64(MetricData::Sum(sum)) => sum
            .data_points()
            .find(|p| has(p.attributes().cloned().collect::<Vec<_>>().iter()))
            .map(|p| p.value() as f64),
        AggregatedMetrics::U64(MetricData::Gauge(gauge)) => gauge
            .data_points()
            .find(|p| has(p.attributes().cloned().collect::<Vec<_>>().iter()))
            .map(|p| p.value() as f64),
        AggregatedMetrics::F64(MetricData::Histogram(histogram)) => histogram
            .data_points()
            .find(|p| has(p.attributes().cloned().collect::<Vec<_>>().iter()))
            .map(|p| p.count() as f64),
        other => panic!("{name}: unexpected data {other:?}"),
    }
}

#[tokio::test]
async fn metrics_count_what_was_sent_and_consumed() {
    let telemetry = telemetry();
    run(async {
        let connection = connect().await;
        let channel = confirm_channel(&connection).await;
        let queue = exclusive_queue(&channel).await;
        for _ in 0..3 {
            publish(&channel, "", &queue, b"m").await;
        }
        let mut consumer = within(
            "basic.consume",
            channel.basic_consume(&queue, BasicConsumeOptions::default()),
        )
        .await
        .expect("basic.consume");
        for _ in 0..3 {
            let delivery = next_delivery(&mut consumer).await;
            delivery.ack(BasicAckOptions::default()).await.expect("ack");
        }
        telemetry.meter_provider.force_flush().expect("flush");
        let metrics = telemetry.metrics.get_finished_metrics().expect("metrics");
        let this_queue = KeyValue::new("messaging.destination.name", queue.clone());
        assert_eq!(
            point(&metrics, "messaging.client.consumed.messages", &this_queue),
            Some(3.0)
        );
        assert_eq!(
            point(&metrics, "messaging.process.duration", &this_queue),
            Some(3.0)
        );
        let default_exchange = KeyValue::new("messaging.destination.name", "amq.default");
        assert!(
            point(
                &metrics,
                "messaging.client.sent.messages",
                &default_exchange
            )
            .is_some_and(|sent| sent >= 3.0)
        );
        let publishes = KeyValue::new("messaging.operation.name", "publish");
        assert!(
            point(&metrics, "messaging.client.operation.duration", &publishes)
                .is_some_and(|count| count >= 3.0)
        );
        let rabbitmq = KeyValue::new("messaging.system", "rabbitmq");
        assert!(point(&metrics, "warren.publish.awaiting_confirms", &rabbitmq).is_some());
        assert!(point(&metrics, "warren.consumer.buffer.size", &rabbitmq).is_some());
        assert!(point(&metrics, "warren.connection.recoveries", &rabbitmq).is_some());
        drop(consumer.next());
        connection.close().await.expect("close");
    })
    .await;
}
