"""The study's tables filled with our runs: each cell's state and AUC with its 95% interval beside
the published value, and every comparison the study makes with its paired statistics."""
from __future__ import annotations

from ..config import PRESETS
from ..constants import NIH_LABELS
from ..published import NIH_AUCS
from ..runs.compare import ComparisonError, compare_runs
from ..runs.details import headline_class
from ..runs.store import Registry
from .graph import ACTIVE, Cell
from .spec import StudySpec

STUDY_TABLE1 = "the study's DenseNet-121 (Table 1)"


def _auc_rows(reg: Registry, name: str) -> dict:
    """{class: {"auc", "low", "high"}} of the run's test split, {} before it is evaluated."""
    metrics = reg.folder(name).read_metrics() if reg.get(name) else {}
    return {r["class"]: r for r in metrics.get("test", {}).get("auc", [])}


def cell_results(spec: StudySpec, cells: list[Cell], reg: Registry) -> list[dict]:
    """One row per experiment: its state and ours vs the published value of the class it is judged by."""
    rows = []
    for cell in cells:
        exp = spec.experiment(cell.key)
        pub = exp.published or {}
        cls = pub.get("class") or headline_class(PRESETS[exp.preset]["data"]["task"])
        aucs = _auc_rows(reg, cell.name) if cell.state == "finished" else {}
        ours = aucs.get(cls, {})
        rows.append({**cell.as_dict(), "class": cls, "ours": ours.get("auc"), "low": ours.get("low"),
                     "high": ours.get("high"), "published": pub.get("value"), "source": pub.get("source"),
                     "per_class": {c: aucs[c] for c in NIH_LABELS if c in aucs}})
    return rows


def table1_per_class(rows: list[dict]) -> list[dict]:
    """The paper's Table 1 layout: one row per ChestX-ray14 class (and the mean), the study's
    DenseNet-121 beside each of our Table 1 runs (AUC and interval)."""
    published = dict(zip(NIH_LABELS, NIH_AUCS[STUDY_TABLE1][2]))
    runs = [r for r in rows if r["table"] == "Table 1"]
    out = []
    for c in list(NIH_LABELS) + ["mean"]:
        line = {"class": c, "study": published.get(c) if c != "mean" else NIH_AUCS[STUDY_TABLE1][3]}
        for r in runs:
            v = r["per_class"].get(c) if c != "mean" else {"auc": r["ours"], "low": r["low"], "high": r["high"]}
            line[r["key"]] = v.get("auc") if v else None
            line[r["key"] + " CI"] = [v.get("low"), v.get("high")] if v and v.get("auc") is not None else None
        out.append(line)
    return out


def comparisons(spec: StudySpec, cells: list[Cell], reg: Registry, n_boot: int = 2000) -> list[dict]:
    """Each comparison the study makes: the paired statistics when both runs are finished, else why not."""
    by_key = {c.key: c for c in cells}
    out = []
    for comp in spec.comparisons:
        a, b = by_key[comp["a"]], by_key[comp["b"]]
        row = {"what": comp["what"], "a": a.name, "b": b.name, "class": comp.get("class")}
        missing = [c for c in (a, b) if c.state != "finished"]
        if missing:
            active = all(c.state in ACTIVE for c in missing)
            row["verdict"] = ("not yet: " if active else "no result: ") + "; ".join(f"{c.key} {c.short()}" for c in missing)
        else:
            try:
                row.update(compare_runs(reg, a.name, b.name, comp.get("class"), n_boot=n_boot,
                                        images=comp.get("images", "same")))
            except ComparisonError as exc:
                row["verdict"] = f"no paired test: {exc}"
        out.append(row)
    return out


def study_results(spec: StudySpec, cells: list[Cell], reg: Registry, n_boot: int = 2000) -> dict:
    rows = cell_results(spec, cells, reg)
    return {"scale": spec.scale, "description": spec.description, "cells": rows, "table1": table1_per_class(rows),
            "comparisons": comparisons(spec, cells, reg, n_boot)}
