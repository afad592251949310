#!/usr/bin/env bash
# Checks that nexuscache-bench's gRPC transport is not the bottleneck: drives
# one NexusCache node's gRPC port with h2load (nghttp2's HTTP/2 load
# generator, in C) and with nexuscache-bench --protocol grpc under the same
# settings (same Get request for one 64-byte key, one thread, the same
# connections and streams in flight), alternating, and prints both rates,
# their ratio (target >= 0.9) and the CPU time each client spent per request.
#
#   bench/compare-h2load.sh                 # 1 round, 10 s each, 1 connection x 32 streams
#   ROUNDS=3 DURATION=5 bench/compare-h2load.sh
#
# Env: DURATION (seconds, default 10), CONNECTIONS (default 1), STREAMS
#      (streams in flight per connection, default 32), ROUNDS (default 1;
#      the ratio uses the sums), CORES (node data cores, default 1).
# The node runs on free loopback ports and is the only process stopped.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
# shellcheck source-path=SCRIPTDIR
source "$REPO_ROOT/scripts/cluster.sh" # cluster_raise_memlock

DURATION="${DURATION:-10}"
CONNECTIONS="${CONNECTIONS:-1}"
STREAMS="${STREAMS:-32}"
ROUNDS="${ROUNDS:-1}"
CORES="${CORES:-1}"
for v in DURATION CONNECTIONS STREAMS ROUNDS CORES; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, got '${!v}'"
done

bash scripts/setup.sh --minimal
if ! command -v h2load >/dev/null 2>&1; then
    ((EUID == 0)) || die "h2load missing and not root: install the Debian package nghttp2-client"
    log "installing nghttp2-client (h2load)"
    DEBIAN_FRONTEND=noninteractive apt-get -q update </dev/null >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get -q install -y --no-install-recommends nghttp2-client </dev/null >/dev/null
fi
ensure_cargo
cargo build --release -p nexuscache --bin nexuscache
cargo build --release -p nexuscache-bench
target="$(cargo_target_dir)/release"
cluster_raise_memlock "$CORES"

mapfile -t ports < <(free_port 2)
work="$(mktemp -d "${TMPDIR:-/tmp}/nexuscache-h2load.XXXXXX")"
on_exit "rm -rf '$work'"
NO_COLOR=1 "$target/nexuscache" serve --http-port "${ports[0]}" --grpc-port "${ports[1]}" \
    --cores "$CORES" --no-pin </dev/null >"$work/node.log" 2>&1 &
node_pid=$!
kill_on_exit "$node_pid"
wait_http "http://127.0.0.1:${ports[0]}/readyz" 30 "$node_pid" || die "node did not start: $(tail -n 5 "$work/node.log")"

# One key, 64-byte value; the same GetRequest for both clients.
curl -s -X PUT --data-binary "$(printf 'v%.0s' $(seq 64))" "http://127.0.0.1:${ports[0]}/v1/keys/h2k" >/dev/null
printf 'h2k\n' >"$work/key.txt"
printf '\x00\x00\x00\x00\x05\x0a\x03h2k' >"$work/get.bin"
url="http://127.0.0.1:${ports[1]}/nexuscache.v1.Cache/Get"

# run_cpu CMD...: runs CMD (output in $work/out) and prints the CPU seconds
# (user + sys) it used: the growth of this (sub)shell's children times,
# which include CMD once it has been waited for.
run_cpu() {
    local me="$BASHPID" before after
    before="$(awk '{print $16 + $17}' "/proc/$me/stat")"
    "$@" >"$work/out" 2>&1
    after="$(awk '{print $16 + $17}' "/proc/$me/stat")"
    awk -v a="$before" -v b="$after" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f\n", (b - a) / hz }'
}

inflight=$((CONNECTIONS * STREAMS))
printf 'h2load vs nexuscache-bench (grpc): %s s each, %s connection(s) x %s streams, 1 thread, node %s core(s)\n' \
    "$DURATION" "$CONNECTIONS" "$STREAMS" "$CORES"
printf '%-6s %14s %12s %14s %12s %7s\n' round h2load_req/s us_cpu/req bench_req/s us_cpu/req ratio
sum_h=0
sum_b=0
for ((r = 1; r <= ROUNDS; r++)); do
    cpu_h="$(run_cpu h2load -D "$DURATION" -c "$CONNECTIONS" -m "$STREAMS" -t 1 \
        -H 'content-type: application/grpc' -H 'te: trailers' -d "$work/get.bin" "$url")"
    grep -q ' 0 failed, 0 errored' "$work/out" || die "h2load reported failures: $(grep -E 'requests:' "$work/out")"
    rps_h="$(awk '/^finished in/ { gsub(",", "", $4); print $4 }' "$work/out")"
    cpu_b="$(run_cpu "$target/nexuscache-bench" --protocol grpc --targets "127.0.0.1:${ports[1]}" \
        --key-file "$work/key.txt" --read-ratio 1 --threads 1 --connections "$CONNECTIONS" \
        --concurrency "$inflight" --duration "${DURATION}s" --quiet --json "$work/b.json")"
    rps_b="$(python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); assert j["errors"]["total"] == 0, j["errors"]; print(j["throughput_rps"])' "$work/b.json")"
    awk -v r="$r" -v h="$rps_h" -v ch="$cpu_h" -v b="$rps_b" -v cb="$cpu_b" -v d="$DURATION" 'BEGIN {
        printf "%-6s %14.0f %12.2f %14.0f %12.2f %7.2f\n", r, h, ch * 1e6 / (h * d), b, cb * 1e6 / (b * d), b / h }'
    sum_h="$(awk -v a="$sum_h" -v b="$rps_h" 'BEGIN { print a + b }')"
    sum_b="$(awk -v a="$sum_b" -v b="$rps_b" 'BEGIN { print a + b }')"
done
ratio="$(awk -v h="$sum_h" -v b="$sum_b" 'BEGIN { printf "%.2f", b / h }')"
printf 'nexuscache-bench / h2load over %s round(s): %s (target >= 0.9)\n' "$ROUNDS" "$ratio"
awk -v r="$ratio" 'BEGIN { exit !(r >= 0.9) }'
