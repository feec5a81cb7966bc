"""The preprocessed image cache: decode each file once, store uint8 pixels in a memory-mapped array.

Layout of a cache folder: `pixels-<build>.u8` (N x S x S uint8, raw, memory-mapped),
`index-<build>.csv` (path, file size, mtime, original height/width, row, error) and `meta.json`
(side S, count, and the names of the two files). A rebuild reuses rows whose file size and mtime
did not change; files that cannot be decoded are listed with the reason. `meta.json` is replaced
atomically last, so a build killed at any point leaves the previous cache whole and in use.
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .images import ImageReadError, read_xray, resize_gray

log = logging.getLogger(__name__)

META = "meta.json"


def _stat(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
        return st.st_size, st.st_mtime_ns
    except OSError:
        return -1, -1


_OUT: dict = {}  # per-process memory maps of the build being written


def _decode_one(args: tuple[str, int, str, int, int]) -> tuple[int, int, int, str]:
    """Decode one file and write its pixels straight into row `row` of the output memmap
    (workers share the file; only the small result tuple travels back)."""
    path, row, out_file, count, size = args
    try:
        gray = read_xray(path)
    except ImageReadError as exc:
        return row, 0, 0, exc.reason
    out = _OUT.get(out_file)
    if out is None:
        _OUT.clear()
        out = _OUT[out_file] = np.memmap(out_file, dtype=np.uint8, mode="r+", shape=(count, size, size))
    out[row] = resize_gray(gray, size)
    h, w = gray.shape
    return row, h, w, ""


@dataclass
class BuildReport:
    total: int = 0
    decoded: int = 0
    reused: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"total": self.total, "decoded": self.decoded, "reused": self.reused,
                "failed": [{"path": p, "reason": r} for p, r in self.failed]}


class ImageCache:
    """Read side of a cache folder. `get(path)` returns (S, S) uint8 or None when not cached/stale.

    The memory map is opened lazily in each process (DataLoader workers), never pickled.
    """

    def __init__(self, folder, *, verify: bool = True):
        self.folder = Path(folder)
        meta = json.loads((self.folder / META).read_text())
        self.size = int(meta["size"])
        self.pixels_file = self.folder / meta["pixels"]
        index = pd.read_csv(self.folder / meta["index"], keep_default_na=False)
        ok = index["error"].astype(str) == ""
        if verify:  # drop entries whose file changed since the build: they are read from source
            stats = [_stat(p) for p in index["path"]]
            same = np.array([s == (a, b) for s, a, b in zip(stats, index["bytes"], index["mtime_ns"])], bool)
            self.stale = int((ok & ~same).sum())
            ok &= same
        else:
            self.stale = 0
        self.rows = dict(zip(index.loc[ok, "path"], index.loc[ok, "row"].astype(int)))
        self.count = int(meta["count"])
        self._pixels = None

    @staticmethod
    def exists(folder) -> bool:
        folder = Path(folder)
        try:
            meta = json.loads((folder / META).read_text())
            return (folder / meta["pixels"]).is_file() and (folder / meta["index"]).is_file()
        except (OSError, ValueError, KeyError, TypeError):
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


def build_cache(paths: Iterable[str], folder, *, size: int = 256, workers: int | None = None,
                progress: Callable[[int, int], None] | None = None) -> BuildReport:
    """Create or refresh the cache in `folder` for `paths`. Returns what was decoded, reused, failed.

    progress(done, total) is called as files complete (the CLI turns it into a tqdm bar).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = list(dict.fromkeys(str(p) for p in paths))
    report = BuildReport(total=len(paths))
    old = None
    old_rows: dict[str, tuple[int, int, int, int, int]] = {}
    if ImageCache.exists(folder):
        try:
            meta = json.loads((folder / META).read_text())
            if int(meta["size"]) == size:
                idx = pd.read_csv(folder / meta["index"], keep_default_na=False)
                idx = idx[idx["error"].astype(str) == ""]
                old_rows = {p: (int(r), int(b), int(m), int(h), int(w)) for p, r, b, m, h, w in
                            zip(idx["path"], idx["row"], idx["bytes"], idx["mtime_ns"], idx["height"], idx["width"])}
                old = np.memmap(folder / meta["pixels"], dtype=np.uint8, mode="r", shape=(max(int(meta["count"]), 1), size, size))
        except Exception as exc:  # a damaged cache is rebuilt from scratch, never trusted
            log.warning("ignoring unreadable cache in %s (%s)", folder, exc)
            old, old_rows = None, {}

    build = f"{os.getpid()}-{time.time_ns()}"
    pixels_name, index_name = f"pixels-{build}.u8", f"index-{build}.csv"
    out = np.memmap(folder / pixels_name, dtype=np.uint8, mode="w+", shape=(max(len(paths), 1), size, size))
    records: list[dict] = []
    todo: list[tuple[int, str]] = []
    stats = {p: _stat(p) for p in paths}
    for row, p in enumerate(paths):
        b, m = stats[p]
        prev = old_rows.get(p)
        if prev is not None and old is not None and prev[1] == b and prev[2] == m:
            out[row] = old[prev[0]]
            records.append(dict(path=p, bytes=b, mtime_ns=m, height=prev[3], width=prev[4], row=row, error=""))
            report.reused += 1
        else:
            records.append(dict(path=p, bytes=b, mtime_ns=m, height=0, width=0, row=row, error=""))
            todo.append((row, p))
    done = report.reused
    if progress:
        progress(done, len(paths))
    workers = workers or os.cpu_count() or 1
    out.flush()
    if todo:
        jobs = [(p, r, str(folder / pixels_name), max(len(paths), 1), size) for r, p in todo]
        if workers > 1 and len(jobs) > 16:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                results = pool.map(_decode_one, jobs, chunksize=max(1, min(64, len(jobs) // (workers * 8))))
                done = _collect(results, records, report, progress, done, len(paths))
        else:
            done = _collect(map(_decode_one, jobs), records, report, progress, done, len(paths))
            _OUT.clear()
    out.flush()
    del out, old
    pd.DataFrame.from_records(records, columns=["path", "bytes", "mtime_ns", "height", "width", "row", "error"]).to_csv(
        folder / index_name, index=False)
    tmp_meta = folder / (META + f".{build}.tmp")
    tmp_meta.write_text(json.dumps({"size": size, "count": len(paths), "failed": len(report.failed),
                                    "pixels": pixels_name, "index": index_name}))
    os.replace(tmp_meta, folder / META)  # the commit point
    for f in folder.iterdir():  # old builds and leftovers of killed ones
        if f.name not in (META, pixels_name, index_name) and f.name.startswith(("pixels-", "index-", META + ".")):
            try:
                f.unlink()
            except OSError:
                pass
    return report


def _collect(results, records, report, progress, done, total) -> int:
    for row, h, w, err in results:
        if err:
            records[row]["error"] = err
            report.failed.append((records[row]["path"], err))
        else:
            records[row]["height"], records[row]["width"] = h, w
            report.decoded += 1
        done += 1
        if progress:
            progress(done, total)
    return done


def cache_folder(cache_dir, dataset_name: str, size: int) -> Path:
    """The conventional folder of a dataset's cache: <cache_dir>/<dataset>-<size>px."""
    return Path(cache_dir) / f"{dataset_name}-{size}px"
