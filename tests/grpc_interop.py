#!/usr/bin/env python3
"""gRPC interoperability check: the reference gRPC implementation (grpcio,
C core) against a running NexusCache node.

    python3 tests/grpc_interop.py --target 127.0.0.1:10999 [--max-value-bytes N]

Installs grpcio and grpcio-tools into a virtual environment (default
target/grpc-interop-venv, or --venv DIR) on first use, generates the Python
stubs from proto/ into a temporary directory, then runs Set/Get/Delete and
the error-status checks. Prints one line per check and a closing
"N passed, N failed" line.

Exit codes: 0 all passed, 1 a check failed, 3 the Python dependencies could
not be installed, 2 bad arguments.
"""

import argparse
import os
import sys
import tempfile
import traceback

import pyvenv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTO_DIR = os.path.join(ROOT, "proto")
PROTO_FILE = "nexuscache/v1/cache.proto"
PACKAGES = ["grpcio>=1.60", "grpcio-tools>=1.60"]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", required=True, help="host:port of the node's gRPC port")
    p.add_argument(
        "--max-value-bytes",
        type=int,
        default=1 << 20,
        help="the node's --max-value-bytes, in bytes (default 1 MiB)",
    )
    p.add_argument(
        "--venv",
        default=os.path.join(ROOT, "target", "grpc-interop-venv"),
        help="virtual environment for grpcio (created if missing)",
    )
    return p.parse_args()


def generate_stubs():
    """Compiles proto/ into a temporary package directory and imports it."""
    from grpc_tools import protoc
    import importlib.resources

    out = tempfile.mkdtemp(prefix="nexuscache-grpc-stubs-")
    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"-I{well_known}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            PROTO_FILE,
        ]
    )
    if rc != 0:
        raise RuntimeError(f"protoc failed on {PROTO_FILE} (exit {rc})")
    sys.path.insert(0, out)
    from nexuscache.v1 import cache_pb2, cache_pb2_grpc

    return cache_pb2, cache_pb2_grpc


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def run(self, name, fn):
        try:
            fn()
        except Exception:  # noqa: BLE001 - report every failure and go on
            self.failed += 1
            print(f"FAIL {name}")
            traceback.print_exc(file=sys.stdout)
        else:
            self.passed += 1
            print(f"ok   {name}")
        sys.stdout.flush()


def main():
    args = parse_args()
    pyvenv.ensure("grpc_interop", args.venv, PACKAGES, "import grpc; from grpc_tools import protoc")
    import grpc

    pb, pb_grpc = generate_stubs()
    channel = grpc.insecure_channel(args.target)
    try:
        grpc.channel_ready_future(channel).result(timeout=10)
    except grpc.FutureTimeoutError:
        print(f"grpc_interop: cannot connect to {args.target} within 10 s", file=sys.stderr)
        return 1
    stub = pb_grpc.CacheStub(channel)
    timeout = 5.0  # also sent as grpc-timeout

    def expect_status(code, call, *a):
        try:
            call(*a, timeout=timeout)
        except grpc.RpcError as e:
            assert e.code() == code, f"expected {code}, got {e.code()}: {e.details()}"
            return e.details()
        raise AssertionError(f"expected {code}, call succeeded")

    def round_trip():
        key = b"py-interop"
        miss = stub.Get(pb.GetRequest(key=key), timeout=timeout)
        assert not miss.found, miss
        stub.Set(pb.SetRequest(key=key, value=b"hello", ttl_seconds=60, hot=True), timeout=timeout)
        hit = stub.Get(pb.GetRequest(key=key), timeout=timeout)
        assert hit.found and hit.value == b"hello" and hit.hot, hit
        assert stub.Delete(pb.DeleteRequest(key=key), timeout=timeout).deleted
        assert not stub.Delete(pb.DeleteRequest(key=key), timeout=timeout).deleted
        assert not stub.Get(pb.GetRequest(key=key), timeout=timeout).found

    def binary_value_at_the_limit():
        key = b"py-big\x00\xff"
        value = bytes(i % 256 for i in range(args.max_value_bytes))
        stub.Set(pb.SetRequest(key=key, value=value), timeout=timeout)
        hit = stub.Get(pb.GetRequest(key=key), timeout=timeout)
        assert hit.found and hit.value == value

    def forwarded():
        stub.Set(pb.SetRequest(key=b"py-fwd", value=b"v", forwarded=True), timeout=timeout)
        hit = stub.Get(pb.GetRequest(key=b"py-fwd", forwarded=True), timeout=timeout)
        assert hit.value == b"v", hit

    def empty_key():
        expect_status(grpc.StatusCode.INVALID_ARGUMENT, stub.Get, pb.GetRequest(key=b""))
        expect_status(grpc.StatusCode.INVALID_ARGUMENT, stub.Set, pb.SetRequest(key=b"", value=b"v"))
        expect_status(grpc.StatusCode.INVALID_ARGUMENT, stub.Delete, pb.DeleteRequest(key=b""))

    def ttl_over_three_days():
        details = expect_status(
            grpc.StatusCode.INVALID_ARGUMENT,
            stub.Set,
            pb.SetRequest(key=b"py-ttl", value=b"v", ttl_seconds=259201),
        )
        assert "ttl" in details, details

    def value_too_large():
        over = b"x" * (args.max_value_bytes + 1)
        expect_status(grpc.StatusCode.RESOURCE_EXHAUSTED, stub.Set, pb.SetRequest(key=b"k", value=over))
        huge = b"x" * (4 * args.max_value_bytes)
        expect_status(grpc.StatusCode.RESOURCE_EXHAUSTED, stub.Set, pb.SetRequest(key=b"k", value=huge))

    def unknown_method():
        nope = channel.unary_unary(
            "/nexuscache.v1.Cache/Nope",
            request_serializer=pb.GetRequest.SerializeToString,
            response_deserializer=pb.GetResponse.FromString,
        )
        expect_status(grpc.StatusCode.UNIMPLEMENTED, nope, pb.GetRequest(key=b"k"))

    def still_serving():
        stub.Set(pb.SetRequest(key=b"py-after", value=b"ok"), timeout=timeout)
        assert stub.Get(pb.GetRequest(key=b"py-after"), timeout=timeout).value == b"ok"

    checks = Checks()
    for name, fn in [
        ("set/get/delete round trip", round_trip),
        ("binary value at --max-value-bytes", binary_value_at_the_limit),
        ("forwarded=true is served", forwarded),
        ("empty key -> INVALID_ARGUMENT", empty_key),
        ("ttl over three days -> INVALID_ARGUMENT", ttl_over_three_days),
        ("value too large -> RESOURCE_EXHAUSTED", value_too_large),
        ("unknown method -> UNIMPLEMENTED", unknown_method),
        ("still serving after errors", still_serving),
    ]:
        checks.run(name, fn)
    channel.close()
    print(f"{checks.passed} passed, {checks.failed} failed")
    return 0 if checks.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
