//! libFuzzer entry point; the property is [`subscribe_fuzz::mobile_answer`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| subscribe_fuzz::mobile_answer(data));
