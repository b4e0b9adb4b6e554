//! Generates `$OUT_DIR/protocol.rs` from `amqp-spec/amqp0-9-1.xml` with warren-codegen; the
//! `protocol` module (`client/protocol.rs`) includes it.

use std::path::PathBuf;
use std::process::ExitCode;

/// The spec, relative to the package root (where cargo runs build scripts). The same path
/// names the spec in the generated header and in errors, and the codegen snapshot test
/// (`codegen/tests/snapshot.rs`) generates with it too, so the snapshot is this output.
const SPEC: &str = "amqp-spec/amqp0-9-1.xml";

fn main() -> ExitCode {
    println!("cargo:rerun-if-changed=amqp-spec");
    println!("cargo:rerun-if-changed={SPEC}");
    let Some(out_dir) = std::env::var_os("OUT_DIR") else {
        eprintln!("error: OUT_DIR is not set; build.rs must run under cargo");
        return ExitCode::FAILURE;
    };
    let out = PathBuf::from(out_dir).join("protocol.rs");
    match warren_codegen::Generator::new()
        .runtime_path("crate::wire")
        .proptest_strategies(true)
        .write_if_changed(SPEC, &out)
    {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: cannot generate the protocol code from {SPEC}:\n{error}");
            ExitCode::FAILURE
        }
    }
}
