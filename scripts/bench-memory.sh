#!/usr/bin/env bash
# Memory per cached item: NexusCache, memcached and redis side by side, each
# loaded with the same keys and value size in one run.
#
#   scripts/bench-memory.sh [--items N] [--value-size B[,B...]] [--no-build]
#
#   --items N          keys loaded into each server (default 1000000)
#   --value-size B,..  bytes per value, one run of every server per size
#                      (default 10,100,1024)
#   --no-build         use the existing release binaries (NC_BIN /
#                      NC_BENCH_BIN override their paths)
#
# Keys are key:0 .. key:(N-1) everywhere. Each server runs alone on a free
# loopback port, starts empty for each value size and is stopped before the
# next one starts. Memory limit M = max(1 GiB, 1.5 x N x (value + 256 B)), so
# nothing is evicted:
#   nexuscache  one node, --cores = all CPUs, --max-memory M; loaded by
#               nexuscache-bench --prefill (64 connections, 64 pipelined
#               writes outstanding on each)
#   memcached   -m M, default threads; loaded by a pipelined text-protocol
#               `set` stream (scripts/bench/memload.py)
#   redis       --save '' --appendonly no (no persistence); loaded by
#               redis-cli --pipe with generated RESP
# Reported per value size: RSS when empty and after the load (VmRSS from
# /proc), the difference per item, each server's own accounting per item
# (nexuscache_cache_size_bytes, memcached `bytes`, redis used_memory growth)
# and its load time (wall clock of the loading client); then NexusCache's
# ratios to memcached and redis (RSS per item and load time; below 1 means
# NexusCache uses less memory or loads faster).
# The item counts are checked (nexuscache_cache_items, memcached curr_items,
# redis DBSIZE) to equal N with no eviction; the script fails otherwise.
# Results: bench-results/memory-<timestamp>/summary.md (+ summary.json, logs).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

items=1000000
value_sizes=10,100,1024
build=1
PREFIX="key:"
while (($#)); do
    case "$1" in
    --items)
        (($# >= 2)) || die "$1 needs a value"
        need_int "$1" "$2"
        items="$2"
        shift
        ;;
    --value-size)
        (($# >= 2)) || die "$1 needs a value"
        IFS=, read -r -a sizes <<<"$2"
        ((${#sizes[@]} > 0)) || die "$1 needs a value"
        for v in "${sizes[@]}"; do need_int "$1" "$v"; done
        value_sizes="$2"
        shift
        ;;
    --no-build) build=0 ;;
    -h | --help)
        awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"
        exit 0
        ;;
    *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done

cpus="$(nproc)"
bash scripts/setup.sh
for c in memcached redis-server redis-cli curl python3; do
    command -v "$c" >/dev/null 2>&1 || die "$c not found after scripts/setup.sh"
done
node_and_bench_bins "$build"
raise_memlock
check_io_uring

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
out="$REPO_ROOT/bench-results/memory-$stamp"
mkdir -p "$out"
tmp="$(mktemp -d -t nexuscache-bench-memory.XXXXXX)"
on_exit "rm -rf '$tmp'"
memload="$REPO_ROOT/scripts/bench/memload.py"
results="$out/results.tsv"
printf 'value_size\tserver\tversion\titems\trss_empty\trss_loaded\town_bytes\town_what\tload_s\tnote\n' >"$results"
IFS=, read -r -a sizes <<<"$value_sizes"
log "results go to ${out#"$REPO_ROOT"/}; $items keys per server and value size ($value_sizes bytes)"

# rss PID: resident set size in bytes (all threads of the process).
rss() {
    awk '/^VmRSS:/ { printf "%d", $2 * 1024 }' "/proc/$1/status"
}

# settle PID: let allocator background work (jemalloc decay, slab movers)
# finish, then print the RSS.
settle() {
    sleep 2
    rss "$1"
}

# wait_port PORT PID NAME: until something accepts on 127.0.0.1:PORT.
wait_port() {
    local deadline=$((SECONDS + 20))
    until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
        _alive "$2" || die "$3 exited during start-up (log: $out/$3.log)"
        ((SECONDS < deadline)) || die "$3 does not accept on 127.0.0.1:$1 within 20 s"
        sleep 0.1
    done
}

# now / elapsed START: wall-clock seconds.
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

# mem_limit_mib VALUE_SIZE: a memory limit for every server that holds all
# items without eviction: max(1 GiB, 1.5 x items x (value + 256 B)).
mem_limit_mib() {
    awk -v n="$items" -v v="$1" 'BEGIN { m = int(1.5 * n * (v + 256) / 1048576) + 1; if (m < 1024) m = 1024; print m }'
}

for value_size in "${sizes[@]}"; do
    mem_mib="$(mem_limit_mib "$value_size")"
    log "--- $items keys of $value_size-byte values, memory limit ${mem_mib} MiB ---"
    # --- NexusCache ------------------------------------------------------------------
    port="$(free_port 1)"
    grpc_port="$(free_port 1)"
    log "nexuscache: one node, --cores $cpus, --max-memory ${mem_mib}MiB on 127.0.0.1:$port"
    RUST_LOG="${RUST_LOG:-warn}" "$nc_bin" serve --bind 127.0.0.1 --http-port "$port" --grpc-port "$grpc_port" \
        --cores "$cpus" --max-memory "${mem_mib}MiB" >"$out/nexuscache-$value_size.log" 2>&1 &
    pid=$!
    kill_on_exit "$pid"
    wait_http "http://127.0.0.1:$port/readyz" 30 "$pid" || die "nexuscache did not become ready: $(tail -n 5 "$out/nexuscache-$value_size.log")"
    empty="$(settle "$pid")"
    t0="$(now)"
    # --prefill writes every key once; the measured part (reads only, 100 ms)
    # changes nothing.
    "$bench_bin" --targets "127.0.0.1:$port" --prefill --keys "$items" --key-prefix "$PREFIX" \
        --value-size "$value_size" --read-ratio 1 --duration 100ms --quiet --json "$out/nexuscache-$value_size-load.json" \
        >"$out/nexuscache-$value_size-load.txt" 2>&1 || die "nexuscache load failed: $(tail -n 5 "$out/nexuscache-$value_size-load.txt")"
    load_s="$(elapsed "$t0")"
    loaded="$(settle "$pid")"
    curl -sS --max-time 10 "http://127.0.0.1:$port/metrics" >"$out/nexuscache-$value_size.metrics"
    msum() { awk -v m="$1" 'index($1, m "{") == 1 || $1 == m { s += $NF } END { printf "%d", s }' "$out/nexuscache-$value_size.metrics"; }
    nc_items="$(msum nexuscache_cache_items)"
    nc_size="$(msum nexuscache_cache_size_bytes)"
    nc_evicted="$(msum nexuscache_evictions_total)"
    version="$("$nc_bin" --version 2>/dev/null | head -n1 || echo nexuscache)"
    printf '%s\tnexuscache\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$value_size" "$version" "$nc_items" "$empty" "$loaded" "$nc_size" \
        "nexuscache_cache_size_bytes (key + value + 21 per entry, +8 with a TTL, +88 above 4 KiB)" "$load_s" "evictions $nc_evicted" >>"$results"
    stop_pid "$pid" 15 || warn "nexuscache did not exit 0 after SIGTERM"
    ((nc_items == items && nc_evicted == 0)) ||
        die "nexuscache holds $nc_items items (expected $items), $nc_evicted evicted"
    log "nexuscache ($value_size B): $nc_items items, RSS $empty -> $loaded bytes, loaded in ${load_s}s"

    # --- memcached -------------------------------------------------------------------
    port="$(free_port 1)"
    mc_user=()
    ((EUID != 0)) || mc_user=(-u nobody) # memcached refuses to run as root without -u
    log "memcached: -m "$mem_mib" on 127.0.0.1:$port"
    memcached -l 127.0.0.1 -p "$port" -U 0 -m "$mem_mib" "${mc_user[@]}" >"$out/memcached-$value_size.log" 2>&1 &
    pid=$!
    kill_on_exit "$pid"
    wait_port "$port" "$pid" "memcached-$value_size"
    # mc_stats: the `stats` answer as "name value" lines.
    mc_stats() {
        python3 - "$port" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
s.sendall(b"stats\r\n")
data = b""
while not data.endswith(b"END\r\n"):
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
for line in data.decode().splitlines():
    if line.startswith("STAT "):
        print(line[5:])
PY
    }
    empty="$(settle "$pid")"
    mc_stats >"$out/memcached-$value_size-empty.stats"
    t0="$(now)"
    python3 "$memload" memcached 127.0.0.1 "$port" "$items" "$value_size" "$PREFIX" >"$out/memcached-$value_size-load.txt" 2>&1 ||
        die "memcached load failed: $(tail -n 3 "$out/memcached-$value_size-load.txt")"
    load_s="$(elapsed "$t0")"
    loaded="$(settle "$pid")"
    mc_stats >"$out/memcached-$value_size.stats"
    mc_stat() { awk -v k="$1" '$1 == k { print $2 }' "$2"; }
    mc_items="$(mc_stat curr_items "$out/memcached-$value_size.stats")"
    mc_bytes="$(mc_stat bytes "$out/memcached-$value_size.stats")"
    mc_evicted="$(mc_stat evictions "$out/memcached-$value_size.stats")"
    printf '%s\tmemcached\tmemcached %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$value_size" "$(mc_stat version "$out/memcached-$value_size.stats")" "$mc_items" \
        "$empty" "$loaded" "$mc_bytes" "stats bytes (item headers + key + value)" "$load_s" "evictions $mc_evicted" >>"$results"
    stop_pid "$pid" 10 || true
    ((mc_items == items && mc_evicted == 0)) ||
        die "memcached holds $mc_items items (expected $items), $mc_evicted evicted"
    log "memcached ($value_size B): $mc_items items, RSS $empty -> $loaded bytes, loaded in ${load_s}s"

    # --- redis -----------------------------------------------------------------------
    port="$(free_port 1)"
    mkdir -p "$tmp/redis"
    log "redis: --save '' --appendonly no on 127.0.0.1:$port"
    redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --dir "$tmp/redis" \
        --daemonize no --logfile "" >"$out/redis-$value_size.log" 2>&1 &
    pid=$!
    kill_on_exit "$pid"
    wait_port "$port" "$pid" "redis-$value_size"
    rcli() { redis-cli -h 127.0.0.1 -p "$port" "$@"; }
    deadline=$((SECONDS + 20))
    until [[ "$(rcli PING 2>/dev/null)" == PONG ]]; do
        ((SECONDS < deadline)) || die "redis does not answer PING"
        sleep 0.1
    done
    info_field() { rcli INFO "$1" | tr -d '\r' | awk -F: -v k="$2" '$1 == k { print $2 }'; }
    empty="$(settle "$pid")"
    used_empty="$(info_field memory used_memory)"
    t0="$(now)"
    python3 "$memload" resp "$items" "$value_size" "$PREFIX" | rcli --pipe >"$out/redis-$value_size-load.txt" 2>&1 ||
        die "redis load failed: $(tail -n 3 "$out/redis-$value_size-load.txt")"
    load_s="$(elapsed "$t0")"
    grep -q "errors: 0, replies: $items" "$out/redis-$value_size-load.txt" ||
        die "redis-cli --pipe: $(tail -n 1 "$out/redis-$value_size-load.txt") (expected errors: 0, replies: $items)"
    loaded="$(settle "$pid")"
    rcli INFO >"$out/redis-$value_size.info"
    rd_items="$(rcli DBSIZE)"
    used_loaded="$(info_field memory used_memory)"
    rd_evicted="$(info_field stats evicted_keys)"
    printf '%s\tredis\tredis %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$value_size" "$(info_field server redis_version)" "$rd_items" "$empty" \
        "$loaded" "$((used_loaded - used_empty))" "INFO used_memory growth" "$load_s" "evictions $rd_evicted" >>"$results"
    stop_pid "$pid" 10 || true
    ((rd_items == items && rd_evicted == 0)) ||
        die "redis holds $rd_items keys (expected $items), $rd_evicted evicted"
    log "redis ($value_size B): $rd_items keys, RSS $empty -> $loaded bytes, loaded in ${load_s}s"
done

# --- report ----------------------------------------------------------------------
python3 - "$results" "$items" "$PREFIX" "$stamp" "$cpus" "$(uptime)" >"$out/summary.md" <<'PY'
import csv, json, os, sys
path, items, prefix, stamp, cpus, uptime = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
rows = list(csv.DictReader(open(path), delimiter="\t"))
key_bytes = sum(len(f"{prefix}{i}") for i in range(items)) / items
mib = lambda b: f"{int(b) / 2**20:,.1f} MiB"
sizes = sorted({int(r["value_size"]) for r in rows})
load = uptime.split("load average:")[-1].strip()
print(f"# Memory per item ({stamp})")
print()
print(f"{items:,} keys `{prefix}0`..`{prefix}{items - 1}` (mean {key_bytes:.2f} bytes) per server and value size "
      f"({', '.join(str(v) for v in sizes)} bytes). {cpus} CPUs, load average at the end {load}; RSS is VmRSS of the "
      "server process, 2 s after it was started and again 2 s after the load; load time is the loading client's wall clock.")
out = []
for size in sizes:
    print()
    print(f"## {size}-byte values ({key_bytes + size:.1f} bytes of key + value per item)")
    print()
    print("| server | items | RSS empty | RSS loaded | RSS / item | own accounting / item | own accounting | load time |")
    print("|---|--:|--:|--:|--:|--:|---|--:|")
    for r in rows:
        if int(r["value_size"]) != size:
            continue
        per_item = (int(r["rss_loaded"]) - int(r["rss_empty"])) / items
        own = int(r["own_bytes"]) / items
        print(f"| {r['version']} | {int(r['items']):,} | {mib(r['rss_empty'])} | {mib(r['rss_loaded'])} | {per_item:.1f} B | "
              f"{own:.1f} B | {r['own_what']} | {r['load_s']} s |")
        out.append({"server": r["server"], "version": r["version"], "value_size": size, "items": int(r["items"]),
                    "rss_empty_bytes": int(r["rss_empty"]), "rss_loaded_bytes": int(r["rss_loaded"]),
                    "rss_bytes_per_item": per_item, "own_bytes": int(r["own_bytes"]), "own_bytes_per_item": own,
                    "own_what": r["own_what"], "load_s": float(r["load_s"]), "note": r["note"]})
print()
print("## NexusCache against memcached and redis")
print()
print("| value size | RSS / item vs memcached | RSS / item vs redis | load time vs memcached | load time vs redis |")
print("|--:|--:|--:|--:|--:|")
ratios = []
ratio = lambda a, b: f"{a / b:.2f} x" if b > 0 else "n/a"
for size in sizes:
    by = {o["server"]: o for o in out if o["value_size"] == size}
    nc, mc, rd = by.get("nexuscache"), by.get("memcached"), by.get("redis")
    if not (nc and mc and rd):
        continue
    print(f"| {size} B | {ratio(nc['rss_bytes_per_item'], mc['rss_bytes_per_item'])} | "
          f"{ratio(nc['rss_bytes_per_item'], rd['rss_bytes_per_item'])} | {ratio(nc['load_s'], mc['load_s'])} | "
          f"{ratio(nc['load_s'], rd['load_s'])} |")
    ratios.append({"value_size": size,
                   "rss_per_item_vs_memcached": nc["rss_bytes_per_item"] / mc["rss_bytes_per_item"] if mc["rss_bytes_per_item"] > 0 else None,
                   "rss_per_item_vs_redis": nc["rss_bytes_per_item"] / rd["rss_bytes_per_item"] if rd["rss_bytes_per_item"] > 0 else None,
                   "load_time_vs_memcached": nc["load_s"] / mc["load_s"] if mc["load_s"] > 0 else None,
                   "load_time_vs_redis": nc["load_s"] / rd["load_s"] if rd["load_s"] > 0 else None})
print()
print("RSS / item = (RSS loaded - RSS empty) / items: what one more item costs in resident memory, "
      "allocator overhead and index growth included. Own accounting is what each server counts "
      "(and, for NexusCache, what --max-memory limits). Ratios are NexusCache / other: below 1 means "
      "NexusCache uses less memory per item or loads faster.")
json.dump({"date": stamp, "items": items, "value_sizes": sizes, "mean_key_bytes": key_bytes, "load_average": load,
           "servers": out, "nexuscache_ratios": ratios},
          open(os.path.join(os.path.dirname(path), "summary.json"), "w"), indent=2)
PY
cat "$out/summary.md"
log "saved: ${out#"$REPO_ROOT"/}/summary.md"
