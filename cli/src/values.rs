//! Parsers of option values: typed `KEY=VALUE` entries, durations, timestamps.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use warren::wire::{FieldTable, FieldValue, ShortString};

/// Parses `KEY=VALUE` (typed by its look) or `KEY:TYPE=VALUE` (typed as told), as the help's
/// "Typed values" section describes.
pub fn parse_entry(entry: &str) -> Result<(String, FieldValue), String> {
    let Some((key, value)) = entry.split_once('=') else {
        return Err(format!("expected KEY=VALUE, got {entry:?}"));
    };
    let (key, forced) = match key.rsplit_once(':') {
        Some((key, kind @ ("str" | "int" | "bool"))) => (key, Some(kind)),
        _ => (key, None),
    };
    if key.is_empty() {
        return Err(format!("the key is empty in {entry:?}"));
    }
    if key.len() > 255 {
        return Err(format!("the key {key:?} is longer than 255 bytes"));
    }
    let value = match forced {
        Some("str") => FieldValue::from(value),
        Some("int") => FieldValue::I64(
            value
                .parse()
                .map_err(|_| format!("{value:?} is not a 64-bit integer"))?,
        ),
        Some(_) => match value {
            "true" => FieldValue::Bool(true),
            "false" => FieldValue::Bool(false),
            _ => return Err(format!("{value:?} is not true or false")),
        },
        None => infer(value),
    };
    Ok((key.to_owned(), value))
}

/// An integer if `value` is an integer written the canonical way, a boolean if it is `true` or
/// `false`, a string otherwise.
fn infer(value: &str) -> FieldValue {
    if let Ok(n) = value.parse::<i64>()
        && n.to_string() == value
    {
        return FieldValue::I64(n);
    }
    match value {
        "true" => FieldValue::Bool(true),
        "false" => FieldValue::Bool(false),
        _ => FieldValue::from(value),
    }
}

/// The entries as a field table (a later key replaces an earlier one).
pub fn table(entries: Vec<(String, FieldValue)>) -> FieldTable {
    let mut table = FieldTable::new();
    for (key, value) in entries {
        // parse_entry checked the length.
        if let Ok(key) = ShortString::try_from(key) {
            table.insert(key, value);
        }
    }
    table
}

/// Parses `10` (seconds), `10s`, `1.5s`, `500ms`, `2m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (like 10, 10s, 500ms, 2m)"))?;
    let seconds = match unit.trim() {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" | "min" => number * 60.0,
        "h" => number * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (use ms, s, m or h)"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("{text:?} is out of range"))
}

/// Parses seconds since the Unix epoch, or `now`.
pub fn parse_timestamp(text: &str) -> Result<u64, String> {
    if text == "now" {
        return Ok(SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()));
    }
    text.parse()
        .map_err(|_| format!("{text:?} is neither seconds since the Unix epoch nor \"now\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_typed_by_their_look() {
        let typed = |entry| parse_entry(entry).unwrap();
        assert_eq!(typed("n=42"), ("n".into(), FieldValue::I64(42)));
        assert_eq!(typed("n=-7"), ("n".into(), FieldValue::I64(-7)));
        assert_eq!(
            typed("zip=01234"),
            ("zip".into(), FieldValue::from("01234"))
        );
        assert_eq!(typed("plus=+1"), ("plus".into(), FieldValue::from("+1")));
        assert_eq!(typed("f=1.5"), ("f".into(), FieldValue::from("1.5")));
        assert_eq!(typed("b=true"), ("b".into(), FieldValue::Bool(true)));
        assert_eq!(typed("b=False"), ("b".into(), FieldValue::from("False")));
        assert_eq!(typed("s=a=b"), ("s".into(), FieldValue::from("a=b")));
        assert_eq!(typed("empty="), ("empty".into(), FieldValue::from("")));
        assert_eq!(
            typed("url=http://x"),
            ("url".into(), FieldValue::from("http://x"))
        );
    }

    #[test]
    fn a_type_suffix_forces_the_type() {
        let typed = |entry| parse_entry(entry).unwrap();
        assert_eq!(typed("n:str=42"), ("n".into(), FieldValue::from("42")));
        assert_eq!(typed("n:int=007"), ("n".into(), FieldValue::I64(7)));
        assert_eq!(typed("b:bool=false"), ("b".into(), FieldValue::Bool(false)));
        assert_eq!(typed("a:b=1"), ("a:b".into(), FieldValue::I64(1)));
        assert!(parse_entry("n:int=x").is_err());
        assert!(parse_entry("b:bool=yes").is_err());
        assert!(parse_entry("novalue").is_err());
        assert!(parse_entry("=1").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("10 parsecs").is_err());
    }

    #[test]
    fn timestamps() {
        assert_eq!(parse_timestamp("1700000000"), Ok(1_700_000_000));
        assert!(parse_timestamp("now").unwrap() > 1_700_000_000);
        assert!(parse_timestamp("yesterday").is_err());
    }
}
