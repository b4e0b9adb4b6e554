//! Connection configuration: the options a connection is made (and remade, on recovery) with,
//! and the `amqp://` / `amqps://` URIs that describe them.
//!
//! The bottom of the client's layers besides the codec: the handles read it to connect, the
//! driver keeps a copy to reconnect with. It imports neither.

mod blocked;
mod endpoint;
mod options;
mod recovery;
pub mod uri;

pub use blocked::BlockedPolicy;
pub use endpoint::{Endpoint, EndpointOrder};
pub(crate) use endpoint::{Target, shuffle};
pub use options::{
    AuthMechanism, ConnectionOptions, DEFAULT_CONSUMER_BUFFER_BUDGET,
    DEFAULT_CONSUMER_STALL_TIMEOUT, DEFAULT_PORT, DEFAULT_TLS_PORT, Password, TlsOptions,
    TrustRoots,
};
pub use recovery::RecoveryPolicy;
pub(crate) use recovery::jitter;
