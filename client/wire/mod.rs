//! AMQP 0-9-1 wire primitives: the values methods and properties are made of, and the reader and
//! writer that move them between bytes and Rust.
//!
//! This module is sans-IO: it never touches a socket. It is also the only runtime module the
//! generated [`protocol`](crate::protocol) code uses, so everything here is the contract between
//! hand-written and generated code (see `ARCHITECTURE.md`).

mod check;
mod error;
mod reader;
mod sendable;
mod strings;
mod table;
mod writer;

pub use error::DecodeError;
pub use reader::Reader;
pub use sendable::EncodeError;
pub use strings::{IntoShortString, InvalidProperty, LongString, ShortString, ShortStringTooLong};
pub use table::{Decimal, FieldArray, FieldTable, FieldValue, Timestamp};
pub use writer::Writer;

use std::fmt;

/// How deep field tables and arrays may nest, counting the outermost as 1.
///
/// The same limit as RabbitMQ's Java client. A decoder that recursed without a limit could be
/// crashed with a stack overflow by any publisher, because RabbitMQ relays message headers as
/// they are.
pub const MAX_NESTING: usize = 32;

/// The wire types of AMQP domains, other than `bit` (bits are packed in runs; see
/// [`Reader::bits`]). Used to skip and zero reserved fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireType {
    /// `octet`: 8 bits.
    Octet,
    /// `short`: 16 bits.
    Short,
    /// `long`: 32 bits.
    Long,
    /// `longlong`: 64 bits.
    LongLong,
    /// `shortstr`: length octet and UTF-8.
    ShortStr,
    /// `longstr`: 32-bit length and bytes.
    LongStr,
    /// `table`: 32-bit length and entries.
    Table,
    /// `timestamp`: 64-bit seconds.
    Timestamp,
}

/// Identifies a method on the wire: its class id and its method id within the class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MethodId {
    /// Class id (`50` for queue).
    pub class: u16,
    /// Method id within the class (`10` for queue.declare).
    pub method: u16,
}

impl MethodId {
    /// The id of method `method` in class `class`.
    pub const fn new(class: u16, method: u16) -> Self {
        Self { class, method }
    }
}

impl fmt::Display for MethodId {
    /// Shows the id as `class.method`, e.g. `50.10`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.class, self.method)
    }
}

/// Which peer may send a method, as the specification's `chassis` elements state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Only the client sends it; the server receives it.
    ToServer,
    /// Only the server sends it; the client receives it.
    ToClient,
    /// Either peer may send it.
    Both,
}

impl Direction {
    /// Whether a client may send the method.
    pub const fn client_may_send(self) -> bool {
        matches!(self, Self::ToServer | Self::Both)
    }

    /// Whether a server may send the method.
    pub const fn server_may_send(self) -> bool {
        matches!(self, Self::ToClient | Self::Both)
    }
}

/// An AMQP method: its identity, its properties from the specification, and its argument codec.
///
/// Generated for every method of the specification (see [`protocol`](crate::protocol)).
pub trait AmqpMethod: Sized {
    /// Class and method id.
    const ID: MethodId;
    /// Dotted name as the specification writes it, e.g. `"queue.declare"`.
    const NAME: &'static str;
    /// Whether the specification marks the method synchronous.
    const SYNCHRONOUS: bool;
    /// Whether the method is followed by a content header and body frames.
    const CARRIES_CONTENT: bool;
    /// Which peer may send the method.
    const DIRECTION: Direction;

    /// Appends the method's arguments (not its ids) to `out`.
    fn encode(&self, out: &mut Writer<'_>);

    /// Reads the method's arguments (not its ids) from `input`.
    fn decode(input: &mut Reader) -> Result<Self, DecodeError>;
}

/// The properties of a content class, carried in a content header frame.
///
/// Generated for every class that declares properties (in AMQP 0-9-1, `basic`).
pub trait ContentProperties: Sized {
    /// Id of the class whose content these properties describe.
    const CLASS_ID: u16;

    /// Appends the presence flags and the present properties to `out`.
    fn encode(&self, out: &mut Writer<'_>);

    /// Reads presence flags and the properties they announce from `input`.
    fn decode(input: &mut Reader) -> Result<Self, DecodeError>;
}

#[cfg(test)]
pub(crate) mod arbitrary;
#[cfg(test)]
mod tests;
