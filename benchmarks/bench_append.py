"""What one durable score-log append costs on this disk.

A 600-byte `O_DSYNC` append to a growing file (as the spool's segments are written)
against overwriting blocks written beforehand (zeros, fsynced at creation: the size does
not change, no metadata to sync): blocks of appends, the two alternating, medians of the
process's CPU and wall an append.

Then the sync's wait off the caller's thread, as an event loop would need it: the same
append on the caller (it blocks for the sync), by a thread that signals an eventfd once its
`O_DSYNC` write returns, and by Linux AIO (a plain write, then `IOCB_CMD_FDSYNC` submitted
with the eventfd to signal, x86_64 only): how long the caller is blocked against how long
until the row is durable (the caller waits on the eventfd as a loop's poll would).

    PYTHONPATH=src:. .venv/bin/python benchmarks/bench_append.py --folder /path/on/the/disk
"""

from __future__ import annotations

import argparse
import ctypes
import os
import platform
import resource
import select
import statistics
import tempfile
import threading
import time
from pathlib import Path
from queue import SimpleQueue


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


class _Iocb(ctypes.Structure):
    _fields_ = [("data", ctypes.c_uint64), ("key", ctypes.c_uint32), ("rw_flags", ctypes.c_int32),
                ("opcode", ctypes.c_uint16), ("reqprio", ctypes.c_int16),
                ("fildes", ctypes.c_uint32), ("buf", ctypes.c_uint64),
                ("nbytes", ctypes.c_uint64), ("offset", ctypes.c_int64),
                ("reserved2", ctypes.c_uint64), ("flags", ctypes.c_uint32),
                ("resfd", ctypes.c_uint32)]


class _Aio:
    """fdatasync by the kernel's AIO (x86_64 system call numbers), completion on an eventfd."""

    SETUP, GETEVENTS, SUBMIT, FDSYNC, RESFD = 206, 208, 209, 3, 1

    def __init__(self, efd: int) -> None:
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.ctx = ctypes.c_ulong(0)
        self.efd = efd
        if self.libc.syscall(self.SETUP, 64, ctypes.byref(self.ctx)) != 0:
            raise OSError(ctypes.get_errno(), "io_setup")

    def fdatasync(self, fd: int) -> None:
        cb = _Iocb(opcode=self.FDSYNC, fildes=fd, flags=self.RESFD, resfd=self.efd)
        if self.libc.syscall(self.SUBMIT, self.ctx, 1,
                             (ctypes.POINTER(_Iocb) * 1)(ctypes.pointer(cb))) != 1:
            raise OSError(ctypes.get_errno(), "io_submit")

    def reap(self) -> None:
        events = (ctypes.c_int64 * 4)()
        if self.libc.syscall(self.GETEVENTS, self.ctx, 1, 1, events, None) != 1 or events[2]:
            raise OSError("the AIO fdatasync failed")


def off_the_caller(folder: Path, blocks: int, n: int, size: int) -> None:
    data = b"x" * (size - 1) + b"\n"
    efd = os.eventfd(0, os.EFD_NONBLOCK)
    aio = _Aio(efd) if platform.machine() == "x86_64" else None
    work: SimpleQueue[int] = SimpleQueue()

    def syncer() -> None:
        while (fd := work.get()) >= 0:
            os.write(fd, data)
            os.eventfd_write(efd, 1)

    threading.Thread(target=syncer, daemon=True).start()
    kinds = ["on the caller", "a thread", *(["Linux AIO"] if aio else [])]
    out: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in kinds}
    for b in range(blocks):
        for kind in kinds[b % len(kinds):] + kinds[:b % len(kinds)]:
            path = folder / "off.seg"
            flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC
            fd = os.open(path, flags | (0 if kind == "Linux AIO" else os.O_DSYNC), 0o644)
            blocked, t0 = 0.0, time.perf_counter()
            for _ in range(n):
                b0 = time.perf_counter()
                if kind == "on the caller":
                    os.write(fd, data)
                    blocked += time.perf_counter() - b0
                    continue
                if kind == "a thread":
                    work.put(fd)
                else:
                    assert aio is not None
                    os.write(fd, data)
                    aio.fdatasync(fd)
                blocked += time.perf_counter() - b0
                select.select([efd], [], [])
                os.eventfd_read(efd)
                if aio is not None and kind == "Linux AIO":
                    aio.reap()
            out[kind][0].append(1e6 * blocked / n)
            out[kind][1].append(1e6 * (time.perf_counter() - t0) / n)
            os.close(fd)
            path.unlink()
    work.put(-1)
    for kind, (held, wall) in out.items():
        print(f"durable append, {kind:13s}: caller blocked {statistics.median(held):7.1f} us, "
              f"durable after {statistics.median(wall):7.1f} us (medians of {blocks} blocks "
              f"of {n}, load {os.getloadavg()[0]:.1f})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--folder", type=Path, default=Path("."),
                        help="a folder on the disk the spool lives on")
    parser.add_argument("--blocks", type=int, default=20)
    parser.add_argument("--appends", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.folder) as tmp:
        appends(Path(tmp), args.blocks, args.appends, 600)
        off_the_caller(Path(tmp), args.blocks, args.appends, 600)


if __name__ == "__main__":
    main()
