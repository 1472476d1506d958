//! libFuzzer entry point; the property is [`subscribe_fuzz::subscribe_answers`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| subscribe_fuzz::subscribe_answers(data));
