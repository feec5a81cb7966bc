"""Evaluate a recorded run again: its best checkpoint on val and/or test, written to its folder."""
from __future__ import annotations

import math

from ..config import ExperimentConfig
from ..runs.store import Registry


def load_run_model(folder):
    """(model on its device, config, checkpoint dict, device) of a run folder's best checkpoint."""
    import torch

    from ..devices import pick_device
    from ..models.build import build_model
    from ..models.checkpoint import load_checkpoint

    best = folder.best_checkpoint()
    ckpt = load_checkpoint(best)
    ckpt["file"] = best.name
    cfg = ExperimentConfig.from_dict(ckpt["config"])
    device = pick_device(cfg.train.device if cfg.train.device != "cuda" or torch.cuda.is_available() else "auto")
    model = build_model(cfg.model.arch, len(ckpt["class_names"]), "scratch")
    model.load_state_dict(ckpt["model"])
    model.to(device)
    return model, cfg, ckpt, device


def evaluate_run(reg: Registry, name: str, splits=("val", "test"), n_boot: int | None = None, progress=None) -> dict:
    """AUCs with bootstrap CIs per split; rewrites the predictions CSVs and merges metrics.json.
    progress(split, done, total) is called as batches finish."""
    from ..data.tasks import build_datasets
    from ..training.evaluation import evaluate_split

    reg.require(name)
    folder = reg.folder(name)
    model, cfg, ckpt, device = load_run_model(folder)
    datasets = build_datasets(cfg)
    out = {"run": name, "checkpoint": ckpt["file"], "best_epoch": ckpt.get("best_epoch")}
    for s in splits:
        bar = (lambda k, n, s=s: progress(s, k, n)) if progress else None
        out[s], frame = evaluate_split(model, datasets[s], cfg, device, s, n_boot, progress=bar)
        folder.write_predictions(s, frame)
    folder.write_metrics(out, merge=True)
    if "test" in out:
        auc = out["test"]["mean_auc"]
        reg.update(name, test_auc=float(auc) if auc is not None and math.isfinite(auc) else None)
    return out
