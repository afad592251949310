#!/usr/bin/env bash
# HTTP GET throughput of one NexusCache node against nginx returning a fixed
# body, on the same machine, in one run:
#
#   scripts/bench-http.sh [--keys N] [--value-size BYTES] [--duration SECONDS]
#                         [--connections N] [--threads N] [--warmup SECONDS]
#                         [--rounds N] [--cores N] [--shared-cpus]
#                         [--no-build] [--strict]
#
#   --keys N          keys prefilled and read at random (default 1000)
#   --value-size B    value bytes per key (default 64)
#   --duration S      measured wrk run per target (default 10)
#   --connections N   wrk keep-alive connections (default 50)
#   --threads N       wrk threads (default 1)
#   --warmup S        unmeasured wrk run per target before measuring (default 2)
#   --rounds N        measured runs per target, alternating which goes first;
#                     the table's verdict uses each target's median (default 1)
#   --cores N         NexusCache data cores AND nginx worker processes
#                     (default: every server CPU, see below)
#   --shared-cpus     let wrk share the servers' CPUs (the default gives wrk
#                     a CPU of its own when there are 2 or more)
#   --no-build        use the existing target/release/nexuscache
#   --strict          exit 1 when nexuscache/nginx req/s is below 0.8
#
# CPUs: by default wrk is pinned to the last CPU and both servers to the
# others (NexusCache with --cpuset, nginx with worker_cpu_affinity), so the
# load generator does not compete with the server it measures; on 2 CPUs
# each server gets 1. --shared-cpus runs both servers on every CPU and wrk
# unpinned among them.
#
# nginx is the baseline: `return 200 "value=<V>"` with the same body bytes and
# Content-Type as NexusCache's GET /api/get, worker_processes = CPUs, no access
# log, keep-alive without a request limit. Both are driven by the same wrk Lua
# script (GET /api/get?key=<random existing key>; nginx ignores the path).
# Results also go to bench-results/http-<timestamp>.txt.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TARGET_RATIO=0.8
keys=1000
value_size=64
duration=10
connections=50
threads=1
warmup=2
rounds=1
build=1
strict=0
shared_cpus=0
cores_arg=""

while (($#)); do
    case "$1" in
    --keys | --value-size | --duration | --connections | --threads | --warmup | --rounds | --cores)
        (($# >= 2)) || die "$1 needs a value"
        need_int "$1" "$2"
        case "$1" in
        --keys) keys="$2" ;;
        --value-size) value_size="$2" ;;
        --duration) duration="$2" ;;
        --connections) connections="$2" ;;
        --threads) threads="$2" ;;
        --warmup) warmup="$2" ;;
        --rounds) rounds="$2" ;;
        --cores) cores_arg="$2" ;;
        esac
        shift
        ;;
    --no-build) build=0 ;;
    --strict) strict=1 ;;
    --shared-cpus) shared_cpus=1 ;;
    -h | --help)
        sed -n '2,35s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
        exit 0
        ;;
    *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done
# wrk gives each thread connections/threads connections; fewer is an error.
((connections >= threads)) || die "--connections must be >= --threads"

# The CPUs this script may use (its affinity: all online CPUs unless it runs
# under taskset or a cpuset), in order.
mapfile -t allowed_cpus < <(allowed_cpus)
online="${#allowed_cpus[@]}"
if ((shared_cpus || online < 2)); then
    server_cpu_count="$online"
    client_cpu=""
else
    server_cpu_count=$((online - 1))
    client_cpu="${allowed_cpus[online - 1]}"
fi
cpus="${cores_arg:-$server_cpu_count}"
((cpus >= 1)) || die "--cores must be at least 1"
if ((cpus > server_cpu_count)); then
    reserved=""
    [[ -z "$client_cpu" ]] || reserved=" (CPU $client_cpu is kept for wrk; see --shared-cpus)"
    die "--cores $cpus: only $server_cpu_count CPU(s) for the servers$reserved"
fi
# The servers' CPUs: the first $cpus allowed ones.
server_cpus=("${allowed_cpus[@]:0:cpus}")
cpuset="$(IFS=,; echo "${server_cpus[*]}")"
if [[ -n "$client_cpu" ]]; then
    placement="servers on CPU(s) $cpuset, wrk pinned to CPU $client_cpu"
else
    placement="servers on CPU(s) $cpuset, wrk unpinned (shares them)"
fi

bash scripts/setup.sh
ensure_cargo
for c in nginx wrk curl python3 taskset; do
    command -v "$c" >/dev/null 2>&1 || [[ -x "/usr/sbin/$c" ]] || die "$c not found after setup.sh"
done
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"

release_bins "$build" nexuscache
nc_bin="$(cargo_target_dir)/release/nexuscache"
raise_memlock
check_io_uring

tmp="$(mktemp -d -t nexuscache-bench-http.XXXXXX)"
on_exit "rm -rf '$tmp'"

ports_out="$(free_port 2)" || die "could not pick free ports"
mapfile -t ports <<<"$ports_out"
nc_port="${ports[0]}"
nginx_port="${ports[1]}"

# One value for every key: alphanumeric, so it needs no escaping in a form
# body nor inside nginx's quoted `return` string (where `$` would start a
# variable). Distinct values per key would not change what is measured.
value="$(python3 -c 'import random, string, sys; r = random.Random(42); print("".join(r.choice(string.ascii_letters + string.digits) for _ in range(int(sys.argv[1]))))' "$value_size")"
body="value=$value"
body_len=${#body}

# --- NexusCache --------------------------------------------------------------
# RUST_LOG=warn unless set: per-request logging would measure the logger.
log "starting nexuscache on 127.0.0.1:$nc_port with --cores $cpus --cpuset $cpuset ($placement)"
RUST_LOG="${RUST_LOG:-warn}" "$nc_bin" serve --bind 127.0.0.1 --http-port "$nc_port" --cores "$cpus" --cpuset "$cpuset" \
    >"$tmp/nexuscache.log" 2>&1 &
nc_pid=$!
kill_on_exit "$nc_pid"
if ! wait_http "http://127.0.0.1:$nc_port/readyz" 30 "$nc_pid"; then
    tail -n 30 "$tmp/nexuscache.log" >&2 || true
    die "nexuscache did not become ready (log above)"
fi

# --- nginx -------------------------------------------------------------------
start_nginx "$tmp/nginx" "$nginx_port" "$cpus" "$body" "$tmp/nginx/stdout.log" "${server_cpus[@]}"

# --- prefill -----------------------------------------------------------------
# One curl process over one keep-alive connection for all keys: a curl per key
# would take minutes for large --keys. Each request prints its status code.
log "prefilling $keys keys of $value_size bytes"
python3 - "$keys" "$value" "http://127.0.0.1:$nc_port/api/set" >"$tmp/prefill.curl" <<'PY'
import sys
n, value, url = int(sys.argv[1]), sys.argv[2], sys.argv[3]
out = sys.stdout
for i in range(n):
    out.write(f'url = "{url}"\ndata = "key=k{i}&value={value}"\n'
              'output = "/dev/null"\nwrite-out = "%{http_code}\\n"\n')
    if i != n - 1:
        out.write("next\n")
PY
curl -sS --config "$tmp/prefill.curl" >"$tmp/prefill.codes" ||
    die "prefill failed (curl exit $?)"
bad="$(grep -cv '^200$' "$tmp/prefill.codes" || true)"
got="$(wc -l <"$tmp/prefill.codes")"
((got == keys && bad == 0)) ||
    die "prefill: $got responses for $keys keys, $bad not 200 (first: $(grep -v '^200$' "$tmp/prefill.codes" | head -n1))"

# --- verify: we must benchmark hits of identical responses -------------------
# fetch URL -> "status size content-type header-bytes", body in $tmp/sample
fetch() {
    curl -sS -o "$tmp/sample" -w '%{http_code} %{size_download} %{content_type}|%{size_header}' "$1"
}
verify() {
    local name="$1" url="$2" out code size ctype hdr
    out="$(fetch "$url")" || die "$name: GET $url failed"
    code="${out%% *}"
    out="${out#* }"
    size="${out%% *}"
    out="${out#* }"
    ctype="${out%|*}"
    hdr="${out##*|}"
    [[ "$code" == 200 ]] || die "$name: GET $url answered $code, expected 200 (a miss would benchmark 404s)"
    [[ "$size" == "$body_len" ]] || die "$name: body is $size bytes, expected $body_len"
    cmp -s "$tmp/sample" <(printf '%s' "$body") || die "$name: body differs from 'value=<value>'"
    [[ "$ctype" == "text/plain; charset=utf-8" ]] || die "$name: Content-Type is '$ctype', expected 'text/plain; charset=utf-8'"
    printf '%-11s GET -> %s, body %s bytes, headers %s bytes, Content-Type: %s\n' "$name" "$code" "$size" "$hdr" "$ctype"
}
verification="$(
    verify nexuscache "http://127.0.0.1:$nc_port/api/get?key=k0"
    verify nexuscache "http://127.0.0.1:$nc_port/api/get?key=k$((keys - 1))"
    verify nginx "http://127.0.0.1:$nginx_port/api/get?key=k0"
)"
printf '%s\n' "$verification" >&2

# --- wrk -----------------------------------------------------------------------
# request(): a random existing key per request on keep-alive connections.
# done(): one machine-readable line (wrk's human output mixes units: us/ms/s).
cat >"$tmp/get.lua" <<EOF
local nkeys = $keys
local counter = 0
function setup(thread)
    counter = counter + 1
    thread:set("seed", counter)
end
function init(args)
    math.randomseed(os.time() * 1000 + (seed or 0))
end
function request()
    return wrk.format("GET", "/api/get?key=k" .. math.random(0, nkeys - 1))
end
function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        "BENCH_RESULT requests=%d duration_us=%d p50_us=%.1f p99_us=%.1f status=%d connect=%d read=%d write=%d timeout=%d\n",
        summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
        e.status, e.connect, e.read, e.write, e.timeout))
end
EOF

# fail NAME OUTFILE MESSAGE: show what wrk and the server said, then die.
fail() {
    cat "$2" >&2
    if [[ "$1" == nexuscache ]]; then
        kill -0 "$nc_pid" 2>/dev/null || warn "nexuscache is no longer running"
        echo "--- last lines of the nexuscache log ---" >&2
        tail -n 20 "$tmp/nexuscache.log" >&2 || true
    else
        echo "--- nginx error log ---" >&2
        tail -n 20 "$tmp/nginx/logs/error.log" >&2 || true
    fi
    die "$1: $3"
}

# run_wrk NAME PORT SECONDS OUTFILE: fails on any non-2xx/3xx or socket error,
# since a rate made of errors is not a rate of cache hits.
run_wrk() {
    local name="$1" port="$2" secs="$3" out="$4" line wrk_pid rc=0
    # In the background and waited for, so that a SIGTERM to this script is
    # handled at once (bash defers traps while a foreground child runs) and
    # the exit handler stops wrk too.
    ${client_cpu:+taskset -c "$client_cpu"} wrk -t"$threads" -c"$connections" -d"${secs}s" --latency -s "$tmp/get.lua" \
        "http://127.0.0.1:$port/" >"$out" 2>&1 &
    wrk_pid=$!
    kill_on_exit "$wrk_pid"
    wait "$wrk_pid" || rc=$?
    forget_pid "$wrk_pid"
    ((rc == 0)) || fail "$name" "$out" "wrk failed (exit $rc)"
    if line="$(grep 'Non-2xx or 3xx responses' "$out")"; then
        fail "$name" "$out" "wrk saw error responses ($(echo "$line" | tr -s ' '))"
    fi
    if line="$(grep 'Socket errors' "$out")"; then
        fail "$name" "$out" "wrk saw socket errors ($(echo "$line" | tr -s ' '))"
    fi
    grep -q '^BENCH_RESULT ' "$out" || fail "$name" "$out" "wrk printed no result line"
}

# result FILE FIELD: a field of the BENCH_RESULT line.
result() { grep '^BENCH_RESULT ' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }

# Both servers stay up; rounds alternate which goes first, so a change in
# background load (other processes on a shared machine) hits both alike. An
# idle node costs next to nothing (checked below: its CPU time while nginx is
# measured is reported). Warm-up once per target, before its first run.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
clk_tck="$(getconf CLK_TCK)"
loadavg_before="$(cut -d' ' -f1-3 /proc/loadavg)"
nc_idle_ticks=0
for ((r = 1; r <= rounds; r++)); do
    order=(nexuscache nginx)
    ((r % 2)) || order=(nginx nexuscache)
    for t in "${order[@]}"; do
        if [[ "$t" == nexuscache ]]; then port="$nc_port"; else port="$nginx_port"; fi
        if ((r == 1)); then
            log "$t: warm-up ${warmup}s"
            run_wrk "$t" "$port" "$warmup" "$tmp/wrk-$t-warmup.txt"
        fi
        log "$t: round $r/$rounds, ${duration}s (wrk -t$threads -c$connections)"
        before="$(cpu_ticks "$nc_pid")"
        run_wrk "$t" "$port" "$duration" "$tmp/wrk-$t-$r.txt"
        if [[ "$t" == nginx ]]; then
            nc_idle_ticks=$((nc_idle_ticks + $(cpu_ticks "$nc_pid") - before))
        fi
    done
done
loadavg_after="$(cut -d' ' -f1-3 /proc/loadavg)"

metrics_note=""
if curl -sS -o "$tmp/metrics.txt" --max-time 5 "http://127.0.0.1:$nc_port/metrics"; then
    # Every benchmark GET should have been a hit.
    hits="$(awk '/^nexuscache_cache_hits_total/ {s += $NF} END {printf "%d", s}' "$tmp/metrics.txt")"
    misses="$(awk '/^nexuscache_cache_misses_total/ {s += $NF} END {printf "%d", s}' "$tmp/metrics.txt")"
    metrics_note="nexuscache /metrics after the runs: cache hits $hits, misses $misses"
    if ((misses > 0)); then
        warn "nexuscache counted $misses cache misses: some benchmark GETs were not hits"
    fi
fi
# The SIGTERM also checks that the node drains and exits 0.
log "stopping nexuscache (SIGTERM)"
nc_rc=0
stop_pid "$nc_pid" 15 || nc_rc=$?
((nc_rc == 0)) || warn "nexuscache exited with status $nc_rc after SIGTERM (expected 0); log: $(tail -n 5 "$tmp/nexuscache.log" | tr '\n' ' ')"

# --- report --------------------------------------------------------------------
rps() { awk -v req="$(result "$1" requests)" -v us="$(result "$1" duration_us)" 'BEGIN { printf "%.2f", req / (us / 1e6) }'; }
row() {
    awk -v name="$2" -v rps="$(rps "$1")" -v p50="$(result "$1" p50_us)" -v p99="$(result "$1" p99_us)" \
        'BEGIN { printf "%-16s %12.0f %10.1f us %10.1f us\n", name, rps, p50, p99 }'
}
# median_run TARGET: the round whose req/s is the median (lower middle).
median_run() {
    local t="$1" r
    for ((r = 1; r <= rounds; r++)); do
        printf '%s %s\n' "$(rps "$tmp/wrk-$t-$r.txt")" "$r"
    done | sort -n | awk -v n="$rounds" 'NR == int((n + 1) / 2) { print $2 }'
}
nc_best="$(median_run nexuscache)"
nginx_best="$(median_run nginx)"
nc_rps="$(rps "$tmp/wrk-nexuscache-$nc_best.txt")"
nginx_rps="$(rps "$tmp/wrk-nginx-$nginx_best.txt")"
ratio="$(awk -v a="$nc_rps" -v b="$nginx_rps" 'BEGIN { printf "%.3f", a / b }')"
if awk -v r="$ratio" -v t="$TARGET_RATIO" 'BEGIN { exit !(r >= t) }'; then
    verdict="PASS (>= $TARGET_RATIO)"
    pass=1
else
    verdict="BELOW TARGET (< $TARGET_RATIO)"
    pass=0
fi
idle_pct="$(awk -v t="$nc_idle_ticks" -v hz="$clk_tck" -v s="$((duration * rounds))" 'BEGIN { printf "%.1f", 100 * t / hz / s }')"

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p bench-results
report="bench-results/http-$stamp.txt"
{
    echo "NexusCache vs nginx, HTTP GET of a cached ${value_size}-byte value"
    echo "date:        $stamp"
    echo "commit:      $(git rev-parse --short HEAD 2>/dev/null || echo none)$(git diff --quiet HEAD -- src 2>/dev/null || echo ' (src modified)')"
    echo "machine:     $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1), kernel $(uname -r)"
    echo "load avg:    $loadavg_before before, $loadavg_after after (other processes' work skews results)"
    echo "CPUs:        $placement"
    echo "nexuscache:  --cores $cpus --cpuset $cpuset, $keys keys prefilled, value $value_size bytes; exit status after SIGTERM: $nc_rc"
    # Settings that came from the environment rather than from this script.
    env_set="$(env | grep -E '^(NEXUSCACHE_|NC_|RUST_LOG=)' | sort | tr '\n' ' ' || true)"
    echo "env:         ${env_set:-(none)}"
    echo "nginx:       $("$nginx_bin" -v 2>&1 | sed 's/^nginx version: //'), worker_processes $cpus pinned like NexusCache's cores, return 200 (body $body_len bytes)"
    echo "load:        $(wrk -v 2>&1 | head -n1 | cut -d' ' -f1-2), -t$threads -c$connections -d${duration}s x $rounds round(s) after ${warmup}s warm-up, random key of $keys per request, keep-alive"
    echo
    echo "$verification"
    [[ -z "$metrics_note" ]] || echo "$metrics_note"
    echo "idle nexuscache used ${idle_pct}% of one CPU while nginx was measured"
    echo
    printf '%-16s %12s %13s %13s\n' target 'req/s' p50 p99
    if ((rounds > 1)); then
        for ((r = 1; r <= rounds; r++)); do
            row "$tmp/wrk-nexuscache-$r.txt" "nexuscache #$r"
            row "$tmp/wrk-nginx-$r.txt" "nginx #$r"
        done
        echo "median round:"
    fi
    row "$tmp/wrk-nexuscache-$nc_best.txt" nexuscache
    row "$tmp/wrk-nginx-$nginx_best.txt" nginx
    echo
    echo "ratio nexuscache/nginx req/s: $ratio  -> $verdict"
    echo
    for ((r = 1; r <= rounds; r++)); do
        for t in nexuscache nginx; do
            echo "--- wrk output: $t, round $r ---"
            grep -v '^BENCH_RESULT ' "$tmp/wrk-$t-$r.txt"
        done
    done
} >"$report"

# The summary (everything before the raw wrk output) on stdout.
sed '/^--- wrk output/,$d' "$report"
echo "full report: $report"

if ((strict && !pass)); then
    exit 1
fi
