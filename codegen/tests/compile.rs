//! Compile tests: every checked-in output (fixtures, the snapshot) and the outputs for the
//! reference specs are built as a library crate against the stand-in runtime
//! (`support/wire.rs`) with `#![deny(missing_docs, warnings)]`, by `rustc`, by `clippy-driver`
//! (clippy's default lints) and by `rustdoc` (broken links, bad HTML, bare URLs). This is
//! how the generated file is held to `deny(missing_docs)` and `clippy -D warnings`, which
//! it cannot state itself: it is `include!`d, so it has no inner attributes.

#[path = "support/expect.rs"]
mod expect;

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tool of the toolchain running the tests, if installed.
fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Builds `generated` (a file path) as the `protocol` module of a library, with every tool.
fn check(name: &str, generated: &Path) {
    let code = std::fs::read_to_string(generated).unwrap();
    no_doc_tests(name, &code);

    let dir = std::env::temp_dir().join(format!(
        "warren-codegen-compile-{}-{name}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let wire = expect::manifest_dir().join("tests/support/wire.rs");
    let lib = dir.join("lib.rs");
    std::fs::write(
        &lib,
        format!(
            "//! Compile test of generated code.\n\
             #![deny(missing_docs, warnings)]\n\
             #[allow(missing_docs)]\n\
             #[path = {wire:?}]\n\
             pub mod wire;\n\
             /// The generated code.\n\
             pub mod protocol {{\n    include!({generated:?});\n}}\n",
            wire = wire.canonicalize().unwrap(),
            generated = generated.canonicalize().unwrap(),
        ),
    )
    .unwrap();

    let common = |cmd: &mut Command| {
        cmd.args(["--edition", "2024", "--crate-type", "lib", "--crate-name"])
            .arg(format!("check_{name}"))
            .arg(&lib);
    };
    let mut runs: Vec<(&str, Command)> = Vec::new();
    let rustc = tool("rustc").expect("rustc on PATH");
    let mut cmd = Command::new(rustc);
    common(&mut cmd);
    cmd.args(["--emit=metadata", "-o"])
        .arg(dir.join("rustc.rmeta"));
    runs.push(("rustc", cmd));
    match tool("clippy-driver") {
        Some(clippy) => {
            let mut cmd = Command::new(clippy);
            common(&mut cmd);
            cmd.args(["--emit=metadata", "-o"])
                .arg(dir.join("clippy.rmeta"));
            runs.push(("clippy-driver", cmd));
        }
        None => eprintln!("note: clippy-driver is not installed; skipping clippy for {name}"),
    }
    match tool("rustdoc") {
        Some(rustdoc) => {
            let mut cmd = Command::new(rustdoc);
            common(&mut cmd);
            cmd.arg("-o").arg(dir.join("doc"));
            runs.push(("rustdoc", cmd));
        }
        None => eprintln!("note: rustdoc is not installed; skipping rustdoc for {name}"),
    }
    let mut failures = Vec::new();
    for (tool, mut cmd) in runs {
        let output = cmd.output().unwrap();
        if !output.status.success() {
            failures.push(format!(
                "{tool} rejects the output for {name}:\n{}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Docs must never hold a Rust code block (rustdoc would compile spec text as a doctest):
/// the only fences are ```` ```text ```` blocks (grammars).
fn no_doc_tests(name: &str, code: &str) {
    let mut open = false;
    for (i, line) in code.lines().enumerate() {
        let Some(doc) = line.trim_start().strip_prefix("///") else {
            continue;
        };
        let doc = doc.trim_start();
        if let Some(info) = doc.strip_prefix("```") {
            if open {
                assert!(info.is_empty(), "{name}:{}: nested fence", i + 1);
            } else {
                assert_eq!(
                    info,
                    "text",
                    "{name}:{}: a code block that is not text",
                    i + 1
                );
            }
            open = !open;
        } else if !open {
            assert!(
                !line.trim_start().starts_with("///     "),
                "{name}:{}: an indented doc line would be a code block",
                i + 1
            );
        }
    }
    assert!(!open, "{name}: unclosed fence");
}

fn fixture(name: &str) {
    check(name, &expect::fixtures_dir().join(format!("{name}.rs")));
}

#[test]
fn fixture_one_class_compiles() {
    fixture("one_class");
}

#[test]
fn fixture_bit_runs_compiles() {
    fixture("bit_runs");
}

#[test]
fn fixture_keywords_compiles() {
    fixture("keywords");
}

#[test]
fn fixture_content_compiles() {
    fixture("content");
}

#[test]
fn fixture_full_schema_compiles() {
    fixture("full_schema");
}

#[test]
fn snapshot_compiles() {
    check(
        "snapshot",
        &expect::manifest_dir().join("tests/snapshots/protocol.rs"),
    );
}

fn reference(file: &str, name: &str) {
    let Some(dir) = expect::reference_dir() else {
        eprintln!("note: ../shared/reference is absent; skipping {file}");
        return;
    };
    let code = warren_codegen::Generator::new()
        .generate_file(dir.join(file))
        .unwrap_or_else(|e| panic!("{e}"));
    let out = std::env::temp_dir().join(format!("warren-codegen-{}-{name}.rs", std::process::id()));
    std::fs::write(&out, code).unwrap();
    check(name, &out);
    let _ = std::fs::remove_file(&out);
}

#[test]
fn official_reference_output_compiles() {
    reference("amqp0-9-1.xml", "official");
}

#[test]
fn extended_reference_output_compiles() {
    reference("amqp0-9-1.extended.xml", "extended");
}
