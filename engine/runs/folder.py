"""One run's folder under checkpoints/ and the one owner of its files (timm's CheckpointSaver):
their names, which checkpoint is best and which is last, and atomic writes.

    best.pt                the best epoch by validation mean AUC (what evaluation and CAMs use)
    best-candidate.pt      a new best while its epoch is being recorded (promoted or dropped)
    last.pt                where a resume continues (every epoch end, every few minutes, on cancel)
    metrics.json           val/test AUCs with intervals of the best checkpoint (strict JSON)
    predictions_<split>.csv  per-image targets and probabilities
    train.log              the trainer's log; process.log its raw output (tracebacks)
    outcome.json           how the run ended (status, error, test AUC), written by its trainer beside the
                           registry row, so the end survives a registry that could not be written
    external/<name>/       an external evaluation: predictions.csv and metrics.json (never the run's own files)
    audit.json             the shortcut audit; gpu.txt the GPU its worker was given; tracking.json where it
                           also logs (TensorBoard, MLflow); export/ its ONNX model and sidecar
"""
from __future__ import annotations

import json
import math
import os
import time
from collections import deque
from pathlib import Path

from .states import validate_name

BEST, LAST, CANDIDATE = "best.pt", "last.pt", "best-candidate.pt"
TRAINING_STATE = ("optimizer", "scheduler", "scaler")  # what only a resume needs: kept in last.pt alone
METRICS, TRAIN_LOG, PROCESS_LOG, OUTCOME = "metrics.json", "train.log", "process.log", "outcome.json"
CANCEL_REQUEST = "cancel-request.json"  # who asked a running trainer to stop (the signal cannot say)
EXTERNAL = "external"
EXTERNAL_PREDICTIONS = "predictions.csv"  # in external/<name>/
AUDIT = "audit.json"  # the shortcut audit (engine.trust.audit)
GPU_FILE = "gpu.txt"  # the GPU its worker was given (CUDA_VISIBLE_DEVICES; engine.runs.launch)
TRACKING = "tracking.json"  # where the run also logs: TensorBoard, MLflow (engine.tracking)
EXPORT = "export"  # RUN.onnx and its sidecar (engine.models.export)


def predictions_name(split: str) -> str:
    return f"predictions_{split}.csv"


class RunDir:
    """The files of one run; `path` is the folder (checkpoints/<run>)."""

    def __init__(self, path):
        self.path = Path(path)
        self.name = self.path.name

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def best(self) -> Path:
        return self.path / BEST

    @property
    def last(self) -> Path:
        return self.path / LAST

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def train_log(self) -> Path:
        return self.path / TRAIN_LOG

    @property
    def process_log(self) -> Path:
        return self.path / PROCESS_LOG

    def predictions(self, split: str) -> Path:
        return self.path / predictions_name(split)

    @property
    def audit_path(self) -> Path:
        return self.path / AUDIT

    @property
    def export_dir(self) -> Path:
        return self.path / EXPORT

    @property
    def gpu_file(self) -> Path:
        return self.path / GPU_FILE

    @property
    def tracking_path(self) -> Path:
        return self.path / TRACKING

    # -- external evaluations ------------------------------------------------------------------
    def external_dir(self, name: str) -> Path:
        return self.path / EXTERNAL / validate_name(name)

    def externals(self) -> list[str]:
        """Names of the finished external evaluations (those whose metrics.json was written)."""
        base = self.path / EXTERNAL
        return sorted(p.parent.name for p in base.glob(f"*/{METRICS}")) if base.is_dir() else []

    def read_external(self, name: str) -> dict:
        p = self.external_dir(name) / METRICS
        return json.loads(p.read_text()) if p.is_file() else {}

    # -- checkpoints ---------------------------------------------------------------------------
    def best_checkpoint(self) -> Path:
        """best.pt, else last.pt; FileNotFoundError when the run has neither yet."""
        for p in (self.best, self.last):
            if p.is_file():
                return p
        raise FileNotFoundError(f"run folder {self.path} has no checkpoint yet")

    def request_cancel(self, by: str) -> None:
        """Say who cancels, before the trainer is signalled: its end then reads "cancelled from <by>"."""
        write_json(self.path / CANCEL_REQUEST, {"by": by, "time": time.time()})

    def take_cancel_request(self) -> str | None:
        """Who asked this run to stop (and forget it); None when nobody wrote it (a bare signal)."""
        path = self.path / CANCEL_REQUEST
        try:
            by = json.loads(path.read_text()).get("by")
        except (OSError, ValueError, AttributeError):
            return None
        path.unlink(missing_ok=True)
        return by if isinstance(by, str) else None

    def has_checkpoint(self) -> bool:
        return self.best.is_file() or self.last.is_file()

    def load_last(self) -> dict | None:
        from ..models.checkpoint import load_checkpoint

        return load_checkpoint(self.last) if self.last.is_file() else None

    def save_last(self, checkpoint: dict) -> None:
        from ..models.checkpoint import save_checkpoint

        save_checkpoint(checkpoint, self.last)

    def save_best_candidate(self, checkpoint: dict) -> None:
        """A new best epoch: written first as a candidate, promoted by `settle_best` once the
        epoch is recorded and last.pt knows it (so best.pt never runs ahead of the history)."""
        from ..models.checkpoint import save_checkpoint

        # weights only: the optimizer state (twice the weights for Adam) lives in last.pt alone
        save_checkpoint({k: v for k, v in checkpoint.items() if k not in TRAINING_STATE}, self.path / CANDIDATE)

    def settle_best(self, best_epoch: int | None) -> None:
        """Promote the candidate if it is the epoch last.pt calls best; otherwise drop it."""
        from ..models.checkpoint import load_checkpoint

        cand = self.path / CANDIDATE
        if not cand.exists():
            return
        try:
            epoch = load_checkpoint(cand).get("epoch")
        except Exception:  # a torn candidate (killed mid-write) is simply dropped
            epoch = None
        if epoch is not None and best_epoch is not None and epoch == best_epoch:
            os.replace(cand, self.best)
        else:
            cand.unlink(missing_ok=True)

    def drop_last(self) -> int:
        """Remove last.pt when best.pt exists (the run is used through best.pt; only training it
        further needs the optimizer state); returns the bytes freed."""
        if not self.best.is_file() or not self.last.is_file():
            return 0
        freed = self.last.stat().st_size
        self.last.unlink()
        return freed

    def clean_temporaries(self) -> list[str]:
        """Remove half-written files a kill left behind (checkpoints are written to *.tmp, then
        renamed); called when a trainer starts, the only writer of the folder."""
        removed = []
        for p in self.path.glob("*.tmp"):
            p.unlink(missing_ok=True)
            removed.append(p.name)
        return removed

    def checkpoints(self) -> list[str]:
        return sorted(p.name for p in self.path.glob("*.pt"))

    # -- metrics, predictions, logs ------------------------------------------------------------
    def read_metrics(self) -> dict:
        return json.loads(self.metrics_path.read_text()) if self.metrics_path.is_file() else {}

    def write_metrics(self, metrics: dict, merge: bool = False) -> None:
        """Atomically write metrics.json as strict JSON (NaN and infinities become null)."""
        out = {**self.read_metrics(), **metrics} if merge else metrics
        write_json(self.metrics_path, out)

    def read_outcome(self) -> dict:
        """How the run's trainer said it ended ({} when it never did, or the file is unreadable)."""
        try:
            out = json.loads((self.path / OUTCOME).read_text())
        except (OSError, ValueError):
            return {}
        return out if isinstance(out, dict) else {}

    def write_outcome(self, outcome: dict) -> None:
        write_json(self.path / OUTCOME, outcome)

    def write_predictions(self, split: str, predictions) -> Path:
        """predictions: an engine.runs.predictions.Predictions (it writes itself: atomically, formulas neutralised)."""
        return predictions.write(self.predictions(split))

    def log_tail(self, lines: int = 30) -> str:
        """The end of train.log, else of process.log (a trainer that died at start-up)."""
        for p in (self.train_log, self.process_log):
            try:
                with open(p, errors="replace") as fh:
                    text = "".join(deque(fh, maxlen=lines))
            except OSError:
                continue
            if text:
                return text
        return ""


def check_out(out: Path, *, folder: bool, force: bool = False) -> None:
    """One rule for every --out a user names (bundle, export, card): an existing file there is never
    replaced silently. `folder`: the command writes into a folder, so a file there is refused;
    otherwise a file there is replaced only with `force`."""
    from .states import RunError

    if out.is_file() and (folder or not force):
        raise RunError(f"{out} exists and is a file: name " + ("a folder" if folder else
                       "another path, or pass --force to replace it") + " (nothing was written)")


def disk_bytes(path) -> int:
    """Bytes of the files under `path` (0 when it does not exist); links are not followed."""
    total = 0
    for base, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(base, f)).st_size
            except OSError:
                pass  # removed while we walked
    return total


def best_checkpoint(run_dir) -> Path:
    """The checkpoint a finished run is used through (best.pt, else last.pt)."""
    return RunDir(run_dir).best_checkpoint()


def strict(obj):
    """A copy of obj that json.dumps(allow_nan=False) accepts: NaN/inf -> None, numpy -> Python."""
    if isinstance(obj, dict):
        return {str(k): strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(strict(obj), indent=1, allow_nan=False, default=str))
    os.replace(tmp, path)
