"""A run in TensorBoard: event files under DIR/<run>, written with torch's SummaryWriter.

Scalars: `train/loss` and `train/lr` by step; `epoch/train_loss`, `epoch/val_loss`, `epoch/val_auc_mean`
and `epoch/val_auc/<class>` by epoch; at the end `final/<split>_auc_mean` and `final/<split>_auc/<class>`.
PR curves per class and split (`pr_<split>/<class>`), the ROC figures as images (`roc/<split>`), a few
CAM overlays per class (`cam/<class>`), the settings as text and as hparams with the final metrics.

`tensorboard --logdir DIR` then shows every run logged there side by side.
"""
from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np

from .content import RunInfo, epoch_scalars, final_scalars

log = logging.getLogger("engine.tracking")
EVENTS = "events.out.tfevents.*"


def _writer(logdir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:  # torch's writer needs the tensorboard package
        raise RuntimeError("TensorBoard logging needs the tensorboard package: pip install -r requirements.txt") \
            from exc
    return SummaryWriter(log_dir=str(logdir), flush_secs=10)


class TensorBoardTracker:
    def __init__(self, logdir: str, run: str):
        self.root = Path(logdir)
        self.dir = self.root / run
        self.writer = None
        self.info: RunInfo | None = None
        self.counts = {"scalars": 0, "images": 0, "pr_curves": 0}

    @property
    def where(self) -> str:
        return str(self.dir)

    def begin(self, info: RunInfo, fresh: bool = False) -> None:
        """Open DIR/<run>. fresh=True (an export) first removes the event files an earlier export or
        live logging left there, so exporting twice shows each point once."""
        self.info = info
        if fresh and self.dir.is_dir():
            for p in self.dir.rglob(EVENTS):
                p.unlink()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.writer = _writer(self.dir)
        self.writer.add_text("settings", "```\n" + json.dumps(info.config, indent=1, sort_keys=True) + "\n```")
        self.writer.add_text("tags", "\n\n".join(f"**{k}**: {v}" for k, v in info.tags().items()))

    def _scalar(self, tag: str, value: float, step: int, walltime: float | None = None) -> None:
        self.writer.add_scalar(tag, value, step, walltime=walltime)
        self.counts["scalars"] += 1

    def steps(self, rows) -> None:
        for row in rows:  # (step, epoch, loss, lr[, time]): an export keeps when each step was taken
            step, loss, lr, when = row[0], row[2], row[3], row[4] if len(row) > 4 else None
            self._scalar("train/loss", loss, step, when)
            self._scalar("train/lr", lr, step, when)

    def epoch(self, record: dict) -> None:
        for k, v in epoch_scalars(record).items():
            self._scalar(f"epoch/{k}", v, int(record["epoch"]), record.get("time"))

    def _image(self, tag: str, rgb: np.ndarray, step: int = 0) -> None:
        self.writer.add_image(tag, np.ascontiguousarray(rgb), step, dataformats="HWC")
        self.counts["images"] += 1

    def finish(self, status: str, final) -> None:
        self.writer.add_text("status", status)
        if final is not None:
            self._final(final)
        self.writer.flush()

    def _final(self, final) -> None:
        from PIL import Image

        from ..figures import export

        scalars = final_scalars(final.metrics)
        for k, v in scalars.items():
            self._scalar(f"final/{k}", v, 0)
        for split, preds in final.predictions.items():
            for cls in preds.classes:
                known = preds.labelled(cls)
                t, p = preds.target(cls)[known], preds.prob(cls)[known]
                if len(t) and 0 < t.sum() < len(t):
                    self.writer.add_pr_curve(f"pr_{split}/{cls}", t.astype(int), p, 0)
                    self.counts["pr_curves"] += 1
        for name, spec in final.figures.items():
            png = Image.open(io.BytesIO(export(spec, "png", scale=1.0))).convert("RGB")
            self._image(f"figures/{name}", np.asarray(png))
        for k, (cls, _image, rgb) in enumerate(final.cams):
            self._image(f"cam/{cls}", rgb, k)
        hparams = {k: v for k, v in self.info.params().items()}
        metrics = {f"hparam/{k}": v for k, v in scalars.items() if "/" not in k or k.startswith(("val_auc/", "test_auc/"))}
        if metrics:  # the settings beside the final metrics, in TensorBoard's HParams tab
            self.writer.add_hparams(hparams, metrics, run_name=".")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def summary(self) -> dict:
        return {"tensorboard": str(self.dir), **self.counts}
