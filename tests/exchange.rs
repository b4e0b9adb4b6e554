//! The exchange class against the real broker: declare (every kind, flags), passive declare,
//! delete (if_unused), exchange-to-exchange bindings, and the channel errors they can cause.

mod common;

use common::*;
use warren::wire::FieldTable;
use warren::{
    Error, ExchangeBindOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, ExchangeKind,
    ExchangeUnbindOptions, Initiator, QueueBindOptions, QueueDeclareOptions, ReplyCode,
};

fn passive() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        passive: true,
        ..Default::default()
    }
}

/// Asserts that `result` is the broker closing channel `channel` with `code`.
#[track_caller]
fn assert_channel_closed<T: std::fmt::Debug>(
    result: Result<T, Error>,
    channel: u16,
    code: ReplyCode,
) {
    match result {
        Err(Error::ChannelClosed { channel: id, close }) => {
            assert_eq!(id, channel, "the error names the channel that was closed");
            assert_eq!(close.code, code, "reply code of {close}");
            assert_eq!(close.initiator, Initiator::Server);
        }
        other => panic!("expected channel {channel} closed with {code:?}, got {other:?}"),
    }
}

/// The broker's view of an exchange: `name type durable auto_delete internal`.
fn broker_exchange_line(name: &str) -> Option<String> {
    rabbitmqctl(&[
        "list_exchanges",
        "-q",
        "--no-table-headers",
        "name",
        "type",
        "durable",
        "auto_delete",
        "internal",
    ])
    .lines()
    .find(|line| line.split('\t').next() == Some(name))
    .map(|line| line.split('\t').collect::<Vec<_>>().join(" "))
}

#[tokio::test(flavor = "multi_thread")]
async fn declare_each_kind_then_passive_declare_succeeds() {
    run(async {
        let mut cleanup = Cleanup::new();
        let (connection, channel) = channel().await;
        let kinds = [
            (ExchangeKind::Direct, "direct"),
            (ExchangeKind::Fanout, "fanout"),
            (ExchangeKind::Topic, "topic"),
            (ExchangeKind::Headers, "headers"),
        ];
        let mut names = Vec::new();
        for (kind, kind_name) in &kinds {
            let name = cleanup.exchange(unique(&format!("x-{kind_name}")));
            within(
                "exchange.declare",
                channel.exchange_declare(&name, kind.clone(), ExchangeDeclareOptions::default()),
            )
            .await
            .unwrap_or_else(|e| panic!("declaring a {kind_name} exchange: {e}"));
            // The passive declare succeeds and leaves the channel open.
            within(
                "passive exchange.declare",
                channel.exchange_declare(&name, kind.clone(), passive()),
            )
            .await
            .unwrap_or_else(|e| panic!("passive declare of the {kind_name} exchange: {e}"));
            assert!(channel.is_open());
            names.push((name, *kind_name));
        }
        // Flags reach the broker too.
        let flagged = cleanup.exchange(unique("x-flags"));
        within(
            "exchange.declare with flags",
            channel.exchange_declare(
                &flagged,
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    auto_delete: true,
                    internal: true,
                    ..Default::default()
                },
            ),
        )
        .await
        .expect("declaring a durable, auto-delete, internal exchange");

        for (name, kind_name) in &names {
            assert_eq!(
                broker_exchange_line(name),
                Some(format!("{name} {kind_name} false false false")),
                "the broker lists the {kind_name} exchange with its type and flags"
            );
        }
        assert_eq!(
            broker_exchange_line(&flagged),
            Some(format!("{flagged} topic true true true"))
        );

        for (name, _) in &names {
            within(
                "exchange.delete",
                channel.exchange_delete(name, ExchangeDeleteOptions::default()),
            )
            .await
            .expect("deleting the exchange");
            assert!(
                !exchange_exists(&connection, name).await,
                "{name} was deleted"
            );
        }
        within(
            "exchange.delete",
            channel.exchange_delete(&flagged, ExchangeDeleteOptions::default()),
        )
        .await
        .expect("deleting the flagged exchange");
        assert_eq!(broker_exchange_line(&flagged), None);
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn passive_declare_of_a_missing_exchange_is_404_and_the_rest_keeps_working() {
    run(async {
        let (connection, failing) = channel().await;
        let other = open(&connection).await;
        let queue = declare_queue_with(
            &other,
            "",
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
        )
        .await
        .name;

        let missing = unique("x-missing");
        let result = within(
            "passive declare of a missing exchange",
            failing.exchange_declare(&missing, ExchangeKind::Direct, passive()),
        )
        .await;
        let error = result
            .as_ref()
            .expect_err("the exchange does not exist")
            .clone();
        assert!(error.is_soft(), "404 is a soft error: {error}");
        assert!(!error.is_connection_fatal());
        assert_eq!(error.reply_code(), Some(ReplyCode::NOT_FOUND));
        assert_channel_closed(result, failing.id(), ReplyCode::NOT_FOUND);
        let close = error.close().expect("a close reason");
        assert!(
            close.text.contains(&missing),
            "the broker's text names the exchange: {}",
            close.text
        );
        // The method that failed: exchange.declare is class 40, method 10.
        let method = close.method.expect("the broker names the failing method");
        assert_eq!((method.class, method.method), (40, 10));
        assert!(!failing.is_open());

        // Later calls on the closed channel report the same close.
        let again = within(
            "a call on the closed channel",
            failing.exchange_declare("amq.direct", ExchangeKind::Direct, passive()),
        )
        .await;
        assert_channel_closed(again, failing.id(), ReplyCode::NOT_FOUND);

        // The connection and the other channel are unaffected.
        assert!(connection.is_open());
        assert!(other.is_open());
        publish(&other, "", &queue, b"still working").await;
        assert_eq!(
            get_body(&other, &queue).await.as_deref(),
            Some(&b"still working"[..])
        );
        let fresh = open(&connection).await;
        within(
            "declare on a fresh channel",
            fresh.exchange_declare("amq.topic", ExchangeKind::Topic, passive()),
        )
        .await
        .expect("a new channel works");
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_removes_the_exchange() {
    run(async {
        let mut cleanup = Cleanup::new();
        let (connection, channel) = channel().await;
        let name = cleanup.exchange(unique("x-delete"));
        declare_exchange(&channel, &name, ExchangeKind::Fanout).await;
        assert!(exchange_exists(&connection, &name).await);
        within(
            "exchange.delete",
            channel.exchange_delete(&name, ExchangeDeleteOptions::default()),
        )
        .await
        .expect("deleting the exchange");
        let result = within(
            "passive declare of the deleted exchange",
            channel.exchange_declare(&name, ExchangeKind::Fanout, passive()),
        )
        .await;
        assert_channel_closed(result, channel.id(), ReplyCode::NOT_FOUND);
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_if_unused_refuses_an_exchange_with_bindings() {
    run(async {
        let mut cleanup = Cleanup::new();
        let (connection, channel) = channel().await;
        let exchange = cleanup.exchange(unique("x-if-unused"));
        let queue = cleanup.queue(unique("q-if-unused"));
        declare_exchange(&channel, &exchange, ExchangeKind::Direct).await;
        declare_queue(&channel, &queue).await;
        within(
            "queue.bind",
            channel.queue_bind(&queue, &exchange, "k", QueueBindOptions::default()),
        )
        .await
        .expect("binding");

        let result = within(
            "exchange.delete if_unused",
            channel.exchange_delete(&exchange, ExchangeDeleteOptions { if_unused: true }),
        )
        .await;
        assert_channel_closed(result, channel.id(), ReplyCode::PRECONDITION_FAILED);
        assert!(
            exchange_exists(&connection, &exchange).await,
            "a refused delete leaves the exchange"
        );

        let channel = open(&connection).await;
        within(
            "queue.unbind",
            channel.queue_unbind(&queue, &exchange, "k", Default::default()),
        )
        .await
        .expect("unbinding");
        within(
            "exchange.delete if_unused",
            channel.exchange_delete(&exchange, ExchangeDeleteOptions { if_unused: true }),
        )
        .await
        .expect("an exchange without bindings is unused");
        assert!(!exchange_exists(&connection, &exchange).await);
        within(
            "queue.delete",
            channel.queue_delete(&queue, Default::default()),
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
async fn exchange_to_exchange_binding_routes_and_unbind_stops_it() {
    run(async {
        let mut cleanup = Cleanup::new();
        let (connection, channel) = channel().await;
        let source = cleanup.exchange(unique("x-source"));
        let destination = cleanup.exchange(unique("x-destination"));
        let queue = cleanup.queue(unique("q-e2e"));
        declare_exchange(&channel, &source, ExchangeKind::Direct).await;
        declare_exchange(&channel, &destination, ExchangeKind::Fanout).await;
        declare_queue(&channel, &queue).await;
        within(
            "queue.bind",
            channel.queue_bind(&queue, &destination, "", QueueBindOptions::default()),
        )
        .await
        .unwrap();

        // Before the exchange binding, nothing published to the source reaches the queue.
        assert_not_routed(&channel, &source, "key", &queue).await;

        within(
            "exchange.bind",
            channel.exchange_bind(&destination, &source, "key", ExchangeBindOptions::default()),
        )
        .await
        .expect("exchange.bind");
        publish(&channel, &source, "key", b"through two exchanges").await;
        assert_eq!(
            get_body(&channel, &queue).await.as_deref(),
            Some(&b"through two exchanges"[..]),
            "source -> destination -> queue"
        );
        // The source is direct: another key does not match the binding.
        assert_not_routed(&channel, &source, "other-key", &queue).await;

        within(
            "exchange.unbind",
            channel.exchange_unbind(
                &destination,
                &source,
                "key",
                ExchangeUnbindOptions::default(),
            ),
        )
        .await
        .expect("exchange.unbind");
        assert_not_routed(&channel, &source, "key", &queue).await;
        assert_eq!(get_body(&channel, &queue).await, None);

        within(
            "queue.delete",
            channel.queue_delete(&queue, Default::default()),
        )
        .await
        .unwrap();
        for exchange in [&source, &destination] {
            within(
                "exchange.delete",
                channel.exchange_delete(exchange, Default::default()),
            )
            .await
            .unwrap();
        }
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn headers_exchange_routes_on_binding_arguments() {
    run(async {
        let mut cleanup = Cleanup::new();
        let (connection, channel) = channel().await;
        let exchange = cleanup.exchange(unique("x-headers"));
        let queue = cleanup.queue(unique("q-headers"));
        declare_exchange(&channel, &exchange, ExchangeKind::Headers).await;
        declare_queue(&channel, &queue).await;
        let arguments = FieldTable::new()
            .with("x-match", "all")
            .with("format", "pdf")
            .with("type", "report");
        within(
            "queue.bind with arguments",
            channel.queue_bind(
                &queue,
                &exchange,
                "",
                QueueBindOptions {
                    arguments: arguments.clone(),
                },
            ),
        )
        .await
        .unwrap();

        let matching = warren::BasicProperties {
            headers: Some(
                FieldTable::new()
                    .with("format", "pdf")
                    .with("type", "report"),
            ),
            ..Default::default()
        };
        publish_with(&channel, &exchange, "", b"match", matching).await;
        assert_eq!(
            get_body(&channel, &queue).await.as_deref(),
            Some(&b"match"[..])
        );

        let partial = warren::BasicProperties {
            headers: Some(FieldTable::new().with("format", "pdf")),
            ..Default::default()
        };
        publish_with(&channel, &exchange, "", b"partial", partial).await;
        publish(&channel, "", &queue, b"sentinel").await;
        assert_eq!(
            get_body(&channel, &queue).await.as_deref(),
            Some(&b"sentinel"[..]),
            "x-match=all needs every header"
        );

        within(
            "queue.unbind with arguments",
            channel.queue_unbind(
                &queue,
                &exchange,
                "",
                warren::QueueUnbindOptions { arguments },
            ),
        )
        .await
        .unwrap();
        let matching = warren::BasicProperties {
            headers: Some(
                FieldTable::new()
                    .with("format", "pdf")
                    .with("type", "report"),
            ),
            ..Default::default()
        };
        publish_with(&channel, &exchange, "", b"after unbind", matching).await;
        publish(&channel, "", &queue, b"sentinel").await;
        assert_eq!(
            get_body(&channel, &queue).await.as_deref(),
            Some(&b"sentinel"[..])
        );

        within(
            "queue.delete",
            channel.queue_delete(&queue, Default::default()),
        )
        .await
        .unwrap();
        within(
            "exchange.delete",
            channel.exchange_delete(&exchange, Default::default()),
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
async fn redeclare_with_another_type_is_406_and_keeps_the_original() {
    run(async {
        let mut cleanup = Cleanup::new();
        let (connection, channel) = channel().await;
        let name = cleanup.exchange(unique("x-mismatch"));
        declare_exchange(&channel, &name, ExchangeKind::Direct).await;
        let result = within(
            "exchange.declare with another type",
            channel.exchange_declare(
                &name,
                ExchangeKind::Fanout,
                ExchangeDeclareOptions::default(),
            ),
        )
        .await;
        assert_channel_closed(result, channel.id(), ReplyCode::PRECONDITION_FAILED);
        assert!(connection.is_open());
        assert_eq!(
            broker_exchange_line(&name),
            Some(format!("{name} direct false false false")),
            "the exchange keeps its type"
        );
        let channel = open(&connection).await;
        within(
            "exchange.delete",
            channel.exchange_delete(&name, Default::default()),
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
async fn publishing_to_an_internal_exchange_closes_the_channel_with_403() {
    run(async {
        let mut cleanup = Cleanup::new();
        let (connection, channel) = channel().await;
        let name = cleanup.exchange(unique("x-internal"));
        within(
            "exchange.declare internal",
            channel.exchange_declare(
                &name,
                ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    internal: true,
                    ..Default::default()
                },
            ),
        )
        .await
        .unwrap();
        // The publish itself is asynchronous; the broker's refusal arrives as a channel close.
        let confirm = within(
            "basic.publish",
            channel.basic_publish(&name, "", Default::default(), "x", Default::default()),
        )
        .await
        .expect("the publish is queued");
        let _ = confirm.await;
        let error = within("channel close", channel.closed()).await;
        assert_eq!(
            error.reply_code(),
            Some(ReplyCode::ACCESS_REFUSED),
            "{error}"
        );
        assert!(error.is_soft());
        assert!(connection.is_open());
        let channel = open(&connection).await;
        within(
            "exchange.delete",
            channel.exchange_delete(&name, Default::default()),
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
async fn auto_delete_exchange_goes_with_its_last_binding() {
    run(async {
        let mut cleanup = Cleanup::new();
        let (connection, channel) = channel().await;
        let exchange = cleanup.exchange(unique("x-auto-delete"));
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
        let queue = exclusive_queue(&channel).await;
        within(
            "queue.bind",
            channel.queue_bind(&queue, &exchange, "", QueueBindOptions::default()),
        )
        .await
        .unwrap();
        assert!(exchange_exists(&connection, &exchange).await);
        within(
            "queue.unbind",
            channel.queue_unbind(&queue, &exchange, "", Default::default()),
        )
        .await
        .unwrap();
        assert!(
            !exchange_exists(&connection, &exchange).await,
            "the broker deleted the exchange with its last binding"
        );
        within("connection.close", connection.close())
            .await
            .unwrap();
    })
    .await;
}
