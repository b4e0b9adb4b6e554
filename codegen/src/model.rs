//! The resolved, typed model of a spec: what the emitters (and the tests) work from.
//!
//! Everything here is a fact the XML states, checked and resolved by the generator's
//! `resolve` step: domains are replaced by their wire [`Type`], `<chassis>` by a
//! [`Direction`] and an [`Implementation`], `<response>` names by [`MethodRef`]s, and docs are
//! dedented. There is no untyped bag and no side table. Build one with [`Spec::from_xml`] or
//! [`Spec::from_file`].

use std::path::Path;

use crate::error::Error;

/// A whole spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// Protocol major version (`0`).
    pub major: u8,
    /// Protocol minor version (`9`).
    pub minor: u8,
    /// Protocol revision (`1`).
    pub revision: u8,
    /// The default TCP port, if the spec states one (`5672`).
    pub port: Option<u16>,
    /// The `comment` attribute of `<amqp>`.
    pub comment: Option<String>,
    /// Constants, reply codes included, in spec order.
    pub constants: Vec<Constant>,
    /// Domains, in spec order.
    pub domains: Vec<Domain>,
    /// Classes, in spec order.
    pub classes: Vec<Class>,
}

/// A `<constant>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constant {
    /// Spec name (`frame-min-size`).
    pub name: String,
    /// Value.
    pub value: u64,
    /// Plain constant or reply code.
    pub kind: ConstantKind,
    /// Documentation.
    pub doc: Doc,
}

/// What a constant is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConstantKind {
    /// A plain value (frame types, sizes).
    Plain,
    /// A reply code without an error class (`reply-success`: a constant whose name starts with
    /// `reply-`).
    ReplyCode,
    /// A reply code with `class="soft-error"`: closes the channel.
    SoftError,
    /// A reply code with `class="hard-error"`: closes the connection.
    HardError,
}

impl ConstantKind {
    /// Whether constants of this kind are reply codes.
    pub fn is_reply_code(self) -> bool {
        self != ConstantKind::Plain
    }
}

/// A `<domain>`: a named type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    /// Spec name (`queue-name`).
    pub name: String,
    /// The wire type it resolves to.
    pub ty: Type,
    /// The checks the spec states on its values (`<assert>`), in spec order.
    pub asserts: Vec<Assert>,
    /// Documentation.
    pub doc: Doc,
}

/// An `<assert>`: a check the spec states on the values of a domain or field, such as
/// `notnull`, `length` (with a `value`), `regexp` or `le` (against a field of another method).
///
/// Kept as stated, as facts of the spec, and not used by the emitters: RabbitMQ does not hold
/// clients to them (it takes queue and exchange names of up to 255 bytes of any UTF-8, where
/// the spec asserts 127 and a character class).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assert {
    /// The `check` attribute (`notnull`, `length`, `regexp`, `le`, ...).
    pub check: String,
    /// The `value` attribute: the length or pattern the check uses, if any.
    pub value: Option<String>,
    /// The `method` attribute: the method whose field a comparison refers to, if any.
    pub method: Option<String>,
    /// The `field` attribute: the field a comparison refers to, if any.
    pub field: Option<String>,
}

/// The AMQP wire types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Type {
    /// `bit`: packed with its neighbours, eight to an octet.
    Bit,
    /// `octet`: `u8`.
    Octet,
    /// `short`: `u16`.
    Short,
    /// `long`: `u32`.
    Long,
    /// `longlong`: `u64`.
    LongLong,
    /// `shortstr`: up to 255 bytes of UTF-8.
    ShortStr,
    /// `longstr`: bytes.
    LongStr,
    /// `table`: a field table.
    Table,
    /// `timestamp`: seconds since the epoch, 64 bits.
    Timestamp,
}

impl Type {
    /// The type named `name` in the spec, if `name` is a primitive.
    pub fn from_spec(name: &str) -> Option<Type> {
        Some(match name {
            "bit" => Type::Bit,
            "octet" => Type::Octet,
            "short" => Type::Short,
            "long" => Type::Long,
            "longlong" => Type::LongLong,
            "shortstr" => Type::ShortStr,
            "longstr" => Type::LongStr,
            "table" => Type::Table,
            "timestamp" => Type::Timestamp,
            _ => return None,
        })
    }

    /// The spec's name of the type (`shortstr`).
    pub fn spec_name(self) -> &'static str {
        match self {
            Type::Bit => "bit",
            Type::Octet => "octet",
            Type::Short => "short",
            Type::Long => "long",
            Type::LongLong => "longlong",
            Type::ShortStr => "shortstr",
            Type::LongStr => "longstr",
            Type::Table => "table",
            Type::Timestamp => "timestamp",
        }
    }
}

/// Which peer may send a method (or, for a class, which peers implement it).
///
/// `<chassis name="server">` means the server implements (receives) the method, so the client
/// sends it: `to_server`. `<chassis name="client">` means `to_client`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Direction {
    /// The client sends it to the server.
    pub to_server: bool,
    /// The server sends it to the client.
    pub to_client: bool,
}

/// How strictly a peer must implement a class or method: the `implement` attribute of a
/// `<chassis>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Implement {
    /// `MUST`.
    Must,
    /// `SHOULD`.
    Should,
    /// `MAY`.
    May,
}

/// The `implement` levels of a class's or method's `<chassis>` elements, per peer.
///
/// `None` for a peer means that no `<chassis>` names it, or that its `<chassis>` states no
/// level; [`Direction`] tells the two apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Implementation {
    /// The level of `<chassis name="server">`.
    pub server: Option<Implement>,
    /// The level of `<chassis name="client">`.
    pub client: Option<Implement>,
}

/// A `<class>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Class {
    /// Class id (`50`).
    pub id: u16,
    /// Spec name (`queue`).
    pub name: String,
    /// The `handler` attribute (`channel`, `connection`).
    pub handler: Option<String>,
    /// Which peers implement the class.
    pub direction: Direction,
    /// How strictly each peer must implement it.
    pub implementation: Implementation,
    /// Documentation, `type="grammar"` docs in [`Doc::grammar`].
    pub doc: Doc,
    /// Methods, in spec order.
    pub methods: Vec<Method>,
    /// Content properties (class-level `<field>`s), if the class has any.
    pub properties: Option<Properties>,
}

/// A `<method>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Method {
    /// Id of the class it belongs to.
    pub class_id: u16,
    /// Method id within the class.
    pub id: u16,
    /// Name of the class it belongs to (`queue`).
    pub class_name: String,
    /// Spec name (`declare-ok`).
    pub name: String,
    /// `synchronous="1"`.
    pub synchronous: bool,
    /// `content="1"`: a content header and body frames follow.
    pub carries_content: bool,
    /// `deprecated="1"`.
    pub deprecated: bool,
    /// Who may send it.
    pub direction: Direction,
    /// How strictly each peer must implement (receive) it.
    pub implementation: Implementation,
    /// The methods that answer it (its `<response>`s), in spec order.
    pub responses: Vec<MethodRef>,
    /// The methods it answers (those that list it as a `<response>`), in spec order.
    pub answers: Vec<MethodRef>,
    /// Arguments, reserved ones included, in wire order.
    pub fields: Vec<Field>,
    /// Documentation.
    pub doc: Doc,
}

impl Method {
    /// `queue.declare-ok`.
    pub fn full_name(&self) -> String {
        format!("{}.{}", self.class_name, self.name)
    }

    /// The fields as they sit on the wire: each non-bit field alone, each run of consecutive
    /// bits (reserved bits included) packed together. Indexes point into [`Method::fields`].
    pub fn layout(&self) -> Vec<Slot> {
        let mut slots: Vec<Slot> = Vec::new();
        for (i, field) in self.fields.iter().enumerate() {
            if field.ty == Type::Bit {
                if let Some(Slot::Bits(run)) = slots.last_mut() {
                    run.push(i);
                    continue;
                }
                slots.push(Slot::Bits(vec![i]));
            } else {
                slots.push(Slot::Value(i));
            }
        }
        slots
    }

    /// The `no-wait` field, if the method has one that is not reserved.
    pub fn no_wait_field(&self) -> Option<&Field> {
        self.fields
            .iter()
            .find(|f| f.name == "no-wait" && f.ty == Type::Bit && !f.reserved)
    }
}

/// A slot of a method's wire layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    /// One non-bit field (an index into [`Method::fields`]).
    Value(usize),
    /// A run of consecutive bit fields, packed eight to an octet, first bit lowest.
    Bits(Vec<usize>),
}

/// A reference to a method by ids and names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MethodRef {
    /// Class id.
    pub class_id: u16,
    /// Method id.
    pub method_id: u16,
    /// Class name.
    pub class_name: String,
    /// Method name.
    pub name: String,
}

/// A `<field>` of a method, or a content property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Spec name (`auto-delete`).
    pub name: String,
    /// The domain it was declared with, if any (reserved fields name a `type` instead).
    pub domain: Option<String>,
    /// Wire type.
    pub ty: Type,
    /// `reserved="1"`: always zero on the wire, not in the generated struct.
    pub reserved: bool,
    /// `sensitive="1"` (warren's extension): a secret that `Debug` must not show.
    pub sensitive: bool,
    /// The field's own checks (`<assert>`), in spec order; its domain's are in [`Domain::asserts`].
    pub asserts: Vec<Assert>,
    /// Documentation (the field's own, or else its domain's).
    pub doc: Doc,
}

/// The content properties of a class (`basic`): class-level `<field>`s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Properties {
    /// Id of the class.
    pub class_id: u16,
    /// Properties, in flag order (the first is bit 15 of the first flag word).
    pub fields: Vec<Field>,
}

/// Documentation of an item, from the spec.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Doc {
    /// The `label` attribute (or the element's bare text): a short phrase.
    pub label: Option<String>,
    /// The prose `<doc>`s (no `type`), each dedented and trimmed of blank edge lines.
    pub text: Vec<String>,
    /// `<doc type="grammar">`s, dedented: preformatted text.
    pub grammar: Vec<String>,
    /// `<doc>`s of any other type (`scenario`, ...), dedented.
    pub other: Vec<TypedDoc>,
    /// The `<rule>`s.
    pub rules: Vec<Rule>,
}

impl Doc {
    /// Whether there is no label and no prose.
    pub fn is_empty(&self) -> bool {
        self.label.is_none() && self.text.is_empty()
    }
}

/// A `<doc>` with a `type` attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypedDoc {
    /// The `type` attribute, `None` for prose.
    pub kind: Option<String>,
    /// The text, dedented.
    pub text: String,
}

/// A `<rule>`: a normative statement about an item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Its name, if any.
    pub name: Option<String>,
    /// The reply code a violation raises (`on-failure`), if stated.
    pub on_failure: Option<String>,
    /// Its `<doc>`s (prose, and `type="scenario"` test scenarios), dedented.
    pub docs: Vec<TypedDoc>,
}

impl Spec {
    /// Parses and resolves a spec given as text. `file_name` names it in errors.
    ///
    /// ```
    /// let xml = r#"<amqp major="0" minor="9" revision="1">
    ///   <class name="tx" index="90">
    ///     <chassis name="server" implement="MUST"/>
    ///     <method name="select" synchronous="1" index="10">
    ///       <chassis name="server" implement="MUST"/>
    ///       <response name="select-ok"/>
    ///     </method>
    ///     <method name="select-ok" synchronous="1" index="11">
    ///       <chassis name="client" implement="MUST"/>
    ///     </method>
    ///   </class>
    /// </amqp>"#;
    /// let spec = warren_codegen::model::Spec::from_xml(xml, "tx.xml")?;
    /// let select = &spec.classes[0].methods[0];
    /// assert!(select.direction.to_server && !select.direction.to_client);
    /// assert_eq!(select.responses[0].name, "select-ok");
    /// # Ok::<(), warren_codegen::Error>(())
    /// ```
    pub fn from_xml(xml: &str, file_name: &str) -> Result<Spec, Error> {
        let raw = crate::parse::parse(xml, file_name)?;
        crate::resolve::resolve(&raw)
    }

    /// Reads, parses and resolves a spec file. Errors name the path as given.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Spec, Error> {
        let path = path.as_ref();
        let xml = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        Spec::from_xml(&xml, &crate::display_path(path))
    }

    /// The class with id `id`.
    pub fn class(&self, id: u16) -> Option<&Class> {
        self.classes.iter().find(|c| c.id == id)
    }

    /// The method with ids `class_id`.`method_id`.
    pub fn method(&self, class_id: u16, method_id: u16) -> Option<&Method> {
        self.class(class_id)?
            .methods
            .iter()
            .find(|m| m.id == method_id)
    }

    /// Every method, class by class, in spec order.
    pub fn methods(&self) -> impl Iterator<Item = &Method> {
        self.classes.iter().flat_map(|c| c.methods.iter())
    }
}
