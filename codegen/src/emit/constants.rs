//! Constants: `pub const`s for plain values, the protocol version, header and port, and the
//! `ReplyCode` newtype with a named constant per reply code.

use proc_macro2::{Literal, TokenStream};
use quote::quote;

use crate::emit::Docs;
use crate::model::{Constant, ConstantKind, Spec};
use crate::names;

pub(crate) fn emit(spec: &Spec) -> TokenStream {
    let plain = spec
        .constants
        .iter()
        .filter(|c| c.kind == ConstantKind::Plain)
        .map(plain_constant);
    let version = version(spec);
    let reply_code = reply_code(spec);
    quote! {
        #(#plain)*
        #version
        #reply_code
    }
}

/// The smallest unsigned type that holds `value`, and the literal.
fn typed_literal(value: u64) -> (TokenStream, Literal) {
    if let Ok(v) = u8::try_from(value) {
        (quote!(u8), Literal::u8_unsuffixed(v))
    } else if let Ok(v) = u16::try_from(value) {
        (quote!(u16), Literal::u16_unsuffixed(v))
    } else if let Ok(v) = u32::try_from(value) {
        (quote!(u32), Literal::u32_unsuffixed(v))
    } else {
        (quote!(u64), Literal::u64_unsuffixed(value))
    }
}

fn constant_docs(c: &Constant) -> Docs {
    let mut docs = Docs::new();
    if let Some(label) = &c.doc.label {
        docs.label(label);
    }
    for text in &c.doc.text {
        docs.prose(text);
    }
    docs
}

fn plain_constant(c: &Constant) -> TokenStream {
    let mut docs = constant_docs(c);
    if docs.is_empty() {
        docs.sentence(format!(
            "The value the specification names `{}`: {}.",
            c.name, c.value
        ));
    } else {
        docs.sentence(format!("`{}` in the specification.", c.name));
    }
    let docs = docs.tokens();
    let name = names::ident(&names::constant(&c.name));
    let (ty, value) = typed_literal(c.value);
    quote! {
        #docs
        pub const #name: #ty = #value;
    }
}

fn version(spec: &Spec) -> TokenStream {
    let (major, minor, revision) = (spec.major, spec.minor, spec.revision);
    let (ma, mi, re) = (
        Literal::u8_unsuffixed(major),
        Literal::u8_unsuffixed(minor),
        Literal::u8_unsuffixed(revision),
    );
    let version_doc = Docs::new()
        .sentence(format!(
            "The protocol version this code implements: {major}-{minor}-{revision}, as \
             `(major, minor, revision)`."
        ))
        .tokens();
    let header_doc = Docs::new()
        .sentence(format!(
            "The protocol header a client sends first on a new connection: `AMQP`, a zero \
             octet, then {major}, {minor} and {revision}. A server that does not support the \
             version answers with the header of one it does and closes the socket."
        ))
        .tokens();
    let header = Literal::byte_string(&[b'A', b'M', b'Q', b'P', 0, major, minor, revision]);
    let port = spec.port.map(|port| {
        let doc = Docs::new()
            .sentence(format!(
                "The TCP port the specification assigns to the protocol: {port}."
            ))
            .tokens();
        let port = Literal::u16_unsuffixed(port);
        quote! {
            #doc
            pub const DEFAULT_PORT: u16 = #port;
        }
    });
    quote! {
        #version_doc
        pub const PROTOCOL_VERSION: (u8, u8, u8) = (#ma, #mi, #re);
        #header_doc
        pub const PROTOCOL_HEADER: [u8; 8] = *#header;
        #port
    }
}

fn reply_code(spec: &Spec) -> TokenStream {
    let codes: Vec<&Constant> = spec
        .constants
        .iter()
        .filter(|c| c.kind.is_reply_code())
        .collect();

    let consts = codes.iter().map(|c| {
        let mut docs = constant_docs(c);
        if docs.is_empty() {
            docs.sentence(format!(
                "The reply code the specification names `{}`.",
                c.name
            ));
        }
        docs.sentence(match c.kind {
            ConstantKind::SoftError => format!(
                "Code {}, a soft error: the peer closes the channel (`channel.close`).",
                c.value
            ),
            ConstantKind::HardError => format!(
                "Code {}, a hard error: the peer closes the connection (`connection.close`).",
                c.value
            ),
            _ => format!("Code {}, not an error.", c.value),
        });
        let docs = docs.tokens();
        let name = names::ident(&names::constant(&c.name));
        let value = Literal::u16_unsuffixed(c.value as u16);
        quote! {
            #docs
            pub const #name: ReplyCode = ReplyCode(#value);
        }
    });

    // One name per value: the first constant with a value names it.
    let mut named: Vec<(u16, String)> = Vec::new();
    for c in &codes {
        let value = c.value as u16;
        if !named.iter().any(|(v, _)| *v == value) {
            named.push((value, names::constant(&c.name)));
        }
    }
    let name_body = if named.is_empty() {
        quote!(None)
    } else {
        let arms = named.iter().map(|(value, name)| {
            let value = Literal::u16_unsuffixed(*value);
            quote!(#value => Some(#name),)
        });
        quote! {
            match self.0 {
                #(#arms)*
                _ => None,
            }
        }
    };
    let set = |kind: ConstantKind| -> TokenStream {
        let mut values: Vec<u16> = codes
            .iter()
            .filter(|c| c.kind == kind)
            .map(|c| c.value as u16)
            .collect();
        values.sort_unstable();
        values.dedup();
        let values: Vec<Literal> = values.into_iter().map(Literal::u16_unsuffixed).collect();
        if values.is_empty() {
            quote!(false)
        } else {
            quote!(matches!(self.0, #(#values)|*))
        }
    };
    let soft = set(ConstantKind::SoftError);
    let hard = set(ConstantKind::HardError);

    quote! {
        /// A reply code: why a peer closes a channel or the connection (`channel.close`,
        /// `connection.close`), or why the server returns a message (`basic.return`).
        ///
        /// An open set, like HTTP status codes: a code the specification does not name is
        /// kept as it is ([`ReplyCode::name`] is then `None`). `Display` shows the number and
        /// the name, `404 NOT_FOUND`, as RabbitMQ's reply texts do.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct ReplyCode(pub u16);

        impl ReplyCode {
            #(#consts)*

            /// The code's name in the specification, upper-cased as RabbitMQ writes it in
            /// reply texts (`NOT_FOUND`), or `None` for a code the specification does not name.
            pub const fn name(self) -> Option<&'static str> {
                #name_body
            }

            /// Whether the specification classes the code as a soft error: one that closes
            /// only the channel it happened on.
            pub const fn is_soft(self) -> bool {
                #soft
            }

            /// Whether the specification classes the code as a hard error: one that closes
            /// the whole connection. Codes the specification does not name are neither soft
            /// nor hard.
            pub const fn is_hard(self) -> bool {
                #hard
            }
        }

        impl ::core::fmt::Display for ReplyCode {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                match self.name() {
                    Some(name) => write!(f, "{} {}", self.0, name),
                    None => write!(f, "{}", self.0),
                }
            }
        }

        impl From<u16> for ReplyCode {
            #[inline]
            fn from(code: u16) -> Self {
                ReplyCode(code)
            }
        }

        impl From<ReplyCode> for u16 {
            #[inline]
            fn from(code: ReplyCode) -> Self {
                code.0
            }
        }
    }
}
