//! Request/reply over RabbitMQ: an [`RpcClient`] that calls over direct reply-to, and an
//! [`RpcServer`] that answers requests from a queue with an async handler.
//!
//! # The client
//!
//! An [`RpcClient`] owns one channel and one consumer of RabbitMQ's direct reply-to
//! pseudo-queue [`DIRECT_REPLY_TO`] (no-ack, as the broker requires): no reply queue is
//! declared, and the broker sends each reply straight to the channel that published the
//! request. Every call gets a correlation id of its own, so any number of calls (from any
//! number of tasks: the client is a cheap `Clone`) may be in flight at once; the client's
//! task hands each reply to the call that waits for it.
//!
//! Each call has a deadline ([`RpcCallOptions::timeout`]). A call that times out, or whose
//! future is dropped, removes its entry at once: nothing of it stays in the client. A reply
//! that comes for such a call afterwards is dropped and counted
//! ([`RpcClient::late_replies`]). A request published `mandatory` (the default) that no
//! queue takes comes back from the broker and fails its call at once with
//! [`RpcError::Unroutable`] instead of waiting for its deadline.
//!
//! # Across automatic recovery
//!
//! A direct reply-to address names the channel that published the request on one
//! connection: when the connection is lost, replies to requests sent before cannot arrive.
//! So at the loss, every call that was waiting fails at once with
//! [`RpcError::ConnectionLost`] (the server may or may not have handled the request; retry
//! if it is idempotent), rather than running into its deadline. Recovery reopens the
//! client's channel and restores its reply consumer under the same handles (it is part of
//! the connection's recorded topology, like any consumer); calls made while the connection
//! recovers wait for it within their deadlines and then go out on the new connection.
//!
//! If the client's channel closes for good (the broker closes it for a request to a missing
//! exchange, or recovery cannot restore its reply consumer), the calls waiting on it fail
//! with [`RpcError::Closed`], and the next call opens a new channel and reply consumer, as a
//! [`Publisher`](crate::Publisher) replaces its channels. Once the connection is closed for
//! good, calls fail with [`RpcError::Closed`] and the connection's reason.
//!
//! # The server
//!
//! [`RpcServer::serve`] consumes a queue on a channel of its own with a prefetch, and runs
//! the handler for each request, at most [`RpcServerOptions::concurrency`] at once. A handler
//! returns a future of `Result<impl Into<RpcResponse>, E>`:
//!
//! - `Ok`: the response is published to the request's `reply_to` (through the default
//!   exchange) with the request's `correlation_id`, and then the request is acknowledged, so
//!   a server that dies before replying leaves the request to another;
//! - `Err` (or a panic): the request is rejected without requeue, so it goes to the queue's
//!   dead-letter exchange if it has one, and is dropped otherwise. (Requeueing a request that
//!   failed would usually make it fail again, forever.)
//!
//! ```no_run
//! # async fn example(connection: warren::Connection) -> Result<(), Box<dyn std::error::Error>> {
//! use warren::rpc::{RpcCallOptions, RpcClient, RpcServer, RpcServerOptions};
//!
//! let server = RpcServer::serve(&connection, "uppercase", RpcServerOptions::default(), |request| async move {
//!     let text = std::str::from_utf8(&request.body)?;
//!     Ok::<_, std::str::Utf8Error>(text.to_uppercase())
//! })
//! .await?;
//!
//! let client = RpcClient::new(&connection).await?;
//! let reply = client.call("uppercase", "hello", RpcCallOptions::default()).await?;
//! assert_eq!(&reply.body[..], b"HELLO");
//! server.shutdown().await?;
//! # Ok(()) }
//! ```

mod catch_unwind;
mod client;
mod error;
mod pending;
mod server;

pub use client::{RpcCallOptions, RpcClient, RpcReply};
pub use error::RpcError;
pub use server::{RpcRequest, RpcResponse, RpcServer, RpcServerOptions};

/// RabbitMQ's direct reply-to pseudo-queue: consume it (no-ack) and publish requests with
/// it as `reply_to` on the same channel, and replies come straight back to that channel.
pub const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";
