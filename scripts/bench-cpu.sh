#!/usr/bin/env bash
# Server CPU time per request, NexusCache beside nginx, in one run:
#
#   scripts/bench-cpu.sh [--rate N] [--duration SECONDS] [--warmup SECONDS]
#                        [--rounds N] [--keys N] [--value-size BYTES]
#                        [--connections N] [--counts] [--no-build]
#
#   --rate N          open-loop GETs per second (default 30000)
#   --duration S      measured window per row and round (default 10)
#   --warmup S        load applied before the window, not measured (default 2)
#   --rounds N        times every row is measured; the table shows each
#                     round and the median (default 3)
#   --keys N          keys prefilled and read at random (default 1000)
#   --value-size B    bytes per value (default 64)
#   --connections N   keep-alive connections of the generator (default 64)
#   --counts          also count, per request and per row, the server's
#                     system calls (io_uring_enter, write = eventfd wake-ups,
#                     sendto, recvfrom, membarrier), context switches and
#                     function-call IPIs with `perf stat` over the window
#                     (needs perf; adds a little CPU of its own)
#   --no-build        use the existing target/release binaries
#                     (NC_BIN / NC_BENCH_BIN choose other binaries)
#
# Rows (all four servers run at once; only the measured one gets load):
#   nexuscache --cores 1 --cpuset 0      nginx, 1 worker pinned to CPU 0
#   nexuscache --cores 2 --cpuset 0,1    nginx, 2 workers pinned to CPUs 0 and 1
# nginx answers `return 200 "value=<V>"`: the same body bytes and
# Content-Type as NexusCache's GET /api/get hit.
#
# Load: nexuscache-bench in open loop (--rate, latency from each request's
# intended send time), GET /api/get?key=<uniform random prefilled key>, one
# worker thread, NOT pinned: it may run on either of CPUs 0 and 1 and so
# shares them with the server (with a 1-core server the scheduler mostly
# puts it on CPU 1; with 2 cores it competes with both).
#
# CPU per request: utime + stime of the server's process (all threads; for
# nginx the master plus every worker) read from /proc/<pid>/stat at the start
# and the end of the generator's measured period, divided by the requests
# answered in it (all must be hits, with no error). Cross-core ops per
# request (NexusCache rows) come from /metrics before and after the window.
# A row that fell short of the rate (a machine busy with other work) gets a
# warning; its req/s column shows what it achieved.
# Results also go to bench-results/cpu-<timestamp>.txt.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

rate=30000
duration=10
warmup=2
rounds=3
keys=1000
value_size=64
connections=64
build=1
counts=0

while (($#)); do
    case "$1" in
    --rate | --duration | --warmup | --rounds | --keys | --value-size | --connections)
        (($# >= 2)) || die "$1 needs a value"
        need_int "$1" "$2" "$([[ "$1" == --warmup ]] && echo 0 || echo 1)"
        case "$1" in
        --rate) rate="$2" ;;
        --duration) duration="$2" ;;
        --warmup) warmup="$2" ;;
        --rounds) rounds="$2" ;;
        --keys) keys="$2" ;;
        --value-size) value_size="$2" ;;
        --connections) connections="$2" ;;
        esac
        shift
        ;;
    --no-build) build=0 ;;
    --counts) counts=1 ;;
    -h | --help)
        sed -n '2,44s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
        exit 0
        ;;
    *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done
((duration >= 3)) || die "--duration must be at least 3 seconds"

mapfile -t allowed < <(allowed_cpus)
((${#allowed[@]} >= 2)) || die "needs 2 CPUs (this process may use ${#allowed[@]})"
cpu_a="${allowed[0]}"
cpu_b="${allowed[1]}"

bash scripts/setup.sh
needed=(nginx curl python3)
((counts == 0)) || needed+=(perf)
for c in "${needed[@]}"; do
    command -v "$c" >/dev/null 2>&1 || [[ -x "/usr/sbin/$c" ]] || die "$c not found after setup.sh"
done
node_and_bench_bins "$build"
raise_memlock
check_io_uring

tmp="$(mktemp -d -t nexuscache-bench-cpu.XXXXXX)"
on_exit "rm -rf '$tmp'"
mapfile -t ports < <(free_port 6)

# The value every key holds; nginx returns the same bytes. Alphanumeric: no
# escaping in a form body nor in nginx's quoted `return` string.
value="$(python3 -c 'import random, string, sys; r = random.Random(42); print("".join(r.choice(string.ascii_letters + string.digits) for _ in range(int(sys.argv[1]))))' "$value_size")"
body="value=$value"

# --- servers -------------------------------------------------------------------
declare -A pid_of port_of
start_nexuscache() { # NAME HTTP_PORT GRPC_PORT CORES CPUSET
    log "starting nexuscache ($1) on 127.0.0.1:$2 with --cores $4 --cpuset $5"
    RUST_LOG="${RUST_LOG:-warn}" "$nc_bin" serve --bind 127.0.0.1 --http-port "$2" --grpc-port "$3" \
        --cores "$4" --cpuset "$5" >"$tmp/$1.log" 2>&1 &
    pid_of[$1]=$!
    port_of[$1]=$2
    kill_on_exit "$!"
    if ! wait_http "http://127.0.0.1:$2/readyz" 30 "$!"; then
        tail -n 30 "$tmp/$1.log" >&2 || true
        die "nexuscache ($1) did not become ready"
    fi
    # Prefill: one keep-alive curl for every key.
    python3 - "$keys" "$value" "http://127.0.0.1:$2/api/set" >"$tmp/prefill.curl" <<'PY'
import sys
n, value, url = int(sys.argv[1]), sys.argv[2], sys.argv[3]
for i in range(n):
    sys.stdout.write(f'url = "{url}"\ndata = "key=k{i}&value={value}"\n'
                     'output = "/dev/null"\nwrite-out = "%{http_code}\\n"\n'
                     + ("next\n" if i != n - 1 else ""))
PY
    curl -sS --config "$tmp/prefill.curl" >"$tmp/prefill.codes" || die "prefill of $1 failed"
    [[ "$(grep -c '^200$' "$tmp/prefill.codes")" == "$keys" ]] || die "prefill of $1: not every key answered 200"
    [[ "$(curl -sS "http://127.0.0.1:$2/api/get?key=k$((keys - 1))")" == "$body" ]] ||
        die "nexuscache ($1): GET does not answer the prefilled value"
}
start_nexuscache nc1 "${ports[0]}" "${ports[1]}" 1 "$cpu_a"
start_nexuscache nc2 "${ports[2]}" "${ports[3]}" 2 "$cpu_a,$cpu_b"
start_nginx "$tmp/nginx1" "${ports[4]}" 1 "$body" "$tmp/nginx1/stdout.log" "$cpu_a"
pid_of[nginx1]=$NGINX_PID
port_of[nginx1]=${ports[4]}
start_nginx "$tmp/nginx2" "${ports[5]}" 2 "$body" "$tmp/nginx2/stdout.log" "$cpu_a" "$cpu_b"
pid_of[nginx2]=$NGINX_PID
port_of[nginx2]=${ports[5]}
[[ "$(curl -sS "http://127.0.0.1:${ports[4]}/api/get?key=k0")" == "$body" ]] || die "nginx body differs"

# --- measurement -------------------------------------------------------------
# The processes whose CPU time counts for a row: the server's own PID and
# its direct children (nginx's workers; NexusCache has none), found once
# after start-up by their parent PID (field 4 of /proc/PID/stat; the name in
# field 2 may hold spaces, so fields are counted after its parenthesis).
children_of() {
    local f stat rest
    for f in /proc/[0-9]*/stat; do
        stat="$(cat "$f" 2>/dev/null)" || continue
        rest="${stat##*) }"
        read -r -a a <<<"$rest"
        [[ "${a[1]}" != "$1" ]] || { f="${f#/proc/}"; echo "${f%/stat}"; }
    done
}
declare -A pids_of
for row in nc1 nc2 nginx1 nginx2; do
    pids_of[$row]="${pid_of[$row]} $(children_of "${pid_of[$row]}" | tr '\n' ' ')"
done
[[ "$(wc -w <<<"${pids_of[nginx2]}")" == 3 ]] || die "nginx2: expected a master and 2 workers, found PIDs ${pids_of[nginx2]}"
# cpu_ticks ROW: utime + stime (fields 14 and 15) summed over the row's
# processes; /proc/PID/stat of a process counts every thread it has or had.
cpu_ticks() {
    local total=0 pid stat
    for pid in ${pids_of[$1]}; do
        stat="$(<"/proc/$pid/stat")" || die "$1: process $pid is gone"
        read -r -a a <<<"${stat##*) }"
        total=$((total + a[11] + a[12]))
    done
    echo "$total"
}
clk_tck="$(getconf CLK_TCK)"
PERF_EVENTS="syscalls:sys_enter_io_uring_enter,syscalls:sys_enter_write,syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom,syscalls:sys_enter_writev,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_membarrier,context-switches,irq_vectors:call_function_single_entry"
# cross_core_ops ROW: NexusCache's ops sent to another core so far ("-" for nginx).
cross_core_ops() {
    [[ "$1" == nc* ]] || { echo -; return; }
    curl -sS --max-time 5 "http://127.0.0.1:${port_of[$1]}/metrics" |
        awk '/^nexuscache_cross_core_requests_total/ { s += $NF } END { printf "%d\n", s }'
}
now_ns() { date +%s%N; }

# measure ROW ROUND: one open-loop run; appends "row round us_per_req rps p50 p99 maxlag" to results.
measure() {
    local row="$1" round="$2" out="$tmp/$1-$2.json" bench_pid t0 t1 c0 c1
    log "$row round $round: ${rate} GET/s for ${warmup}s + ${duration}s"
    "$bench_bin" --targets "127.0.0.1:${port_of[$row]}" --protocol http --mode api \
        --threads 1 --connections "$connections" --concurrency "$connections" \
        --keys "$keys" --key-prefix k --read-ratio 1 --rate "$rate" \
        --warmup "${warmup}s" --duration "${duration}s" --quiet --json "$out" \
        >"$tmp/$row-$round.txt" 2>&1 &
    bench_pid=$!
    kill_on_exit "$bench_pid"
    # The window is the generator's measured period: from the end of its
    # warm-up (its connections are made in the first milliseconds) until it
    # exits, when every request it sent was answered.
    sleep "$warmup"
    local hops0 hops1 perf_pid=""
    hops0="$(cross_core_ops "$row")"
    c0="$(cpu_ticks "$row")"
    t0="$(now_ns)"
    if ((counts)); then
        perf stat -x, -e "$PERF_EVENTS" -p "$(tr -s ' ' ',' <<<"${pids_of[$row]% }")" \
            -o "$tmp/$row-$round.perf" -- sleep "$duration" 2>/dev/null &
        perf_pid=$!
        kill_on_exit "$perf_pid"
    fi
    wait "$bench_pid" || { cat "$tmp/$row-$round.txt" >&2; die "$row: nexuscache-bench failed"; }
    forget_pid "$bench_pid"
    c1="$(cpu_ticks "$row")"
    t1="$(now_ns)"
    hops1="$(cross_core_ops "$row")"
    if [[ -n "$perf_pid" ]]; then
        wait "$perf_pid" || true
        forget_pid "$perf_pid"
    fi
    python3 - "$out" "$rate" "$c0" "$c1" "$t0" "$t1" "$clk_tck" "$row" "$round" "$hops0" "$hops1" "$tmp/$row-$round.perf" >>"$tmp/results" <<'PY' ||
import json, os, sys
path, rate, c0, c1, t0, t1, tck, row, rnd, h0, h1, perf = sys.argv[1:]
j = json.load(open(path))
rate = float(rate)
errors = j["errors"]["total"]
rps = j["throughput_rps"]
if errors:
    sys.exit(f"{row}: {errors} errors: the CPU figure would not be per request served")
if rps < 0.97 * rate:
    print(f"warning: {row} round {rnd}: {rps:.0f} req/s of {rate:.0f} asked (generator or server short of CPU); "
          "CPU per request is still per request served", file=sys.stderr)
window_s = (int(t1) - int(t0)) / 1e9
cpu_s = (int(c1) - int(c0)) / int(tck)
lat = j["operations"]["read"]["latency_us"]
hits = j["operations"]["read"].get("hits", 0)
if hits != j["operations"]["read"]["count"]:
    sys.exit(f"{row}: {j['operations']['read']['count'] - hits} reads were not hits")
served = j["requests"]
hops = f"{(int(h1) - int(h0)) / served:.3f}" if h0 != "-" else "-"
counted = []
if os.path.exists(perf):
    # perf stat -x, lines: value,unit,event,...; the window is the same.
    for line in open(perf):
        f = line.strip().split(",")
        if len(f) > 2 and f[0].replace(".", "").isdigit():
            counted.append(f"{f[2].split(':')[-1].replace('sys_enter_', '')}={float(f[0]) / served:.3f}")
print(f"{row} {rnd} {cpu_s * 1e6 / served:.2f} {rps:.0f} {lat['p50']:.0f} {lat['p99']:.0f} {cpu_s / window_s * 100:.0f} {hops} {';'.join(counted) or '-'}")
PY
        die "$row round $round rejected (see above)"
}

rows=(nc1 nginx1 nc2 nginx2)
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
: >"$tmp/results"
for ((r = 1; r <= rounds; r++)); do
    # Each pair (nexuscache, its nginx) back to back; the order flips every
    # round so a change in background load does not always hit the same one.
    if ((r % 2)); then order=("${rows[@]}"); else order=(nginx1 nc1 nginx2 nc2); fi
    for row in "${order[@]}"; do measure "$row" "$r"; done
done
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

mkdir -p bench-results
report="bench-results/cpu-$(date -u +%Y%m%dT%H%M%SZ).txt"
python3 - "$tmp/results" "$rounds" "$rate" "$connections" "$keys" "$value_size" "$load_before" "$load_after" "$cpu_a" "$cpu_b" <<'PY' | tee "$report"
import statistics, sys
path, rounds, rate, conns, keys, vsize, lb, la, ca, cb = sys.argv[1:]
rounds = int(rounds)
res = {}
for line in open(path):
    row, rnd, us, rps, p50, p99, util, hops, counted = line.split()
    res[(row, int(rnd))] = (float(us), float(rps), float(p50), float(p99), float(util), hops, counted)
names = {
    "nc1": f"NexusCache --cores 1 --cpuset {ca}",
    "nc2": f"NexusCache --cores 2 --cpuset {ca},{cb}",
    "nginx1": f"nginx, 1 worker pinned ({ca})",
    "nginx2": f"nginx, 2 workers pinned ({ca},{cb})",
}
print(f"Server CPU per request: open loop {rate} GET/s, {conns} connections, {keys} keys of {vsize} B,")
print(f"nexuscache-bench 1 thread unpinned on CPUs {ca},{cb} (shares them with the server)")
print(f"load average before {lb}, after {la} (other processes share the machine)")
print()
hdr = " | ".join(f"r{i} us/req" for i in range(1, rounds + 1))
print(f"| server | {hdr} | median us/req | CPU % | req/s | p50 us | p99 us | cross-core ops/req |")
print("|---|" + "--:|" * (rounds + 6))
med = {}
for row in ("nc1", "nc2", "nginx1", "nginx2"):
    vals = [res[(row, r)] for r in range(1, rounds + 1)]
    med[row] = statistics.median(v[0] for v in vals)
    cells = " | ".join(f"{v[0]:.1f}" for v in vals)
    print(f"| {names[row]} | {cells} | {med[row]:.1f} | {statistics.median(v[4] for v in vals):.0f} "
          f"| {statistics.median(v[1] for v in vals):.0f} | {statistics.median(v[2] for v in vals):.0f} | {statistics.median(v[3] for v in vals):.0f} | {vals[-1][5]} |")
print()
for nc, ng, target in (("nc1", "nginx1", 1.0), ("nc2", "nginx2", 1.2)):
    per = [res[(nc, r)][0] / res[(ng, r)][0] for r in range(1, rounds + 1)]
    ratio = med[nc] / med[ng]
    verdict = "meets" if ratio <= target else "misses"
    print(f"{nc}/{ng}: {ratio:.2f} x (medians; per round {', '.join(f'{p:.2f}' for p in per)}); target <= {target} x: {verdict}")
if any(v[6] != "-" for v in res.values()):
    print()
    print("per request over each window (perf stat; write = eventfd wake-ups for NexusCache):")
    for (row, rnd), v in sorted(res.items()):
        print(f"  {row:7s} r{rnd}: {v[6].replace(';', '  ')}")
print(f"cost of the 2nd core: nexuscache +{(med['nc2'] / med['nc1'] - 1) * 100:.0f}%, nginx +{(med['nginx2'] / med['nginx1'] - 1) * 100:.0f}%")
PY
log "saved $report"
