//! The state the handles and the driver share, beneath both.
//!
//! The handles (`Connection`, `Channel`, `Consumer`, `PublishConfirm`, `Delivery`) sit on top;
//! the driver (`crate::driver`), which owns the socket, sits beneath them; this module sits
//! beneath both. Handles send [`command::Command`]s down to the driver and read the state here;
//! the driver answers commands and writes the state here. Nothing here imports a handle or the
//! driver.

pub(crate) mod acks;
pub(crate) mod channel;
pub(crate) mod command;
pub(crate) mod connection;
pub(crate) mod consumer;
pub(crate) mod delivery_queue;
pub(crate) mod direct_writes;
pub(crate) mod ledger;
pub(crate) mod messages;
pub(crate) mod stats;
pub(crate) mod word_hash;
