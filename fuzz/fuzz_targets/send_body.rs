//! libFuzzer entry point; the property is [`subscribe_fuzz::send_body`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| subscribe_fuzz::send_body(data));
