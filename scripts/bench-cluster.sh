#!/usr/bin/env bash
# What a read costs when the key lives on another node: reads of keys node A
# owns against reads of keys other nodes own, all sent to node A, on a local
# three-node cluster (etcd discovery) started on free ports:
#
#   scripts/bench-cluster.sh [--keys N] [--value-size B] [--duration S] [--warmup S]
#                            [--concurrency N] [--rounds R] [--cores N]
#                            [--protocols "http grpc"] [--no-build]
#
#   --keys N         keys written before measuring (default 10000)
#   --value-size B   bytes per value (default 64)
#   --duration S     measured seconds per run (default 10)
#   --warmup S       unmeasured seconds before each run (default 2)
#   --concurrency N  requests in flight (default 32); HTTP: one connection
#                    per request in flight, gRPC: one connection, N streams
#   --rounds R       runs per protocol and key set (default 2); rounds
#                    alternate which key set goes first
#   --cores N        data cores per node (default 1)
#   --protocols P    "http", "grpc" or "http grpc" (default)
#   --no-build       use the existing release binaries
#
# Steps: start etcd and three nodes (never on 9999/2379, so a running
# scripts/cluster.sh is left alone); write N keys through node A with
# nexuscache-bench --prefill; ask A's GET /v1/owner/{key} for every key over
# one keep-alive connection and split the keys into "owned by A" (local) and
# "owned by another node" (remote); then, per protocol and round, drive A
# with nexuscache-bench reads (one thread, same concurrency and duration) of
# the local keys and of the remote keys. Prints a table (req/s of every run,
# p50/p99, A's peer requests per read as a check that remote reads really
# went to a peer, the forwarded ops the owners received that arrived on a
# core other than the key's home core, and the 1-minute load average after
# the run) and the ratio remote/local, and writes it to
# bench-results/cluster-<time>.txt with every run's JSON in
# bench-results/cluster-<time>/. Stops only the processes it started.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/cluster.sh"

keys=10000
value_size=64
duration=10
warmup=2
concurrency=32
rounds=2
cores=1
protocols="http grpc"
build=1

while (($#)); do
    case "$1" in
    --keys | --value-size | --duration | --warmup | --concurrency | --rounds | --cores)
        (($# >= 2)) || die "$1 needs a value"
        # --warmup 0 skips the warm-up; every other value must be positive.
        need_int "$1" "$2" "$([[ "$1" == --warmup ]] && echo 0 || echo 1)"
        case "$1" in
        --keys) keys="$2" ;;
        --value-size) value_size="$2" ;;
        --duration) duration="$2" ;;
        --warmup) warmup="$2" ;;
        --concurrency) concurrency="$2" ;;
        --rounds) rounds="$2" ;;
        --cores) cores="$2" ;;
        esac
        shift
        ;;
    --protocols)
        (($# >= 2)) || die "--protocols needs a value"
        protocols="$2"
        for p in $protocols; do
            [[ "$p" == http || "$p" == grpc ]] || die "--protocols takes http and/or grpc, got '$p'"
        done
        [[ -n "${protocols// /}" ]] || die "--protocols is empty"
        shift
        ;;
    --no-build) build=0 ;;
    -h | --help)
        sed -n '2,34s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
        exit 0
        ;;
    *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done

cluster_install_prereqs
command -v python3 >/dev/null 2>&1 || die "python3 is needed (owner lookups, the results table)"
release_bins "$build" nexuscache nexuscache-bench
node_bin="$(cargo_target_dir)/release/nexuscache"
bench_bin="$(cargo_target_dir)/release/nexuscache-bench"
cluster_raise_memlock "$cores"
check_io_uring

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
results_dir="$REPO_ROOT/bench-results/cluster-$stamp"
summary="$REPO_ROOT/bench-results/cluster-$stamp.txt"
mkdir -p "$results_dir"
work="$(mktemp -d "${TMPDIR:-/tmp}/nexuscache-bench-cluster.XXXXXX")"
on_exit "rm -rf '$work/etcd-data'"
log "cluster logs in $work; results in $results_dir"

# Free ports: etcd client and peer, then HTTP and gRPC of three nodes.
mapfile -t ports < <(free_port 8)
((${#ports[@]} == 8)) || die "could not get 8 free ports"
etcd_client="${ports[0]}"
etcd_peer="${ports[1]}"
http_ports=("${ports[2]}" "${ports[3]}" "${ports[4]}")
grpc_ports=("${ports[5]}" "${ports[6]}" "${ports[7]}")
cluster_start_etcd "$work" "$etcd_client" "$etcd_peer"
cluster_generate_secret "$work"
for i in 0 1 2; do
    cluster_start_node "$node_bin" "$work" "${http_ports[$i]}" "${grpc_ports[$i]}" "$etcd_client" "$cores"
done
cluster_wait_ready "$work" 3 "${http_ports[@]}"
a_http="127.0.0.1:${http_ports[0]}"
a_grpc="127.0.0.1:${grpc_ports[0]}"
a_name="node-${http_ports[0]}"

# --- keys: write them, then ask A who owns each ------------------------------
python3 - "$keys" >"$work/keys-all.txt" <<'PY'
import sys
for i in range(int(sys.argv[1])):
    print(f"bench:{i}")
PY
log "prefilling $keys keys of $value_size B through $a_name"
"$bench_bin" --targets "$a_http" --key-file "$work/keys-all.txt" --prefill --read-ratio 1 \
    --value-size "$value_size" --duration 1s --concurrency "$concurrency" --threads 1 \
    --quiet --json "$results_dir/prefill.json" >/dev/null 2>"$work/prefill.err" ||
    die "prefill failed: $(cat "$work/prefill.err")"
python3 - "$results_dir/prefill.json" "$keys" <<'PY' || die "prefill did not store every key"
import json, sys
r = json.load(open(sys.argv[1]))
p = r["prefill"]
if p["stored"] != int(sys.argv[2]) or p["errors"]["total"]:
    sys.exit(f"prefill stored {p['stored']} of {sys.argv[2]} keys, errors {p['errors']}")
PY

log "asking $a_name for the owner of each key (GET /v1/owner/{key}, one keep-alive connection)"
python3 - "${http_ports[0]}" "$a_name" "$work/keys-all.txt" "$work/keys-local.txt" "$work/keys-remote.txt" <<'PY' >&2
import http.client, sys, urllib.parse
port, me, all_keys, local_out, remote_out = sys.argv[1:]
conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=10)

def owner(key):
    for attempt in (1, 2):
        try:
            conn.request("GET", "/v1/owner/" + urllib.parse.quote(key, safe=""))
            r = conn.getresponse()
            body = r.read().decode()
            break
        except (http.client.HTTPException, OSError):
            if attempt == 2:
                raise
            conn.close()  # the server closed an idle connection: reconnect
    if r.status != 200:
        sys.exit(f"GET /v1/owner/{key}: HTTP {r.status} {body.strip()}")
    fields = dict(f.split("=", 1) for f in body.split())
    return fields["node"]

local, remote, per_node = [], [], {}
for key in open(all_keys).read().split("\n"):
    if key:
        node = owner(key)
        per_node[node] = per_node.get(node, 0) + 1
        (local if node == me else remote).append(key)
open(local_out, "w").write("\n".join(local) + "\n")
open(remote_out, "w").write("\n".join(remote) + "\n")
print("[bench-cluster] owners: " + ", ".join(f"{n} {c}" for n, c in sorted(per_node.items()))
      + f" -> local {len(local)}, remote {len(remote)}")
if not local or not remote:
    sys.exit("need keys of both kinds: raise --keys")
PY
cp "$work/keys-local.txt" "$work/keys-remote.txt" "$results_dir/"

# peer_requests: node A's peer requests so far, "<all> <failed>" (failed:
# status other than ok; a failed forwarded read is answered as a miss).
peer_requests() {
    curl -s --max-time 5 "http://$a_http/metrics" |
        awk '/^nexuscache_peer_requests_total[{ ]/ { s += $NF; if ($0 !~ /status="ok"/) f += $NF }
             END { printf "%d %d\n", s, f }'
}

# forwarded_landed: ops other nodes forwarded to any of the three nodes,
# "<on the key's home core> <on another core>"
# (nexuscache_forwarded_ops_received_total{landed=...}); the second number
# is the owner-side cross-core hops forwarded ops took.
forwarded_landed() {
    local port
    for port in "${http_ports[@]}"; do
        curl -s --max-time 5 "http://127.0.0.1:$port/metrics"
    done | awk '/^nexuscache_forwarded_ops_received_total[{]/ {
                    if ($0 ~ /landed="home_core"/) h += $NF; else o += $NF }
                END { printf "%d %d\n", h, o }'
}

# --- measurements --------------------------------------------------------------
runs_file="$results_dir/runs.tsv"
printf 'protocol\tkeys\tround\tjson\tpeer_requests\tpeer_failed\tlanded_home\tlanded_other\tload1\n' >"$runs_file"
run_one() {
    local proto="$1" set="$2" round="$3" target json before after landed_before landed_after
    target="$a_http"
    [[ "$proto" == grpc ]] && target="$a_grpc"
    json="$results_dir/$proto-$set-$round.json"
    before="$(peer_requests)"
    landed_before="$(forwarded_landed)"
    log "round $round/$rounds: $proto reads of $set keys -> $target (${warmup}s warmup, ${duration}s)"
    "$bench_bin" --protocol "$proto" --targets "$target" --key-file "$work/keys-$set.txt" \
        --read-ratio 1 --threads 1 --concurrency "$concurrency" \
        --warmup "${warmup}s" --duration "${duration}s" --quiet --json "$json" \
        >"$results_dir/$proto-$set-$round.txt" 2>&1 ||
        die "nexuscache-bench failed: $(tail -n 5 "$results_dir/$proto-$set-$round.txt")"
    after="$(peer_requests)"
    landed_after="$(forwarded_landed)"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$proto" "$set" "$round" "$json" \
        $((${after% *} - ${before% *})) $((${after#* } - ${before#* })) \
        $((${landed_after% *} - ${landed_before% *})) $((${landed_after#* } - ${landed_before#* })) \
        "$(cut -d' ' -f1 /proc/loadavg)" >>"$runs_file"
}
for proto in $protocols; do
    for ((round = 1; round <= rounds; round++)); do
        if ((round % 2)); then
            run_one "$proto" local "$round"
            run_one "$proto" remote "$round"
        else
            run_one "$proto" remote "$round"
            run_one "$proto" local "$round"
        fi
    done
done

# --- table ---------------------------------------------------------------------
python3 - "$runs_file" <<PY | tee "$summary"
import csv, json, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
print("NexusCache cluster benchmark, $stamp")
print("3 nodes x $cores core(s), --no-pin, etcd discovery, on $(nproc) CPUs shared with the generator")
print("node A = $a_name; $keys keys of $value_size B; local $(grep -c . "$work/keys-local.txt"), remote $(grep -c . "$work/keys-remote.txt")")
print("nexuscache-bench: reads only, 1 thread, $concurrency in flight (http: $concurrency connections; grpc: 1 connection),"
      " ${warmup}s warmup + ${duration}s per run, $rounds round(s), uniform over the key set")
print()
runs = {}
for r in rows:
    j = json.load(open(r["json"]))
    read = j["operations"]["read"]
    lat = read["latency_us"] or {}
    all_requests = sum(i["requests"] for i in j["intervals"]) or 1
    runs.setdefault((r["protocol"], r["keys"]), []).append({
        "round": int(r["round"]),
        "rps": j["throughput_rps"],
        "p50": lat.get("p50", float("nan")),
        "p99": lat.get("p99", float("nan")),
        "hit": read.get("hit_rate") or 0.0,
        "errors": j["errors"]["total"],
        "peer": int(r["peer_requests"]) / all_requests,
        "peer_failed": int(r["peer_failed"]),
        "misses": read.get("misses") or 0,
        "home": int(r["landed_home"]),
        "other": int(r["landed_other"]),
        "load": float(r["load1"]),
    })

def us(v):
    return f"{v:.0f}us" if v < 1000 else f"{v / 1000:.2f}ms"

hdr = (f"{'protocol':<8} {'keys':<6} {'req/s per run':<24} {'mean':>8} {'spread':>7} {'p50 per run':<18} "
       f"{'p99 per run':<18} {'misses':>6} {'err':>4} {'peer/read':>9} {'peer fail':>9} "
       f"{'owner hops':>15} {'load1 per run':<14}")
print(hdr)
print("-" * len(hdr))
for (proto, kset), rs in runs.items():
    rs.sort(key=lambda x: x["round"])
    rps = [x["rps"] for x in rs]
    mean = statistics.mean(rps)
    spread = (max(rps) - min(rps)) / mean * 100 if mean else 0.0
    loads = " ".join(f"{x['load']:.2f}" for x in rs)
    hops = f"{sum(x['other'] for x in rs)}/{sum(x['home'] + x['other'] for x in rs)}"
    print(f"{proto:<8} {kset:<6} {' '.join(f'{v:.0f}' for v in rps):<24} {mean:>8.0f} {spread:>6.1f}% "
          f"{' '.join(us(x['p50']) for x in rs):<18} {' '.join(us(x['p99']) for x in rs):<18} "
          f"{sum(x['misses'] for x in rs):>6} {sum(x['errors'] for x in rs):>4} "
          f"{statistics.mean(x['peer'] for x in rs):>9.2f} {sum(x['peer_failed'] for x in rs):>9} "
          f"{hops:>15} {loads:<14}")
print()
for proto in dict.fromkeys(p for p, _ in runs):
    loc, rem = runs.get((proto, "local")), runs.get((proto, "remote"))
    if not loc or not rem:
        continue
    by_round = {x["round"]: x["rps"] for x in loc}
    per_round = [x["rps"] / by_round[x["round"]] for x in rem if by_round.get(x["round"])]
    ratio = statistics.mean(x["rps"] for x in rem) / statistics.mean(x["rps"] for x in loc)
    p50 = statistics.median(x["p50"] for x in rem) / statistics.median(x["p50"] for x in loc)
    print(f"{proto}: remote/local throughput {ratio:.2f} (per round {', '.join(f'{r:.2f}' for r in per_round)}); "
          f"p50 latency x{p50:.2f}")
print()
print("spread = (max - min) / mean of the runs; peer/read = node A's peer requests (nexuscache_peer_requests_total)")
print("per request answered during the run, warmup included: ~1 for remote keys, 0 for local ones.")
print("misses: reads answered found=false / 404 (every key was written, so each is a failed forward: a node")
print("answers a read it could not forward as a miss); peer fail: A's peer requests not ok (timeout/error).")
print("owner hops: forwarded ops the owners received on a core other than the key's home core / all forwarded")
print("ops they received (nexuscache_forwarded_ops_received_total, warmup included): 0/N when peer connections")
print("reach the home core. load1: the machine's 1-minute load average right after the run.")
PY
log "results: $summary (runs: $results_dir)"
