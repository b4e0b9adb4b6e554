//! Small fixture specs: valid ones against their expected output (`fixtures/<name>.rs`,
//! rewritten only under `WARREN_BLESS=1`), broken ones against the exact error and position.

#[path = "support/expect.rs"]
mod expect;

use warren_codegen::{Error, Generator};

/// The valid fixtures, each with `fixtures/<name>.xml` and its expected `fixtures/<name>.rs`.
const VALID: &[&str] = &[
    "one_class",
    "bit_runs",
    "keywords",
    "content",
    "full_schema",
];

#[test]
fn valid_fixtures_generate_their_expected_output() {
    for name in VALID {
        let dir = expect::fixtures_dir();
        let xml = std::fs::read_to_string(dir.join(format!("{name}.xml"))).unwrap();
        let code = Generator::new()
            .generate_str(&xml, &format!("{name}.xml"))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        expect::check(&dir.join(format!("{name}.rs")), &code);
    }
}

#[test]
fn every_fixture_file_is_checked() {
    let mut on_disk: Vec<String> = std::fs::read_dir(expect::fixtures_dir())
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".xml").map(str::to_owned)
        })
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = VALID.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "a fixture that no test checks");

    let mut broken: Vec<String> = std::fs::read_dir(expect::fixtures_dir().join("broken"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    broken.sort();
    let mut tested: Vec<String> = BROKEN.iter().map(|b| format!("{}.xml", b.name)).collect();
    tested.sort();
    assert_eq!(broken, tested, "a broken fixture that no test checks");
}

#[test]
fn generation_is_deterministic() {
    let xml = std::fs::read_to_string(expect::fixtures_dir().join("full_schema.xml")).unwrap();
    let a = Generator::new().generate_str(&xml, "x.xml").unwrap();
    let b = Generator::new().generate_str(&xml, "x.xml").unwrap();
    assert_eq!(a, b);
}

// ===== broken fixtures =====

/// What a broken fixture must produce.
struct Broken {
    /// `fixtures/broken/<name>.xml`.
    name: &'static str,
    /// Where the error points: 1-based line and column.
    line: u32,
    column: u32,
    /// The element `Display` names right after the position.
    element: &'static str,
    /// The variant, checked with its data.
    kind: fn(&Error) -> bool,
}

const BROKEN: &[Broken] = &[
    Broken {
        name: "bad_xml",
        line: 5,
        column: 5,
        element: "<method name=\"m\">",
        kind: |e| {
            matches!(e, Error::Xml { element, message, .. }
                if element == "<method name=\"m\">" && message.contains("</method>"))
        },
    },
    Broken {
        name: "unknown_domain",
        line: 7,
        column: 7,
        element: "<field name=\"tag\"> of c.m",
        kind: |e| matches!(e, Error::UnknownDomain { domain, .. } if domain == "consumer-tag"),
    },
    Broken {
        name: "unknown_type",
        line: 2,
        column: 3,
        element: "<domain name=\"count\">",
        kind: |e| matches!(e, Error::UnknownType { type_name, .. } if type_name == "int32"),
    },
    Broken {
        name: "duplicate_method_index",
        line: 6,
        column: 5,
        element: "<method name=\"b\"> of class `c`",
        kind: |e| {
            matches!(e, Error::DuplicateIndex { kind: "method", index: 10, first_name, first, .. }
                if first_name == "c.a" && (first.line, first.column) == (3, 5))
        },
    },
    Broken {
        name: "duplicate_class_index",
        line: 4,
        column: 3,
        element: "<class name=\"c\">",
        kind: |e| {
            matches!(e, Error::DuplicateIndex { kind: "class", index: 10, first_name, first, .. }
                if first_name == "a" && (first.line, first.column) == (2, 3))
        },
    },
    Broken {
        name: "duplicate_method_name",
        line: 6,
        column: 5,
        element: "<method name=\"a\"> of class `c`",
        kind: |e| {
            matches!(e, Error::DuplicateName { kind: "method", name, first, .. }
                if name == "a" && first.line == 3)
        },
    },
    Broken {
        name: "dangling_response",
        line: 5,
        column: 7,
        element: "<method name=\"open\"> of class `c`",
        kind: |e| {
            matches!(e, Error::DanglingResponse { response, class, .. }
                if response == "open-ok" && class == "c")
        },
    },
    Broken {
        name: "missing_attribute",
        line: 3,
        column: 5,
        element: "<method name=\"m\">",
        kind: |e| {
            matches!(
                e,
                Error::MissingAttribute {
                    attribute: "index",
                    ..
                }
            )
        },
    },
    Broken {
        name: "bad_number",
        line: 3,
        column: 5,
        element: "<method name=\"m\"> of class `c`",
        kind: |e| {
            matches!(e, Error::InvalidNumber { attribute: "index", value, max: 65535, .. }
                if value == "ten")
        },
    },
    Broken {
        name: "bit_property",
        line: 4,
        column: 5,
        element: "<field name=\"flag\"> of class `c`",
        kind: |e| matches!(e, Error::BitNotAllowed { domain, .. } if domain == "bit"),
    },
    Broken {
        name: "keyword_collision",
        line: 7,
        column: 7,
        element: "<field name=\"kind\"> of c.m",
        kind: |e| {
            matches!(e, Error::DuplicateName { kind: "Rust field", name, first, .. }
                if name == "kind" && first.line == 6)
        },
    },
    Broken {
        name: "no_chassis",
        line: 3,
        column: 5,
        element: "<method name=\"m\"> of class `c`",
        kind: |e| matches!(e, Error::NoChassis { .. }),
    },
    Broken {
        name: "bad_chassis",
        line: 3,
        column: 5,
        element: "<chassis> of <class name=\"c\">",
        kind: |e| matches!(e, Error::InvalidAttribute { attribute: "name", value, .. } if value == "broker"),
    },
    Broken {
        name: "duplicate_chassis",
        line: 5,
        column: 7,
        element: "<chassis> of <method name=\"m\"> of class `c`",
        kind: |e| {
            matches!(e, Error::DuplicateName { kind: "chassis", name, first, .. }
                if name == "server" && (first.line, first.column) == (4, 7))
        },
    },
    Broken {
        name: "domain_cycle",
        line: 2,
        column: 3,
        element: "<domain name=\"a\">",
        kind: |e| matches!(e, Error::DomainCycle { domain, .. } if domain == "a"),
    },
    Broken {
        name: "unexpected_element",
        line: 5,
        column: 7,
        element: "<frobnicate>",
        kind: |e| {
            matches!(e, Error::UnexpectedElement { element, parent, .. }
                if element == "frobnicate" && parent == "method")
        },
    },
    Broken {
        name: "response_not_synchronous",
        line: 3,
        column: 5,
        element: "<method name=\"ask\"> of class `c`",
        kind: |e| matches!(e, Error::ResponseNotSynchronous { .. }),
    },
];

#[test]
fn broken_fixtures_give_typed_errors_at_their_position() {
    let mut failures = Vec::new();
    for broken in BROKEN {
        let name = broken.name;
        let file = format!("broken/{name}.xml");
        let path = expect::fixtures_dir().join(&file);
        let xml = std::fs::read_to_string(&path).unwrap();
        let error = match Generator::new().generate_str(&xml, &file) {
            Ok(_) => {
                failures.push(format!("{name}: generated code instead of an error"));
                continue;
            }
            Err(e) => e,
        };
        if !(broken.kind)(&error) {
            failures.push(format!("{name}: wrong error: {error:?}"));
        }
        let Some(at) = error.location() else {
            failures.push(format!("{name}: no location in {error:?}"));
            continue;
        };
        let (line, column) = (broken.line, broken.column);
        if (at.line, at.column) != (line, column) || *at.file != *file {
            failures.push(format!(
                "{name}: at {at}, expected {file}:{line}:{column} ({error})"
            ));
        }
        // Display leads with file:line:column and the element, like a compiler.
        let shown = error.to_string();
        let lead = format!("{file}:{line}:{column}: {}", broken.element);
        if !shown.starts_with(&lead) {
            failures.push(format!(
                "{name}: Display is {shown:?}, expected it to start with {lead:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ===== errors without a fixture file =====

fn error_of(xml: &str) -> Error {
    Generator::new()
        .generate_str(xml, "inline.xml")
        .expect_err("the spec is broken")
}

const HEAD: &str = "<amqp major=\"0\" minor=\"9\" revision=\"1\">\n";

#[test]
fn field_needs_exactly_one_of_domain_and_type() {
    for field in [
        "<field name=\"f\"/>",
        "<field name=\"f\" domain=\"short\" type=\"short\"/>",
    ] {
        let xml = format!(
            "{HEAD}<domain name=\"short\" type=\"short\"/>\n<class name=\"c\" index=\"1\"><method name=\"m\" index=\"1\"><chassis name=\"server\"/>\n  {field}</method></class></amqp>"
        );
        let e = error_of(&xml);
        assert!(
            matches!(&e, Error::FieldType { at, .. } if (at.line, at.column) == (4, 3)),
            "{e:?}"
        );
    }
}

#[test]
fn reserved_field_with_unknown_type() {
    let xml = format!(
        "{HEAD}<class name=\"c\" index=\"1\"><method name=\"m\" index=\"1\"><chassis name=\"server\"/>\n<field name=\"r\" type=\"shortstring\" reserved=\"1\"/></method></class></amqp>"
    );
    assert!(
        matches!(error_of(&xml), Error::UnknownType { type_name, .. } if type_name == "shortstring")
    );
}

#[test]
fn flags_must_be_zero_or_one() {
    let xml = format!(
        "{HEAD}<class name=\"c\" index=\"1\"><method name=\"m\" index=\"1\" synchronous=\"yes\"><chassis name=\"server\"/></method></class></amqp>"
    );
    assert!(matches!(
        error_of(&xml),
        Error::InvalidAttribute { attribute: "synchronous", value, .. } if value == "yes"
    ));
}

#[test]
fn chassis_levels_are_must_should_or_may() {
    let xml = format!(
        "{HEAD}<class name=\"c\" index=\"1\"><method name=\"m\" index=\"1\">\n<chassis name=\"server\" implement=\"MIGHT\"/></method></class></amqp>"
    );
    let e = error_of(&xml);
    assert!(
        matches!(&e, Error::InvalidAttribute { attribute: "implement", value, at, .. }
            if value == "MIGHT" && (at.line, at.column) == (3, 1)),
        "{e:?}"
    );
}

#[test]
fn reserved_properties_are_refused() {
    let xml = format!(
        "{HEAD}<domain name=\"short\" type=\"short\"/>\n<class name=\"c\" index=\"1\">\n  <field name=\"p\" domain=\"short\" reserved=\"1\"/></class></amqp>"
    );
    let e = error_of(&xml);
    assert!(
        matches!(&e, Error::ReservedProperty { at, .. } if at.line == 4),
        "{e:?}"
    );
}

#[test]
fn reply_codes_must_fit_sixteen_bits_and_have_a_known_class() {
    let xml =
        format!("{HEAD}<constant name=\"too-big\" value=\"70000\" class=\"soft-error\"/></amqp>");
    assert!(matches!(
        error_of(&xml),
        Error::InvalidNumber {
            attribute: "value",
            max: 65535,
            ..
        }
    ));
    let xml = format!("{HEAD}<constant name=\"odd\" value=\"300\" class=\"medium-error\"/></amqp>");
    assert!(matches!(
        error_of(&xml),
        Error::InvalidAttribute { attribute: "class", value, .. } if value == "medium-error"
    ));
}

#[test]
fn versions_must_be_octets() {
    let e = error_of("<amqp major=\"0\" minor=\"256\" revision=\"1\"/>");
    assert!(
        matches!(
            e,
            Error::InvalidNumber {
                attribute: "minor",
                max: 255,
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn names_must_make_identifiers() {
    let xml = format!("{HEAD}<class name=\"c/d\" index=\"1\"/></amqp>");
    assert!(matches!(error_of(&xml), Error::InvalidName { name, .. } if name == "c/d"));
}

#[test]
fn generated_names_must_not_collide() {
    // `a-b` and `a_b` are different spec names but the same Rust type.
    let xml = format!(
        "{HEAD}<class name=\"c\" index=\"1\">\n<method name=\"a-b\" index=\"1\"><chassis name=\"server\"/></method>\n<method name=\"a_b\" index=\"2\"><chassis name=\"server\"/></method></class></amqp>"
    );
    let e = error_of(&xml);
    assert!(
        matches!(&e, Error::DuplicateName { kind: "Rust item", name, at, .. } if name == "CAB" && at.line == 4),
        "{e:?}"
    );
    // A method named like a fixed item.
    let xml = format!(
        "{HEAD}<class name=\"reply\" index=\"1\">\n<method name=\"code\" index=\"1\"><chassis name=\"server\"/></method></class></amqp>"
    );
    assert!(matches!(error_of(&xml), Error::DuplicateName { name, .. } if name == "ReplyCode"));
}

#[test]
fn duplicate_constants_and_domains() {
    let xml = format!(
        "{HEAD}<constant name=\"a\" value=\"1\"/>\n<constant name=\"a\" value=\"2\"/></amqp>"
    );
    assert!(matches!(
        error_of(&xml),
        Error::DuplicateName {
            kind: "constant",
            ..
        }
    ));
    let xml = format!(
        "{HEAD}<domain name=\"a\" type=\"bit\"/>\n<domain name=\"a\" type=\"short\"/></amqp>"
    );
    assert!(matches!(
        error_of(&xml),
        Error::DuplicateName { kind: "domain", .. }
    ));
}

#[test]
fn stray_text_where_none_belongs() {
    let xml = format!("{HEAD}hello</amqp>");
    assert!(matches!(error_of(&xml), Error::UnexpectedText { text, .. } if text == "hello"));
}

#[test]
fn wrong_root() {
    let e = error_of("<?xml version=\"1.0\"?>\n<protocol/>");
    assert!(
        matches!(&e, Error::NoRoot { found, at } if found == "<protocol>" && at.line == 2),
        "{e:?}"
    );
}

#[test]
fn missing_file_is_an_io_error() {
    let e = Generator::new()
        .generate_file("/nonexistent/spec.xml")
        .unwrap_err();
    assert!(
        matches!(&e, Error::Io { path, .. } if path.ends_with("spec.xml")),
        "{e:?}"
    );
    assert!(e.location().is_none());
    // The cause is chained for `source()`.
    assert!(std::error::Error::source(&e).is_some());
}

#[test]
fn invalid_runtime_path() {
    let e = Generator::new()
        .runtime_path("not a path")
        .generate_str("<amqp major=\"0\" minor=\"9\" revision=\"1\"/>", "x.xml")
        .unwrap_err();
    assert!(matches!(e, Error::InvalidRuntimePath { .. }));
}

#[test]
fn errors_are_std_errors() {
    fn is_error<E: std::error::Error + Send + Sync + 'static>() {}
    is_error::<Error>();
}
