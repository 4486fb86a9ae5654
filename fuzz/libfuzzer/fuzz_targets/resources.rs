#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kinetic_fuzz::resources(data));
