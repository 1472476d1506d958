//! libFuzzer entry point; the property is [`subscribe_fuzz::message_data`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| subscribe_fuzz::message_data(data));
