//! The generator's one error type: every way a spec can be broken, with the place it is broken.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// A position in a spec file: file name as given to the generator, 1-based line and column.
///
/// The column counts characters (not bytes) from the start of the line, and points at the `<`
/// of the element concerned.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    /// The spec's file name, as passed to [`Generator::generate_str`](crate::Generator::generate_str)
    /// or the path given to [`Generator::generate_file`](crate::Generator::generate_file).
    pub file: Arc<str>,
    /// 1-based line.
    pub line: u32,
    /// 1-based column, in characters.
    pub column: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// Why a spec could not be turned into Rust.
///
/// Every variant that points into the spec (see [`Error::location`]) names the place (`at`)
/// and the element concerned, written like `<method name="declare">` (for
/// [`Error::NoRoot`], what was found instead of `<amqp>`). `Display` prints
/// `file:line:column: element: what is wrong`, the shape compilers use, so editors and CI
/// logs link to the spot. The others are [`Error::Io`], [`Error::InvalidRuntimePath`] and
/// [`Error::Internal`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The spec file could not be read, or the output file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The file is not well-formed XML (unclosed or mismatched tag, bad attribute syntax,
    /// unknown entity, ...).
    #[error("{at}: {element}: malformed XML: {message}")]
    Xml {
        /// Where the XML parser stopped.
        at: Location,
        /// The innermost element open there (`<method name="declare">`), the element whose
        /// tag is malformed, or `the document` outside any element.
        element: String,
        /// The XML parser's description.
        message: String,
    },
    /// The document has no `<amqp>` root element.
    #[error("{at}: the root element must be <amqp>, found {found}")]
    NoRoot {
        /// Where the root element (or the end of the file) is.
        at: Location,
        /// What was found instead: an element name, or `end of file`.
        found: String,
    },
    /// An element the AMQP schema does not have, or one in a place the schema does not allow
    /// (a `<method>` outside a `<class>`, a `<response>` in a `<field>`).
    #[error("{at}: <{element}> is not allowed inside <{parent}>")]
    UnexpectedElement {
        /// Where the element starts.
        at: Location,
        /// The element's name.
        element: String,
        /// The enclosing element's name.
        parent: String,
    },
    /// Text inside an element that holds no text (`<chassis>`, `<response>`, `<assert>`, `<amqp>`).
    #[error("{at}: {element}: unexpected text {text:?}")]
    UnexpectedText {
        /// Where the enclosing element starts.
        at: Location,
        /// The enclosing element.
        element: String,
        /// The text, trimmed.
        text: String,
    },
    /// An element lacks an attribute the schema requires (`name`, `index`, `value`, ...).
    #[error("{at}: {element}: missing required attribute `{attribute}`")]
    MissingAttribute {
        /// Where the element starts.
        at: Location,
        /// The element.
        element: String,
        /// The missing attribute.
        attribute: &'static str,
    },
    /// A numeric attribute (`index`, `value`, `major`, `port`, ...) is not a number, or does not
    /// fit its type.
    #[error("{at}: {element}: `{attribute}=\"{value}\"` is not a number in 0..={max}")]
    InvalidNumber {
        /// Where the element starts.
        at: Location,
        /// The element.
        element: String,
        /// The attribute.
        attribute: &'static str,
        /// Its value as written.
        value: String,
        /// The largest value allowed.
        max: u64,
    },
    /// An attribute has a value outside its enumeration (`reserved="yes"`, `<chassis name="broker">`,
    /// `class="medium-error"`).
    #[error("{at}: {element}: `{attribute}=\"{value}\"` is not one of {expected}")]
    InvalidAttribute {
        /// Where the element starts.
        at: Location,
        /// The element.
        element: String,
        /// The attribute.
        attribute: &'static str,
        /// Its value as written.
        value: String,
        /// The values allowed, for the message.
        expected: &'static str,
    },
    /// A name that cannot be made into a Rust identifier (empty, or with characters other than
    /// ASCII letters, digits, `-`, `_` and spaces).
    #[error(
        "{at}: {element}: name {name:?} is not a valid spec name (ASCII letters, digits, '-', '_' and ' ' only)"
    )]
    InvalidName {
        /// Where the element starts.
        at: Location,
        /// The element.
        element: String,
        /// The name as written.
        name: String,
    },
    /// A field (or domain) names a domain the spec does not declare.
    #[error("{at}: {element}: unknown domain `{domain}`")]
    UnknownDomain {
        /// Where the element starts.
        at: Location,
        /// The element.
        element: String,
        /// The domain name as written.
        domain: String,
    },
    /// A domain (or a reserved field's `type`) names a type that is neither an AMQP primitive
    /// nor a declared domain.
    #[error(
        "{at}: {element}: unknown type `{type_name}` (expected bit, octet, short, long, longlong, shortstr, longstr, table or timestamp)"
    )]
    UnknownType {
        /// Where the element starts.
        at: Location,
        /// The element.
        element: String,
        /// The type name as written.
        type_name: String,
    },
    /// Domains that are defined in terms of each other in a circle.
    #[error("{at}: {element}: domain `{domain}` is defined in terms of itself")]
    DomainCycle {
        /// Where the domain starts.
        at: Location,
        /// The element.
        element: String,
        /// The domain on the cycle.
        domain: String,
    },
    /// A field has both `domain` and `type`, or neither.
    #[error("{at}: {element}: a field needs exactly one of `domain` and `type`")]
    FieldType {
        /// Where the field starts.
        at: Location,
        /// The element.
        element: String,
    },
    /// A `bit` used where AMQP 0-9-1 has no way to encode it: as a content property (a
    /// property is an optional value behind a presence flag) or as a constant's type.
    #[error("{at}: {element}: domain `{domain}` is a bit, which is not allowed here ({reason})")]
    BitNotAllowed {
        /// Where the element starts.
        at: Location,
        /// The element.
        element: String,
        /// The bit-typed domain.
        domain: String,
        /// Why not here.
        reason: &'static str,
    },
    /// `reserved="1"` on a content property: a property is absent or present, never reserved.
    #[error("{at}: {element}: content properties cannot be reserved")]
    ReservedProperty {
        /// Where the property starts.
        at: Location,
        /// The element.
        element: String,
    },
    /// Two classes (or two methods of a class) share an index.
    #[error("{at}: {element}: {kind} index {index} is already used by `{first_name}` at {first}")]
    DuplicateIndex {
        /// Where the second one starts.
        at: Location,
        /// The second element.
        element: String,
        /// `class` or `method`.
        kind: &'static str,
        /// The index both use.
        index: u16,
        /// The name of the first one.
        first_name: String,
        /// Where the first one starts.
        first: Location,
    },
    /// Two items of the same kind and scope share a name, or two names turn into the same Rust
    /// identifier (`auto-delete` and `auto_delete`; `type` and `kind`).
    #[error("{at}: {element}: {kind} name `{name}` is already used at {first}")]
    DuplicateName {
        /// Where the second one starts.
        at: Location,
        /// The second element.
        element: String,
        /// What kind of name: `class`, `method`, `field`, `domain`, `constant`, `chassis` (two
        /// `<chassis>` for one peer), or `Rust item` (a generated identifier).
        kind: &'static str,
        /// The name (for `Rust item`, the identifier).
        name: String,
        /// Where the first one starts.
        first: Location,
    },
    /// A `<response name="...">` names no method of its class.
    #[error("{at}: {element}: response `{response}` names no method of class `{class}`")]
    DanglingResponse {
        /// Where the `<response>` starts.
        at: Location,
        /// The method that has the response.
        element: String,
        /// The class searched.
        class: String,
        /// The response name as written.
        response: String,
    },
    /// A `<response>` on a method not marked `synchronous="1"`.
    #[error("{at}: {element}: has a <response> but is not synchronous=\"1\"")]
    ResponseNotSynchronous {
        /// Where the method starts.
        at: Location,
        /// The method.
        element: String,
    },
    /// A method with no `<chassis>`: nobody may send it.
    #[error("{at}: {element}: no <chassis> says which peer receives this method")]
    NoChassis {
        /// Where the method starts.
        at: Location,
        /// The method.
        element: String,
    },
    /// [`Generator::runtime_path`](crate::Generator::runtime_path) was given something that
    /// is not a Rust path.
    #[error("runtime path `{path}` is not a Rust path (expected something like `crate::wire`)")]
    InvalidRuntimePath {
        /// The path as given.
        path: String,
    },
    /// The generated code did not parse as Rust. This is a bug in the generator, not in the
    /// spec; please report it with the spec.
    #[error("internal error: the generated code does not parse: {message}")]
    Internal {
        /// The parser's message.
        message: String,
    },
}

impl Error {
    /// The place in the spec the error points at, if it points at one.
    pub fn location(&self) -> Option<&Location> {
        match self {
            Error::Io { .. } | Error::InvalidRuntimePath { .. } | Error::Internal { .. } => None,
            Error::Xml { at, .. }
            | Error::NoRoot { at, .. }
            | Error::UnexpectedElement { at, .. }
            | Error::UnexpectedText { at, .. }
            | Error::MissingAttribute { at, .. }
            | Error::InvalidNumber { at, .. }
            | Error::InvalidAttribute { at, .. }
            | Error::InvalidName { at, .. }
            | Error::UnknownDomain { at, .. }
            | Error::UnknownType { at, .. }
            | Error::DomainCycle { at, .. }
            | Error::FieldType { at, .. }
            | Error::BitNotAllowed { at, .. }
            | Error::ReservedProperty { at, .. }
            | Error::DuplicateIndex { at, .. }
            | Error::DuplicateName { at, .. }
            | Error::DanglingResponse { at, .. }
            | Error::ResponseNotSynchronous { at, .. }
            | Error::NoChassis { at, .. } => Some(at),
        }
    }
}
