#!/usr/bin/env python3
"""Redis client library check: the Python `redis` package (redis-py), over
RESP2 and RESP3, against a running NexusCache cluster's RESP ports.

    python3 tests/resp_clients.py --nodes 19000,19001,19002 \
        [--auth-port 19003 --token T] [--venv DIR] [--only commands|atomicity]

Installs redis-py into a virtual environment (default
target/resp-clients-venv, or --venv DIR) on first use, then runs the checks:
a key set through one node is read, incremented, expired and deleted through
the others; every conditional and read-modify-write command (SET
NX|XX|GET|KEEPTTL|PX, SETNX, GETSET, GETDEL, GETEX, APPEND, INCR/DECR/INCRBY/
DECRBY, EXPIRE/PEXPIRE/EXPIREAT/PEXPIREAT with NX|XX|GT|LT, PERSIST) across
nodes; MSET/MGET across nodes; pipelines of 1,000 mixed commands; the
connection commands client libraries send; Redis's errors for wrong arity,
a wrong type of argument, an unknown command, NOAUTH and WRONGPASS (with
--auth-port: a node started with --auth-token T); and atomicity: 8 clients
on the 3 nodes INCR one key 10,000 times each (exactly 80,000), and clients
on every node race SET NX on many keys (exactly one winner per key).
Prints one line per check and a closing "N passed, N failed" line.

Exit codes: 0 all passed, 1 a check failed, 3 the Python dependencies could
not be installed, 2 bad arguments.
"""

import argparse
import os
import random
import sys
import threading
import time
import traceback

import pyvenv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ["redis>=5,<9"]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", required=True, help="RESP ports of the cluster's nodes, comma-separated")
    p.add_argument("--auth-port", type=int, help="RESP port of a node started with --auth-token")
    p.add_argument("--token", help="that node's token")
    p.add_argument(
        "--only",
        choices=["commands", "atomicity"],
        help="run only the command checks (RESP2 and RESP3) or only the atomicity checks",
    )
    p.add_argument(
        "--venv",
        default=os.path.join(ROOT, "target", "resp-clients-venv"),
        help="virtual environment for redis-py (created if missing)",
    )
    return p.parse_args()


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
    pyvenv.ensure("resp_clients", args.venv, PACKAGES, "import redis")
    import redis

    ports = [int(p) for p in args.nodes.split(",")]
    if len(ports) < 3:
        print("resp_clients: --nodes needs three ports", file=sys.stderr)
        return 2
    checks = Checks()
    run_id = f"{os.getpid()}-{int(time.time() * 1000)}"

    for proto in (2, 3) if args.only != "atomicity" else ():
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

        def atomic_commands_across_nodes():
            k, s2 = key + ":atomic", key + ":append"
            # INCR family: the counter lives on one owner, whichever node
            # each command comes in by.
            expect(a.set(k, "10") is True, "SET via node 1")
            expect(b.incr(k) == 11, "INCR via node 2")
            expect(c.decr(k) == 10, "DECR via node 3")
            expect(a.incrby(k, 5) == 15, "INCRBY via node 1")
            expect(b.decrby(k, 3) == 12, "DECRBY via node 2")
            expect(c.get(k) == b"12", "GET via node 3")
            expect(a.incr(key + ":fresh") == 1, "INCR of a missing key counts from 0")
            expect(b.getdel(key + ":fresh") == b"1", "GETDEL via node 2")
            # SET conditions and GET.
            expect(c.set(k, "x", nx=True) is None, "SET NX of a present key: nil")
            expect(a.set(k, "13", xx=True) is True, "SET XX of a present key")
            expect(b.set(key + ":none", "x", xx=True) is None, "SET XX of a missing key: nil")
            expect(b.set(k, "14", get=True) == b"13", "SET GET answers the old value")
            expect(c.getset(k, "15") == b"14", "GETSET via node 3")
            expect(a.set(key + ":new", "v", nx=True, get=True) is None, "SET NX GET of a new key")
            expect(b.get(key + ":new") == b"v", "SET NX GET wrote")
            expect(not c.setnx(k, "x"), "SETNX of a present key")
            expect(c.setnx(key + ":nx", "y"), "SETNX of a missing key")
            expect(a.get(key + ":nx") == b"y", "SETNX wrote")
            # KEEPTTL keeps the expiry; GETSET clears it.
            expect(a.set(k, "16", ex=100) is True, "SET EX")
            expect(b.set(k, "17", keepttl=True) is True, "SET KEEPTTL")
            expect(95 <= c.ttl(k) <= 111, "the expiry stayed")
            expect(a.getset(k, "18") == b"17", "GETSET")
            expect(b.ttl(k) == -1, "GETSET cleared the expiry")
            # PX keeps its milliseconds when forwarded to the owner (a
            # whole-second TTL would round 1500 ms up to 2000).
            for i, n in enumerate(nodes):
                expect(n.set(k, "px", px=1500) is True, f"SET PX via node {i + 1}")
                pttl = nodes[(i + 1) % 3].pttl(k)
                expect(1000 < pttl <= 1500, f"PTTL after SET PX via node {i + 1}: {pttl}")
            # EXPIRE family with NX/XX/GT/LT.
            expect(c.persist(k), "PERSIST of a key with an expiry")
            expect(not a.persist(k), "PERSIST of a key without one")
            expect(not b.expire(k, 100, xx=True), "EXPIRE XX without an expiry")
            expect(not b.expire(k, 100, gt=True), "EXPIRE GT without an expiry (infinite)")
            expect(b.expire(k, 100, nx=True), "EXPIRE NX")
            expect(not c.expire(k, 200, nx=True), "EXPIRE NX with an expiry")
            expect(95 <= a.ttl(k) <= 111, f"TTL after EXPIRE: {a.ttl(k)}")
            expect(not a.expire(k, 50, gt=True), "EXPIRE GT with an earlier time")
            expect(a.expire(k, 200, gt=True), "EXPIRE GT with a later time")
            expect(not b.expire(k, 300, lt=True), "EXPIRE LT with a later time")
            expect(c.pexpire(k, 150000, lt=True), "PEXPIRE LT with an earlier time")
            pttl = a.pttl(k)
            expect(140000 <= pttl <= 150000, f"PTTL after PEXPIRE: {pttl}")
            now = time.time()
            expect(b.expireat(k, int(now) + 100), "EXPIREAT")
            expect(90 <= c.ttl(k) <= 111, f"TTL after EXPIREAT: {c.ttl(k)}")
            expect(c.pexpireat(k, int(now * 1000) + 50000), "PEXPIREAT")
            pttl = a.pttl(k)
            expect(40000 <= pttl <= 50000, f"PTTL after PEXPIREAT: {pttl}")
            expect(not a.expire(key + ":none", 10), "EXPIRE of a missing key")
            # GETEX: a read, or a read that changes the expiry.
            expect(b.getex(k) == b"px", "GETEX without an option")
            expect(c.getex(k, persist=True) == b"px", "GETEX PERSIST")
            expect(a.ttl(k) == -1, "GETEX PERSIST removed the expiry")
            expect(a.getex(k, px=80000) == b"px", "GETEX PX")
            pttl = b.pttl(k)
            expect(70000 <= pttl <= 80000, f"PTTL after GETEX PX: {pttl}")
            expect(c.getex(key + ":none", ex=10) is None, "GETEX of a missing key")
            # APPEND, GETDEL.
            expect(c.append(s2, "ab") == 2, "APPEND creates via node 3")
            expect(a.append(s2, "cd") == 4, "APPEND via node 1")
            expect(b.get(s2) == b"abcd", "GET via node 2")
            expect(a.getdel(s2) == b"abcd", "GETDEL via node 1")
            expect(b.getdel(s2) is None, "GETDEL of a missing key")
            expect(c.exists(s2) == 0, "GETDEL removed it")
            # A time at or before now deletes.
            expect(b.expire(k, -1), "EXPIRE -1 of a present key")
            expect(c.exists(k) == 0, "gone after EXPIRE -1")
            expect(not a.expire(k, -1), "EXPIRE -1 of a missing key")
            expect(a.set(k, "v") is True, "SET again")
            expect(b.pexpireat(k, 1000), "PEXPIREAT in the past")
            expect(c.get(k) is None, "gone after PEXPIREAT in the past")
            # Refusals, in Redis's words.
            expect(a.set(k, "abc") is True, "SET a non-number")
            expect_error(lambda: b.incr(k), redis.ResponseError,
                         "value is not an integer or out of range")
            expect(a.set(k, str(2**63 - 1)) is True, "SET i64::MAX")
            expect_error(lambda: c.incr(k), redis.ResponseError,
                         "increment or decrement would overflow")
            expect(b.get(k) == str(2**63 - 1).encode(), "a refused INCR changes nothing")
            expect(a.delete(k, key + ":new", key + ":nx") == 3, "DEL")

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

        def atomic_pipeline_of_1000():
            pipe = b.pipeline(transaction=False)
            want = []
            for i in range(125):
                k = f"{key}:q{i}"
                pipe.set(k, i)
                want.append(True)
                pipe.incr(k)
                want.append(i + 1)
                pipe.incrby(k, 5)
                want.append(i + 6)
                pipe.setnx(k, "x")
                want.append(False)
                pipe.expire(k, 100)
                want.append(True)
                pipe.getex(k, persist=True)
                want.append(str(i + 6).encode())
                pipe.append(k, "!")
                want.append(len(str(i + 6)) + 1)
                pipe.getdel(k)
                want.append(f"{i + 6}!".encode())
            got = pipe.execute()
            expect(len(got) == 1000, f"{len(got)} replies")
            bad = [(j, g, w) for j, (g, w) in enumerate(zip(got, want)) if g != w]
            expect(not bad, f"replies in order; first differences: {bad[:5]}")

        def errors():
            expect_error(lambda: a.execute_command("GET"), redis.ResponseError,
                         "wrong number of arguments for 'get' command")
            expect_error(lambda: a.execute_command("SETEX", key, "soon", "v"), redis.ResponseError,
                         "value is not an integer or out of range")
            expect_error(lambda: a.execute_command("NOSUCHCOMMAND", "x"), redis.ResponseError,
                         "unknown command 'NOSUCHCOMMAND'")
            expect_error(lambda: a.execute_command("SELECT", 3), redis.ResponseError,
                         "DB index is out of range")
            expect_error(lambda: a.execute_command("INCR"), redis.ResponseError,
                         "wrong number of arguments for 'incr' command")
            expect_error(lambda: a.execute_command("EXPIRE", key, "soon"), redis.ResponseError,
                         "value is not an integer or out of range")
            expect_error(lambda: a.execute_command("INCRBY", key, "1.5"), redis.ResponseError,
                         "value is not an integer or out of range")
            expect_error(lambda: a.execute_command("SET", key, "v", "NX", "XX"), redis.ResponseError,
                         "syntax error")
            expect_error(lambda: a.execute_command("EXPIRE", key, 10, "NX", "GT"),
                         redis.ResponseError,
                         "NX and XX, GT or LT options at the same time are not compatible")
            expect(a.ping() is True, "usable after errors")

        checks.run(f"{tag}: connection commands", connection_commands)
        checks.run(f"{tag}: set, read, expire, delete across nodes", set_read_expire_delete_across_nodes)
        checks.run(f"{tag}: atomic commands across nodes", atomic_commands_across_nodes)
        checks.run(f"{tag}: MSET/MGET across nodes", mset_mget_across_nodes)
        checks.run(f"{tag}: pipeline of 1,000 commands", pipeline_of_1000)
        checks.run(f"{tag}: pipeline of 1,000 atomic commands", atomic_pipeline_of_1000)
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

    if args.only != "commands":
        checks.run("atomicity: 8 clients x 10,000 INCR over 3 nodes",
                   lambda: concurrent_incr(redis, ports, f"py:{run_id}:counter"))
        checks.run("atomicity: SET NX races over 3 nodes, one winner per key",
                   lambda: set_nx_race(redis, ports, f"py:{run_id}:race"))

    print(f"{checks.passed} passed, {checks.failed} failed")
    return 0 if checks.failed == 0 else 1


INCR_CLIENTS = 8
INCRS_PER_CLIENT = 10_000
# Each INCR is its own command; a batch is one pipeline round trip.
INCR_BATCH = 500


def no_retries(redis):
    """A client that resends a command after a timeout could count an INCR
    twice (redis-py retries 3 times by default): a slow reply must fail the
    check, never change what it measures."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return Retry(NoBackoff(), 0)


def run_threads(count, target):
    """Runs target(i) on `count` threads started together; re-raises the
    first failure."""
    barrier = threading.Barrier(count)
    errors = []

    def body(i):
        try:
            barrier.wait(timeout=30)
            target(i)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
        expect(not t.is_alive(), "a client thread did not finish within 120 s")
    if errors:
        raise errors[0]


def concurrent_incr(redis, ports, key):
    """8 clients spread over the nodes (RESP2 and RESP3 alternating) INCR
    one key 10,000 times each: exactly 80,000, and every client saw its own
    answers strictly increase."""
    clients = [
        redis.Redis(host="127.0.0.1", port=ports[i % len(ports)], protocol=2 + i % 2,
                    socket_timeout=60, retry=no_retries(redis))
        for i in range(INCR_CLIENTS)
    ]

    def work(i):
        last = 0
        for _ in range(INCRS_PER_CLIENT // INCR_BATCH):
            pipe = clients[i].pipeline(transaction=False)
            for _ in range(INCR_BATCH):
                pipe.incr(key)
            got = pipe.execute()
            expect(len(got) == INCR_BATCH, f"client {i}: {len(got)} replies")
            expect(all(x < y for x, y in zip([last] + got, got)),
                   f"client {i}: answers not increasing")
            last = got[-1]

    started = time.monotonic()
    run_threads(INCR_CLIENTS, work)
    elapsed = time.monotonic() - started
    total = INCR_CLIENTS * INCRS_PER_CLIENT
    for i, p in enumerate(ports):
        r = redis.Redis(host="127.0.0.1", port=p, socket_timeout=10)
        got = r.get(key)
        expect(got == str(total).encode(), f"node {i + 1} reads {got!r}, not {total}")
        r.close()
    print(f"     {total} INCRs in {elapsed:.1f} s ({total / elapsed:.0f}/s)")
    clients[0].delete(key)
    for cl in clients:
        cl.close()


RACE_KEYS = 500
RACERS_PER_NODE = 2


def set_nx_race(redis, ports, prefix):
    """Clients on every node (each in its own key order) race SET NX on the
    same keys: exactly one OK per key, and the key holds the winner's
    value."""
    keys = [f"{prefix}:{i}" for i in range(RACE_KEYS)]
    racers = [
        redis.Redis(host="127.0.0.1", port=p, protocol=2 + i % 2, socket_timeout=60,
                    retry=no_retries(redis))
        for i, p in enumerate(ports * RACERS_PER_NODE)
    ]
    won = [[] for _ in racers]

    def race(i):
        order = list(keys)
        random.Random(i).shuffle(order)
        pipe = racers[i].pipeline(transaction=False)
        for k in order:
            pipe.set(k, f"racer-{i}", nx=True)
        for k, ok in zip(order, pipe.execute()):
            if ok:
                won[i].append(k)

    started = time.monotonic()
    run_threads(len(racers), race)
    elapsed = time.monotonic() - started
    winners = {}
    for i, keys_won in enumerate(won):
        for k in keys_won:
            expect(k not in winners, f"{k}: racers {winners.get(k)} and {i} both won")
            winners[k] = i
    expect(len(winners) == RACE_KEYS, f"{RACE_KEYS - len(winners)} keys had no winner")
    check = redis.Redis(host="127.0.0.1", port=ports[0], socket_timeout=10)
    values = check.mget(keys)
    for k, v in zip(keys, values):
        expect(v == f"racer-{winners[k]}".encode(), f"{k} holds {v!r}, won by {winners[k]}")
    wins_per_node = [sum(len(won[i]) for i in range(len(racers)) if i % len(ports) == n)
                     for n in range(len(ports))]
    print(f"     {len(racers)} racers x {RACE_KEYS} keys in {elapsed:.1f} s; "
          f"wins by node {wins_per_node}")
    expect(check.delete(*keys) == RACE_KEYS, "DEL the raced keys")
    check.close()
    for r in racers:
        r.close()


if __name__ == "__main__":
    sys.exit(main())
