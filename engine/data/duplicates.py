"""The same radiograph under two names: duplicates found by image content, not by patient id.

The COVID-19 collection holds figures cut from papers, and one film can appear under two patient
ids (in the pack, patients 97 and 178 share four images; `AR-1.jpg` and `extubation-1.jpg` are the
same film). A patient-wise split then leaks: "no patient in two splits" holds while the test set
repeats training images. Here every image gets a perceptual hash (imagehash's pHash: the signs of
the low-frequency DCT of the decoded, grayscale pixels shrunk to 32x32, 64 bits), which survives
resizing, re-encoding and mild contrast changes; two images whose hashes differ in at most
`max_distance` bits (default 4) are taken as the same film. On the pack's 555 COVID-19 images, 4
finds the named pairs and no false pair; from 6 up, different films of one patient begin to match.

Hashes are memoised per (path, size, mtime) in the process and in `<cache dir>/phash-v1.json`.
"""
from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..constants import SPLITS, default_cache_dir
from .images import ImageReadError, read_xray

DEFAULT_MAX_DISTANCE = 4
HASH_BITS = 64
_CACHE_NAME = "phash-v1.json"
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
    import imagehash
    from PIL import Image

    return str(imagehash.phash(Image.fromarray(gray)))


def _bits(hexes: Sequence[str]) -> np.ndarray:
    """(N, 64) bool from hex hashes; a missing hash (unreadable image) becomes a row of -1."""
    out = np.full((len(hexes), HASH_BITS), -1, dtype=np.int8)
    for i, h in enumerate(hexes):
        if h:
            out[i] = np.unpackbits(np.frombuffer(bytes.fromhex(h), dtype=np.uint8))
    return out


def _load_disk_cache(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def image_hashes(paths: Sequence[str], *, cache_dir=None,
                 progress: Callable[[int, int], None] | None = None) -> tuple[list[str], list[str]]:
    """(hex hash per path, "" where unreadable; the unreadable paths). Cached by size and mtime."""
    cache_file = Path(cache_dir or default_cache_dir()) / _CACHE_NAME
    disk = _load_disk_cache(cache_file)
    out, bad, fresh = [], [], 0
    for k, p in enumerate(paths):
        key = _key(str(p))
        h = None
        if key is not None:
            h = _memo.get(key)
            if h is None:
                h = disk.get(f"{key[0]}|{key[1]}|{key[2]}")
        if h is None:
            try:
                h = phash(read_xray(p))
            except (ImageReadError, OSError):
                h = ""
                bad.append(str(p))
            if key is not None and h:
                disk[f"{key[0]}|{key[1]}|{key[2]}"] = h
                fresh += 1
        if key is not None and h:
            with _lock:
                _memo[key] = h
        out.append(h)
        if progress and ((k + 1) % 50 == 0 or k + 1 == len(paths)):
            progress(k + 1, len(paths))
    if fresh:
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_name(f"{cache_file.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(disk))
            os.replace(tmp, cache_file)
        except OSError:
            pass  # a read-only cache folder only costs recomputing next time
    return out, bad


def hamming(a: Sequence[str], b: Sequence[str] | None = None) -> np.ndarray:
    """(len(a), len(b)) bit distances between hex hashes (b = a when None); 65 where a hash is missing."""
    A = _bits(a)
    B = A if b is None else _bits(b)
    d = np.zeros((len(A), len(B)), dtype=np.int16)
    for start in range(0, len(A), 2048):  # bounded memory for large collections
        blk = A[start:start + 2048]
        d[start:start + len(blk)] = (blk[:, None, :] != B[None, :, :]).sum(-1)
    missing_a, missing_b = (A < 0).any(1), (B < 0).any(1)
    d[missing_a, :] = HASH_BITS + 1
    d[:, missing_b] = HASH_BITS + 1
    return d


def duplicate_pairs(hashes: Sequence[str], max_distance: int = DEFAULT_MAX_DISTANCE) -> list[tuple[int, int, int]]:
    """(i, j, distance) for i < j whose hashes differ in at most max_distance bits."""
    d = hamming(hashes)
    i, j = np.nonzero(np.triu(d <= max_distance, 1))
    return [(int(a), int(b), int(d[a, b])) for a, b in zip(i, j)]


def cross_pairs(hashes_a: Sequence[str], hashes_b: Sequence[str],
                max_distance: int = DEFAULT_MAX_DISTANCE) -> list[tuple[int, int, int]]:
    """(i in a, j in b, distance) for images of two collections that are the same film."""
    if not len(hashes_a) or not len(hashes_b):
        return []
    d = hamming(hashes_a, hashes_b)
    i, j = np.nonzero(d <= max_distance)
    return [(int(a), int(b), int(d[a, b])) for a, b in zip(i, j)]


def _components(n: int, edges: Sequence[tuple[int, int]]) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if n == 0:
        return np.zeros(0, dtype=int)
    e = np.array(edges, dtype=int).reshape(-1, 2)
    g = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
    return connected_components(g, directed=False)[1]


def keep_together(patient_ids: Sequence, splits: Sequence, pairs: Sequence[tuple[int, int, int]]) -> tuple[np.ndarray, dict]:
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


def pair_records(frame, pairs: Sequence[tuple[int, int, int]], other=None) -> list[dict]:
    """Readable rows for a report: both images, their patients and splits, and the bit distance."""
    other = frame if other is None else other
    rows = []
    for i, j, d in pairs:
        a, b = frame.iloc[i], other.iloc[j]
        rows.append({"image_a": a["image"], "patient_a": a["patient_id"], "split_a": a.get("split", ""),
                     "image_b": b["image"], "patient_b": b["patient_id"], "split_b": b.get("split", ""),
                     "distance": d})
    return rows
