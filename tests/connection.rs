//! Connections against the real broker: login failures, unknown virtual hosts, nothing
//! listening, channel numbering and channel_max, heartbeats, closes by either side, events,
//! client properties as the broker sees them, and the recorded topology.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use futures_util::{FutureExt, StreamExt};
use warren::protocol::ExchangeDeclare;
use warren::topology::BindingDestination;
use warren::wire::{FieldTable, FieldValue, ShortString};
use warren::{
    AuthMechanism, BasicConsumeOptions, ConnectionEvent, Error, ExchangeBindOptions,
    ExchangeDeclareOptions, ExchangeKind, Initiator, QueueBindOptions, QueueDeclareOptions,
    QueueUnbindOptions, ReplyCode,
};

async fn connect_named(name: &str) -> warren::Connection {
    connect_with(options().connection_name(name)).await
}

/// A named connection that is not recovered when lost: these tests are about closing.
async fn connect_named_without_recovery(name: &str) -> warren::Connection {
    connect_with(options_without_recovery().connection_name(name)).await
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_password_is_an_authentication_error_fast() {
    run(async {
        for mechanism in [AuthMechanism::Plain, AuthMechanism::AmqPlain] {
            let secret = "not-the-password-4711";
            let started = Instant::now();
            let result = within(
                "connect with a wrong password",
                warren::Connection::connect_with(
                    options().password(secret).auth_mechanism(mechanism),
                ),
            )
            .await;
            let elapsed = started.elapsed();
            let error = result.expect_err("the broker refuses the login");
            assert!(
                elapsed < Duration::from_secs(2),
                "{mechanism}: refused after {elapsed:?}"
            );
            match &error {
                Error::Authentication {
                    mechanism: used,
                    reason,
                } => {
                    assert_eq!(used, mechanism.name());
                    let reason = reason.as_ref().expect("RabbitMQ says why before closing");
                    assert_eq!(reason.code, ReplyCode::ACCESS_REFUSED, "{reason}");
                    assert_eq!(reason.initiator, Initiator::Server);
                }
                other => panic!("{mechanism}: expected Error::Authentication, got {other:?}"),
            }
            assert!(error.is_connection_fatal());
            let shown = format!("{error} {error:?}");
            assert!(!shown.contains(secret), "the password leaks: {shown}");
            assert!(
                shown.contains("password"),
                "Display says what to check: {shown}"
            );
        }
        // The right password with AMQPLAIN works.
        let connection = connect_with(options().auth_mechanism(AuthMechanism::AmqPlain)).await;
        let channel = open(&connection).await;
        within(
            "a call over AMQPLAIN",
            channel.basic_qos(1, Default::default()),
        )
        .await
        .unwrap();
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_vhost_is_a_clear_error() {
    run(async {
        let vhost = unique("vhost");
        let result = within(
            "connect to an unknown vhost",
            warren::Connection::connect_with(options().vhost(vhost.clone())),
        )
        .await;
        let error = result.expect_err("no such vhost");
        match &error {
            Error::ConnectionClosed(close) => {
                assert_eq!(close.code, ReplyCode::NOT_ALLOWED, "{close}");
                assert_eq!(close.initiator, Initiator::Server);
            }
            other => panic!("expected ConnectionClosed 530, got {other:?}"),
        }
        let shown = error.to_string();
        assert!(shown.contains(&vhost), "Display names the vhost: {shown}");
        assert!(shown.contains("530"), "{shown}");
        assert!(
            shown.contains("virtual host"),
            "Display says what to check: {shown}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_listening_is_a_connect_error_naming_the_address() {
    run(async {
        // A port that was free a moment ago: bind, read the port, release.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let started = Instant::now();
        let result = within(
            "connect to a closed port",
            warren::Connection::connect_with(options().host("127.0.0.1").port(port)),
        )
        .await;
        assert!(started.elapsed() < Duration::from_secs(2));
        let error = result.expect_err("nothing listens");
        let address = format!("127.0.0.1:{port}");
        match &error {
            Error::Connect {
                address: tried,
                source,
            } => {
                assert_eq!(tried, &address);
                assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused);
            }
            other => panic!("expected Error::Connect, got {other:?}"),
        }
        assert!(error.to_string().contains(&address), "{error}");
        // The refusal is the source and not part of the message, so reporters print it once.
        let cause = std::error::Error::source(&error).expect("the I/O error is the source");
        let io = cause.downcast_ref::<std::sync::Arc<std::io::Error>>();
        assert_eq!(
            io.map(|e| e.kind()),
            Some(std::io::ErrorKind::ConnectionRefused)
        );
        assert!(!error.to_string().contains(&cause.to_string()), "{error}");
        assert!(error.is_connection_fatal());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_channels_open_and_close_with_ids_reused() {
    run(async {
        const BATCH: usize = 50;
        const ROUNDS: usize = 20;
        let name = unique("conn-channels");
        let connection = connect_named(&name).await;
        let channel_max = connection.channel_max();
        assert_eq!(channel_max, 2047, "the broker's channel_max");
        let mut opened = 0;
        for round in 0..ROUNDS {
            let channels: Vec<warren::Channel> = within(
                "opening a batch of channels",
                futures_util::future::join_all((0..BATCH).map(|_| connection.open_channel())),
            )
            .await
            .into_iter()
            .collect::<Result<_, _>>()
            .expect("opening channels");
            let ids: BTreeSet<u16> = channels.iter().map(|c| c.id()).collect();
            let expected: BTreeSet<u16> = (1..=BATCH as u16).collect();
            assert_eq!(
                ids, expected,
                "round {round}: the lowest free ids are reused"
            );
            assert!(ids.iter().all(|&id| id <= channel_max));
            if round == 0 {
                let line = broker_connection(&name, &["channels"]).expect("the broker lists us");
                assert_eq!(line[0], BATCH.to_string(), "the broker counts our channels");
            }
            // Each channel works.
            within(
                "a call on each channel",
                futures_util::future::join_all(
                    channels.iter().map(|c| c.basic_qos(0, Default::default())),
                ),
            )
            .await
            .into_iter()
            .collect::<Result<Vec<()>, _>>()
            .expect("basic.qos on every channel");
            within(
                "closing the batch",
                futures_util::future::join_all(channels.iter().map(|c| c.close())),
            )
            .await
            .into_iter()
            .collect::<Result<Vec<()>, _>>()
            .expect("closing channels");
            opened += channels.len();
        }
        assert_eq!(opened, BATCH * ROUNDS);
        let line = broker_connection(&name, &["channels"]).expect("the broker lists us");
        assert_eq!(line[0], "0", "every channel is closed on the broker");
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn channel_max_is_negotiated_and_exhaustion_is_a_typed_error() {
    run(async {
        let name = unique("conn-channel-max");
        let connection = connect_with(options().connection_name(&name).channel_max(10)).await;
        assert_eq!(connection.channel_max(), 10);
        let line = broker_connection(&name, &["channel_max"]).expect("the broker lists us");
        assert_eq!(line[0], "10", "the broker agreed to 10");
        let mut channels = Vec::new();
        for expected in 1..=10u16 {
            let channel = open(&connection).await;
            assert_eq!(channel.id(), expected);
            channels.push(channel);
        }
        let result = within("an eleventh channel", connection.open_channel()).await;
        match result {
            Err(Error::ChannelsExhausted { channel_max }) => assert_eq!(channel_max, 10),
            other => panic!("expected ChannelsExhausted, got {other:?}"),
        }
        // Channel 10 works on the broker, and a freed number is reused.
        within(
            "a call on channel 10",
            channels[9].basic_qos(1, Default::default()),
        )
        .await
        .unwrap();
        within("closing channel 4", channels[3].close())
            .await
            .unwrap();
        let reopened = open(&connection).await;
        assert_eq!(reopened.id(), 4);
        within(
            "a call on the new channel 4",
            reopened.basic_qos(1, Default::default()),
        )
        .await
        .unwrap();
        assert!(connection.is_open());
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn heartbeat_of_one_second_keeps_an_idle_connection_alive() {
    run(async {
        let name = unique("conn-heartbeat");
        let connection = connect_with(
            options()
                .connection_name(&name)
                .heartbeat(Duration::from_secs(1)),
        )
        .await;
        assert_eq!(connection.heartbeat(), Duration::from_secs(1));
        let line = broker_connection(&name, &["timeout"]).expect("the broker lists us");
        assert_eq!(line[0], "1", "the broker uses a 1 s heartbeat too");
        let channel = open(&connection).await;
        let mut events = connection.events();
        // Five seconds of silence from the application: only heartbeats keep it alive, and the
        // broker drops a connection after two missed ones.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(connection.is_open());
        assert!(
            tokio::task::unconstrained(events.next())
                .now_or_never()
                .is_none(),
            "no event while idle"
        );
        let queue = declare_queue_with(
            &channel,
            "",
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
        )
        .await
        .name;
        publish(&channel, "", &queue, b"after the silence").await;
        assert_eq!(
            get_body(&channel, &queue).await.as_deref(),
            Some(&b"after the silence"[..])
        );
        assert!(broker_connection(&name, &["timeout"]).is_some());
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_recovery_a_server_side_close_is_reported_to_waiters_and_events() {
    run(async {
        let name = unique("conn-forced");
        let connection = connect_named_without_recovery(&name).await;
        let channel = open(&connection).await;
        let mut events = connection.events();
        let waiter = {
            let connection = connection.clone();
            tokio::spawn(async move { connection.closed().await })
        };
        let line = broker_connection(&name, &["pid"]).expect("the broker lists us");
        rabbitmqctl(&["close_connection", &line[0], "closed by the warren tests"]);

        let reason = within("connection.closed()", waiter).await.unwrap();
        let check = |error: &Error| match error {
            Error::ConnectionClosed(close) => {
                assert_eq!(close.code, ReplyCode::CONNECTION_FORCED, "{close}");
                assert_eq!(close.initiator, Initiator::Server);
                assert!(close.text.contains("closed by the warren tests"), "{close}");
            }
            other => panic!("expected ConnectionClosed 320, got {other:?}"),
        };
        check(&reason);
        assert!(reason.is_connection_fatal());
        match within("events", events.next()).await {
            Some(ConnectionEvent::Closed(error)) => check(&error),
            other => panic!("expected a Closed event, got {other:?}"),
        }
        assert!(within("events end", events.next()).await.is_none());
        assert!(!connection.is_open());
        // Every later call fails with the same reason.
        let result = within(
            "a call after the close",
            channel.basic_qos(1, Default::default()),
        )
        .await;
        check(&result.unwrap_err());
        let result = within("open_channel after the close", connection.open_channel()).await;
        check(&result.unwrap_err());
        // A new events stream reports the close at once.
        match within("late events", connection.events().next()).await {
            Some(ConnectionEvent::Closed(error)) => check(&error),
            other => panic!("expected a Closed event, got {other:?}"),
        }
        within("close after the close", connection.close())
            .await
            .expect("closing a closed connection does nothing");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_recovery_a_hard_error_closes_the_connection_and_every_channel() {
    run(async {
        let (connection, first) = channel_with(options_without_recovery()).await;
        let second = open(&connection).await;
        let mut events = connection.events();
        let result = within(
            "exchange.declare with an unknown type",
            first.call(ExchangeDeclare {
                exchange: ShortString::try_from(unique("x-bad-type")).unwrap(),
                kind: ShortString::from_static("no-such-type"),
                ..Default::default()
            }),
        )
        .await;
        let error = result.expect_err("the broker refuses an unknown exchange type");
        match &error {
            Error::ConnectionClosed(close) => {
                assert_eq!(close.code, ReplyCode::COMMAND_INVALID, "{close}");
                assert_eq!(close.initiator, Initiator::Server);
                let method = close.method.expect("the broker names exchange.declare");
                assert_eq!((method.class, method.method), (40, 10));
            }
            other => panic!("expected a connection close, got {other:?}"),
        }
        assert!(!error.is_soft());
        assert!(error.is_connection_fatal());
        assert!(!connection.is_open());
        let later = within(
            "a call on the other channel",
            second.basic_qos(1, Default::default()),
        )
        .await;
        assert_eq!(
            later.unwrap_err().reply_code(),
            Some(ReplyCode::COMMAND_INVALID)
        );
        assert!(matches!(
            within("events", events.next()).await,
            Some(ConnectionEvent::Closed(Error::ConnectionClosed(_)))
        ));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_application_close_fails_later_calls_and_leaves_the_broker() {
    run(async {
        let name = unique("conn-close");
        let connection = connect_named(&name).await;
        let channel = open(&connection).await;
        let mut events = connection.events();
        assert!(broker_connection(&name, &[]).is_some());
        within("connection.close", connection.close())
            .await
            .expect("connection.close");
        assert!(!connection.is_open());
        let reason = within("closed()", connection.closed()).await;
        match &reason {
            Error::ConnectionClosed(close) => {
                assert_eq!(close.initiator, Initiator::Client);
                assert!(close.is_normal());
            }
            other => panic!("expected ConnectionClosed, got {other:?}"),
        }
        assert!(matches!(
            within("events", events.next()).await,
            Some(ConnectionEvent::Closed(_))
        ));
        let result = within("open_channel", connection.open_channel()).await;
        assert!(
            matches!(result, Err(Error::ConnectionClosed(_))),
            "{result:?}"
        );
        let result = within("basic.qos", channel.basic_qos(1, Default::default())).await;
        assert!(
            matches!(result, Err(Error::ConnectionClosed(_))),
            "{result:?}"
        );
        within("close again", connection.close()).await.unwrap();
        eventually("the broker no longer lists the connection", || {
            let name = name.clone();
            async move { broker_connection(&name, &[]).is_none() }
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_every_handle_closes_the_connection_on_the_broker() {
    run(async {
        let name = unique("conn-dropped");
        let connection = connect_named(&name).await;
        let channel = open(&connection).await;
        within("a call", channel.basic_qos(1, Default::default()))
            .await
            .unwrap();
        assert!(broker_connection(&name, &[]).is_some());
        drop(channel);
        drop(connection);
        eventually("the broker forgets the dropped connection", || {
            let name = name.clone();
            async move { broker_connection(&name, &[]).is_none() }
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn client_properties_are_visible_on_the_broker() {
    run(async {
        let name = unique("conn-properties");
        let marker = unique("marker");
        let connection = connect_with(
            options().connection_name(&name).client_properties(
                FieldTable::new()
                    .with("product", "warren-test-product")
                    .with("x-test-marker", marker.as_str()),
            ),
        )
        .await;
        let line = broker_connection(&name, &["user", "vhost"]).expect("the broker lists us");
        assert_eq!(line[0], options().get_username());
        assert_eq!(line[1], options().get_vhost());
        let properties = &line[2];
        assert!(
            properties.contains("{\"product\",\"warren-test-product\"}"),
            "the application's entry replaces warren's: {properties}"
        );
        assert!(
            !properties.contains("{\"product\",\"warren\"}"),
            "{properties}"
        );
        assert!(properties.contains(&marker), "{properties}");
        assert!(
            properties.contains("{\"platform\",\"Rust\"}"),
            "warren's entries stay: {properties}"
        );
        for capability in [
            "publisher_confirms",
            "exchange_exchange_bindings",
            "basic.nack",
            "consumer_cancel_notify",
            "connection.blocked",
            "authentication_failure_close",
            "per_consumer_qos",
            "direct_reply_to",
        ] {
            assert!(
                properties.contains(&format!("{{\"{capability}\",true}}")),
                "capability {capability}: {properties}"
            );
        }
        // And what the broker told us.
        let server = connection.server_properties();
        assert_eq!(
            server.get("product").and_then(FieldValue::as_str),
            Some("RabbitMQ")
        );
        let capabilities = server
            .get("capabilities")
            .and_then(FieldValue::as_table)
            .expect("server capabilities");
        assert_eq!(
            capabilities
                .get("publisher_confirms")
                .and_then(FieldValue::as_bool),
            Some(true)
        );
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn update_secret_is_answered_and_the_connection_goes_on() {
    run(async {
        let connection = connect().await;
        within(
            "connection.update-secret",
            connection.update_secret("guest", "rotation by the warren tests"),
        )
        .await
        .expect("the broker accepts the new secret");
        let channel = open(&connection).await;
        within(
            "a call after update-secret",
            channel.basic_qos(1, Default::default()),
        )
        .await
        .unwrap();
        assert!(connection.is_open());
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn topology_records_declarations_and_forgets_deletions() {
    run(async {
        let mut cleanup = Cleanup::new();
        let (connection, channel) = channel().await;
        assert_eq!(connection.topology(), Default::default());
        let exchange = cleanup.exchange(unique("x-topology"));
        let downstream = cleanup.exchange(unique("x-topology-down"));
        let queue = cleanup.queue(unique("q-topology"));
        let arguments = FieldTable::new().with("x-max-length", FieldValue::I32(10));
        within(
            "exchange.declare",
            channel.exchange_declare(
                &exchange,
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    auto_delete: false,
                    durable: false,
                    ..Default::default()
                },
            ),
        )
        .await
        .unwrap();
        declare_exchange(&channel, &downstream, ExchangeKind::Fanout).await;
        declare_queue_with(
            &channel,
            &queue,
            QueueDeclareOptions {
                arguments: arguments.clone(),
                ..Default::default()
            },
        )
        .await;
        let server_named = declare_queue_with(
            &channel,
            "",
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
        )
        .await
        .name;
        within(
            "queue.bind",
            channel.queue_bind(&queue, &exchange, "orders.#", QueueBindOptions::default()),
        )
        .await
        .unwrap();
        within(
            "exchange.bind",
            channel.exchange_bind(
                &downstream,
                &exchange,
                "audit.*",
                ExchangeBindOptions::default(),
            ),
        )
        .await
        .unwrap();
        let consumer = within(
            "basic.consume",
            channel.basic_consume(&queue, BasicConsumeOptions::default()),
        )
        .await
        .unwrap();
        // Passive declares create nothing and record nothing; failed declares neither.
        within(
            "passive exchange.declare",
            channel.exchange_declare(
                "amq.direct",
                ExchangeKind::Direct,
                ExchangeDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
            ),
        )
        .await
        .unwrap();
        let failing = open(&connection).await;
        let _ = within(
            "a refused redeclare",
            failing.exchange_declare(&exchange, ExchangeKind::Direct, Default::default()),
        )
        .await
        .expect_err("406: the exchange is a topic exchange");

        let topology = connection.topology();
        let names: Vec<&str> = topology.exchanges.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, [exchange.as_str(), downstream.as_str()]);
        assert_eq!(topology.exchanges[0].kind, ExchangeKind::Topic);
        let recorded = &topology.queues;
        assert_eq!(recorded.len(), 2, "{recorded:?}");
        assert_eq!(recorded[0].name, queue.as_str());
        assert!(!recorded[0].server_named);
        assert_eq!(recorded[0].arguments, arguments);
        assert_eq!(recorded[1].name, server_named);
        assert!(recorded[1].server_named && recorded[1].exclusive);
        assert_eq!(topology.bindings.len(), 2, "{:?}", topology.bindings);
        assert!(
            topology
                .bindings
                .iter()
                .any(|b| b.source == exchange.as_str()
                    && b.destination
                        == BindingDestination::Queue(
                            ShortString::try_from(queue.as_str()).unwrap()
                        )
                    && b.routing_key == "orders.#")
        );
        assert!(
            topology
                .bindings
                .iter()
                .any(|b| b.source == exchange.as_str()
                    && b.destination
                        == BindingDestination::Exchange(
                            ShortString::try_from(downstream.as_str()).unwrap()
                        )
                    && b.routing_key == "audit.*")
        );
        assert_eq!(topology.consumers.len(), 1);
        assert_eq!(topology.consumers[0].tag, consumer.tag());
        assert_eq!(topology.consumers[0].queue, queue.as_str());
        assert_eq!(topology.consumers[0].channel, channel.id());

        // Forgetting: unbind, cancel, delete.
        within(
            "queue.unbind",
            channel.queue_unbind(&queue, &exchange, "orders.#", QueueUnbindOptions::default()),
        )
        .await
        .unwrap();
        assert_eq!(connection.topology().bindings.len(), 1);
        let mut consumer = consumer;
        within("cancel", consumer.cancel()).await.unwrap();
        assert!(connection.topology().consumers.is_empty());
        within(
            "queue.delete",
            channel.queue_delete(&queue, Default::default()),
        )
        .await
        .unwrap();
        let topology = connection.topology();
        assert_eq!(topology.queues.len(), 1);
        assert_eq!(topology.queues[0].name, server_named);
        within(
            "exchange.delete",
            channel.exchange_delete(&exchange, Default::default()),
        )
        .await
        .unwrap();
        let topology = connection.topology();
        assert_eq!(topology.exchanges.len(), 1);
        assert!(
            topology.bindings.is_empty(),
            "the exchange's bindings went with it"
        );
        within(
            "exchange.delete",
            channel.exchange_delete(&downstream, Default::default()),
        )
        .await
        .unwrap();
        assert!(connection.topology().exchanges.is_empty());

        // A consumer goes from the topology when its channel closes.
        let other = open(&connection).await;
        let _consumer = within(
            "basic.consume",
            other.basic_consume(&server_named, BasicConsumeOptions::default()),
        )
        .await
        .unwrap();
        assert_eq!(connection.topology().consumers.len(), 1);
        within("channel.close", other.close()).await.unwrap();
        assert!(connection.topology().consumers.is_empty());
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

/// Deletes a virtual host when dropped (a test's own vhost, even if the test failed).
struct VhostGuard(String);

impl Drop for VhostGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["delete_vhost", &self.0])
            .output();
    }
}

/// `broker_url()` with its virtual host replaced by `encoded_vhost` (already percent-encoded).
fn url_with_vhost(encoded_vhost: &str) -> String {
    let url = broker_url();
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base.to_owned(), format!("?{query}")),
        None => (url.clone(), String::new()),
    };
    let authority_end = base
        .find("://")
        .map(|i| i + 3)
        .and_then(|start| base[start..].find('/').map(|i| start + i))
        .unwrap_or(base.len());
    format!("{}/{encoded_vhost}{query}", &base[..authority_end])
}

#[tokio::test(flavor = "multi_thread")]
async fn the_vhost_of_the_uri_is_used_and_deleting_it_closes_the_connection_without_recovery() {
    run(async {
        // A vhost with a slash in its name, percent-encoded in the URI.
        let vhost = format!("{}/slash", unique("vhost"));
        rabbitmqctl(&["add_vhost", &vhost]);
        let _guard = VhostGuard(vhost.clone());
        let user = options().get_username().to_owned();
        rabbitmqctl(&["set_permissions", "-p", &vhost, &user, ".*", ".*", ".*"]);

        let name = unique("conn-vhost");
        let uri = url_with_vhost(&vhost.replace('/', "%2F"));
        let parsed: warren::ConnectionOptions = uri.parse().expect("a valid URI");
        assert_eq!(parsed.get_vhost(), vhost);
        let connection = connect_with(
            parsed
                .connection_name(&name)
                .recovery(warren::RecoveryPolicy::disabled()),
        )
        .await;
        let line = broker_connection(&name, &["vhost"]).expect("the broker lists us");
        assert_eq!(line[0], vhost, "the broker put the connection in the vhost");
        let channel = open(&connection).await;
        let queue = unique("q-in-vhost");
        declare_queue(&channel, &queue).await;
        let listed = rabbitmqctl(&[
            "list_queues",
            "-p",
            &vhost,
            "-q",
            "--no-table-headers",
            "name",
        ]);
        assert!(listed.lines().any(|l| l == queue), "{listed}");
        let default_vhost = connect().await;
        assert!(
            !queue_exists(&default_vhost, &queue).await,
            "the queue is not in the default vhost"
        );
        default_vhost.close().await.unwrap();

        // Deleting the vhost closes its connections.
        let waiter = {
            let connection = connection.clone();
            tokio::spawn(async move { connection.closed().await })
        };
        rabbitmqctl(&["delete_vhost", &vhost]);
        match within("the close of a deleted vhost", waiter)
            .await
            .unwrap()
        {
            Error::ConnectionClosed(close) => {
                assert_eq!(close.code, ReplyCode::CONNECTION_FORCED, "{close}");
                assert_eq!(close.initiator, Initiator::Server);
            }
            other => panic!("expected ConnectionClosed 320, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn frame_max_and_heartbeat_are_negotiated_with_the_broker() {
    run(async {
        let name = unique("conn-tune");
        let connection = connect_with(
            options()
                .connection_name(&name)
                .frame_max(8192)
                .heartbeat(Duration::from_secs(7)),
        )
        .await;
        assert_eq!(connection.frame_max(), 8192);
        assert_eq!(connection.heartbeat(), Duration::from_secs(7));
        let line =
            broker_connection(&name, &["frame_max", "timeout"]).expect("the broker lists us");
        assert_eq!((line[0].as_str(), line[1].as_str()), ("8192", "7"));
        within("connection.close", connection.close())
            .await
            .unwrap();

        // Asking for no heartbeat: with the broker proposing 60 s, the larger value wins.
        let name = unique("conn-no-heartbeat");
        let connection =
            connect_with(options().connection_name(&name).heartbeat(Duration::ZERO)).await;
        let line = broker_connection(&name, &["timeout"]).expect("the broker lists us");
        assert_eq!(
            Duration::from_secs(line[0].parse().unwrap()),
            connection.heartbeat(),
            "the client and the broker agree"
        );
        assert_eq!(connection.heartbeat(), Duration::from_secs(60));
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sub_second_heartbeat_asks_for_one_second() {
    run(async {
        // 500 ms cannot be said in AMQP's whole seconds; it must not become 0 ("no
        // preference"), which would give the broker's 60 s.
        let name = unique("conn-half-second-heartbeat");
        let connection = connect_with(
            options()
                .connection_name(&name)
                .heartbeat(Duration::from_millis(500)),
        )
        .await;
        assert_eq!(connection.heartbeat(), Duration::from_secs(1));
        let line = broker_connection(&name, &["timeout"]).expect("the broker lists us");
        assert_eq!(line[0], "1", "the broker uses a 1 s heartbeat too");
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_immediate_publish_is_refused_by_the_broker_with_540() {
    run(async {
        let (connection, channel) = channel_with(options_without_recovery()).await;
        let options = warren::BasicPublishOptions {
            immediate: true,
            ..Default::default()
        };
        let _ = within(
            "basic.publish immediate",
            channel.basic_publish("amq.direct", "k", options, "x", Default::default()),
        )
        .await;
        match within("the close", connection.closed()).await {
            Error::ConnectionClosed(close) => {
                assert_eq!(close.code, ReplyCode::NOT_IMPLEMENTED, "{close}");
                assert_eq!(close.initiator, Initiator::Server);
            }
            other => panic!("expected ConnectionClosed 540, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_opened_and_closed_in_a_row_leave_nothing_behind() {
    run(async {
        let prefix = unique("conn-churn");
        for i in 0..30 {
            let connection = connect_named(&format!("{prefix}-{i}")).await;
            let channel = open(&connection).await;
            within("a call", channel.basic_qos(1, Default::default()))
                .await
                .unwrap();
            if i % 3 == 0 {
                drop(channel);
                drop(connection);
            } else {
                within("connection.close", connection.close())
                    .await
                    .unwrap();
            }
        }
        eventually("the broker lists none of them", || {
            let prefix = prefix.clone();
            async move {
                !rabbitmqctl(&[
                    "list_connections",
                    "-q",
                    "--no-table-headers",
                    "client_properties",
                ])
                .contains(&prefix)
            }
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn topology_forgets_what_the_broker_auto_deleted() {
    run(async {
        let mut cleanup = Cleanup::new();
        let (connection, channel) = channel().await;
        let queue = cleanup.queue(unique("q-auto-deleted"));
        let exchange = cleanup.exchange(unique("x-auto-deleted"));
        declare_queue_with(
            &channel,
            &queue,
            QueueDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
        )
        .await;
        within(
            "exchange.declare auto_delete",
            channel.exchange_declare(
                &exchange,
                ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    auto_delete: true,
                    ..Default::default()
                },
            ),
        )
        .await
        .unwrap();
        within(
            "queue.bind",
            channel.queue_bind(&queue, &exchange, "", QueueBindOptions::default()),
        )
        .await
        .unwrap();
        let mut consumer = within(
            "basic.consume",
            channel.basic_consume(&queue, BasicConsumeOptions::default()),
        )
        .await
        .unwrap();
        // Cancelling the only consumer makes the broker delete the auto-delete queue, and with
        // it its only binding, which makes it delete the auto-delete exchange.
        within("cancel", consumer.cancel()).await.unwrap();
        eventually("the broker auto-deleted the queue", || {
            let connection = connection.clone();
            let queue = queue.clone();
            async move { !queue_exists(&connection, &queue).await }
        })
        .await;
        assert!(!exchange_exists(&connection, &exchange).await);
        // Recovery declares what the topology holds: it must not bring back what the broker
        // deleted on purpose (nothing would ever delete it again).
        let topology = connection.topology();
        assert!(
            topology.queues.iter().all(|q| q.name != queue.as_str()),
            "the auto-deleted queue is still recorded: {:?}",
            topology.queues
        );
        assert!(
            topology
                .exchanges
                .iter()
                .all(|e| e.name != exchange.as_str()),
            "the auto-deleted exchange is still recorded: {:?}",
            topology.exchanges
        );
        assert!(topology.bindings.is_empty(), "{:?}", topology.bindings);
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}
