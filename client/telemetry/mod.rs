//! Spans of what warren does, named and attributed after the OpenTelemetry semantic
//! conventions for messaging (RabbitMQ), and with the `opentelemetry` feature the same
//! operations as OpenTelemetry spans and metrics with W3C trace context in message headers
//! (`otel.rs`).
//!
//! Every span here is at `debug` level or finer but the connection's and channels', which are
//! at `info` so that warnings carry them: a span costs one check of a static filter when no
//! subscriber wants it, and its fields are only computed when one does.
//!
//! Beneath the handles and the driver: both create spans here and neither is named.

#[cfg(feature = "opentelemetry")]
pub(crate) mod otel;

use tracing::Span;

use crate::config::Target;

/// `messaging.system` of every span.
pub(crate) const SYSTEM: &str = "rabbitmq";

/// The name the conventions give the default exchange (whose real name is empty).
pub(crate) const DEFAULT_EXCHANGE: &str = "amq.default";

/// The exchange's name for span names and attributes.
pub(crate) fn exchange_name(exchange: &str) -> &str {
    if exchange.is_empty() {
        DEFAULT_EXCHANGE
    } else {
        exchange
    }
}

/// The span of a connection, entered by its driver task whenever it runs: every event the
/// driver logs says which connection it is about. Its server and local port fields change
/// when recovery reconnects ([`record_server`]).
pub(crate) fn connection_span(name: Option<&str>, vhost: &str) -> Span {
    tracing::info_span!(
        target: "warren",
        "amqp.connection",
        connection.name = name,
        server.address = tracing::field::Empty,
        server.port = tracing::field::Empty,
        vhost,
        network.local.port = tracing::field::Empty,
    )
}

/// Records where the connection is connected now (first connection, or after recovery).
pub(crate) fn record_server(span: &Span, target: &Target, local_port: Option<u16>) {
    if span.is_disabled() {
        return;
    }
    span.record("server.address", target.endpoint.host());
    span.record("server.port", target.endpoint.port());
    if let Some(port) = local_port {
        span.record("network.local.port", port);
    }
}

/// The span of a channel, a child of its connection's, entered by the driver while it handles
/// the channel's incoming frames (when a subscriber wanted the connection's span).
pub(crate) fn channel_span(connection: &Span, channel: u16) -> Span {
    tracing::info_span!(target: "warren", parent: connection, "amqp.channel", channel)
}

/// Where a connection is connected, for the handles' spans: host and port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Server {
    pub address: String,
    pub port: u16,
}

impl Server {
    /// The host and port of the endpoint `target` is.
    pub(crate) fn of(target: &Target) -> Self {
        Self {
            address: target.endpoint.host().to_owned(),
            port: target.endpoint.port(),
        }
    }
}

/// The span of one `basic.publish`: validating and encoding it, in the caller's call to
/// `basic_publish` (its handing over to the connection and its confirm, if any, come after).
pub(crate) fn publish_span(
    exchange: &str,
    routing_key: &str,
    properties: &crate::protocol::BasicProperties,
    body_size: usize,
    server: impl FnOnce() -> Server,
) -> Span {
    if !tracing::enabled!(target: "warren", tracing::Level::DEBUG) {
        return Span::none();
    }
    let server = server();
    let exchange = exchange_name(exchange);
    tracing::debug_span!(
        target: "warren",
        "publish",
        otel.name = format!("{exchange} publish"),
        otel.kind = "producer",
        messaging.system = SYSTEM,
        messaging.operation.type = "send",
        messaging.operation.name = "publish",
        messaging.destination.name = exchange,
        messaging.rabbitmq.destination.routing_key = routing_key,
        messaging.message.id = properties.message_id.as_ref().map(|id| id.as_str()),
        messaging.message.conversation_id =
            properties.correlation_id.as_ref().map(|id| id.as_str()),
        messaging.message.body.size = body_size,
        server.address = server.address,
        server.port = server.port,
        error.type = tracing::field::Empty,
    )
}

/// The spans of one publish, made only when someone traces.
pub(crate) struct PublishSpans {
    pub span: Span,
    /// The publish's properties with the trace context in their headers, when injected.
    pub properties: Option<crate::protocol::BasicProperties>,
    #[cfg(feature = "opentelemetry")]
    pub otel: otel::Operation,
}

impl PublishSpans {
    /// Ends the spans, with the error if the publish could not be prepared.
    #[cold]
    pub(crate) fn end(self: Box<Self>, error: Option<&crate::Error>) {
        if let Some(error) = error {
            record_error(&self.span, error);
        }
        #[cfg(feature = "opentelemetry")]
        self.otel.end(error);
    }
}

/// The span of processing one delivery: created when the application takes it from its
/// consumer stream, ended when the application drops the [`Delivery`](crate::Delivery).
pub(crate) fn process_span(
    queue: &str,
    envelope: &crate::Envelope,
    properties: &crate::protocol::BasicProperties,
    body_size: usize,
    server: impl FnOnce() -> Server,
) -> Span {
    if !tracing::enabled!(target: "warren", tracing::Level::DEBUG) {
        return Span::none();
    }
    let server = server();
    tracing::debug_span!(
        target: "warren",
        "process",
        otel.name = format!("{queue} process"),
        otel.kind = "consumer",
        messaging.system = SYSTEM,
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = queue,
        messaging.rabbitmq.destination.routing_key = envelope.routing_key.as_str(),
        messaging.rabbitmq.message.delivery_tag = envelope.delivery_tag,
        messaging.consumer.group.name = envelope.consumer_tag.as_str(),
        messaging.message.id = properties.message_id.as_ref().map(|id| id.as_str()),
        messaging.message.conversation_id =
            properties.correlation_id.as_ref().map(|id| id.as_str()),
        messaging.message.body.size = body_size,
        server.address = server.address,
        server.port = server.port,
    )
}

/// Whether an operation's span would be recorded: by a `tracing` subscriber interested in
/// `debug` spans of `warren`, or (feature `opentelemetry`) always. The cheap paths skip
/// span wrappers when it is false.
#[inline]
pub(crate) fn tracing_operations() -> bool {
    cfg!(feature = "opentelemetry") || tracing::enabled!(target: "warren", tracing::Level::DEBUG)
}

/// The span of settling deliveries: `ack`, `nack` or `reject`.
pub(crate) fn settle_span(operation: &'static str, delivery_tag: u64) -> Span {
    tracing::debug_span!(
        target: "warren",
        "settle",
        otel.name = operation,
        otel.kind = "client",
        messaging.system = SYSTEM,
        messaging.operation.type = "settle",
        messaging.operation.name = operation,
        messaging.rabbitmq.message.delivery_tag = delivery_tag,
        error.type = tracing::field::Empty,
    )
}

/// The span of one synchronous method (`queue.declare`, `basic.consume`, ...), from sending it
/// to its reply.
pub(crate) fn rpc_span(
    method: &'static str,
    channel: u16,
    server: impl FnOnce() -> Server,
) -> Span {
    if !tracing::enabled!(target: "warren", tracing::Level::DEBUG) {
        return Span::none();
    }
    let server = server();
    tracing::debug_span!(
        target: "warren",
        "rpc",
        otel.name = method,
        otel.kind = "client",
        messaging.system = SYSTEM,
        messaging.operation.name = method,
        channel,
        server.address = server.address,
        server.port = server.port,
        error.type = tracing::field::Empty,
    )
}

/// Records `error` as the span's `error.type`.
pub(crate) fn record_error(span: &Span, error: &crate::Error) {
    if !span.is_disabled() {
        span.record("error.type", error.kind_name());
    }
}
