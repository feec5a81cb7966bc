"""Two runs on the same images: the difference of their AUCs with a paired patient bootstrap
interval and DeLong's test (engine.stats). Refuses, saying why, when the image sets differ, unless asked
to compare on the images both runs scored (`images="common"`, said in the result)."""
from __future__ import annotations

import math

import numpy as np

from ..config import LATER_DATA_FIELDS, DataConfig
from ..metrics import mean_auc, per_class_auc
from ..stats import delong_test, hanley_mcneil_variance, images_needed, p_floor, paired_bootstrap, verdict
from ..runs.details import headline_class_of
from ..runs.predictions import Predictions, read
from ..runs.states import RunError
from ..runs.store import Registry


class ComparisonError(RunError):
    """The two runs cannot be compared on the same images."""


# The settings a comparison reports when the two runs differ in them: (label, section, field). Settings
# that only change how a run is computed or kept (workers, device, bootstrap, checkpoints) are left out.
SETTINGS = (
    ("architecture", "model", "arch"), ("init", "model", "init"), ("epochs", "train", "epochs"),
    ("image size", "data", "image_size"), ("split seed", "data", "split_seed"), ("training seed", "train", "seed"),
    ("task", "data", "task"), ("NIH root", "data", "nih_root"), ("COVID-19 root", "data", "covid_root"),
    ("manifest", "data", "manifest"), ("manifest format", "data", "manifest_format"),
    ("uncertain labels", "data", "uncertain"),
    ("images per split", "data", "max_images_per_split"), ("training fraction", "data", "train_fraction"),
    ("held-out origin", "data", "holdout_source"), ("validation fraction", "data", "val_fraction"),
    ("learning rate", "optim", "lr"), ("weight decay", "optim", "weight_decay"), ("batch size", "train", "batch_size"),
    ("augmentation", "train", "augment"), ("oversampling", "train", "oversample"),
)
SEEDS = ("split seed", "training seed")  # differ between repeats by design: they add spread, not a confound


def _shown(field: str, value):
    if field == "init" and isinstance(value, str) and value.endswith(".pt"):  # a transfer: the parent run's name
        return f"run {value.replace(chr(92), '/').rstrip('/').split('/')[-2]}"
    return value


def setting_differences(cfg_a: dict, cfg_b: dict) -> list[dict]:
    """Every setting of SETTINGS in which two runs' recorded configs differ: {setting, a, b}."""
    out = []
    later = {f: getattr(DataConfig(), f) for f in LATER_DATA_FIELDS}  # a record made before the field: its default
    for label, section, field in SETTINGS:
        va, vb = (cfg.get(section, {}).get(field, later.get(field) if section == "data" else None)
                  for cfg in (cfg_a, cfg_b))
        if _shown(field, va) != _shown(field, vb):
            out.append({"setting": label, "a": _shown(field, va), "b": _shown(field, vb)})
    return out


def design_text(diffs: list[dict]) -> str:
    """What the comparison can answer: one setting differing isolates it; several are confounded."""
    real = [d for d in diffs if d["setting"] not in SEEDS]
    listed = "; ".join(f"{d['setting']} {d['a']} vs {d['b']}" for d in diffs)
    if not real:
        return ("same settings" + (f" but the seeds ({listed}): a repeat" if diffs else ": the same recipe twice"))
    if len(real) == 1:
        return f"differs in {listed}: the difference measures the {real[0]['setting']}"
    return (f"differs in {listed}: confounded, the AUC difference cannot be put on any one of "
            f"{', '.join(d['setting'] for d in real)}")


def _predictions(reg: Registry, run: str, split: str) -> Predictions:
    reg.require(run)
    path = reg.folder(run).predictions(split)
    if not path.is_file():
        raise ComparisonError(f"run {run!r} has no {path.name} (not finished or not evaluated on {split}: "
                              f"python -m engine evaluate {run} --split {split})")
    return read(path)


IMAGE_SETS = ("same", "common")
MIN_COMMON = 20  # fewer images in common than this: no comparison on them


def _key(p: Predictions) -> list[tuple]:
    return list(zip(p.column("dataset"), p.images))


def _align(a: Predictions, b: Predictions, run_a: str, run_b: str, split: str,
           images: str = "same") -> tuple[Predictions, Predictions, str | None]:
    """Both tables on the same images, in the same order, and a note saying which images when they
    are the common part of two different sets."""
    ka, kb = set(_key(a)), set(_key(b))
    note = None
    if ka != kb:
        common = ka & kb
        if images != "common":
            raise ComparisonError(
                f"the runs were scored on different images: {run_a} has {len(ka)} {split} images, {run_b} has "
                f"{len(kb)}, {len(common)} in common. A paired comparison needs the same test set: the same task, "
                "data roots, split seed and image cap" + (" (or compare on the images in common: --common)"
                                                          if len(common) >= MIN_COMMON else ""))
        if len(common) < MIN_COMMON:
            raise ComparisonError(f"the runs were scored on different images with {len(common)} {split} images in "
                                  f"common ({run_a} {len(ka)}, {run_b} {len(kb)}): fewer than {MIN_COMMON}, too few "
                                  "to compare")
        a, b = (p.rows(np.array([k in common for k in _key(p)], bool)) for p in (a, b))
        note = (f"on the {len(common)} {split} images both runs scored ({run_a} was scored on {len(ka)}, "
                f"{run_b} on {len(kb)})")
    return tuple(p.rows(sorted(range(len(p)), key=_key(p).__getitem__)) for p in (a, b)) + (note,)


def compare_runs(reg: Registry, run_a: str, run_b: str, cls: str | None = None, split: str = "test",
                 n_boot: int = 2000, seed: int = 0, images: str = "same") -> dict:
    """AUC(a) - AUC(b) for one class (default: run a's headline class) or "mean" over their shared
    classes: paired bootstrap over patients and, for one class, DeLong's test. images="common": when
    the runs were scored on different image sets, compare them on the images both scored."""
    if images not in IMAGE_SETS:
        raise ValueError(f"images must be one of {', '.join(IMAGE_SETS)}, got {images!r}")
    a, b, note = _align(_predictions(reg, run_a, split), _predictions(reg, run_b, split), run_a, run_b, split, images)
    shared = [c for c in a.classes if b.has(c)]
    cls = cls or headline_class_of(reg.require(run_a).config)
    if cls != "mean" and cls not in shared:
        raise ComparisonError(f"class {cls!r} is not scored by both runs; shared classes: {', '.join(shared)} (or mean)")
    classes = shared if cls == "mean" else [cls]
    (ta, pa), (tb, pb) = a.columns(classes), b.columns(classes)
    if not np.array_equal(np.nan_to_num(ta, nan=-1), np.nan_to_num(tb, nan=-1)):
        raise ComparisonError("the runs label the same images differently; compare runs of the same task")
    patients = a.clusters
    boot = paired_bootstrap(ta, pa, pb, patients, n=n_boot, seed=seed)
    out = {"run_a": run_a, "run_b": run_b, "class": cls, "split": split, "images": int(len(a)),
           "patients": int(len(np.unique(patients))), "bootstrap": n_boot}
    if cls == "mean":
        out.update(auc_a=mean_auc(per_class_auc(ta, pa)), auc_b=mean_auc(per_class_auc(ta, pb)),
                   diff=boot["mean_diff"], low=boot["mean_low"], high=boot["mean_high"], p=boot["mean_p"],
                   test="paired patient bootstrap (DeLong applies to one ROC curve; pass --class)")
    else:
        known = ~np.isnan(ta[:, 0])
        y = ta[known, 0]
        if not (0 < y.sum() < len(y)):
            raise ComparisonError(f"class {cls!r} has no positives or no negatives in these images")
        d = delong_test(y > 0.5, pa[known, 0], pb[known, 0], clusters=patients[known])
        out.update(auc_a=d["auc_a"], auc_b=d["auc_b"], diff=d["diff"], low=float(boot["low"][0]),
                   high=float(boot["high"][0]), p=d["p"], bootstrap_p=float(boot["p"][0]),
                   delong={k: d[k] for k in ("diff", "se", "low", "high", "z", "p", "clustered")},
                   test=("DeLong's test clustered by patient (Obuchowski 1997)" if d["clustered"] else "DeLong's test")
                   + "; interval: paired patient bootstrap")
        out["positives"], out["negatives"] = int(y.sum()), int(len(y) - y.sum())
        va, vb = hanley_mcneil_variance(d["auc_a"], out["positives"], out["negatives"]), \
            hanley_mcneil_variance(d["auc_b"], out["positives"], out["negatives"])
        # the observed correlation of the two AUCs, from DeLong's covariance (var(d) = va + vb - 2 r sqrt(va vb))
        r = (va + vb - d["se"] ** 2) / (2 * math.sqrt(va * vb)) if va > 0 and vb > 0 else 0.0
        out["needed"] = images_needed(d["auc_a"], d["auc_b"], out["positives"], out["negatives"], r)
    if note:
        out["images_note"] = note
        out["test"] += f"; {note}"
    out["p_floor"] = p_floor(n_boot) if cls == "mean" else None  # a bootstrap p cannot go below 1/(B+1)
    out["verdict"] = verdict(out["diff"], out["low"], out["high"], out["p"], floor=out["p_floor"])
    out["differences"] = setting_differences(reg.require(run_a).config, reg.require(run_b).config)
    out["design"] = design_text(out["differences"])
    if out.get("needed") and out["p"] is not None and out["p"] >= 0.05:
        out["verdict"] += f"; would need {out['needed']['text']}"
    return out
