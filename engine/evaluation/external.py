"""External validation: a run scored on every image of another collection.

`evaluate_external` loads the run's best checkpoint, reads a collection in one of three formats
(`covid`: the COVID-19 collection's layout; `nih`: ChestX-ray14's; `manifest`: see
engine.data.manifest), scores all of its images (not one split), and writes

    checkpoints/<run>/external/<name>/predictions.csv   one row per image, as the run's own
    checkpoints/<run>/external/<name>/metrics.json      AUCs with patient-bootstrap intervals, the
                                                        drop from the internal test AUC, subgroups,
                                                        operating points (validation thresholds),
                                                        and images shared with the run's training data

Nothing else of the run changes: its checkpoints, metrics.json, predictions and registry row stay as
they were. Classes are matched by name; a class the collection does not label is not scored.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..runs.details import headline_class_of
from .evaluate import load_run_model
from ..runs.folder import EXTERNAL_PREDICTIONS, METRICS, write_json
from ..runs.predictions import read_if_present
from ..runs.states import RunError
from ..runs.store import Registry

FORMATS = ("covid", "nih", "manifest", "chexpert", "mimic", "padchest", "rsna")  # the last four: engine.data.public


def detect_format(root) -> str:
    p = Path(root)
    if p.is_file() and p.suffix.lower() == ".csv":
        return "manifest"
    if not p.is_dir():
        raise FileNotFoundError(f"external collection {root} does not exist")
    if (p / "manifest.csv").is_file():
        return "manifest"
    if (p / "metadata.csv").is_file():
        return "covid"
    if any((p / n).is_file() for n in ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")):
        return "nih"
    if any((p / n).is_file() for n in ("mimic-cxr-2.0.0-split.csv", "mimic-cxr-2.0.0-split.csv.gz")):
        return "mimic"
    if (p / "valid.csv").is_file() or (p / "train.csv").is_file():
        return "chexpert"
    if any(p.glob("PADCHEST_chest_x_ray_images_labels*.csv*")):
        return "padchest"
    if (p / "stage_2_train_labels.csv").is_file() or (p / "stage_1_train_labels.csv").is_file():
        return "rsna"
    raise FileNotFoundError(f"{root} holds no manifest.csv, metadata.csv (COVID-19 collection), "
                            "Data_Entry_2017*.csv (ChestX-ray14), train/valid.csv (CheXpert), mimic-cxr-2.0.0-split.csv "
                            "(MIMIC-CXR-JPG), PADCHEST_*.csv (PadChest) or stage_2_train_labels.csv (RSNA Pneumonia): "
                            "pass --format and a matching root")


def default_name(root, fmt: str) -> str:
    stem = Path(root).stem if Path(root).is_file() else Path(root).resolve().name
    return (re.sub(r"[^A-Za-z0-9._-]+", "-", f"{fmt}-{stem}").strip("-.") or fmt)[:64]


def load_collection(root, fmt: str, class_names, *, mapping=None, load_size: int = 256, public: dict | None = None):
    """Every image of the collection with targets in the run's class order (NaN = not labelled).
    public: the public datasets' reading options (uncertainty policy, frontal only; engine.data.public)."""
    from ..data.manifest import ManifestDataset, norm
    from ..data.public import FORMATS as PUBLIC, read_public
    from ..data.tasks import open_collection

    if fmt == "manifest":
        return ManifestDataset(root, class_names, mapping=mapping, load_size=load_size)
    if mapping:
        raise ValueError("--map applies to --format manifest only")
    if fmt in PUBLIC:
        return read_public(root, fmt, class_names, load_size=load_size, **(public or {}))
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; allowed: {', '.join(FORMATS)}")
    ds = open_collection(fmt, root, load_size=load_size, dedupe=False)  # scored whole: every image kept
    own = {norm(c): k for k, c in enumerate(ds.class_names)}
    targets = np.full((len(ds), len(class_names)), np.nan, dtype=np.float32)
    matched = [c for c in class_names if norm(c) in own]
    if not matched:
        raise ValueError(f"the {fmt} collection at {root} labels {', '.join(ds.class_names)}; the run predicts "
                         f"{', '.join(class_names)}: no class in common to score")
    for k, c in enumerate(class_names):
        if norm(c) in own:
            targets[:, k] = ds.targets[:, own[norm(c)]]
    ds.targets, ds.class_names = targets, tuple(class_names)
    ds.label_columns = {c: c for c in matched}
    ds.frame = ds.frame.assign(split="external")
    return ds


def training_overlap(cfg, external, progress=None, notice=None) -> dict:
    """Images of the external collection that are the same film as one of the run's training or
    validation images (pHash, see data.duplicates). notice(text) hears, before a long hash, how
    many images and about how long (and that --no-overlap-check skips it)."""
    from ..data.duplicates import (CONFIRM_CORRELATION, CONFIRM_SIZE, DEFAULT_MAX_DISTANCE, confirm_pairs,
                                   cross_pairs, image_hashes, pair_records)
    from ..data.tasks import build_datasets

    try:
        ds = build_datasets(cfg)
    except (FileNotFoundError, ValueError) as exc:
        return {"checked": False, "reason": f"the run's own data is not available here: {exc}"}
    seen = pd.concat([ds["train"].frame, ds["val"].frame], ignore_index=True)
    say = (lambda text: notice(f"overlap check: {text}; --no-overlap-check skips it")) if notice else None
    hashes, _ = image_hashes(seen["path"].tolist() + external.frame["path"].tolist(), progress=progress, notice=say)
    own_hashes, ext_hashes = hashes[:len(seen)], hashes[len(seen):]
    candidates = cross_pairs(ext_hashes, own_hashes)
    confirmed, rejected = confirm_pairs(external.frame["path"].tolist(), seen["path"].tolist(), candidates)
    pairs = [(i, j, d) for i, j, d, _ in confirmed]
    shared = sorted({i for i, _, _ in pairs})
    records = pair_records(external.frame, pairs, other=seen)
    for rec, (_, _, _, r) in zip(records, confirmed):
        rec["correlation"] = round(r, 4)
    rejected_records = pair_records(external.frame, [(i, j, d) for i, j, d, _ in rejected], other=seen)
    for rec, (_, _, _, r) in zip(rejected_records, rejected):
        rec["correlation"] = None if r != r else round(r, 4)
    return {"checked": True, "training_images": len(seen), "shared_images": len(shared),
            "shared_paths": sorted(str(external.frame["path"].iat[i]) for i in shared), "pairs": records[:200],
            "test": f"perceptual hash within {DEFAULT_MAX_DISTANCE} bits, confirmed by a pixel correlation >= "
                    f"{CONFIRM_CORRELATION} at {CONFIRM_SIZE} px",
            "rejected_candidates": len(rejected), "rejected": rejected_records[:50]}


def _without_shared(preds, overlap: dict, n_boot: int, seed: int) -> dict | None:
    """The AUCs on the external images that are not the same film as a training or validation image of
    the run (issue 37, N7): what the evaluation says about films the model has never seen. None when no
    film is shared (the whole evaluation is that already) or the check did not run."""
    from ..metrics import auc_table, bootstrap_auc
    from ..runs.predictions import resampling_units

    shared = set(overlap.get("shared_paths") or ())
    if not shared or "path" not in preds.info:
        return None
    keep = ~preds.info["path"].astype(str).isin(shared).to_numpy()
    rest = preds.rows(keep)
    boot = bootstrap_auc(rest.targets, rest.probs, resampling_units(rest.info), n=n_boot, seed=seed)
    return {"images": int(keep.sum()), "excluded": int((~keep).sum()), "mean_auc": boot["mean"],
            "auc": auc_table(boot, rest.classes)}


def evaluate_external(reg: Registry, run: str, root, *, fmt: str | None = None, name: str | None = None,
                      mapping: dict | None = None, n_boot: int | None = None, check_overlap: bool = True,
                      thresholds: dict | None = None, progress=None, notice=None, public: dict | None = None) -> dict:
    """Score `run` on every image of `root`; write and return the external evaluation (see module doc).
    thresholds: {"sensitivity": target, "specificity": target} for the operating points.
    progress(stage, done, total) with stage "hash" or "predict"."""
    from ..training.evaluation import evaluate_split
    from ..trust.report import trust_tables
    row = reg.require(run)
    folder = reg.folder(run)
    fmt = fmt or detect_format(root)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; allowed: {', '.join(FORMATS)}")
    name = name or default_name(root, fmt)
    try:
        out_dir = folder.external_dir(name)
    except RunError:
        raise RunError(f"invalid evaluation name {name!r}: use 1-64 letters, digits, '.', '_' or '-'") from None
    model, cfg, ckpt, device = load_run_model(folder)
    classes = list(ckpt["class_names"])
    ext = load_collection(root, fmt, classes, mapping=mapping, load_size=cfg.data.load_size, public=public)
    if len(ext) == 0:
        raise ValueError(f"no usable images in {root} ({fmt} format); skipped: "
                         + ", ".join(f"{k} {v}" for k, v in ext.skipped.items() if isinstance(v, int) and v))
    overlap = (training_overlap(cfg, ext, progress=(lambda k, n: progress("hash", k, n)) if progress else None,
                                notice=notice)
               if check_overlap else {"checked": False, "reason": "skipped (--no-overlap-check)"})
    bar = (lambda k, n: progress("predict", k, n)) if progress else None
    report, preds = evaluate_split(model, ext, cfg, device, "external", n_boot, progress=bar)
    n_boot = cfg.train.bootstrap if n_boot is None else n_boot
    internal = folder.read_metrics().get("test", {})
    internal_auc = {r["class"]: r for r in internal.get("auc", [])}
    for r in report["auc"]:
        i = internal_auc.get(r["class"], {}).get("auc")
        r["internal_auc"] = i
        r["drop"] = None if i is None or r["auc"] is None else round(i - r["auc"], 6)
        r["labelled"] = r["class"] == "mean" or r["class"] in ext.label_columns
    unseen = _without_shared(preds, overlap, n_boot, cfg.train.seed)
    val_path = folder.predictions("val")
    val = read_if_present(val_path)
    scored = [c for c in classes if c in ext.label_columns]
    out = {
        "run": run, "name": name, "root": str(Path(root).resolve()), "format": fmt, "created": time.time(),
        "checkpoint": ckpt["file"], "images": report["images"], "unreadable": report["skipped"],
        "skipped": ext.skipped, "label_columns": ext.label_columns, "classes_scored": scored,
        "patient_ids": bool(getattr(ext, "has_patient_ids", True)), "mean_auc": report["mean_auc"],
        "auc": report["auc"], "headline_class": headline_class_of(row.config),
        "reading": ({"policy": "ignore", "frontal_only": True, **(public or {})}
                    if fmt in ("chexpert", "mimic", "padchest", "rsna") else None),
        "overlap": {k: v for k, v in overlap.items() if k != "shared_paths"}, "unseen": unseen,
        **trust_tables(val, preds, scored, n_boot=n_boot, seed=cfg.train.seed, **(thresholds or {})),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    preds.write(out_dir / EXTERNAL_PREDICTIONS)  # formulas in a manifest's cells are neutralised
    write_json(out_dir / METRICS, out)  # written last: its presence marks a finished evaluation
    return out


def cross_dataset(reg: Registry, run: str) -> list[dict]:
    """The run on every collection it was scored on, in the manner of Zech et al. (PLoS Medicine 2018):
    one row per (class, collection) for the classes labelled in at least two of them (its own test split
    and each external evaluation), with the AUC, its patient-bootstrap interval and the images scored."""
    folder = reg.folder(run)
    internal = folder.read_metrics().get("test", {})
    cols = [("own test split", {r["class"]: r for r in internal.get("auc", [])}, internal.get("images"), None)]
    for name in folder.externals():
        e = folder.read_external(name)
        cols.append((name, {r["class"]: r for r in e.get("auc", []) if r.get("labelled")}, e.get("images"),
                     e.get("format")))
    order = [r["class"] for r in internal.get("auc", []) if r["class"] != "mean"]
    shared = [c for c in order if sum(c in col and col[c].get("auc") is not None for _, col, _, _ in cols) >= 2]
    return [{"class": c, "collection": name, "format": fmt, "images": n, "auc": col[c].get("auc"),
             "low": col[c].get("low"), "high": col[c].get("high")}
            for c in shared for name, col, n, fmt in cols if c in col]
