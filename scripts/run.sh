#!/usr/bin/env bash
# Build and start one NexusCache node in the foreground:
#
#   scripts/run.sh [serve flags...]     e.g. scripts/run.sh --http-port 8080 --cores 2
#
# Flags go straight to `nexuscache serve` (see `nexuscache serve --help`);
# without any the node listens on 127.0.0.1:9999 with one executor per CPU.
# Installs only the build prerequisites (setup.sh --minimal), builds in
# release mode, raises the locked-memory limit glommio needs, then execs the
# server so that signals (Ctrl-C, SIGTERM) reach it directly and it drains.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bash scripts/setup.sh --minimal
ensure_cargo
cargo build --release --bin nexuscache
raise_memlock
check_io_uring

bin="$(cargo_target_dir)/release/nexuscache"
[[ -x "$bin" ]] || die "build finished but $bin is missing"
# exec replaces this shell: lib.sh's exit trap has nothing to clean up here.
exec "$bin" serve "$@"
