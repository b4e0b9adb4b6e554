//! XML text -> raw structs that mirror the spec's elements, each with its source position.
//!
//! This layer checks only what the XML itself says: well-formedness, which element may sit
//! inside which, required attributes, and stray text. Meaning (numbers, domains, indexes,
//! responses) is checked by [`resolve`](crate::resolve). Attribute values stay strings here.
//!
//! Accepted, as in the official files: the XML declaration, `<!DOCTYPE>`, comments,
//! processing instructions, CDATA, the predefined entities and character references,
//! attributes this generator does not know (the RabbitMQ file has a misspelled
//! `requred="0"`; they are ignored), and text directly inside `<class>`, `<method>`, `<field>`,
//! `<domain>`, `<constant>` and `<rule>` (the RabbitMQ file labels `confirm.select` that way; it
//! is kept as [`RawMethod::text`] and used as the label when there is no `label` attribute).
//!
//! The schema's elements: `amqp`, `constant`, `domain`, `class`, `method`, `field`, `chassis`,
//! `response`, `doc` (with an optional `type`, e.g. `grammar` or `scenario`), `rule`, `assert`,
//! and `see` (a cross-reference inside `doc` or `rule`, kept as doc text). Any other element is
//! an [`Error::UnexpectedElement`].

use std::sync::Arc;

use quick_xml::XmlVersion;
use quick_xml::events::{BytesStart, Event};

use crate::error::{Error, Location};

/// The `<amqp>` root element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawSpec {
    /// Where `<amqp>` starts.
    pub at: Location,
    /// `major` attribute.
    pub major: String,
    /// `minor` attribute.
    pub minor: String,
    /// `revision` attribute.
    pub revision: String,
    /// `port` attribute, if any.
    pub port: Option<String>,
    /// `comment` attribute, if any.
    pub comment: Option<String>,
    /// `<constant>` children, in order.
    pub constants: Vec<RawConstant>,
    /// `<domain>` children, in order.
    pub domains: Vec<RawDomain>,
    /// `<class>` children, in order.
    pub classes: Vec<RawClass>,
}

/// A `<constant>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawConstant {
    /// Where it starts.
    pub at: Location,
    /// `name`.
    pub name: String,
    /// `value`.
    pub value: String,
    /// `class` (`soft-error` or `hard-error` for reply codes).
    pub class: Option<String>,
    /// Stray text, trimmed.
    pub text: String,
    /// `<doc>` children.
    pub docs: Vec<RawDoc>,
    /// `<rule>` children.
    pub rules: Vec<RawRule>,
}

/// A `<domain>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawDomain {
    /// Where it starts.
    pub at: Location,
    /// `name`.
    pub name: String,
    /// `type`: a primitive type or another domain.
    pub type_name: String,
    /// `label`.
    pub label: Option<String>,
    /// Stray text, trimmed.
    pub text: String,
    /// `<doc>` children.
    pub docs: Vec<RawDoc>,
    /// `<rule>` children.
    pub rules: Vec<RawRule>,
    /// `<assert>` children.
    pub asserts: Vec<RawAssert>,
}

/// A `<class>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawClass {
    /// Where it starts.
    pub at: Location,
    /// `name`.
    pub name: String,
    /// `index`.
    pub index: String,
    /// `handler`.
    pub handler: Option<String>,
    /// `label`.
    pub label: Option<String>,
    /// Stray text, trimmed.
    pub text: String,
    /// `<doc>` children (including `type="grammar"`).
    pub docs: Vec<RawDoc>,
    /// `<rule>` children.
    pub rules: Vec<RawRule>,
    /// `<chassis>` children.
    pub chassis: Vec<RawChassis>,
    /// Class-level `<field>` children: the content properties.
    pub fields: Vec<RawField>,
    /// `<method>` children.
    pub methods: Vec<RawMethod>,
}

/// A `<method>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMethod {
    /// Where it starts.
    pub at: Location,
    /// `name`.
    pub name: String,
    /// `index`.
    pub index: String,
    /// `synchronous`.
    pub synchronous: Option<String>,
    /// `content`.
    pub content: Option<String>,
    /// `deprecated`.
    pub deprecated: Option<String>,
    /// `label`.
    pub label: Option<String>,
    /// Stray text, trimmed (the RabbitMQ file labels `confirm.select` this way).
    pub text: String,
    /// `<doc>` children.
    pub docs: Vec<RawDoc>,
    /// `<rule>` children.
    pub rules: Vec<RawRule>,
    /// `<chassis>` children.
    pub chassis: Vec<RawChassis>,
    /// `<response>` children.
    pub responses: Vec<RawResponse>,
    /// `<field>` children.
    pub fields: Vec<RawField>,
}

/// A `<field>`, of a method or (as a content property) of a class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawField {
    /// Where it starts.
    pub at: Location,
    /// `name`.
    pub name: String,
    /// `domain`.
    pub domain: Option<String>,
    /// `type` (reserved fields name a primitive type instead of a domain).
    pub type_name: Option<String>,
    /// `reserved`.
    pub reserved: Option<String>,
    /// `sensitive` (warren's extension: a secret whose value `Debug` must not show).
    pub sensitive: Option<String>,
    /// `label`.
    pub label: Option<String>,
    /// Stray text, trimmed.
    pub text: String,
    /// `<doc>` children.
    pub docs: Vec<RawDoc>,
    /// `<rule>` children.
    pub rules: Vec<RawRule>,
    /// `<assert>` children.
    pub asserts: Vec<RawAssert>,
}

/// A `<chassis>`: which peer implements (receives) a class or method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawChassis {
    /// Where it starts.
    pub at: Location,
    /// `name`: `server` or `client`.
    pub name: String,
    /// `implement`: `MUST`, `SHOULD` or `MAY`.
    pub implement: Option<String>,
}

/// A `<response>`: a method that answers this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawResponse {
    /// Where it starts.
    pub at: Location,
    /// `name`: a method of the same class.
    pub name: String,
}

/// A `<doc>`, with `<see>` children folded into its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawDoc {
    /// Where it starts.
    pub at: Location,
    /// `type`: `None` for prose, or `grammar`, `scenario`, ...
    pub kind: Option<String>,
    /// The text as written, entities resolved, line ends normalised.
    pub text: String,
}

/// A `<rule>`: a normative statement, with its own docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRule {
    /// Where it starts.
    pub at: Location,
    /// `name`.
    pub name: Option<String>,
    /// `on-failure`: the reply code a violation raises.
    pub on_failure: Option<String>,
    /// Stray text, trimmed.
    pub text: String,
    /// `<doc>` children (prose and `type="scenario"`).
    pub docs: Vec<RawDoc>,
}

/// An `<assert>`: a value check (`notnull`, `length`, `regexp`, `le`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawAssert {
    /// Where it starts.
    pub at: Location,
    /// `check`.
    pub check: String,
    /// `value`.
    pub value: Option<String>,
    /// `method` (for checks against another method's field).
    pub method: Option<String>,
    /// `field` (likewise).
    pub field: Option<String>,
    /// `<rule>` children.
    pub rules: Vec<RawRule>,
}

/// Parses a spec into raw structs. `file` names the spec in errors.
pub fn parse(xml: &str, file: &str) -> Result<RawSpec, Error> {
    let file: Arc<str> = Arc::from(file);
    let lines = LineIndex::new(xml, file.clone());
    let root = read_tree(xml, &lines)?;
    spec(root)
}

// ===== positions =====

/// Turns byte offsets into line:column locations.
struct LineIndex<'a> {
    text: &'a str,
    file: Arc<str>,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    fn new(text: &'a str, file: Arc<str>) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self { text, file, starts }
    }

    fn at(&self, offset: u64) -> Location {
        let offset = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.text.len());
        let line = self.starts.partition_point(|&s| s <= offset) - 1;
        let start = self.starts[line];
        // Offsets from quick-xml are at character boundaries; be safe anyway.
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        Location {
            file: self.file.clone(),
            line: to_u32(line + 1),
            column: to_u32(column + 1),
        }
    }

    fn eof(&self) -> Location {
        self.at(self.text.len() as u64)
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

// ===== XML -> element tree =====

/// One element, before it is sorted into the raw structs.
struct Node {
    name: String,
    attrs: Vec<(String, String)>,
    at: Location,
    children: Vec<Node>,
    text: String,
}

fn read_tree(xml: &str, lines: &LineIndex<'_>) -> Result<Node, Error> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut stack: Vec<Node> = Vec::new();
    let mut root: Option<Node> = None;
    loop {
        let start = reader.buffer_position();
        let event = reader.read_event().map_err(|e| Error::Xml {
            at: lines.at(reader.error_position()),
            element: open_element(&stack),
            message: e.to_string(),
        })?;
        match event {
            Event::Start(tag) => stack.push(node(&tag, lines.at(start))?),
            Event::Empty(tag) => {
                let node = node(&tag, lines.at(start))?;
                attach(node, &mut stack, &mut root)?;
            }
            Event::End(_) => {
                // quick-xml checks that end tags match their start tags.
                let node = stack.pop().ok_or_else(|| Error::Xml {
                    at: lines.at(start),
                    element: open_element(&[]),
                    message: "end tag without a start tag".into(),
                })?;
                attach(node, &mut stack, &mut root)?;
            }
            Event::Text(text) => push_text(&mut stack, &text.xml10_content(), lines.at(start))?,
            Event::CData(data) => push_text(&mut stack, &data.xml10_content(), lines.at(start))?,
            Event::GeneralRef(entity) => {
                let resolved = match entity.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    Ok(None) => match &*entity {
                        "amp" => "&".into(),
                        "lt" => "<".into(),
                        "gt" => ">".into(),
                        "quot" => "\"".into(),
                        "apos" => "'".into(),
                        other => {
                            return Err(Error::Xml {
                                at: lines.at(start),
                                element: open_element(&stack),
                                message: format!("unknown entity `&{other};`"),
                            });
                        }
                    },
                    Err(e) => {
                        return Err(Error::Xml {
                            at: lines.at(start),
                            element: open_element(&stack),
                            message: e.to_string(),
                        });
                    }
                };
                push_text(&mut stack, &resolved, lines.at(start))?;
            }
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
            Event::Eof => break,
        }
    }
    if let Some(open) = stack.pop() {
        return Err(Error::Xml {
            element: open.describe(),
            message: format!("<{}> is never closed", open.name),
            at: open.at,
        });
    }
    root.ok_or_else(|| Error::NoRoot {
        at: lines.eof(),
        found: "end of file".into(),
    })
}

/// The innermost element still open, as errors name it, or `the document` outside any.
fn open_element(stack: &[Node]) -> String {
    stack
        .last()
        .map_or_else(|| "the document".to_owned(), Node::describe)
}

fn node(tag: &BytesStart<'_>, at: Location) -> Result<Node, Error> {
    let name = AsRef::<str>::as_ref(&tag.name()).to_owned();
    let mut attrs = Vec::new();
    for attr in tag.attributes() {
        let attr = attr.map_err(|e| Error::Xml {
            at: at.clone(),
            element: format!("<{name}>"),
            message: e.to_string(),
        })?;
        let key = AsRef::<str>::as_ref(&attr.key).to_owned();
        let value = attr
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|e| Error::Xml {
                at: at.clone(),
                element: format!("<{name}>"),
                message: format!("attribute `{key}`: {e}"),
            })?
            .into_owned();
        attrs.push((key, value));
    }
    Ok(Node {
        name,
        attrs,
        at,
        children: Vec::new(),
        text: String::new(),
    })
}

fn attach(node: Node, stack: &mut [Node], root: &mut Option<Node>) -> Result<(), Error> {
    if let Some(parent) = stack.last_mut() {
        // A `<see>` inside a `<doc>` is part of the doc's running text: keep it in place.
        if parent.name == "doc" && node.name == "see" {
            parent.text.push_str(&node.text);
        }
        parent.children.push(node);
        return Ok(());
    }
    if root.is_some() {
        return Err(Error::Xml {
            element: node.describe(),
            message: "a second root element".into(),
            at: node.at,
        });
    }
    *root = Some(node);
    Ok(())
}

fn push_text(stack: &mut [Node], text: &str, at: Location) -> Result<(), Error> {
    match stack.last_mut() {
        Some(parent) => {
            parent.text.push_str(text);
            Ok(())
        }
        None if text.trim().is_empty() => Ok(()),
        None => Err(Error::Xml {
            at,
            element: open_element(stack),
            message: "text outside the root element".into(),
        }),
    }
}

// ===== element tree -> raw structs =====

impl Node {
    /// `<method name="declare">`, or `<method>` without a name.
    fn describe(&self) -> String {
        match self.attr("name") {
            Some(name) => format!("<{} name=\"{}\">", self.name, name),
            None => format!("<{}>", self.name),
        }
    }

    fn attr(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn opt(&self, key: &str) -> Option<String> {
        self.attr(key).map(str::to_owned)
    }

    fn required(&self, key: &'static str) -> Result<String, Error> {
        self.opt(key).ok_or_else(|| Error::MissingAttribute {
            at: self.at.clone(),
            element: self.describe(),
            attribute: key,
        })
    }

    fn unexpected(&self, child: &Node) -> Error {
        Error::UnexpectedElement {
            at: child.at.clone(),
            element: child.name.clone(),
            parent: self.name.clone(),
        }
    }

    /// Trimmed text, with runs of whitespace collapsed to one space.
    fn label_text(&self) -> String {
        self.text.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    fn no_text(&self) -> Result<(), Error> {
        let text = self.label_text();
        if text.is_empty() {
            return Ok(());
        }
        Err(Error::UnexpectedText {
            at: self.at.clone(),
            element: self.describe(),
            text,
        })
    }
}

fn spec(root: Node) -> Result<RawSpec, Error> {
    if root.name != "amqp" {
        return Err(Error::NoRoot {
            at: root.at.clone(),
            found: format!("<{}>", root.name),
        });
    }
    root.no_text()?;
    let mut spec = RawSpec {
        at: root.at.clone(),
        major: root.required("major")?,
        minor: root.required("minor")?,
        revision: root.required("revision")?,
        port: root.opt("port"),
        comment: root.opt("comment"),
        constants: Vec::new(),
        domains: Vec::new(),
        classes: Vec::new(),
    };
    for child in &root.children {
        match child.name.as_str() {
            "constant" => spec.constants.push(constant(child)?),
            "domain" => spec.domains.push(domain(child)?),
            "class" => spec.classes.push(class(child)?),
            _ => return Err(root.unexpected(child)),
        }
    }
    Ok(spec)
}

fn constant(node: &Node) -> Result<RawConstant, Error> {
    let mut out = RawConstant {
        at: node.at.clone(),
        name: node.required("name")?,
        value: node.required("value")?,
        class: node.opt("class"),
        text: node.label_text(),
        docs: Vec::new(),
        rules: Vec::new(),
    };
    for child in &node.children {
        match child.name.as_str() {
            "doc" => out.docs.push(doc(child)?),
            "rule" => out.rules.push(rule(child)?),
            _ => return Err(node.unexpected(child)),
        }
    }
    Ok(out)
}

fn domain(node: &Node) -> Result<RawDomain, Error> {
    let mut out = RawDomain {
        at: node.at.clone(),
        name: node.required("name")?,
        type_name: node.required("type")?,
        label: node.opt("label"),
        text: node.label_text(),
        docs: Vec::new(),
        rules: Vec::new(),
        asserts: Vec::new(),
    };
    for child in &node.children {
        match child.name.as_str() {
            "doc" => out.docs.push(doc(child)?),
            "rule" => out.rules.push(rule(child)?),
            "assert" => out.asserts.push(assert(child)?),
            _ => return Err(node.unexpected(child)),
        }
    }
    Ok(out)
}

fn class(node: &Node) -> Result<RawClass, Error> {
    let mut out = RawClass {
        at: node.at.clone(),
        name: node.required("name")?,
        index: node.required("index")?,
        handler: node.opt("handler"),
        label: node.opt("label"),
        text: node.label_text(),
        docs: Vec::new(),
        rules: Vec::new(),
        chassis: Vec::new(),
        fields: Vec::new(),
        methods: Vec::new(),
    };
    for child in &node.children {
        match child.name.as_str() {
            "doc" => out.docs.push(doc(child)?),
            "rule" => out.rules.push(rule(child)?),
            "chassis" => out.chassis.push(chassis(child)?),
            "field" => out.fields.push(field(child)?),
            "method" => out.methods.push(method(child)?),
            _ => return Err(node.unexpected(child)),
        }
    }
    Ok(out)
}

fn method(node: &Node) -> Result<RawMethod, Error> {
    let mut out = RawMethod {
        at: node.at.clone(),
        name: node.required("name")?,
        index: node.required("index")?,
        synchronous: node.opt("synchronous"),
        content: node.opt("content"),
        deprecated: node.opt("deprecated"),
        label: node.opt("label"),
        text: node.label_text(),
        docs: Vec::new(),
        rules: Vec::new(),
        chassis: Vec::new(),
        responses: Vec::new(),
        fields: Vec::new(),
    };
    for child in &node.children {
        match child.name.as_str() {
            "doc" => out.docs.push(doc(child)?),
            "rule" => out.rules.push(rule(child)?),
            "chassis" => out.chassis.push(chassis(child)?),
            "response" => {
                if !child.children.is_empty() {
                    return Err(child.unexpected(&child.children[0]));
                }
                child.no_text()?;
                out.responses.push(RawResponse {
                    at: child.at.clone(),
                    name: child.required("name")?,
                });
            }
            "field" => out.fields.push(field(child)?),
            _ => return Err(node.unexpected(child)),
        }
    }
    Ok(out)
}

fn field(node: &Node) -> Result<RawField, Error> {
    let mut out = RawField {
        at: node.at.clone(),
        name: node.required("name")?,
        domain: node.opt("domain"),
        type_name: node.opt("type"),
        reserved: node.opt("reserved"),
        sensitive: node.opt("sensitive"),
        label: node.opt("label"),
        text: node.label_text(),
        docs: Vec::new(),
        rules: Vec::new(),
        asserts: Vec::new(),
    };
    for child in &node.children {
        match child.name.as_str() {
            "doc" => out.docs.push(doc(child)?),
            "rule" => out.rules.push(rule(child)?),
            "assert" => out.asserts.push(assert(child)?),
            _ => return Err(node.unexpected(child)),
        }
    }
    Ok(out)
}

fn chassis(node: &Node) -> Result<RawChassis, Error> {
    if let Some(child) = node.children.first() {
        return Err(node.unexpected(child));
    }
    node.no_text()?;
    Ok(RawChassis {
        at: node.at.clone(),
        name: node.required("name")?,
        implement: node.opt("implement"),
    })
}

fn doc(node: &Node) -> Result<RawDoc, Error> {
    // `<see>` children are cross-references whose text is already in place in the doc's
    // text (see `attach`); nothing else may be inside a doc.
    for child in &node.children {
        if child.name != "see" || !child.children.is_empty() {
            return Err(node.unexpected(child));
        }
    }
    Ok(RawDoc {
        at: node.at.clone(),
        kind: node.opt("type"),
        text: node.text.clone(),
    })
}

fn rule(node: &Node) -> Result<RawRule, Error> {
    let mut out = RawRule {
        at: node.at.clone(),
        name: node.opt("name"),
        on_failure: node.opt("on-failure"),
        text: node.label_text(),
        docs: Vec::new(),
    };
    for child in &node.children {
        match child.name.as_str() {
            "doc" => out.docs.push(doc(child)?),
            "see" if child.children.is_empty() => out.docs.push(RawDoc {
                at: child.at.clone(),
                kind: None,
                text: child.text.clone(),
            }),
            _ => return Err(node.unexpected(child)),
        }
    }
    Ok(out)
}

fn assert(node: &Node) -> Result<RawAssert, Error> {
    node.no_text()?;
    let mut out = RawAssert {
        at: node.at.clone(),
        check: node.required("check")?,
        value: node.opt("value"),
        method: node.opt("method"),
        field: node.opt("field"),
        rules: Vec::new(),
    };
    for child in &node.children {
        match child.name.as_str() {
            "rule" => out.rules.push(rule(child)?),
            _ => return Err(node.unexpected(child)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let text = "ab\n\u{e9}\u{e9}<x/>\n";
        let lines = LineIndex::new(text, Arc::from("f.xml"));
        let at = lines.at(text.find('<').unwrap() as u64);
        assert_eq!((at.line, at.column), (2, 3));
        assert_eq!((lines.at(0).line, lines.at(0).column), (1, 1));
        assert_eq!(at.to_string(), "f.xml:2:3");
    }

    #[test]
    fn see_elements_fold_into_doc_text() {
        let xml = r#"<amqp major="0" minor="9" revision="1"><class name="c" index="1">
            <doc>See <see>c.m</see> for more.</doc></class></amqp>"#;
        let spec = parse(xml, "t.xml").unwrap();
        assert_eq!(spec.classes[0].docs[0].text, "See c.m for more.");
    }

    #[test]
    fn entities_and_cdata_are_text() {
        let xml = r#"<amqp major="0" minor="9" revision="1"><class name="c" index="1">
            <doc>a &lt;b&gt; &amp; &#65;<![CDATA[ <raw> ]]></doc></class></amqp>"#;
        let spec = parse(xml, "t.xml").unwrap();
        assert_eq!(spec.classes[0].docs[0].text, "a <b> & A <raw> ");
    }

    #[test]
    fn unknown_entity_is_an_error() {
        let xml = "<amqp major=\"0\" minor=\"9\" revision=\"1\">\n  <class name=\"c\" index=\"1\"><doc>&nope;</doc></class></amqp>";
        let err = parse(xml, "t.xml").unwrap_err();
        assert!(
            matches!(err, Error::Xml { ref at, .. } if at.line == 2),
            "{err}"
        );
    }

    #[test]
    fn misplaced_and_unknown_elements_are_errors() {
        let xml = "<amqp major=\"0\" minor=\"9\" revision=\"1\">\n <method name=\"m\" index=\"1\"/></amqp>";
        match parse(xml, "t.xml").unwrap_err() {
            Error::UnexpectedElement {
                at,
                element,
                parent,
            } => {
                assert_eq!((at.line, at.column), (2, 2));
                assert_eq!((element.as_str(), parent.as_str()), ("method", "amqp"));
            }
            other => panic!("{other}"),
        }
        let xml = "<amqp major=\"0\" minor=\"9\" revision=\"1\"><frob/></amqp>";
        assert!(matches!(
            parse(xml, "t.xml").unwrap_err(),
            Error::UnexpectedElement { .. }
        ));
    }

    #[test]
    fn wrong_root_and_empty_document() {
        assert!(matches!(
            parse("<spec/>", "t.xml").unwrap_err(),
            Error::NoRoot { ref found, .. } if found == "<spec>"
        ));
        assert!(matches!(
            parse("<?xml version=\"1.0\"?>\n<!-- nothing -->\n", "t.xml").unwrap_err(),
            Error::NoRoot { ref found, .. } if found == "end of file"
        ));
    }

    #[test]
    fn text_in_chassis_is_an_error() {
        let xml = "<amqp major=\"0\" minor=\"9\" revision=\"1\"><class name=\"c\" index=\"1\"><chassis name=\"server\">x</chassis></class></amqp>";
        assert!(matches!(
            parse(xml, "t.xml").unwrap_err(),
            Error::UnexpectedText { ref text, .. } if text == "x"
        ));
    }

    #[test]
    fn unclosed_element_is_an_error() {
        let xml = "<amqp major=\"0\" minor=\"9\" revision=\"1\">\n<class name=\"c\" index=\"1\">";
        assert!(matches!(
            parse(xml, "t.xml").unwrap_err(),
            Error::Xml { .. }
        ));
    }
}
