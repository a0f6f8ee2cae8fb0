//! The proxy's HTTP/1 request-head parser and rewriter (the plain path).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| turnout_proxy::fuzz::request_head(data));
