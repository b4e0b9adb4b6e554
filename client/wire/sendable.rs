//! Checking a field table before it is sent: what the peer would refuse, or could not
//! survive, is refused here with a typed error, before anything is encoded.
//!
//! Two rules, so that sending is as strict as receiving:
//!
//! - Tables and arrays nest at most [`MAX_NESTING`] levels, counting the outermost table as 1:
//!   the limit warren (and RabbitMQ's Java client) enforces on receipt. Without it, warren
//!   would publish headers that its own consumers then refuse, and encoding a table nested
//!   tens of thousands of levels deep would overflow the stack. The check recurses at most
//!   [`MAX_NESTING`] + 1 levels whatever the table's depth, so it runs before the (recursive)
//!   encoder ever sees such a table.
//! - Floats (`f`, `d`) must be finite. RabbitMQ cannot represent NaN or an infinity: a
//!   publish whose headers hold one makes RabbitMQ 3.10 close the whole connection with
//!   `541 INTERNAL_ERROR`, failing every channel on it, so warren refuses the one publish.

use std::fmt;

use super::table::{FieldArray, FieldTable, FieldValue};
use super::{MAX_NESTING, ShortString, check};

/// Why a value cannot be sent; nothing was encoded or sent.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// Field tables and arrays nest deeper than [`MAX_NESTING`] levels.
    NestingTooDeep {
        /// The nesting limit.
        limit: usize,
    },
    /// A float is NaN or infinite, which RabbitMQ cannot represent.
    NonFiniteFloat {
        /// The key of the table entry that holds it (directly or in an array).
        key: ShortString,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NestingTooDeep { limit } => write!(
                f,
                "field tables or arrays nest deeper than the limit of {limit} levels, which \
                 receivers (warren included) refuse"
            ),
            Self::NonFiniteFloat { key } => write!(
                f,
                "the value of {key:?} is a NaN or infinite float, which RabbitMQ cannot \
                 represent (it closes the connection with 541); send it as a string"
            ),
        }
    }
}

impl std::error::Error for EncodeError {}

impl FieldTable {
    /// Checks that the table can be sent: it nests at most [`MAX_NESTING`] levels (counting
    /// itself as the first) and holds no NaN or infinite float.
    ///
    /// warren runs this on every table it sends (message headers, method arguments, client
    /// properties) before encoding, so a table that fails it is refused with
    /// [`Error::Encode`](crate::Error::Encode) and nothing is sent. The check does not
    /// recurse deeper than the limit, whatever the table's depth.
    ///
    /// A table received from the peer and unchanged is sent back as its bytes, which were
    /// checked for nesting on receipt; their floats are not looked at again (RabbitMQ never
    /// delivers non-finite ones: it refuses them from publishers).
    ///
    /// ```
    /// use warren::wire::{EncodeError, FieldTable};
    ///
    /// assert!(FieldTable::new().with("ratio", 0.5f64).check_sendable().is_ok());
    /// assert!(matches!(
    ///     FieldTable::new().with("ratio", f64::NAN).check_sendable(),
    ///     Err(EncodeError::NonFiniteFloat { .. })
    /// ));
    /// ```
    pub fn check_sendable(&self) -> Result<(), EncodeError> {
        table(self, 1)
    }
}

/// Checks `table` at nesting `depth` (the outermost table is 1).
fn table(table: &FieldTable, depth: usize) -> Result<(), EncodeError> {
    if depth > MAX_NESTING {
        return Err(EncodeError::NestingTooDeep { limit: MAX_NESTING });
    }
    if let Some(wire) = table.wire() {
        // Checked on receipt as an outermost table; nested deeper here, it must fit too.
        return match depth {
            1 => Ok(()),
            _ => check::table(wire, depth)
                .map_err(|_| EncodeError::NestingTooDeep { limit: MAX_NESTING }),
        };
    }
    for (key, value) in table {
        self::value(key, value, depth)?;
    }
    Ok(())
}

/// Checks the values of `array`, held by the entry `key`, at nesting `depth`.
fn array(key: &ShortString, array: &FieldArray, depth: usize) -> Result<(), EncodeError> {
    if depth > MAX_NESTING {
        return Err(EncodeError::NestingTooDeep { limit: MAX_NESTING });
    }
    array.0.iter().try_for_each(|v| value(key, v, depth))
}

/// Checks one value of the entry `key`, in a table or array at nesting `depth`.
fn value(key: &ShortString, value: &FieldValue, depth: usize) -> Result<(), EncodeError> {
    let finite = match value {
        FieldValue::F32(v) => v.is_finite(),
        FieldValue::F64(v) => v.is_finite(),
        FieldValue::Table(t) => return table(t, depth + 1),
        FieldValue::Array(a) => return array(key, a, depth + 1),
        _ => true,
    };
    if finite {
        Ok(())
    } else {
        Err(EncodeError::NonFiniteFloat { key: key.clone() })
    }
}
