"""The chunk checksum alone: zlib's CRC-32 on the coordinator's zero-copy view of a chunk,
against CRC-32C in hardware (google-crc32c, which takes bytes: the copy is counted).

    python -m bench.crc_bench [--chunks 256] [--runs 5]

4 MiB chunks (the agent's), seconds of CPU per GiB, median and range over the runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import zlib

import google_crc32c


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chunks", type=int, default=256)
    p.add_argument("--runs", type=int, default=5)
    a = p.parse_args()
    raw = os.urandom(4 << 20) + b"\0" * 16
    view = memoryview(raw)[8 : 8 + (4 << 20)]  # a slice of a received message, as wire.py hands it out
    gib = a.chunks * 4 / 1024
    results: dict[str, list[float]] = {"zlib.crc32 (view)": [], "google_crc32c (bytes copy + value)": []}
    for _ in range(a.runs):
        t = time.process_time()
        for _ in range(a.chunks):
            zlib.crc32(view)
        results["zlib.crc32 (view)"].append((time.process_time() - t) / gib)
        t = time.process_time()
        for _ in range(a.chunks):
            google_crc32c.value(bytes(view))
        results["google_crc32c (bytes copy + value)"].append((time.process_time() - t) / gib)
    for name, v in results.items():
        print(f"{name}: {statistics.median(v):.3f} CPU-s/GiB (range {min(v):.3f}-{max(v):.3f}, {a.runs} runs)")


if __name__ == "__main__":
    main()
