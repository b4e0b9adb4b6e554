//! The golden snapshot: `snapshots/protocol.rs` is exactly what `build.rs` generates from
//! `amqp-spec/amqp0-9-1.xml`. Reviewers read the generated API in its diff. On a mismatch
//! this prints a diff and fails; `WARREN_BLESS=1` rewrites it.

#[path = "support/expect.rs"]
mod expect;

/// The spec and options of the root `build.rs`.
const SPEC: &str = "amqp-spec/amqp0-9-1.xml";
const RUNTIME_PATH: &str = "crate::wire";

#[test]
fn snapshot_is_what_the_spec_generates() {
    let path = expect::workspace_dir().join(SPEC);
    let xml = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{SPEC} cannot be read ({e}); the snapshot test needs warren's spec ({})",
            path.display()
        )
    });
    let code = warren_codegen::Generator::new()
        .runtime_path(RUNTIME_PATH)
        .proptest_strategies(true)
        .generate_str(&xml, SPEC)
        .unwrap_or_else(|e| panic!("{e}"));
    expect::check(
        &expect::manifest_dir().join("tests/snapshots/protocol.rs"),
        &code,
    );
}

#[test]
fn build_rs_generates_with_the_same_spec_and_options() {
    let build = std::fs::read_to_string(expect::workspace_dir().join("build.rs")).unwrap();
    assert!(
        build.contains(&format!("const SPEC: &str = \"{SPEC}\";")),
        "build.rs no longer generates from {SPEC}: update this test and the snapshot"
    );
    assert!(
        build.contains(&format!(".runtime_path(\"{RUNTIME_PATH}\")")),
        "build.rs no longer uses runtime path {RUNTIME_PATH}: update this test and the snapshot"
    );
    assert!(
        build.contains(".proptest_strategies(true)"),
        "build.rs no longer emits the proptest strategies: update this test and the snapshot"
    );
    assert!(build.contains("write_if_changed(SPEC"));
    assert!(build.contains("cargo:rerun-if-changed=amqp-spec"));
}
