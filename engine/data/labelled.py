"""Your own collection: a manifest of labelled chest X-rays to train on (task `manifest`).

The manifest format of `engine.data.manifest` (one CSV row per image; `path`, and optionally
`patient_id`, `sex`, `age`, `view`, `source`), extended for training:

- every other column is a class (multi-label), its cells 1/true/yes/positive or 0/false/no/negative,
  empty, -1 or "uncertain" for unknown; or a single `label` column whose values each become a class
  (one per image; empty = unknown);
- an optional `split` column (train / val / test, `validation` accepted) is honoured as given; a
  patient whose rows name two splits is refused. Without it, patients are split 60/20/20, stratified
  by their first positive class, and copies of one film under two patients (a perceptual hash, as
  for the COVID-19 collection) are kept in one split, their patients linked for the bootstrap.

A manifest that cannot be trained on is refused before anything is recorded, in one line naming the
row or the column (`ManifestError`). Missing image files are counted and skipped; images that cannot
be decoded are counted and skipped while training, as for every collection.
"""
from __future__ import annotations

import csv
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..constants import DEFAULT_CACHE_SIZE, SPLITS
from .dataset import XrayDataset
from .duplicates import DEFAULT_MAX_DISTANCE, duplicate_pairs, image_hashes, keep_together, linked_clusters
from .manifest import ALIASES, ManifestError, _stream, label_value, manifest_path, norm, sex_value
from .splits import hold_out, split_by_patient

SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "test": "test", "testing": "test"}
LABEL_COLUMN = "label"
FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}


def _field_columns(header: Sequence[str]) -> dict[str, str]:
    """{field: column} for the manifest's known fields (path, patient_id, ..., split), by name or alias."""
    out = {}
    for col in header:
        n = norm(col)
        for f, names in {**ALIASES, "split": ("split", "partition", "fold")}.items():
            if f not in out and n in {norm(a) for a in names}:
                out[f] = col
                break
    return out


def manifest_classes(source) -> list[str]:
    """The classes a manifest defines (its class columns, or the values of its `label` column)."""
    csv_path = manifest_path(source)
    with open(csv_path, newline="", encoding="utf-8-sig", errors="replace") as fh:
        reader = csv.DictReader(fh)
        header = [h for h in (reader.fieldnames or []) if h is not None]
        fields = _field_columns(header)
        label = next((c for c in header if norm(c) == LABEL_COLUMN and c not in fields.values()), None)
        if label is None:
            return _class_columns(csv_path, header, fields)
        values = {}
        for r in _stream(reader, csv_path):
            v = (r.get(label) or "").strip()
            if v:
                values.setdefault(v, None)
        return sorted(values)


def _class_columns(csv_path, header, fields) -> list[str]:
    classes = [c for c in header if c not in fields.values()]
    seen: dict[str, str] = {}
    for c in classes:
        if not c.strip():
            raise ManifestError(f"{csv_path}: a column without a name; name every column (path, a field or a class)")
        other = seen.setdefault(norm(c), c)
        if other != c:
            raise ManifestError(f"{csv_path}: columns {other!r} and {c!r} name one class; keep one of them")
    return classes


class LabelledCollection(XrayDataset):
    """A manifest's images with the manifest's own classes, split by patient (or as its `split` column
    says). `skipped` counts rows without a path and missing files; `duplicates` reports copies of one
    film kept together (None when the manifest gives its own split or dedupe is off)."""

    name = "manifest"

    def __init__(self, source, *, seed: int = 0, dedupe: bool = True, transform=None,
                 load_size: int = DEFAULT_CACHE_SIZE, cache=None, max_distance: int = DEFAULT_MAX_DISTANCE,
                 holdout_source: str = ""):
        self.csv_path = manifest_path(source)
        root = self.csv_path.parent
        with open(self.csv_path, newline="", encoding="utf-8-sig", errors="replace") as fh:
            reader = csv.DictReader(fh)
            try:
                header = [h for h in (reader.fieldnames or []) if h is not None]
            except csv.Error as exc:
                raise ManifestError(f"{self.csv_path}: the header row cannot be read ({exc})") from None
            if not header:
                raise ManifestError(f"{self.csv_path} is empty: expected a header row with a path column")
            fields = _field_columns(header)
            if "path" not in fields:
                raise ManifestError(f"{self.csv_path}: no image path column (looked for {', '.join(ALIASES['path'])}); "
                                    f"columns: {', '.join(header)}")
            label = next((c for c in header if norm(c) == LABEL_COLUMN and c not in fields.values()), None)
            class_cols = [] if label else _class_columns(self.csv_path, header, fields)
            if label and len(header) > len(fields) + 1:
                extra = [c for c in header if c not in fields.values() and c != label]
                raise ManifestError(f"{self.csv_path}: a `label` column and class columns ({', '.join(extra)}) at once; "
                                    "use one or the other")
            if not label and not class_cols:
                raise ManifestError(f"{self.csv_path}: no class: add one column per class (1/0) or a `label` column")
            rows = list(_stream(reader, self.csv_path))
        classes = sorted({(r.get(label) or "").strip() for r in rows} - {""}) if label else class_cols
        if not classes:
            raise ManifestError(f"{self.csv_path}: the `label` column holds no value")
        records, targets, skipped, seen = [], [], {"no_path": 0, "missing_images": 0, "duplicate_paths": 0}, set()
        for line, r in enumerate(rows, start=2):
            raw = (r.get(fields["path"]) or "").strip()
            if not raw:
                skipped["no_path"] += 1
                continue
            t = np.full(len(classes), np.nan, dtype=np.float32)
            if label:
                v = (r.get(label) or "").strip()
                if v:
                    t[:] = 0.0
                    t[classes.index(v)] = 1.0
            else:
                for k, c in enumerate(classes):
                    v = label_value(r.get(c, ""))
                    if v is None:
                        raise ManifestError(f"{self.csv_path}, line {line}, column {c!r}: {r.get(c, '')!s:.40} is not "
                                            "a label (1/0, true/false, yes/no, positive/negative; empty, -1 or "
                                            "uncertain for unknown)")
                    t[k] = v
            split = ""
            if "split" in fields:
                given = (r.get(fields["split"]) or "").strip().casefold()
                split = SPLIT_NAMES.get(given, "")
                if not split:
                    raise ManifestError(f"{self.csv_path}, line {line}, column {fields['split']!r}: {given!r} is not "
                                        "a split (train, val or test)")
            path = os.path.normpath(raw if os.path.isabs(raw) else str(root / raw))
            if path in seen:
                skipped["duplicate_paths"] += 1
                continue
            seen.add(path)
            if not os.path.isfile(path):
                skipped["missing_images"] += 1
                continue
            cell = {f: (r.get(fields[f]) or "").strip() if f in fields else "" for f in ALIASES}
            records.append({"image": raw, "path": path, "patient_id": cell["patient_id"] or f"image:{raw}",
                            "sex": sex_value(cell["sex"]), "age": cell["age"], "view": " ".join(cell["view"].split()),
                            "source": cell["source"], "split": split, "line": line})
            targets.append(t)
        frame = pd.DataFrame.from_records(records, columns=["image", "path", "patient_id", "sex", "age", "view",
                                                            "source", "split", "line"])
        frame["age"] = pd.to_numeric(frame["age"], errors="coerce")
        targets = np.array(targets, dtype=np.float32).reshape(len(frame), len(classes))
        if frame.empty:
            raise ManifestError(f"{self.csv_path}: no image of the manifest is here ({skipped['missing_images']} "
                                f"missing, {skipped['no_path']} rows without a path)")
        self.duplicates = None
        if "split" in fields:
            self._check_patients(frame)
        else:
            t0 = np.nan_to_num(targets, nan=0.0)
            strata = np.where(t0.any(axis=1), t0.argmax(axis=1), -1)
            frame["split"] = split_by_patient(frame["patient_id"].to_numpy(), FRACTIONS, seed, strata=strata)
            if dedupe:
                self._keep_copies_together(frame, max_distance)
        self.holdout = None
        if holdout_source:  # leave one source out: its images are the test split (as for the COVID-19 collection)
            usable = ~np.isnan(targets).all(axis=1)
            frame["split"], self.holdout = hold_out(frame, usable, holdout_source, f"the manifest {self.csv_path}")
        frame["dataset"] = self.name
        self.given_split = "split" in fields
        super().__init__(frame.drop(columns="line"), targets, classes, transform=transform, load_size=load_size,
                         cache=cache, skipped=skipped)
        train = self.split("train")
        empty = [c for c, n in train.label_counts().items() if n == 0]
        if empty:
            raise ManifestError(f"{self.csv_path}: class {empty[0]!r} has no positive image in the train split"
                                + (f" ({len(empty) - 1} more classes too)" if len(empty) > 1 else "")
                                + "; it cannot be learnt")
        for s in SPLITS:
            if not (self.frame["split"] == s).any():
                raise ManifestError(f"{self.csv_path}: the {s} split is empty")

    def _check_patients(self, frame: pd.DataFrame) -> None:
        per = frame.groupby("patient_id")["split"].nunique()
        mixed = per[per > 1]
        if len(mixed):
            pid = mixed.index[0]
            rows = frame[frame["patient_id"] == pid]
            where = ", ".join(f"{s} (line {int(rows[rows['split'] == s]['line'].iloc[0])})"
                              for s in sorted(rows["split"].unique()))
            raise ManifestError(f"{self.csv_path}: patient {pid!r} has rows in two splits: {where}; a patient's "
                                "images belong to one split")

    def _keep_copies_together(self, frame: pd.DataFrame, max_distance: int) -> None:
        """Copies of one film under two patients: one split, and one resampling unit (cluster_id)."""
        hashes, unreadable = image_hashes(frame["path"].tolist())
        pairs = duplicate_pairs(hashes, max_distance)
        before = frame["split"].to_numpy()
        splits, report = keep_together(frame["patient_id"].to_numpy(), before, pairs)
        frame["split"] = splits
        frame["cluster_id"] = linked_clusters(frame["patient_id"].to_numpy(), pairs)
        report["unreadable"] = len(unreadable)
        self.duplicates = report
