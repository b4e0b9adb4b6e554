//! Every rule that turns a spec name into a Rust identifier, in one place.
//!
//! Spec names are words of ASCII letters and digits separated by `-` (the 0-9-1 files), `_`
//! or spaces (older AMQP XML files). The rules:
//!
//! | spec | Rust | function |
//! | --- | --- | --- |
//! | class `queue`, method `declare-ok` | `QueueDeclareOk` (struct, `Method` variant) | [`method_type`] |
//! | class `basic` | `Basic` (`Class` variant), `BasicProperties` | [`upper_camel`], [`properties_type`] |
//! | method `get` of `basic` with several responses | `BasicGetReply` | [`reply_type`] |
//! | field `auto-delete` | `auto_delete` | [`field`] |
//! | field `type` | `kind` (rename table, [`RENAMES`]) | [`field`] |
//! | field `match` | `r#match` (other keywords: raw identifiers) | [`field`] |
//! | constant `frame-min-size` | `FRAME_MIN_SIZE` | [`constant`] |
//! | reply code `not-found` | `ReplyCode::NOT_FOUND` | [`constant`] |
//!
//! A name starting with a digit gets a `_` prefix (`01` -> `_01`), so every valid spec name
//! has an identifier.

use proc_macro2::{Ident, Span};

/// Field names that are Rust keywords and get a readable name instead of a raw identifier.
///
/// `type` is by far the most common (exchange.declare, basic properties); `r#type` reads
/// poorly in user code (`props.r#type`), so it becomes `kind`. Any other keyword becomes a raw
/// identifier (`r#match`).
pub const RENAMES: &[(&str, &str)] = &[("type", "kind")];

/// Keywords that cannot be raw identifiers (`r#self` is not allowed): they get a `_` suffix.
const NOT_RAW: &[&str] = &["self", "Self", "super", "crate", "_"];

/// Rust keywords, strict and reserved, of every edition up to 2024.
const KEYWORDS: &[&str] = &[
    "abstract", "as", "async", "await", "become", "box", "break", "const", "continue", "crate",
    "do", "dyn", "else", "enum", "extern", "false", "final", "fn", "for", "gen", "if", "impl",
    "in", "let", "loop", "macro", "match", "mod", "move", "mut", "override", "priv", "pub", "ref",
    "return", "self", "Self", "static", "struct", "super", "trait", "true", "try", "type",
    "typeof", "unsafe", "unsized", "use", "virtual", "where", "while", "yield",
];

/// Whether `name` is a valid spec name: non-empty, ASCII letters, digits and the separators
/// `-`, `_` and space, with at least one letter or digit.
pub fn is_valid(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ' '))
        && name.chars().any(|c| c.is_ascii_alphanumeric())
}

/// The words of a spec name, lowercased: `declare-ok` -> `["declare", "ok"]`.
fn words(name: &str) -> impl Iterator<Item = String> + '_ {
    name.split(['-', '_', ' ', '.'])
        .filter(|w| !w.is_empty())
        .map(|w| w.to_ascii_lowercase())
}

/// Prefixes `_` when the identifier would start with a digit.
fn guard_digit(mut ident: String) -> String {
    if ident.starts_with(|c: char| c.is_ascii_digit()) {
        ident.insert(0, '_');
    }
    ident
}

/// `declare-ok` -> `DeclareOk`; `queue.declare-ok` -> `QueueDeclareOk`.
pub fn upper_camel(name: &str) -> String {
    let mut out = String::new();
    for word in words(name) {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            out.push(first.to_ascii_uppercase());
            out.extend(chars);
        }
    }
    if out == "Self" {
        out.push('_');
    }
    guard_digit(out)
}

/// `auto-delete` -> `auto_delete`.
pub fn snake(name: &str) -> String {
    guard_digit(words(name).collect::<Vec<_>>().join("_"))
}

/// `frame-min-size` -> `FRAME_MIN_SIZE`.
pub fn constant(name: &str) -> String {
    snake(name).to_ascii_uppercase()
}

/// The struct (and `Method` variant) of a method: class `queue`, method `declare-ok` ->
/// `QueueDeclareOk`.
pub fn method_type(class: &str, method: &str) -> String {
    format!("{}{}", upper_camel(class), upper_camel(method))
}

/// The reply enum of a method with several responses: `basic`, `get` -> `BasicGetReply`.
pub fn reply_type(class: &str, method: &str) -> String {
    format!("{}Reply", method_type(class, method))
}

/// The content properties struct of a class: `basic` -> `BasicProperties`.
pub fn properties_type(class: &str) -> String {
    format!("{}Properties", upper_camel(class))
}

/// The Rust name of a field, as text: `auto-delete` -> `auto_delete`, `type` -> `kind`,
/// `match` -> `r#match`, `self` -> `self_`.
pub fn field(name: &str) -> String {
    let snake = snake(name);
    if let Some((_, renamed)) = RENAMES.iter().find(|(from, _)| *from == snake) {
        return (*renamed).to_owned();
    }
    if NOT_RAW.contains(&snake.as_str()) {
        return format!("{snake}_");
    }
    if KEYWORDS.contains(&snake.as_str()) {
        return format!("r#{snake}");
    }
    snake
}

/// Turns an identifier produced by this module (possibly `r#...`) into an [`Ident`].
pub fn ident(text: &str) -> Ident {
    match text.strip_prefix("r#") {
        Some(raw) => Ident::new_raw(raw, Span::call_site()),
        None => Ident::new(text, Span::call_site()),
    }
}

/// The identifier of a field, ready for `quote!`.
pub fn field_ident(name: &str) -> Ident {
    ident(&field(name))
}

/// The identifier a field has in text (docs, `Debug` output): without any `r#` prefix.
pub fn field_display(name: &str) -> String {
    let f = field(name);
    f.strip_prefix("r#").map(str::to_owned).unwrap_or(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_types_are_class_prefixed_upper_camel() {
        assert_eq!(method_type("queue", "declare-ok"), "QueueDeclareOk");
        assert_eq!(method_type("basic", "consume-ok"), "BasicConsumeOk");
        assert_eq!(
            method_type("connection", "update-secret-ok"),
            "ConnectionUpdateSecretOk"
        );
        assert_eq!(method_type("basic", "recover-async"), "BasicRecoverAsync");
        assert_eq!(method_type("tx", "select"), "TxSelect");
        // Older files separate words with spaces.
        assert_eq!(method_type("queue", "declare ok"), "QueueDeclareOk");
        assert_eq!(upper_camel("queue.declare-ok"), "QueueDeclareOk");
    }

    #[test]
    fn reply_and_properties_types() {
        assert_eq!(reply_type("basic", "get"), "BasicGetReply");
        assert_eq!(properties_type("basic"), "BasicProperties");
        assert_eq!(upper_camel("basic"), "Basic");
    }

    #[test]
    fn fields_are_snake_case() {
        assert_eq!(field("auto-delete"), "auto_delete");
        assert_eq!(field("no-wait"), "no_wait");
        assert_eq!(field("reserved-1"), "reserved_1");
        assert_eq!(field("queue"), "queue");
        assert_eq!(field("Content-Type"), "content_type");
        assert_eq!(field("message count"), "message_count");
    }

    #[test]
    fn keywords_use_the_rename_table_then_raw_identifiers() {
        assert_eq!(field("type"), "kind");
        assert_eq!(field("match"), "r#match");
        assert_eq!(field("async"), "r#async");
        assert_eq!(field("gen"), "r#gen");
        assert_eq!(field("self"), "self_");
        assert_eq!(field("super"), "super_");
        assert_eq!(field_display("match"), "match");
        assert_eq!(field_ident("match").to_string(), "r#match");
        assert_eq!(field_ident("type").to_string(), "kind");
        // A keyword inside a longer name is fine as it is.
        assert_eq!(field("type-name"), "type_name");
    }

    #[test]
    fn constants_are_screaming_snake_case() {
        assert_eq!(constant("frame-min-size"), "FRAME_MIN_SIZE");
        assert_eq!(constant("not-found"), "NOT_FOUND");
        assert_eq!(constant("reply-success"), "REPLY_SUCCESS");
    }

    #[test]
    fn leading_digits_get_an_underscore() {
        assert_eq!(field("01"), "_01");
        assert_eq!(constant("2nd-try"), "_2ND_TRY");
        assert_eq!(upper_camel("3-way"), "_3Way");
        assert_eq!(upper_camel("self"), "Self_");
        // The result is a valid identifier.
        assert_eq!(field_ident("01").to_string(), "_01");
    }

    #[test]
    fn valid_names() {
        assert!(is_valid("declare-ok"));
        assert!(is_valid("message count"));
        assert!(is_valid("reserved_1"));
        assert!(!is_valid(""));
        assert!(!is_valid("---"));
        assert!(!is_valid("queue.declare"));
        assert!(!is_valid("naïve"));
        assert!(!is_valid("a/b"));
    }

    #[test]
    fn every_valid_name_makes_an_identifier() {
        for name in [
            "a", "9", "type", "self", "Self", "crate", "_x", "x y-z_w", "match",
        ] {
            // Ident::new panics on an invalid identifier: this is the check.
            let _ = field_ident(name);
            let _ = ident(&upper_camel(name));
            let _ = ident(&constant(name));
        }
    }
}
