//! libFuzzer entry point; the property is [`subscribe_fuzz::push_decrypt`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| subscribe_fuzz::push_decrypt(data));
