//! `warren::rpc` against the real broker: an `RpcClient` over direct reply-to and an
//! `RpcServer` answering a queue. Concurrent calls, deadlines, dropped calls and late replies,
//! requests nobody can take, handler failures dead-lettered, and calls across a lost
//! connection (through a relay in front of the default broker).

mod common;
mod faults;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use faults::Relay;
use futures_util::StreamExt;
use futures_util::future::join_all;
use warren::rpc::{RpcCallOptions, RpcClient, RpcError, RpcServer, RpcServerOptions};
use warren::wire::FieldTable;
use warren::{
    BasicProperties, Connection, ConnectionEvent, ExchangeKind, QueueDeclareOptions,
    RecoveryPolicy, ReplyCode,
};

/// Declares a request queue (deleted by `cleanup`) and returns its name.
async fn request_queue(connection: &Connection, cleanup: &mut Cleanup, what: &str) -> String {
    let queue = cleanup.queue(unique(what));
    let channel = open(connection).await;
    declare_queue(&channel, &queue).await;
    channel.close().await.expect("closing the set-up channel");
    queue
}

/// A server on `queue` whose replies are the request's body in upper case; a body `fail`
/// fails the handler, a body `panic` panics in it, a body `sleep N` sleeps N ms first.
async fn uppercase_server(
    connection: &Connection,
    queue: &str,
    options: RpcServerOptions,
) -> RpcServer {
    let server = RpcServer::serve(connection, queue, options, |request| async move {
        let text = String::from_utf8(request.body.to_vec()).map_err(|e| e.to_string())?;
        if let Some(ms) = text.strip_prefix("sleep ") {
            let ms = ms.parse().map_err(|_| "bad sleep".to_owned())?;
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        match text.as_str() {
            "fail" => Err("the handler refused the request".to_owned()),
            "panic" => panic!("the handler panicked on purpose"),
            _ => Ok(text.to_uppercase()),
        }
    });
    within("RpcServer::serve", server)
        .await
        .expect("starting the RPC server")
}

async fn client(connection: &Connection) -> RpcClient {
    within("RpcClient::new", RpcClient::new(connection))
        .await
        .expect("starting the RPC client")
}

/// A deadline no call here should reach.
const TEN_S: Duration = Duration::from_secs(10);

fn timeout(after: Duration) -> RpcCallOptions {
    RpcCallOptions::default().with_timeout(after)
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_calls_each_get_their_own_reply() {
    run(async {
        let mut cleanup = Cleanup::new();
        let connection = connect().await;
        let queue = request_queue(&connection, &mut cleanup, "rpc-concurrent").await;
        let server = uppercase_server(&connection, &queue, RpcServerOptions::default()).await;
        let client = client(&connection).await;

        // 200 calls at once from one client, from clones of it, each with its own body, and
        // replies overtaking each other (each sleeps a different little while).
        let calls = (0..200).map(|i| {
            let client = client.clone();
            let queue = queue.clone();
            async move {
                let body = format!("sleep {}", (i * 7) % 23);
                let reply = client
                    .call(&queue, body.clone(), RpcCallOptions::default())
                    .await
                    .unwrap_or_else(|e| panic!("call {i}: {e}"));
                (body, reply)
            }
        });
        for (body, reply) in within("200 concurrent calls", join_all(calls)).await {
            assert_eq!(String::from_utf8_lossy(&reply.body), body.to_uppercase());
        }
        assert_eq!(
            client.pending_calls(),
            0,
            "every answered call left nothing"
        );
        assert_eq!(client.late_replies(), 0);

        // Properties reach the server; the reply's correlation id is the request's.
        let server_sees = RpcServer::serve(
            &connection,
            &queue,
            RpcServerOptions::default(),
            |request| async move {
                let header = request
                    .properties
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("who"))
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                Ok::<_, String>(format!(
                    "{header}/{}",
                    request
                        .properties
                        .correlation_id
                        .as_deref()
                        .unwrap_or("none")
                ))
            },
        );
        server
            .shutdown()
            .await
            .expect("shutting the first server down");
        let server = within("second server", server_sees)
            .await
            .expect("second server");
        let properties = BasicProperties::default().with_header("who", "tester");
        let reply = within(
            "a call with headers",
            client.call(
                &queue,
                "x",
                RpcCallOptions::default().with_properties(properties),
            ),
        )
        .await
        .expect("call with headers");
        let text = String::from_utf8_lossy(&reply.body).into_owned();
        let correlation_id = reply
            .properties
            .correlation_id
            .as_deref()
            .unwrap_or_default();
        assert_eq!(text, format!("tester/{correlation_id}"));
        server.shutdown().await.expect("shutting the server down");
        connection.close().await.expect("closing");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_without_reply_times_out_and_its_late_reply_is_counted() {
    run(async {
        let mut cleanup = Cleanup::new();
        let connection = connect().await;
        let queue = request_queue(&connection, &mut cleanup, "rpc-deadline").await;
        let client = client(&connection).await;

        // No server yet: the request waits in the queue, and the call hits its deadline.
        let started = std::time::Instant::now();
        let error = client
            .call(&queue, "late", timeout(Duration::from_millis(300)))
            .await
            .expect_err("nobody answers");
        assert!(
            matches!(error, RpcError::Timeout { after } if after == Duration::from_millis(300)),
            "{error:?}"
        );
        assert!(error.is_timeout() && !error.is_retryable());
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the deadline is kept"
        );
        assert_eq!(
            client.pending_calls(),
            0,
            "a timed-out call leaves no entry"
        );

        // A server comes and answers the waiting request: the reply has nobody to go to.
        let server = uppercase_server(&connection, &queue, RpcServerOptions::default()).await;
        eventually("the late reply to be counted", || async {
            client.late_replies() == 1
        })
        .await;
        // The client works on, and that reply was not handed to the next call.
        let reply = within(
            "a call after",
            client.call(&queue, "next", RpcCallOptions::default()),
        )
        .await
        .expect("a call after the late reply");
        assert_eq!(&reply.body[..], b"NEXT");

        // A reply that comes after its call's deadline, from a slow handler.
        let error = client
            .call(&queue, "sleep 800", timeout(Duration::from_millis(200)))
            .await
            .expect_err("the handler is slower than the deadline");
        assert!(error.is_timeout(), "{error:?}");
        eventually("the slow reply to be counted", || async {
            client.late_replies() == 2
        })
        .await;
        assert_eq!(client.pending_calls(), 0);
        server.shutdown().await.expect("shutting the server down");
        connection.close().await.expect("closing");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_call_leaves_nothing_behind() {
    run(async {
        let mut cleanup = Cleanup::new();
        let connection = connect().await;
        let queue = request_queue(&connection, &mut cleanup, "rpc-dropped").await;
        let client = client(&connection).await;

        // Twenty calls given up by dropping their futures (a select that took another branch).
        for i in 0..20 {
            let call = client.call(&queue, format!("dropped {i}"), RpcCallOptions::default());
            let ended = tokio::time::timeout(Duration::from_millis(20), call).await;
            assert!(ended.is_err(), "nobody answers yet");
        }
        assert_eq!(
            client.pending_calls(),
            0,
            "dropped calls are forgotten at once"
        );

        // Their requests were published: a server answers them, and the replies are counted.
        let channel = open(&connection).await;
        eventually("the requests to be queued", || async {
            queue_counts(&channel, &queue).await.message_count == 20
        })
        .await;
        let server = uppercase_server(&connection, &queue, RpcServerOptions::default()).await;
        eventually("20 late replies", || async { client.late_replies() == 20 }).await;
        assert_eq!(client.pending_calls(), 0);
        server.shutdown().await.expect("shutting the server down");
        connection.close().await.expect("closing");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_no_queue_takes_fails_at_once() {
    run(async {
        let connection = connect().await;
        let client = client(&connection).await;
        let missing = unique("rpc-no-such-queue");
        let started = std::time::Instant::now();
        let error = client
            .call(&missing, "anyone?", RpcCallOptions::default())
            .await
            .expect_err("no queue takes it");
        match &error {
            RpcError::Unroutable {
                reply_code,
                routing_key,
                ..
            } => {
                assert_eq!(*reply_code, ReplyCode::NO_ROUTE);
                assert_eq!(routing_key, &missing);
            }
            other => panic!("expected Unroutable, got {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not its 30 s deadline"
        );
        assert!(error.to_string().contains(&missing), "{error}");
        assert_eq!(client.pending_calls(), 0);
        // An invalid argument is a publish error, and the client goes on.
        let error = client
            .call(&"q".repeat(300), "x", RpcCallOptions::default())
            .await
            .expect_err("a routing key over 255 bytes");
        assert!(matches!(error, RpcError::Publish(_)), "{error:?}");
        assert_eq!(client.pending_calls(), 0);
        connection.close().await.expect("closing");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_and_panicking_handlers_dead_letter_their_requests() {
    run(async {
        let mut cleanup = Cleanup::new();
        let connection = connect().await;
        let channel = open(&connection).await;
        let dlx = cleanup.exchange(unique("rpc-dlx"));
        declare_exchange(&channel, &dlx, ExchangeKind::Fanout).await;
        let dead = cleanup.queue(unique("rpc-dead"));
        declare_queue(&channel, &dead).await;
        within(
            "queue.bind",
            channel.queue_bind(&dead, &dlx, "", Default::default()),
        )
        .await
        .expect("binding the dead-letter queue");
        let queue = cleanup.queue(unique("rpc-with-dlx"));
        let arguments = FieldTable::new().with("x-dead-letter-exchange", dlx.as_str());
        declare_queue_with(
            &channel,
            &queue,
            QueueDeclareOptions {
                arguments,
                ..Default::default()
            },
        )
        .await;

        let server = uppercase_server(&connection, &queue, RpcServerOptions::default()).await;
        let client = client(&connection).await;
        for body in ["fail", "panic"] {
            let error = client
                .call(&queue, body, timeout(Duration::from_millis(500)))
                .await
                .expect_err("a failed handler sends no reply");
            assert!(error.is_timeout(), "{error:?}");
        }
        // Both requests went to the dead-letter queue, with the reason; nothing is requeued.
        let mut dead_bodies = Vec::new();
        within("two dead-lettered requests", async {
            while dead_bodies.len() < 2 {
                match get_body(&channel, &dead).await {
                    Some(body) => dead_bodies.push(body),
                    None => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        })
        .await;
        dead_bodies.sort();
        assert_eq!(dead_bodies, vec![b"fail".to_vec(), b"panic".to_vec()]);
        assert_eq!(
            queue_counts(&channel, &queue).await.message_count,
            0,
            "not requeued"
        );
        // The server still answers.
        let reply = within(
            "a call after the failures",
            client.call(&queue, "ok", RpcCallOptions::default()),
        )
        .await
        .expect("the server survives failing handlers");
        assert_eq!(&reply.body[..], b"OK");
        eventually("the handlers to finish", || async {
            server.running_handlers() == 0
        })
        .await;
        server.shutdown().await.expect("shutting the server down");
        connection.close().await.expect("closing");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_runs_at_most_its_concurrency_of_handlers() {
    run(async {
        let mut cleanup = Cleanup::new();
        let connection = connect().await;
        let queue = request_queue(&connection, &mut cleanup, "rpc-concurrency").await;
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let (r, m) = (running.clone(), most.clone());
        let options = RpcServerOptions {
            prefetch: 10,
            concurrency: 3,
            ..Default::default()
        };
        let server = RpcServer::serve(&connection, &queue, options, move |_| {
            let (running, most) = (r.clone(), m.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, String>("done")
            }
        })
        .await
        .expect("serving");
        let client = client(&connection).await;
        let calls = (0..30).map(|_| client.call(&queue, "work", RpcCallOptions::default()));
        for reply in within("30 calls", join_all(calls)).await {
            assert_eq!(&reply.expect("a call").body[..], b"done");
        }
        assert_eq!(
            most.load(Ordering::SeqCst),
            3,
            "the handlers ran 3 at a time, no more"
        );

        // Bad options are refused before anything is sent.
        for options in [
            RpcServerOptions {
                prefetch: 0,
                ..Default::default()
            },
            RpcServerOptions {
                concurrency: 0,
                ..Default::default()
            },
        ] {
            let error = RpcServer::serve(&connection, &queue, options, |_| async {
                Ok::<_, String>("")
            })
            .await
            .expect_err("invalid options");
            assert!(
                matches!(error, warren::Error::InvalidArgument(_)),
                "{error:?}"
            );
        }
        server.shutdown().await.expect("shutting the server down");
        connection.close().await.expect("closing");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_in_flight_at_a_connection_loss_fail_at_once_and_the_client_works_after_recovery() {
    run(async {
        let mut cleanup = Cleanup::new();
        // The server is on a direct connection; the client's goes through a relay to cut.
        let server_connection = connect().await;
        let queue = request_queue(&server_connection, &mut cleanup, "rpc-recovery").await;
        let server =
            uppercase_server(&server_connection, &queue, RpcServerOptions::default()).await;
        let relay = Relay::start(broker_addr()).await;
        let options = relay.options(common::options()).recovery(
            RecoveryPolicy::default()
                .initial_delay(Duration::from_millis(10))
                .max_delay(Duration::from_millis(500)),
        );
        let connection = connect_with(options).await;
        let client = client(&connection).await;
        let reply = within(
            "a call before",
            client.call(&queue, "before", RpcCallOptions::default()),
        )
        .await
        .expect("a call before the loss");
        assert_eq!(&reply.body[..], b"BEFORE");

        // Calls whose handler takes 3 s are in flight when the link is cut.
        let mut events = connection.events();
        let slow = (0..5).map(|_| {
            let client = client.clone();
            let queue = queue.clone();
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                let result = client
                    .call(&queue, "sleep 3000", timeout(Duration::from_secs(20)))
                    .await;
                (result, started.elapsed())
            })
        });
        let slow: Vec<_> = slow.collect();
        eventually("the slow calls to be waiting", || async {
            client.pending_calls() == 5
        })
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        relay.cut();
        for call in slow {
            let (result, took) = within("a call in flight at the loss", call)
                .await
                .expect("the call task");
            let error = result.expect_err("its reply cannot come");
            assert!(
                matches!(error, RpcError::ConnectionLost { .. }),
                "{error:?}"
            );
            assert!(error.is_retryable());
            assert!(
                took < Duration::from_secs(3),
                "failed at the loss, not at its deadline: {took:?}"
            );
        }
        assert_eq!(client.pending_calls(), 0);
        within("recovery", async {
            while let Some(event) = events.next().await {
                if matches!(event, ConnectionEvent::Recovered { .. }) {
                    return;
                }
            }
            panic!("the events ended before recovery");
        })
        .await;

        // The reply consumer came back with the channel: calls work again.
        let reply = within(
            "a call after",
            client.call(&queue, "after", RpcCallOptions::default()),
        )
        .await
        .expect("a call after recovery");
        assert_eq!(&reply.body[..], b"AFTER");
        // The replies to the calls of the old connection never came to this one.
        server.shutdown().await.expect("shutting the server down");
        connection.close().await.expect("closing");
        server_connection.close().await.expect("closing");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_whose_connection_closes_fails_its_calls_with_closed() {
    run(async {
        let mut cleanup = Cleanup::new();
        let connection = connect().await;
        let queue = request_queue(&connection, &mut cleanup, "rpc-closed").await;
        let client = client(&connection).await;
        let waiting = {
            let client = client.clone();
            let queue = queue.clone();
            tokio::spawn(async move {
                client
                    .call(&queue, "never", RpcCallOptions::default())
                    .await
            })
        };
        eventually("the call to be waiting", || async {
            client.pending_calls() == 1
        })
        .await;
        connection.close().await.expect("closing");
        let error = within("the waiting call", waiting)
            .await
            .expect("the call task")
            .expect_err("closed");
        assert!(matches!(error, RpcError::Closed(_)), "{error:?}");
        let error = client
            .call(&queue, "later", RpcCallOptions::default())
            .await
            .expect_err("closed");
        assert!(matches!(error, RpcError::Closed(_)), "{error:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_channel_the_broker_closes_fails_its_calls_and_the_next_call_opens_a_new_one() {
    run(async {
        let mut cleanup = Cleanup::new();
        let server_connection = connect().await;
        let queue = request_queue(&server_connection, &mut cleanup, "rpc-reopen").await;
        let server =
            uppercase_server(&server_connection, &queue, RpcServerOptions::default()).await;
        let name = unique("rpc-reopen-client");
        let connection = connect_with(options().connection_name(&name)).await;
        let client = client(&connection).await;
        let reply = within(
            "a first call",
            client.call(&queue, "before", timeout(TEN_S)),
        )
        .await
        .expect("the first call");
        assert_eq!(&reply.body[..], b"BEFORE");
        let first = client.channel();

        // A request to a missing exchange: the broker closes the client's channel, and the
        // call fails with the broker's reason.
        let missing = RpcCallOptions {
            exchange: unique("rpc-no-such-exchange"),
            ..Default::default()
        };
        let error = within(
            "a call to a missing exchange",
            client.call("key", "x", missing),
        )
        .await
        .expect_err("the broker closes the channel");
        let RpcError::Closed(cause) = &error else {
            panic!("expected Closed, got {error:?}");
        };
        assert_eq!(
            cause.reply_code(),
            Some(warren::ReplyCode::NOT_FOUND),
            "{cause}"
        );
        assert!(!first.is_open());

        // The next calls, 20 at once, open one new channel between them and get their
        // replies on it.
        let calls = (0..20).map(|i| {
            let client = client.clone();
            let queue = queue.clone();
            async move {
                let reply = client
                    .call(&queue, format!("after {i}"), timeout(TEN_S))
                    .await
                    .expect("a call after the close");
                assert_eq!(reply.body, format!("AFTER {i}").as_bytes());
            }
        });
        within("20 calls after the close", join_all(calls)).await;
        assert!(client.channel().is_open());
        assert_eq!(client.pending_calls(), 0);
        eventually("the client's connection to have one channel", || async {
            broker_connection(&name, &["channels"]).is_some_and(|line| line[0] == "1")
        })
        .await;

        server.shutdown().await.expect("stopping the server");
        connection.close().await.expect("closing");
        server_connection.close().await.expect("closing");
    })
    .await;
}
