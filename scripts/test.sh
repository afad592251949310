#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run execs this):
#
#   scripts/test.sh
#
# 1. setup.sh: install what the tests start (etcd, nginx, promtool, ...)
# 2. raise the locked-memory limit: integration tests start real glommio nodes
# 3. cargo fmt --check and cargo clippy -D warnings: style never drifts
#    (then, where nightly and cargo-fuzz are installed, a few seconds of
#    libFuzzer per fuzz target; see scripts/fuzz.sh)
# 4. doc tests (nextest can't run them), then cargo nextest run (or cargo test
#    when cargo-nextest is not installed)
# Stops at the first failing step and exits non-zero. The last line printed is
# the test runner's own summary: nothing runs after it.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ "${CI:-}" == true ]]; then
    # Plain logs in CI; a clean clone gains nothing from incremental
    # compilation, which only costs time and disk on 2 cores.
    export CARGO_TERM_COLOR=never
    export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
    # rustfmt colours its diff even into a pipe unless told not to.
    fmt_color=(--color never)
else
    fmt_color=()
fi

step() {
    local start=$SECONDS rc=0
    log "running: $*"
    "$@" || rc=$?
    if ((rc != 0)); then
        log "FAILED (exit $rc, $((SECONDS - start))s): $*"
        exit "$rc"
    fi
    log "ok ($((SECONDS - start))s): $*"
}

step bash scripts/setup.sh
ensure_cargo
raise_memlock
check_io_uring

step cargo fmt --all -- --check "${fmt_color[@]}"
step cargo clippy --workspace --all-targets -- -D warnings

# Fuzzing: the checks of every fuzz target always run, on stable, over the
# committed corpus (tests/fuzz_corpus.rs, in the test run below). Where a
# nightly toolchain and cargo-fuzz are installed, libFuzzer also runs every
# target for a few seconds (its instrumented build takes 6-11 minutes on 2
# cores the first time, seconds after). NEXUSCACHE_FUZZ_SMOKE=0 skips it,
# =1 requires it; scripts/fuzz.sh runs the targets for minutes.
fuzz_smoke="${NEXUSCACHE_FUZZ_SMOKE:-auto}"
if [[ "$fuzz_smoke" == auto ]]; then
    if rustup toolchain list 2>/dev/null | grep -q '^nightly' &&
        cargo fuzz --version >/dev/null 2>&1; then
        fuzz_smoke=1
    else
        log "libFuzzer smoke run skipped: needs a nightly toolchain and cargo-fuzz (stable replays the fuzz corpus in tests/fuzz_corpus.rs)"
        fuzz_smoke=0
    fi
fi
if [[ "$fuzz_smoke" == 1 ]]; then
    step bash scripts/fuzz.sh --smoke
fi

if cargo nextest --version >/dev/null 2>&1; then
    # nextest runs each test in its own process (a hung or crashing node
    # takes down one test, not the suite) but skips doc tests, so run those
    # first with cargo test.
    step cargo test --workspace --doc
    log "test runner: cargo-nextest ($(cargo nextest --version 2>/dev/null | head -n1))"
    log "running: cargo nextest run --workspace"
    # exec: the runner's summary line is the last thing printed and its exit
    # status is ours.
    exec cargo nextest run --workspace
else
    log "test runner: cargo test (cargo-nextest not installed)"
    log "running: cargo test --workspace"
    exec cargo test --workspace
fi
