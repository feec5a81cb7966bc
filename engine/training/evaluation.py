"""Evaluation: probabilities for a dataset, the per-image predictions table, and AUCs with
patient-bootstrap intervals for a split (torchvision references' `evaluate`)."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..config import ExperimentConfig
from ..data.dataset import XrayDataset
from ..data.transforms import build_transform, normalise_batch
from ..metrics import auc_table, bootstrap_auc
from ..models.build import XrayNet
from ..runs.predictions import INFO_COLUMNS, OPTIONAL_INFO, Predictions, resampling_units
from .sampling import make_loader


def autocast(device, enabled: bool):
    """bf16 (or fp16) autocast on CUDA when enabled; a no-op context elsewhere."""
    if device.type == "cuda" and enabled:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast(device.type, enabled=False)


def to_device_batch(batch: dict, device, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(images normalised on the device, targets) of a loader batch of uint8 gray images."""
    x = normalise_batch(batch["images"].to(device, non_blocking=True))
    if channels_last and device.type == "cuda":
        x = x.to(memory_format=torch.channels_last)
    return x, batch["targets"].to(device, non_blocking=True)


@torch.no_grad()
def predict(model: XrayNet, ds: XrayDataset, *, batch_size: int, workers: int, device, amp: bool = True,
            channels_last: bool = False, progress: Callable[[int, int], None] | None = None) -> dict:
    """Probabilities for every readable image of ds: {"probs" (M, C), "targets" (M, C),
    "indices" (M,), "loss", "errors"}. Unreadable files are skipped and listed."""
    model.eval()
    probs, targets, indices, errors = [], [], [], []
    loss_sum, known = 0.0, 0
    loader = make_loader(ds, None, batch_size, workers, device)
    for k, batch in enumerate(loader):
        errors += batch["errors"]
        if batch["images"] is not None:
            x, y = to_device_batch(batch, device, channels_last)
            with autocast(device, amp):
                logits = model(x)
            m = ~torch.isnan(y)
            bce = F.binary_cross_entropy_with_logits(logits.float(), torch.nan_to_num(y), reduction="none")
            loss_sum += float((bce * m).sum())
            known += int(m.sum())
            probs.append(torch.sigmoid(logits.float()).cpu())
            targets.append(batch["targets"])
            indices.append(batch["indices"])
        if progress:
            progress(k + 1, len(loader))
    C = len(ds.class_names)

    def cat(xs, shape):
        return torch.cat(xs).numpy() if xs else np.zeros(shape, np.float32)

    return {"probs": cat(probs, (0, C)), "targets": cat(targets, (0, C)),
            "indices": cat(indices, (0,)).astype(int), "loss": loss_sum / max(known, 1), "errors": errors}


def predictions_of(ds: XrayDataset, pred: dict) -> Predictions:
    """The predictions table of predict()'s output: who each image is (sex, age, view and source too,
    for subgroup analyses, where the dataset records them), its targets and probabilities."""
    rows = ds.frame.iloc[pred["indices"]]
    info = rows[[c for c in INFO_COLUMNS + OPTIONAL_INFO if c in rows]]
    return Predictions.build(info, ds.class_names, pred["targets"], pred["probs"])


def evaluate_split(model, ds: XrayDataset, cfg: ExperimentConfig, device, split: str, n_boot: int | None = None,
                   progress: Callable[[int, int], None] | None = None) -> tuple[dict, Predictions]:
    """Predict a split: (AUCs with patient bootstrap CIs, the predictions table)."""
    t = cfg.train
    eval_ds = ds.with_transform(build_transform(False, cfg.data.image_size, normalise=False))
    pred = predict(model, eval_ds, batch_size=max(t.batch_size, 32), workers=cfg.data.num_workers, device=device,
                   amp=t.amp, channels_last=t.channels_last, progress=progress)
    groups = resampling_units(ds.frame.iloc[pred["indices"]])  # linked patients: one unit; else the patient
    boot = bootstrap_auc(pred["targets"], pred["probs"], groups, n=t.bootstrap if n_boot is None else n_boot,
                         seed=t.seed)
    report = {"split": split, "images": int(len(pred["indices"])), "skipped": len(pred["errors"]),
              "loss": pred["loss"], "mean_auc": boot["mean"], "auc": auc_table(boot, ds.class_names)}
    return report, predictions_of(ds, pred)
