//! The shared reference specs (`../shared/reference/*.xml`, beside the workspace): the
//! generator must take them unchanged, and warren's own spec must state the same facts.
//!
//! - `amqp0-9-1.extended.xml` (RabbitMQ's): its resolved model must equal ours, docs aside,
//!   `sensitive` aside, and but for one deliberate correction: our spec gives
//!   `connection.update-secret` and `update-secret-ok` the chassis RabbitMQ implements (the
//!   client sends update-secret), where the reference has them inverted.
//! - `amqp0-9-1.xml` (the official one): every class, method, field, domain and constant it
//!   has must be in ours with the same facts, except what RabbitMQ's extensions (listed at the
//!   top of the extended file) change on purpose: a method may gain a sender (basic.ack and
//!   basic.cancel may come from the server), a reserved field may be un-reserved with the same
//!   wire type (exchange.declare's auto-delete and internal).
//!
//! When the reference folder is absent these tests print a note and pass.

#[path = "support/expect.rs"]
mod expect;

use warren_codegen::Generator;
use warren_codegen::model::{Doc, Spec};

fn reference(name: &str) -> Option<Spec> {
    let Some(dir) = expect::reference_dir() else {
        eprintln!("note: ../shared/reference is absent; skipping the reference comparison");
        return None;
    };
    Some(Spec::from_file(dir.join(name)).unwrap_or_else(|e| panic!("{e}")))
}

fn ours() -> Spec {
    Spec::from_file(expect::workspace_dir().join("amqp-spec/amqp0-9-1.xml"))
        .unwrap_or_else(|e| panic!("warren's spec: {e}"))
}

#[test]
fn every_reference_spec_generates() {
    let Some(dir) = expect::reference_dir() else {
        eprintln!("note: ../shared/reference is absent; skipping");
        return;
    };
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "xml") {
            let code = Generator::new()
                .generate_file(&path)
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(code.contains("pub enum Method {"), "{}", path.display());
            seen += 1;
        }
    }
    assert!(
        seen >= 2,
        "expected the official and the extended spec in {}",
        dir.display()
    );
}

/// The model with everything that is not a wire or protocol fact cleared: docs, labels,
/// rules, the `sensitive` flag, `handler` and the `comment` attribute.
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
        class.handler = None;
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

/// Flips the direction of connection.update-secret and update-secret-ok.
fn invert_update_secret(spec: &mut Spec) {
    for m in spec.classes.iter_mut().flat_map(|c| c.methods.iter_mut()) {
        if m.class_name == "connection"
            && (m.name == "update-secret" || m.name == "update-secret-ok")
        {
            std::mem::swap(&mut m.direction.to_server, &mut m.direction.to_client);
        }
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
    let Some(reference) = reference("amqp0-9-1.extended.xml") else {
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
        panic!("warren's spec states other facts than amqp0-9-1.extended.xml:\n{diff}");
    }
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
            _ => {}
        }
    }
    for class in &reference.classes {
        let Some(oc) = ours.class(class.id) else {
            problems.push(format!("class {} ({}) is missing", class.name, class.id));
            continue;
        };
        if oc.name != class.name {
            problems.push(format!("class {}: named {}", class.id, oc.name));
        }
        let props = |c: &warren_codegen::model::Class| {
            c.properties
                .iter()
                .flat_map(|p| p.fields.iter())
                .map(|f| (f.name.clone(), f.ty))
                .collect::<Vec<_>>()
        };
        if props(class) != props(oc) {
            problems.push(format!("class {}: properties differ", class.name));
        }
        for m in &class.methods {
            let name = m.full_name();
            let Some(om) = ours.method(m.class_id, m.id) else {
                problems.push(format!(
                    "method {name} ({}.{}) is missing",
                    m.class_id, m.id
                ));
                continue;
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
            // RabbitMQ may let more peers send a method, never fewer.
            if (m.direction.to_server && !om.direction.to_server)
                || (m.direction.to_client && !om.direction.to_client)
            {
                problems.push(format!(
                    "method {name}: {:?} narrowed to {:?}",
                    m.direction, om.direction
                ));
            }
            if om.fields.len() != m.fields.len() {
                problems.push(format!(
                    "method {name}: {} fields vs {}",
                    m.fields.len(),
                    om.fields.len()
                ));
                continue;
            }
            for (f, of) in m.fields.iter().zip(&om.fields) {
                if f.ty != of.ty {
                    problems.push(format!("{name}.{}: {:?} vs {:?}", f.name, f.ty, of.ty));
                } else if !f.reserved && (of.reserved || of.name != f.name || of.domain != f.domain)
                {
                    problems.push(format!(
                        "{name}.{}: now {} ({:?})",
                        f.name, of.name, of.domain
                    ));
                }
            }
        }
    }
    problems
}

#[test]
fn official_reference_facts_are_all_in_ours() {
    let Some(reference) = reference("amqp0-9-1.xml") else {
        return;
    };
    let problems = missing_from(&reference, &ours());
    assert!(
        problems.is_empty(),
        "warren's spec lacks or changes facts of amqp0-9-1.xml:\n{}",
        problems.join("\n")
    );
}

// ===== the checks themselves =====

#[test]
fn the_official_spec_is_contained_in_the_extended_one() {
    // The two reference files differ exactly by RabbitMQ's listed extensions, which the
    // containment check allows: a known-good pair.
    let (Some(plain), Some(extended)) = (
        reference("amqp0-9-1.xml"),
        reference("amqp0-9-1.extended.xml"),
    ) else {
        return;
    };
    assert_eq!(missing_from(&plain, &extended), Vec::<String>::new());
    // And the extended file is not contained in the official one.
    assert!(!missing_from(&extended, &plain).is_empty());
}

#[test]
fn the_checks_catch_a_changed_fact() {
    let Some(extended) = reference("amqp0-9-1.extended.xml") else {
        return;
    };
    let mut changed = extended.clone();
    let field = changed
        .classes
        .iter_mut()
        .flat_map(|c| c.methods.iter_mut())
        .find(|m| m.class_name == "queue" && m.name == "declare")
        .unwrap()
        .fields
        .iter_mut()
        .find(|f| f.name == "durable")
        .unwrap();
    field.name = "persistent".into();
    let problems = missing_from(&extended, &changed);
    assert_eq!(
        problems,
        vec!["queue.declare.durable: now persistent (Some(\"bit\"))".to_owned()]
    );
    assert!(
        compare(&facts(extended.clone()), &facts(changed), "a", "b")
            .unwrap()
            .contains("persistent")
    );

    // Docs and the sensitive flag are not facts.
    let mut redocumented = extended.clone();
    redocumented.classes[0].methods[0].doc.text = vec!["Other words.".into()];
    redocumented.classes[0].methods[0].fields[0].sensitive = true;
    assert!(compare(&facts(extended), &facts(redocumented), "a", "b").is_none());
}
