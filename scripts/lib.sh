# shellcheck shell=bash
# Shared helpers for scripts/*.sh. Source it, don't run it:
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# Sourcing cds to the repository root, so every script works from any cwd.
# Output is plain text without colour codes: CI logs and `tee` stay readable.

if [[ -n "${NEXUSCACHE_LIB_SOURCED:-}" ]]; then
    return 0
fi
NEXUSCACHE_LIB_SOURCED=1

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export REPO_ROOT
cd "$REPO_ROOT" || exit 1

# The script's own name prefixes every log line, so interleaved output from
# setup.sh called by test.sh still says who is talking.
LOG_TAG="$(basename "${BASH_SOURCE[1]:-${0}}" .sh)"

# Logs go to stderr: stdout stays free for data a caller may capture.
log() { printf '[%s] %s\n' "$LOG_TAG" "$*" >&2; }
warn() { printf '[%s] WARNING: %s\n' "$LOG_TAG" "$*" >&2; }
die() {
    printf '[%s] ERROR: %s\n' "$LOG_TAG" "$*" >&2
    exit 1
}

# --- cleanup -----------------------------------------------------------------
# kill_on_exit PID  : terminate this PID when the script exits (TERM, then KILL).
# on_exit CMD...    : run CMD (one shell string) when the script exits.
# Only PIDs handed in here are ever signalled: never anything found by name,
# which could belong to another user of the machine.
_NC_EXIT_PIDS=()
_NC_EXIT_CMDS=()

kill_on_exit() { _NC_EXIT_PIDS+=("$1"); }
on_exit() { _NC_EXIT_CMDS+=("$*"); }

# forget_pid PID: the caller stopped PID itself; don't signal it at exit (the
# number could by then belong to an unrelated process).
forget_pid() {
    local i
    for i in "${!_NC_EXIT_PIDS[@]}"; do
        if [[ "${_NC_EXIT_PIDS[$i]}" == "$1" ]]; then
            unset '_NC_EXIT_PIDS[i]'
        fi
    done
}

# _alive PID: running and not a zombie. An exited child stays a zombie (and
# still answers kill -0) until we wait for it. Reads /proc rather than
# calling ps, which a minimal machine may lack.
_alive() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    # Field 3 (state) follows the command name, which may contain spaces.
    stat="${stat##*) }"
    [[ "${stat%% *}" != Z ]]
}

# stop_pid PID [GRACE_SECONDS]: SIGTERM, wait up to GRACE, then SIGKILL.
# Returns the process's exit status when it is our child, else 0.
stop_pid() {
    local pid="$1" grace="${2:-10}" waited=0 rc=0
    if _alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        while _alive "$pid" && ((waited < grace * 10)); do
            sleep 0.1
            waited=$((waited + 1))
        done
        if _alive "$pid"; then
            warn "PID $pid did not exit ${grace}s after SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    # wait only works for our own children (127 otherwise: no status known).
    wait "$pid" 2>/dev/null || rc=$?
    ((rc != 127)) || rc=0
    forget_pid "$pid"
    return "$rc"
}

_nc_run_exit_handlers() {
    local rc=$? i idx
    trap - EXIT
    # Last registered first: things started later usually depend on earlier
    # ones. forget_pid leaves holes in the array, so walk its real indices.
    idx=("${!_NC_EXIT_PIDS[@]}")
    for ((i = ${#idx[@]} - 1; i >= 0; i--)); do
        stop_pid "${_NC_EXIT_PIDS[${idx[$i]}]}" 5 || true
    done
    for ((i = ${#_NC_EXIT_CMDS[@]} - 1; i >= 0; i--)); do
        eval "${_NC_EXIT_CMDS[$i]}" || true
    done
    exit "$rc"
}
trap _nc_run_exit_handlers EXIT
# Turn signals into a normal exit so the EXIT trap above runs exactly once.
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# --- toolchain ---------------------------------------------------------------
# ensure_cargo: rustup puts cargo in ~/.cargo/bin, which a non-login shell
# (cron, CI runners, sudo) may not have on PATH.
ensure_cargo() {
    if ! command -v cargo >/dev/null 2>&1 && [[ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]]; then
        PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
        export PATH
    fi
    command -v cargo >/dev/null 2>&1 ||
        die "cargo not found. Install the Rust toolchain with rustup (https://rustup.rs) and put ~/.cargo/bin on PATH."
}

# cargo_target_dir: where cargo puts binaries (honours CARGO_TARGET_DIR).
cargo_target_dir() {
    local dir="${CARGO_TARGET_DIR:-target}"
    [[ "$dir" == /* ]] || dir="$REPO_ROOT/$dir"
    printf '%s\n' "$dir"
}

# release_bins BUILD NAME...: with BUILD=1, build the release binaries NAME...
# (nexuscache, nexuscache-bench) in one cargo call; then check each exists.
# The benchmarks run what they measure from target/release.
release_bins() {
    local build="$1" name path
    shift
    if ((build)); then
        ensure_cargo
        log "building release binaries: $*"
        local args=()
        # Each binary lives in the package of the same name.
        for name in "$@"; do args+=(-p "$name" --bin "$name"); done
        cargo build --release "${args[@]}" || die "cargo build --release failed"
    fi
    for name in "$@"; do
        path="$(cargo_target_dir)/release/$name"
        [[ -x "$path" ]] || die "$path not found (drop --no-build to build it)"
    done
}

# node_and_bench_bins BUILD: release_bins for nexuscache and nexuscache-bench
# when BUILD is 1, then sets nc_bin and bench_bin (NC_BIN / NC_BENCH_BIN
# override them) and checks both are there.
node_and_bench_bins() {
    if (($1)); then
        release_bins 1 nexuscache nexuscache-bench
    fi
    nc_bin="${NC_BIN:-$(cargo_target_dir)/release/nexuscache}"
    bench_bin="${NC_BENCH_BIN:-$(cargo_target_dir)/release/nexuscache-bench}"
    [[ -x "$nc_bin" ]] || die "$nc_bin not found (drop --no-build to build it)"
    [[ -x "$bench_bin" ]] || die "$bench_bin not found (drop --no-build to build it)"
}

# need_int FLAG VALUE [MIN]: die unless VALUE is an integer >= MIN (default
# 1), for the benchmark scripts' numeric flags.
need_int() {
    local min="${3:-1}" kind="a positive integer"
    ((min == 0)) && kind="a non-negative integer"
    if ! [[ "$2" =~ ^[0-9]+$ ]] || (("$2" < min)); then
        die "$1 needs $kind, got '$2'"
    fi
}

# --- glommio prerequisites ---------------------------------------------------
# raise_memlock: glommio registers io_uring buffers in locked memory and needs
# at least 512 KiB of `ulimit -l` per executor (one executor per core). Must be
# called in the shell that later starts the server (ulimit is per process and
# inherited), so never call it in a subshell.
raise_memlock() {
    local cores need cur hard
    cores="$(nproc)"
    need=$((512 * cores))
    if ulimit -l unlimited 2>/dev/null; then
        return 0
    fi
    # Not root (or no CAP_SYS_RESOURCE): the soft limit can still go up to
    # the hard limit, which may be enough.
    hard="$(ulimit -H -l)"
    ulimit -l "$hard" 2>/dev/null || true
    cur="$(ulimit -l)"
    if [[ "$cur" == unlimited ]] || ((cur >= need)); then
        log "ulimit -l unlimited not permitted; using ${cur} KiB (enough: need ${need} KiB for ${cores} cores)"
        return 0
    fi
    die "locked-memory limit (ulimit -l) is ${cur} KiB and cannot be raised (hard limit ${hard}).
  glommio needs at least 512 KiB per executor: ${need} KiB for ${cores} cores.
  Fix one of: run as root; add 'memlock' to /etc/security/limits.conf;
  LimitMEMLOCK=infinity in a systemd unit; 'docker run --ulimit memlock=-1';
  or run with fewer cores (--cores N)."
}

# check_io_uring: glommio cannot start without io_uring; say so up front
# instead of leaving the user with an executor panic.
check_io_uring() {
    local f=/proc/sys/kernel/io_uring_disabled
    if [[ -r "$f" ]] && [[ "$(cat "$f")" != 0 ]]; then
        warn "io_uring is disabled on this kernel ($f = $(cat "$f")); glommio will fail to start. As root: sysctl -w kernel.io_uring_disabled=0"
    fi
}

# --- ports and readiness -----------------------------------------------------
# free_port [COUNT]: print COUNT distinct free loopback TCP ports, one a line.
# The kernel picks them (bind to port 0); all sockets are held open together so
# the same port is never handed out twice in one call. There is still a small
# window before the caller binds; that is the usual, accepted race.
free_port() {
    local count="${1:-1}"
    command -v python3 >/dev/null 2>&1 || die "python3 is needed to pick free ports"
    python3 - "$count" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
for s in socks:
    print(s.getsockname()[1])
for s in socks:
    s.close()
PY
}

# wait_http URL TIMEOUT_SECONDS [PID]: poll URL until it answers 200.
# With PID, give up at once if that process dies (a crashed server would
# otherwise cost the whole timeout). Returns 1 on timeout or death.
wait_http() {
    local url="$1" timeout="$2" pid="${3:-}" deadline code
    deadline=$((SECONDS + timeout))
    while ((SECONDS < deadline)); do
        if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
            warn "process $pid exited while waiting for $url"
            return 1
        fi
        code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" 2>/dev/null || true)"
        if [[ "$code" == 200 ]]; then
            return 0
        fi
        sleep 0.1
    done
    warn "$url did not answer 200 within ${timeout}s (last status: ${code:-none})"
    return 1
}

# allowed_cpus: the CPUs this process may run on (all online ones unless it
# runs under taskset or a cpuset), one per line, in order.
allowed_cpus() {
    local list range
    list="$(awk '/^Cpus_allowed_list:/ { print $2 }' /proc/self/status)"
    for range in ${list//,/ }; do
        if [[ "$range" == *-* ]]; then
            seq "${range%-*}" "${range#*-}"
        else
            echo "$range"
        fi
    done
}

# Start nginx as the benchmarks' HTTP ceiling: `return 200 BODY` with the
# Content-Type of NexusCache's GET /api/get hit, on 127.0.0.1:PORT, WORKERS
# worker processes, no access log, keep-alive without a request limit (the
# default closes a connection after 1000 requests, adding reconnects
# NexusCache does not pay). Foreground (daemon off) so the PID we hold is the
# master; config, pid, logs and temp dirs stay under DIR, nothing in /etc or
# /var. Sets NGINX_PID, which is stopped at exit.
#   start_nginx DIR PORT WORKERS BODY [STDOUT_LOG] [CPU...]
# With CPUs given, worker i is pinned to the i-th of them (as NexusCache pins
# its cores with --cpuset), so both servers run on the same CPUs.
start_nginx() {
    local dir="$1" port="$2" workers="$3" body="$4" stdout_log="${5:-$1/stdout.log}" bin
    local affinity="" cpu
    shift 5 2>/dev/null || shift $#
    if (($#)); then
        # worker_cpu_affinity takes one bit mask per worker, CPU 0 rightmost.
        for cpu in "$@"; do
            affinity+=" 1$(printf '%*s' "$cpu" '' | tr ' ' 0)"
        done
        affinity="worker_cpu_affinity$affinity;"
    fi
    bin="$(command -v nginx || echo /usr/sbin/nginx)"
    mkdir -p "$dir/logs"
    cat >"$dir/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes $workers;
$affinity
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events {
    worker_connections 4096;
}
http {
    access_log off;
    keepalive_requests 1000000000;
    keepalive_timeout 120s;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    server {
        listen 127.0.0.1:$port;
        location / {
            default_type "text/plain; charset=utf-8";
            return 200 "$body";
        }
    }
}
EOF
    # -e: nginx opens its error log before reading the config; keep even
    # that out of /var/log.
    "$bin" -t -q -p "$dir" -e "$dir/logs/error.log" -c "$dir/nginx.conf" ||
        die "generated nginx config is invalid: $dir/nginx.conf"
    log "starting nginx on 127.0.0.1:$port with $workers workers, body ${#body} bytes"
    "$bin" -p "$dir" -e "$dir/logs/error.log" -c "$dir/nginx.conf" >"$stdout_log" 2>&1 &
    NGINX_PID=$!
    kill_on_exit "$NGINX_PID"
    if ! wait_http "http://127.0.0.1:$port/" 15 "$NGINX_PID"; then
        cat "$dir/logs/error.log" "$stdout_log" >&2 || true
        die "nginx did not start"
    fi
}
