//! Arbitrary text into the generator, as a spec file: never a panic; a typed error for any
//! spec it cannot use, and output that is Rust for every spec it accepts (the generator
//! formats its output with prettyplease after parsing it with syn, so accepted output parses).

#![no_main]

use libfuzzer_sys::fuzz_target;
use warren_codegen::Generator;

fuzz_target!(|data: &[u8]| {
    let Ok(xml) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(error) = Generator::new().generate_str(xml, "fuzz.xml") {
        // The error must say something, without panicking while it does.
        assert!(!error.to_string().is_empty());
    }
});
