#!/usr/bin/env bash
# What the hot tier buys: wrk reads (-t1 -c32, keep-alive, GET /api/get of one
# 64-byte key) sent to node B of a local three-node cluster (static peers,
# one core each, free loopback ports), for
#
#   local        a key B owns (the reference, same run)
#   forwarded    a key A owns, automatic copies off: every read is a peer request
#   hot replica  a key A owns, written with hot=true: B answers from its hot tier
#   auto copy    a key A owns, automatic copies on (default threshold): B keeps
#                a copy after the first reads of the second
#
#   scripts/bench-hot.sh [--duration S] [--no-build]
#
# Prints req/s, p50/p99 and B's peer requests per read for each case, and the
# ratio to the local case. Stops only the processes it started.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

duration=8
build=1
while (($#)); do
    case "$1" in
    --duration)
        if (($# < 2)) || ! [[ "$2" =~ ^[1-9][0-9]*$ ]]; then
            die "--duration needs a positive integer"
        fi
        duration="$2"
        shift 2
        ;;
    --no-build)
        build=0
        shift
        ;;
    -h | --help)
        sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown argument: $1 (see --help)" ;;
    esac
done

cd "$REPO_ROOT"
ensure_cargo
command -v wrk >/dev/null 2>&1 || bash scripts/setup.sh --minimal
command -v wrk >/dev/null 2>&1 || die "wrk is missing (apt-get install wrk)"
raise_memlock
check_io_uring
release_bins "$build" nexuscache
bin="$(cargo_target_dir)/release/nexuscache"

work="$(mktemp -d)"
on_exit rm -rf "$work"
mapfile -t ports < <(free_port 6)
http=("${ports[0]}" "${ports[1]}" "${ports[2]}")
grpc=("${ports[3]}" "${ports[4]}" "${ports[5]}")
names=(a b c)
peers="a=127.0.0.1:${http[0]}/127.0.0.1:${grpc[0]},b=127.0.0.1:${http[1]}/127.0.0.1:${grpc[1]},c=127.0.0.1:${http[2]}/127.0.0.1:${grpc[2]}"
pids=()

# start_cluster THRESHOLD: three nodes with --hot-auto-threshold THRESHOLD.
start_cluster() {
    local i
    pids=()
    for i in 0 1 2; do
        "$bin" serve --cores 1 --no-pin --http-port "${http[$i]}" --grpc-port "${grpc[$i]}" \
            --node-name "${names[$i]}" --peers "$peers" --hot-auto-threshold "$1" \
            >"$work/${names[$i]}.log" 2>&1 &
        pids+=($!)
        kill_on_exit "$!"
    done
    for i in 0 1 2; do
        wait_http "http://127.0.0.1:${http[$i]}/readyz" 20 "${pids[$i]}" ||
            die "node ${names[$i]} did not start: $(tail -5 "$work/${names[$i]}.log")"
    done
}
stop_cluster() {
    local pid
    for pid in "${pids[@]}"; do stop_pid "$pid" || true; done
}

# key_owned_by NODE PREFIX: the first PREFIX-N key whose owner is NODE.
key_owned_by() {
    local n
    for n in $(seq 0 999); do
        if curl -s "http://127.0.0.1:${http[1]}/v1/owner/$2-$n" | grep -q "^node=$1 "; then
            printf '%s-%s\n' "$2" "$n"
            return 0
        fi
    done
    die "no key owned by $1"
}

value="$(head -c 64 /dev/zero | tr '\0' v)"
set_key() {
    curl -sf -X POST "http://127.0.0.1:${http[0]}/api/set" -d "key=$1&value=$value&hot=$2" >/dev/null ||
        die "cannot set $1"
}
peer_gets() {
    curl -s "http://127.0.0.1:${http[1]}/metrics" |
        awk '/^nexuscache_peer_requests_total\{.*op="get"/ {s += $NF} END {print s + 0}'
}

results=()
# measure NAME KEY: wrk against B; appends "name req/s p50 p99 peer/read".
measure() {
    local before after out rps p50 p99 requests
    before="$(peer_gets)"
    out="$(wrk -t1 -c32 -d"${duration}s" --latency "http://127.0.0.1:${http[1]}/api/get?key=$2")"
    after="$(peer_gets)"
    rps="$(awk '/^Requests\/sec/ {print $2}' <<<"$out")"
    requests="$(awk '/requests in/ {print $1}' <<<"$out")"
    p50="$(awk '$1 == "50%" {print $2}' <<<"$out")"
    p99="$(awk '$1 == "99%" {print $2}' <<<"$out")"
    results+=("$1 $rps $p50 $p99 $(python3 -c "print(f'{($after - $before) / max($requests, 1):.3f}')")")
    log "$1: $rps req/s"
}

log "cluster with automatic copies off"
start_cluster 0
local_key="$(key_owned_by b local)"
remote_key="$(key_owned_by a remote)"
hot_key="$(key_owned_by a hot)"
set_key "$local_key" false
set_key "$remote_key" false
set_key "$hot_key" true
measure local "$local_key"
measure forwarded "$remote_key"
measure hot-replica "$hot_key"
stop_cluster

log "cluster with automatic copies on (default threshold)"
start_cluster 20
auto_key="$(key_owned_by a auto)"
set_key "$auto_key" false
measure auto-copy "$auto_key"
stop_cluster

printf '\n%-12s %12s %10s %10s %14s %10s\n' case req/s p50 p99 peer-req/read vs-local
local_rps="${results[0]#* }"
local_rps="${local_rps%% *}"
for row in "${results[@]}"; do
    read -r name rps p50 p99 per <<<"$row"
    printf '%-12s %12s %10s %10s %14s %10s\n' "$name" "$rps" "$p50" "$p99" "$per" \
        "$(python3 -c "print(f'{$rps / $local_rps:.2f}')")"
done
printf '\nmachine: %s CPUs, load %s\n' "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)"
