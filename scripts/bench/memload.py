#!/usr/bin/env python3
"""Bulk loaders for scripts/bench-memory.sh (standard library only).

  memload.py memcached HOST PORT COUNT VALUE_SIZE PREFIX
      pipelined text-protocol `set PREFIX<i> 0 0 VALUE_SIZE` for i in
      0..COUNT over one connection, in batches; every reply must be STORED.
      Prints "stored COUNT in S s".
  memload.py resp COUNT VALUE_SIZE PREFIX
      RESP `SET PREFIX<i> <value>` commands on stdout, for `redis-cli --pipe`.
  memload.py value VALUE_SIZE
      the value itself (alphanumeric), for reference.

Keys are PREFIX0 .. PREFIX(COUNT-1), the names nexuscache-bench uses with
--key-prefix PREFIX, and every value is the same VALUE_SIZE alphanumeric
bytes (a server stores each copy separately, so only the size matters).
"""

import random
import socket
import string
import sys
import time

BATCH = 2000


def value_bytes(size):
    r = random.Random(100)
    return "".join(r.choice(string.ascii_letters + string.digits) for _ in range(size)).encode()


def load_memcached(host, port, count, size, prefix):
    value = value_bytes(size)
    prefix = prefix.encode()
    stored = b"STORED\r\n"
    start = time.monotonic()
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for first in range(0, count, BATCH):
            n = min(BATCH, count - first)
            sock.sendall(b"".join(b"set %s%d 0 0 %d\r\n%s\r\n" % (prefix, i, size, value)
                                  for i in range(first, first + n)))
            # The replies of one batch (n * 8 bytes) fit in the socket
            # buffers, so sending a whole batch before reading cannot stall.
            want = n * len(stored)
            got = bytearray()
            while len(got) < want:
                chunk = sock.recv(max(65536, want - len(got)))
                if not chunk:
                    raise SystemExit(f"memcached closed the connection after {first} keys")
                got += chunk
            if bytes(got) != stored * n:
                bad = next(l for l in bytes(got).split(b"\r\n") if l != b"STORED")
                raise SystemExit(f"memcached answered {bad!r} in the batch starting at key {first}")
    print(f"stored {count} in {time.monotonic() - start:.1f} s")


def write_resp(count, size, prefix):
    value = value_bytes(size)
    out = sys.stdout.buffer
    head = b"*3\r\n$3\r\nSET\r\n"
    tail = b"$%d\r\n%s\r\n" % (size, value)
    prefix = prefix.encode()
    for first in range(0, count, BATCH):
        parts = []
        for i in range(first, min(count, first + BATCH)):
            key = b"%s%d" % (prefix, i)
            parts.append(b"%s$%d\r\n%s\r\n%s" % (head, len(key), key, tail))
        out.write(b"".join(parts))
    out.flush()


def main(argv):
    if len(argv) == 7 and argv[1] == "memcached":
        load_memcached(argv[2], int(argv[3]), int(argv[4]), int(argv[5]), argv[6])
    elif len(argv) == 5 and argv[1] == "resp":
        write_resp(int(argv[2]), int(argv[3]), argv[4])
    elif len(argv) == 3 and argv[1] == "value":
        sys.stdout.write(value_bytes(int(argv[2])).decode())
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
