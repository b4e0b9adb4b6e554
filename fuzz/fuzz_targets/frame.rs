//! Arbitrary bytes into the frame decoder, as a peer could send them: every frame decoded is
//! also taken apart further (method arguments are decoded by the decoder itself; content
//! properties are decoded here), so the whole receive path is covered.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use warren::frame::{ContentAssembler, Frame, FrameDecoder};
use warren::protocol::BasicProperties;
use warren::wire::{ContentProperties, Reader};

fuzz_target!(|data: &[u8]| {
    let decoder = FrameDecoder::new(4096);
    let mut buf = BytesMut::from(data);
    let mut content = ContentAssembler::new(1 << 16);
    // Each decoded frame consumes at least 8 bytes, so this loop ends.
    while let Ok(Some(frame)) = decoder.decode(&mut buf) {
        let _ = match frame {
            Frame::Method { method, .. } => content.start(method).map(drop),
            Frame::Header { header, .. } => {
                let _ = BasicProperties::decode(&mut Reader::new(&header.properties));
                content.header(header).map(drop)
            }
            Frame::Body { payload, .. } => content.body(payload).map(drop),
            Frame::Heartbeat => Ok(()),
        };
    }
});
