//! The proxy's chunked-body follower; the first byte picks how the rest is split into reads.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| turnout_proxy::fuzz::chunked(data));
