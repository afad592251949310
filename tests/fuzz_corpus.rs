//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/*`) through the
//! same checks the libFuzzer targets run (`fuzz/src/lib.rs`), on stable, in
//! every `cargo test`: so a crash the fuzzer once found, once its input is in
//! the corpus, stays fixed even where nightly and cargo-fuzz are missing.
//! No node is started; everything here is pure parsing.

#[path = "../fuzz/src/lib.rs"]
mod fuzz_checks;

use std::path::{Path, PathBuf};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

/// The corpus files of `target`, sorted so failures name the same file
/// every run.
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, bytes)
        })
        .collect()
}

/// Runs every corpus file of `target`; a failing file is named, with the
/// command that reproduces it under libFuzzer.
fn replay(target: &str) {
    let (_, check) = fuzz_checks::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no fuzz target {target}"));
    let files = corpus(target);
    assert!(
        files.len() >= 3,
        "{target}: corpus has {} files, want a few valid and edge-case seeds",
        files.len()
    );
    for (path, bytes) in files {
        let outcome = std::panic::catch_unwind(|| check(&bytes));
        assert!(
            outcome.is_ok(),
            "{target} fails on {} (reproduce: scripts/fuzz.sh --reproduce {target} {})",
            path.display(),
            path.display()
        );
    }
}

#[test]
fn every_target_has_a_corpus_and_a_libfuzzer_entry_point() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (name, _) in fuzz_checks::TARGETS {
        assert!(corpus_dir(name).is_dir(), "fuzz/corpus/{name} is missing");
        let entry = root.join("fuzz_targets").join(format!("{name}.rs"));
        let source =
            std::fs::read_to_string(&entry).unwrap_or_else(|e| panic!("{}: {e}", entry.display()));
        assert!(
            source.contains(&format!("nexuscache_fuzz::{name}(")),
            "{} does not call nexuscache_fuzz::{name}",
            entry.display()
        );
    }
}

#[test]
fn http_head_corpus() {
    replay("http_head");
}

#[test]
fn chunked_body_corpus() {
    replay("chunked_body");
}

#[test]
fn http_request_corpus() {
    replay("http_request");
}

#[test]
fn form_query_corpus() {
    replay("form_query");
}

#[test]
fn grpc_frame_corpus() {
    replay("grpc_frame");
}

#[test]
fn grpc_messages_corpus() {
    replay("grpc_messages");
}

#[test]
fn origin_response_corpus() {
    replay("origin_response");
}

#[test]
fn resp_parse_corpus() {
    replay("resp_parse");
}
