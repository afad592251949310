#!/usr/bin/env bash
# The Redis protocol: NexusCache beside redis-server, both driven by
# redis-benchmark, in one run.
#
#   scripts/bench-resp.sh [--requests N] [--tests LIST] [--pipelines LIST]
#                         [--no-cluster] [--no-build]
#
#   --requests N      requests per redis-benchmark run (default 200000)
#   --tests LIST      redis-benchmark -t list (default get,set,mset; add incr
#                     once NexusCache has it)
#   --pipelines LIST  -P values, one run each (default 1,16: no pipelining,
#                     then 16 commands in flight per connection)
#   --no-cluster      skip the 3-node cluster row
#   --no-build        use the existing target/release/nexuscache (NC_BIN
#                     overrides its path)
#
# Needs two allowed CPUs, S and C (the first two this process may use):
#   nexuscache    serve --cores 1 --cpuset S (its one core pinned to S)
#   redis-server  --save '' --appendonly no, under taskset -c S
#   redis-benchmark -c 50 -d 64 -r 100000 -t LIST [-P p], under taskset -c C
# Each pipeline setting runs NexusCache, then redis-server, back to back.
# The cluster row: three NexusCache nodes (--cores 1, static peers, all
# pinned to S, so they share one CPU as the single server did), each owning
# about a third of the keys; redis-benchmark against one node, so about two
# thirds of its requests are forwarded to their owner. Prints requests/s
# per test for each server and NexusCache / redis-server (1.0 = as fast),
# and the load average before and after (the machine may be shared).
# Results: bench-results/resp-<timestamp>/summary.md (+ raw CSV and logs).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

requests=200000
tests=get,set,mset
pipelines=1,16
cluster=1
build=1
while (($#)); do
    case "$1" in
    --requests)
        (($# >= 2)) || die "$1 needs a value"
        need_int "$1" "$2"
        requests="$2"
        shift
        ;;
    --tests)
        (($# >= 2)) || die "$1 needs a value"
        tests="$2"
        shift
        ;;
    --pipelines)
        (($# >= 2)) || die "$1 needs a value"
        IFS=, read -r -a ps <<<"$2"
        for p in "${ps[@]}"; do need_int "$1" "$p"; done
        pipelines="$2"
        shift
        ;;
    --no-cluster) cluster=0 ;;
    --no-build) build=0 ;;
    -h | --help)
        awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"
        exit 0
        ;;
    *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done

LOG_TAG=bench-resp
for c in redis-server redis-benchmark redis-cli curl taskset python3; do
    command -v "$c" >/dev/null 2>&1 || die "$c not found (scripts/setup.sh installs it)"
done
cd "$REPO_ROOT"
raise_memlock
check_io_uring
release_bins "$build" nexuscache
nc_bin="${NC_BIN:-$(cargo_target_dir)/release/nexuscache}"

mapfile -t cpus < <(allowed_cpus)
((${#cpus[@]} >= 2)) || die "needs two CPUs (one for the servers, one for redis-benchmark); have ${cpus[*]}"
server_cpu="${cpus[0]}"
client_cpu="${cpus[1]}"
out="bench-results/resp-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
log "results in $out; servers on CPU $server_cpu, redis-benchmark on CPU $client_cpu"
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"

# start_node NAME HTTP GRPC RESP [FLAGS...]: one NexusCache node pinned to
# the server CPU; sets NODE_PID (not in a subshell: the exit handler must
# know the PID).
start_node() {
    local name="$1" http="$2" grpc="$3" resp="$4"
    shift 4
    NO_COLOR=1 RUST_LOG=warn "$nc_bin" serve --http-port "$http" --grpc-port "$grpc" \
        --resp-port "$resp" --node-name "$name" --cores 1 --cpuset "$server_cpu" \
        --max-memory 1GiB "$@" </dev/null >"$out/$name.log" 2>&1 &
    local pid=$!
    kill_on_exit "$pid"
    wait_http "http://127.0.0.1:$http/readyz" 30 "$pid" || die "$name did not become ready (log: $out/$name.log)"
    NODE_PID="$pid"
}

# bench LABEL PORT P: one redis-benchmark run; its CSV goes to the raw file
# and "LABEL,P,TEST,RPS" lines to results.csv.
bench() {
    local label="$1" port="$2" p="$3" raw="$out/$1-P$3.csv"
    log "$label: redis-benchmark -P $p -t $tests -n $requests"
    taskset -c "$client_cpu" redis-benchmark -h 127.0.0.1 -p "$port" -c 50 -d 64 -r 100000 \
        -n "$requests" -t "$tests" -P "$p" --csv >"$raw" 2>"$out/$1-P$3.err" ||
        die "redis-benchmark against $label failed (see $out/$1-P$3.err)"
    # "MSET (10 keys)" -> mset; header line skipped.
    awk -F'","' -v label="$label" -v p="$p" 'NR > 1 {
        test = tolower($1); sub(/^"/, "", test); sub(/ .*/, "", test)
        print label "," p "," test "," $2
    }' "$raw" >>"$out/results.csv"
}

: >"$out/results.csv"
read -r http grpc resp redis_port < <(free_port 4 | paste -sd' ')
start_node nexuscache "$http" "$grpc" "$resp"
nc_pid="$NODE_PID"
taskset -c "$server_cpu" redis-server --bind 127.0.0.1 --port "$redis_port" --save '' \
    --appendonly no --daemonize no --dir "$out" >"$out/redis.log" 2>&1 &
redis_pid=$!
kill_on_exit "$redis_pid"
for _ in $(seq 100); do
    redis-cli -p "$redis_port" PING >/dev/null 2>&1 && break
    sleep 0.1
done
redis-cli -p "$redis_port" PING >/dev/null 2>&1 || die "redis-server did not start (log: $out/redis.log)"

IFS=, read -r -a ps <<<"$pipelines"
for p in "${ps[@]}"; do
    bench nexuscache "$resp" "$p"
    bench redis "$redis_port" "$p"
done
stop_pid "$nc_pid"
stop_pid "$redis_pid"

if ((cluster)); then
    mapfile -t cp < <(free_port 9)
    peers=""
    for i in 0 1 2; do
        peers+="${peers:+,}n$i=127.0.0.1:${cp[$i]}/127.0.0.1:${cp[$((i + 3))]}@1"
    done
    pids=()
    for i in 0 1 2; do
        others="$(tr ',' '\n' <<<"$peers" | grep -v "^n$i=" | paste -sd,)"
        start_node "n$i" "${cp[$i]}" "${cp[$((i + 3))]}" "${cp[$((i + 6))]}" --peers "$others"
        pids+=("$NODE_PID")
    done
    # Every node sees three members before the run.
    for i in 0 1 2; do
        for _ in $(seq 100); do
            curl -s "http://127.0.0.1:${cp[$i]}/metrics" | grep -q '^nexuscache_ring_members{core="0"} 3' && break
            sleep 0.1
        done
    done
    for p in "${ps[@]}"; do
        bench cluster3 "${cp[6]}" "$p"
    done
    for pid in "${pids[@]}"; do stop_pid "$pid"; done
fi
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$out" "$load_before" "$load_after" "$server_cpu" "$client_cpu" <<'PY'
import csv, sys
out, before, after, scpu, ccpu = sys.argv[1:]
rows = {}
for label, p, test, rps in csv.reader(open(f"{out}/results.csv")):
    rows[(label, int(p), test)] = float(rps)
tests = sorted({t for (_, _, t) in rows}, key=lambda t: ["get", "set", "incr", "mset"].index(t) if t in ["get", "set", "incr", "mset"] else 9)
ps = sorted({p for (_, p, _) in rows})
lines = [
    "# RESP: NexusCache vs redis-server (redis-benchmark -c 50 -d 64 -r 100000)",
    "",
    f"Servers pinned to CPU {scpu}, redis-benchmark to CPU {ccpu}. "
    f"Load average before: {before}; after: {after}.",
    "",
    "| test | -P | NexusCache req/s | redis-server req/s | ratio | 3-node cluster req/s |",
    "|---|---|---|---|---|---|",
]
for p in ps:
    for t in tests:
        nc = rows.get(("nexuscache", p, t))
        rd = rows.get(("redis", p, t))
        cl = rows.get(("cluster3", p, t))
        ratio = f"{nc / rd:.2f}" if nc and rd else "-"
        fmt = lambda v: f"{v:,.0f}" if v else "-"
        lines.append(f"| {t} | {p} | {fmt(nc)} | {fmt(rd)} | {ratio} | {fmt(cl)} |")
text = "\n".join(lines) + "\n"
open(f"{out}/summary.md", "w").write(text)
print(text)
PY
