"""The same radiograph under two names: duplicates found by image content, not by patient id.

The COVID-19 collection holds figures cut from papers, and one film can appear under two patient
ids (in the pack, patients 97 and 178 share four images; `AR-1.jpg` and `extubation-1.jpg` are the
same film). A patient-wise split then leaks: "no patient in two splits" holds while the test set
repeats training images. Here every image gets a perceptual hash (imagehash's pHash: the signs of
the low-frequency DCT of the decoded, grayscale pixels shrunk to 32x32, 64 bits), which survives
resizing, re-encoding and mild contrast changes; two images whose hashes differ in at most
`max_distance` bits (default 4) are taken as the same film. On the pack's 555 COVID-19 images, 4
finds the named pairs and no false pair; from 6 up, different films of one patient begin to match.

Hashing uses every core (a process pool that dies with its parent) and is memoised per (path, size,
mtime) in the process and in `<cache dir>/phash-v2.tsv`, a journal appended in chunks, so a kill
keeps what was hashed. The search is multi-index hashing (Norouzi et al., CVPR 2012): the 64 bits are
cut into max_distance + 1 bands, two hashes within max_distance bits agree exactly on at least one
band (pigeonhole), so only hashes sharing a band value are compared. Its work and memory grow with
the number of candidates, not with n x n; the result equals a brute-force comparison.
"""
from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image

from ..constants import SPLITS, default_cache_dir
from ..parallel import worker_pool
from .images import ImageReadError, read_xray

DEFAULT_MAX_DISTANCE = 4
HASH_BITS = 64
_CACHE_NAME, _OLD_CACHE_NAME = "phash-v2.tsv", "phash-v1.json"
_CHUNK = 512          # hashes per journal commit
_memo: dict[tuple, str] = {}
_lock = threading.Lock()


def _key(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (os.path.abspath(path), st.st_size, st.st_mtime_ns)


def phash(gray: np.ndarray) -> str:
    """The 64-bit perceptual hash of a grayscale image, as 16 hex digits."""
    return str(imagehash.phash(Image.fromarray(gray)))


def _hash_file(job: tuple[int, str]) -> tuple[int, str]:
    k, path = job
    try:
        return k, phash(read_xray(path))
    except (ImageReadError, OSError):
        return k, ""


def _load_disk_cache(folder: Path) -> dict:
    """{"path|size|mtime": hex} from the journal (a torn last line is skipped) and the old JSON file."""
    out: dict = {}
    try:
        out.update(json.loads((folder / _OLD_CACHE_NAME).read_text()))
    except (OSError, ValueError):
        pass
    try:
        with open(folder / _CACHE_NAME, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                parts = line.rstrip("\n").split("\t")
                if len(parts) == 4 and len(parts[3]) == 16 and line.endswith("\n"):
                    out[f"{parts[0]}|{parts[1]}|{parts[2]}"] = parts[3]
    except OSError:
        pass
    return out


class _HashJournal:
    def __init__(self, folder: Path):
        self.path = folder / _CACHE_NAME
        self.pending: list[str] = []

    def add(self, key: tuple, h: str) -> None:
        if "\t" in key[0] or "\n" in key[0]:
            return  # such a name cannot be a journal line: it is only memoised in this process
        self.pending.append(f"{key[0]}\t{key[1]}\t{key[2]}\t{h}\n")
        if len(self.pending) >= _CHUNK:
            self.commit()

    def commit(self) -> None:
        if not self.pending:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a+", encoding="utf-8") as fh:
                fh.seek(0, os.SEEK_END)
                if fh.tell():  # a line torn by a kill must not swallow the next one
                    fh.seek(fh.tell() - 1)
                    if fh.read(1) != "\n":
                        fh.write("\n")
                fh.writelines(self.pending)
        except OSError:
            pass  # a read-only cache folder only costs recomputing next time
        self.pending = []


def image_hashes(paths: Sequence[str], *, cache_dir=None, workers: int | None = None,
                 progress: Callable[[int, int], None] | None = None,
                 notice: Callable[[str], None] | None = None) -> tuple[list[str], list[str]]:
    """(hex hash per path, "" where unreadable; the unreadable paths). Cached by size and mtime.

    Uncached files are hashed by a pool of `workers` processes (default: all cores); notice(text)
    hears, before a long hash starts, how many files and about how long."""
    folder = Path(cache_dir or default_cache_dir())
    disk = _load_disk_cache(folder)
    out: list[str] = [""] * len(paths)
    keys: list[tuple | None] = []
    todo: list[tuple[int, str]] = []
    for k, p in enumerate(paths):
        key = _key(str(p))
        keys.append(key)
        h = None
        if key is not None:
            h = _memo.get(key) or disk.get(f"{key[0]}|{key[1]}|{key[2]}")
        if h:
            out[k] = h
        else:
            todo.append((k, str(p)))
    done = len(paths) - len(todo)
    if progress:
        progress(done, len(paths))
    journal = _HashJournal(folder)
    workers = max(1, workers or os.cpu_count() or 1)

    def collect(results):
        nonlocal done
        for k, h in results:
            out[k] = h
            key = keys[k]
            if key is not None and h:
                journal.add(key, h)
            done += 1
            if progress and (done % 50 == 0 or done == len(paths)):
                progress(done, len(paths))

    try:
        if todo:
            first, rest = todo[:8], todo[8:]
            t0 = time.perf_counter()
            collect(map(_hash_file, first))  # timed, for the estimate of the rest
            if notice and len(rest) > 200:
                each = (time.perf_counter() - t0) / max(len(first), 1)
                notice(f"hashing {len(todo)} images ({len(paths) - len(todo)} cached) with {workers} processes: "
                       f"about {_duration(each * len(rest) / workers)}")
            if rest:
                if workers > 1 and len(rest) > 64:
                    with worker_pool(workers) as pool:
                        collect(pool.imap_unordered(_hash_file, rest, chunksize=16))
                else:
                    collect(map(_hash_file, rest))
    finally:
        journal.commit()
    bad = []
    for (k, key), h in zip(enumerate(keys), out):
        if h and key is not None:
            with _lock:
                _memo[key] = h
        elif not h:
            bad.append(str(paths[k]))
    return out, bad


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _ints(hexes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(uint64 per hash, bool valid); a missing hash (unreadable image) is invalid."""
    valid = np.array([len(h) == 16 for h in hexes], dtype=bool)
    vals = np.array([int(h, 16) if ok else 0 for h, ok in zip(hexes, valid)], dtype=np.uint64)
    return vals, valid


def _bands(vals: np.ndarray, max_distance: int) -> np.ndarray:
    """(m, n) band values: the 64 bits cut into m = max_distance + 1 contiguous bands."""
    m = max_distance + 1
    widths = [HASH_BITS // m + (1 if b < HASH_BITS % m else 0) for b in range(m)]
    out = np.empty((m, len(vals)), dtype=np.uint64)
    shift = 0
    for b, w in enumerate(widths):
        out[b] = (vals >> np.uint64(shift)) & np.uint64((1 << w) - 1)
        shift += w
    return out


def _keep(bands: np.ndarray, vals_a, vals_b, ia, ib, band: int, max_distance: int, seen=None):
    """Candidates (ia, ib) that match in `band` and in no earlier band (so each pair is found once)
    and whose whole hashes lie within max_distance bits; returns (ia, ib, distance)."""
    ok = np.ones(len(ia), dtype=bool)
    ba, bb = bands
    for earlier in range(band):
        ok &= ba[earlier][ia] != bb[earlier][ib]
    ia, ib = ia[ok], ib[ok]
    d = np.bitwise_count(vals_a[ia] ^ vals_b[ib]).astype(np.int16)
    near = d <= max_distance
    return ia[near], ib[near], d[near]


def _check_distance(max_distance: int) -> None:
    if not 0 <= int(max_distance) < 32:
        raise ValueError(f"max_distance must be between 0 and 31 bits, got {max_distance}")


def duplicate_arrays(hashes: Sequence[str], max_distance: int = DEFAULT_MAX_DISTANCE) -> tuple[np.ndarray, ...]:
    """(i, j, distance) arrays, i < j, of hashes within max_distance bits; missing hashes never match."""
    _check_distance(max_distance)
    vals, valid = _ints(hashes)
    where = np.flatnonzero(valid)
    vals = vals[where]
    bands = _bands(vals, max_distance)
    found = []
    for band in range(len(bands)):
        order = np.argsort(bands[band], kind="stable")
        keys = bands[band][order]
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        sizes = np.diff(np.r_[starts, len(keys)])
        group_end = np.repeat(starts + sizes, sizes)  # for each sorted position, where its group ends
        pos = np.flatnonzero(np.repeat(sizes, sizes) > 1)
        step = 1
        while len(pos):  # pairs (s, s + step) inside a group; positions leave as their group ends
            pos = pos[pos + step < group_end[pos]]
            if not len(pos):
                break
            a, b = order[pos], order[pos + step]
            ia, ib, d = _keep((bands, bands), vals, vals, np.minimum(a, b), np.maximum(a, b), band, max_distance)
            found.append((ia, ib, d))
            step += 1
    if not found:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0, np.int16)
    ia, ib, d = (np.concatenate(x) for x in zip(*found))
    order = np.lexsort((where[ib], where[ia]))
    return where[ia][order], where[ib][order], d[order]


def duplicate_pairs(hashes: Sequence[str], max_distance: int = DEFAULT_MAX_DISTANCE) -> list[tuple[int, int, int]]:
    """(i, j, distance) for i < j whose hashes differ in at most max_distance bits."""
    return [(int(a), int(b), int(c)) for a, b, c in zip(*duplicate_arrays(hashes, max_distance))]


def cross_arrays(hashes_a: Sequence[str], hashes_b: Sequence[str], max_distance: int = DEFAULT_MAX_DISTANCE,
                 chunk: int = 65536) -> tuple[np.ndarray, ...]:
    """(i in a, j in b, distance) arrays for images of two collections within max_distance bits.
    Memory is bounded by `chunk` candidates of a at a time, whatever the sizes of a and b."""
    _check_distance(max_distance)
    va, oka = _ints(hashes_a)
    vb, okb = _ints(hashes_b)
    wa, wb = np.flatnonzero(oka), np.flatnonzero(okb)
    va, vb = va[wa], vb[wb]
    ba, bb = _bands(va, max_distance), _bands(vb, max_distance)
    found = []
    for band in range(len(ba)):
        order = np.argsort(bb[band], kind="stable")
        keys = bb[band][order]
        for s in range(0, len(va), chunk):
            q = np.arange(s, min(s + chunk, len(va)))
            lo = np.searchsorted(keys, ba[band][q], "left")
            hi = np.searchsorted(keys, ba[band][q], "right")
            n = hi - lo
            if not n.sum():
                continue
            ia = np.repeat(q, n)
            offs = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
            ib = order[np.repeat(lo, n) + offs]
            found.append(_keep((ba, bb), va, vb, ia, ib, band, max_distance))
    if not found:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0, np.int16)
    ia, ib, d = (np.concatenate(x) for x in zip(*found))
    order = np.lexsort((wb[ib], wa[ia]))
    return wa[ia][order], wb[ib][order], d[order]


def cross_pairs(hashes_a: Sequence[str], hashes_b: Sequence[str],
                max_distance: int = DEFAULT_MAX_DISTANCE) -> list[tuple[int, int, int]]:
    """(i in a, j in b, distance) for images of two collections that are the same film."""
    return [(int(a), int(b), int(c)) for a, b, c in zip(*cross_arrays(hashes_a, hashes_b, max_distance))]


def _components(n: int, edges: Sequence[tuple[int, int]]) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if n == 0:
        return np.zeros(0, dtype=int)
    e = np.array(edges, dtype=int).reshape(-1, 2)
    g = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
    return connected_components(g, directed=False)[1]


def keep_together(patient_ids: Sequence, splits: Sequence, pairs: Sequence[tuple[int, int, int]]) -> tuple[np.ndarray,
                                                                                                           dict]:
    """Move as few images as needed so that duplicates share a split.

    Patients linked by a duplicate image count as one patient; a linked group spread over splits
    goes whole to the split that already holds most of its images (on a tie train, then val, then
    test, so that a tie never grows the test set). Returns (new splits, report)."""
    pids = np.asarray(patient_ids).astype(str)
    splits = np.asarray(splits).astype(object).copy()
    uniq, pat = np.unique(pids, return_inverse=True)
    comp = _components(len(uniq), [(pat[i], pat[j]) for i, j, _ in pairs])
    image_comp = comp[pat] if len(pids) else np.zeros(0, dtype=int)
    cross_before = sum(1 for i, j, _ in pairs if splits[i] != splits[j])
    moved, groups_moved, moves = 0, 0, []
    linked = {int(c) for c in (comp[pat[i]] for i, _, _ in pairs)}
    for c in sorted(linked):
        members = np.flatnonzero(image_comp == c)
        here = splits[members]
        if len(set(here.tolist())) < 2:
            continue
        counts = {s: int((here == s).sum()) for s in SPLITS}
        target = max(SPLITS, key=lambda s: (counts[s], -SPLITS.index(s)))
        change = members[here != target]
        moves.append({"patients": sorted(set(pids[members].tolist())), "to": target, "images": int(len(change))})
        splits[change] = target
        moved += len(change)
        groups_moved += 1
    report = {"pairs": len(pairs), "pairs_across_splits_before": cross_before, "groups_moved": groups_moved,
              "images_moved": int(moved), "moves": moves}
    return splits.astype(str), report


CONFIRM_SIZE = 32          # side of the thumbnails the second test compares
CONFIRM_CORRELATION = 0.95  # Pearson r of those thumbnails from which two hash-matched images are one film


def _thumb(path: str, size: int = CONFIRM_SIZE) -> np.ndarray | None:
    import cv2

    from .images import ImageReadError, read_xray

    try:
        g = read_xray(path).astype(np.float32)
    except (ImageReadError, OSError):
        return None
    v = cv2.resize(g, (size, size), interpolation=cv2.INTER_AREA).ravel()
    return (v - v.mean()) / (v.std() + 1e-6)


def confirm_pairs(paths_a: Sequence[str], paths_b: Sequence[str], pairs: Sequence[tuple[int, int, int]],
                  threshold: float = CONFIRM_CORRELATION) -> tuple[list[tuple[int, int, int, float]], list]:
    """A second test for hash matches across collections: the Pearson correlation of the two images at
    32 px. A perceptual hash within 4 bits also matched films known to differ (issue 24). Measured on the
    pack (bench/bench_duplicates.py): different patients' films that the hash matched correlate at
    0.82-0.93; the same film re-encoded or cropped (the COVID-19 collection's 10 pairs) at 0.974-1.0,
    re-scaled from 512 to 64 px at 0.9999. The threshold, 0.95, lies between.
    Returns (confirmed, rejected) as (i, j, distance, r); an unreadable image rejects its pair."""
    confirmed, rejected = [], []
    cache_a: dict = {}
    for i, j, d in pairs:
        a = cache_a.setdefault(i, _thumb(paths_a[i]))
        b = _thumb(paths_b[j])
        r = float(a @ b / a.size) if a is not None and b is not None else float("nan")
        (confirmed if r >= threshold else rejected).append((i, j, d, r))
    return confirmed, rejected


def linked_clusters(patient_ids: Sequence, pairs: Sequence[tuple[int, int, int]]) -> np.ndarray:
    """Each image's resampling unit for a bootstrap: its patient, or for patients linked by a film they
    share (the same film under two patients' names) the group of them, named "97+178". Linked
    patients are one cluster, not two independent people."""
    pids = np.asarray(patient_ids).astype(str)
    if not len(pids):
        return pids
    uniq, pat = np.unique(pids, return_inverse=True)
    comp = _components(len(uniq), [(pat[i], pat[j]) for i, j, _ in pairs])
    names = {}
    for c in np.unique(comp):
        members = sorted(uniq[comp == c].tolist())
        names[c] = "+".join(members)
    return np.array([names[c] for c in comp[pat]], dtype=object)


def pair_records(frame, pairs: Sequence[tuple[int, int, int]], other=None) -> list[dict]:
    """Readable rows for a report: both images, their patients and splits, and the bit distance."""
    other = frame if other is None else other
    rows = []
    for i, j, d in pairs:
        a, b = frame.iloc[i], other.iloc[j]
        rows.append({"image_a": a["image"], "patient_a": a["patient_id"], "split_a": a.get("split", ""),
                     "image_b": b["image"], "patient_b": b["patient_id"], "split_b": b.get("split", ""),
                     "distance": d, "path_a": a.get("path", ""), "path_b": b.get("path", "")})
    return rows
