//! The shared reference specs (`../shared/reference/*.xml`, beside the workspace): the
//! generator must take them unchanged, and warren's own spec must state the same facts.
//!
//! - `amqp0-9-1.extended.xml` (RabbitMQ's): its resolved model must equal ours, docs aside,
//!   `sensitive` aside, and but for one deliberate correction: our spec gives
//!   `connection.update-secret` and `update-secret-ok` the chassis RabbitMQ implements (the
//!   client sends update-secret), where the reference has them inverted. The models are
//!   compared whole, so every fact they hold takes part: constants (value, soft/hard class,
//!   order), domains (type, asserts), classes (index, name, handler, chassis and implement
//!   levels), methods (index, name, synchronous, content, deprecated, chassis, responses),
//!   fields in wire order (name, domain or type, reserved, asserts) and content properties.
//! - `amqp0-9-1.xml` (the official one): every class, method, field, domain and constant it
//!   has must be in ours with the same facts, except what RabbitMQ's extensions (listed at the
//!   top of the extended file) change on purpose: a method may gain a sender (basic.ack and
//!   basic.cancel may come from the server), a reserved field may be un-reserved with the same
//!   wire type (exchange.declare's auto-delete and internal).
//!
//! The last tests check the checks: that each kind of changed fact is caught, so that neither
//! comparison can pass for want of looking.
//!
//! When the reference folder is absent these tests print a note and pass, unless
//! `WARREN_REQUIRE_REFERENCE=1` asks for it (see `support/expect.rs`).

#[path = "support/expect.rs"]
mod expect;

use warren_codegen::Generator;
use warren_codegen::model::{
    Class, ConstantKind, Doc, Implement, Implementation, Method, Spec, Type,
};

/// The two reference files.
const OFFICIAL: &str = "amqp0-9-1.xml";
const EXTENDED: &str = "amqp0-9-1.extended.xml";

/// The resolved model of a reference file, checked to be the whole protocol (so that a
/// comparison with it cannot pass because it is empty), or `None` when the folder is absent.
fn reference(name: &str) -> Option<Spec> {
    let Some(dir) = expect::reference_dir() else {
        expect::skip_without_reference();
        return None;
    };
    let spec = Spec::from_file(dir.join(name)).unwrap_or_else(|e| panic!("{e}"));
    assert_is_the_whole_protocol(&spec, name);
    Some(spec)
}

fn ours() -> Spec {
    let spec = Spec::from_file(expect::workspace_dir().join("amqp-spec/amqp0-9-1.xml"))
        .unwrap_or_else(|e| panic!("warren's spec: {e}"));
    assert_is_the_whole_protocol(&spec, "amqp-spec/amqp0-9-1.xml");
    spec
}

/// The classes, methods, constants, domains and properties every AMQP 0-9-1 spec has.
fn assert_is_the_whole_protocol(spec: &Spec, name: &str) {
    for class in ["connection", "channel", "exchange", "queue", "basic", "tx"] {
        assert!(
            spec.classes.iter().any(|c| c.name == class),
            "{name}: no class {class}"
        );
    }
    // The official file has 53, RabbitMQ's 64.
    let methods = spec.methods().count();
    assert!(methods >= 50, "{name}: only {methods} methods");
    assert!(spec.constants.len() >= 20, "{name}: few constants");
    assert!(spec.domains.len() >= 20, "{name}: few domains");
    let basic = spec.classes.iter().find(|c| c.name == "basic").unwrap();
    assert_eq!(
        basic.properties.as_ref().map(|p| p.fields.len()),
        Some(14),
        "{name}: basic's properties"
    );
}

#[test]
fn every_reference_spec_generates() {
    let Some(dir) = expect::reference_dir() else {
        expect::skip_without_reference();
        return;
    };
    for name in [OFFICIAL, EXTENDED] {
        let code = Generator::new()
            .generate_file(dir.join(name))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(code.contains("pub enum Method {"), "{name}");
        assert!(code.contains("pub struct BasicProperties {"), "{name}");
    }
}

/// The model with everything that is not a wire or protocol fact cleared: docs, labels,
/// rules, the `sensitive` flag and the `comment` attribute.
fn facts(mut spec: Spec) -> Spec {
    spec.comment = None;
    for c in &mut spec.constants {
        c.doc = Doc::default();
    }
    for d in &mut spec.domains {
        d.doc = Doc::default();
    }
    for class in &mut spec.classes {
        class.doc = Doc::default();
        for m in &mut class.methods {
            m.doc = Doc::default();
            for f in &mut m.fields {
                f.doc = Doc::default();
                f.sensitive = false;
            }
        }
        for p in class
            .properties
            .iter_mut()
            .flat_map(|p| p.fields.iter_mut())
        {
            p.doc = Doc::default();
            p.sensitive = false;
        }
    }
    spec
}

/// Flips the chassis of connection.update-secret and update-secret-ok.
fn invert_update_secret(spec: &mut Spec) {
    for name in ["update-secret", "update-secret-ok"] {
        let m = method_mut(spec, "connection", name);
        std::mem::swap(&mut m.direction.to_server, &mut m.direction.to_client);
        let Implementation { server, client } = m.implementation;
        m.implementation = Implementation {
            server: client,
            client: server,
        };
    }
}

/// Compares two fact models; `None` when equal, else a diff of their pretty `Debug`.
fn compare(
    expected: &Spec,
    actual: &Spec,
    expected_name: &str,
    actual_name: &str,
) -> Option<String> {
    warren_codegen::diff::unified(
        &format!("{expected:#?}\n"),
        &format!("{actual:#?}\n"),
        expected_name,
        actual_name,
        400,
    )
}

#[test]
fn extended_reference_states_the_same_facts_as_ours() {
    let Some(reference) = reference(EXTENDED) else {
        return;
    };
    let ours = ours();
    // The deliberate deviation, checked explicitly: the client sends update-secret.
    let update = |spec: &Spec, name: &str| {
        let m = spec
            .methods()
            .find(|m| m.class_name == "connection" && m.name == name)
            .unwrap_or_else(|| panic!("no connection.{name}"));
        (m.direction.to_server, m.direction.to_client)
    };
    assert_eq!(update(&ours, "update-secret"), (true, false));
    assert_eq!(update(&ours, "update-secret-ok"), (false, true));
    assert_eq!(update(&reference, "update-secret"), (false, true));

    let mut reference = facts(reference);
    invert_update_secret(&mut reference);
    if let Some(diff) = compare(&reference, &facts(ours), "extended reference", "amqp-spec") {
        panic!("warren's spec states other facts than {EXTENDED}:\n{diff}");
    }
}

/// Whether `ours` implements a class or method at least where `reference` says, at the same
/// level: RabbitMQ may let more peers send a method, never fewer, and never changes a level.
fn chassis_kept(
    reference: (bool, bool, Implementation),
    ours: (bool, bool, Implementation),
) -> bool {
    let (to_server, to_client, levels) = reference;
    let (our_server, our_client, our_levels) = ours;
    (!to_server || (our_server && levels.server == our_levels.server))
        && (!to_client || (our_client && levels.client == our_levels.client))
}

fn chassis_of(
    direction: warren_codegen::model::Direction,
    i: Implementation,
) -> (bool, bool, Implementation) {
    (direction.to_server, direction.to_client, i)
}

/// Every fact of `reference` that `ours` must share; the differences, one per line.
fn missing_from(reference: &Spec, ours: &Spec) -> Vec<String> {
    let mut problems = Vec::new();
    if (
        reference.major,
        reference.minor,
        reference.revision,
        reference.port,
    ) != (ours.major, ours.minor, ours.revision, ours.port)
    {
        problems.push("protocol version or port differ".to_owned());
    }
    for c in &reference.constants {
        match ours.constants.iter().find(|o| o.name == c.name) {
            None => problems.push(format!("constant {} is missing", c.name)),
            Some(o) if (o.value, o.kind) != (c.value, c.kind) => problems.push(format!(
                "constant {}: {:?} vs {:?}",
                c.name,
                (c.value, c.kind),
                (o.value, o.kind)
            )),
            _ => {}
        }
    }
    for d in &reference.domains {
        match ours.domains.iter().find(|o| o.name == d.name) {
            None => problems.push(format!("domain {} is missing", d.name)),
            Some(o) if o.ty != d.ty => {
                problems.push(format!("domain {}: {:?} vs {:?}", d.name, d.ty, o.ty))
            }
            Some(o) if o.asserts != d.asserts => {
                problems.push(format!("domain {}: asserts differ", d.name))
            }
            _ => {}
        }
    }
    for class in &reference.classes {
        let Some(oc) = ours.class(class.id) else {
            problems.push(format!("class {} ({}) is missing", class.name, class.id));
            continue;
        };
        if (&oc.name, &oc.handler) != (&class.name, &class.handler) {
            problems.push(format!(
                "class {}: named {} with handler {:?}",
                class.id, oc.name, oc.handler
            ));
        }
        if !chassis_kept(
            chassis_of(class.direction, class.implementation),
            chassis_of(oc.direction, oc.implementation),
        ) {
            problems.push(format!("class {}: chassis differ", class.name));
        }
        let props = |c: &Class| {
            c.properties
                .iter()
                .flat_map(|p| p.fields.iter())
                .map(|f| (f.name.clone(), f.domain.clone(), f.ty, f.asserts.clone()))
                .collect::<Vec<_>>()
        };
        if props(class) != props(oc) {
            problems.push(format!("class {}: properties differ", class.name));
        }
        for m in &class.methods {
            method_missing(m, ours, &mut problems);
        }
    }
    problems
}

fn method_missing(m: &Method, ours: &Spec, problems: &mut Vec<String>) {
    let name = m.full_name();
    let Some(om) = ours.method(m.class_id, m.id) else {
        problems.push(format!(
            "method {name} ({}.{}) is missing",
            m.class_id, m.id
        ));
        return;
    };
    if om.name != m.name {
        problems.push(format!("method {name}: named {}", om.full_name()));
    }
    if (om.synchronous, om.carries_content, om.deprecated)
        != (m.synchronous, m.carries_content, m.deprecated)
    {
        problems.push(format!(
            "method {name}: synchronous/content/deprecated differ"
        ));
    }
    if om.responses != m.responses {
        problems.push(format!("method {name}: responses differ"));
    }
    if !chassis_kept(
        chassis_of(m.direction, m.implementation),
        chassis_of(om.direction, om.implementation),
    ) {
        problems.push(format!(
            "method {name}: chassis {:?} {:?} changed to {:?} {:?}",
            m.direction, m.implementation, om.direction, om.implementation
        ));
    }
    if om.fields.len() != m.fields.len() {
        problems.push(format!(
            "method {name}: {} fields vs {}",
            m.fields.len(),
            om.fields.len()
        ));
        return;
    }
    for (f, of) in m.fields.iter().zip(&om.fields) {
        if f.ty != of.ty {
            problems.push(format!("{name}.{}: {:?} vs {:?}", f.name, f.ty, of.ty));
        } else if !f.reserved
            && (of.reserved
                || of.name != f.name
                || of.domain != f.domain
                || of.asserts != f.asserts)
        {
            problems.push(format!(
                "{name}.{}: now {} ({:?})",
                f.name, of.name, of.domain
            ));
        }
    }
}

#[test]
fn official_reference_facts_are_all_in_ours() {
    let Some(reference) = reference(OFFICIAL) else {
        return;
    };
    let problems = missing_from(&reference, &ours());
    assert!(
        problems.is_empty(),
        "warren's spec lacks or changes facts of {OFFICIAL}:\n{}",
        problems.join("\n")
    );
}

// ===== the checks themselves =====

#[test]
fn the_official_spec_is_contained_in_the_extended_one() {
    // The two reference files differ exactly by RabbitMQ's listed extensions, which the
    // containment check allows: a known-good pair.
    let (Some(plain), Some(extended)) = (reference(OFFICIAL), reference(EXTENDED)) else {
        return;
    };
    assert_eq!(missing_from(&plain, &extended), Vec::<String>::new());
    // And the extended file is not contained in the official one.
    assert!(!missing_from(&extended, &plain).is_empty());
}

fn class_mut<'a>(spec: &'a mut Spec, class: &str) -> &'a mut Class {
    spec.classes
        .iter_mut()
        .find(|c| c.name == class)
        .unwrap_or_else(|| panic!("no class {class}"))
}

fn method_mut<'a>(spec: &'a mut Spec, class: &str, method: &str) -> &'a mut Method {
    class_mut(spec, class)
        .methods
        .iter_mut()
        .find(|m| m.name == method)
        .unwrap_or_else(|| panic!("no method {class}.{method}"))
}

/// A level other than `level`.
fn other_level(level: Option<Implement>) -> Option<Implement> {
    Some(match level {
        Some(Implement::Must) => Implement::May,
        _ => Implement::Must,
    })
}

/// One changed fact: what it is, whether the containment check must see it too (it allows
/// RabbitMQ's kinds of change and ignores order where order is no fact of the wire), and the
/// change.
type Change = (&'static str, bool, fn(&mut Spec));

const CHANGES: &[Change] = &[
    ("protocol minor version", true, |s| s.minor = 8),
    ("port", true, |s| s.port = Some(5671)),
    ("constant value", true, |s| {
        s.constants
            .iter_mut()
            .find(|c| c.name == "frame-min-size")
            .unwrap()
            .value = 8192
    }),
    ("reply code class", true, |s| {
        s.constants
            .iter_mut()
            .find(|c| c.name == "not-found")
            .unwrap()
            .kind = ConstantKind::HardError
    }),
    ("constant order", false, |s| s.constants.swap(0, 1)),
    ("domain type", true, |s| {
        s.domains
            .iter_mut()
            .find(|d| d.name == "delivery-tag")
            .unwrap()
            .ty = Type::Long
    }),
    ("domain assert", true, |s| {
        s.domains
            .iter_mut()
            .find(|d| d.name == "queue-name")
            .unwrap()
            .asserts
            .pop();
    }),
    ("class handler", true, |s| {
        class_mut(s, "queue").handler = Some("connection".into())
    }),
    ("class implement level", true, |s| {
        let basic = class_mut(s, "basic");
        basic.implementation.server = other_level(basic.implementation.server)
    }),
    ("class index", true, |s| class_mut(s, "tx").id = 91),
    ("method index", true, |s| {
        method_mut(s, "tx", "commit").id = 22
    }),
    ("method name", true, |s| {
        method_mut(s, "queue", "purge").name = "empty".into()
    }),
    ("method removed", true, |s| {
        class_mut(s, "basic")
            .methods
            .retain(|m| m.name != "recover-async")
    }),
    ("synchronous flag", true, |s| {
        method_mut(s, "basic", "publish").synchronous = true
    }),
    ("content flag", true, |s| {
        method_mut(s, "basic", "deliver").carries_content = false
    }),
    ("deprecated flag", true, |s| {
        method_mut(s, "basic", "recover-async").deprecated = false
    }),
    ("method implement level", true, |s| {
        let get = method_mut(s, "basic", "get");
        get.implementation.server = other_level(get.implementation.server)
    }),
    ("method sender removed", true, |s| {
        method_mut(s, "channel", "close").direction.to_client = false
    }),
    ("response removed", true, |s| {
        method_mut(s, "basic", "get").responses.pop();
    }),
    ("field order", true, |s| {
        method_mut(s, "queue", "declare").fields.swap(2, 3)
    }),
    ("field name", true, |s| {
        method_mut(s, "queue", "declare").fields[3].name = "persistent".into()
    }),
    ("field domain", true, |s| {
        method_mut(s, "queue", "declare").fields[1].domain = Some("shortstr".into())
    }),
    ("field wire type", true, |s| {
        method_mut(s, "basic", "ack").fields[0].ty = Type::Long
    }),
    ("field made reserved", true, |s| {
        method_mut(s, "queue", "declare").fields[1].reserved = true
    }),
    // Un-reserving is one of RabbitMQ's kinds of change, so only the whole comparison sees it.
    ("field un-reserved", false, |s| {
        method_mut(s, "queue", "declare").fields[0].reserved = false
    }),
    ("field assert", true, |s| {
        method_mut(s, "connection", "start").fields[3]
            .asserts
            .clear()
    }),
    ("field removed", true, |s| {
        method_mut(s, "basic", "nack").fields.pop();
    }),
    ("property order", true, |s| {
        let p = class_mut(s, "basic").properties.as_mut().unwrap();
        p.fields.swap(0, 1)
    }),
    ("property removed", true, |s| {
        let p = class_mut(s, "basic").properties.as_mut().unwrap();
        p.fields.pop();
    }),
    ("property domain", true, |s| {
        let p = class_mut(s, "basic").properties.as_mut().unwrap();
        p.fields[0].domain = Some("shortstr-x".into())
    }),
];

#[test]
fn every_kind_of_changed_fact_is_caught() {
    let Some(extended) = reference(EXTENDED) else {
        return;
    };
    let expected = facts(extended.clone());
    let mut missed = Vec::new();
    for (what, contained, change) in CHANGES {
        let mut changed = extended.clone();
        change(&mut changed);
        if compare(&expected, &facts(changed.clone()), "a", "b").is_none() {
            missed.push(format!("the model comparison misses a changed {what}"));
        }
        if *contained && missing_from(&extended, &changed).is_empty() {
            missed.push(format!("the containment check misses a changed {what}"));
        }
    }
    assert!(missed.is_empty(), "{}", missed.join("\n"));
}

#[test]
fn the_checks_name_what_changed() {
    let Some(extended) = reference(EXTENDED) else {
        return;
    };
    let mut changed = extended.clone();
    method_mut(&mut changed, "queue", "declare")
        .fields
        .iter_mut()
        .find(|f| f.name == "durable")
        .unwrap()
        .name = "persistent".into();
    assert_eq!(
        missing_from(&extended, &changed),
        vec!["queue.declare.durable: now persistent (Some(\"bit\"))".to_owned()]
    );
    assert!(
        compare(&facts(extended.clone()), &facts(changed), "a", "b")
            .unwrap()
            .contains("persistent")
    );
}

#[test]
fn docs_and_the_sensitive_flag_are_not_facts() {
    let Some(extended) = reference(EXTENDED) else {
        return;
    };
    let mut redocumented = extended.clone();
    redocumented.comment = Some("other".into());
    let m = method_mut(&mut redocumented, "connection", "start-ok");
    m.doc.text = vec!["Other words.".into()];
    m.doc.label = Some("other label".into());
    m.fields[2].sensitive = true;
    m.fields[2].doc.rules.clear();
    assert!(compare(&facts(extended), &facts(redocumented), "a", "b").is_none());
}
