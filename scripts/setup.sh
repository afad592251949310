#!/usr/bin/env bash
# Install what building, testing and benchmarking NexusCache needs on Debian 12.
#
#   scripts/setup.sh            everything the tests and benchmarks use
#   scripts/setup.sh --minimal  only what building and running a node needs
#
# Idempotent: it checks for each command first and runs apt-get (update, then
# install) only when something is missing, so calling it at the start of
# every script costs a few milliseconds once the machine is set up.
# Non-interactive: never reads stdin, works with DEBIAN_FRONTEND=noninteractive.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    sed -n '2,10s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

mode=full
while (($#)); do
    case "$1" in
    --minimal) mode=minimal ;;
    --full) mode=full ;;
    -h | --help)
        usage
        exit 0
        ;;
    *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done

# The Rust toolchain cannot come from apt (Debian's rustc is too old for our
# MSRV and CI has no route to the rustup servers), so only check for it.
ensure_cargo
if [[ "$mode" == full ]]; then
    # test.sh runs both; they are rustup components, not apt packages.
    for tool in fmt clippy; do
        cargo "$tool" --version >/dev/null 2>&1 ||
            die "cargo $tool is missing: rustup component add ${tool/fmt/rustfmt}"
    done
    cargo nextest --version >/dev/null 2>&1 ||
        log "cargo-nextest not installed: test.sh will use cargo test (cargo install --locked cargo-nextest)"
fi

has_cmd() {
    # /usr/sbin is not on a normal user's PATH, and nginx lives there.
    command -v "$1" >/dev/null 2>&1 || [[ -x "/usr/sbin/$1" ]]
}

# Each check is "kind:what:package": kind is cmd (a command), file (a path)
# or py (a python3 statement that must run). The package provides it.
checks=(
    # etcd-client's and tonic's build scripts run protoc and need the
    # well-known types (google/protobuf/*.proto).
    "cmd:protoc:protobuf-compiler"
    "file:/usr/include/google/protobuf/timestamp.proto:libprotobuf-dev"
    # scripts use curl for readiness polls and prefills.
    "cmd:curl:curl"
)
if [[ "$mode" == full ]]; then
    checks+=(
        "cmd:etcd:etcd-server"   # membership tests start a real etcd
        "cmd:etcdctl:etcd-client"
        "cmd:nginx:nginx-light"  # baseline for bench-http.sh
        "cmd:wrk:wrk"            # HTTP load generator for bench-http.sh
        "cmd:prometheus:prometheus"
        "cmd:promtool:prometheus" # `promtool check metrics` on /metrics
        "cmd:h2load:nghttp2-client" # HTTP/2 (gRPC transport) load and probes
        "cmd:nghttp:nghttp2-client"
        "cmd:redis-server:redis-server" # comparison baselines in bench/
        "cmd:redis-benchmark:redis-server"
        "cmd:redis-cli:redis-tools" # tests/resp_clients.rs drives it; bench-resp.sh
        "cmd:memcached:memcached"
        # tests/netns_faults.rs builds network namespaces, veth pairs and a
        # bridge (ip), and adds delay with netem where the kernel has it (tc).
        "cmd:ip:iproute2"
        "cmd:tc:iproute2"
        # Python helpers make their own venv; Debian's python3 needs this
        # package for `python3 -m venv` (a pyenv/python.org build has it).
        "py:import venv, ensurepip:python3-venv"
    )
fi

missing_pkgs=()
missing_what=()
check_all() {
    local entry kind what pkg ok
    missing_pkgs=()
    missing_what=()
    for entry in "${checks[@]}"; do
        kind="${entry%%:*}"
        pkg="${entry##*:}"
        what="${entry#*:}"
        what="${what%:*}"
        ok=0
        case "$kind" in
        cmd) has_cmd "$what" && ok=1 ;;
        file) [[ -e "$what" ]] && ok=1 ;;
        py) command -v python3 >/dev/null 2>&1 && python3 -c "$what" >/dev/null 2>&1 && ok=1 ;;
        esac
        if ((ok == 0)); then
            missing_what+=("$what")
            # One package can provide several checks; list it once.
            if [[ " ${missing_pkgs[*]-} " != *" $pkg "* ]]; then
                missing_pkgs+=("$pkg")
            fi
        fi
    done
}

check_all
if ((${#missing_pkgs[@]} == 0)); then
    log "all prerequisites present ($mode)"
    exit 0
fi

log "missing: ${missing_what[*]}"
log "installing Debian packages: ${missing_pkgs[*]}"

command -v apt-get >/dev/null 2>&1 ||
    die "apt-get not found: this script supports Debian 12; install these packages by hand: ${missing_pkgs[*]}"
SUDO=()
if ((EUID != 0)); then
    # -n: never prompt for a password (there is no one to answer in CI).
    if ! command -v sudo >/dev/null 2>&1 || ! sudo -n true 2>/dev/null; then
        die "installing packages needs root (or password-less sudo); missing: ${missing_pkgs[*]}"
    fi
    SUDO=(sudo -n)
fi

# Debian's postinst scripts start nginx, redis, memcached, etcd and prometheus
# as system services. We don't want them: they would hold ports (80, 6379,
# 11211, 2379, 9090) our tests and benchmarks may want, and starting a service
# fails in containers without an init system, which would fail the install.
# policy-rc.d returning 101 ("action forbidden") makes invoke-rc.d and
# deb-systemd-invoke skip every start. An existing policy file is the
# administrator's choice and is left alone.
POLICY=/usr/sbin/policy-rc.d
if [[ ! -e "$POLICY" ]]; then
    printf '#!/bin/sh\n# temporary, from NexusCache scripts/setup.sh: no service starts during install\nexit 101\n' |
        "${SUDO[@]}" tee "$POLICY" >/dev/null
    "${SUDO[@]}" chmod 0755 "$POLICY"
    on_exit "${SUDO[*]} rm -f $POLICY"
else
    log "keeping existing $POLICY"
fi

export DEBIAN_FRONTEND=noninteractive
# Wait for another apt/dpkg run (unattended-upgrades, a parallel script)
# instead of failing on the lock; retry flaky mirror downloads.
APT_OPTS=(-q -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)
"${SUDO[@]}" apt-get "${APT_OPTS[@]}" update </dev/null
# confdef/confold: never ask about config files touched by an earlier install.
"${SUDO[@]}" apt-get "${APT_OPTS[@]}" install -y --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${missing_pkgs[@]}" </dev/null

check_all
if ((${#missing_what[@]})); then
    die "still missing after install: ${missing_what[*]} (packages: ${missing_pkgs[*]})"
fi

# With policy-rc.d in place nothing should be listening; if a service did get
# started (e.g. an admin policy that allows it) say so, but don't touch it:
# we only ever stop processes we started ourselves.
if command -v ss >/dev/null 2>&1; then
    for port in 80 2379 6379 9090 11211; do
        if ss -Hltn "sport = :$port" 2>/dev/null | grep -q .; then
            warn "something is listening on port $port (a system service?); tests pick free ports, but you may want to stop it"
        fi
    done
fi
log "prerequisites installed ($mode)"
