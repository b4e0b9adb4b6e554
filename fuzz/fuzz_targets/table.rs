//! Arbitrary bytes into the field-table decoder: never a panic, a stack overflow, a hang or an
//! allocation beyond what the input justifies; a table that decodes builds its entries at every
//! level (comparing tables builds them) and encodes back to the same value, both as the bytes
//! received and re-encoded from its entries.

#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use warren::wire::{FieldValue, Reader, ShortString, Writer};

fuzz_target!(|data: &[u8]| {
    let data = Bytes::copy_from_slice(data);
    let mut input = Reader::new(&data);
    if let Ok(table) = input.table() {
        // A change makes the table forget its wire bytes, so the encoder writes every entry.
        // (A key already in the table would be removed for good, so it is not used.)
        let mut changed = table.clone();
        let marker = ShortString::from_static("\u{0}fuzz");
        if !table.contains_key(&marker) {
            changed.insert(marker.clone(), FieldValue::Void);
            changed.remove(&marker);
        }
        for table_to_encode in [&table, &changed] {
            let mut buf = BytesMut::new();
            Writer::new(&mut buf).table(table_to_encode);
            // Copied out of a slice this time, where the first read shared its input.
            let again = Reader::from_slice(&buf)
                .table()
                .expect("re-encoded table decodes");
            assert_eq!(again, table);
        }
    }
});
