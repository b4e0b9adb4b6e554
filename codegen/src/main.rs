//! `warren-codegen`: generate Rust from an AMQP XML spec, or check that a file is up to date.

use std::path::PathBuf;
use std::process::ExitCode;

use warren_codegen::Generator;

const USAGE: &str = "\
warren-codegen: generate Rust from an AMQP 0-9-1 XML specification

USAGE:
    warren-codegen SPEC.xml [-o FILE] [--runtime-path PATH] [--proptest-strategies]
    warren-codegen SPEC.xml --check FILE [--runtime-path PATH] [--proptest-strategies]

ARGS:
    SPEC.xml               the spec, in the AMQP XML schema; its path as given appears in the
                           generated header, so give it relative to the package root

OPTIONS:
    -o, --output FILE      write the generated code to FILE (only if it changed);
                           without -o or --check, print it to standard output
    --check FILE           do not write: exit 1 with a diff summary if FILE is not exactly
                           what SPEC.xml generates
    --runtime-path PATH    the path generated code uses for the runtime facade
                           [default: crate::wire]
    --proptest-strategies  also emit the test-only `strategies` module (warren's build.rs
                           does, so its snapshot needs this flag)
    -h, --help             print this help
    -V, --version          print the version

EXAMPLES:
    cargo run -p warren-codegen -- amqp-spec/amqp0-9-1.xml -o protocol.rs
    cargo run -p warren-codegen -- amqp-spec/amqp0-9-1.xml --proptest-strategies \\
        --check codegen/tests/snapshots/protocol.rs
";

/// What the command line asks for.
#[derive(Debug, PartialEq)]
struct Args {
    spec: PathBuf,
    output: Option<PathBuf>,
    check: Option<PathBuf>,
    runtime_path: Option<String>,
    proptest_strategies: bool,
}

enum Parsed {
    Run(Args),
    Help,
    Version,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Parsed, String> {
    let mut spec = None;
    let mut output = None;
    let mut check = None;
    let mut runtime_path = None;
    let mut proptest_strategies = false;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "-V" | "--version" => return Ok(Parsed::Version),
            "-o" | "--output" => output = Some(PathBuf::from(value(&arg)?)),
            "--check" => check = Some(PathBuf::from(value(&arg)?)),
            "--runtime-path" => runtime_path = Some(value(&arg)?),
            "--proptest-strategies" => proptest_strategies = true,
            _ if arg.starts_with('-') && arg != "-" => {
                return Err(format!("unknown option `{arg}`"));
            }
            _ if spec.is_none() => spec = Some(PathBuf::from(arg)),
            _ => {
                return Err(format!(
                    "unexpected argument `{arg}`: only one spec at a time"
                ));
            }
        }
    }
    let spec = spec.ok_or("missing the spec file")?;
    if output.is_some() && check.is_some() {
        return Err("-o and --check exclude each other".into());
    }
    Ok(Parsed::Run(Args {
        spec,
        output,
        check,
        runtime_path,
        proptest_strategies,
    }))
}

fn run(args: Args) -> Result<ExitCode, String> {
    let mut generator = Generator::new();
    if let Some(path) = &args.runtime_path {
        generator.runtime_path(path.clone());
    }
    generator.proptest_strategies(args.proptest_strategies);
    if let Some(out) = &args.output {
        let written = generator
            .write_if_changed(&args.spec, out)
            .map_err(|e| e.to_string())?;
        let what = if written { "wrote" } else { "unchanged:" };
        eprintln!("{what} {}", out.display());
        return Ok(ExitCode::SUCCESS);
    }
    let code = generator
        .generate_file(&args.spec)
        .map_err(|e| e.to_string())?;
    let Some(check) = &args.check else {
        print!("{code}");
        return Ok(ExitCode::SUCCESS);
    };
    let current =
        std::fs::read_to_string(check).map_err(|e| format!("{}: {e}", check.display()))?;
    match warren_codegen::diff::unified(
        &current,
        &code,
        &check.display().to_string(),
        &format!("generated from {}", args.spec.display()),
        80,
    ) {
        None => {
            eprintln!("{} is up to date", check.display());
            Ok(ExitCode::SUCCESS)
        }
        Some(diff) => {
            eprintln!(
                "error: {} is out of date with {}: {}\nregenerate with: cargo run -p warren-codegen -- {} -o {}{}\n\n{diff}",
                check.display(),
                args.spec.display(),
                diff.lines().next().unwrap_or_default(),
                args.spec.display(),
                check.display(),
                options(&args),
            );
            Ok(ExitCode::from(1))
        }
    }
}

/// The generation options of `args`, as command-line arguments (for the regenerate hint).
fn options(args: &Args) -> String {
    let mut out = String::new();
    if let Some(path) = &args.runtime_path {
        out.push_str(&format!(" --runtime-path {path}"));
    }
    if args.proptest_strategies {
        out.push_str(" --proptest-strategies");
    }
    out
}

fn main() -> ExitCode {
    match parse_args(std::env::args().skip(1)) {
        Ok(Parsed::Help) => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Ok(Parsed::Version) => {
            println!("warren-codegen {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Ok(Parsed::Run(args)) => match run(args) {
            Ok(code) => code,
            Err(message) => {
                eprintln!("error: {message}");
                ExitCode::from(2)
            }
        },
        Err(message) => {
            eprintln!("error: {message}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Parsed, String> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn parses_spec_output_and_check() {
        let Ok(Parsed::Run(args)) = parse(&["spec.xml", "-o", "out.rs"]) else {
            panic!("expected a run");
        };
        assert_eq!(args.spec, PathBuf::from("spec.xml"));
        assert_eq!(args.output, Some(PathBuf::from("out.rs")));
        let Ok(Parsed::Run(args)) = parse(&[
            "--check",
            "snap.rs",
            "spec.xml",
            "--runtime-path",
            "x::wire",
        ]) else {
            panic!("expected a run");
        };
        assert_eq!(args.check, Some(PathBuf::from("snap.rs")));
        assert_eq!(args.runtime_path.as_deref(), Some("x::wire"));
        assert!(!args.proptest_strategies);
        let Ok(Parsed::Run(args)) = parse(&["spec.xml", "--proptest-strategies"]) else {
            panic!("expected a run");
        };
        assert!(args.proptest_strategies);
        assert_eq!(options(&args), " --proptest-strategies");
    }

    #[test]
    fn rejects_bad_command_lines() {
        assert!(parse(&[]).is_err());
        assert!(parse(&["a.xml", "b.xml"]).is_err());
        assert!(parse(&["a.xml", "--frob"]).is_err());
        assert!(parse(&["a.xml", "-o"]).is_err());
        assert!(parse(&["a.xml", "-o", "x", "--check", "y"]).is_err());
        assert!(matches!(parse(&["--help"]), Ok(Parsed::Help)));
    }
}
