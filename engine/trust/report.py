"""Subgroups and operating points of an evaluation, from its predictions tables (no model needed)."""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from ..runs.folder import strict, write_json
from ..runs.predictions import Predictions, read, read_if_present
from .operating import operating_points
from .subgroups import subgroup_table


def trust_tables(val: Predictions, test: Predictions, class_names: Sequence[str], *, n_boot: int = 1000,
                 seed: int = 0, sensitivity: float = 0.9, specificity: float = 0.9) -> dict:
    """{"subgroups": rows, "operating_points": per class} of `test`, thresholds chosen on `val`."""
    return {"subgroups": subgroup_table(test, class_names, n_boot=n_boot, seed=seed),
            "operating_points": operating_points(val, test, class_names, sensitivity=sensitivity,
                                                 specificity=specificity, n_boot=n_boot, seed=seed)}




def run_tables(folder, *, n_boot: int = 1000, seed: int = 0, **kw) -> dict:
    """trust_tables of a run's own test predictions, thresholds from its validation predictions."""
    paths = {s: folder.predictions(s) for s in ("val", "test")}
    missing = [s for s, p in paths.items() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"run {folder.name} has no {' or '.join(missing)} predictions yet: "
                                f"python -m engine evaluate {folder.name} --split both")
    val, test = read(paths["val"]), read(paths["test"])
    return trust_tables(val, test, test.classes, n_boot=n_boot, seed=seed, **kw)


def _stamp(path) -> list[int] | None:
    try:
        st = os.stat(path)
        return [st.st_size, st.st_mtime_ns]
    except (OSError, TypeError):
        return None


def stored_trust_tables(val_path, test_path, *, n_boot: int = 200, seed: int = 0) -> dict:
    """trust_tables of a predictions CSV, computed once per file: kept beside it in
    `trust-<name>-b<n_boot>-s<seed>.json` with the sizes and mtimes of the CSVs it came from, and
    recomputed only when one of them changes. A folder that cannot be written only costs a recompute."""
    test_path = Path(test_path)
    store = test_path.with_name(f"trust-{test_path.stem}-b{n_boot}-s{seed}.json")
    stamp = {"test": _stamp(test_path), "val": _stamp(val_path) if val_path else None}
    try:
        kept = json.loads(store.read_text())
        if kept.get("stamp") == stamp:
            return kept["tables"]
    except (OSError, ValueError, AttributeError):
        pass
    val, test = read_if_present(val_path), read(test_path)
    tables = trust_tables(val, test, test.classes, n_boot=n_boot, seed=seed)
    try:
        write_json(store, {"stamp": stamp, "tables": tables})
    except OSError:
        pass
    return json.loads(json.dumps(strict(tables), allow_nan=False, default=str))  # as read back next time
