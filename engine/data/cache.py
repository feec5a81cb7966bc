"""The preprocessed image cache: decode each file once, store uint8 pixels in a memory-mapped array.

Layout of a cache folder (format 2):
    pixels.u8    R x S x S uint8, raw, memory-mapped; grown (sparse) as rows are added, rows
                 rewritten in place when their file changes: there is never a second copy
    index.csv    a journal: one line per decoded file (path, size, mtime, original height/width,
                 row, error, ok). The last line of a path wins; a torn last line (no `ok`) is ignored
    meta.json    format, side S and the two file names
    .lock        held (flock) by the one build that may write the folder

A build appends a chunk of lines to the journal only after those rows' pixels are written and
synced, so a kill at any moment keeps every committed row and the next build reuses it. A rerun
where nothing changed writes nothing. Folders of format 1 (`pixels-<build>.u8` + `index-<build>.csv`)
are read as before and migrated on the next build.
"""
from __future__ import annotations

import csv
import fcntl
import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..parallel import StageStopped, stop_on_signals, worker_pool
from .images import ImageReadError, read_xray, resize_gray

log = logging.getLogger(__name__)

META, PIXELS, INDEX, LOCK = "meta.json", "pixels.u8", "index.csv", ".lock"
FORMAT = 2
COLUMNS = ["path", "bytes", "mtime_ns", "height", "width", "row", "error", "ok"]
COMMIT_EVERY = 256       # rows per journal commit ...
COMMIT_SECONDS = 2.0     # ... or this often, whichever comes first


class CacheError(RuntimeError):
    """The cache cannot be built here (no disk space, another build holds the folder)."""


def _stat(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
        return st.st_size, st.st_mtime_ns
    except OSError:
        return -1, -1


def _read_journal(path: Path) -> pd.DataFrame:
    """The live entries of an index journal: the last complete line of each path."""
    try:
        idx = pd.read_csv(path, keep_default_na=False, dtype={"path": str, "error": str}, on_bad_lines="skip")
    except (OSError, pd.errors.EmptyDataError):
        return pd.DataFrame(columns=COLUMNS)
    if "ok" in idx.columns:  # format 2: a line without its final field was torn by a kill
        idx = idx[pd.to_numeric(idx["ok"], errors="coerce") == 1]
    for c in ("bytes", "mtime_ns", "height", "width", "row"):
        idx[c] = pd.to_numeric(idx[c], errors="coerce")
    idx = idx.dropna(subset=["bytes", "mtime_ns", "height", "width", "row"])
    idx = idx.drop_duplicates("path", keep="last")
    return idx.astype({"bytes": np.int64, "mtime_ns": np.int64, "height": int, "width": int, "row": int})


def _read_meta(folder: Path) -> dict | None:
    try:
        meta = json.loads((folder / META).read_text())
        return meta if isinstance(meta, dict) and "size" in meta else None
    except (OSError, ValueError):
        return None


_OUT: dict = {}  # per-process memory maps of the pixels file being written


def _decode_one(args: tuple[str, int, str, int, int]) -> tuple[int, int, int, str]:
    """Decode one file and write its pixels straight into row `row` of the shared pixels file
    (workers share the file through the page cache; only the small result tuple travels back)."""
    path, row, out_file, rows, size = args
    try:
        gray = read_xray(path)
    except ImageReadError as exc:
        return row, 0, 0, exc.reason
    out = _OUT.get((out_file, rows))
    if out is None:
        _OUT.clear()
        out = _OUT[(out_file, rows)] = np.memmap(out_file, dtype=np.uint8, mode="r+", shape=(rows, size, size))
    out[row] = resize_gray(gray, size)
    h, w = gray.shape
    return row, h, w, ""


@dataclass
class BuildReport:
    total: int = 0
    decoded: int = 0
    reused: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    bytes_written: int = 0          # pixel bytes written by this build
    stopped: str = ""               # the signal that stopped it ("" = ran to the end)

    def as_dict(self) -> dict:
        return {"total": self.total, "decoded": self.decoded, "reused": self.reused,
                "failed": [{"path": p, "reason": r} for p, r in self.failed],
                "bytes_written": self.bytes_written, "stopped": self.stopped}


class ImageCache:
    """Read side of a cache folder. `get(path)` returns (S, S) uint8 or None when not cached/stale.

    The memory map is opened lazily in each process (DataLoader workers), never pickled.
    """

    def __init__(self, folder, *, verify: bool = True):
        self.folder = Path(folder)
        meta = json.loads((self.folder / META).read_text())
        self.size = int(meta["size"])
        self.pixels_file = self.folder / meta["pixels"]
        index = _read_journal(self.folder / meta["index"])
        self.count = os.path.getsize(self.pixels_file) // (self.size * self.size)
        ok = (index["error"].astype(str) == "") & (index["row"] < self.count)
        if verify:  # drop entries whose file changed since the build: they are read from source
            stats = [_stat(p) for p in index["path"]]
            same = np.array([s == (a, b) for s, a, b in zip(stats, index["bytes"], index["mtime_ns"])], bool)
            self.stale = int((ok & ~same).sum())
            ok &= same
        else:
            self.stale = 0
        self.rows = dict(zip(index.loc[ok, "path"], index.loc[ok, "row"].astype(int)))
        self._pixels = None

    @staticmethod
    def exists(folder) -> bool:
        folder = Path(folder)
        meta = _read_meta(folder)
        try:
            return bool(meta) and (folder / meta["pixels"]).is_file() and (folder / meta["index"]).is_file()
        except (KeyError, TypeError):
            return False

    @property
    def pixels(self) -> np.ndarray:
        if self._pixels is None:
            self._pixels = np.memmap(self.pixels_file, dtype=np.uint8, mode="r",
                                     shape=(max(self.count, 1), self.size, self.size))
        return self._pixels

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_pixels"] = None
        return state

    def __contains__(self, path) -> bool:
        return str(path) in self.rows

    def __len__(self) -> int:
        return len(self.rows)

    def get(self, path) -> np.ndarray | None:
        row = self.rows.get(str(path))
        if row is None:
            return None
        return np.array(self.pixels[row])


class CacheSet:
    """Several caches looked up in turn (the combined dataset reads NIH and COVID caches)."""

    def __init__(self, caches: Sequence[ImageCache]):
        self.caches = list(caches)

    def get(self, path):
        for c in self.caches:
            px = c.get(path)
            if px is not None:
                return px
        return None

    def __len__(self):
        return sum(len(c) for c in self.caches)


class _Journal:
    """Appends committed rows to index.csv: pixels synced first, then the lines, then fsync."""

    def __init__(self, folder: Path, pixels_fd: int):
        path = folder / INDEX
        _drop_torn_tail(path)
        fresh = not path.is_file() or path.stat().st_size == 0
        self.fh = open(path, "a", newline="")
        self.writer = csv.writer(self.fh)
        if fresh:
            self.writer.writerow(COLUMNS)
        self.pixels_fd = pixels_fd
        self.pending: list[list] = []
        self.last = time.monotonic()
        self.lines = 0

    def add(self, rec: list) -> None:
        self.pending.append(rec)
        if len(self.pending) >= COMMIT_EVERY or time.monotonic() - self.last > COMMIT_SECONDS:
            self.commit()

    def commit(self) -> None:
        if self.pending:
            os.fsync(self.pixels_fd)  # the rows' pixels reach the disk before the lines that name them
            self.writer.writerows(self.pending)
            self.fh.flush()
            os.fsync(self.fh.fileno())
            self.lines += len(self.pending)
            self.pending = []
        self.last = time.monotonic()

    def close(self) -> None:
        self.commit()
        self.fh.close()


def _drop_torn_tail(path: Path) -> None:
    """Cut a journal back to its last newline: a line torn by a kill must not swallow the next one."""
    try:
        with open(path, "rb+") as fh:
            end = fh.seek(0, os.SEEK_END)
            if end == 0:
                return
            pos = end
            while pos > 0:
                step = min(65536, pos)
                fh.seek(pos - step)
                chunk = fh.read(step)
                nl = chunk.rfind(b"\n")
                if nl >= 0:
                    cut = pos - step + nl + 1
                    break
                pos -= step
            else:
                cut = 0
            if cut != end:
                fh.truncate(cut)
    except FileNotFoundError:
        pass


def _lock(folder: Path):
    fh = open(folder / LOCK, "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise CacheError(f"another prepare is building the cache in {folder}; wait for it to finish") from None
    return fh


def _legacy(folder: Path, meta: dict | None, size: int) -> tuple[np.ndarray | None, dict]:
    """Rows of a format-1 cache (a copy per build) to migrate: (pixels, path -> (row, bytes, mtime, h, w))."""
    if not meta or meta.get("format") == FORMAT or int(meta.get("size", -1)) != size:
        return None, {}
    try:
        idx = _read_journal(folder / meta["index"])
        idx = idx[idx["error"].astype(str) == ""]
        old = np.memmap(folder / meta["pixels"], dtype=np.uint8, mode="r",
                        shape=(max(int(meta["count"]), 1), size, size))
        return old, {p: (r, b, m, h, w) for p, r, b, m, h, w in
                     zip(idx["path"], idx["row"], idx["bytes"], idx["mtime_ns"], idx["height"], idx["width"])}
    except Exception as exc:  # a damaged old cache is rebuilt, never trusted
        log.warning("ignoring unreadable cache in %s (%s)", folder, exc)
        return None, {}


def build_cache(paths: Iterable[str], folder, *, size: int = 256, workers: int | None = None,
                progress: Callable[[int, int], None] | None = None,
                notice: Callable[[str], None] | None = None) -> BuildReport:
    """Create or refresh the cache in `folder` for `paths`. Returns what was decoded, reused, failed.

    progress(done, total) is called as files complete (the CLI turns it into a tqdm bar with rate
    and time left); notice(text) gets one line before decoding starts (the disk it will use).
    A SIGTERM/SIGINT stops the decoding workers at once; what was committed is kept, and the report
    says `stopped`. Raises CacheError when the disk lacks the space it needs (nothing is written).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = _lock(folder)
    try:
        return _build(list(dict.fromkeys(str(p) for p in paths)), folder, size, workers, progress, notice)
    finally:
        lock.close()


def _build(paths, folder, size, workers, progress, notice) -> BuildReport:
    report = BuildReport(total=len(paths))
    meta = _read_meta(folder)
    legacy_px, legacy_rows = _legacy(folder, meta, size)
    current = meta if meta and meta.get("format") == FORMAT and int(meta["size"]) == size else None
    entries = _read_journal(folder / INDEX) if current else pd.DataFrame(columns=COLUMNS)
    known = {p: (int(r), int(b), int(m), e) for p, r, b, m, e in
             zip(entries["path"], entries["row"], entries["bytes"], entries["mtime_ns"], entries["error"])}
    row_bytes = size * size
    capacity = os.path.getsize(folder / PIXELS) // row_bytes if current and (folder / PIXELS).is_file() else 0
    next_row = max([capacity] + [r + 1 for r, *_ in known.values()])

    todo: list[tuple[int, str]] = []
    migrate: list[tuple[int, str]] = []
    for p in paths:
        b, m = _stat(p)
        prev = known.get(p)
        if prev is not None and prev[0] < capacity and (prev[1], prev[2]) == (b, m):
            if prev[3] == "":
                report.reused += 1
            else:  # unreadable and unchanged: said again, not decoded again
                report.failed.append((p, prev[3]))
            continue
        if prev is not None and prev[0] < capacity:
            row = prev[0]  # rewritten in place
        else:
            row, next_row = next_row, next_row + 1
        old = legacy_rows.get(p)
        (migrate if old is not None and (old[1], old[2]) == (b, m) else todo).append((row, p))
    if progress:
        progress(report.reused + len(report.failed), len(paths))
    if not todo and not migrate and current:
        return report  # nothing changed: nothing is written

    grow = max(0, next_row - capacity) * row_bytes
    free = shutil.disk_usage(folder).free
    need = grow + 200 * (len(todo) + len(migrate))
    if need > free:
        raise CacheError(f"the cache needs {_human(need)} more in {folder} for {len(todo) + len(migrate)} "
                         f"images at {size} px; only {_human(free)} is free. Free space or pass "
                         f"--cache-dir on a larger disk (or a smaller --size).")
    if notice:
        notice(f"{len(todo)} images to decode, {report.reused} reused; the cache grows by {_human(grow)} "
               f"in {folder} ({_human(free)} free)")
    if not current:  # a fresh folder (or a format-1 one): start format 2 beside what is there
        for f in (folder / PIXELS, folder / INDEX):
            f.unlink(missing_ok=True)
    with open(folder / PIXELS, "ab") as fh:  # grow sparsely: no bytes are written for new rows yet
        fh.truncate(max(next_row, 1) * row_bytes)

    fd = os.open(folder / PIXELS, os.O_RDWR)
    journal = _Journal(folder, fd)
    rows_now = max(next_row, 1)
    try:
        if migrate:
            out = np.memmap(folder / PIXELS, dtype=np.uint8, mode="r+", shape=(rows_now, size, size))
            for row, p in migrate:
                r, b, m, h, w = legacy_rows[p]
                out[row] = legacy_px[r]
                journal.add([p, b, m, h, w, row, "", 1])
                report.reused += 1
            out.flush()
            del out
            journal.commit()
        if not current:  # from here on the folder is format 2: a kill keeps what is committed
            _write_meta(folder, size)
        done = report.reused + len(report.failed)
        stats = {p: _stat(p) for _, p in todo}
        jobs = [(p, r, str(folder / PIXELS), rows_now, size) for r, p in todo]

        def collect(results):
            nonlocal done
            for row, h, w, err in results:
                p = paths_by_row[row]
                b, m = stats[p]
                journal.add([p, b, m, h, w, row, err, 1])
                if err:
                    report.failed.append((p, err))
                else:
                    report.decoded += 1
                    report.bytes_written += row_bytes
                done += 1
                if progress:
                    progress(done, len(paths))

        paths_by_row = {r: p for r, p in todo}
        workers = workers or os.cpu_count() or 1
        try:
            with stop_on_signals():
                if workers > 1 and len(jobs) > 16:
                    with worker_pool(workers) as pool:
                        collect(pool.imap_unordered(_decode_one, jobs,
                                                    chunksize=max(1, min(16, len(jobs) // (workers * 8)))))
                else:
                    collect(map(_decode_one, jobs))
                    _OUT.clear()
        except StageStopped as exc:
            report.stopped = signal.Signals(exc.signum).name
    finally:
        journal.close()
        os.close(fd)
    if not report.stopped:
        _compact(folder, journal.lines)
        _remove_legacy(folder)
    return report


def _human(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _write_meta(folder: Path, size: int) -> None:
    tmp = folder / f"{META}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"format": FORMAT, "size": size, "pixels": PIXELS, "index": INDEX}))
    os.replace(tmp, folder / META)


def _compact(folder: Path, appended: int) -> None:
    """Rewrite the journal with one line per path once superseded lines outnumber the live ones."""
    if appended == 0:
        return
    path = folder / INDEX
    live = _read_journal(path)
    with open(path, "rb") as fh:
        lines = sum(1 for _ in fh) - 1
    if lines <= 2 * len(live) + 1000:
        return
    tmp = folder / f"{INDEX}.{os.getpid()}.tmp"
    live.assign(ok=1)[COLUMNS].to_csv(tmp, index=False)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _remove_legacy(folder: Path) -> None:
    for f in folder.iterdir():  # format-1 builds and leftovers of killed writes
        if f.name.startswith(("pixels-", "index-", META + ".", INDEX + ".")):
            try:
                f.unlink()
            except OSError:
                pass


def cache_folder(cache_dir, dataset_name: str, size: int) -> Path:
    """The conventional folder of a dataset's cache: <cache_dir>/<dataset>-<size>px."""
    return Path(cache_dir) / f"{dataset_name}-{size}px"
