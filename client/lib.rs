//! warren: an AMQP 0-9-1 client for RabbitMQ, on tokio, with its wire protocol generated from
//! the AMQP specification.
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use warren::protocol::BasicProperties;
//! use warren::{BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, Connection, QueueDeclareOptions};
//!
//! # async fn example() -> Result<(), warren::Error> {
//! let connection = Connection::connect("amqp://guest:guest@localhost:5672/%2f").await?;
//! let channel = connection.open_channel().await?;
//! channel.queue_declare("hello", QueueDeclareOptions::default()).await?;
//! channel
//!     .basic_publish("", "hello", BasicPublishOptions::default(), "Hello World!", BasicProperties::default())
//!     .await?;
//! let mut consumer = channel.basic_consume("hello", BasicConsumeOptions::default()).await?;
//! if let Some(delivery) = consumer.next().await {
//!     let delivery = delivery?;
//!     println!("received {:?}", delivery.body);
//!     delivery.ack(BasicAckOptions::default()).await?;
//! }
//! connection.close().await?;
//! # Ok(()) }
//! ```
//!
//! # Cancellation: what a dropped future did
//!
//! Every `async fn` of warren may be cancelled by dropping its future (a `select!` that took
//! another branch, a `timeout`, a task aborted); a call whose deadline passes
//! ([`Error::Timeout`]) is the same as a drop. The rule: **a request reaches the broker if
//! and only if the future was polled far enough to hand it to the connection**, which
//! happens on the first poll unless the connection's command queue is full (then the future
//! waits for room, and dropping it there sends nothing). What a request that was sent does on
//! the broker happens whether or not anyone waits for the reply, and the channel stays in
//! step: the connection's driver still takes the reply, does its bookkeeping, and gives the
//! next call its own reply. Nothing a dropped future started is left behind.
//!
//! | call | dropped before its request was handed over | dropped after |
//! | --- | --- | --- |
//! | [`Connection::connect`], [`Connection::connect_with`] | no connection | the socket is closed; the broker may log an unexpected close |
//! | [`Connection::open_channel`] | nothing | the channel opens and is closed again at once: no channel number leaks |
//! | [`Connection::close`], [`Connection::close_with`], [`Channel::close`] | nothing (a channel still closes when its last handle is dropped) | the close goes on |
//! | [`Connection::update_secret`], [`Channel::call`] and every named synchronous method (`queue_declare`, `exchange_bind`, `basic_qos`, `basic_cancel`, `basic_recover`, `tx_commit`, `confirm_select`, ...), [`Consumer::cancel`] | nothing | it takes effect on the broker; its bookkeeping (prefetch, confirm mode, recorded topology, the end of a cancelled consumer's stream) is done; the reply is discarded |
//! | [`Channel::basic_consume`] | nothing | as above, and the consumer is cancelled again; deliveries that reached it are requeued |
//! | [`Channel::basic_get`] | nothing | as above, and the message it fetched goes back to the queue (unless `no_ack`: then fetching it removed it) |
//! | [`Channel::basic_publish`], [`Channel::publish_method`] | the message is not sent (and takes no confirm sequence number) | the future has completed: a publish is handed over whole or not at all, so its future never stops halfway |
//! | [`PublishConfirm`] | - | the publish is unaffected; only its outcome is not reported (an in-flight place is freed when the broker confirms) |
//! | [`Channel::send`], `basic_ack`, `basic_nack`, `basic_reject`, `basic_recover_async`, and the `ack`/`nack`/`reject` of [`Delivery`] | not sent | sent |
//! | [`rpc::RpcClient::call`] | nothing is published, and the call's entry is removed | the request was published; the call's entry is removed, and its reply, when it comes, is dropped and counted in [`rpc::RpcClient::late_replies`] |
//! | [`rpc::RpcClient::new`], [`rpc::RpcServer::serve`] | nothing | as `open_channel` and `basic_consume` above: the channel is closed again and the consumer cancelled |
//! | [`Channel::wait_for_confirms`], [`Channel::closed`], [`Connection::closed`], the next item of a [`Consumer`] | - | nothing: these only wait (an unread delivery stays in the consumer's buffer) |
//!
//! `tests/cancellation.rs` drops these futures at random points against a real broker and
//! checks the rule: later calls get their own replies, publishes are sent whole or not at
//! all and their confirms match them, and no consumer, fetched message or channel is left
//! behind.

#![deny(missing_docs)]
// docs.rs (see Cargo.toml) marks the items that need a Cargo feature.
#![cfg_attr(docsrs, feature(doc_cfg))]

// The codec: generated protocol types over hand-written wire primitives (and the property
// setters the generator cannot write), and frames.
pub mod frame;
mod properties;
pub mod protocol;
pub mod wire;

// Beneath the handles and the driver: errors, configuration, TLS, the topology record, and
// the state both sides share.
mod config;
mod error;
mod shared;
mod telemetry;
// Without the `tls` feature, the rustls code in `tls` is compiled out item by item; what is
// left of its imports and helpers is unused.
#[cfg_attr(not(feature = "tls"), allow(unused_imports, dead_code))]
pub mod tls;
pub mod topology;

// The driver: the task that owns the socket.
mod driver;

// The handles applications hold.
pub mod channel;
mod confirms;
pub mod connection;
pub mod consumer;
mod message;
pub mod publisher;
pub mod rpc;

pub use channel::*;
pub use confirms::{ConfirmSummary, Confirmation, PublishConfirm};
pub use connection::{
    AuthMechanism, BlockedPolicy, Connection, ConnectionEvent, ConnectionOptions, ConnectionStats,
    ConnectionStatus, Endpoint, EndpointOrder, Events, Password, RecoveryPolicy, TlsOptions,
    TrustRoots, UriError,
};
pub use connection::{HostError, PortError, UriPart};
pub use consumer::{Consumer, UndecodableDelivery};
pub use error::{Close, Error, Initiator, Result};
pub use message::{Delivery, Envelope, GetMessage, ReturnedMessage};
pub use properties::DeliveryMode;
pub use protocol::{BasicProperties, ReplyCode};
pub use publisher::{PublishError, Publisher, PublisherOptions};
pub use tls::TlsError;
pub use topology::TopologyEntity;
