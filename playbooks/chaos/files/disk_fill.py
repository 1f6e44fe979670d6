#!/usr/bin/env python
"""Fill a lab host's own filesystem for real (selfheal.core.chaos.disk_fill), and print what it wrote.

    disk_fill.py --mount PATH --mode logs|tmp|protected|grow|stop [--percent P] [--rate MIB_PER_S]

logs       one big log (compressible text) in log/ up to P% used: rotate_logs reclaims it
tmp        temp files in tmp/ not touched for 10 days up to P%, a fresh one beside them (kept) and a small
           log (under the rotation size): clean_tmp reclaims them, the steps before it find nothing
protected  data in data/ (a protected path) up to P%: no step may reclaim it, a human is paged
grow       a writer in the background appends to log/app.log at RATE MiB/s until what it wrote would
           have taken usage to P% (the predictive alert fires before that); its pid is in ../disk-writer.pid
stop       end a running writer

Every mode but stop also leaves a few protected files in data/ (their checksums must never change).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Callable

LINE = b"2026-12-01T00:00:00Z INFO request served path=/index.html status=200 bytes=5120 upstream=demo\n"
OLD = 10 * 86400
ROTATED_OLD = 30 * 86400


def used_percent(mount: str) -> float:
    st = os.statvfs(mount)
    return 100.0 * (1 - st.f_bavail / st.f_blocks)


def room(mount: str, percent: float) -> int:
    """Bytes to write for usage to reach `percent`."""
    st = os.statvfs(mount)
    size = st.f_blocks * st.f_frsize
    return max(0, int(size * percent / 100) - (size - st.f_bavail * st.f_frsize))


def write(path: str, size: int, text: bool, age: float = 0) -> None:
    chunk = LINE * (65536 // len(LINE)) if text else None
    with open(path, "wb") as fh:
        left = size
        while left > 0:
            data = chunk if chunk is not None else os.urandom(65536)
            fh.write(data[:left])
            left -= len(data)
    if age:
        then = time.time() - age
        os.utime(path, (then, then))


def protected(mount: str) -> None:
    data = os.path.join(mount, "data")
    os.makedirs(data, exist_ok=True)
    for i in range(3):
        path = os.path.join(data, f"records-{i}.db")
        if not os.path.exists(path):
            write(path, 64 * 1024, text=False, age=OLD)  # old: an age rule that crossed into data/ would hit it
            os.chmod(path, 0o640)


def writer_pidfile(mount: str) -> str:
    return os.path.join(os.path.dirname(mount.rstrip("/")), "disk-writer.pid")


def grow(mount: str, total: int, rate: float) -> None:
    """The background writer: appends to log/app.log (O_APPEND, so a copytruncate rotation is safe)."""
    chunk = LINE * (262144 // len(LINE))
    interval = len(chunk) / (rate * 1048576)
    written = 0
    with open(os.path.join(mount, "log", "app.log"), "ab") as fh:
        while written < total:
            try:
                fh.write(chunk)
                fh.flush()
            except OSError:
                break  # full: the fill has done what it came for
            written += len(chunk)
            time.sleep(interval)
    if os.path.exists(writer_pidfile(mount)):
        os.unlink(writer_pidfile(mount))


def background(work: Callable[[], None], pidfile: str) -> None:
    """Run `work` in a daemon process (detached from the SSH session, which ends now), its pid in `pidfile`."""
    child = os.fork()
    if child > 0:
        os.waitpid(child, 0)
        deadline = time.monotonic() + 5
        while not os.path.exists(pidfile) and time.monotonic() < deadline:
            time.sleep(0.02)
        return
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    with open(pidfile, "w") as fh:
        fh.write(f"{os.getpid()}\n")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    try:
        work()
    finally:
        os._exit(0)


def stop(mount: str) -> bool:
    try:
        with open(writer_pidfile(mount)) as fh:
            pid = int(fh.read().split()[0])
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        return False
    os.unlink(writer_pidfile(mount))
    return True


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mount", required=True)
    parser.add_argument("--mode", required=True, choices=["logs", "tmp", "protected", "grow", "stop"])
    parser.add_argument("--percent", type=float, default=95)
    parser.add_argument("--rate", type=float, default=2.0)
    args = parser.parse_args()
    mount = args.mount
    if not os.path.ismount(mount):
        print(json.dumps({"error": f"{mount} is not a mount point"}))
        return 2
    if args.mode == "stop":
        print(json.dumps({"stopped": stop(mount)}))
        return 0
    for sub in ("log", "tmp", "data"):
        os.makedirs(os.path.join(mount, sub), exist_ok=True)
    protected(mount)
    before = used_percent(mount)
    need = room(mount, args.percent)
    if args.mode == "logs":
        write(os.path.join(mount, "log", "app.log"), need, text=True)
    elif args.mode == "tmp":
        write(os.path.join(mount, "log", "small.log"), 4096, text=True)
        write(os.path.join(mount, "tmp", "fresh.part"), 1 << 20, text=False)
        need = room(mount, args.percent)
        for i in range(4):
            write(os.path.join(mount, "tmp", f"upload-{i}.tmp"), need // 4, text=False, age=OLD)
    elif args.mode == "protected":
        write(os.path.join(mount, "data", "big-table.db"), need, text=False, age=OLD)
    elif args.mode == "grow":
        stop(mount)
        background(lambda: grow(mount, need, args.rate), writer_pidfile(mount))
    print(json.dumps({"mode": args.mode, "before": round(before, 2), "after": round(used_percent(mount), 2),
                      "bytes": need}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
