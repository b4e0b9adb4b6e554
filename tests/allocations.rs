//! Decoding a body frame allocates nothing: the body is a slice of the read buffer.
//!
//! A counting global allocator (this test binary's only) counts the allocations of the calling
//! thread while a frame is decoded.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::{Bytes, BytesMut};
use warren::frame::{Frame, FrameDecoder, encode_body};

struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: delegates to the system allocator; only counts.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn allocations_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = ALLOCATIONS.with(Cell::get);
    let result = f();
    (result, ALLOCATIONS.with(Cell::get) - before)
}

#[test]
fn decoding_a_body_frame_allocates_nothing() {
    // A read buffer as the driver has it: bytes appended after earlier frames were split off,
    // so its storage is already shared.
    let mut read_buf = BytesMut::with_capacity(64 * 1024);
    encode_body(&mut read_buf, 1, b"earlier");
    let decoder = FrameDecoder::new(131_072);
    decoder.decode(&mut read_buf).unwrap().unwrap();
    let body = Bytes::from(vec![7u8; 1000]);
    encode_body(&mut read_buf, 1, &body);

    let (frame, allocations) = allocations_during(|| decoder.decode(&mut read_buf));
    let Ok(Some(Frame::Body {
        channel: 1,
        payload,
    })) = frame
    else {
        panic!("expected a body frame, got {frame:?}");
    };
    assert_eq!(payload, body);
    assert_eq!(allocations, 0, "decoding the body frame allocated");
}
