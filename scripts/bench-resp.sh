#!/usr/bin/env bash
# The Redis protocol: NexusCache beside redis-server, both driven by
# redis-benchmark, in one run.
#
#   scripts/bench-resp.sh [--requests N] [--tests LIST] [--pipelines LIST]
#                         [--rounds N] [--no-cluster] [--no-build]
#
#   --requests N      requests per redis-benchmark run (default 200000)
#   --tests LIST      tests, each its own redis-benchmark -t run (default
#                     set,get,mset; add incr once NexusCache has it). They
#                     run in redis-benchmark's own order (set, get, incr,
#                     mset), so GET finds the keys SET wrote, on both servers
#   --pipelines LIST  -P values (default 1,16: no pipelining, then 16
#                     commands in flight per connection)
#   --rounds N        rounds (default 3); the summary gives medians
#   --no-cluster      skip the 3-node cluster row
#   --no-build        use the existing target/release/nexuscache (NC_BIN
#                     overrides its path)
#
# Needs two allowed CPUs, S and C (the first two this process may use):
#   nexuscache    serve --cores 1 --cpuset S (its one core pinned to S)
#   redis-server  --save '' --appendonly no, under taskset -c S
#   redis-benchmark -c 50 -d 64 -r 100000 -t TEST [-P p], under taskset -c C
# Both servers run side by side for the whole run. A shared machine's
# noise comes and goes within seconds, so every (test, -P) pair is run
# NexusCache then redis-server, back to back, and the next round in the
# other order; each round gives a ratio, and the summary gives the median
# requests/s of each server, the ratio of the medians and the range of the
# per-round ratios (a wide range means the machine was busy). Beside
# requests/s, each run records the server's CPU time (utime + stime from
# /proc) per request: the cost of a request to the server, which another
# program on the client CPU does not change the way it changes req/s.
# The cluster row: three NexusCache nodes (--cores 1, static peers, all
# pinned to S, so they share one CPU as the single server did), each owning
# about a third of the keys; redis-benchmark against one node, so about two
# thirds of its requests are forwarded to their owner (one round).
# Prints the load average before and after (the machine may be shared).
# Results: bench-results/resp-<timestamp>/summary.md (+ raw CSV and logs).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

requests=200000
tests=set,get,mset
pipelines=1,16
rounds=3
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
    --rounds)
        (($# >= 2)) || die "$1 needs a value"
        need_int "$1" "$2"
        (($2 >= 1)) || die "$1 must be at least 1"
        rounds="$2"
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

# cpu_ticks PID: the process's CPU time so far (utime + stime, in clock
# ticks, all threads).
cpu_ticks() {
    # Fields after the ")" of the command name: state is 3rd, utime 14th.
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}

# bench LABEL PORT PID P TEST ROUND: one redis-benchmark run of one test;
# its CSV goes to the raw file and "LABEL,P,TEST,ROUND,RPS,CPU_US_PER_REQ"
# to results.csv (the CPU time is the server PID's over the run).
bench() {
    local label="$1" port="$2" pid="$3" p="$4" test="$5" round="$6"
    local raw="$out/$label-P$p-$test-r$round.csv" before after rps
    log "$label: redis-benchmark -P $p -t $test -n $requests (round $round)"
    before="$(cpu_ticks "$pid")"
    taskset -c "$client_cpu" redis-benchmark -h 127.0.0.1 -p "$port" -c 50 -d 64 -r 100000 \
        -n "$requests" -t "$test" -P "$p" --csv >"$raw" 2>"$out/$label-P$p-$test-r$round.err" ||
        die "redis-benchmark against $label failed (see $out/$label-P$p-$test-r$round.err)"
    after="$(cpu_ticks "$pid")"
    # "MSET (10 keys)" -> mset; header line skipped; one test per run.
    rps="$(awk -F'","' 'NR == 2 { print $2 }' "$raw")"
    [[ -n "$rps" ]] || die "no result from redis-benchmark against $label (see $raw)"
    awk -v ticks="$((after - before))" -v hz="$clock_hz" -v n="$requests" \
        -v row="$label,$p,$test,$round,$rps" \
        'BEGIN { printf "%s,%.2f\n", row, ticks / hz * 1e6 / n }' >>"$out/results.csv"
}

clock_hz="$(getconf CLK_TCK)"
# The tests in redis-benchmark's own order.
ordered_tests=()
IFS=, read -r -a wanted <<<"$tests"
for t in set get incr mset; do
    for w in "${wanted[@]}"; do [[ "$w" == "$t" ]] && ordered_tests+=("$t"); done
done
for w in "${wanted[@]}"; do
    [[ " ${ordered_tests[*]} " == *" $w "* ]] || ordered_tests+=("$w")
done

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
for round in $(seq "$rounds"); do
    for p in "${ps[@]}"; do
        for t in "${ordered_tests[@]}"; do
            if ((round % 2)); then
                bench nexuscache "$resp" "$nc_pid" "$p" "$t" "$round"
                bench redis "$redis_port" "$redis_pid" "$p" "$t" "$round"
            else
                bench redis "$redis_port" "$redis_pid" "$p" "$t" "$round"
                bench nexuscache "$resp" "$nc_pid" "$p" "$t" "$round"
            fi
        done
    done
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
        for t in "${ordered_tests[@]}"; do
            bench cluster3 "${cp[6]}" "${pids[0]}" "$p" "$t" 1
        done
    done
    for pid in "${pids[@]}"; do stop_pid "$pid"; done
fi
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$out" "$load_before" "$load_after" "$server_cpu" "$client_cpu" "$rounds" <<'PY'
import csv, statistics, sys
out, before, after, scpu, ccpu, rounds = sys.argv[1:]
rps, cpu = {}, {}
for label, p, test, rnd, r, c in csv.reader(open(f"{out}/results.csv")):
    key = (label, int(p), test)
    rps.setdefault(key, {})[int(rnd)] = float(r)
    cpu.setdefault(key, {})[int(rnd)] = float(c)
order = ["set", "get", "incr", "mset"]
tests = sorted({t for (_, _, t) in rps}, key=lambda t: order.index(t) if t in order else 9)
ps = sorted({p for (_, p, _) in rps})
med = lambda d, key: statistics.median(d[key].values()) if key in d else None
num = lambda v: f"{v:,.0f}" if v else "-"
us = lambda v: f"{v:.2f}" if v else "-"
lines = [
    "# RESP: NexusCache vs redis-server (redis-benchmark -c 50 -d 64 -r 100000)",
    "",
    f"Servers pinned to CPU {scpu}, redis-benchmark to CPU {ccpu}; {rounds} round(s), "
    "each test NexusCache and redis-server back to back (order alternating by round). "
    f"Load average before: {before}; after: {after}.",
    "",
    "req/s are medians over the rounds; ratio = NexusCache / redis-server "
    "(medians), with the lowest and highest per-round ratio; CPU us/req = the "
    "server's CPU time per request (median).",
    "",
    "| test | -P | NexusCache req/s | redis-server req/s | ratio | per-round ratios | "
    "NexusCache CPU us/req | redis-server CPU us/req | 3-node cluster req/s |",
    "|---|---|---|---|---|---|---|---|---|",
]
for p in ps:
    for t in tests:
        nk, rk, ck = ("nexuscache", p, t), ("redis", p, t), ("cluster3", p, t)
        nc, rd = med(rps, nk), med(rps, rk)
        ratio = f"{nc / rd:.2f}" if nc and rd else "-"
        per_round = "-"
        if nk in rps and rk in rps:
            rs = [rps[nk][r] / rps[rk][r] for r in sorted(rps[nk]) if r in rps[rk]]
            per_round = f"{min(rs):.2f}-{max(rs):.2f}" if rs else "-"
        lines.append(
            f"| {t} | {p} | {num(nc)} | {num(rd)} | {ratio} | {per_round} | "
            f"{us(med(cpu, nk))} | {us(med(cpu, rk))} | {num(med(rps, ck))} |"
        )
text = "\n".join(lines) + "\n"
open(f"{out}/summary.md", "w").write(text)
print(text)
PY
