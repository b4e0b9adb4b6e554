//! Comparing generated output with checked-in expectations, bindgen style: a mismatch fails
//! with a diff, and only `WARREN_BLESS=1` rewrites an expectation.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// `codegen/`.
pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The workspace root (`codegen/..`).
pub fn workspace_dir() -> PathBuf {
    manifest_dir().join("..")
}

/// `codegen/tests/fixtures/`.
pub fn fixtures_dir() -> PathBuf {
    manifest_dir().join("tests/fixtures")
}

/// The shared reference specs (`../shared/reference` beside the workspace), if present.
///
/// Absent, the tests that need them print a note and pass, so that the crate's tests run
/// outside warren's checkout; with `WARREN_REQUIRE_REFERENCE=1` (for CI, where the folder
/// exists) an absent or incomplete folder fails them instead.
pub fn reference_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/reference"
    ));
    let complete = ["amqp0-9-1.xml", "amqp0-9-1.extended.xml"]
        .iter()
        .all(|name| dir.join(name).is_file());
    if !complete && std::env::var_os("WARREN_REQUIRE_REFERENCE").is_some_and(|v| v == "1") {
        panic!(
            "WARREN_REQUIRE_REFERENCE=1 but {} does not hold amqp0-9-1.xml and amqp0-9-1.extended.xml",
            dir.display()
        );
    }
    complete.then_some(dir)
}

/// Says that the running test skips for want of the reference specs, past the test harness's
/// output capture, as `SKIPPED reference: <test>: <reason>` (the line warren's
/// `scripts/test.sh` counts).
pub fn skip_without_reference() {
    use std::io::Write;
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("unnamed-test");
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED reference: {test}: ../shared/reference (the official AMQP spec files) is absent"
    );
}

/// Whether `WARREN_BLESS=1` asks to rewrite expectations.
pub fn blessing() -> bool {
    std::env::var_os("WARREN_BLESS").is_some_and(|v| v == "1")
}

/// Compares `actual` with the file at `expected`. Under `WARREN_BLESS=1` writes `actual` there
/// instead. Otherwise a missing file or a difference fails the test with a readable diff; the
/// file is never touched.
pub fn check(expected: &Path, actual: &str) {
    if blessing() {
        let unchanged = std::fs::read_to_string(expected).is_ok_and(|old| old == actual);
        if !unchanged {
            std::fs::write(expected, actual)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", expected.display()));
            eprintln!("blessed {}", expected.display());
        }
        return;
    }
    let Ok(old) = std::fs::read_to_string(expected) else {
        panic!(
            "{} does not exist; review the output, then create it with WARREN_BLESS=1 cargo test -p warren-codegen",
            expected.display()
        );
    };
    if let Some(diff) = warren_codegen::diff::unified(
        &old,
        actual,
        &expected.display().to_string(),
        "generated",
        200,
    ) {
        panic!(
            "generated code differs from {}: {}\n\
             If the change is intended, review it and rerun with WARREN_BLESS=1.\n\n{diff}",
            expected.display(),
            diff.lines().next().unwrap_or_default()
        );
    }
}
