"""Minimal reader for HdrHistogram interval logs (compressed V2 encoding).

nexuscache-bench's --hdr-log writes one histogram per measured second and
operation (Tag=read / Tag=write), values in nanoseconds. Adding every
interval of every tag gives the latency distribution of all requests of a
run, which the JSON summary (per operation only) cannot give.

Standard library only, so the benchmark scripts need no pip install.
"""

import base64
import math
import struct
import zlib

# The 0xF0 bits of a cookie carry a word size (0x10 in V2); compare the rest.
V2_COOKIE = 0x1C849303
V2_COMPRESSED_COOKIE = 0x1C849304
COOKIE_MASK = ~0xF0 & 0xFFFFFFFF


class Histogram:
    """Counts by bucket index, with the layout of an HdrHistogram."""

    def __init__(self, lowest, highest, digits):
        self.lowest = lowest
        self.highest = highest
        self.digits = digits
        largest_single_unit = 2 * 10**digits
        count_magnitude = max(1, math.ceil(math.log2(largest_single_unit)))
        self.half_count_magnitude = count_magnitude - 1
        self.sub_bucket_count = 1 << (self.half_count_magnitude + 1)
        self.sub_bucket_half_count = self.sub_bucket_count // 2
        self.unit_magnitude = int(math.floor(math.log2(lowest))) if lowest > 0 else 0
        self.counts = {}
        self.total = 0

    def layout(self):
        return (self.lowest, self.highest, self.digits)

    def _bucket(self, index):
        bucket = (index >> self.half_count_magnitude) - 1
        sub = (index & (self.sub_bucket_half_count - 1)) + self.sub_bucket_half_count
        if bucket < 0:
            sub -= self.sub_bucket_half_count
            bucket = 0
        return bucket, sub

    def value_at_index(self, index):
        bucket, sub = self._bucket(index)
        return sub << (bucket + self.unit_magnitude)

    def highest_equivalent(self, index):
        bucket, _ = self._bucket(index)
        return self.value_at_index(index) + (1 << (bucket + self.unit_magnitude)) - 1

    def add(self, other):
        if other.layout() != self.layout():
            raise ValueError("histograms with different layouts")
        for i, c in other.counts.items():
            self.counts[i] = self.counts.get(i, 0) + c
        self.total += other.total

    def quantile(self, q):
        """Value at quantile q (0..1), like HdrHistogram's value_at_quantile."""
        if self.total == 0:
            return None
        target = max(1, math.ceil(q * self.total)) if q < 1 else self.total
        seen = 0
        for i in sorted(self.counts):
            seen += self.counts[i]
            if seen >= target:
                return self.highest_equivalent(i)
        return self.highest_equivalent(max(self.counts))

    def max(self):
        return self.highest_equivalent(max(self.counts)) if self.counts else None


def _zigzag_leb128(buf, pos):
    """One ZigZag LEB128 i64 (at most 9 bytes, the 9th carries 8 bits)."""
    result = 0
    shift = 0
    for n in range(9):
        b = buf[pos]
        pos += 1
        if n == 8:
            result |= b << 56
            break
        result |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    value = (result >> 1) ^ -(result & 1)
    return value, pos


def decode(b64):
    raw = base64.b64decode(b64)
    cookie, length = struct.unpack_from(">II", raw, 0)
    if cookie & COOKIE_MASK != V2_COMPRESSED_COOKIE:
        raise ValueError(f"not a compressed V2 histogram (cookie {cookie:#x})")
    data = zlib.decompress(raw[8 : 8 + length])
    cookie, payload_len, _offset, digits, lowest, highest, _ratio = struct.unpack_from(">IIiIqqd", data, 0)
    if cookie & COOKIE_MASK != V2_COOKIE:
        raise ValueError(f"not a V2 histogram payload (cookie {cookie:#x})")
    hist = Histogram(lowest, highest, digits)
    pos, end, index = 40, 40 + payload_len, 0
    while pos < end:
        count, pos = _zigzag_leb128(data, pos)
        if count < 0:
            index += -count
        else:
            if count:
                hist.counts[index] = hist.counts.get(index, 0) + count
                hist.total += count
            index += 1
    return hist


def read_log(path, tags=None):
    """Sum of all interval histograms in the log (only `tags` if given)."""
    total = None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#") or line.startswith('"'):
                continue
            tag = None
            if line.startswith("Tag="):
                tag, line = line[4:].split(",", 1)
            if tags is not None and tag not in tags:
                continue
            b64 = line.split(",")[-1]
            hist = decode(b64)
            if total is None:
                total = hist
            else:
                total.add(hist)
    return total
