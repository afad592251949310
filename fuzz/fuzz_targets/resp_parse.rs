//! libFuzzer entry point; the checks are [`nexuscache_fuzz::resp_parse`], which
//! `tests/fuzz_corpus.rs` also runs over the committed corpus on stable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nexuscache_fuzz::resp_parse(data));
