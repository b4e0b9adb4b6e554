//! The `Class` enum, the `Method` enum (a variant per method, with id/name/flag queries and
//! the encode/decode dispatch), `From`/`TryFrom` between method structs and `Method`, and the
//! `Request` trait.

use proc_macro2::{Literal, TokenStream};
use quote::quote;

use crate::emit::{Docs, method_ident};
use crate::model::{Method, Spec};
use crate::names;

pub(crate) fn emit(spec: &Spec) -> TokenStream {
    let class = class_enum(spec);
    let method = method_enum(spec);
    let conversions = conversions(spec);
    let request = request_trait();
    quote! {
        #class
        #method
        #conversions
        #request
    }
}

fn class_enum(spec: &Spec) -> TokenStream {
    let mut variants = Vec::new();
    let mut name_arms = Vec::new();
    let mut id_arms = Vec::new();
    let mut all = Vec::new();
    for c in &spec.classes {
        let variant = names::ident(&names::upper_camel(&c.name));
        let id = Literal::u16_unsuffixed(c.id);
        let mut docs = Docs::new();
        if let Some(label) = &c.doc.label {
            docs.label(label);
        }
        for text in &c.doc.text {
            docs.prose(text);
        }
        if docs.is_empty() {
            docs.sentence(format!("The `{}` class.", c.name));
        }
        docs.grammar(&c.doc.grammar);
        let props = c
            .properties
            .as_ref()
            .map(|_| {
                format!(
                    " Its content properties are [`{}`].",
                    names::properties_type(&c.name)
                )
            })
            .unwrap_or_default();
        docs.sentence(format!("Class id {} (`{}`).{props}", c.id, c.name));
        let docs = docs.tokens();
        variants.push(quote! {
            #docs
            #variant = #id,
        });
        let name = &c.name;
        name_arms.push(quote!(Class::#variant => #name,));
        id_arms.push(quote!(#id => Some(Class::#variant),));
        all.push(quote!(Class::#variant));
    }
    quote! {
        /// The classes of the protocol: groups of related methods, each with an id on the wire.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        #[repr(u16)]
        pub enum Class {
            #(#variants)*
        }

        impl Class {
            /// Every class, in specification order.
            pub const ALL: &'static [Class] = &[#(#all),*];

            /// The class id on the wire.
            #[inline]
            pub const fn id(self) -> u16 {
                self as u16
            }

            /// The class name in the specification (`queue`).
            pub const fn name(self) -> &'static str {
                match self {
                    #(#name_arms)*
                }
            }

            /// The class with id `id`, or `None` if the specification defines none.
            pub const fn from_id(id: u16) -> Option<Class> {
                match id {
                    #(#id_arms)*
                    _ => None,
                }
            }
        }
    }
}

/// Whether `Method` holds the method's struct in a `Box`: methods with a field table argument
/// (declares, binds, consume, connection start) are the largest by far, and all of them are
/// setup methods, so boxing them keeps every `Method` (and every frame) the size of the
/// largest hot-path method, `basic.deliver`, for one allocation per rare method.
fn boxed_in_method(m: &Method) -> bool {
    m.fields
        .iter()
        .any(|f| !f.reserved && f.ty == crate::model::Type::Table)
}

/// The method's field-table arguments, in field order.
fn table_fields(m: &Method) -> impl Iterator<Item = &crate::model::Field> {
    m.fields
        .iter()
        .filter(|f| !f.reserved && f.ty == crate::model::Type::Table)
}

/// The body of `Method::field_tables`: an array of `Option<&FieldTable>` as long as the most
/// tables any method has, flattened, so that no call allocates.
fn field_tables_body(methods: &[&Method]) -> TokenStream {
    let most = methods
        .iter()
        .map(|m| table_fields(m).count())
        .max()
        .unwrap_or(0);
    if most == 0 {
        return quote!(std::iter::empty());
    }
    let arms = methods.iter().filter_map(|m| {
        let fields: Vec<_> = table_fields(m)
            .map(|f| names::field_ident(&f.name))
            .collect();
        if fields.is_empty() {
            return None;
        }
        let ident = method_ident(m);
        let padding = (fields.len()..most).map(|_| quote!(None));
        Some(quote!(Method::#ident(m) => [#(Some(&m.#fields),)* #(#padding,)*],))
    });
    let nones = (0..most).map(|_| quote!(None));
    let len = Literal::usize_unsuffixed(most);
    quote! {
        let tables: [Option<&wire::FieldTable>; #len] = match self {
            #(#arms)*
            _ => [#(#nones),*],
        };
        tables.into_iter().flatten()
    }
}

/// `matches!(self, Method::A(_) | Method::B(_))`, or `false` when no method qualifies.
fn matches_any<'a>(methods: impl Iterator<Item = &'a Method>) -> TokenStream {
    let idents: Vec<_> = methods.map(method_ident).collect();
    if idents.is_empty() {
        quote!(false)
    } else {
        quote!(matches!(self, #(Method::#idents(_))|*))
    }
}

fn method_enum(spec: &Spec) -> TokenStream {
    let methods: Vec<&Method> = spec.methods().collect();
    let mut variants = Vec::new();
    let mut id_arms = Vec::new();
    let mut name_arms = Vec::new();
    let mut encode_arms = Vec::new();
    let mut decode_arms = Vec::new();
    let mut name_of_arms = Vec::new();
    let mut no_wait_arms = Vec::new();
    for m in &methods {
        let ident = method_ident(m);
        let boxed = boxed_in_method(m);
        let docs = Docs::new()
            .summary(&m.doc)
            .sentence(format!(
                "Wraps [`{ident}`] (`{}`, wire id {}.{}){}.",
                m.full_name(),
                m.class_id,
                m.id,
                if boxed {
                    ", boxed: its field table makes it large"
                } else {
                    ""
                }
            ))
            .tokens();
        let payload = if boxed {
            quote!(Box<#ident>)
        } else {
            quote!(#ident)
        };
        variants.push(quote! {
            #docs
            #ident(#payload),
        });
        let (c, id) = (
            Literal::u16_unsuffixed(m.class_id),
            Literal::u16_unsuffixed(m.id),
        );
        id_arms.push(quote!(Method::#ident(_) => wire::MethodId::new(#c, #id),));
        let name = m.full_name();
        name_arms.push(quote!(Method::#ident(_) => #name,));
        name_of_arms.push(quote!((#c, #id) => Some(#name),));
        if let Some(field) = m.no_wait_field() {
            let field = names::field_ident(&field.name);
            no_wait_arms.push(quote!(Method::#ident(m) => m.#field,));
        }
        let inner = if boxed { quote!(&**m) } else { quote!(m) };
        encode_arms.push(quote!(Method::#ident(m) => wire::AmqpMethod::encode(#inner, out),));
        // `From` boxes where the variant does.
        decode_arms.push(quote! {
            (#c, #id) => <#ident as wire::AmqpMethod>::decode(input).map(Method::from),
        });
    }

    let class_arms = spec
        .classes
        .iter()
        .filter(|c| !c.methods.is_empty())
        .map(|c| {
            let idents = c.methods.iter().map(method_ident);
            let variant = names::ident(&names::upper_camel(&c.name));
            quote!(#(Method::#idents(_))|* => Class::#variant,)
        });
    let synchronous = matches_any(methods.iter().copied().filter(|m| m.synchronous));
    let content = matches_any(methods.iter().copied().filter(|m| m.carries_content));
    let direction_arms = [
        ((true, false), quote!(wire::Direction::ToServer)),
        ((false, true), quote!(wire::Direction::ToClient)),
        ((true, true), quote!(wire::Direction::Both)),
    ]
    .into_iter()
    .filter_map(|(dir, value)| {
        let idents: Vec<_> = methods
            .iter()
            .filter(|m| (m.direction.to_server, m.direction.to_client) == dir)
            .map(|m| method_ident(m))
            .collect();
        (!idents.is_empty()).then(|| quote!(#(Method::#idents(_))|* => #value,))
    });

    let field_tables = field_tables_body(&methods);
    let no_wait_body = if no_wait_arms.is_empty() {
        quote!(false)
    } else {
        quote! {
            match self {
                #(#no_wait_arms)*
                _ => false,
            }
        }
    };

    quote! {
        /// Any method of the protocol: what a method frame carries.
        ///
        /// [`Method::decode`] reads one from a method frame's payload after the class and
        /// method ids; [`Method::encode`] writes its arguments. Each variant's struct converts
        /// into a `Method` with `From` and back with `TryFrom` (which returns the `Method`
        /// unchanged when it is another method).
        #[derive(Debug, Clone, PartialEq, Eq)]
        #[non_exhaustive]
        #[allow(clippy::enum_variant_names)]
        pub enum Method {
            #(#variants)*
        }

        impl Method {
            /// The method's class and method id.
            #[inline]
            pub fn id(&self) -> wire::MethodId {
                match self {
                    #(#id_arms)*
                }
            }

            /// The method's dotted name in the specification (`queue.declare`).
            pub fn name(&self) -> &'static str {
                match self {
                    #(#name_arms)*
                }
            }

            /// The dotted name of the method with id `id`, or `None` if the specification
            /// defines no such method. Useful to name the failing method of a close.
            pub const fn name_of(id: wire::MethodId) -> Option<&'static str> {
                match (id.class, id.method) {
                    #(#name_of_arms)*
                    _ => None,
                }
            }

            /// Whether the method asks the peer not to reply: its `no-wait` field is set.
            /// Always `false` for methods without a `no-wait` field.
            pub fn no_wait(&self) -> bool {
                #no_wait_body
            }

            /// The method's field-table arguments (queue and exchange arguments, peer
            /// properties), in field order; none for most methods. A sender can check them
            /// before encoding the method.
            pub fn field_tables(&self) -> impl Iterator<Item = &wire::FieldTable> + '_ {
                #field_tables
            }

            /// The class the method belongs to.
            pub fn class(&self) -> Class {
                match self {
                    #(#class_arms)*
                }
            }

            /// Whether the specification marks the method synchronous: a request that waits
            /// for its reply, or a reply.
            pub fn synchronous(&self) -> bool {
                #synchronous
            }

            /// Whether a content header and body frames follow the method.
            pub fn carries_content(&self) -> bool {
                #content
            }

            /// Which peer may send the method.
            pub fn direction(&self) -> wire::Direction {
                match self {
                    #(#direction_arms)*
                }
            }

            /// Appends the method's arguments (not its ids) to `out`.
            pub fn encode(&self, out: &mut wire::Writer<'_>) {
                match self {
                    #(#encode_arms)*
                }
            }

            /// Reads the arguments of method `id` from `input`: the rest of a method frame's
            /// payload after the class and method ids.
            ///
            /// # Errors
            ///
            /// [`wire::DecodeError::UnknownMethod`] for an id the specification does not
            /// define; any other [`wire::DecodeError`] for arguments that are truncated or
            /// malformed.
            pub fn decode(id: wire::MethodId, input: &mut wire::Reader) -> Result<Method, wire::DecodeError> {
                match (id.class, id.method) {
                    #(#decode_arms)*
                    (class, method) => Err(wire::DecodeError::UnknownMethod { class, method }),
                }
            }
        }
    }
}

fn conversions(spec: &Spec) -> TokenStream {
    let single = spec.methods().count() == 1;
    // With one method, `other => Err(other)` can never match.
    let allow = single.then(|| quote!(#[allow(unreachable_patterns)]));
    let impls = spec.methods().map(|m| {
        let ident = method_ident(m);
        let (wrap, unwrap) = if boxed_in_method(m) {
            (quote!(Box::new(method)), quote!(*method))
        } else {
            (quote!(method), quote!(method))
        };
        quote! {
            impl From<#ident> for Method {
                #[inline]
                fn from(method: #ident) -> Self {
                    Method::#ident(#wrap)
                }
            }

            impl TryFrom<Method> for #ident {
                type Error = Method;

                #[inline]
                #allow
                fn try_from(method: Method) -> Result<Self, Method> {
                    match method {
                        Method::#ident(method) => Ok(#unwrap),
                        other => Err(other),
                    }
                }
            }
        }
    });
    quote!(#(#impls)*)
}

fn request_trait() -> TokenStream {
    quote! {
        /// A method that expects a reply: it has `<response>`s in the specification.
        ///
        /// Lets a caller send `R` and wait for an `R::Reply`: the reply is the one method that
        /// answers `R`, or an enum of them when several may (`BasicGetReply`). A frame whose
        /// method id is not in [`Request::REPLIES`] is not the reply.
        pub trait Request: wire::AmqpMethod + Into<Method> {
            /// What answers the request.
            type Reply: TryFrom<Method, Error = Method>;

            /// The ids of the methods that may answer the request.
            const REPLIES: &'static [wire::MethodId];

            /// Whether this request asks the peer not to reply (its `no-wait` field set).
            /// Always `false` for requests without a `no-wait` field.
            #[inline]
            fn no_wait(&self) -> bool {
                false
            }
        }
    }
}
