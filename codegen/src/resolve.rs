//! Raw structs -> the typed [`model`](crate::model), checking everything on the way.
//!
//! What is resolved: numbers (versions, port, indexes, constant values), domains to wire
//! types (through chains of domains), `<chassis>` to [`Direction`] and [`Implementation`],
//! `<assert>`s to [`Assert`]s, `<response>` names to [`MethodRef`]s (and the reverse links,
//! [`Method::answers`]), `0`/`1` flags, reserved and sensitive fields, class-level fields to
//! [`Properties`], docs (dedented).
//!
//! What is refused, with the place: a bad number, an unknown domain or type, a domain
//! cycle, a duplicate class or method index, a duplicate name (also after conversion to a
//! Rust identifier), a response naming no method, a response on an asynchronous method, a
//! method without chassis, two chassis for one peer, a bit or reserved content property, a
//! name that cannot become an identifier, an attribute outside its enumeration.

use std::collections::HashMap;

use crate::error::{Error, Location};
use crate::model::{
    Assert, Class, Constant, ConstantKind, Direction, Doc, Domain, Field, Implement,
    Implementation, Method, MethodRef, Properties, Rule, Spec, Type, TypedDoc,
};
use crate::names;
use crate::parse::{
    RawAssert, RawChassis, RawClass, RawDoc, RawField, RawMethod, RawRule, RawSpec,
};

/// Resolves and validates a parsed spec.
pub fn resolve(raw: &RawSpec) -> Result<Spec, Error> {
    let amqp = "<amqp>".to_owned();
    let version = |attribute, value: &str| -> Result<u8, Error> {
        number(value, u8::MAX.into(), &raw.at, &amqp, attribute).map(|n| n as u8)
    };
    let major = version("major", &raw.major)?;
    let minor = version("minor", &raw.minor)?;
    let revision = version("revision", &raw.revision)?;
    let port = raw
        .port
        .as_deref()
        .map(|p| number(p, u16::MAX.into(), &raw.at, &amqp, "port").map(|n| n as u16))
        .transpose()?;

    let constants = constants(raw)?;
    let domains = Domains::new(raw)?;
    let mut classes = Vec::with_capacity(raw.classes.len());
    let mut class_names = Names::new("class");
    let mut class_ids: HashMap<u16, (&str, &Location)> = HashMap::new();
    for raw_class in &raw.classes {
        let element = describe("class", &raw_class.name);
        check_name(&raw_class.name, &raw_class.at, &element)?;
        class_names.insert(&raw_class.name, &raw_class.at, &element)?;
        let id = index(&raw_class.index, &raw_class.at, &element)?;
        if let Some((first_name, first)) = class_ids.insert(id, (&raw_class.name, &raw_class.at)) {
            return Err(Error::DuplicateIndex {
                at: raw_class.at.clone(),
                element,
                kind: "class",
                index: id,
                first_name: first_name.to_owned(),
                first: first.clone(),
            });
        }
        classes.push(class(raw_class, id, &domains)?);
    }
    link_answers(&mut classes);
    check_rust_names(raw)?;

    Ok(Spec {
        major,
        minor,
        revision,
        port,
        comment: raw.comment.clone(),
        constants,
        domains: domains.resolved,
        classes,
    })
}

// ===== helpers =====

fn describe(tag: &str, name: &str) -> String {
    format!("<{tag} name=\"{name}\">")
}

fn describe_method(class: &str, method: &str) -> String {
    format!("<method name=\"{method}\"> of class `{class}`")
}

fn number(
    value: &str,
    max: u64,
    at: &Location,
    element: &str,
    attribute: &'static str,
) -> Result<u64, Error> {
    value
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|n| *n <= max)
        .ok_or_else(|| Error::InvalidNumber {
            at: at.clone(),
            element: element.to_owned(),
            attribute,
            value: value.to_owned(),
            max,
        })
}

fn index(value: &str, at: &Location, element: &str) -> Result<u16, Error> {
    number(value, u16::MAX.into(), at, element, "index").map(|n| n as u16)
}

fn flag(
    value: Option<&str>,
    at: &Location,
    element: &str,
    attribute: &'static str,
) -> Result<bool, Error> {
    match value.map(str::trim) {
        None | Some("0") => Ok(false),
        Some("1") => Ok(true),
        Some(other) => Err(Error::InvalidAttribute {
            at: at.clone(),
            element: element.to_owned(),
            attribute,
            value: other.to_owned(),
            expected: "\"0\", \"1\"",
        }),
    }
}

fn check_name(name: &str, at: &Location, element: &str) -> Result<(), Error> {
    if names::is_valid(name) {
        Ok(())
    } else {
        Err(Error::InvalidName {
            at: at.clone(),
            element: element.to_owned(),
            name: name.to_owned(),
        })
    }
}

/// First-come registry of names in one scope, for duplicate checks.
struct Names<'a> {
    kind: &'static str,
    seen: HashMap<String, &'a Location>,
}

impl<'a> Names<'a> {
    fn new(kind: &'static str) -> Self {
        Self {
            kind,
            seen: HashMap::new(),
        }
    }

    fn insert(&mut self, name: &str, at: &'a Location, element: &str) -> Result<(), Error> {
        if let Some(first) = self.seen.insert(name.to_owned(), at) {
            return Err(Error::DuplicateName {
                at: at.clone(),
                element: element.to_owned(),
                kind: self.kind,
                name: name.to_owned(),
                first: first.clone(),
            });
        }
        Ok(())
    }
}

// ===== docs =====

/// Removes the common indentation and blank edge lines; trims line ends.
pub(crate) fn dedent(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    let first = lines.iter().position(|l| !l.is_empty());
    let last = lines.iter().rposition(|l| !l.is_empty());
    let (Some(first), Some(last)) = (first, last) else {
        return String::new();
    };
    let lines = &lines[first..=last];
    let indent = lines
        .iter()
        .filter(|l| !l.is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    lines
        .iter()
        .map(|l| l.get(indent..).unwrap_or_else(|| l.trim_start()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn typed(doc: &RawDoc) -> TypedDoc {
    TypedDoc {
        kind: doc.kind.clone(),
        text: dedent(&doc.text),
    }
}

fn rule(raw: &RawRule) -> Rule {
    let mut docs: Vec<TypedDoc> = raw.docs.iter().map(typed).collect();
    if !raw.text.is_empty() {
        docs.insert(
            0,
            TypedDoc {
                kind: None,
                text: raw.text.clone(),
            },
        );
    }
    Rule {
        name: raw.name.clone(),
        on_failure: raw.on_failure.clone(),
        docs,
    }
}

fn doc(label: Option<&str>, text: &str, docs: &[RawDoc], rules: &[RawRule]) -> Doc {
    let label = label
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .or_else(|| (!text.is_empty()).then(|| text.to_owned()));
    let mut out = Doc {
        label,
        rules: rules.iter().map(rule).collect(),
        ..Doc::default()
    };
    for d in docs {
        let t = typed(d);
        if t.text.is_empty() {
            continue;
        }
        match t.kind.as_deref() {
            None => out.text.push(t.text),
            Some("grammar") => out.grammar.push(t.text),
            Some(_) => out.other.push(t),
        }
    }
    out
}

// ===== constants =====

fn constants(raw: &RawSpec) -> Result<Vec<Constant>, Error> {
    let mut names = Names::new("constant");
    let mut out = Vec::with_capacity(raw.constants.len());
    for c in &raw.constants {
        let element = describe("constant", &c.name);
        check_name(&c.name, &c.at, &element)?;
        names.insert(&c.name, &c.at, &element)?;
        let kind = match c.class.as_deref().map(str::trim) {
            Some("soft-error") => ConstantKind::SoftError,
            Some("hard-error") => ConstantKind::HardError,
            Some(other) => {
                return Err(Error::InvalidAttribute {
                    at: c.at.clone(),
                    element,
                    attribute: "class",
                    value: other.to_owned(),
                    expected: "\"soft-error\", \"hard-error\"",
                });
            }
            None if c.name.starts_with("reply-") => ConstantKind::ReplyCode,
            None => ConstantKind::Plain,
        };
        let max = if kind.is_reply_code() {
            u16::MAX.into()
        } else {
            u64::MAX
        };
        let value = number(&c.value, max, &c.at, &element, "value")?;
        out.push(Constant {
            name: c.name.clone(),
            value,
            kind,
            doc: doc(None, &c.text, &c.docs, &c.rules),
        });
    }
    Ok(out)
}

// ===== domains =====

struct Domains<'a> {
    raw: &'a RawSpec,
    by_name: HashMap<&'a str, usize>,
    resolved: Vec<Domain>,
}

impl<'a> Domains<'a> {
    fn new(raw: &'a RawSpec) -> Result<Self, Error> {
        let mut names = Names::new("domain");
        let mut by_name = HashMap::new();
        for (i, d) in raw.domains.iter().enumerate() {
            let element = describe("domain", &d.name);
            check_name(&d.name, &d.at, &element)?;
            names.insert(&d.name, &d.at, &element)?;
            by_name.insert(d.name.as_str(), i);
        }
        let mut domains = Domains {
            raw,
            by_name,
            resolved: Vec::new(),
        };
        for i in 0..raw.domains.len() {
            let ty = domains.type_of(i, &mut Vec::new())?;
            let d = &raw.domains[i];
            domains.resolved.push(Domain {
                name: d.name.clone(),
                ty,
                asserts: asserts(&d.asserts),
                doc: doc(d.label.as_deref(), &d.text, &d.docs, &d.rules),
            });
        }
        Ok(domains)
    }

    /// The wire type of domain `i`, following `type` through other domains.
    fn type_of(&self, i: usize, path: &mut Vec<usize>) -> Result<Type, Error> {
        let d = &self.raw.domains[i];
        // `<domain name="bit" type="bit">`: a primitive type name wins over a domain name.
        if let Some(ty) = Type::from_spec(d.type_name.trim()) {
            return Ok(ty);
        }
        let element = describe("domain", &d.name);
        if path.contains(&i) {
            return Err(Error::DomainCycle {
                at: d.at.clone(),
                element,
                domain: d.name.clone(),
            });
        }
        match self.by_name.get(d.type_name.trim()) {
            Some(&next) => {
                path.push(i);
                self.type_of(next, path)
            }
            None => Err(Error::UnknownType {
                at: d.at.clone(),
                element,
                type_name: d.type_name.clone(),
            }),
        }
    }

    fn get(&self, name: &str) -> Option<&Domain> {
        self.by_name.get(name.trim()).map(|&i| &self.resolved[i])
    }
}

// ===== classes, methods, fields =====

/// Which peers implement a class or method, and how strictly, from its `<chassis>`es.
fn chassis(chassis: &[RawChassis], element: &str) -> Result<(Direction, Implementation), Error> {
    let mut dir = Direction::default();
    let mut implementation = Implementation::default();
    let mut seen = Names::new("chassis");
    for c in chassis {
        let owner = format!("<chassis> of {element}");
        let (present, level) = match c.name.trim() {
            "server" => (&mut dir.to_server, &mut implementation.server),
            "client" => (&mut dir.to_client, &mut implementation.client),
            other => {
                return Err(Error::InvalidAttribute {
                    at: c.at.clone(),
                    element: owner,
                    attribute: "name",
                    value: other.to_owned(),
                    expected: "\"server\", \"client\"",
                });
            }
        };
        // Two levels for one peer would leave one of them silently unused.
        seen.insert(c.name.trim(), &c.at, &owner)?;
        *present = true;
        *level = match c.implement.as_deref().map(str::trim) {
            None => None,
            Some("MUST") => Some(Implement::Must),
            Some("SHOULD") => Some(Implement::Should),
            Some("MAY") => Some(Implement::May),
            Some(other) => {
                return Err(Error::InvalidAttribute {
                    at: c.at.clone(),
                    element: owner,
                    attribute: "implement",
                    value: other.to_owned(),
                    expected: "\"MUST\", \"SHOULD\", \"MAY\"",
                });
            }
        };
    }
    Ok((dir, implementation))
}

fn asserts(raw: &[RawAssert]) -> Vec<Assert> {
    raw.iter()
        .map(|a| Assert {
            check: a.check.trim().to_owned(),
            value: a.value.clone(),
            method: a.method.as_ref().map(|m| m.trim().to_owned()),
            field: a.field.as_ref().map(|f| f.trim().to_owned()),
        })
        .collect()
}

fn class(raw: &RawClass, id: u16, domains: &Domains<'_>) -> Result<Class, Error> {
    let element = describe("class", &raw.name);
    let (direction, implementation) = chassis(&raw.chassis, &element)?;

    let mut method_names = Names::new("method");
    let mut method_ids: HashMap<u16, (&str, &Location)> = HashMap::new();
    let mut ids = Vec::with_capacity(raw.methods.len());
    for m in &raw.methods {
        let element = describe_method(&raw.name, &m.name);
        check_name(&m.name, &m.at, &element)?;
        method_names.insert(&m.name, &m.at, &element)?;
        let mid = index(&m.index, &m.at, &element)?;
        if let Some((first_name, first)) = method_ids.insert(mid, (&m.name, &m.at)) {
            return Err(Error::DuplicateIndex {
                at: m.at.clone(),
                element,
                kind: "method",
                index: mid,
                first_name: format!("{}.{}", raw.name, first_name),
                first: first.clone(),
            });
        }
        ids.push(mid);
    }

    let mut methods = Vec::with_capacity(raw.methods.len());
    for (m, &mid) in raw.methods.iter().zip(&ids) {
        methods.push(method(raw, id, m, mid, &ids, domains)?);
    }

    let properties = if raw.fields.is_empty() {
        None
    } else {
        let owner = format!("class `{}`", raw.name);
        let mut fields = Vec::with_capacity(raw.fields.len());
        let mut seen = Names::new("field");
        let mut idents = Names::new("Rust field");
        for f in &raw.fields {
            let field = field(f, &owner, domains)?;
            let element = describe("field", &f.name);
            seen.insert(&f.name, &f.at, &element)?;
            idents.insert(&names::field(&f.name), &f.at, &element)?;
            if field.reserved {
                return Err(Error::ReservedProperty {
                    at: f.at.clone(),
                    element: format!("{element} of {owner}"),
                });
            }
            if field.ty == Type::Bit {
                return Err(Error::BitNotAllowed {
                    at: f.at.clone(),
                    element: format!("{element} of {owner}"),
                    domain: f.domain.clone().or(f.type_name.clone()).unwrap_or_default(),
                    reason: "a content property is a value behind a presence flag",
                });
            }
            fields.push(field);
        }
        Some(Properties {
            class_id: id,
            fields,
        })
    };

    Ok(Class {
        id,
        name: raw.name.clone(),
        handler: raw.handler.clone(),
        direction,
        implementation,
        doc: doc(raw.label.as_deref(), &raw.text, &raw.docs, &raw.rules),
        methods,
        properties,
    })
}

fn method(
    class: &RawClass,
    class_id: u16,
    raw: &RawMethod,
    id: u16,
    ids: &[u16],
    domains: &Domains<'_>,
) -> Result<Method, Error> {
    let element = describe_method(&class.name, &raw.name);
    let synchronous = flag(raw.synchronous.as_deref(), &raw.at, &element, "synchronous")?;
    let carries_content = flag(raw.content.as_deref(), &raw.at, &element, "content")?;
    let deprecated = flag(raw.deprecated.as_deref(), &raw.at, &element, "deprecated")?;
    if raw.chassis.is_empty() {
        return Err(Error::NoChassis {
            at: raw.at.clone(),
            element,
        });
    }
    let (direction, implementation) = chassis(&raw.chassis, &element)?;

    let mut responses = Vec::with_capacity(raw.responses.len());
    for r in &raw.responses {
        let target = class.methods.iter().position(|m| m.name == r.name.trim());
        let Some(target) = target else {
            return Err(Error::DanglingResponse {
                at: r.at.clone(),
                element,
                class: class.name.clone(),
                response: r.name.clone(),
            });
        };
        responses.push(MethodRef {
            class_id,
            method_id: ids[target],
            class_name: class.name.clone(),
            name: class.methods[target].name.clone(),
        });
    }
    if !responses.is_empty() && !synchronous {
        return Err(Error::ResponseNotSynchronous {
            at: raw.at.clone(),
            element,
        });
    }

    let owner = format!("{}.{}", class.name, raw.name);
    let mut fields = Vec::with_capacity(raw.fields.len());
    let mut seen = Names::new("field");
    let mut idents = Names::new("Rust field");
    for f in &raw.fields {
        let field = field(f, &owner, domains)?;
        let element = format!("{} of {owner}", describe("field", &f.name));
        seen.insert(&f.name, &f.at, &element)?;
        if !field.reserved {
            idents.insert(&names::field(&f.name), &f.at, &element)?;
        }
        fields.push(field);
    }

    Ok(Method {
        class_id,
        id,
        class_name: class.name.clone(),
        name: raw.name.clone(),
        synchronous,
        carries_content,
        deprecated,
        direction,
        implementation,
        responses,
        answers: Vec::new(),
        fields,
        doc: doc(raw.label.as_deref(), &raw.text, &raw.docs, &raw.rules),
    })
}

fn field(raw: &RawField, owner: &str, domains: &Domains<'_>) -> Result<Field, Error> {
    let element = format!("{} of {owner}", describe("field", &raw.name));
    check_name(&raw.name, &raw.at, &element)?;
    let reserved = flag(raw.reserved.as_deref(), &raw.at, &element, "reserved")?;
    let sensitive = flag(raw.sensitive.as_deref(), &raw.at, &element, "sensitive")?;
    let (ty, domain) = match (&raw.domain, &raw.type_name) {
        (Some(name), None) => match domains.get(name) {
            Some(d) => (d.ty, Some(d)),
            None => {
                return Err(Error::UnknownDomain {
                    at: raw.at.clone(),
                    element,
                    domain: name.clone(),
                });
            }
        },
        (None, Some(name)) => match Type::from_spec(name.trim()) {
            Some(ty) => (ty, None),
            None => {
                return Err(Error::UnknownType {
                    at: raw.at.clone(),
                    element,
                    type_name: name.clone(),
                });
            }
        },
        _ => {
            return Err(Error::FieldType {
                at: raw.at.clone(),
                element,
            });
        }
    };
    let mut doc = doc(raw.label.as_deref(), &raw.text, &raw.docs, &raw.rules);
    if let Some(d) = domain {
        // A field without prose borrows its domain's (`no-wait`, `reply-code`, ...).
        if doc.text.is_empty() {
            doc.text = d.doc.text.clone();
        }
        if doc.label.is_none() {
            doc.label = d.doc.label.clone();
        }
    }
    Ok(Field {
        name: raw.name.clone(),
        domain: raw.domain.as_ref().map(|d| d.trim().to_owned()),
        ty,
        reserved,
        sensitive,
        asserts: asserts(&raw.asserts),
        doc,
    })
}

/// Fills [`Method::answers`]: the reverse of every `<response>`.
fn link_answers(classes: &mut [Class]) {
    let mut links: Vec<(u16, u16, MethodRef)> = Vec::new();
    for class in classes.iter() {
        for m in &class.methods {
            for r in &m.responses {
                links.push((
                    r.class_id,
                    r.method_id,
                    MethodRef {
                        class_id: m.class_id,
                        method_id: m.id,
                        class_name: m.class_name.clone(),
                        name: m.name.clone(),
                    },
                ));
            }
        }
    }
    for (class_id, method_id, asker) in links {
        let target = classes
            .iter_mut()
            .filter(|c| c.id == class_id)
            .flat_map(|c| c.methods.iter_mut())
            .find(|m| m.id == method_id);
        if let Some(target) = target
            && !target.answers.contains(&asker)
        {
            target.answers.push(asker);
        }
    }
}

/// Refuses specs whose names collide once turned into Rust items: two classes, methods,
/// reply enums or property structs with one identifier, or one of them named like a fixed
/// generated item (`Method`, `Class`, `Request`, `ReplyCode`); two constants with one
/// identifier, or one named like `PROTOCOL_VERSION`, `PROTOCOL_HEADER` or `DEFAULT_PORT`.
fn check_rust_names(raw: &RawSpec) -> Result<(), Error> {
    let mut types = Names::new("Rust item");
    let fixed = &raw.at;
    for name in ["Method", "Class", "Request", "ReplyCode"] {
        types.insert(name, fixed, "<amqp>")?;
    }
    for c in &raw.classes {
        let element = describe("class", &c.name);
        if !c.fields.is_empty() {
            types.insert(&names::properties_type(&c.name), &c.at, &element)?;
        }
        for m in &c.methods {
            let element = describe_method(&c.name, &m.name);
            types.insert(&names::method_type(&c.name, &m.name), &m.at, &element)?;
            if m.responses.len() > 1 {
                types.insert(&names::reply_type(&c.name, &m.name), &m.at, &element)?;
            }
        }
    }
    // Class variants live in their own enum.
    let mut variants = Names::new("Rust item");
    for c in &raw.classes {
        variants.insert(
            &names::upper_camel(&c.name),
            &c.at,
            &describe("class", &c.name),
        )?;
    }

    let mut consts = Names::new("Rust item");
    let mut codes = Names::new("Rust item");
    for name in ["PROTOCOL_VERSION", "PROTOCOL_HEADER", "DEFAULT_PORT"] {
        consts.insert(name, fixed, "<amqp>")?;
    }
    for c in &raw.constants {
        let element = describe("constant", &c.name);
        let scope = if c.class.is_some() || c.name.starts_with("reply-") {
            &mut codes
        } else {
            &mut consts
        };
        scope.insert(&names::constant(&c.name), &c.at, &element)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedent_removes_common_indentation_and_blank_edges() {
        let text = "\n      First line\n        indented\n\n      last  \n    ";
        assert_eq!(dedent(text), "First line\n  indented\n\nlast");
        assert_eq!(dedent("  \n \n"), "");
        assert_eq!(dedent("one"), "one");
    }

    #[test]
    fn chassis_levels_and_asserts_are_kept() {
        let xml = r#"<amqp major="0" minor="9" revision="1">
          <domain name="name" type="shortstr"><assert check="length" value="127"/></domain>
          <class name="c" index="1">
            <chassis name="server" implement="SHOULD"/><chassis name="client" implement="MAY"/>
            <method name="m" index="1">
              <chassis name="server"/>
              <field name="n" domain="name"><assert check="notnull"/></field>
              <field name="k" domain="name"><assert check="le" method="o" field="n"/></field>
            </method></class></amqp>"#;
        let spec = Spec::from_xml(xml, "t.xml").unwrap();
        let class = &spec.classes[0];
        assert_eq!(
            class.implementation,
            Implementation {
                server: Some(Implement::Should),
                client: Some(Implement::May)
            }
        );
        let m = &class.methods[0];
        assert!(m.direction.to_server && !m.direction.to_client);
        assert_eq!(m.implementation, Implementation::default());
        let assert =
            |check: &str, value: Option<&str>, method: Option<&str>, field: Option<&str>| Assert {
                check: check.into(),
                value: value.map(Into::into),
                method: method.map(Into::into),
                field: field.map(Into::into),
            };
        assert_eq!(
            spec.domains[0].asserts,
            [assert("length", Some("127"), None, None)]
        );
        assert_eq!(m.fields[0].asserts, [assert("notnull", None, None, None)]);
        assert_eq!(
            m.fields[1].asserts,
            [assert("le", None, Some("o"), Some("n"))]
        );
    }

    #[test]
    fn bit_runs_split_at_non_bit_fields() {
        let xml = r#"<amqp major="0" minor="9" revision="1">
          <domain name="bit" type="bit"/><domain name="short" type="short"/>
          <class name="c" index="1"><method name="m" index="1">
            <chassis name="server" implement="MUST"/>
            <field name="a" domain="bit"/><field name="b" domain="bit"/>
            <field name="n" domain="short"/>
            <field name="r" type="bit" reserved="1"/><field name="d" domain="bit"/>
          </method></class></amqp>"#;
        let spec = Spec::from_xml(xml, "t.xml").unwrap();
        let layout = spec.classes[0].methods[0].layout();
        use crate::model::Slot;
        assert_eq!(
            layout,
            vec![
                Slot::Bits(vec![0, 1]),
                Slot::Value(2),
                Slot::Bits(vec![3, 4])
            ]
        );
    }
}
