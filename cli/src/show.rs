//! How deliveries are shown: as text for people, as JSON lines for programs, or as files.

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use warren::wire::{FieldTable, FieldValue, ShortString};
use warren::{BasicProperties, Delivery};

use crate::cli::OutputArgs;
use crate::failure::Failure;

/// Where and how messages are shown.
pub struct Sink {
    format: Format,
    /// Messages shown so far.
    shown: u64,
    /// The next file number to try in the output directory.
    next_file: u64,
}

enum Format {
    Text,
    Json,
    Files(PathBuf),
}

impl Sink {
    pub fn new(output: &OutputArgs) -> Result<Self, Failure> {
        let format = match (&output.output_dir, output.json) {
            (Some(dir), _) => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    Failure::new(format!("cannot create directory {}: {e}", dir.display()))
                })?;
                Format::Files(dir.clone())
            }
            (None, true) => Format::Json,
            (None, false) => Format::Text,
        };
        Ok(Self {
            format,
            shown: 0,
            next_file: 1,
        })
    }

    /// Shows one message and flushes, so that it is out before it is acknowledged.
    /// `remaining` is the queue's count after a `basic.get`.
    pub fn show(&mut self, delivery: &Delivery, remaining: Option<u32>) -> Result<(), Failure> {
        self.shown += 1;
        let mut out = String::new();
        match &self.format {
            Format::Text => text(&mut out, self.shown, delivery, remaining),
            Format::Json => {
                json_message(&mut out, delivery, remaining);
                out.push('\n');
            }
            Format::Files(dir) => {
                let dir = dir.clone();
                let path = self.write_body(&dir, &delivery.body)?;
                let _ = writeln!(
                    out,
                    "message {}: {} bytes to {} (exchange {:?}, routing key {:?})",
                    self.shown,
                    delivery.body.len(),
                    path.display(),
                    delivery.envelope.exchange.as_str(),
                    delivery.envelope.routing_key.as_str(),
                );
            }
        }
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(out.as_bytes())?;
        stdout.flush()?;
        Ok(())
    }

    /// Writes `body` to the next free `NNNNNN.bin` of `dir`, never overwriting a file.
    fn write_body(&mut self, dir: &Path, body: &[u8]) -> Result<PathBuf, Failure> {
        loop {
            let path = dir.join(format!("{:06}.bin", self.next_file));
            self.next_file += 1;
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    file.write_all(body)
                        .map_err(|e| Failure::new(format!("writing {}: {e}", path.display())))?;
                    return Ok(path);
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(Failure::new(format!("creating {}: {e}", path.display())));
                }
            }
        }
    }
}

/// The text form: a header line, the properties that are set, the body.
fn text(out: &mut String, n: u64, delivery: &Delivery, remaining: Option<u32>) {
    let envelope = &delivery.envelope;
    let _ = write!(
        out,
        "message {n}: exchange {:?}, routing key {:?}, delivery tag {}",
        envelope.exchange.as_str(),
        envelope.routing_key.as_str(),
        envelope.delivery_tag
    );
    if envelope.redelivered {
        out.push_str(", redelivered");
    }
    if let Some(remaining) = remaining {
        let _ = write!(out, ", {remaining} left in the queue");
    }
    out.push('\n');
    for (name, value) in property_list(&delivery.properties) {
        let shown = match value {
            Property::Text(text) => text.to_owned(),
            Property::Number(n) => n.to_string(),
            Property::Timestamp(secs) => format!("{secs} ({})", utc(secs)),
            Property::Table(table) => {
                let mut s = String::new();
                text_table(&mut s, table);
                s
            }
        };
        let _ = writeln!(out, "  {name}: {shown}");
    }
    let body = &delivery.body;
    match std::str::from_utf8(body) {
        Ok(text) => {
            let _ = writeln!(out, "  body ({} bytes):", body.len());
            out.push_str(text);
        }
        Err(_) => {
            let _ = writeln!(out, "  body ({} bytes, not UTF-8, escaped):", body.len());
            out.push_str(&body.escape_ascii().to_string());
        }
    }
    if !out.ends_with('\n') {
        out.push('\n');
    }
}

/// A property's value, for both forms.
enum Property<'a> {
    Text(&'a str),
    Number(u64),
    Timestamp(u64),
    Table(&'a FieldTable),
}

/// The properties that are set, by the names of `warren publish`'s flags.
fn property_list(p: &BasicProperties) -> Vec<(&'static str, Property<'_>)> {
    fn text<'a>(
        name: &'static str,
        value: &'a Option<ShortString>,
    ) -> Option<(&'static str, Property<'a>)> {
        value.as_ref().map(|v| (name, Property::Text(v.as_str())))
    }
    [
        text("content-type", &p.content_type),
        text("content-encoding", &p.content_encoding),
        p.delivery_mode
            .map(|mode| ("delivery-mode", Property::Number(mode.into()))),
        p.priority
            .map(|priority| ("priority", Property::Number(priority.into()))),
        text("correlation-id", &p.correlation_id),
        text("reply-to", &p.reply_to),
        text("expiration", &p.expiration),
        text("message-id", &p.message_id),
        p.timestamp
            .map(|t| ("timestamp", Property::Timestamp(t.as_secs()))),
        text("type", &p.kind),
        text("user-id", &p.user_id),
        text("app-id", &p.app_id),
        text("cluster-id", &p.reserved),
        p.headers.as_ref().map(|h| ("headers", Property::Table(h))),
    ]
    .into_iter()
    .flatten()
    .collect()
}

fn text_table(out: &mut String, table: &FieldTable) {
    out.push('{');
    for (i, (key, value)) in table.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{}: ", key.as_str());
        text_value(out, value);
    }
    out.push('}');
}

fn text_value(out: &mut String, value: &FieldValue) {
    let _ = match value {
        FieldValue::Bool(v) => write!(out, "{v}"),
        FieldValue::I8(v) => write!(out, "{v}"),
        FieldValue::U8(v) => write!(out, "{v}"),
        FieldValue::I16(v) => write!(out, "{v}"),
        FieldValue::U16(v) => write!(out, "{v}"),
        FieldValue::I32(v) => write!(out, "{v}"),
        FieldValue::U32(v) => write!(out, "{v}"),
        FieldValue::I64(v) => write!(out, "{v}"),
        FieldValue::F32(v) => write!(out, "{v}"),
        FieldValue::F64(v) => write!(out, "{v}"),
        FieldValue::Decimal(d) => write!(out, "{}", decimal(d.value, d.scale)),
        FieldValue::LongString(s) => match s.to_str() {
            Some(s) => write!(out, "{s:?}"),
            None => write!(out, "b\"{}\"", s.as_bytes().escape_ascii()),
        },
        FieldValue::Array(array) => {
            out.push('[');
            for (i, item) in array.0.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                text_value(out, item);
            }
            out.push(']');
            Ok(())
        }
        FieldValue::Timestamp(t) => write!(out, "{} ({})", t.as_secs(), utc(t.as_secs())),
        FieldValue::Table(table) => {
            text_table(out, table);
            Ok(())
        }
        FieldValue::Void => write!(out, "void"),
        FieldValue::ByteArray(bytes) => write!(out, "b\"{}\"", bytes.escape_ascii()),
        // FieldValue may grow; show what it is rather than fail.
        #[allow(unreachable_patterns)]
        other => write!(out, "{other:?}"),
    };
}

/// One message as one JSON object (no newline).
pub fn json_message(out: &mut String, delivery: &Delivery, remaining: Option<u32>) {
    let envelope = &delivery.envelope;
    out.push_str("{\"exchange\":");
    json_string(out, &envelope.exchange);
    out.push_str(",\"routing_key\":");
    json_string(out, &envelope.routing_key);
    let _ = write!(
        out,
        ",\"delivery_tag\":{},\"redelivered\":{}",
        envelope.delivery_tag, envelope.redelivered
    );
    if let Some(remaining) = remaining {
        let _ = write!(out, ",\"message_count\":{remaining}");
    }
    out.push_str(",\"properties\":{");
    for (i, (name, value)) in property_list(&delivery.properties).into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_string(out, &name.replace('-', "_"));
        out.push(':');
        match value {
            Property::Text(text) => json_string(out, text),
            Property::Number(n) | Property::Timestamp(n) => {
                let _ = write!(out, "{n}");
            }
            Property::Table(table) => json_table(out, table),
        }
    }
    out.push('}');
    match std::str::from_utf8(&delivery.body) {
        Ok(text) => {
            out.push_str(",\"body\":");
            json_string(out, text);
        }
        Err(_) => {
            out.push_str(",\"body_base64\":");
            json_string(out, &base64(&delivery.body));
        }
    }
    out.push('}');
}

fn json_table(out: &mut String, table: &FieldTable) {
    out.push('{');
    for (i, (key, value)) in table.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_string(out, key);
        out.push(':');
        json_value(out, value);
    }
    out.push('}');
}

/// Numbers, booleans, strings, arrays and tables as themselves; timestamps as seconds;
/// decimals as numbers; byte arrays and non-UTF-8 strings as base64 strings; void as null.
fn json_value(out: &mut String, value: &FieldValue) {
    let _ = match value {
        FieldValue::Bool(v) => write!(out, "{v}"),
        FieldValue::I8(v) => write!(out, "{v}"),
        FieldValue::U8(v) => write!(out, "{v}"),
        FieldValue::I16(v) => write!(out, "{v}"),
        FieldValue::U16(v) => write!(out, "{v}"),
        FieldValue::I32(v) => write!(out, "{v}"),
        FieldValue::U32(v) => write!(out, "{v}"),
        FieldValue::I64(v) => write!(out, "{v}"),
        FieldValue::F32(v) if v.is_finite() => write!(out, "{v}"),
        FieldValue::F64(v) if v.is_finite() => write!(out, "{v}"),
        FieldValue::F32(_) | FieldValue::F64(_) | FieldValue::Void => write!(out, "null"),
        FieldValue::Decimal(d) => write!(out, "{}", decimal(d.value, d.scale)),
        FieldValue::LongString(s) => {
            match s.to_str() {
                Some(s) => json_string(out, s),
                None => json_string(out, &base64(s.as_bytes())),
            }
            Ok(())
        }
        FieldValue::Array(array) => {
            out.push('[');
            for (i, item) in array.0.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_value(out, item);
            }
            out.push(']');
            Ok(())
        }
        FieldValue::Timestamp(t) => write!(out, "{}", t.as_secs()),
        FieldValue::Table(table) => {
            json_table(out, table);
            Ok(())
        }
        FieldValue::ByteArray(bytes) => {
            json_string(out, &base64(bytes));
            Ok(())
        }
        #[allow(unreachable_patterns)]
        other => {
            json_string(out, &format!("{other:?}"));
            Ok(())
        }
    };
}

/// `value` × 10^-`scale` written out, e.g. (125, 2) -> 1.25.
fn decimal(value: i32, scale: u8) -> String {
    let digits = i64::from(value).unsigned_abs().to_string();
    let sign = if value < 0 { "-" } else { "" };
    let scale = usize::from(scale);
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let digits = format!("{digits:0>width$}", width = scale + 1);
    let (whole, fraction) = digits.split_at(digits.len() - scale);
    format!("{sign}{whole}.{fraction}")
}

/// A JSON string literal.
pub fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Seconds since the epoch as an ISO 8601 UTC time, e.g. 2023-11-14T22:13:20Z.
pub fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, expected) in cases {
            assert_eq!(base64(input.as_bytes()), expected);
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut out = String::new();
        json_string(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(out, r#""a\"b\\c\nd\u0001é""#);
    }

    #[test]
    fn decimals_and_dates() {
        assert_eq!(decimal(125, 2), "1.25");
        assert_eq!(decimal(-5, 3), "-0.005");
        assert_eq!(decimal(7, 0), "7");
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn tables_as_json() {
        let table = FieldTable::new()
            .with("s", "x")
            .with("n", 42i64)
            .with("b", true)
            .with("t", FieldTable::new().with("inner", 1i32))
            .with("a", vec![FieldValue::from(1i32), FieldValue::Void]);
        let mut out = String::new();
        json_table(&mut out, &table);
        assert_eq!(
            out,
            r#"{"s":"x","n":42,"b":true,"t":{"inner":1},"a":[1,null]}"#
        );
    }
}
