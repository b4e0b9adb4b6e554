//! Arbitrary bytes into the field-table decoder: never a panic, a stack overflow, a hang or an
//! allocation beyond what the input justifies; a table that decodes encodes back to the same
//! value.

#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use warren::wire::{Reader, Writer};

fuzz_target!(|data: &[u8]| {
    let mut input = Reader::new(Bytes::copy_from_slice(data));
    if let Ok(table) = input.table() {
        let mut buf = BytesMut::new();
        Writer::new(&mut buf).table(&table);
        let again = Reader::new(buf.freeze()).table().expect("re-encoded table decodes");
        assert_eq!(again, table);
    }
});
