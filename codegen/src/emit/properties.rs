//! Content properties: a `{Class}Properties` struct per content class, one `Option<T>` per
//! property, and its `wire::ContentProperties` impl.
//!
//! Wire layout (AMQP 0-9-1, 4.2.6.1): presence flags in 16-bit words, 15 properties per word,
//! the first property in bit 15; bit 0 set means another flag word follows. Then the present
//! properties, in order. Encoding writes only the flag words up to the last non-zero one.
//! Decoding refuses a flag for a property the class does not define
//! (`DecodeError::UnknownProperty`), so values are never read out of step.
//!
//! Each property also gets a chainable setter, `with_{property}`: short strings are taken as
//! anything `wire::IntoShortString` (`&str`, `String`, `ShortString`), other values as
//! anything `Into` the field's type. A string over 255 bytes cannot be stored: the setter
//! records it in the struct's `invalid` field instead, so that the chain goes on and the
//! publish that uses the properties fails with an error naming the property. `Debug` shows
//! the properties that are set, and nothing else.

use proc_macro2::{Ident, Literal, TokenStream};
use quote::{format_ident, quote};

use crate::emit::{self, Docs};
use crate::model::{Class, Field, Properties, Type};
use crate::names;

/// Properties per flag word.
const PER_WORD: usize = 15;

/// Word index and bit of property `i`.
fn flag_position(i: usize) -> (usize, u32) {
    (i / PER_WORD, 15 - (i % PER_WORD) as u32)
}

pub(crate) fn emit(class: &Class, p: &Properties) -> TokenStream {
    let ident = names::ident(&names::properties_type(&class.name));
    let class_id = Literal::u16_unsuffixed(p.class_id);
    let words = p.fields.len().div_ceil(PER_WORD);

    let mut docs = Docs::new();
    docs.sentence(format!(
        "The content properties of class `{}`: what a content header carries besides the body \
         size.",
        class.name
    ));
    docs.sentence(
        "Every property is optional: a presence flag in the header says whether its value \
         follows. `Default` is the header with no property set.",
    );
    docs.sentence(format!("Class id {}.", p.class_id));
    let docs = docs.tokens();

    let fields = p.fields.iter().enumerate().map(|(i, f)| {
        let (word, bit) = flag_position(i);
        let ordinal = match word {
            0 => "first".to_owned(),
            1 => "second".to_owned(),
            2 => "third".to_owned(),
            n => format!("{}th", n + 1),
        };
        let doc = emit::field_docs(
            f,
            &format!("property of `{}` content", class.name),
            Some(format!(
                "Presence flag: bit {bit} of the {ordinal} flag word."
            )),
        )
        .tokens();
        let name = names::field_ident(&f.name);
        let ty = emit::rust_type(f.ty);
        quote! {
            #doc
            pub #name: Option<#ty>,
        }
    });
    // Only short strings can be refused by a setter, so only their classes need `invalid`.
    let has_short_strings = p.fields.iter().any(|f| f.ty == Type::ShortStr);
    let invalid_field = has_short_strings.then(|| {
        quote! {
            /// The first value a `with_*` setter could not store: a short string over 255
            /// bytes. Publishing properties with one fails with an error that names the
            /// property. `None` unless a setter refused a value (properties decoded from the
            /// wire or built field by field have none).
            pub invalid: Option<Box<wire::InvalidProperty>>,
        }
    });
    let invalid_init = has_short_strings.then(|| quote!(invalid: None));
    let derives = quote!(#[derive(Clone, Default, PartialEq, Eq)]);
    let debug = set_fields_debug(&ident, &p.fields, has_short_strings);
    let setters = setters(&ident, &class.name, &p.fields, has_short_strings);

    // encode: flag words as one expression each, then the present values.
    let word_exprs: Vec<TokenStream> = (0..words)
        .map(|w| {
            let terms = p.fields.iter().enumerate().filter_map(|(i, f)| {
                let (word, bit) = flag_position(i);
                (word == w).then(|| {
                    let name = names::field_ident(&f.name);
                    let bit = Literal::u32_unsuffixed(bit);
                    quote!((u16::from(self.#name.is_some()) << #bit))
                })
            });
            quote!(#(#terms)|*)
        })
        .collect();
    let words_lit = Literal::usize_unsuffixed(words);
    let write_flags = if words == 1 {
        let expr = &word_exprs[0];
        quote! {
            let flags: u16 = #expr;
            out.short(flags);
        }
    } else {
        quote! {
            let flags: [u16; #words_lit] = [#(#word_exprs),*];
            let last = flags.iter().rposition(|w| *w != 0).unwrap_or(0);
            for (i, word) in flags.iter().enumerate().take(last + 1) {
                out.short(if i < last { *word | 1 } else { *word });
            }
        }
    };
    let write_values = p.fields.iter().map(|f| {
        let name = names::field_ident(&f.name);
        let write = emit::write_value(f.ty, &quote!(value), true);
        quote! {
            if let Some(value) = &self.#name {
                #write
            }
        }
    });

    // decode: flag words, checks, then the values behind set flags.
    let flag_vars: Vec<_> = (0..words).map(|w| format_ident!("flags{}", w)).collect();
    let mut read_flags = vec![];
    for (w, var) in flag_vars.iter().enumerate() {
        if w == 0 {
            read_flags.push(quote!(let #var = input.short()?;));
        } else {
            let prev = &flag_vars[w - 1];
            read_flags.push(quote!(let #var = if #prev & 1 != 0 { input.short()? } else { 0 };));
        }
    }
    let last = &flag_vars[words - 1];
    let in_last = p.fields.len() - (words - 1) * PER_WORD;
    // Bits below the last defined property, above the continuation bit.
    let undefined: u16 = ((1u32 << (16 - in_last)) - 1) as u16 & !1;
    let undefined_check = (undefined != 0).then(|| {
        let mask: Literal = format!("{undefined:#06x}").parse().expect("a hex literal");
        let base = (words - 1) * PER_WORD;
        let index = if base == 0 {
            quote!((#last & #mask).leading_zeros() as usize)
        } else {
            let base = Literal::usize_unsuffixed(base);
            quote!(#base + (#last & #mask).leading_zeros() as usize)
        };
        quote! {
            if #last & #mask != 0 {
                return Err(wire::DecodeError::UnknownProperty {
                    class: #class_id,
                    index: #index,
                });
            }
        }
    });
    let next_index = Literal::usize_unsuffixed(words * PER_WORD);
    let reads = p.fields.iter().enumerate().map(|(i, f)| {
        let (word, bit) = flag_position(i);
        let var = &flag_vars[word];
        let name = names::field_ident(&f.name);
        let bit = Literal::u32_unsuffixed(bit);
        let read = emit::read_value(f.ty, &format_ident!("input"));
        quote! {
            let #name = if #var & (1 << #bit) != 0 { Some(#read) } else { None };
        }
    });
    let names = p.fields.iter().map(|f| names::field_ident(&f.name));

    quote! {
        #docs
        #derives
        pub struct #ident {
            #(#fields)*
            #invalid_field
        }

        #debug

        #setters

        impl wire::ContentProperties for #ident {
            const CLASS_ID: u16 = #class_id;

            fn encode(&self, out: &mut wire::Writer<'_>) {
                #write_flags
                #(#write_values)*
            }

            fn decode(input: &mut wire::Reader) -> Result<Self, wire::DecodeError> {
                #(#read_flags)*
                #undefined_check
                if #last & 1 != 0 {
                    property_flag_tail(input, #class_id, #next_index)?;
                }
                #(#reads)*
                Ok(Self { #(#names,)* #invalid_init })
            }
        }
    }
}

/// `Debug` that shows only the properties that are set (most messages set two or three of
/// fourteen), sensitive ones as `<redacted>`, and a refused value if there is one.
fn set_fields_debug(ident: &Ident, fields: &[Field], has_invalid: bool) -> TokenStream {
    let name = ident.to_string();
    let fields = fields.iter().map(|f| {
        let label = names::field_display(&f.name);
        let id = names::field_ident(&f.name);
        if f.sensitive {
            quote! {
                if self.#id.is_some() {
                    out.field(#label, &Redacted);
                }
            }
        } else {
            quote! {
                if let Some(value) = &self.#id {
                    out.field(#label, value);
                }
            }
        }
    });
    let invalid = has_invalid.then(|| {
        quote! {
            if let Some(invalid) = &self.invalid {
                out.field("invalid", invalid);
            }
        }
    });
    quote! {
        impl ::core::fmt::Debug for #ident {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                let mut out = f.debug_struct(#name);
                #(#fields)*
                #invalid
                out.finish()
            }
        }
    }
}

/// The chainable `with_{property}` setters, and the helper that records a refused string.
fn setters(ident: &Ident, class: &str, fields: &[Field], has_invalid: bool) -> TokenStream {
    let setters = fields.iter().map(|f| {
        let id = names::field_ident(&f.name);
        let label = names::field_display(&f.name);
        let setter = format_ident!("with_{}", label);
        let mut docs = Docs::new();
        docs.sentence(format!(
            "Sets [`{label}`](Self::{label}), replacing any value it has."
        ));
        if f.ty == Type::ShortStr {
            docs.sentence(
                "Takes a `&str`, a `String` or a `ShortString`. A string over 255 bytes is \
                 not stored: it is recorded in [`invalid`](Self::invalid), and publishing \
                 these properties fails with an error that names the property.",
            );
            let docs = docs.tokens();
            quote! {
                #docs
                #[must_use]
                pub fn #setter(mut self, value: impl wire::IntoShortString) -> Self {
                    match value.into_short_string() {
                        Ok(value) => self.#id = Some(value),
                        Err(error) => self.refuse(#label, error),
                    }
                    self
                }
            }
        } else {
            let ty = emit::rust_type(f.ty);
            let docs = docs.tokens();
            // `impl Into<u16>` would refuse a literal (`with_x(7)` is an i32 to inference, as
            // several integer types convert into u16); `impl Into<u8>` takes one, and also
            // enums that convert into an octet (a delivery mode).
            let (value, into) = match f.ty {
                Type::Short | Type::Long | Type::LongLong | Type::Bit => (quote!(#ty), quote!()),
                _ => (quote!(impl Into<#ty>), quote!(.into())),
            };
            quote! {
                #docs
                #[must_use]
                pub fn #setter(mut self, value: #value) -> Self {
                    self.#id = Some(value #into);
                    self
                }
            }
        }
    });
    let refuse = has_invalid.then(|| {
        quote! {
            /// Records a string a setter could not store, unless one was recorded before.
            fn refuse(&mut self, property: &'static str, error: wire::ShortStringTooLong) {
                self.invalid
                    .get_or_insert_with(|| Box::new(wire::InvalidProperty::new(property, error)));
            }
        }
    });
    let doc = format!(" Chainable setters, one per property of `{class}` content.");
    quote! {
        #[doc = #doc]
        impl #ident {
            #(#setters)*
            #refuse
        }
    }
}

/// The shared reader of flag words past the last one a class defines: they may only say
/// "no further property", possibly followed by yet another flag word.
pub(crate) fn flag_tail() -> TokenStream {
    quote! {
        /// Reads the flag words that follow the last one a content class defines. Each may
        /// only continue the chain (bit 0); any other bit announces a property the class does
        /// not have, whose value could not be read.
        #[cold]
        fn property_flag_tail(
            input: &mut wire::Reader,
            class: u16,
            mut index: usize,
        ) -> Result<(), wire::DecodeError> {
            loop {
                let word = input.short()?;
                let undefined = word & !1;
                if undefined != 0 {
                    return Err(wire::DecodeError::UnknownProperty {
                        class,
                        index: index + undefined.leading_zeros() as usize,
                    });
                }
                if word & 1 == 0 {
                    return Ok(());
                }
                index += 15;
            }
        }
    }
}
