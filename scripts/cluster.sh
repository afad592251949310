#!/usr/bin/env bash
# A local three-node NexusCache cluster with etcd discovery, in the foreground:
#
#   scripts/cluster.sh [--no-build] [--cores N] [-- serve flags...]
#
#   --no-build   use the existing target/release/nexuscache
#   --cores N    data cores per node (default: CPUs / 3, at least 1)
#   -- FLAGS     anything after -- goes to every `nexuscache serve`
#
# Installs what is missing (scripts/setup.sh --minimal, and etcd-server when
# `etcd` is not found), builds in release mode, starts etcd on
# 127.0.0.1:2379 (data in a temporary directory) and three nodes:
#
#   node-9999  http 127.0.0.1:9999  grpc 127.0.0.1:10999  redis 127.0.0.1:11999
#   node-9998  http 127.0.0.1:9998  grpc 127.0.0.1:10998  redis 127.0.0.1:11998
#   node-9997  http 127.0.0.1:9997  grpc 127.0.0.1:10997  redis 127.0.0.1:11997
#
# all unpinned (--no-pin: they share the CPUs), sharing a cluster secret
# generated for this run (only they may replicate and forward to each
# other; clients need no token: pass `-- --auth-token-file F` for one).
# Waits until every node is ready and sees 3 ring members, runs the README's curl examples against
# them, then keeps running until Ctrl-C or SIGTERM, when it stops the nodes
# and etcd (SIGTERM by PID, then waits for them). Stops at once, touching
# nothing, if one of those ports is already taken. Logs: the directory
# printed at start.
#
# Other scripts source this file for its functions (cluster_* below); then
# nothing runs.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# --- functions (also used by scripts/bench-cluster.sh) ----------------------

# cluster_has_etcd: the Debian package puts etcd in /usr/bin.
cluster_has_etcd() {
    command -v etcd >/dev/null 2>&1 || [[ -x /usr/bin/etcd ]]
}

# cluster_install_prereqs: build prerequisites plus etcd (`etcd-server`).
cluster_install_prereqs() {
    bash scripts/setup.sh --minimal
    cluster_has_etcd && return 0
    log "etcd not found: installing the Debian package etcd-server"
    command -v apt-get >/dev/null 2>&1 || die "etcd not found and no apt-get: install etcd 3.4+ by hand"
    local sudo=()
    if ((EUID != 0)); then
        sudo -n true 2>/dev/null || die "installing etcd-server needs root (or password-less sudo)"
        sudo=(sudo -n)
    fi
    # The package's postinst would start etcd as a system service on 2379;
    # policy-rc.d answering 101 stops that (as scripts/setup.sh does).
    local policy=/usr/sbin/policy-rc.d
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\n# temporary, from NexusCache scripts/cluster.sh: no service starts during install\nexit 101\n' |
            "${sudo[@]}" tee "$policy" >/dev/null
        "${sudo[@]}" chmod 0755 "$policy"
        on_exit "${sudo[*]} rm -f $policy"
    fi
    local opts=(-q -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get "${opts[@]}" update </dev/null
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get "${opts[@]}" install -y --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold etcd-server </dev/null
    cluster_has_etcd || die "etcd still missing after installing etcd-server"
}

# cluster_default_cores: CPUs / 3, at least 1 (three nodes share the host).
cluster_default_cores() {
    local c=$(($(nproc) / 3))
    ((c >= 1)) || c=1
    printf '%s\n' "$c"
}

# cluster_raise_memlock CORES: glommio locks 512 KiB per executor, so each
# node needs CORES x 512 KiB of `ulimit -l`. `ulimit -l unlimited` needs
# CAP_SYS_RESOURCE (it fails in some containers even as root); the hard
# limit is then the most we can have, and it is often enough.
cluster_raise_memlock() {
    local cores="$1" need cur hard
    need=$((512 * cores))
    ulimit -l unlimited 2>/dev/null && return 0
    hard="$(ulimit -H -l)"
    ulimit -l "$hard" 2>/dev/null || true
    cur="$(ulimit -l)"
    if [[ "$cur" == unlimited ]] || ((cur >= need)); then
        log "ulimit -l unlimited not permitted; using ${cur} KiB (each node needs ${need} KiB for ${cores} core(s))"
        return 0
    fi
    die "locked-memory limit (ulimit -l) is ${cur} KiB (hard limit ${hard}); each node needs ${need} KiB for ${cores} core(s).
  Fix one of: run as root with CAP_SYS_RESOURCE; 'memlock' in /etc/security/limits.conf;
  'docker run --ulimit memlock=-1'; or fewer cores per node (--cores)."
}

# cluster_port_busy PORT: something accepts connections on 127.0.0.1:PORT.
cluster_port_busy() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# cluster_start_etcd DIR CLIENT_PORT PEER_PORT: a single-member etcd with
# its data in DIR/etcd-data, log in DIR/etcd.log. Sets CLUSTER_ETCD_PID.
# Its own session (setsid) so a terminal's Ctrl-C reaches only this script,
# which then stops the nodes before etcd.
cluster_start_etcd() {
    local dir="$1" client="http://127.0.0.1:$2" peer="http://127.0.0.1:$3" etcd_bin
    etcd_bin="$(command -v etcd || echo /usr/bin/etcd)"
    setsid "$etcd_bin" --name nc-local --data-dir "$dir/etcd-data" \
        --listen-client-urls "$client" --advertise-client-urls "$client" \
        --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
        --initial-cluster "nc-local=$peer" --initial-cluster-state new \
        --logger zap --log-outputs stderr \
        </dev/null >"$dir/etcd.log" 2>&1 &
    CLUSTER_ETCD_PID=$!
    kill_on_exit "$CLUSTER_ETCD_PID"
    if ! wait_http "$client/health" 30 "$CLUSTER_ETCD_PID"; then
        tail -n 20 "$dir/etcd.log" >&2 || true
        die "etcd did not become healthy on $client (log: $dir/etcd.log)"
    fi
    log "etcd ready on $client (PID $CLUSTER_ETCD_PID, log $dir/etcd.log)"
}

# cluster_generate_secret DIR: a random cluster secret in DIR/cluster-secret
# (mode 0600), shared by the nodes started after it so that only they can
# replicate, forward and keep copies on each other. Sets CLUSTER_SECRET_FILE.
CLUSTER_SECRET_FILE=""
cluster_generate_secret() {
    local file="$1/cluster-secret"
    (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$file")
    CLUSTER_SECRET_FILE="$file"
}

# cluster_start_node BIN DIR HTTP_PORT GRPC_PORT ETCD_PORT CORES [FLAGS...]:
# starts node-<HTTP_PORT>, log in DIR/node-<HTTP_PORT>.log, with
# CLUSTER_SECRET_FILE when one was generated. Appends its PID to
# CLUSTER_NODE_PIDS. Does not wait.
CLUSTER_NODE_PIDS=()
cluster_start_node() {
    local bin="$1" dir="$2" http="$3" grpc="$4" etcd_port="$5" cores="$6" secret=()
    shift 6
    [[ -z "$CLUSTER_SECRET_FILE" ]] || secret=(--cluster-secret-file "$CLUSTER_SECRET_FILE")
    NO_COLOR=1 RUST_LOG="${RUST_LOG:-info}" setsid "$bin" serve \
        --http-port "$http" --grpc-port "$grpc" --resp-port $((http + 2000)) --node-name "node-$http" \
        --etcd "127.0.0.1:$etcd_port" --cores "$cores" --no-pin "${secret[@]}" "$@" \
        </dev/null >"$dir/node-$http.log" 2>&1 &
    CLUSTER_NODE_PIDS+=("$!")
    kill_on_exit "$!"
}

# cluster_wait_ready DIR MEMBERS HTTP_PORT...: every node answers /readyz
# and its /metrics show MEMBERS ring members (etcd discovery converged).
cluster_wait_ready() {
    local dir="$1" members="$2" i port pid deadline
    shift 2
    local ports=("$@")
    for i in "${!ports[@]}"; do
        port="${ports[$i]}"
        pid="${CLUSTER_NODE_PIDS[$i]}"
        if ! wait_http "http://127.0.0.1:$port/readyz" 60 "$pid"; then
            tail -n 20 "$dir/node-$port.log" >&2 || true
            die "node-$port did not become ready (log: $dir/node-$port.log)"
        fi
    done
    deadline=$((SECONDS + 60))
    for port in "${ports[@]}"; do
        until curl -s --max-time 2 "http://127.0.0.1:$port/metrics" 2>/dev/null |
            grep -qx "nexuscache_ring_members $members"; do
            if ((SECONDS >= deadline)); then
                die "node-$port does not see $members ring members after 60 s (log: $dir/node-$port.log)"
            fi
            sleep 0.2
        done
    done
    log "all ${#ports[@]} nodes ready; each sees $members ring members"
}

# --- main --------------------------------------------------------------------

cluster_main() {
    local build=1 cores="" extra=()
    while (($#)); do
        case "$1" in
        --no-build) build=0 ;;
        --cores)
            (($# >= 2)) || die "--cores needs a value"
            [[ "$2" =~ ^[1-9][0-9]*$ ]] || die "--cores needs a positive integer, got '$2'"
            cores="$2"
            shift
            ;;
        --)
            shift
            extra=("$@")
            break
            ;;
        -h | --help)
            sed -n '2,25s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
            return 0
            ;;
        *) die "unknown argument: $1 (see --help)" ;;
        esac
        shift
    done
    [[ -n "$cores" ]] || cores="$(cluster_default_cores)"

    local http_ports=(9999 9998 9997) port busy=()
    for port in 2379 2380 "${http_ports[@]}" 10999 10998 10997 11999 11998 11997; do
        if cluster_port_busy "$port"; then
            busy+=("$port")
        fi
    done
    if ((${#busy[@]})); then
        die "port(s) ${busy[*]} on 127.0.0.1 already in use (another etcd or cluster?); stop whatever holds them and retry. scripts/bench-cluster.sh runs a cluster on free ports instead."
    fi

    cluster_install_prereqs
    local bin
    bin="$(cargo_target_dir)/release/nexuscache"
    if ((build)); then
        ensure_cargo
        log "building release binary"
        cargo build --release --bin nexuscache
    fi
    [[ -x "$bin" ]] || die "$bin not found (build it, or drop --no-build)"
    cluster_raise_memlock "$cores"
    check_io_uring

    local dir
    dir="$(mktemp -d "${TMPDIR:-/tmp}/nexuscache-cluster.XXXXXX")"
    # etcd's data goes; the logs stay for a look after the run.
    on_exit "rm -rf '$dir/etcd-data'; printf '[cluster] logs kept in %s\n' '$dir' >&2"
    log "logs in $dir"
    cluster_start_etcd "$dir" 2379 2380
    cluster_generate_secret "$dir"
    log "cluster secret generated in $CLUSTER_SECRET_FILE (only these nodes can replicate to each other)"
    for port in "${http_ports[@]}"; do
        cluster_start_node "$bin" "$dir" "$port" $((port + 1000)) 2379 "$cores" "${extra[@]}"
    done
    cluster_wait_ready "$dir" 3 "${http_ports[@]}"

    printf '\nNexusCache cluster up: %s core(s) per node, etcd 127.0.0.1:2379\n' "$cores"
    for i in "${!http_ports[@]}"; do
        port="${http_ports[$i]}"
        printf '  node-%s  http 127.0.0.1:%s  grpc 127.0.0.1:%s  redis 127.0.0.1:%s  PID %s  log %s\n' \
            "$port" "$port" $((port + 1000)) $((port + 2000)) "${CLUSTER_NODE_PIDS[$i]}" "$dir/node-$port.log"
    done
    printf '\nTry it (these just ran):\n\n'
    # The README's examples, set on one node and read on the others.
    local examples=(
        'curl -X POST -d "key=foo&value=bar&expire=10&hot=true" http://localhost:9999/api/set'
        'curl "http://localhost:9998/api/get?key=foo"'
        'curl "http://localhost:9997/api/get?key=foo"'
        'curl http://localhost:9999/v1/owner/foo'
        'curl -s http://localhost:9999/metrics | grep -E "^nexuscache_(ring_members|peer_requests_total)"'
    )
    # The Redis protocol, when redis-cli is installed (scripts/setup.sh).
    if command -v redis-cli >/dev/null 2>&1; then
        examples+=(
            'redis-cli -p 11999 SET greeting hello EX 60'
            'redis-cli -p 11998 GET greeting'
            'redis-cli -p 11997 NEXUS.OWNER greeting'
        )
    fi
    local cmd output
    for cmd in "${examples[@]}"; do
        printf '$ %s\n' "$cmd"
        # -sS: no progress meter (stdout may be a pipe), errors still shown.
        output="$(bash -c "${cmd/curl /curl -sS }" 2>&1 || true)"
        printf '%s\n\n' "${output%$'\n'}"
    done
    printf '\nRunning. Ctrl-C (or SIGTERM to PID %s) stops the nodes, then etcd.\n' "$$"

    # Until a signal (lib.sh turns it into exit, whose trap stops our PIDs
    # newest first: nodes, then etcd), or until a node or etcd dies.
    local rc=0
    wait -n "${CLUSTER_NODE_PIDS[@]}" "$CLUSTER_ETCD_PID" || rc=$?
    warn "a cluster process exited on its own (status $rc); stopping the rest"
    exit 1
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    cluster_main "$@"
fi
