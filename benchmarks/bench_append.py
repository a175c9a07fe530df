"""What one durable score-log append costs on this disk.

A 600-byte `O_DSYNC` append to a growing file (as the spool's segments are written)
against overwriting blocks written beforehand (zeros, fsynced at creation: the size does
not change, no metadata to sync): blocks of appends, the two alternating, medians of the
process's CPU and wall an append.

    PYTHONPATH=src:. .venv/bin/python benchmarks/bench_append.py --folder /path/on/the/disk
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def appends(folder: Path, blocks: int, n: int, size: int) -> None:
    data = b"x" * (size - 1) + b"\n"
    out: dict[str, tuple[list[float], list[float]]] = {"growing": ([], []),
                                                       "prezeroed": ([], [])}
    for b in range(blocks):
        for kind in (["growing", "prezeroed"] if b % 2 == 0 else ["prezeroed", "growing"]):
            path = folder / f"{kind}.seg"
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_DSYNC, 0o644)
            if kind == "prezeroed":
                os.write(fd, b"\0" * (n * size + 4096))
                os.fsync(fd)
                os.lseek(fd, 0, os.SEEK_SET)
            c0, t0 = _cpu(), time.perf_counter()
            for _ in range(n):
                os.write(fd, data)
            t1, c1 = time.perf_counter(), _cpu()
            os.close(fd)
            path.unlink()
            out[kind][0].append(1e6 * (c1 - c0) / n)
            out[kind][1].append(1e6 * (t1 - t0) / n)
    for kind, (cpu, wall) in out.items():
        print(f"{kind:10s} O_DSYNC append of {size} B: median process CPU "
              f"{statistics.median(cpu):6.1f} us, wall {statistics.median(wall):7.1f} us "
              f"({blocks} blocks of {n}, load {os.getloadavg()[0]:.1f})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--folder", type=Path, default=Path("."),
                        help="a folder on the disk the spool lives on")
    parser.add_argument("--blocks", type=int, default=20)
    parser.add_argument("--appends", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.folder) as tmp:
        appends(Path(tmp), args.blocks, args.appends, 600)


if __name__ == "__main__":
    main()
