"""The collections a user adds beside the two roots ("Your data"): remembered in the settings file, as
the roots are, and summarised (classes, splits, sources, patients, duplicate films, a few images).

A collection is {"name", "kind", "path"}: kind `manifest` (a labelled manifest, engine.data.labelled:
it can be trained on and transferred to) or one of the public datasets in their own layout
(`chexpert`, `mimic`, `padchest`, `rsna`: engine.data.public, scored with `evaluate --on`).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from ..settings import save_setting, saved
from .roots import typed_folder

KINDS = ("manifest", "chexpert", "mimic", "padchest", "rsna")
MAX_COLLECTIONS = 50
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,47}$")


class CollectionError(ValueError):
    pass


def remembered() -> list[dict]:
    """The saved collections (an unreadable entry is left out, never fatal)."""
    try:
        items = json.loads(saved("collections") or "[]")
    except ValueError:
        return []
    return [c for c in items if isinstance(c, dict) and c.get("kind") in KINDS and isinstance(c.get("name"), str)
            and isinstance(c.get("path"), str)][:MAX_COLLECTIONS] if isinstance(items, list) else []


def remember(name: str, kind: str, path: str) -> dict:
    """Add (or replace by name) a collection; refused in one line when the name, kind or path is wrong."""
    name = (name or "").strip()
    if not NAME.match(name):
        raise CollectionError(f"collection name {name!r}: 1-48 letters, digits, spaces, '.', '_' or '-'")
    if kind not in KINDS:
        raise CollectionError(f"kind {kind!r}: one of {', '.join(KINDS)}")
    raw = (path or "").strip()
    if not raw:
        raise CollectionError("give the collection's manifest CSV or folder")
    p = Path(raw).expanduser()
    if kind == "manifest" and p.is_file():
        where = str(p.resolve())
    else:
        where = str(typed_folder(raw))  # "not a folder here" / "cannot be read", in words (OSError)
    items = [c for c in remembered() if c["name"] != name]
    if len(items) >= MAX_COLLECTIONS:
        raise CollectionError(f"at most {MAX_COLLECTIONS} collections; remove one first")
    entry = {"name": name, "kind": kind, "path": where}
    save_setting("collections", json.dumps([*items, entry]))
    return entry


def forget(name: str) -> None:
    save_setting("collections", json.dumps([c for c in remembered() if c["name"] != name]))


def summary(kind: str, path: str, thumbnails: int = 8) -> dict:
    """Classes, counts per split and source, patients, duplicate films found, and a few image paths."""
    if kind == "manifest":
        from .labelled import LabelledCollection
        ds = LabelledCollection(path)
        dup = ds.duplicates or {}
    else:
        from ..constants import NIH_LABELS
        from .public import read_public
        ds = read_public(path, kind, list(NIH_LABELS))
        dup = {}
    f = ds.frame
    per_split = []
    order = {s: k for k, s in enumerate(("train", "val", "test", "external"))}
    for split, rows in sorted(f.groupby("split", sort=False), key=lambda kv: order.get(kv[0], 9)):
        t = ds.targets[rows.index.to_numpy()]
        per_split.append({"split": split, "images": len(rows), "patients": int(rows["patient_id"].nunique()),
                          **{c: int((t[:, k] == 1).sum()) for k, c in enumerate(ds.class_names)}})
    sources = f["source"].replace("", "(none)").value_counts().head(20)
    return {"kind": kind, "path": path, "classes": list(ds.class_names), "images": len(f),
            "patients": int(f["patient_id"].nunique()), "per_split": per_split,
            "sources": [{"source": s, "images": int(n)} for s, n in sources.items()],
            "duplicates": {k: dup.get(k) for k in ("pairs", "pairs_across_splits_before", "images_moved")} if dup else None,
            "skipped": {k: v for k, v in ds.skipped.items() if isinstance(v, int) and v},
            "thumbnails": f["path"].head(thumbnails).tolist(), "trainable": kind == "manifest"}
