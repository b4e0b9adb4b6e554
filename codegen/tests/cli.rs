//! The `warren-codegen` binary: generation, `--check` with its diff summary, `--help`, and
//! errors with their location.

#[path = "support/expect.rs"]
mod expect;

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_warren-codegen"))
        .args(args)
        .current_dir(expect::fixtures_dir())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn temp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("warren-codegen-cli-{}-{name}", std::process::id()))
}

#[test]
fn prints_the_generated_code() {
    let out = run(&["one_class.xml"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let expected = std::fs::read_to_string(expect::fixtures_dir().join("one_class.rs")).unwrap();
    assert_eq!(text(&out.stdout), expected);
}

#[test]
fn writes_only_when_changed() {
    let path = temp("out.rs");
    let _ = std::fs::remove_file(&path);
    let p = path.to_str().unwrap();
    let first = run(&["one_class.xml", "-o", p]);
    assert!(first.status.success());
    assert!(
        text(&first.stderr).starts_with("wrote "),
        "{}",
        text(&first.stderr)
    );
    let second = run(&["one_class.xml", "-o", p]);
    assert!(
        text(&second.stderr).starts_with("unchanged: "),
        "{}",
        text(&second.stderr)
    );
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn check_passes_on_an_up_to_date_file_and_fails_with_a_diff_on_drift() {
    let ok = run(&["keywords.xml", "--check", "keywords.rs"]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert!(text(&ok.stderr).contains("is up to date"));

    let stale = temp("stale.rs");
    let current = std::fs::read_to_string(expect::fixtures_dir().join("keywords.rs")).unwrap();
    std::fs::write(&stale, current.replace("pub r#match:", "pub matches:")).unwrap();
    let out = run(&["keywords.xml", "--check", stale.to_str().unwrap()]);
    std::fs::remove_file(&stale).unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("is out of date with keywords.xml: 1 line(s) removed, 1 added"),
        "{err}"
    );
    assert!(
        err.contains("-    pub matches: wire::ShortString,"),
        "{err}"
    );
    assert!(
        err.contains("+    pub r#match: wire::ShortString,"),
        "{err}"
    );
    assert!(
        err.contains("regenerate with: cargo run -p warren-codegen -- keywords.xml -o"),
        "{err}"
    );
}

#[test]
fn a_broken_spec_reports_its_location() {
    let out = run(&["broken/unknown_domain.xml"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "error: broken/unknown_domain.xml:7:7: <field name=\"tag\"> of c.m: unknown domain `consumer-tag`\n"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn help_and_usage_errors() {
    let help = run(&["--help"]);
    assert!(help.status.success());
    assert!(text(&help.stdout).contains("--check FILE"));
    let bad = run(&["--frobnicate"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("unknown option `--frobnicate`"));
}

/// The command README.md and the crate docs give for checking warren's snapshot works.
#[test]
fn check_of_warrens_snapshot_with_build_rs_options() {
    let out = Command::new(env!("CARGO_BIN_EXE_warren-codegen"))
        .args([
            "amqp-spec/amqp0-9-1.xml",
            "--proptest-strategies",
            "--check",
            "codegen/tests/snapshots/protocol.rs",
        ])
        .current_dir(expect::workspace_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Without the strategies, the snapshot is not what the spec generates, and the hint
    // says how to regenerate it with the options given.
    let out = Command::new(env!("CARGO_BIN_EXE_warren-codegen"))
        .args([
            "amqp-spec/amqp0-9-1.xml",
            "--check",
            "codegen/tests/snapshots/protocol.rs",
        ])
        .current_dir(expect::workspace_dir())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let out = run(&[
        "keywords.xml",
        "--runtime-path",
        "crate::codec",
        "--check",
        "keywords.rs",
    ]);
    assert!(
        text(&out.stderr).contains("-o keywords.rs --runtime-path crate::codec\n"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn runtime_path_option() {
    let out = run(&["one_class.xml", "--runtime-path", "::warren::wire"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("\nuse ::warren::wire;\n"));
    let out = run(&["one_class.xml", "--runtime-path", "crate::codec"]);
    assert!(text(&out.stdout).contains("\nuse crate::codec as wire;\n"));
}
