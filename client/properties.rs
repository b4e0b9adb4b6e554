//! What the generated [`BasicProperties`] setters cannot know from the specification: the
//! meaning of a delivery mode, and adding one header at a time.
//!
//! ```
//! use warren::{BasicProperties, DeliveryMode};
//!
//! let properties = BasicProperties::default()
//!     .with_content_type("application/json")
//!     .with_delivery_mode(DeliveryMode::Persistent)
//!     .with_header("tenant", "acme")
//!     .with_header("attempt", 3);
//! assert!(properties.is_persistent());
//! assert_eq!(
//!     format!("{properties:?}"),
//!     r#"BasicProperties { content_type: "application/json", headers: FieldTable([("tenant", LongString("acme")), ("attempt", I32(3))]), delivery_mode: 2 }"#
//! );
//! ```

use crate::protocol::BasicProperties;
use crate::wire::{FieldTable, FieldValue, IntoShortString, InvalidProperty};

/// Whether the broker keeps a message on disk: the `delivery_mode` property.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DeliveryMode {
    /// `1`: kept in memory where possible, lost if the broker restarts.
    Transient = 1,
    /// `2`: written to disk by durable queues, so that it survives a broker restart.
    Persistent = 2,
}

impl From<DeliveryMode> for u8 {
    fn from(mode: DeliveryMode) -> u8 {
        mode as u8
    }
}

impl BasicProperties {
    /// Adds the header `name` (replacing a header of that name), creating the headers table if
    /// there is none.
    ///
    /// A name over 255 bytes is not stored: it is recorded in
    /// [`invalid`](BasicProperties::invalid), and publishing these properties fails with
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument).
    #[must_use]
    pub fn with_header(mut self, name: impl IntoShortString, value: impl Into<FieldValue>) -> Self {
        match name.into_short_string() {
            Ok(name) => {
                self.headers
                    .get_or_insert_with(FieldTable::new)
                    .insert(name, value);
            }
            Err(error) => {
                self.invalid
                    .get_or_insert_with(|| Box::new(InvalidProperty::new("headers", error)));
            }
        }
        self
    }

    /// Whether the delivery mode is [`DeliveryMode::Persistent`].
    pub fn is_persistent(&self) -> bool {
        self.delivery_mode == Some(DeliveryMode::Persistent.into())
    }
}
