//! warren-codegen turns the AMQP 0-9-1 XML specification into Rust: a struct per method
//! with its codec, the `Method` and `Class` enums with encode/decode dispatch, content
//! properties, constants and reply codes. It is how [warren] gets its `protocol` module, and
//! it works for any spec in the standard AMQP XML schema, the official
//! `amqp0-9-1.xml` and RabbitMQ's `amqp0-9-1.extended.xml` included, unchanged.
//!
//! [warren]: https://github.com/warren-amqp/warren
//!
//! # Using it from `build.rs`
//!
//! Add the generator as a build dependency:
//!
//! ```toml
//! [build-dependencies]
//! warren-codegen = { path = "codegen" }
//! ```
//!
//! Generate into `OUT_DIR` in `build.rs`. [`Generator::write_if_changed`] leaves the output
//! untouched (and its modification time with it) when nothing changed, so the crate is not
//! rebuilt for nothing. A broken spec is an [`Error`] that names file, line and column:
//! print it and fail the build.
//!
//! ```no_run
//! // build.rs
//! use std::path::PathBuf;
//!
//! fn main() {
//!     // Paths are relative to the package root, where cargo runs build scripts. The path
//!     // appears in the generated header and in error messages.
//!     let spec = "amqp-spec/amqp0-9-1.xml";
//!     println!("cargo:rerun-if-changed={spec}");
//!     let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap()).join("protocol.rs");
//!     if let Err(error) = warren_codegen::Generator::new()
//!         .runtime_path("crate::wire")
//!         .write_if_changed(spec, &out)
//!     {
//!         eprintln!("error: {error}");
//!         std::process::exit(1);
//!     }
//! }
//! ```
//!
//! Then include the result in a module of its own, next to the runtime module the generated
//! code uses (see [`Generator::runtime_path`]):
//!
//! ```text
//! // src/protocol.rs
//! //! AMQP 0-9-1 methods, properties and constants, generated from the specification.
//! include!(concat!(env!("OUT_DIR"), "/protocol.rs"));
//! ```
//!
//! The generated file has no inner attributes (it is `include!`d), passes
//! `#![deny(missing_docs)]` and `clippy -D warnings`, and documents every item from the
//! spec's `<doc>`s plus facts the generator states (who sends a method, what answers it,
//! its wire id).
//!
//! # What the generated code needs from the runtime
//!
//! The generated code reaches the runtime through one path, by default `crate::wire`, and
//! uses from it: `ShortString`, `LongString`, `FieldTable`, `Timestamp`, `Reader` (`octet`,
//! `short`, `long`, `longlong`, `timestamp`, `short_string`, `long_string`, `table`,
//! `bits::<N>`, `skip(WireType)`), `Writer<'_>` (the same names taking values, `bits([bool; N])`,
//! `zero(WireType)`), `WireType`, `DecodeError` (`UnknownMethod { class, method }`,
//! `UnknownProperty { class, index }`), `MethodId::new`, `Direction`, and the traits
//! `AmqpMethod` and `ContentProperties`. warren's `client/wire` is that runtime.
//!
//! # From the command line
//!
//! ```text
//! cargo run -p warren-codegen -- amqp-spec/amqp0-9-1.xml -o protocol.rs
//! cargo run -p warren-codegen -- amqp-spec/amqp0-9-1.xml --proptest-strategies \
//!     --check codegen/tests/snapshots/protocol.rs
//! ```
//!
//! `--check` exits with status 1 and a diff summary when the file is not what the spec
//! generates with the options given; `--runtime-path` and `--proptest-strategies` are
//! [`Generator::runtime_path`] and [`Generator::proptest_strategies`]. warren's snapshot holds
//! what its `build.rs` generates, strategies included, hence the flag.
//!
//! # Pipeline
//!
//! `parse` (quick-xml to raw structs with line:column) → `resolve` (checks, domains to wire
//! types, bit runs, chassis to [`model::Direction`], response links) → [`model`] → `emit`
//! (`quote!`) → `syn` + `prettyplease` with a `// @generated` header. Names follow fixed rules
//! (`queue.declare-ok` → `QueueDeclareOk`, `auto-delete` → `auto_delete`, field `type` →
//! `kind`, `frame-min-size` → `FRAME_MIN_SIZE`).

#![deny(missing_docs)]

pub mod diff;
mod emit;
mod error;
mod format;
pub mod model;
mod names;
mod parse;
mod resolve;

use std::path::Path;

pub use error::{Error, Location};

/// The default path of the runtime facade in generated code.
pub const DEFAULT_RUNTIME_PATH: &str = "crate::wire";

/// Generates Rust from an AMQP XML spec. Build one with [`Generator::new`], adjust it with
/// the setters, then call [`generate_str`](Generator::generate_str),
/// [`generate_file`](Generator::generate_file) or
/// [`write_if_changed`](Generator::write_if_changed).
///
/// ```
/// let xml = r#"<amqp major="0" minor="9" revision="1" port="5672">
///   <domain name="bit" type="bit"/>
///   <class name="tx" index="90">
///     <method name="select" synchronous="1" index="10">
///       <chassis name="server" implement="MUST"/>
///       <response name="select-ok"/>
///     </method>
///     <method name="select-ok" synchronous="1" index="11">
///       <chassis name="client" implement="MUST"/>
///     </method>
///   </class>
/// </amqp>"#;
/// let code = warren_codegen::Generator::new().generate_str(xml, "tx.xml")?;
/// assert!(code.starts_with("// @generated by warren-codegen from tx.xml. Do not edit."));
/// assert!(code.contains("pub struct TxSelectOk;"));
/// assert!(code.contains("impl Request for TxSelect {"));
/// # Ok::<(), warren_codegen::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Generator {
    runtime_path: String,
    proptest_strategies: bool,
}

impl Default for Generator {
    fn default() -> Self {
        Self::new()
    }
}

impl Generator {
    /// A generator with the default options: runtime path [`DEFAULT_RUNTIME_PATH`].
    pub fn new() -> Self {
        Self {
            runtime_path: DEFAULT_RUNTIME_PATH.to_owned(),
            proptest_strategies: false,
        }
    }

    /// Sets the path through which generated code reaches the runtime facade (the `wire`
    /// module: readers, writers, strings, tables, `DecodeError`, the `AmqpMethod` trait).
    /// Default: `crate::wire`.
    ///
    /// The generated file starts with `use <path>;` (or `use <path> as wire;` when the last
    /// segment is not `wire`) and names everything as `wire::...`. An invalid path is an
    /// [`Error::InvalidRuntimePath`] when generating.
    ///
    /// ```
    /// let mut generator = warren_codegen::Generator::new();
    /// generator.runtime_path("::warren::wire");
    /// # let xml = r#"<amqp major="0" minor="9" revision="1"><class name="c" index="1">
    /// #   <method name="m" index="1"><chassis name="server"/></method></class></amqp>"#;
    /// let code = generator.generate_str(xml, "spec.xml")?;
    /// assert!(code.contains("use ::warren::wire;"));
    /// # Ok::<(), warren_codegen::Error>(())
    /// ```
    pub fn runtime_path(&mut self, path: impl Into<String>) -> &mut Self {
        self.runtime_path = path.into();
        self
    }

    /// Also emits `#[cfg(test)] pub(crate) mod strategies`: a proptest strategy for every
    /// method struct and every properties struct, `strategies::method()` for any one `Method`,
    /// and `strategies::every_method()` for one value of each method, so the runtime crate's
    /// tests can round-trip every method in every case. Off by default.
    ///
    /// The module is only compiled in the runtime crate's `cfg(test)` builds, where it needs
    /// `proptest` (a dev-dependency) and `wire::arbitrary::{short_string, long_string, table,
    /// timestamp}` strategies from the runtime.
    ///
    /// ```
    /// let mut generator = warren_codegen::Generator::new();
    /// generator.proptest_strategies(true);
    /// # let xml = r#"<amqp major="0" minor="9" revision="1"><class name="c" index="1">
    /// #   <method name="m" index="1"><chassis name="server"/></method></class></amqp>"#;
    /// let code = generator.generate_str(xml, "spec.xml")?;
    /// assert!(code.contains("pub(crate) mod strategies"));
    /// # Ok::<(), warren_codegen::Error>(())
    /// ```
    pub fn proptest_strategies(&mut self, enabled: bool) -> &mut Self {
        self.proptest_strategies = enabled;
        self
    }

    /// Generates the Rust file for a spec given as text. `file_name` is used in the
    /// `@generated` header and in error locations.
    ///
    /// ```
    /// let broken = "<amqp major=\"0\" minor=\"9\" revision=\"1\">\n  <class name=\"c\"/>\n</amqp>";
    /// let error = warren_codegen::Generator::new().generate_str(broken, "broken.xml").unwrap_err();
    /// assert_eq!(
    ///     error.to_string(),
    ///     "broken.xml:2:3: <class name=\"c\">: missing required attribute `index`"
    /// );
    /// ```
    pub fn generate_str(&self, xml: &str, file_name: &str) -> Result<String, Error> {
        let runtime: syn::Path =
            syn::parse_str(&self.runtime_path).map_err(|_| Error::InvalidRuntimePath {
                path: self.runtime_path.clone(),
            })?;
        let spec = model::Spec::from_xml(xml, file_name)?;
        let tokens = emit::file(&spec, &runtime, self.proptest_strategies);
        format::format(tokens, file_name)
    }

    /// Reads a spec file and generates its Rust file. The path, as given, is used in the
    /// header and in error locations, so pass it relative to the package (build scripts run
    /// in the package root) to keep the output the same on every machine.
    ///
    /// ```no_run
    /// let code = warren_codegen::Generator::new().generate_file("amqp-spec/amqp0-9-1.xml")?;
    /// println!("{code}");
    /// # Ok::<(), warren_codegen::Error>(())
    /// ```
    pub fn generate_file(&self, spec_path: impl AsRef<Path>) -> Result<String, Error> {
        let path = spec_path.as_ref();
        let xml = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        self.generate_str(&xml, &display_path(path))
    }

    /// Generates from `spec_path` and writes the result to `out_path`, unless the file
    /// already holds exactly that: then it is left alone, modification time included, so
    /// cargo does not rebuild what depends on it. Returns whether the file was written.
    ///
    /// ```no_run
    /// let out = std::path::Path::new(&std::env::var_os("OUT_DIR").unwrap()).join("protocol.rs");
    /// warren_codegen::Generator::new().write_if_changed("amqp-spec/amqp0-9-1.xml", &out)?;
    /// # Ok::<(), warren_codegen::Error>(())
    /// ```
    pub fn write_if_changed(
        &self,
        spec_path: impl AsRef<Path>,
        out_path: impl AsRef<Path>,
    ) -> Result<bool, Error> {
        let code = self.generate_file(spec_path)?;
        let out = out_path.as_ref();
        if std::fs::read(out).is_ok_and(|old| old == code.as_bytes()) {
            return Ok(false);
        }
        std::fs::write(out, code).map_err(|source| Error::Io {
            path: out.to_owned(),
            source,
        })?;
        Ok(true)
    }
}

/// A path as text with `/` separators, for headers and locations.
pub(crate) fn display_path(path: &Path) -> String {
    path.to_string_lossy().replace('\\', "/")
}
