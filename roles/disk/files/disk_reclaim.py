#!/usr/bin/env python
"""Usage of one filesystem, and the reclaim steps of disk_full, printed as one JSON object.

    disk_reclaim.py --mount PATH [--protect PATH]... [--log-dir DIR]... [--tmp-dir DIR]...
                    [--cache-dir DIR]... [--cache-pattern GLOB]... [--tmp-age S] [--rotated-age S]
                    [--rotate-min BYTES] [--journal-keep BYTES]
                    (--diagnose | --usage | --step STEP [--check])

--diagnose   usage, the largest directories, what each step would reclaim, files deleted but still
             held open (space no step frees); changes nothing
--usage      usage and, when asked with --largest, the largest directories; changes nothing
--step STEP  one reclaim step, in the ladder's order:
               rotate_logs          compress each log over --rotate-min bytes to NAME-<UTC time>.gz, then
                                    truncate it in place (copytruncate: a writer keeps its open file)
               delete_rotated_logs  rotated logs (NAME.1, NAME.2.gz, NAME-20260101.gz) older than --rotated-age
               clean_tmp            files in the temp directories not modified nor read for --tmp-age
               clean_package_cache  files in the cache directories matching --cache-pattern (*.deb)
               vacuum_journal       journalctl --vacuum-size to --journal-keep, when the journal lives here
             with --check it lists what it would do and changes nothing

Only this filesystem is touched: a directory on another device is not walked, symbolic links are
never followed, and nothing under a --protect path is touched, ever (a relative one is under the
mount). A file some process holds open is not deleted (it would free nothing). Standard library
only, Python 3.8+: it runs under the target's own python3.
"""
from __future__ import annotations

import argparse
import errno
import fnmatch
import gzip
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator

STEPS = ("rotate_logs", "delete_rotated_logs", "clean_tmp", "clean_package_cache", "vacuum_journal")
# what logrotate leaves: NAME.1, NAME.2.gz, NAME-20260101, NAME-20260101T120000.gz, NAME.gz
ROTATED = re.compile(r"(\.\d+|-\d{8}(T?\d{6})?)(\.(gz|xz|bz2|zst))?$|\.(gz|xz|bz2|zst)$")
LISTED = 200  # files listed per step in the output (the totals count every one)
WALK_LIMIT = 200_000  # entries the largest-directories walk reads before it reports a partial answer


class Filesystem:
    """The filesystem mounted at `mount`, and the paths a reclaim may never touch."""

    def __init__(self, mount: str, protect: list[str]) -> None:
        self.mount = os.path.realpath(mount)
        self.device = os.stat(self.mount).st_dev
        self.protected = sorted({os.path.realpath(p if os.path.isabs(p) else os.path.join(self.mount, p))
                                 for p in protect})

    def usage(self) -> dict[str, object]:
        st = os.statvfs(self.mount)
        size, avail = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
        used = size - st.f_bfree * st.f_frsize
        # as the alert computes it (node_filesystem_avail_bytes / node_filesystem_size_bytes)
        percent = round(100.0 * (1 - avail / size), 2) if size else 0.0
        return {"mount": self.mount, "size": size, "used": used, "avail": avail, "percent": percent}

    def is_protected(self, path: str) -> bool:
        real = os.path.realpath(path)
        return any(real == p or real.startswith(p.rstrip("/") + "/") for p in self.protected)

    def here(self, path: str) -> bool:
        try:
            return os.lstat(path).st_dev == self.device
        except OSError:
            return False

    def files(self, top: str) -> Iterator[tuple[str, os.stat_result]]:
        """Regular files under `top` on this filesystem, outside every protected path, by paths with no
        symlink in them (`top` resolved first; what is below is never followed), which is what a change
        then opens (see _open_parent)."""
        top = os.path.realpath(top)
        if not self.here(top) or self.is_protected(top) or not os.path.isdir(top):
            return
        for root, dirs, names in os.walk(top, followlinks=False):
            dirs[:] = [d for d in dirs if self.here(os.path.join(root, d))
                       and not self.is_protected(os.path.join(root, d))]
            for name in names:
                path = os.path.join(root, name)
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode) and st.st_dev == self.device and not self.is_protected(path):
                    yield path, st

    def largest(self, count: int = 10) -> dict[str, object]:
        """The directories holding the most bytes (each counts what is below it), largest first."""
        sizes: dict[str, int] = {}
        seen = 0
        partial = False
        for root, dirs, names in os.walk(self.mount, followlinks=False):
            dirs[:] = [d for d in dirs if self.here(os.path.join(root, d))]
            total = 0
            for name in names:
                seen += 1
                try:
                    st = os.lstat(os.path.join(root, name))
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    total += st.st_blocks * 512
            directory = root
            while True:
                sizes[directory] = sizes.get(directory, 0) + total
                if directory == self.mount or len(directory) <= len(self.mount):
                    break
                directory = os.path.dirname(directory)
            if seen > WALK_LIMIT:
                partial = True
                break
        ranked = sorted(((b, d) for d, b in sizes.items() if d != self.mount), reverse=True)[:count]
        return {"directories": [{"path": d, "bytes": b, "protected": self.is_protected(d)} for b, d in ranked],
                "partial": partial}


def open_files(device: int) -> dict[tuple[int, int], int]:
    """(device, inode) of every file some process holds open on `device`, with one such pid."""
    held: dict[tuple[int, int], int] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                st = os.stat(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if st.st_dev == device and stat.S_ISREG(st.st_mode):
                held.setdefault((st.st_dev, st.st_ino), int(pid))
    return held


def deleted_open(device: int) -> list[dict[str, object]]:
    """Files deleted while a process holds them open: their space comes back only when it closes them."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                st = os.stat(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.endswith(" (deleted)") and st.st_dev == device and stat.S_ISREG(st.st_mode):
                found.append({"pid": int(pid), "path": link[:-len(" (deleted)")], "bytes": st.st_blocks * 512})
    return sorted(found, key=lambda f: -int(f["bytes"]))[:20]  # type: ignore[call-overload]


def _open_parent(path: str) -> int:
    """The directory `path` is in, opened one component at a time from / without following a symlink: a
    directory of a world-writable tree swapped for a link (to a protected path) after the scan fails here,
    so nothing outside what was looked at is touched."""
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in os.path.dirname(os.path.abspath(path)).strip("/").split("/"):
            if part:
                next_fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd = next_fd
    except OSError:
        os.close(fd)
        raise
    return fd


def _open_same(parent: int, name: str, seen: os.stat_result, flags: int) -> int:
    """`name` in `parent`, not through a link, and only if it is still the file the scan saw."""
    fd = os.open(name, flags | os.O_NOFOLLOW, dir_fd=parent)
    now = os.fstat(fd)
    if (now.st_dev, now.st_ino) != (seen.st_dev, seen.st_ino) or not stat.S_ISREG(now.st_mode):
        os.close(fd)
        raise OSError(errno.ESTALE, "replaced since it was looked at; left alone")
    return fd


class Reclaim:
    """The candidates of one step, and doing it (or, checking, only saying what it would do)."""

    def __init__(self, fs: Filesystem, args: argparse.Namespace) -> None:
        self.fs, self.args = fs, args
        self.now = time.time()
        self.held = open_files(fs.device)

    def candidates(self, step: str) -> Iterator[tuple[str, os.stat_result]]:
        args = self.args
        if step == "rotate_logs":
            for d in args.log_dir:
                for path, st in self.fs.files(d):
                    if not ROTATED.search(os.path.basename(path)) and st.st_size >= args.rotate_min:
                        yield path, st
        elif step == "delete_rotated_logs":
            for d in args.log_dir:
                for path, st in self.fs.files(d):
                    if ROTATED.search(os.path.basename(path)) and self.now - st.st_mtime > args.rotated_age:
                        yield path, st
        elif step == "clean_tmp":
            for d in args.tmp_dir:
                for path, st in self.fs.files(d):
                    if self.now - max(st.st_mtime, st.st_atime) > args.tmp_age:
                        yield path, st
        elif step == "clean_package_cache":
            for d in args.cache_dir:
                for path, st in self.fs.files(d):
                    if any(fnmatch.fnmatch(os.path.basename(path), p) for p in args.cache_pattern):
                        yield path, st

    def journal_dirs(self) -> list[str]:
        return [d for d in ("/var/log/journal", "/run/log/journal") if os.path.isdir(d) and self.fs.here(d)]

    def run(self, step: str, check: bool) -> dict[str, object]:
        before = self.fs.usage()
        files: list[dict[str, object]] = []
        skipped: list[dict[str, object]] = []
        why = ""
        if step == "vacuum_journal":
            why = self._journal(check, files)
        else:
            for path, st in self.candidates(step):
                holder = self.held.get((st.st_dev, st.st_ino))
                if holder is not None and step != "rotate_logs":
                    skipped.append({"path": path, "bytes": st.st_size, "why": f"held open by pid {holder}"})
                    continue
                entry: dict[str, object] = {"path": path, "bytes": st.st_blocks * 512, "size": st.st_size,
                                            "mode": f"{stat.S_IMODE(st.st_mode):04o}", "mtime": int(st.st_mtime)}
                if not check:
                    try:
                        entry.update(self._rotate(path, st) if step == "rotate_logs" else self._delete(path, st))
                    except OSError as exc:
                        skipped.append({"path": path, "bytes": st.st_size, "why": f"{type(exc).__name__}: {exc}"})
                        continue
                files.append(entry)
            if not files:
                why = {"rotate_logs": "no log over the rotation size", "clean_tmp": "no temp file that old",
                       "delete_rotated_logs": "no rotated log that old",
                       "clean_package_cache": "no cached package"}[step]
                where = [d for d in self._dirs(step) if not self.fs.here(d)]
                if where:
                    why += f" (not on this filesystem, so not looked at: {', '.join(where)})"
        after = self.fs.usage()
        return {
            "step": step, "check": check, "changed": bool(files) and not check,
            "files": files[:LISTED], "found": len(files), "skipped": skipped[:LISTED],
            "bytes": sum(int(f["bytes"]) for f in files),  # type: ignore[call-overload]
            "reclaimed_bytes": int(before["used"]) - int(after["used"]),  # type: ignore[call-overload]
            "nothing_to_reclaim": not files, "why": why, "usage_before": before, "usage_after": after,
        }

    def _dirs(self, step: str) -> list[str]:
        return {"rotate_logs": self.args.log_dir, "delete_rotated_logs": self.args.log_dir,
                "clean_tmp": self.args.tmp_dir, "clean_package_cache": self.args.cache_dir}[step]

    def _rotate(self, path: str, seen: os.stat_result) -> dict[str, object]:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(self.now))
        name = os.path.basename(path)
        archive = f"{name}-{stamp}.gz"
        parent = _open_parent(path)
        try:
            src_fd = _open_same(parent, name, seen, os.O_RDWR)
            try:
                dst_fd = os.open(archive, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                                 stat.S_IMODE(seen.st_mode), dir_fd=parent)
                try:
                    with os.fdopen(os.dup(src_fd), "rb") as src, os.fdopen(dst_fd, "wb") as raw, \
                            gzip.GzipFile(filename=name, mode="wb", fileobj=raw, compresslevel=6) as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                except OSError:
                    os.unlink(archive, dir_fd=parent)  # a partial archive (the disk filled while compressing) goes
                    raise
                os.ftruncate(src_fd, 0)  # truncated in place: a process writing to it keeps writing
            finally:
                os.close(src_fd)
            archive_bytes = os.stat(archive, dir_fd=parent, follow_symlinks=False).st_blocks * 512
        finally:
            os.close(parent)
        return {"action": "rotated", "archive": os.path.join(os.path.dirname(path), archive),
                "archive_bytes": archive_bytes}

    @staticmethod
    def _delete(path: str, seen: os.stat_result) -> dict[str, object]:
        parent = _open_parent(path)
        try:
            now = os.stat(os.path.basename(path), dir_fd=parent, follow_symlinks=False)
            if (now.st_dev, now.st_ino) != (seen.st_dev, seen.st_ino) or not stat.S_ISREG(now.st_mode):
                raise OSError(errno.ESTALE, "replaced since it was looked at; left alone")
            os.unlink(os.path.basename(path), dir_fd=parent)
        finally:
            os.close(parent)
        return {"action": "deleted"}

    def _journal(self, check: bool, files: list[dict[str, object]]) -> str:
        journalctl = shutil.which("journalctl")
        dirs = self.journal_dirs()
        if journalctl is None or not dirs:
            return ("no systemd journal on this filesystem" if journalctl else "no journalctl on this host")
        held = sum(st.st_blocks * 512 for d in dirs for _path, st in self.fs.files(d))
        if held <= self.args.journal_keep:
            return f"the journal holds {held} bytes, within the {self.args.journal_keep} it may keep"
        files.append({"path": ",".join(dirs), "bytes": held - self.args.journal_keep, "action": "vacuumed"})
        if not check:
            subprocess.run([journalctl, f"--vacuum-size={self.args.journal_keep}"], check=True,
                           capture_output=True, timeout=120)
        return ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--mount", required=True)
    parser.add_argument("--protect", action="append", default=[])
    parser.add_argument("--log-dir", action="append", default=[])
    parser.add_argument("--tmp-dir", action="append", default=[])
    parser.add_argument("--cache-dir", action="append", default=[])
    parser.add_argument("--cache-pattern", action="append", default=[])
    parser.add_argument("--tmp-age", type=float, default=7 * 86400)
    parser.add_argument("--rotated-age", type=float, default=7 * 86400)
    parser.add_argument("--rotate-min", type=int, default=1 << 20)
    parser.add_argument("--journal-keep", type=int, default=200 << 20)
    parser.add_argument("--largest", type=int, default=10)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--diagnose", action="store_true")
    mode.add_argument("--usage", action="store_true")
    mode.add_argument("--step", choices=STEPS)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    args.cache_pattern = args.cache_pattern or ["*.deb"]
    for name in ("log_dir", "tmp_dir", "cache_dir"):  # relative directories are under the mount
        setattr(args, name, [d if os.path.isabs(d) else os.path.join(args.mount, d) for d in getattr(args, name)])
    try:
        fs = Filesystem(args.mount, args.protect)
    except OSError as exc:
        print(json.dumps({"error": f"cannot read the filesystem at {args.mount}: {exc}"}))
        return 2
    if not os.path.ismount(fs.mount):
        print(json.dumps({"error": f"{args.mount} is not a mount point: name the filesystem's mount point"}))
        return 2
    if args.usage:
        out: dict[str, object] = {"usage": fs.usage()}
        if args.largest:
            out["largest"] = fs.largest(args.largest)
    elif args.diagnose:
        reclaim = Reclaim(fs, args)
        out = {"usage": fs.usage(), "largest": fs.largest(args.largest), "protected": fs.protected,
               "deleted_open": deleted_open(fs.device),
               "reclaimable": {}}
        for step in STEPS:
            plan = reclaim.run(step, check=True)
            out["reclaimable"][step] = {  # type: ignore[index]
                "found": plan["found"], "bytes": plan["bytes"], "why": plan["why"]}
    else:
        out = Reclaim(fs, args).run(args.step, check=args.check)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
