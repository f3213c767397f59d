//! Fuzzes the relay's frame codec: any byte string must decode without a
//! panic, and every decoded frame must re-encode to what was read.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    wsfault::frame::fuzz_decode(data);
});
