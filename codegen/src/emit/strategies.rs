//! Proptest strategies for every method struct, every properties struct and the `Method`
//! enum (one method at random, or one of each), emitted on request ([`Generator::proptest_strategies`](crate::Generator::proptest_strategies))
//! inside a `#[cfg(test)] pub(crate) mod strategies`, so that the runtime crate's own tests
//! can round-trip every method the spec defines, not a hand-picked sample.
//!
//! Integer and bit fields use `any::<T>()`; the other wire types use the runtime's
//! `wire::arbitrary::{short_string, long_string, table, timestamp}` strategies.

use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};

use crate::emit::method_ident;
use crate::model::{Field, Spec, Type};
use crate::names;

/// proptest implements `Strategy` for tuples of up to 12; fields are grouped in tuples of this
/// many, nested, so structs of any size work.
const TUPLE_MAX: usize = 8;

pub(crate) fn emit(spec: &Spec) -> TokenStream {
    let mut functions = Vec::new();
    let mut variants = Vec::new();
    for class in &spec.classes {
        for m in &class.methods {
            let ident = method_ident(m);
            let function =
                format_ident!("{}", names::snake(&format!("{}-{}", m.class_name, m.name)));
            let fields: Vec<&Field> = m.fields.iter().filter(|f| !f.reserved).collect();
            let body = build(&ident, &fields, false, None);
            functions.push(quote! {
                /// Any value of the method struct.
                pub(crate) fn #function() -> impl Strategy<Value = #ident> {
                    #body
                }
            });
            variants.push(quote!(#function().prop_map(Method::from).boxed()));
        }
        if let Some(properties) = &class.properties {
            let ident = names::ident(&names::properties_type(&class.name));
            let function = format_ident!("{}_properties", names::snake(&class.name));
            let fields: Vec<&Field> = properties.fields.iter().filter(|f| !f.reserved).collect();
            // The setters' record of a refused string is never set on the wire's side.
            let invalid = properties
                .fields
                .iter()
                .any(|f| f.ty == Type::ShortStr)
                .then(|| quote!(invalid: None));
            let body = build(&ident, &fields, true, invalid);
            functions.push(quote! {
                /// Any value of the properties struct, each property present or not.
                pub(crate) fn #function() -> impl Strategy<Value = #ident> {
                    #body
                }
            });
        }
    }
    quote! {
        /// Proptest strategies for every generated type, for the runtime crate's round-trip
        /// tests (which need not use all of them).
        #[cfg(test)]
        #[allow(dead_code, clippy::redundant_closure)]
        pub(crate) mod strategies {
            use super::*;
            use proptest::prelude::*;

            #(#functions)*

            /// One value of every method of the specification, in specification order
            /// (a `Vec` of strategies is a strategy for a `Vec` of values). A property over
            /// it checks every method in every case, where [`method`] picks one at random.
            pub(crate) fn every_method() -> Vec<BoxedStrategy<Method>> {
                vec![#(#variants),*]
            }

            /// Any method of the specification, each equally likely.
            pub(crate) fn method() -> impl Strategy<Value = Method> {
                proptest::strategy::Union::new(every_method())
            }
        }
    }
}

/// A strategy building struct `ident` from `fields` (wrapped in `Option` if `optional`), with
/// `extra` (`name: value`) as its last field if given.
fn build(
    ident: &Ident,
    fields: &[&Field],
    optional: bool,
    extra: Option<TokenStream>,
) -> TokenStream {
    if fields.is_empty() {
        return quote!(Just(#ident {}));
    }
    let names: Vec<Ident> = fields.iter().map(|f| names::field_ident(&f.name)).collect();
    let strategies: Vec<TokenStream> = fields
        .iter()
        .map(|f| {
            let strategy = field_strategy(f.ty);
            if optional {
                quote!(proptest::option::of(#strategy))
            } else {
                strategy
            }
        })
        .collect();
    let strategy_groups = strategies
        .chunks(TUPLE_MAX)
        .map(|group| quote!((#(#group,)*)));
    let name_groups = names.chunks(TUPLE_MAX).map(|group| quote!((#(#group,)*)));
    quote! {
        (#(#strategy_groups,)*).prop_map(|(#(#name_groups,)*)| #ident { #(#names,)* #extra })
    }
}

fn field_strategy(ty: Type) -> TokenStream {
    match ty {
        Type::Bit => quote!(any::<bool>()),
        Type::Octet => quote!(any::<u8>()),
        Type::Short => quote!(any::<u16>()),
        Type::Long => quote!(any::<u32>()),
        Type::LongLong => quote!(any::<u64>()),
        Type::ShortStr => quote!(wire::arbitrary::short_string()),
        Type::LongStr => quote!(wire::arbitrary::long_string()),
        Type::Table => quote!(wire::arbitrary::table()),
        Type::Timestamp => quote!(wire::arbitrary::timestamp()),
    }
}
