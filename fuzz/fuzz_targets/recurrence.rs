#![no_main]
// See hqsync::fuzzing::recurrence for what is checked besides "never panics".
libfuzzer_sys::fuzz_target!(|data: &[u8]| hqsync::fuzzing::recurrence(data));
