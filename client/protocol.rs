//! The AMQP 0-9-1 protocol as data: a struct per method with its wire codec, the [`Method`]
//! and [`Class`] enums with encode/decode dispatch, [`BasicProperties`], the [`Request`] trait
//! that pairs requests with their replies, constants and [`ReplyCode`].
//!
//! Generated at build time by `warren-codegen` from `amqp-spec/amqp0-9-1.xml` (see `build.rs`);
//! the output is checked in as `codegen/tests/snapshots/protocol.rs` for review. Edit the spec
//! or the generator, never the output.

include!(concat!(env!("OUT_DIR"), "/protocol.rs"));
