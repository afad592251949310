#!/usr/bin/env bash
# Checks that nexuscache-bench is not the bottleneck: drives one nginx
# (fixed 64-byte body) with wrk and with nexuscache-bench under the same
# settings, one after the other, and prints both req/s and their ratio.
# Target: ratio >= 0.9.
#
#   bench/compare-nginx.sh            # 10 s each, 1 thread, 50 connections
#   DURATION=20 ROUNDS=3 bench/compare-nginx.sh
#
# Env: DURATION (seconds, default 10), CONNECTIONS (default 50),
#      ROUNDS (wrk/bench pairs, default 1; the ratio uses the sums),
#      BENCH_BIN (default: target/release/nexuscache-bench, built if missing).
# Only 127.0.0.1 is used. Only processes this script started are stopped.
set -euo pipefail

DURATION="${DURATION:-10}"
CONNECTIONS="${CONNECTIONS:-50}"
ROUNDS="${ROUNDS:-1}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH_BIN="${BENCH_BIN:-$REPO_ROOT/target/release/nexuscache-bench}"

need_apt() {
    # The project's installer keeps Debian's postinst from starting nginx as
    # a system service (it would hold port 80) and installs only what is
    # missing; it needs root like any apt-get.
    if [ "$(id -u)" -ne 0 ]; then
        echo "compare-nginx: $1 missing and not root; install package $2" >&2
        exit 1
    fi
    echo "compare-nginx: $1 missing; running scripts/setup.sh ..." >&2
    bash "$REPO_ROOT/scripts/setup.sh" >&2
}

NGINX_BIN="$(command -v nginx || true)"
[ -z "$NGINX_BIN" ] && [ -x /usr/sbin/nginx ] && NGINX_BIN=/usr/sbin/nginx
if [ -z "$NGINX_BIN" ]; then
    need_apt nginx nginx-light
    NGINX_BIN="$(command -v nginx || echo /usr/sbin/nginx)"
fi
command -v wrk >/dev/null || need_apt wrk wrk
command -v python3 >/dev/null || need_apt python3 python3

if [ ! -x "$BENCH_BIN" ]; then
    echo "compare-nginx: building nexuscache-bench ..." >&2
    (cd "$REPO_ROOT" && cargo build --release -p nexuscache-bench)
fi

WORKDIR="$(mktemp -d /tmp/compare-nginx.XXXXXX)"
NGINX_PID=""
cleanup() {
    if [ -n "$NGINX_PID" ] && kill -0 "$NGINX_PID" 2>/dev/null; then
        kill -TERM "$NGINX_PID" 2>/dev/null || true
        wait "$NGINX_PID" 2>/dev/null || true
    fi
    rm -rf "$WORKDIR"
}
trap cleanup EXIT INT TERM

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
CPUS="$(nproc)"
BODY="nexuscache-bench nginx baseline: a fixed body of 64 bytes......."

mkdir -p "$WORKDIR/logs" "$WORKDIR/tmp"
cat >"$WORKDIR/nginx.conf" <<EOF
worker_processes $CPUS;
daemon off;
master_process on;
pid $WORKDIR/nginx.pid;
error_log $WORKDIR/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000000;
    keepalive_timeout 120s;
    client_body_temp_path $WORKDIR/tmp/body;
    proxy_temp_path $WORKDIR/tmp/proxy;
    fastcgi_temp_path $WORKDIR/tmp/fastcgi;
    uwsgi_temp_path $WORKDIR/tmp/uwsgi;
    scgi_temp_path $WORKDIR/tmp/scgi;
    server {
        listen 127.0.0.1:$PORT;
        location / {
            default_type text/plain;
            return 200 "$BODY";
        }
    }
}
EOF

"$NGINX_BIN" -p "$WORKDIR" -c "$WORKDIR/nginx.conf" -e "$WORKDIR/logs/error.log" &
NGINX_PID=$!
for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
    kill -0 "$NGINX_PID" 2>/dev/null || { cat "$WORKDIR/logs/error.log" >&2; exit 1; }
    sleep 0.05
done
echo "nginx $("$NGINX_BIN" -v 2>&1 | sed 's/.*: //') pid $NGINX_PID on 127.0.0.1:$PORT, $CPUS workers, body ${#BODY} bytes"

WRK_CMD=(wrk -t1 "-c$CONNECTIONS" "-d${DURATION}s" "http://127.0.0.1:$PORT/")
BENCH_CMD=("$BENCH_BIN" --targets "127.0.0.1:$PORT" --threads 1 --connections "$CONNECTIONS"
           --concurrency "$CONNECTIONS" --duration "${DURATION}s" --read-ratio 1 --quiet)
echo "wrk:   ${WRK_CMD[*]}"
echo "bench: ${BENCH_CMD[*]} --json FILE"

# CPU seconds (user + sys) a command used, via GNU time when present: on a
# shared machine req/s swings with other load, CPU per request much less.
TIME_BIN=""
[ -x /usr/bin/time ] && TIME_BIN=/usr/bin/time
timed() { # timed OUTFILE CMD...
    local out="$1"; shift
    if [ -n "$TIME_BIN" ]; then "$TIME_BIN" -f '%U %S' -o "$out" "$@"; else echo "0 0" >"$out"; "$@"; fi
}
cpu_us_per_req() { # cpu_us_per_req TIMEFILE RPS
    python3 -c 'import sys; u, s = open(sys.argv[1]).read().split()[-2:]; n = float(sys.argv[2]) * float(sys.argv[3])
print(f"{(float(u) + float(s)) * 1e6 / n:.2f}" if n and float(u) + float(s) else "n/a")' "$1" "$2" "$DURATION"
}

wrk_total=0
bench_total=0
for round in $(seq 1 "$ROUNDS"); do
    wrk_out="$(timed "$WORKDIR/wrk.time" "${WRK_CMD[@]}")"
    wrk_rps="$(awk '/^Requests\/sec:/ {print $2}' <<<"$wrk_out")"
    wrk_errors="$(grep -E 'Socket errors|Non-2xx' <<<"$wrk_out" || true)"
    timed "$WORKDIR/bench.time" "${BENCH_CMD[@]}" --json "$WORKDIR/bench.json" >"$WORKDIR/bench.txt" 2>&1
    read -r bench_rps bench_errors bench_p99 < <(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
print(round(r["throughput_rps"], 2), r["errors"]["total"], r["operations"]["read"]["latency_us"]["p99"])
' "$WORKDIR/bench.json")
    printf 'round %d: wrk %10.2f req/s (%s us CPU/req)%s | nexuscache-bench %10.2f req/s (%s us CPU/req, errors %s, p99 %sus)\n' \
        "$round" "$wrk_rps" "$(cpu_us_per_req "$WORKDIR/wrk.time" "$wrk_rps")" "${wrk_errors:+ ($wrk_errors)}" \
        "$bench_rps" "$(cpu_us_per_req "$WORKDIR/bench.time" "$bench_rps")" "$bench_errors" "$bench_p99"
    wrk_total="$(python3 -c "print($wrk_total + $wrk_rps)")"
    bench_total="$(python3 -c "print($bench_total + $bench_rps)")"
done

python3 - "$wrk_total" "$bench_total" "$ROUNDS" <<'EOF'
import sys
wrk, bench, rounds = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
ratio = bench / wrk if wrk else 0.0
print(f"wrk mean {wrk / rounds:.0f} req/s, nexuscache-bench mean {bench / rounds:.0f} req/s, "
      f"ratio {ratio:.3f} ({'OK' if ratio >= 0.9 else 'BELOW TARGET'} >= 0.9)")
sys.exit(0 if ratio >= 0.9 else 1)
EOF
