//! OpenTelemetry: a message's trace goes from the publisher, through RabbitMQ, to the
//! consumer. Publishes a message inside an application span, consumes it, and prints the
//! spans warren made; the last line is `trace continued: <trace id>` when the consumer's
//! `process` span carries the publisher's trace id (the program fails otherwise).
//!
//! Run with `cargo run --example opentelemetry --features opentelemetry` (set AMQP_URL to use
//! another broker). An application would install an OTLP exporter instead of the in-memory
//! one used here (see README.md, "Observability").

use futures_util::StreamExt;
use opentelemetry::context::FutureExt;
use opentelemetry::trace::{TraceContextExt, Tracer};
use opentelemetry::{Context, global};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use warren::protocol::BasicProperties;
use warren::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, Connection, QueueDeclareOptions,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The application's telemetry: W3C trace context in headers, spans kept in memory.
    global::set_text_map_propagator(TraceContextPropagator::new());
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    global::set_tracer_provider(provider.clone());

    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    let connection = match Connection::connect(&url).await {
        Ok(connection) => connection,
        Err(error) => {
            eprintln!("cannot connect to the broker: {error}");
            eprintln!("start one with scripts/start-rabbitmq.sh, or set AMQP_URL");
            std::process::exit(1);
        }
    };
    let channel = connection.open_channel().await?;
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    let queue = channel.queue_declare("", exclusive).await?.name;

    // Publish within an application span: warren's publish span is its child, and its
    // context travels in the message's `traceparent` header. (`basic_publish` prepares the
    // message when it is called, so call it where the context is current: here, inside the
    // future run `with_context`.)
    let tracer = global::tracer("example");
    let cx = Context::current_with_span(tracer.start("place-order"));
    let publisher_trace = cx.span().span_context().trace_id();
    let publish = async {
        channel
            .basic_publish(
                "",
                &queue,
                BasicPublishOptions::default(),
                "order #17",
                BasicProperties::default().with_message_id("order-17"),
            )
            .await?
            .await
    };
    publish.with_context(cx.clone()).await?;
    cx.span().end();
    println!("published in trace {publisher_trace}");

    // Consume it: the delivery's process span continues the publisher's trace.
    let mut consumer = channel
        .basic_consume(&queue, BasicConsumeOptions::default())
        .await?;
    let Some(delivery) = consumer.next().await else {
        return Err("the consumer ended before the message came".into());
    };
    let delivery = delivery?;
    let consumer_cx = delivery.otel_context().cloned().unwrap_or_default();
    let consumer_trace = consumer_cx.span().span_context().trace_id();
    // Work done with the delivery's context is part of the same trace.
    async {
        let _work = global::tracer("example").start("ship-order");
        delivery.ack(BasicAckOptions::default()).await
    }
    .with_context(consumer_cx)
    .await?;
    drop(delivery);
    drop(consumer);
    connection.close().await?;

    let _ = provider.force_flush();
    for span in exporter.get_finished_spans()? {
        println!(
            "span {:<32} kind {:<9} trace {} span {} parent {}",
            span.name,
            format!("{:?}", span.span_kind),
            span.span_context.trace_id(),
            span.span_context.span_id(),
            span.parent_span_id,
        );
    }
    if consumer_trace != publisher_trace {
        eprintln!("the consumer's span is in trace {consumer_trace}, not {publisher_trace}");
        std::process::exit(2);
    }
    println!("trace continued: {consumer_trace}");
    Ok(())
}
