#!/usr/bin/env bash
# Fuzz the parsers that read network bytes with libFuzzer (cargo-fuzz).
#
#   scripts/fuzz.sh                          every target, 120 s each
#   scripts/fuzz.sh --seconds 600 http_head  one target, 10 minutes
#   scripts/fuzz.sh --smoke                  every target, 5 s each (test.sh)
#   scripts/fuzz.sh --reproduce TARGET FILE  run one input (a crash artifact)
#   scripts/fuzz.sh --list                   the targets
#
# Needs a nightly toolchain (libFuzzer's instrumentation is nightly-only);
# installs cargo-fuzz (cargo install cargo-fuzz --locked) when it is missing.
# Without nightly it says so and exits 2: the same checks still run on
# stable over the committed corpus (cargo test --test fuzz_corpus).
#
# Each target starts from its seeds in fuzz/corpus/<target> and writes what
# it learns to fuzz/work/corpus/<target> (not committed: copy an input worth
# keeping into fuzz/corpus/). A crash leaves fuzz/artifacts/<target>/crash-*
# and makes the script exit 1 after the other targets ran. Builds go to
# fuzz/target (or $FUZZ_TARGET_DIR), apart from the workspace's target dir.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    sed -n '2,19s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

seconds=120
mode=run
reproduce=()
targets=()
while (($#)); do
    case "$1" in
    --seconds)
        (($# >= 2)) || die "--seconds needs a value"
        need_int --seconds "$2"
        seconds="$2"
        shift
        ;;
    --smoke)
        mode=smoke
        seconds=5
        ;;
    --reproduce)
        (($# >= 3)) || die "--reproduce needs TARGET FILE"
        mode=reproduce
        reproduce=("$2" "$3")
        shift 2
        ;;
    --list) mode=list ;;
    -h | --help)
        usage
        exit 0
        ;;
    -*) die "unknown flag: $1 (see --help)" ;;
    *) targets+=("$1") ;;
    esac
    shift
done

ensure_cargo
fuzz_dir="$REPO_ROOT/fuzz"
target_dir="${FUZZ_TARGET_DIR:-$fuzz_dir/target}"
# Every target the crate declares ([[bin]] name = "..." in fuzz/Cargo.toml).
mapfile -t all_targets < <(sed -n 's/^name = "\([a-z_0-9]*\)"$/\1/p' "$fuzz_dir/Cargo.toml" | grep -v '^nexuscache-fuzz$')
if [[ "$mode" == list ]]; then
    printf '%s\n' "${all_targets[@]}"
    exit 0
fi
((${#targets[@]})) || targets=("${all_targets[@]}")
for t in "${targets[@]}"; do
    [[ " ${all_targets[*]} " == *" $t "* ]] || die "no fuzz target '$t' (have: ${all_targets[*]})"
done

if ! cargo +nightly --version >/dev/null 2>&1; then
    log "no nightly toolchain: libFuzzer cannot run here (rustup toolchain install nightly)."
    log "The same checks run on stable over the committed corpus: cargo test --test fuzz_corpus"
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz (cargo install cargo-fuzz --locked)"
    cargo install cargo-fuzz --locked || die "cannot install cargo-fuzz"
fi

cd "$fuzz_dir"
fuzz=(cargo +nightly fuzz)
if [[ "$mode" == reproduce ]]; then
    exec "${fuzz[@]}" run --target-dir "$target_dir" "${reproduce[0]}" "$(realpath "${reproduce[1]}")"
fi

# One cargo build for every target (cargo fuzz run then finds them built).
start=$SECONDS
log "building the fuzz targets (nightly, ASan, coverage instrumentation)"
"${fuzz[@]}" build --target-dir "$target_dir" || die "cargo fuzz build failed"
log "built in $((SECONDS - start))s"

failed=()
summary=()
for t in "${targets[@]}"; do
    work="$fuzz_dir/work/corpus/$t"
    mkdir -p "$work" "$fuzz_dir/artifacts/$t"
    out="$fuzz_dir/work/$t.log"
    log "fuzzing $t for ${seconds}s (log: ${out#"$REPO_ROOT"/})"
    rc=0
    # -timeout: an input that takes seconds is a finding (a quadratic loop
    # stalls a core); -rss_limit_mb: so is one that takes a GiB.
    "${fuzz[@]}" run --target-dir "$target_dir" "$t" "$work" "corpus/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=1024 \
        -print_final_stats=1 >"$out" 2>&1 || rc=$?
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$out" | tail -n1)"
    speed="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$out" | tail -n1)"
    cov="$(grep -o 'cov: [0-9]*' "$out" | tail -n1 | cut -d' ' -f2)"
    line="$t: ${runs:-?} executions (${speed:-?}/s), coverage ${cov:-?} edges, corpus $(find "$work" -type f | wc -l) files"
    if ((rc != 0)); then
        artifact="$(grep -o 'Test unit written to [^ ]*' "$out" | tail -n1 | cut -d' ' -f5)"
        line+=", FAILED (exit $rc)${artifact:+: $artifact}"
        failed+=("$t")
        tail -n 40 "$out" >&2
        [[ -n "$artifact" ]] && log "reproduce: scripts/fuzz.sh --reproduce $t $artifact"
    fi
    summary+=("$line")
    log "$line"
done

log "summary (${seconds}s per target):"
for line in "${summary[@]}"; do log "  $line"; done
if ((${#failed[@]})); then
    die "fuzz targets failed: ${failed[*]}"
fi
