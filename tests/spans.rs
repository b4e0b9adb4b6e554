//! The `tracing` spans against the real broker: the connection's and channels' spans carry
//! their identity into every event, and publish, process, settle and synchronous methods
//! have spans with the OpenTelemetry messaging attributes.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use tracing::Instrument;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::FmtSpan;
use warren::protocol::BasicProperties;
use warren::{BasicAckOptions, BasicConsumeOptions};

/// Collects what the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Captured {
    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

fn line_with<'a>(lines: &'a [String], parts: &[&str]) -> &'a str {
    lines
        .iter()
        .find(|line| parts.iter().all(|part| line.contains(part)))
        .unwrap_or_else(|| panic!("no line with {parts:?} in:\n{}", lines.join("\n")))
}

// A current-thread runtime: the driver task runs on the test's thread, under its subscriber.
#[tokio::test(flavor = "current_thread")]
async fn spans_name_the_connection_channel_and_operation() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_span_events(FmtSpan::CLOSE)
        .with_ansi(false)
        .with_writer(captured.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let name = unique("spans");
    run(async {
        let connection = connect_with(options().connection_name(name.clone())).await;
        let channel = open(&connection).await;
        let queue = exclusive_queue(&channel).await;
        let properties = BasicProperties::default()
            .with_message_id("m-1")
            .with_correlation_id("c-1");
        publish_with(&channel, "", &queue, b"hello", properties).await;
        let mut consumer = within(
            "basic.consume",
            channel.basic_consume(&queue, BasicConsumeOptions::default()),
        )
        .await
        .expect("basic.consume");
        let delivery = next_delivery(&mut consumer).await;
        async {
            tracing::info!("handling the message");
            delivery.ack(BasicAckOptions::default()).await.expect("ack");
        }
        .instrument(delivery.span().clone())
        .await;
        drop(delivery);
        drop(consumer);
        connection.close().await.expect("close");
        // The driver logs its end after the close completes.
        eventually("the driver to stop", || {
            let stopped = captured
                .lines()
                .iter()
                .any(|line| line.contains("connection driver stopped"));
            async move { stopped }
        })
        .await;
        let lines = captured.lines();
        let identity = format!("amqp.connection{{connection.name=\"{name}\"");
        let stopped = line_with(&lines, &["connection driver stopped"]);
        assert!(stopped.contains(&identity), "{stopped}");
        assert!(
            stopped.contains("server.address=\"127.0.0.1\"") || !broker_url().contains("127.0.0.1"),
            "{stopped}"
        );
        assert!(stopped.contains("network.local.port="), "{stopped}");
        assert!(stopped.contains("vhost="), "{stopped}");

        let declare = line_with(&lines, &["rpc{", "otel.name=\"queue.declare\"", "close"]);
        assert!(
            declare.contains("messaging.system=\"rabbitmq\""),
            "{declare}"
        );
        let publish = line_with(
            &lines,
            &["publish{", "otel.name=\"amq.default publish\"", "close"],
        );
        for attribute in [
            "otel.kind=\"producer\"".to_owned(),
            "messaging.destination.name=\"amq.default\"".to_owned(),
            format!("messaging.rabbitmq.destination.routing_key=\"{queue}\""),
            "messaging.message.id=\"m-1\"".to_owned(),
            "messaging.message.conversation_id=\"c-1\"".to_owned(),
            "messaging.message.body.size=5".to_owned(),
            "server.port=".to_owned(),
        ] {
            assert!(publish.contains(&attribute), "{attribute} not in {publish}");
        }
        let process_name = format!("otel.name=\"{queue} process\"");
        let process = line_with(&lines, &["process{", &process_name, "close"]);
        for attribute in [
            "otel.kind=\"consumer\"",
            "messaging.rabbitmq.message.delivery_tag=1",
            "messaging.message.id=\"m-1\"",
        ] {
            assert!(process.contains(attribute), "{attribute} not in {process}");
        }
        // What the application logs inside the delivery's span says which message it is.
        let handling = line_with(&lines, &["handling the message"]);
        assert!(handling.contains(&process_name), "{handling}");
        // The acknowledgement is a child of the process span.
        let settle = line_with(&lines, &["settle{", "otel.name=\"ack\"", "close"]);
        assert!(settle.contains(&process_name), "{settle}");
        // `info` stays quiet in steady state: warren logged no event at info or above (the
        // one info line is the application's).
        let loud: Vec<&String> = lines
            .iter()
            .filter(|line| {
                [" INFO ", " WARN ", " ERROR "]
                    .iter()
                    .any(|level| line.contains(level))
                    && !line.contains("handling the message")
                    // The closes of the info-level connection and channel spans, which this
                    // subscriber prints (FmtSpan::CLOSE), are not events.
                    && !line.contains(": close time.busy")
            })
            .collect();
        assert!(loud.is_empty(), "{loud:#?}");
        // Driver events about a channel carry the channel's span inside the connection's.
        let channel_event = line_with(&lines, &["amqp.channel{channel=1}"]);
        assert!(channel_event.contains(&identity), "{channel_event}");
    })
    .await;
}
