"""What a tracker is given: one run's settings, history and end, the same whether it is fed live by the
trainer or replayed from the run's record by `runs export`.

- RunInfo: the run's name, settings (flattened to params), task, init, architecture, code version and
  data fingerprint (tags);
- the history: step rows (step, epoch, train loss, lr) and epoch records (losses, lr, validation AUCs),
  as the trainer's callbacks carry them and the registry keeps them;
- Final: the end of a succeeded run: metrics.json, the predictions per split, the model card, the
  figures (ROC per split, loss and validation AUC curves) as Vega-Lite specs, a few CAM overlays per
  class, and the ONNX export when one was made.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger("engine.tracking")
CAMS_PER_CLASS = 3


@dataclass
class RunInfo:
    name: str
    config: dict
    preset: str | None = None
    code_version: str | None = None
    data_fingerprint: str | None = None
    started: float | None = None   # seconds since the epoch: an export keeps the run's own times
    finished: float | None = None

    @classmethod
    def of(cls, row, data_fingerprint: str | None = None, live: bool = False) -> "RunInfo":
        return cls(row.name, row.config, row.preset, row.code_version, data_fingerprint or row.data_fingerprint,
                   None if live else row.started, None if live else row.finished)

    def params(self) -> dict[str, str]:
        """The settings flattened (`data.task`, `optim.lr`, ...), with the preset."""
        out = {f"{section}.{k}": str(v) for section, sub in sorted(self.config.items()) if isinstance(sub, dict)
               for k, v in sorted(sub.items())}
        if self.preset:
            out["preset"] = self.preset
        return out

    def tags(self) -> dict[str, str]:
        c = self.config
        return {"cxr.run": self.name, "cxr.task": str(c.get("data", {}).get("task", "")),
                "cxr.init": str(c.get("model", {}).get("init", "")), "cxr.arch": str(c.get("model", {}).get("arch", "")),
                "cxr.preset": self.preset or "", "cxr.code_version": self.code_version or "unknown",
                "cxr.data_fingerprint": self.data_fingerprint or "unknown"}


def finite(x) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def epoch_scalars(record: dict) -> dict[str, float]:
    """An epoch record's numbers under the names both trackers use."""
    out = {"train_loss_epoch": finite(record.get("train_loss")), "val_loss": finite(record.get("val_loss")),
           "lr_epoch": finite(record.get("lr")), "val_auc_mean": finite(record.get("val_auc_mean"))}
    for cls, auc in (record.get("val_auc") or {}).items():
        out[f"val_auc/{cls}"] = finite(auc)
    return {k: v for k, v in out.items() if v is not None}


def final_scalars(metrics: dict) -> dict[str, float]:
    """metrics.json's AUCs of the best checkpoint: `test_auc_mean`, `test_auc/<class>` (and their 95 %
    bounds), the same for val as `best_val_...` (`val_auc_mean` is the per-epoch curve)."""
    out: dict[str, float] = {}
    for part in ("val", "test"):
        block = metrics.get(part) or {}
        split = "best_val" if part == "val" else part
        if finite(block.get("mean_auc")) is not None:
            out[f"{split}_auc_mean"] = finite(block["mean_auc"])
        if finite(block.get("loss")) is not None:
            out[f"{split}_loss_final"] = finite(block["loss"])
        for r in block.get("auc") or []:
            if r.get("class") == "mean" or finite(r.get("auc")) is None:
                continue
            out[f"{split}_auc/{r['class']}"] = finite(r["auc"])
            for bound in ("low", "high"):
                if finite(r.get(bound)) is not None:
                    out[f"{split}_auc_{bound}/{r['class']}"] = finite(r[bound])
    return out


@dataclass
class Final:
    """A succeeded run's end. Every part is optional: what could not be made is left out (and logged)."""
    metrics: dict = field(default_factory=dict)
    files: list[tuple[str, Path]] = field(default_factory=list)      # (artifact name, file)
    figures: dict[str, dict] = field(default_factory=dict)           # name -> Vega-Lite spec
    predictions: dict = field(default_factory=dict)                  # split -> Predictions
    cams: list[tuple[str, str, np.ndarray]] = field(default_factory=list)  # (class, image, RGB uint8)
    onnx: Path | None = None


def history(reg, name: str) -> tuple[list[tuple], list[dict]]:
    """The run's step rows (step, epoch, train loss, lr, time) and epoch records as the registry keeps them."""
    steps = [(int(r["step"]), int(r["epoch"]), float(r["train_loss"]), float(r["lr"]), r.get("time"))
             for r in reg.steps(name)]
    return steps, reg.epochs(name)


def _cams(folder, predictions, per_class: int) -> list[tuple[str, str, np.ndarray]]:
    from ..explain.gallery import gallery_maps, top_k
    from ..explain.inference import LoadedModel
    from ..explain.overlay import overlay_heatmap

    loaded = LoadedModel(folder.best_checkpoint())
    out = []
    for cls in loaded.class_names:
        if not predictions.has(cls):
            continue
        rows = top_k(predictions, cls, per_class)
        try:
            grays, maps = gallery_maps(loaded, rows, cls)
        except (OSError, ValueError) as exc:  # images moved or unreadable since training
            log.info("no CAM overlays of %s: %s", cls, exc)
            continue
        out += [(cls, str(img), overlay_heatmap(g, m)) for img, g, m in zip(rows["image"], grays, maps)]
    return out


def final_content(reg, name: str, *, cams_per_class: int = CAMS_PER_CLASS) -> Final:
    """The end of a succeeded run, read from its folder (and its registry record, for the card and curves)."""
    from ..runs.bundle import SPLITS, curve_figures, roc_figure
    from ..runs.card import write_card
    from ..runs.folder import METRICS
    from ..runs.predictions import read_if_present

    folder = reg.folder(name)
    final = Final(metrics=folder.read_metrics())
    if folder.metrics_path.is_file():
        final.files.append((METRICS, folder.metrics_path))
    for split in SPLITS:
        p = folder.predictions(split)
        if p.is_file():
            final.files.append((p.name, p))
            final.predictions[split] = read_if_present(p)
    parts = (("the model card", lambda: final.files.extend((p.name, p) for p in write_card(reg, name).values())),
             ("the ROC figures", lambda: final.figures.update(
                 {f"roc_{s}": spec for s, pr in final.predictions.items() if (spec := roc_figure(pr))})),
             ("the loss and AUC curves", lambda: final.figures.update(curve_figures(reg, name))),
             ("the CAM overlays", lambda: final.cams.extend(
                 _cams(folder, final.predictions["test"], cams_per_class) if "test" in final.predictions else [])))
    for what, make in parts:
        try:
            make()
        except Exception as exc:  # one missing part never costs the others
            log.warning("run %s: %s left out of the tracked content (%s)", name, what, str(exc)[:300])
    onnx = folder.export_dir / f"{name}.onnx"
    final.onnx = onnx if onnx.is_file() else None
    return final
