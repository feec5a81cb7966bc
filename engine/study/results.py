"""The study's tables filled with our runs: each cell's state and AUC with its 95% interval beside
the published value, and every comparison the study makes with its paired statistics."""
from __future__ import annotations

import numpy as np

from ..config import PRESETS
from ..constants import NIH_LABELS
from ..published import NIH_AUCS
from ..runs.baseline import baselines
from ..runs.compare import ComparisonError, compare_runs
from ..runs.details import headline_class
from ..runs.store import Registry
from ..stats import corrected_resampled_t, p_text
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


def table1_per_class(rows: list[dict], extra: list[dict] = ()) -> list[dict]:
    """The paper's Table 1 layout: one row per ChestX-ray14 class (and the mean), the study's
    DenseNet-121 beside each of our Table 1 runs (AUC and interval), and baselines scored on our
    test split (`extra`: engine.runs.baseline records, e.g. torchxrayvision's own classifier)."""
    published = dict(zip(NIH_LABELS, NIH_AUCS[STUDY_TABLE1][2]))
    runs = [r for r in rows if r["table"] == "Table 1"]
    out = []
    for c in list(NIH_LABELS) + ["mean"]:
        line = {"class": c, "study": published.get(c) if c != "mean" else NIH_AUCS[STUDY_TABLE1][3]}
        for r in runs:
            v = r["per_class"].get(c) if c != "mean" else {"auc": r["ours"], "low": r["low"], "high": r["high"]}
            line[r["key"]] = v.get("auc") if v else None
            line[r["key"] + " CI"] = [v.get("low"), v.get("high")] if v and v.get("auc") is not None else None
        for b in extra:
            v = next((x for x in b["test"]["auc"] if x["class"] == c), None)
            line[b["source"]] = v["auc"] if v else None
            line[b["source"] + " CI"] = [v["low"], v["high"]] if v and v.get("low") is not None else None
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


def spread(values: list) -> dict:
    """Every repeat's value (None: not finished) with the mean, sd, min and max of those there are."""
    have = np.array([v for v in values if v is not None], float)
    return {"values": list(values), "n": int(have.size), "mean": float(have.mean()) if have.size else None,
            "sd": float(have.std(ddof=1)) if have.size > 1 else None,
            "min": float(have.min()) if have.size else None, "max": float(have.max()) if have.size else None}


def _split_sizes(reg: Registry, name: str) -> tuple[int | None, int | None]:
    """(training images, test images) of a finished run, from its metrics.json."""
    m = reg.folder(name).read_metrics() if reg.get(name) else {}
    return m.get("train_images"), (m.get("test") or {}).get("images")


def across_repeats(spec: StudySpec, by_repeat: dict[int, list[Cell]], reg: Registry, rows: list[dict],
                   per_repeat_comparisons: dict[int, list[dict]]) -> None:
    """Add each experiment's spread over the repeats to its row, and each comparison's differences
    over the repeats with the corrected resampled t-test and "A beat B in k of K" (in place)."""
    results = {r: (rows if r == 0 else cell_results(spec, cells, reg)) for r, cells in by_repeat.items()}
    for i, row in enumerate(rows):
        row["repeats"] = spread([results[r][i]["ours"] for r in sorted(results)])
    for j, comp in enumerate(per_repeat_comparisons[0]):
        diffs, sizes = [], []
        for r in sorted(per_repeat_comparisons):
            c = per_repeat_comparisons[r][j]
            diffs.append(c.get("diff"))
            if c.get("diff") is not None:
                sizes.append(_split_sizes(reg, c["a"]))
        n_train = min((s[0] for s in sizes if s[0]), default=None)
        n_test = max((s[1] for s in sizes if s[1]), default=None)
        test = corrected_resampled_t(diffs, n_train, n_test)
        test["diffs"] = diffs
        if test["K"] == 0:
            test["text"] = "no repeat has both runs finished yet"
        else:
            a, b = spec.comparisons[j]["a"], spec.comparisons[j]["b"]
            test["text"] = (f"{a} beat {b} in {test['wins']} of {test['K']} repeats; mean difference "
                            f"{test['mean']:+.3f}" + (f" (sd {test['sd']:.3f}, range {test['min']:+.3f} to "
                                                     f"{test['max']:+.3f})" if test["sd"] is not None else "")
                            + (f", corrected resampled t-test {p_text(test['p'])}" if test["p"] is not None else
                               "; no test across repeats" + (" (train size not recorded)" if test["K"] > 1 and
                                                             test["ratio"] is None else "")))
        comp["across_repeats"] = test


def study_results(spec: StudySpec, cells: list[Cell], reg: Registry, n_boot: int = 2000) -> dict:
    """The tables from repeat 0 (the study's own split and seeds), and with repeats, every number's
    spread over them and each comparison's test across them."""
    by_repeat: dict[int, list[Cell]] = {}
    for c in cells:
        by_repeat.setdefault(c.repeat, []).append(c)
    rows = cell_results(spec, by_repeat[0], reg)
    comps = comparisons(spec, by_repeat[0], reg, n_boot)
    if len(by_repeat) > 1:
        per = {0: comps, **{r: comparisons(spec, cs, reg, n_boot) for r, cs in by_repeat.items() if r}}
        across_repeats(spec, by_repeat, reg, rows, per)
    return {"scale": spec.scale, "description": spec.description, "repeats": len(by_repeat),
            "repeat_note": REPEAT_NOTE if len(by_repeat) > 1 else "", "cells": rows,
            "table1": table1_per_class(rows, baselines(reg)),
            "comparisons": comps}


REPEAT_NOTE = ("Repeat r moves the training seed and the split seed by r: the COVID-19 collection's patient split "
               "and ChestX-ray14's train/validation split are redrawn; ChestX-ray14's official test list stays fixed. "
               "The corrected resampled t-test (Nadeau and Bengio 2003) allows for the repeats' overlapping training "
               "sets; with few repeats it has little power.")
