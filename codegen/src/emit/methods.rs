//! One struct per method, its `wire::AmqpMethod` impl (straight-line encode and decode), a
//! redacting `Debug` where a field is sensitive, and for requests the `Request` impl and,
//! with several responses, the reply enum.

use proc_macro2::{Ident, Literal, TokenStream};
use quote::{format_ident, quote};

use crate::emit::{self, Docs, join_list, method_ident, method_type_name, sentence};
use crate::model::{Class, Direction, Field, Method, Slot, Spec};
use crate::names;

pub(crate) fn emit(spec: &Spec, class: &Class, m: &Method) -> TokenStream {
    let ident = method_ident(m);
    let docs = method_docs(class, m).tokens();
    let visible: Vec<&Field> = m.fields.iter().filter(|f| !f.reserved).collect();
    let sensitive = visible.iter().any(|f| f.sensitive);

    let derives = if sensitive {
        quote!(#[derive(Clone, Default, PartialEq, Eq)])
    } else {
        quote!(#[derive(Debug, Clone, Default, PartialEq, Eq)])
    };
    let definition = if visible.is_empty() {
        quote! {
            #docs
            #derives
            pub struct #ident;
        }
    } else {
        let fields = visible.iter().map(|f| {
            let owner = format!("argument of `{}`", m.full_name());
            let doc = emit::field_docs(f, &owner, None).tokens();
            let name = names::field_ident(&f.name);
            let ty = emit::rust_type(f.ty);
            quote! {
                #doc
                pub #name: #ty,
            }
        });
        quote! {
            #docs
            #derives
            pub struct #ident {
                #(#fields)*
            }
        }
    };

    let debug = sensitive.then(|| redacting_debug(&ident, &visible));
    let codec = codec(m, &ident, &visible);
    let request = request(spec, class, m, &ident);
    quote! {
        #definition
        #debug
        #codec
        #request
    }
}

fn direction_tokens(d: Direction) -> TokenStream {
    match (d.to_server, d.to_client) {
        (true, true) => quote!(wire::Direction::Both),
        (false, true) => quote!(wire::Direction::ToClient),
        _ => quote!(wire::Direction::ToServer),
    }
}

/// Who sends a method, as a sentence.
fn sender(d: Direction) -> &'static str {
    match (d.to_server, d.to_client) {
        (true, true) => "Sent by either peer.",
        (false, true) => "Sent by the server.",
        _ => "Sent by the client.",
    }
}

/// Who answers a method sent in direction `d`.
fn responder(d: Direction) -> &'static str {
    match (d.to_server, d.to_client) {
        (true, true) => "the receiving peer",
        (false, true) => "the client",
        _ => "the server",
    }
}

fn link(class: &str, method: &str) -> String {
    format!("[`{}`]", method_type_name(class, method))
}

fn method_docs(class: &Class, m: &Method) -> Docs {
    let mut docs = Docs::new();
    if let Some(label) = &m.doc.label {
        docs.label(label);
    }
    for text in &m.doc.text {
        docs.prose(text);
    }
    if docs.is_empty() {
        docs.sentence(format!("The `{}` method.", m.full_name()));
    }

    let mut facts = vec![sender(m.direction).to_owned()];
    if !m.responses.is_empty() {
        let replies: Vec<String> = m
            .responses
            .iter()
            .map(|r| link(&r.class_name, &r.name))
            .collect();
        let mut s = format!(
            "Synchronous: {} answers with {}",
            responder(m.direction),
            join_list(&replies, "or")
        );
        if let Some(no_wait) = m.no_wait_field() {
            s.push_str(&format!(
                " unless `{}` is set",
                names::field_display(&no_wait.name)
            ));
        }
        s.push('.');
        facts.push(s);
    } else if !m.answers.is_empty() {
        let asks: Vec<String> = m
            .answers
            .iter()
            .map(|r| link(&r.class_name, &r.name))
            .collect();
        facts.push(format!("The reply to {}.", join_list(&asks, "and")));
    } else if m.synchronous {
        facts.push("Marked synchronous; the specification names no response to it.".into());
    } else {
        facts.push("Asynchronous: no reply is expected.".into());
    }
    if m.carries_content {
        let props = class
            .properties
            .as_ref()
            .map(|_| format!(" (with [`{}`])", names::properties_type(&class.name)))
            .unwrap_or_default();
        facts.push(format!(
            "Carries content: a content header{props} and body frames follow it."
        ));
    }
    if m.deprecated {
        facts.push("Deprecated by the specification.".into());
    }
    facts.push(format!(
        "Wire id {}.{} (`{}`).",
        m.class_id,
        m.id,
        m.full_name()
    ));
    docs.sentence(facts.join(" "));
    docs
}

fn redacting_debug(ident: &Ident, visible: &[&Field]) -> TokenStream {
    let name = ident.to_string();
    let fields = visible.iter().map(|f| {
        let label = names::field_display(&f.name);
        let id = names::field_ident(&f.name);
        if f.sensitive {
            quote!(.field(#label, &Redacted))
        } else {
            quote!(.field(#label, &self.#id))
        }
    });
    quote! {
        impl ::core::fmt::Debug for #ident {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct(#name)
                    #(#fields)*
                    .finish()
            }
        }
    }
}

/// A name for the reader parameter that no field shadows.
fn reader_name(visible: &[&Field]) -> Ident {
    let mut name = "input".to_owned();
    while visible.iter().any(|f| names::field(&f.name) == name) {
        name.push('_');
    }
    format_ident!("{}", name)
}

fn codec(m: &Method, ident: &Ident, visible: &[&Field]) -> TokenStream {
    let input = reader_name(visible);
    let mut writes = Vec::new();
    let mut reads = Vec::new();
    for slot in m.layout() {
        match slot {
            Slot::Value(i) => {
                let f = &m.fields[i];
                if f.reserved {
                    let ty = emit::wire_type(f.ty);
                    writes.push(quote!(out.zero(#ty);));
                    reads.push(quote!(#input.skip(#ty)?;));
                } else {
                    let name = names::field_ident(&f.name);
                    writes.push(emit::write_value(f.ty, &quote!(self.#name), false));
                    let read = emit::read_value(f.ty, &input);
                    reads.push(quote!(let #name = #read;));
                }
            }
            Slot::Bits(run) => {
                let n = Literal::usize_unsuffixed(run.len());
                let values = run.iter().map(|&i| {
                    let f = &m.fields[i];
                    if f.reserved {
                        quote!(false)
                    } else {
                        let name = names::field_ident(&f.name);
                        quote!(self.#name)
                    }
                });
                writes.push(quote!(out.bits([#(#values),*]);));
                if run.iter().all(|&i| m.fields[i].reserved) {
                    reads.push(quote!(#input.bits::<#n>()?;));
                } else {
                    let bindings = run.iter().map(|&i| {
                        let f = &m.fields[i];
                        if f.reserved {
                            quote!(_)
                        } else {
                            let name = names::field_ident(&f.name);
                            quote!(#name)
                        }
                    });
                    reads.push(quote!(let [#(#bindings),*] = #input.bits::<#n>()?;));
                }
            }
        }
    }
    let out_param = if m.fields.is_empty() {
        quote!(_out)
    } else {
        quote!(out)
    };
    let input_param = if m.fields.is_empty() {
        format_ident!("_{}", input)
    } else {
        input.clone()
    };
    let build = if visible.is_empty() {
        quote!(Ok(Self))
    } else {
        let names = visible.iter().map(|f| names::field_ident(&f.name));
        quote!(Ok(Self { #(#names),* }))
    };

    let (class_id, method_id) = (
        Literal::u16_unsuffixed(m.class_id),
        Literal::u16_unsuffixed(m.id),
    );
    let full_name = m.full_name();
    let synchronous = m.synchronous;
    let content = m.carries_content;
    let direction = direction_tokens(m.direction);
    quote! {
        impl wire::AmqpMethod for #ident {
            const ID: wire::MethodId = wire::MethodId::new(#class_id, #method_id);
            const NAME: &'static str = #full_name;
            const SYNCHRONOUS: bool = #synchronous;
            const CARRIES_CONTENT: bool = #content;
            const DIRECTION: wire::Direction = #direction;

            #[inline]
            fn encode(&self, #out_param: &mut wire::Writer<'_>) {
                #(#writes)*
            }

            #[inline]
            fn decode(#input_param: &mut wire::Reader) -> Result<Self, wire::DecodeError> {
                #(#reads)*
                #build
            }
        }
    }
}

fn request(spec: &Spec, class: &Class, m: &Method, ident: &Ident) -> TokenStream {
    if m.responses.is_empty() {
        return quote!();
    }
    let ids = m.responses.iter().map(|r| {
        let (c, id) = (
            Literal::u16_unsuffixed(r.class_id),
            Literal::u16_unsuffixed(r.method_id),
        );
        quote!(wire::MethodId::new(#c, #id))
    });
    let no_wait = m.no_wait_field().map(|f| {
        let name = names::field_ident(&f.name);
        quote! {
            #[inline]
            fn no_wait(&self) -> bool {
                self.#name
            }
        }
    });
    let (reply, reply_enum) = if let [only] = m.responses.as_slice() {
        let target = names::ident(&names::method_type(&only.class_name, &only.name));
        (quote!(#target), quote!())
    } else {
        let name = names::ident(&names::reply_type(&class.name, &m.name));
        (quote!(#name), reply_enum(spec, m, &name))
    };
    quote! {
        impl Request for #ident {
            type Reply = #reply;
            const REPLIES: &'static [wire::MethodId] = &[#(#ids),*];
            #no_wait
        }
        #reply_enum
    }
}

/// `BasicGetReply { GetOk(BasicGetOk), GetEmpty(BasicGetEmpty) }` with its conversions.
fn reply_enum(spec: &Spec, m: &Method, name: &Ident) -> TokenStream {
    let links: Vec<String> = m
        .responses
        .iter()
        .map(|r| link(&r.class_name, &r.name))
        .collect();
    let docs = Docs::new()
        .sentence(format!(
            "The reply to {}: {}.",
            link(&m.class_name, &m.name),
            join_list(&links, "or")
        ))
        .tokens();
    let mut variants = Vec::new();
    let mut from_method = Vec::new();
    let mut into_method = Vec::new();
    for r in &m.responses {
        let variant = names::ident(&names::upper_camel(&r.name));
        let ty = names::ident(&names::method_type(&r.class_name, &r.name));
        let doc = match spec
            .method(r.class_id, r.method_id)
            .and_then(|t| t.doc.label.as_ref())
        {
            Some(label) => format!(
                "{}: {}",
                link(&r.class_name, &r.name),
                emit::escape(&sentence(label))
            ),
            None => format!("The reply {}.", link(&r.class_name, &r.name)),
        };
        let doc = Docs::new().sentence(doc).tokens();
        variants.push(quote! {
            #doc
            #variant(#ty),
        });
        from_method.push(quote!(Method::#ty(m) => Ok(#name::#variant(m)),));
        into_method.push(quote!(#name::#variant(m) => Method::#ty(m),));
    }
    quote! {
        #docs
        #[derive(Debug, Clone, PartialEq, Eq)]
        #[allow(clippy::enum_variant_names)]
        pub enum #name {
            #(#variants)*
        }

        impl TryFrom<Method> for #name {
            type Error = Method;

            #[inline]
            fn try_from(method: Method) -> Result<Self, Method> {
                match method {
                    #(#from_method)*
                    other => Err(other),
                }
            }
        }

        impl From<#name> for Method {
            #[inline]
            fn from(reply: #name) -> Self {
                match reply {
                    #(#into_method)*
                }
            }
        }
    }
}
