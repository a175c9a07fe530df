"""What one durable score-log append costs on this disk, and what the group commit adds.

1. A 600-byte `O_DSYNC` append to a growing file (as the spool's segments are written)
   against overwriting blocks written beforehand (zeros, fsynced at creation: the size does
   not change, no metadata to sync): blocks of appends, the two alternating, medians of the
   process's CPU and wall an append.
2. A lone durable commit (no request beside it) through `ScoreLog.commit`, the sync per
   batch (`commit_delay=0`) against the group commit (its turns of the event loop), the
   spool on tmpfs so that the sync's own cost stays out: the group commit's overhead.

    PYTHONPATH=src:. .venv/bin/python benchmarks/bench_append.py --folder /path/on/the/disk
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from propensity.database import engine_for, migrate
from serving.scorelog import ScoreLog
from serving.spool import Segment


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


def lone_commits(blocks: int, n: int) -> None:
    tmp = Path(tempfile.mkdtemp(dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    url = f"sqlite:///{tmp / 'scores.db'}"
    migrate(url)
    now = datetime.now(UTC)
    row = {"scored_at": now, "lead_id": "X", "probability": 0.5, "score": 50, "grade": "B",
           "mql": False, "model_name": "lead-conversion", "model_version": "1",
           "threshold_version": 0, "input_hash": "-", "as_of": now}
    res: dict[float, list[float]] = {0.0: [], 0.002: []}
    for b in range(blocks):
        for delay in ((0.0, 0.002) if b % 2 == 0 else (0.002, 0.0)):
            log = ScoreLog(engine_for(url), spool_dir=tmp / "spool", commit_delay=delay)
            log._segment = Segment.create(tmp / "spool")

            async def main(log: ScoreLog = log) -> None:
                for _ in range(n):
                    with log.in_flight():
                        await log.commit([row])

            c0 = _cpu()
            asyncio.run(main())
            res[delay].append(1e6 * (_cpu() - c0) / n)
            log._segment.remove()
    for delay, cpu in res.items():
        print(f"a lone commit, commit_delay {delay}: median CPU {statistics.median(cpu):.1f} us "
              f"(sync on tmpfs; {blocks} blocks of {n}, load {os.getloadavg()[0]:.1f})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--folder", type=Path, default=Path("."),
                        help="a folder on the disk the spool lives on")
    parser.add_argument("--blocks", type=int, default=20)
    parser.add_argument("--appends", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.folder) as tmp:
        appends(Path(tmp), args.blocks, args.appends, 600)
    lone_commits(6, 2000)


if __name__ == "__main__":
    main()
