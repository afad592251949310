#!/usr/bin/env python3
"""Redis client library check: the Python `redis` package (redis-py), over
RESP2 and RESP3, against a running NexusCache cluster's RESP ports.

    python3 tests/resp_clients.py --nodes 19000,19001,19002 \
        [--auth-port 19003 --token T] [--venv DIR]

Installs redis-py into a virtual environment (default
target/resp-clients-venv, or --venv DIR) on first use, then runs the checks:
a key set through one node is read, expired and deleted through the
others; MSET/MGET across nodes; a pipeline of 1,000 mixed commands; the
connection commands client libraries send; Redis's errors for wrong arity,
a wrong type of argument, an unknown command, NOAUTH and WRONGPASS (with
--auth-port: a node started with --auth-token T). Prints one line per check
and a closing "N passed, N failed" line.

Exit codes: 0 all passed, 1 a check failed, 3 the Python dependencies could
not be installed, 2 bad arguments.
"""

import argparse
import os
import subprocess
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ["redis>=5,<9"]
DEPS_FAILED = 3


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", required=True, help="RESP ports of the cluster's nodes, comma-separated")
    p.add_argument("--auth-port", type=int, help="RESP port of a node started with --auth-token")
    p.add_argument("--token", help="that node's token")
    p.add_argument(
        "--venv",
        default=os.path.join(ROOT, "target", "resp-clients-venv"),
        help="virtual environment for redis-py (created if missing)",
    )
    return p.parse_args()


def deps_missing():
    try:
        import redis  # noqa: F401
    except ImportError as e:
        return str(e)
    return None


def fail_deps(message):
    print(f"resp_clients: cannot install the Python dependencies: {message}", file=sys.stderr)
    print(
        "resp_clients: needs python3 with the venv module (Debian: python3-venv) and "
        f"PyPI access for: {' '.join(PACKAGES)}",
        file=sys.stderr,
    )
    sys.exit(DEPS_FAILED)


def ensure_deps(args):
    """Makes redis-py importable: here if it already is, else by re-running
    this script inside the venv, creating and filling the venv first."""
    if deps_missing() is None:
        return
    inside_venv = os.path.realpath(sys.prefix) == os.path.realpath(args.venv)
    if inside_venv:
        install(sys.executable)
        missing = deps_missing()
        if missing is not None:
            fail_deps(missing)
        return
    venv_python = os.path.join(args.venv, "bin", "python")
    if not os.path.exists(venv_python):
        print(f"resp_clients: creating virtual environment {args.venv}", flush=True)
        r = subprocess.run([sys.executable, "-m", "venv", args.venv])
        if r.returncode != 0 or not os.path.exists(venv_python):
            fail_deps(f"`{sys.executable} -m venv {args.venv}` failed")
    probe = subprocess.run([venv_python, "-c", "import redis"], capture_output=True)
    if probe.returncode != 0:
        install(venv_python)
    sys.stdout.flush()
    os.execv(venv_python, [venv_python, os.path.abspath(__file__)] + sys.argv[1:])


def install(python):
    print(f"resp_clients: pip install {' '.join(PACKAGES)}", flush=True)
    try:
        r = subprocess.run(
            [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"] + PACKAGES,
            timeout=900,
        )
    except subprocess.TimeoutExpired:
        fail_deps("pip install took over 15 minutes")
    if r.returncode != 0:
        fail_deps(f"pip install exited with {r.returncode}")


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def run(self, name, fn):
        try:
            fn()
        except Exception:  # noqa: BLE001 - every failure is reported
            self.failed += 1
            print(f"FAIL {name}")
            traceback.print_exc(file=sys.stdout)
        else:
            self.passed += 1
            print(f"ok   {name}")
        sys.stdout.flush()


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


def expect_error(fn, kind, text):
    try:
        result = fn()
    except kind as e:
        expect(text in str(e), f"error {e!r} does not say {text!r}")
        return
    raise AssertionError(f"expected {kind.__name__} ({text!r}), got {result!r}")


def main():
    args = parse_args()
    ensure_deps(args)
    import redis

    ports = [int(p) for p in args.nodes.split(",")]
    if len(ports) < 3:
        print("resp_clients: --nodes needs three ports", file=sys.stderr)
        return 2
    checks = Checks()
    run_id = f"{os.getpid()}-{int(time.time() * 1000)}"

    for proto in (2, 3):
        nodes = [
            redis.Redis(host="127.0.0.1", port=p, protocol=proto, socket_timeout=10)
            for p in ports
        ]
        a, b, c = nodes
        tag = f"resp{proto}"
        key = f"py:{run_id}:{tag}"

        def connection_commands():
            expect(a.ping() is True, "PING")
            expect(a.echo("hi") == b"hi", "ECHO")
            expect(a.client_setname(f"py-{tag}") is True, "CLIENT SETNAME")
            expect(a.client_getname() in (f"py-{tag}", f"py-{tag}".encode()), "CLIENT GETNAME")
            expect(isinstance(a.client_id(), int), "CLIENT ID")
            info = a.info()
            expect(info.get("redis_mode") == "standalone", f"INFO server: {info}")
            expect(info.get("cluster_enabled") == 0, "INFO cluster")
            expect("keyspace_hits" in info, "INFO stats")
            expect(isinstance(a.dbsize(), int), "DBSIZE")
            secs, micros = a.time()
            expect(abs(secs - time.time()) < 60 and 0 <= micros < 1_000_000, "TIME")
            config = a.config_get("maxmemory")
            expect(int(config["maxmemory"]) > 0, f"CONFIG GET maxmemory: {config}")
            expect(a.config_get("save") == {"save": ""}, "CONFIG GET save")
            expect(a.execute_command("SELECT", 0) in (True, b"OK", "OK"), "SELECT 0")
            expect(a.command_count() > 10, "COMMAND COUNT")

        def set_read_expire_delete_across_nodes():
            expect(a.set(key, "v1") is True, "SET via node 1")
            expect(b.get(key) == b"v1", "GET via node 2")
            expect(c.get(key) == b"v1", "GET via node 3")
            expect(b.exists(key, key + ":none") == 1, "EXISTS via node 2")
            expect(c.type(key) in (b"string", "string"), "TYPE via node 3")
            expect(c.strlen(key) == 2, "STRLEN via node 3")
            expect(b.ttl(key) == -1, "TTL without expiry")
            # Whole seconds: a write forwarded to its owner carries its TTL
            # in seconds (rounded up) between nodes.
            expect(b.set(key, "v2", ex=1) is True, "SET EX via node 2")
            pttl = c.pttl(key)
            expect(0 < pttl <= 1100, f"PTTL via node 3: {pttl}")
            expect(a.get(key) == b"v2", "the new value via node 1")
            time.sleep(1.25)
            expect(c.get(key) is None, "expired via node 3")
            expect(a.pttl(key) == -2, "PTTL of an expired key")
            expect(a.setex(key, 100, "v3") is True, "SETEX via node 1")
            expect(95 <= b.ttl(key) <= 111, "TTL via node 2")
            expect(c.delete(key, key + ":none") == 1, "DEL via node 3")
            expect(a.get(key) is None, "deleted via node 1")
            expect(b.unlink(key) == 0, "UNLINK of a missing key")

        def mset_mget_across_nodes():
            pairs = {f"{key}:m{i}": f"value-{i}" for i in range(30)}
            expect(a.mset(pairs) is True, "MSET via node 1")
            names = list(pairs) + [f"{key}:missing"]
            got = b.mget(names)
            want = [v.encode() for v in pairs.values()] + [None]
            expect(got == want, f"MGET via node 2 in order: {got}")
            expect(c.exists(*pairs) == 30, "EXISTS counts all")
            expect(c.delete(*pairs) == 30, "DEL counts all")
            expect(a.mget(list(pairs)) == [None] * 30, "all gone")

        def pipeline_of_1000():
            pipe = c.pipeline(transaction=False)
            want = []
            for i in range(250):
                k = f"{key}:p{i}"
                pipe.set(k, i)
                want.append(True)
                pipe.get(k)
                want.append(str(i).encode())
                pipe.exists(k)
                want.append(1)
                pipe.delete(k)
                want.append(1)
            got = pipe.execute()
            expect(len(got) == 1000, f"{len(got)} replies")
            expect(got == want, "replies in order")

        def errors():
            expect_error(lambda: a.execute_command("GET"), redis.ResponseError,
                         "wrong number of arguments for 'get' command")
            expect_error(lambda: a.execute_command("SETEX", key, "soon", "v"), redis.ResponseError,
                         "value is not an integer or out of range")
            expect_error(lambda: a.execute_command("NOSUCHCOMMAND", "x"), redis.ResponseError,
                         "unknown command 'NOSUCHCOMMAND'")
            expect_error(lambda: a.execute_command("SELECT", 3), redis.ResponseError,
                         "DB index is out of range")
            expect_error(lambda: a.incr(key), redis.ResponseError, "is not available")
            expect(a.ping() is True, "usable after errors")

        checks.run(f"{tag}: connection commands", connection_commands)
        checks.run(f"{tag}: set, read, expire, delete across nodes", set_read_expire_delete_across_nodes)
        checks.run(f"{tag}: MSET/MGET across nodes", mset_mget_across_nodes)
        checks.run(f"{tag}: pipeline of 1,000 commands", pipeline_of_1000)
        checks.run(f"{tag}: errors", errors)

        if args.auth_port:
            def auth():
                anonymous = redis.Redis(host="127.0.0.1", port=args.auth_port, protocol=2,
                                        socket_timeout=10)
                expect_error(lambda: anonymous.get("k"), redis.exceptions.AuthenticationError,
                             "Authentication required")
                wrong = redis.Redis(host="127.0.0.1", port=args.auth_port, protocol=proto,
                                    password="wrong-token", socket_timeout=10)
                expect_error(wrong.ping, redis.exceptions.AuthenticationError,
                             "invalid username-password pair")
                good = redis.Redis(host="127.0.0.1", port=args.auth_port, protocol=proto,
                                   password=args.token, socket_timeout=10)
                expect(good.set(key, "secret") is True, "SET after AUTH")
                expect(good.get(key) == b"secret", "GET after AUTH")
                named = redis.Redis(host="127.0.0.1", port=args.auth_port, protocol=proto,
                                    username="default", password=args.token, socket_timeout=10)
                expect(named.get(key) == b"secret", "AUTH default <token>")

            checks.run(f"{tag}: NOAUTH and WRONGPASS", auth)
        for n in nodes:
            n.close()

    print(f"{checks.passed} passed, {checks.failed} failed")
    return 0 if checks.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
