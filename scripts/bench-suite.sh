#!/usr/bin/env bash
# The benchmark suite in one command: NexusCache on one node and on a local
# three-node cluster (with etcd), against nginx as the HTTP ceiling of this
# machine, all in one run, ending with one markdown table.
#
#   scripts/bench-suite.sh [--quick] [--duration S] [--warmup S] [--no-build]
#
#   --quick        5 s runs after a 1 s warm-up: a smoke run of a few minutes
#   --duration S   measured seconds per run (default 30; --quick 5)
#   --warmup S     unmeasured seconds before each run (default 5; --quick 1)
#   --no-build     use the existing release binaries (NC_BIN / NC_BENCH_BIN
#                  override their paths)
#
# Scenarios, each with 64-byte and with 1 KiB values: mixed 80% reads / 20%
# writes, zipf 0.99 over 100k keys, keys written once first (--prefill),
# 64 requests in flight, HTTP /api/get and /api/set:
#   single   one node, --cores = all CPUs (pinned)
#   cluster  three nodes, --cores 1 --no-pin each, discovery through etcd;
#            connections go round-robin to the nodes, which forward keys they
#            don't own to the owner over gRPC
# Each is run closed loop (as fast as it answers: req/s) and then open loop
# (--rate = 50% of that req/s: latency from each request's intended send
# time, so tail latency without coordinated omission).
# References: nginx returning a fixed body of the size of a 64-byte GET
# answer, driven by nexuscache-bench (same settings, reads only; closed and
# open loop) and by wrk -t1 -c50 (with nexuscache-bench -t1 -c50 beside it).
#
# Everything (generator JSON and HdrHistogram logs, wrk output, server logs,
# /metrics after each scenario, summary.md) goes to
# bench-results/suite-<timestamp>/. Latency percentiles in the table are over
# all requests of a run (reads and writes), from the HdrHistogram logs.
# Only 127.0.0.1 and free ports are used; only processes this script started
# are stopped. Exit status 1 if any run failed (the table still shows the rest).
# Env: SEED (generator seed, fixed by default so runs repeat the same key
# sequence), RUST_LOG (node log level, default warn), NC_BIN, NC_BENCH_BIN.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# --- settings ----------------------------------------------------------------
KEYS=100000
DISTRIBUTION=zipf:0.99
READ_RATIO=0.8
CONCURRENCY=64
VALUE_SIZES=(64 1024)
CLUSTER_NODES=3
OPEN_LOOP_FRACTION=0.5
SEED="${SEED:-20261121}"

quick=0
build=1
duration=""
warmup=""
while (($#)); do
    case "$1" in
    --quick) quick=1 ;;
    --no-build) build=0 ;;
    --duration)
        (($# >= 2)) || die "$1 needs a value"
        need_int "$1" "$2"
        duration="$2"
        shift
        ;;
    --warmup)
        (($# >= 2)) || die "$1 needs a value"
        need_int "$1" "$2" 0
        warmup="$2"
        shift
        ;;
    -h | --help)
        awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"
        exit 0
        ;;
    *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done
if ((quick)); then
    duration="${duration:-5}"
    warmup="${warmup:-1}"
else
    duration="${duration:-30}"
    warmup="${warmup:-5}"
fi

cpus="$(nproc)"

# --- tools and binaries ------------------------------------------------------
bash scripts/setup.sh
for c in nginx wrk etcd curl python3; do
    command -v "$c" >/dev/null 2>&1 || [[ -x "/usr/sbin/$c" ]] || die "$c not found after scripts/setup.sh"
done
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"
etcd_bin="$(command -v etcd)"

node_and_bench_bins "$build"
raise_memlock
check_io_uring

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
out="$REPO_ROOT/bench-results/suite-$stamp"
mkdir -p "$out/logs"
tmp="$(mktemp -d -t nexuscache-bench-suite.XXXXXX)"
on_exit "rm -rf '$tmp'"
manifest="$out/manifest.tsv"
printf 'name\tscenario\tvalue_size\tmode\ttool\tstatus\tload\tnote\n' >"$manifest"
report_py="$REPO_ROOT/scripts/bench/suite_report.py"

log "results go to ${out#"$REPO_ROOT"/}"
log "runs: ${warmup}s warm-up + ${duration}s measured each; $cpus CPUs"

# --- helpers -----------------------------------------------------------------
# manifest_row NAME SCENARIO VALUE MODE TOOL STATUS LOAD [NOTE]
# LOAD: the 1-minute load average before and after the run ("a-b"): on a
# shared machine it says which figures other work disturbed.
manifest_row() {
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$6" "$7" "${8:-}" >>"$manifest"
}
loadavg() { cut -d' ' -f1 /proc/loadavg; }

# run_bg OUTFILE CMD...: run CMD in the background with output to OUTFILE
# and wait for it, so that a SIGTERM to this script is handled at once (bash
# defers traps while a foreground child runs) and the exit handler stops it.
# Returns CMD's exit status.
run_bg() {
    local outfile="$1" pid rc=0
    shift
    "$@" >"$outfile" 2>&1 &
    pid=$!
    kill_on_exit "$pid"
    wait "$pid" || rc=$?
    forget_pid "$pid"
    return "$rc"
}

# bench NAME SCENARIO VALUE MODE TARGETS ARGS...: one nexuscache-bench run
# with --json and --hdr-log into $out. Never fails the suite: a failed run is
# recorded as such and the table says so.
bench() {
    local name="$1" scenario="$2" value="$3" mode="$4" targets="$5" rc=0 load
    shift 5
    local cmd=("$bench_bin" --targets "$targets" --keys "$KEYS" --key-distribution "$DISTRIBUTION"
        --seed "$SEED" --warmup "${warmup}s" --duration "${duration}s" --quiet
        --json "$out/$name.json" --hdr-log "$out/$name.hlog" "$@")
    log "$name: ${cmd[*]#"$REPO_ROOT"/}"
    printf '%s\n' "${cmd[*]}" >"$out/$name.cmd"
    load="$(loadavg)"
    run_bg "$out/$name.txt" "${cmd[@]}" || rc=$?
    load="$load-$(loadavg)"
    if ((rc != 0)) || [[ ! -s "$out/$name.json" ]]; then
        warn "$name: nexuscache-bench failed (exit $rc): $(tail -n 3 "$out/$name.txt" | tr '\n' ' ')"
        manifest_row "$name" "$scenario" "$value" "$mode" bench failed "$load" "exit $rc"
        return 1
    fi
    manifest_row "$name" "$scenario" "$value" "$mode" bench ok "$load"
    sed -n '/^Results over/,$p' "$out/$name.txt" >&2
}

# open_rate JSONFILE: OPEN_LOOP_FRACTION of the run's req/s, as an integer.
open_rate() {
    python3 "$report_py" open-rate "$1" "$OPEN_LOOP_FRACTION"
}

# closed_then_open NAME_PREFIX SCENARIO VALUE TARGETS ARGS...: the closed-loop
# run (ARGS may add --prefill), then the open-loop run at half its req/s.
closed_then_open() {
    local prefix="$1" scenario="$2" value="$3" targets="$4" rate
    shift 4
    bench "$prefix-closed" "$scenario" "$value" closed "$targets" "$@" || return 0
    rate="$(open_rate "$out/$prefix-closed.json")" || {
        warn "$prefix: no rate from the closed-loop run"
        return 0
    }
    # The open-loop run reuses the data the closed-loop run left: no prefill.
    local args=() a
    for a in "$@"; do
        [[ "$a" == --prefill ]] || args+=("$a")
    done
    bench "$prefix-open" "$scenario" "$value" open "$targets" --rate "$rate" "${args[@]}" || true
}

# scrape NAME PORT...: save every node's /metrics after a scenario.
scrape() {
    local name="$1" port i=0
    shift
    for port in "$@"; do
        curl -sS --max-time 5 "http://127.0.0.1:$port/metrics" >"$out/$name.node$i.metrics" 2>/dev/null ||
            warn "$name: could not scrape /metrics of 127.0.0.1:$port"
        i=$((i + 1))
    done
}

# stop_checked PID NAME: SIGTERM and expect exit status 0.
stop_checked() {
    local rc=0
    stop_pid "$1" 15 || rc=$?
    ((rc == 0)) || warn "$2 exited with status $rc after SIGTERM (expected 0); see $out/logs/$2.log"
}

# --- machine and settings ----------------------------------------------------
commit="$(git rev-parse --short HEAD 2>/dev/null || echo none)"
git diff --quiet HEAD -- src bench 2>/dev/null || commit="$commit (src/bench modified)"
{
    echo "date: $stamp"
    echo "commit: $commit"
    echo "machine: $cpus CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)), kernel $(uname -r), $(awk '/MemTotal/ {printf "%.1f GiB RAM", $2 / 1048576}' /proc/meminfo)"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "runs: ${warmup} s warm-up (not measured) + ${duration} s measured; $CONCURRENCY requests in flight (1 per connection); generator threads = CPUs ($cpus) unless noted; seed $SEED"
    echo "workload: read ratio $READ_RATIO, $DISTRIBUTION over $KEYS keys, all keys written once first (--prefill), HTTP /api/get + /api/set"
    echo "open loop: --rate = $OPEN_LOOP_FRACTION x the closed-loop req/s of the same scenario; latency from intended send time"
    echo "single: one node, --cores $cpus (pinned), --max-memory 1GiB"
    echo "cluster: $CLUSTER_NODES nodes, --cores 1 --no-pin each, etcd discovery, --max-memory 1GiB each; connections round-robin over the nodes. This machine has $cpus CPUs: the 3 nodes, etcd and the generator all share them, so the cluster rows measure forwarding overhead, not scale-out"
} >"$out/meta.txt"
sed 's/^/  /' "$out/meta.txt" >&2

# --- nginx: the HTTP ceiling -------------------------------------------------
# The body has the size and Content-Type of NexusCache's answer to a GET of a
# 64-byte value: "value=" + 64 bytes (start_nginx in lib.sh: foreground,
# everything under $tmp).
nginx_value="$(python3 -c 'import random, string; r = random.Random(42); print("".join(r.choice(string.ascii_letters + string.digits) for _ in range(64)))')"
nginx_body="value=$nginx_value"
nginx_port="$(free_port 1)"
start_nginx "$tmp/nginx" "$nginx_port" "$cpus" "$nginx_body" "$out/logs/nginx.log"
nginx_pid=$NGINX_PID
nginx_sample="$(curl -sS -o /dev/null -w '%{http_code} body %{size_download} B, headers %{size_header} B' \
    "http://127.0.0.1:$nginx_port/api/get?key=key%3A0")"
echo "nginx: $("$nginx_bin" -v 2>&1 | sed 's/^nginx version: //'), worker_processes $cpus, GET -> $nginx_sample" >>"$out/meta.txt"

nginx_target="127.0.0.1:$nginx_port"
closed_then_open nginx-64 nginx 64 "$nginx_target" --read-ratio 1 --concurrency "$CONCURRENCY"

# wrk -t1 -c50 and nexuscache-bench with the same connections and thread.
cat >"$tmp/wrk.lua" <<'EOF'
wrk.path = "/api/get?key=key%3A0"
function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        'BENCH_RESULT {"requests": %d, "duration_us": %d, "p50_us": %.1f, "p90_us": %.1f, "p99_us": %.1f, "p99_9_us": %.1f, "max_us": %.1f, ' ..
        '"errors": {"status": %d, "connect": %d, "read": %d, "write": %d, "timeout": %d}}\n',
        summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
        latency:percentile(99), latency:percentile(99.9), latency.max,
        e.status, e.connect, e.read, e.write, e.timeout))
end
EOF
wrk_cmd=(wrk -t1 -c50 "-d${duration}s" --latency -s "$tmp/wrk.lua" "http://$nginx_target/")
if ((warmup > 0)); then
    run_bg "$out/nginx-64-wrk-warmup.txt" wrk -t1 -c50 "-d${warmup}s" "http://$nginx_target/" || true
fi
log "nginx-64-wrk: ${wrk_cmd[*]}"
printf '%s\n' "${wrk_cmd[*]}" >"$out/nginx-64-wrk.cmd"
rc=0
load="$(loadavg)"
run_bg "$out/nginx-64-wrk.txt" "${wrk_cmd[@]}" || rc=$?
load="$load-$(loadavg)"
if ((rc == 0)) && grep -q '^BENCH_RESULT ' "$out/nginx-64-wrk.txt"; then
    manifest_row nginx-64-wrk nginx 64 closed wrk ok "$load" "wrk -t1 -c50"
    grep -E '^\s+(Latency|Req/Sec)|^Requests/sec' "$out/nginx-64-wrk.txt" >&2 || true
else
    warn "wrk failed (exit $rc): $(tail -n 3 "$out/nginx-64-wrk.txt" | tr '\n' ' ')"
    manifest_row nginx-64-wrk nginx 64 closed wrk failed "$load" "exit $rc"
fi
# Mode "closed-t1c50": a cross-check of the generator against wrk, not the ceiling.
bench nginx-64-t1c50 nginx 64 closed-t1c50 "$nginx_target" --read-ratio 1 --threads 1 \
    --connections 50 --concurrency 50 || true
stop_pid "$nginx_pid" 10 || true

# --- NexusCache nodes ----------------------------------------------------------
# start_node NAME HTTP_PORT GRPC_PORT ARGS...: start a node in the background;
# its PID goes to the global `started_pid`.
started_pid=""
start_node() {
    local name="$1" http="$2" grpc="$3"
    shift 3
    # RUST_LOG=warn unless set: per-request logging would measure the logger.
    RUST_LOG="${RUST_LOG:-warn}" "$nc_bin" serve --bind 127.0.0.1 --http-port "$http" --grpc-port "$grpc" \
        --max-memory 1GiB "$@" >"$out/logs/$name.log" 2>&1 &
    started_pid=$!
    kill_on_exit "$started_pid"
}

# wait_ready NAME PORT PID
wait_ready() {
    if ! wait_http "http://127.0.0.1:$2/readyz" 30 "$3"; then
        tail -n 30 "$out/logs/$1.log" >&2 || true
        die "$1 did not become ready (log above: $out/logs/$1.log)"
    fi
}

# metric_sum FILE NAME: sum of a metric over its series.
metric_sum() {
    awk -v m="$2" '$1 == m || index($1, m "{") == 1 { s += $NF } END { printf "%d", s }' "$1"
}

# --- single node -------------------------------------------------------------
for value in "${VALUE_SIZES[@]}"; do
    name="single-$value"
    mapfile -t p < <(free_port 2)
    log "$name: starting one node on 127.0.0.1:${p[0]} with --cores $cpus"
    start_node "$name" "${p[0]}" "${p[1]}" --cores "$cpus"
    pid="$started_pid"
    wait_ready "$name" "${p[0]}" "$pid"
    closed_then_open "$name" single "$value" "127.0.0.1:${p[0]}" --value-size "$value" \
        --read-ratio "$READ_RATIO" --concurrency "$CONCURRENCY" --prefill
    if [[ "$value" == 64 ]]; then
        sample="$(curl -sS -o /dev/null -w '%{http_code} body %{size_download} B, headers %{size_header} B' \
            "http://127.0.0.1:${p[0]}/api/get?key=key%3A0")"
        echo "nexuscache GET of a 64-byte value -> $sample" >>"$out/meta.txt"
    fi
    scrape "$name" "${p[0]}"
    log "$name: stopping the node"
    stop_checked "$pid" "$name"
done

# --- three-node cluster with etcd ------------------------------------------------
mapfile -t ep < <(free_port 2)
etcd_endpoint="127.0.0.1:${ep[0]}"
log "starting etcd on $etcd_endpoint (data in a temporary directory)"
"$etcd_bin" --name nc-bench --data-dir "$tmp/etcd" \
    --listen-client-urls "http://$etcd_endpoint" --advertise-client-urls "http://$etcd_endpoint" \
    --listen-peer-urls "http://127.0.0.1:${ep[1]}" --initial-advertise-peer-urls "http://127.0.0.1:${ep[1]}" \
    --initial-cluster "nc-bench=http://127.0.0.1:${ep[1]}" --initial-cluster-state new \
    --logger zap --log-outputs stderr </dev/null >"$out/logs/etcd.log" 2>&1 &
etcd_pid=$!
kill_on_exit "$etcd_pid"
deadline=$((SECONDS + 30))
until curl -sS --max-time 1 "http://$etcd_endpoint/health" 2>/dev/null | grep -q '"health":"true"'; do
    _alive "$etcd_pid" || die "etcd exited during start-up: $(tail -n 5 "$out/logs/etcd.log")"
    ((SECONDS < deadline)) || die "etcd not healthy within 30 s: $(tail -n 5 "$out/logs/etcd.log")"
    sleep 0.2
done
echo "etcd: $("$etcd_bin" --version | head -n1)" >>"$out/meta.txt"

for value in "${VALUE_SIZES[@]}"; do
    name="cluster-$value"
    mapfile -t p < <(free_port $((2 * CLUSTER_NODES)))
    pids=()
    http_ports=()
    targets=""
    for ((i = 0; i < CLUSTER_NODES; i++)); do
        http_ports+=("${p[$i]}")
        targets+="${targets:+,}127.0.0.1:${p[$i]}"
        start_node "$name-n$i" "${p[$i]}" "${p[$((CLUSTER_NODES + i))]}" --cores 1 --no-pin \
            --etcd "$etcd_endpoint" --node-name "bench-n$i"
        pids+=("$started_pid")
    done
    log "$name: $CLUSTER_NODES nodes (--cores 1 --no-pin) on $targets"
    for ((i = 0; i < CLUSTER_NODES; i++)); do
        wait_ready "$name-n$i" "${http_ports[$i]}" "${pids[$i]}"
    done
    # Every node must see the whole ring before the prefill, or keys would
    # be written to the wrong owner.
    deadline=$((SECONDS + 30))
    for ((i = 0; i < CLUSTER_NODES; i++)); do
        until [[ "$(curl -sS --max-time 2 "http://127.0.0.1:${http_ports[$i]}/metrics" 2>/dev/null |
            awk '$1 == "nexuscache_ring_members" { print $2 }')" == "$CLUSTER_NODES" ]]; do
            ((SECONDS < deadline)) || die "$name-n$i does not see $CLUSTER_NODES ring members within 30 s"
            sleep 0.2
        done
    done
    closed_then_open "$name" cluster "$value" "$targets" --value-size "$value" \
        --read-ratio "$READ_RATIO" --concurrency "$CONCURRENCY" --prefill
    scrape "$name" "${http_ports[@]}"
    log "$name: stopping the nodes"
    for ((i = 0; i < CLUSTER_NODES; i++)); do
        kill -TERM "${pids[$i]}" 2>/dev/null || true
    done
    for ((i = 0; i < CLUSTER_NODES; i++)); do
        stop_checked "${pids[$i]}" "$name-n$i"
    done
done
stop_pid "$etcd_pid" 10 || true

# --- server-side counters, then the report -------------------------------------
for f in "$out"/*.node*.metrics; do
    [[ -e "$f" ]] || continue
    # Forwarded requests that failed (timeout, unreachable, error): a failed
    # read is answered as a miss, a failed write as 503.
    peer_failed="$(awk 'index($1, "nexuscache_peer_requests_total{") == 1 && $1 !~ /status="ok"/ { s += $NF }
        END { printf "%d", s }' "$f")"
    printf '%s\titems=%s\tevictions=%s\thits=%s\tmisses=%s\tpeer_requests=%s\tpeer_failed=%s\n' \
        "$(basename "$f" .metrics)" \
        "$(metric_sum "$f" nexuscache_cache_items)" "$(metric_sum "$f" nexuscache_evictions_total)" \
        "$(metric_sum "$f" nexuscache_cache_hits_total)" "$(metric_sum "$f" nexuscache_cache_misses_total)" \
        "$(metric_sum "$f" nexuscache_peer_requests_total)" "$peer_failed"
done >"$out/server-counters.tsv"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/meta.txt"

python3 "$report_py" report "$out" >"$out/summary.md"
cat "$out/summary.md"
log "saved: ${out#"$REPO_ROOT"/}/summary.md (and every run's JSON, hdr log and command beside it)"
if grep -q $'\tfailed\t' "$manifest"; then
    warn "some runs failed: $(awk -F'\t' '$6 == "failed" { printf "%s ", $1 }' "$manifest")"
    exit 1
fi
