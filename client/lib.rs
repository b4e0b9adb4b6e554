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

#![deny(missing_docs)]

pub mod channel;
mod confirms;
pub mod connection;
pub mod consumer;
mod delivery_queue;
mod error;
pub mod frame;
mod message;
pub mod protocol;
pub mod tls;
pub mod topology;
pub mod wire;

pub use channel::*;
pub use confirms::{ConfirmSummary, Confirmation, PublishConfirm};
pub use connection::{
    AuthMechanism, Connection, ConnectionEvent, ConnectionOptions, Events, Password, TlsOptions,
    TrustRoots, UriError,
};
pub use connection::{HostError, PortError, UriPart};
pub use consumer::{Consumer, UndecodableDelivery};
pub use error::{Close, Error, Initiator, Result};
pub use message::{Delivery, Envelope, GetMessage, ReturnedMessage};
pub use protocol::{BasicProperties, ReplyCode};
pub use tls::TlsError;
