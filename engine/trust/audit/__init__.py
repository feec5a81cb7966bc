"""The shortcut audit: is a run reading the disease, or the source of the image?

COVID-19 classifiers trained on positives from one source and negatives from another learn the
source (scanner, text markers, panel letters, borders) and fail in a new hospital (DeGrave, Janizek
and Lee, Nature Machine Intelligence 2021). The audit gathers three kinds of evidence and says in
plain words what they show; it never reduces them to one score.

1. Source predictability. A cross-validated linear probe (standardised features, their first 64
   principal components, L2 logistic regression, 5 folds grouped by patient) predicts each image's source from the run's pooled
   features: ChestX-ray14 vs the COVID-19 collection, and within the collection its origin (the web
   host of the `url` column: radiopaedia.org, sirm.org, a journal; origins with fewer than
   `MIN_SOURCE` images in the sample are pooled as "other"). Source AUC near 1 means the features
   carry the source. That alone is no fault; it becomes one when the source also gives the label
   away, measured as the AUC of the source's own positive rate as a score for the label ("label
   from source"). The same probe on 32x32 raw pixels says how visible the source is without any model.
2. Where the model looks. For each class, the run's `top_k` most confident test images; on each,
   the class's CAM (M_c = sum_k w_ck f_k, positive part, upsampled bilinearly to the input) is
   split into mass inside the **border band** (the outer 10 % of each side, 36 % of the area,
   where markers, text and panel letters sit) and mass **outside the central lung field** (outside
   the box x 10-90 %, y 10-85 % of the image, 40 % of the area). Shares are compared between true
   and false positives. A feature grid under 3x3 (a 64-px ResNet/DenseNet has 2x2) cannot place
   anything, and is reported as too coarse instead of scored.
3. Internal vs external. The drop from the internal test AUC to each external evaluation of the run
   (engine.evaluation.external), with the external interval.

A finding is raised when: the border share of true positives' maps is at least `BORDER_FLAG` (0.5,
against 0.36 for a map spread evenly); the source probe's AUC is at least 0.9 while the label from
source is at least 0.8; or an external AUC is at least 0.1 below the internal one with its whole
interval below it. Small samples are said to be small.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable

from ...config import ExperimentConfig
from ...data.roots import resolve_root
from ...runs.details import headline_class
from ...runs.folder import AUDIT, write_json
from ...runs.predictions import read_if_present
from .maps import cam_evidence, fixed_patch, loaded_gray, patch_windows  # noqa: F401
from .model import forward  # noqa: F401
from .probe import label_from_source, probe_auc, source_evidence  # noqa: F401
from .rules import (BORDER, BORDER_FLAG, CORNER_FLAG, DROP_FLAG, LABEL_FROM_SOURCE_FLAG, LUNG_BOX,  # noqa: F401
                    MARK_RULES, MIN_BAND_GRID, MIN_GRID, MIN_SOURCE, MIN_TP, OCCLUSION_FLAG, OUTSIDE_FLAG,
                    PATCH_CONSISTENCY_FLAG, PATCH_RATIO_FLAG, SOURCE_FLAG, blank, corner_focus, map_shares,
                    region_masks)
from .verdict import _change, _where, drop_evidence, verdict  # noqa: F401


def audit_run(reg, run: str, *, per_source: int = 120, top_k: int = 12, seed: int = 0,
              progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Run the audit on a finished run and write checkpoints/<run>/audit.json (see module doc)."""
    from ...data.tasks import build_datasets, open_collection
    from ...explain.inference import LoadedModel
    row = reg.require(run)
    folder = reg.folder(run)
    loaded = LoadedModel(folder.best_checkpoint())
    cfg = ExperimentConfig.from_dict(row.config)
    headline = headline_class(cfg.data.task)
    if headline == "mean":
        headline = loaded.class_names[0]
    datasets = build_datasets(cfg)
    pool = [(datasets[s], True) for s in ("train", "val", "test")]
    other_kind = {"covid": "nih", "pneumonia": "nih", "nih": "covid"}.get(cfg.data.task)
    notes = []
    if other_kind:
        root = resolve_root(other_kind, getattr(cfg.data, f"{other_kind}_root"), required=False)
        if root is None:
            notes.append(f"no {other_kind} root configured: the collection-level probe needs images of both collections")
        else:
            pool.append((open_collection(other_kind, root, cfg.data), False))
    sources = source_evidence(loaded, pool, headline, per_source=per_source, seed=seed, progress=progress)
    pred_path = folder.predictions("test")
    predictions = read_if_present(pred_path)
    classes = [headline] if cfg.data.task in ("covid", "combined15") else list(loaded.class_names)
    cams = cam_evidence(loaded, datasets["test"], predictions, classes, top_k, progress)
    drops = drop_evidence(folder, headline)
    out = {"run": run, "created": time.time(), "headline_class": headline, "notes": notes, "top_k": top_k,
           "sources": sources, "maps": cams, "external": drops, "verdict": verdict(sources, cams, drops),
           "definitions": {"border_band": BORDER, "lung_box": LUNG_BOX, "min_grid": MIN_GRID,
                           "flags": {"border": BORDER_FLAG, "outside_lung": OUTSIDE_FLAG, "source_auc": SOURCE_FLAG,
                                     "label_from_source": LABEL_FROM_SOURCE_FLAG, "drop": DROP_FLAG}}}
    write_json(folder.path / AUDIT, out)
    return out


def read_audit(folder) -> dict:
    p = folder.path / AUDIT
    try:
        return json.loads(p.read_text()) if p.is_file() else {}
    except ValueError:
        return {}
