#![no_main]
// See hqsync::fuzzing::notification for what is checked besides "never panics".
libfuzzer_sys::fuzz_target!(|data: &[u8]| hqsync::fuzzing::notification(data));
