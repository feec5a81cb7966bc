"""A finished ChestX-ray14 run at full size without training one: its predictions tables are written
by the engine's own writer from the real rows of a (linked) root's official test split and of its
validation split, with probabilities that follow the real labels (AUC about 0.8), and its
metrics.json is computed by the engine's bootstrap. CPU inference on 48k images is out of reach
here; everything after inference (pages, bootstraps, downloads) is the real code at full size.
"""
from __future__ import annotations

import json
import time

import numpy as np

from common import REPO  # noqa: F401  (puts the repo on sys.path)


def make_full_run(ck, nih_root, name: str = "full", seed: int = 0, n_boot: int = 200) -> dict:
    from engine.config import from_preset
    from engine.data.nih import NIHChestXray14
    from engine.metrics import auc_table, bootstrap_auc
    from engine.runs import Registry
    from engine.training.evaluation import predictions_of

    reg = Registry(ck)
    nih = NIHChestXray14(nih_root)
    cfg = from_preset("nih-densenet121-imagenet")
    cfg.data.nih_root = str(nih_root)
    reg.create(name, cfg.to_dict(), "nih-densenet121-imagenet")
    reg.transition(name, "running", "succeeded", started=time.time() - 3600, finished=time.time(), epochs_done=1,
                   best_epoch=1, best_val_auc=0.8, test_auc=0.8)
    folder = reg.folder(name)
    rng = np.random.default_rng(seed)
    metrics, sizes = {"best_epoch": 1}, {}
    for split in ("val", "test"):
        part = nih.split(split)
        y = np.nan_to_num(part.targets)
        probs = 1 / (1 + np.exp(-(1.6 * y - 2.0 + rng.normal(size=y.shape))))
        frame = predictions_of(part, {"indices": np.arange(len(part)), "targets": part.targets,
                                         "probs": probs.astype(np.float32)})
        folder.write_predictions(split, frame)
        boot = bootstrap_auc(part.targets, probs, part.frame["patient_id"].to_numpy(), n=n_boot, seed=seed)
        rows = auc_table(boot, part.class_names)
        metrics[split] = {"auc": rows, "mean_auc": rows[-1]["auc"], "images": len(part)}
        sizes[split] = len(part)
    (folder.path / "metrics.json").write_text(json.dumps(metrics))
    return sizes
