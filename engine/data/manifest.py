"""The manifest format: any collection of X-rays as one CSV, for external evaluation.

A manifest is a CSV file (or a folder holding `manifest.csv`) with one row per image:

    path        the image file, relative to the CSV's folder or absolute       (required)
    <label>     one column per class, named as the run's class (e.g. COVID-19, Effusion):
                1/true/yes/positive, 0/false/no/negative; empty, -1 or "uncertain" = unknown
    patient_id  optional; without it every image counts as its own patient
    sex         optional: M/F (male/female accepted)
    age         optional: years
    view        optional: PA, AP, AP supine, ... (compared without case or spacing)
    source      optional: where the image came from (hospital, scanner, publication)

Columns named otherwise are mapped with `column=field` pairs (`--map "Image Index=path"`,
`--map "Finding=COVID-19"`); common spellings (`image`, `filename`, `Patient ID`, `gender`,
`View Position`) are recognised without one. Class names match case-, space- and punctuation-
insensitively ("covid19" = "COVID-19"). Rows without a path, with a file that does not exist or with
a label that is not one of the values above are skipped and counted, never fatal.
"""
from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..constants import DEFAULT_CACHE_SIZE
from .dataset import XrayDataset

MANIFEST_NAME = "manifest.csv"
FIELDS = ("path", "patient_id", "sex", "age", "view", "source")
ALIASES = {
    "path": ("path", "image", "image_path", "imagepath", "filename", "file", "image_index", "imageindex"),
    "patient_id": ("patient_id", "patientid", "patient", "subject", "subject_id"),
    "sex": ("sex", "gender", "patient_gender", "patientgender", "patient_sex"),
    "age": ("age", "patient_age", "patientage"),
    "view": ("view", "view_position", "viewposition", "projection"),
    "source": ("source", "site", "hospital", "origin"),
}
POSITIVE = {"1", "1.0", "true", "yes", "y", "positive", "pos"}
NEGATIVE = {"0", "0.0", "false", "no", "n", "negative", "neg"}
UNKNOWN = {"", "nan", "-1", "-1.0", "uncertain", "unknown", "na", "n/a"}


class ManifestError(ValueError):
    """A manifest that cannot be used at all (no file, no path column, no label of the run's classes)."""


MAX_ROWS = 1_000_000  # a larger collection is evaluated in parts (each part its own manifest)
MAX_CELL = 128 * 1024  # Python's csv field limit: a longer cell is not an image path or a label


def _stream(reader, csv_path: Path):
    """The manifest's rows as {column: text}; one ManifestError line for a cell over MAX_CELL, a
    malformed row or more than MAX_ROWS rows (the row number named), never a csv traceback."""
    line = 1
    try:
        for line, r in enumerate(reader, start=2):
            if line - 1 > MAX_ROWS:
                raise ManifestError(f"{csv_path}: more than {MAX_ROWS:,} rows; evaluate the collection in parts "
                                    "(one manifest each)")
            yield {k: (v if isinstance(v, str) else "") for k, v in r.items() if k is not None}
    except csv.Error as exc:
        what = (f"a cell longer than {MAX_CELL // 1024} KiB" if "field larger" in str(exc) else str(exc))
        raise ManifestError(f"{csv_path}, line {line + 1}: {what}; a manifest cell holds a path, a label or a "
                            "short value") from None


def norm(name: str) -> str:
    """A column or class name compared without case, spaces or punctuation."""
    return re.sub(r"[^0-9a-z]", "", str(name).casefold())


def parse_mapping(pairs: Sequence[str] | None) -> dict[str, str]:
    """["Image Index=path", ...] -> {column: field}; raises ManifestError on a pair without '='."""
    out = {}
    for p in pairs or ():
        col, sep, fld = str(p).partition("=")
        if not sep or not col.strip() or not fld.strip():
            raise ManifestError(f"--map takes COLUMN=FIELD (e.g. 'Image Index=path'), got {p!r}")
        out[col.strip()] = fld.strip()
    return out


def manifest_path(source) -> Path:
    p = Path(source)
    if p.is_dir():
        p = p / MANIFEST_NAME
    if not p.is_file():
        raise ManifestError(f"no manifest at {source}: pass a CSV file or a folder holding {MANIFEST_NAME}")
    return p


def label_value(text) -> float | None:
    """1.0, 0.0, NaN (unknown) or None (not a label value)."""
    t = str(text).strip().casefold()
    if t in POSITIVE:
        return 1.0
    if t in NEGATIVE:
        return 0.0
    if t in UNKNOWN:
        return float("nan")
    return None


def sex_value(text) -> str:
    t = str(text or "").strip().casefold()
    return {"m": "M", "male": "M", "man": "M", "f": "F", "female": "F", "woman": "F"}.get(t, "")


def resolve_columns(header: Sequence[str], class_names: Sequence[str], mapping: dict[str, str]) -> tuple[dict, dict]:
    """({field: column}, {class: column}) from a header, the run's classes and explicit pairs."""
    fields_, labels = {}, {}
    by_norm = {norm(c): c for c in class_names}
    for col, target in mapping.items():
        if col not in header:
            raise ManifestError(f"--map names column {col!r}, which the manifest does not have; "
                                f"its columns: {', '.join(header)}")
        if target in FIELDS:
            fields_[target] = col
        elif norm(target) in by_norm:
            labels[by_norm[norm(target)]] = col
        else:
            raise ManifestError(f"--map {col}={target}: {target!r} is neither a field ({', '.join(FIELDS)}) "
                                f"nor a class of the run ({', '.join(class_names)})")
    taken = set(fields_.values()) | set(labels.values())
    for col in header:
        if col in taken:
            continue
        n = norm(col)
        for f, names in ALIASES.items():
            if f not in fields_ and n in {norm(a) for a in names}:
                fields_[f] = col
                taken.add(col)
                break
        else:
            if n in by_norm and by_norm[n] not in labels:
                labels[by_norm[n]] = col
                taken.add(col)
    return fields_, labels


class ManifestDataset(XrayDataset):
    """The images of a manifest with targets in `class_names` order (NaN for a class with no column).

    skipped: `no_path`, `bad_label_rows` (with `bad_label_values` examples), `missing_images`,
    `duplicate_paths`. `label_columns` says which column fed which class."""

    name = "manifest"

    def __init__(self, source, class_names: Sequence[str], *, mapping: dict[str, str] | None = None,
                 transform=None, load_size: int = DEFAULT_CACHE_SIZE, cache=None):
        self.csv_path = manifest_path(source)
        self.root = self.csv_path.parent
        with open(self.csv_path, newline="", encoding="utf-8-sig", errors="replace") as fh:
            reader = csv.DictReader(fh)
            try:
                header = [h for h in (reader.fieldnames or []) if h is not None]
            except csv.Error as exc:
                raise ManifestError(f"{self.csv_path}: the header row cannot be read ({exc})") from None
            self._read_rows(reader, header, class_names, mapping or {}, load_size, transform, cache)

    def _read_rows(self, reader, header, class_names, mapping, load_size, transform, cache) -> None:
        """Rows are taken one at a time (memory bounded by the images kept, never the whole file),
        at most MAX_ROWS of them."""
        rows = _stream(reader, self.csv_path)
        if not header:
            raise ManifestError(f"{self.csv_path} is empty: expected a header row with a path column")
        cols, label_cols = resolve_columns(header, class_names, mapping)
        if "path" not in cols:
            raise ManifestError(f"{self.csv_path}: no image path column (looked for {', '.join(ALIASES['path'])}); "
                                f"columns: {', '.join(header)}. Name it with --map COLUMN=path")
        if not label_cols:
            raise ManifestError(f"{self.csv_path}: no label column for any class of the run "
                                f"({', '.join(class_names)}); columns: {', '.join(header)}. "
                                "Name one with --map COLUMN=CLASS")
        self.label_columns = label_cols
        self.rows_in_manifest = 0
        skipped = {"no_path": 0, "bad_label_rows": 0, "missing_images": 0, "duplicate_paths": 0}
        bad_values: dict[str, int] = {}
        recs, targets, seen = [], [], set()
        for r in rows:
            self.rows_in_manifest += 1
            raw = (r.get(cols["path"]) or "").strip()
            if not raw:
                skipped["no_path"] += 1
                continue
            t = np.full(len(class_names), np.nan, dtype=np.float32)
            ok = True
            for k, c in enumerate(class_names):
                if c in label_cols:
                    v = label_value(r.get(label_cols[c], ""))
                    if v is None:
                        ok = False
                        key = f"{label_cols[c]}={r.get(label_cols[c], '')!s:.20}"
                        bad_values[key] = bad_values.get(key, 0) + 1
                    else:
                        t[k] = v
            if not ok:
                skipped["bad_label_rows"] += 1
                continue
            path = raw if os.path.isabs(raw) else str(self.root / raw)
            path = os.path.normpath(path)
            if path in seen:
                skipped["duplicate_paths"] += 1
                continue
            seen.add(path)
            if not os.path.isfile(path):
                skipped["missing_images"] += 1
                continue
            recs.append({"image": raw, "path": path,
                         "patient_id": (r.get(cols["patient_id"], "") or "").strip() if "patient_id" in cols else "",
                         "sex": sex_value(r.get(cols["sex"], "")) if "sex" in cols else "",
                         "age": r.get(cols["age"], "") if "age" in cols else "",
                         "view": " ".join((r.get(cols["view"], "") or "").split()) if "view" in cols else "",
                         "source": (r.get(cols["source"], "") or "").strip() if "source" in cols else ""})
            targets.append(t)
        if bad_values:
            skipped["bad_label_values"] = dict(sorted(bad_values.items(), key=lambda kv: -kv[1])[:10])
        frame = pd.DataFrame.from_records(recs, columns=["image", "path", "patient_id", "sex", "age", "view", "source"])
        frame["age"] = pd.to_numeric(frame["age"], errors="coerce")
        no_pid = frame["patient_id"] == ""
        frame.loc[no_pid, "patient_id"] = "image:" + frame.loc[no_pid, "image"]  # each its own patient
        self.has_patient_ids = "patient_id" in cols
        frame["split"] = "external"
        frame["dataset"] = self.name
        super().__init__(frame, np.array(targets, dtype=np.float32).reshape(len(frame), len(class_names)),
                         class_names, transform=transform, load_size=load_size, cache=cache, skipped=skipped)
