//! Model -> Rust tokens. One module per kind of output:
//!
//! - [`constants`]: `pub const`s, `PROTOCOL_VERSION`/`PROTOCOL_HEADER`/`DEFAULT_PORT`, `ReplyCode`.
//! - [`methods`]: a struct per method with its `AmqpMethod` impl, `Request` impls, reply enums.
//! - [`properties`]: a `{Class}Properties` struct per content class.
//! - [`dispatch`]: the `Class` and `Method` enums, conversions, the `Request` trait.
//!
//! This module holds what they share: rustdoc text (spec prose made safe for rustdoc) and
//! the mapping of wire types to Rust types and `wire::Reader`/`wire::Writer` calls.

pub(crate) mod constants;
pub(crate) mod dispatch;
pub(crate) mod methods;
pub(crate) mod properties;
pub(crate) mod strategies;

use proc_macro2::TokenStream;
use quote::quote;

use crate::model::{Doc, Field, Method, Spec, Type};
use crate::names;

/// Emits the whole file (without header) for `spec`. `runtime` is the path generated code
/// uses to reach the `wire` facade; `proptest` adds the test-only [`strategies`] module.
pub(crate) fn file(spec: &Spec, runtime: &syn::Path, proptest: bool) -> TokenStream {
    let import = match runtime.segments.last() {
        Some(last) if last.ident == "wire" && runtime.segments.len() > 1 => quote!(use #runtime;),
        _ => quote!(use #runtime as wire;),
    };
    let constants = constants::emit(spec);
    let dispatch = dispatch::emit(spec);
    let methods = spec.classes.iter().map(|class| {
        let items = class.methods.iter().map(|m| methods::emit(spec, class, m));
        let props = class
            .properties
            .as_ref()
            .map(|p| properties::emit(class, p));
        quote! { #(#items)* #props }
    });
    let flag_tail = spec
        .classes
        .iter()
        .any(|c| c.properties.is_some())
        .then(properties::flag_tail);
    let redacted = spec
        .classes
        .iter()
        .flat_map(|c| {
            let props = c.properties.iter().flat_map(|p| p.fields.iter());
            c.methods.iter().flat_map(|m| m.fields.iter()).chain(props)
        })
        .any(|f| f.sensitive && !f.reserved)
        .then(|| {
            quote! {
                /// Stands in for a sensitive value in `Debug` output.
                struct Redacted;

                impl ::core::fmt::Debug for Redacted {
                    fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                        f.write_str("<redacted>")
                    }
                }
            }
        });
    let strategies = proptest.then(|| strategies::emit(spec));
    quote! {
        #import
        #constants
        #dispatch
        #(#methods)*
        #flag_tail
        #redacted
        #strategies
    }
}

// ===== wire types =====

/// The Rust type of a field of wire type `ty`.
pub(crate) fn rust_type(ty: Type) -> TokenStream {
    match ty {
        Type::Bit => quote!(bool),
        Type::Octet => quote!(u8),
        Type::Short => quote!(u16),
        Type::Long => quote!(u32),
        Type::LongLong => quote!(u64),
        Type::ShortStr => quote!(wire::ShortString),
        Type::LongStr => quote!(wire::LongString),
        Type::Table => quote!(wire::FieldTable),
        Type::Timestamp => quote!(wire::Timestamp),
    }
}

/// The `wire::WireType` of a non-bit type, for reserved fields.
pub(crate) fn wire_type(ty: Type) -> TokenStream {
    match ty {
        Type::Octet => quote!(wire::WireType::Octet),
        Type::Short => quote!(wire::WireType::Short),
        Type::Long => quote!(wire::WireType::Long),
        Type::LongLong => quote!(wire::WireType::LongLong),
        Type::ShortStr => quote!(wire::WireType::ShortStr),
        Type::LongStr => quote!(wire::WireType::LongStr),
        Type::Table => quote!(wire::WireType::Table),
        Type::Timestamp => quote!(wire::WireType::Timestamp),
        Type::Bit => unreachable!("bits are packed in runs, never read alone"),
    }
}

/// `out.short_string(&value)` for a value expression of type `ty` (not a bit).
/// `by_ref` says whether `value` is already a reference.
pub(crate) fn write_value(ty: Type, value: &TokenStream, by_ref: bool) -> TokenStream {
    let borrowed = if by_ref {
        quote!(#value)
    } else {
        quote!(&#value)
    };
    let copied = if by_ref {
        quote!(*#value)
    } else {
        quote!(#value)
    };
    match ty {
        Type::Octet => quote!(out.octet(#copied);),
        Type::Short => quote!(out.short(#copied);),
        Type::Long => quote!(out.long(#copied);),
        Type::LongLong => quote!(out.longlong(#copied);),
        Type::Timestamp => quote!(out.timestamp(#copied);),
        Type::ShortStr => quote!(out.short_string(#borrowed);),
        Type::LongStr => quote!(out.long_string(#borrowed);),
        Type::Table => quote!(out.table(#borrowed);),
        Type::Bit => unreachable!("bits are packed in runs, never written alone"),
    }
}

/// `input.short_string()?` for a non-bit type; `input` is the reader's name.
pub(crate) fn read_value(ty: Type, input: &proc_macro2::Ident) -> TokenStream {
    match ty {
        Type::Octet => quote!(#input.octet()?),
        Type::Short => quote!(#input.short()?),
        Type::Long => quote!(#input.long()?),
        Type::LongLong => quote!(#input.longlong()?),
        Type::Timestamp => quote!(#input.timestamp()?),
        Type::ShortStr => quote!(#input.short_string()?),
        Type::LongStr => quote!(#input.long_string()?),
        Type::Table => quote!(#input.table()?),
        Type::Bit => unreachable!("bits are packed in runs, never read alone"),
    }
}

/// The struct name of a method, as an identifier.
pub(crate) fn method_ident(m: &Method) -> proc_macro2::Ident {
    names::ident(&names::method_type(&m.class_name, &m.name))
}

/// The struct name of a method, as text (for docs).
pub(crate) fn method_type_name(class: &str, method: &str) -> String {
    names::method_type(class, method)
}

// ===== docs =====

/// Text width of generated doc lines (prettyplease adds `/// ` and indentation).
const WIDTH: usize = 88;

/// Builds the rustdoc of one item, paragraph by paragraph.
#[derive(Default)]
pub(crate) struct Docs {
    paragraphs: Vec<String>,
}

impl Docs {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// A paragraph written by the generator: trusted Markdown, links allowed.
    pub(crate) fn sentence(&mut self, text: impl Into<String>) -> &mut Self {
        let text = text.into();
        if !text.is_empty() {
            self.paragraphs.push(wrap_words(&text, ""));
        }
        self
    }

    /// A label from the spec as a sentence: `do not create queue` -> `Do not create queue.`
    pub(crate) fn label(&mut self, label: &str) -> &mut Self {
        self.sentence(escape(&sentence(label)))
    }

    /// Spec prose: dedented text, made safe for rustdoc (see [`prose`]).
    pub(crate) fn prose(&mut self, text: &str) -> &mut Self {
        self.paragraphs.extend(prose(text));
        self
    }

    /// A one-paragraph summary of an item: its label as a sentence, or else the first
    /// paragraph of its prose. Nothing when the spec documents it with neither.
    pub(crate) fn summary(&mut self, doc: &Doc) -> &mut Self {
        match (&doc.label, doc.text.first()) {
            (Some(label), _) => self.label(label),
            (None, Some(text)) => {
                self.paragraphs.extend(prose(text).into_iter().take(1));
                self
            }
            (None, None) => self,
        }
    }

    /// A `# Grammar` section with the spec's grammar text, preformatted.
    pub(crate) fn grammar(&mut self, grammars: &[String]) -> &mut Self {
        if grammars.is_empty() {
            return self;
        }
        self.paragraphs.push("# Grammar".into());
        for g in grammars {
            let body = g.replace("```", "` ` `");
            self.paragraphs.push(format!("```text\n{body}\n```"));
        }
        self
    }

    /// Whether nothing has been added yet.
    pub(crate) fn is_empty(&self) -> bool {
        self.paragraphs.is_empty()
    }

    /// `#[doc = " ..."]` attributes, one per line, paragraphs separated by empty lines.
    pub(crate) fn tokens(&self) -> TokenStream {
        let mut lines: Vec<String> = Vec::new();
        for (i, p) in self.paragraphs.iter().enumerate() {
            if i > 0 {
                lines.push(String::new());
            }
            lines.extend(p.lines().map(|l| {
                if l.is_empty() {
                    String::new()
                } else {
                    format!(" {l}")
                }
            }));
        }
        quote! { #(#[doc = #lines])* }
    }
}

/// Capitalises the first letter and ends with a full stop (unless it ends with punctuation).
pub(crate) fn sentence(text: &str) -> String {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut chars = text.chars();
    let mut out: String = match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => return String::new(),
    };
    if !out.ends_with(['.', '!', '?', ':']) {
        out.push('.');
    }
    out
}

/// Joins `items` as `a`, `a or b`, `a, b or c` (with `word` = "or").
pub(crate) fn join_list(items: &[String], word: &str) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} {word} {last}", init.join(", ")),
    }
}

/// Spec prose -> Markdown paragraphs that rustdoc renders as the author meant, never as code
/// blocks, headings, HTML or links:
///
/// - blank lines separate paragraphs; lines in a paragraph are joined and re-wrapped, so the
///   XML's indentation never reaches rustdoc (four leading spaces would make a code block);
/// - lines starting with `-`, `*`, `+`, `o` or `1.`/`1)` start list items;
/// - `\`, `[`, `]`, `<`, `>`, `*`, `#` and backticks are escaped, bare URLs are wrapped in `<>`;
/// - a wrapped line never starts with something Markdown would read as a list marker, a
///   heading underline or a block quote.
pub(crate) fn prose(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut items: Vec<(String, String)> = Vec::new(); // (marker, words)
    let flush = |items: &mut Vec<(String, String)>, out: &mut Vec<String>| {
        if items.is_empty() {
            return;
        }
        let mut rendered = Vec::new();
        for (marker, words) in items.drain(..) {
            let text = escape(&words);
            if marker.is_empty() {
                rendered.push(wrap_words(&text, ""));
            } else {
                rendered.push(wrap_words(&format!("{marker} {text}"), "  "));
            }
        }
        out.push(rendered.join("\n"));
    };
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            flush(&mut items, &mut out);
            continue;
        }
        if let Some((marker, rest)) = list_marker(trimmed) {
            items.push((marker, rest.to_owned()));
        } else if let Some((_, words)) = items.last_mut() {
            words.push(' ');
            words.push_str(trimmed);
        } else {
            items.push((String::new(), trimmed.to_owned()));
        }
    }
    flush(&mut items, &mut out);
    out
}

/// `- item` -> (`-`, `item`); `2. item` -> (`2.`, `item`). Markers are normalised so
/// Markdown reads them as list items (`o` bullets become `-`).
fn list_marker(line: &str) -> Option<(String, &str)> {
    let (first, rest) = line.split_once(' ')?;
    let rest = rest.trim_start();
    if rest.is_empty() {
        return None;
    }
    match first {
        "-" | "*" | "+" | "o" => Some(("-".into(), rest)),
        _ => {
            let digits = first.strip_suffix(['.', ')'])?;
            (!digits.is_empty() && digits.len() <= 3 && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| (format!("{digits}."), rest))
        }
    }
}

/// Escapes Markdown and HTML syntax in spec text; wraps bare URLs in `<...>`.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if let Some(start) = word.find("http://").or_else(|| word.find("https://")) {
            let (before, url) = word.split_at(start);
            let end = url
                .trim_end_matches(['.', ',', ';', ':', ')', '\'', '"'])
                .len();
            let (url, after) = url.split_at(end);
            out.push_str(&escape_word(before));
            out.push('<');
            out.push_str(url);
            out.push('>');
            out.push_str(&escape_word(after));
        } else {
            out.push_str(&escape_word(word));
        }
    }
    out
}

fn escape_word(word: &str) -> String {
    let mut out = String::with_capacity(word.len());
    for c in word.chars() {
        if matches!(c, '\\' | '[' | ']' | '<' | '>' | '*' | '`' | '#' | '|') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Greedy word wrap at [`WIDTH`]. Continuation lines start with `indent`. A word that
/// Markdown would read as a block marker at the start of a line stays on the previous line.
fn wrap_words(text: &str, indent: &str) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let fits = line.len() + 1 + word.len() <= WIDTH;
        if line.is_empty() || fits || starts_block(word) {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        } else {
            out.push_str(&line);
            out.push('\n');
            line = format!("{indent}{word}");
        }
    }
    out.push_str(&line);
    out
}

/// Whether `word` at the start of a line would begin a Markdown block (list item, heading
/// underline, block quote, heading, fence).
fn starts_block(word: &str) -> bool {
    let digits = word.trim_end_matches(['.', ')']);
    matches!(word, "-" | "+" | "*" | "o")
        || word.chars().all(|c| c == '=' || c == '-')
        || word.starts_with(['>', '#', '`', '~', '|'])
        || (digits.len() < word.len()
            && !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit()))
}

/// The standard facts about a field, as a sentence: its domain and wire type.
pub(crate) fn field_facts(f: &Field) -> String {
    match &f.domain {
        Some(d) if d != f.ty.spec_name() => {
            format!("Domain `{d}` (`{}` on the wire).", f.ty.spec_name())
        }
        _ => format!("Wire type `{}`.", f.ty.spec_name()),
    }
}

/// The docs of a field (of a method or a content property): label, prose, facts. `owner`
/// completes the sentence used when the spec documents the field not at all, such as
/// "argument of `queue.declare`".
pub(crate) fn field_docs(f: &Field, owner: &str, extra: Option<String>) -> Docs {
    let mut docs = Docs::new();
    if let Some(label) = &f.doc.label {
        docs.label(label);
    }
    for text in &f.doc.text {
        docs.prose(text);
    }
    if docs.is_empty() {
        docs.sentence(format!(
            "The `{}` {owner}.",
            names::field_display(&f.name).replace('_', " ")
        ));
    }
    let mut facts = field_facts(f);
    if let Some(extra) = extra {
        facts.push(' ');
        facts.push_str(&extra);
    }
    if f.sensitive {
        facts.push_str(" Sensitive: `Debug` shows `<redacted>` instead of the value.");
    }
    docs.sentence(facts);
    docs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prose_escapes_markdown_and_html() {
        let p = prose("Names match ^[a-z]*$ and <b>bold</b> *x* `y` #1 a|b \\n.");
        assert_eq!(
            p,
            vec![
                "Names match ^\\[a-z\\]\\*$ and \\<b\\>bold\\</b\\> \\*x\\* \\`y\\` \\#1 a\\|b \\\\n."
            ]
        );
    }

    #[test]
    fn prose_reflows_indented_lines_into_paragraphs() {
        let p = prose("First line\n    indented more\nend.\n\nSecond   paragraph.");
        assert_eq!(
            p,
            vec!["First line indented more end.", "Second paragraph."]
        );
    }

    #[test]
    fn prose_keeps_list_items() {
        let p = prose("Intro:\n- one\n  more\n- two\n3) three");
        assert_eq!(p, vec!["Intro:\n- one more\n- two\n3. three"]);
    }

    #[test]
    fn urls_are_wrapped() {
        assert_eq!(
            escape("see http://www.amqp.org."),
            "see <http://www.amqp.org>."
        );
    }

    #[test]
    fn wrapping_never_starts_a_line_with_a_block_marker() {
        let long = "word ".repeat(17) + "x - y 1. z ==== > q";
        for text in [long.as_str()] {
            let wrapped = wrap_words(text, "");
            for line in wrapped.lines().skip(1) {
                let first = line.split(' ').next().unwrap();
                assert!(!starts_block(first), "{line:?} in {wrapped:?}");
            }
        }
        // Every position of the marker at a line start is avoided.
        for n in 0..40 {
            let text = format!("{}- tail 2. more", "ab ".repeat(n));
            for line in wrap_words(&text, "").lines().skip(1) {
                assert!(!starts_block(line.split(' ').next().unwrap()), "{line:?}");
            }
        }
    }

    #[test]
    fn sentences() {
        assert_eq!(sentence("do not create queue"), "Do not create queue.");
        assert_eq!(sentence("is it?"), "Is it?");
        assert_eq!(
            join_list(&["a".into(), "b".into(), "c".into()], "or"),
            "a, b or c"
        );
    }
}
