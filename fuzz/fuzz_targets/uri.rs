//! Arbitrary text into the URI parser (`ConnectionOptions` from a string, as
//! `Connection::connect` parses it): never a panic; what parses shows itself without its
//! password, and shows a URI that parses again to the same host, port, user and vhost.

#![no_main]

use libfuzzer_sys::fuzz_target;
use warren::ConnectionOptions;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(options) = text.parse::<ConnectionOptions>() else {
        return;
    };
    let shown = options.to_string();
    let _ = format!("{options:?}");
    assert!(shown.contains(":***@"), "the password shows: {shown}");
    let again: ConnectionOptions = shown
        .parse()
        .unwrap_or_else(|e| panic!("{shown:?}, shown from {text:?}, does not parse: {e}"));
    assert_eq!(again.get_host(), options.get_host(), "{text:?}");
    assert_eq!(again.get_port(), options.get_port(), "{text:?}");
    assert_eq!(again.get_username(), options.get_username(), "{text:?}");
    assert_eq!(again.get_vhost(), options.get_vhost(), "{text:?}");
});
