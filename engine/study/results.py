"""The study's tables filled with our runs: each cell's state and AUC with its 95% interval beside
the published value, and every comparison the study makes with its paired statistics."""
from __future__ import annotations

import numpy as np

from ..config import PRESETS
from ..constants import COVID_LABEL, NIH_LABELS
from ..published import NIH_AUCS
from ..evaluation.baseline import baselines
from ..evaluation.compare import ComparisonError, compare_runs
from ..runs.details import headline_class
from ..runs.store import Registry
from ..stats import corrected_resampled_t, p_text
from ..text import estimate
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
        if PRESETS[exp.preset]["data"]["task"] == "combined15" and cell.state == "finished":
            extra = {"collection_only": collection_only(reg, cell.name, n_boot=1000)}
        else:
            extra = {}
        rows.append({**cell.as_dict(), **extra, "class": cls, "ours": ours.get("auc"), "low": ours.get("low"),
                     "high": ours.get("high"), "published": pub.get("value"), "source": pub.get("source"),
                     "per_class": {c: v for c, v in aucs.items() if c != "mean"}})
    return rows


def _point(row: dict, fraction: float, train_images) -> dict:
    return {"fraction": fraction, "run": row["name"], "state": row["state"], "train_images": train_images,
            "auc": row["ours"], "low": row["low"], "high": row["high"], "repeats": row.get("repeats")}


def learning_curves(spec: StudySpec, rows: list[dict], reg: Registry) -> list[dict]:
    """Each learning-curve arm: its AUC (interval from repeat 0, spread over the repeats) at every
    training fraction, 100 % being the arm itself. [{"arm", "label", "class", "points": [...]}]"""
    by_key = {r["key"]: r for r in rows}
    arms: dict[str, dict] = {}
    for e in spec.experiments:
        if e.table != "Learning curve" or e.key not in by_key:
            continue
        base = by_key[e.base]
        arm = arms.setdefault(e.base, {"arm": e.base, "label": base["label"], "class": base["class"], "points": []})
        arm["points"].append(_point(by_key[e.key], float(e.overrides["train_fraction"]),
                                    _split_sizes(reg, by_key[e.key]["name"])[0]))
    for key, arm in arms.items():
        arm["points"].append(_point(by_key[key], 1.0, _split_sizes(reg, by_key[key]["name"])[0]))
    return list(arms.values())


def curve_frames(curves: list[dict]):
    """(points, repeats) DataFrames of the learning curves, for figures.learning_curve_chart."""
    import pandas as pd

    points = pd.DataFrame([{"arm": c["arm"], "fraction": p["fraction"], "auc": p["auc"], "low": p["low"],
                            "high": p["high"]} for c in curves for p in c["points"]],
                          columns=["arm", "fraction", "auc", "low", "high"])
    repeats = pd.DataFrame([{"arm": c["arm"], "fraction": p["fraction"], "repeat": k, "auc": v}
                            for c in curves for p in c["points"] for k, v in enumerate((p["repeats"] or {}).get("values", []))
                            if v is not None], columns=["arm", "fraction", "repeat", "auc"])
    return points, repeats


def held_out_origins(spec: StudySpec, rows: list[dict], reg: Registry) -> list[dict]:
    """Internal-external validation: per held-out origin, its test images (positives, negatives)
    and AUC with interval, beside the internal test AUC of the row it varies."""
    from ..runs.predictions import PredictionsError, read

    by_key = {r["key"]: r for r in rows}
    out = []
    for e in spec.experiments:
        if e.table != "Leave one source out" or e.key not in by_key:
            continue
        r, base = by_key[e.key], by_key[e.base]
        pos = neg = None
        path = reg.folder(r["name"]).predictions("test") if reg.get(r["name"]) else None
        if path is not None and path.is_file() and r["state"] == "finished":
            try:
                t = read(path).columns([r["class"]])[0][:, 0]
                pos, neg = int((t == 1).sum()), int((t == 0).sum())
            except (PredictionsError, ValueError):
                pass
        out.append({"origin": e.overrides["holdout_source"], "key": e.key, "run": r["name"], "state": r["state"],
                    "text": r["text"], "class": r["class"], "positives": pos, "negatives": neg,
                    "auc": r["ours"], "low": r["low"], "high": r["high"], "internal_run": base["name"],
                    "internal_auc": base["ours"], "internal_low": base["low"], "internal_high": base["high"]})
    return out


def per_class_rows(rows: list[dict], table: str) -> list[dict]:
    """One row per class of a table's runs (e.g. the pneumonia types): each run's AUC and interval."""
    runs = [r for r in rows if r["table"] == table]
    classes = list(dict.fromkeys(c for r in runs for c in r["per_class"]))
    out = []
    for c in classes + (["mean"] if classes else []):
        line = {"class": c}
        for r in runs:
            v = r["per_class"].get(c) if c != "mean" else ({"auc": r["ours"], "low": r["low"], "high": r["high"]}
                                                            if r["class"] == "mean" else None)
            line[r["key"]] = v.get("auc") if v else None
            line[r["key"] + " CI"] = [v.get("low"), v.get("high")] if v and v.get("low") is not None else None
        out.append(line)
    return out


def collection_only(reg: Registry, name: str, n_boot: int = 2000) -> dict | None:
    """A 15-class run's COVID-19 AUC on the COVID-19 collection's test images alone (positives and
    negatives from the same collection, the comparison Table 2 makes) with its patient-bootstrap
    interval, beside what a score that only names the image's collection gets on its whole test set:
    the part of the overall AUC that telling the collections apart explains."""
    from ..metrics import bootstrap_auc, per_class_auc
    from ..runs.predictions import PredictionsError, read

    path = reg.folder(name).predictions("test") if reg.get(name) else None
    if path is None or not path.is_file():
        return None
    try:
        p = read(path)
        t, s = p.columns([COVID_LABEL])
    except (PredictionsError, ValueError):
        return None
    if "dataset" not in p.info:
        return None
    inside = (p.info["dataset"] == "covid").to_numpy() & np.isfinite(t[:, 0])
    boot = bootstrap_auc(t[inside], s[inside], p.clusters[inside], n=n_boot)
    known = np.isfinite(t[:, 0])
    source_only = per_class_auc(t[known], (p.info["dataset"] == "covid").to_numpy()[known, None].astype(float))
    f = lambda x: None if not np.isfinite(x) else float(x)  # noqa: E731
    return {"auc": f(boot["auc"][0]), "low": f(boot["low"][0]), "high": f(boot["high"][0]),
            "images": int(inside.sum()), "positives": int((t[inside, 0] == 1).sum()),
            "negatives": int((t[inside, 0] == 0).sum()), "source_only_auc": f(source_only[0]),
            "text": _collection_text(boot, inside, t, source_only[0])}


def _collection_text(boot, inside, t, source_only) -> str:
    auc, lo, hi = boot["auc"][0], boot["low"][0], boot["high"][0]
    if not np.isfinite(auc):
        return "no COVID-19-collection test image of both labels: no collection-only AUC"
    return (f"on the COVID-19 collection's {int(inside.sum())} test images alone ({int((t[inside, 0] == 0).sum())} "
            f"negatives): {estimate(auc, lo, hi)}; a score that only names the collection gets "
            f"{source_only:.3f} on the whole test set")


def table1_per_class(rows: list[dict], extra: list[dict] = ()) -> list[dict]:
    """The paper's Table 1 layout: one row per ChestX-ray14 class (and the mean), the study's
    DenseNet-121 beside each of our Table 1 runs (AUC and interval), and baselines scored on our
    test split (`extra`: engine.evaluation.baseline records, e.g. torchxrayvision's own classifier)."""
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
    results = {r: {x["key"]: x for x in (rows if r == 0 else cell_results(spec, cells, reg))}
               for r, cells in by_repeat.items()}
    for row in rows:
        if spec.experiment(row["key"]).repeats:
            row["repeats"] = spread([results[r].get(row["key"], {}).get("ours") for r in sorted(results)])
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
            "future_work": per_class_rows(rows, "Future work"),
            "learning_curves": learning_curves(spec, rows, reg),
            "held_out": held_out_origins(spec, rows, reg), "notes": list(spec.notes),
            "comparisons": comps}


def study_caption(results: dict, table: str) -> str:
    """The paper figure's caption of one study table: scale, runs, the interval method, repeats."""
    rows = [r for r in results["cells"] if r["table"] == table]
    done = [r for r in rows if r.get("ours") is not None]
    sources = sorted({r["source"] for r in rows if r.get("source")})
    lines = [f"Study at scale {results['scale']}: {len(done)} of {len(rows)} experiments finished "
             f"(runs {', '.join(r['name'] for r in done) or 'none yet'}).",
             "Ours: test AUC (point) with its 95 % interval, percentile bootstrap over patients; "
             "published: diamond" + (f" ({'; '.join(sources)})" if sources else "") + "."]
    if results.get("repeats", 1) > 1:
        lines.append(f"Small dots: the AUC of each of {results['repeats']} repeats (split and training seeds moved).")
    return "\n".join(lines)


REPEAT_NOTE = ("Repeat r moves the training seed and the split seed by r: the COVID-19 collection's patient split "
               "and ChestX-ray14's train/validation split are redrawn; ChestX-ray14's official test list stays fixed. "
               "The corrected resampled t-test (Nadeau and Bengio 2003) allows for the repeats' overlapping training "
               "sets; with few repeats it has little power.")
