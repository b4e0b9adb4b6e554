//! Checking a field table's bytes without building it.
//!
//! [`Reader::table`](super::Reader::table) runs this over a table's entries and keeps the bytes;
//! the entries are built only when the application looks at them. So this check must refuse
//! everything that building the entries would refuse, with the same errors: after it passes,
//! decoding cannot fail.

use super::{DecodeError, MAX_NESTING};

/// Checks the entries of a table (the bytes after its length) at nesting `depth`, counting the
/// outermost table as 1.
pub(super) fn table(mut entries: &[u8], depth: usize) -> Result<(), DecodeError> {
    enter(depth)?;
    while !entries.is_empty() {
        let key_len = usize::from(take(&mut entries, 1)?[0]);
        let key = take(&mut entries, key_len)?;
        // Keys are nearly always ASCII, which a word-at-a-time check confirms fastest.
        if !key.is_ascii() && std::str::from_utf8(key).is_err() {
            return Err(DecodeError::InvalidUtf8);
        }
        value(&mut entries, depth)?;
    }
    Ok(())
}

/// Checks the values of an array (the bytes after its length) at nesting `depth`.
fn array(mut values: &[u8], depth: usize) -> Result<(), DecodeError> {
    enter(depth)?;
    while !values.is_empty() {
        value(&mut values, depth)?;
    }
    Ok(())
}

/// Refuses a table or array nested deeper than [`MAX_NESTING`].
fn enter(depth: usize) -> Result<(), DecodeError> {
    if depth > MAX_NESTING {
        return Err(DecodeError::NestingTooDeep { limit: MAX_NESTING });
    }
    Ok(())
}

/// Checks one tagged value inside a table or array at `depth`, and moves past it.
fn value(input: &mut &[u8], depth: usize) -> Result<(), DecodeError> {
    let tag = take(input, 1)?[0];
    let size = match tag {
        b'V' => 0,
        b't' | b'b' | b'B' => 1,
        // `U` and `L` are the specification's tags for a signed 16- and 64-bit integer, which
        // RabbitMQ writes `s` and `l` but other clients still send (see `table.rs`).
        b's' | b'u' | b'U' => 2,
        b'I' | b'i' | b'f' => 4,
        b'D' => {
            take(input, 1)?;
            4
        }
        b'l' | b'L' | b'd' | b'T' => 8,
        b'S' | b'x' => length(input)?,
        b'A' => {
            let len = length(input)?;
            return array(take(input, len)?, depth + 1);
        }
        b'F' => {
            let len = length(input)?;
            return table(take(input, len)?, depth + 1);
        }
        other => return Err(DecodeError::UnknownFieldTag(other)),
    };
    take(input, size).map(drop)
}

/// Reads a 32-bit length.
fn length(input: &mut &[u8]) -> Result<usize, DecodeError> {
    let bytes = take(input, 4)?;
    Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize)
}

/// Splits `len` bytes off the front of `input`, or reports how many were missing.
#[inline]
fn take<'a>(input: &mut &'a [u8], len: usize) -> Result<&'a [u8], DecodeError> {
    let Some((front, rest)) = input.split_at_checked(len) else {
        return Err(DecodeError::Truncated {
            needed: len,
            remaining: input.len(),
        });
    };
    *input = rest;
    Ok(front)
}
