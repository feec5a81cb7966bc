"""What pages and commands show of a run, decided once: its details and its headline number."""
from __future__ import annotations

from ..constants import COVID_LABEL
from .record import RunRecord
from .store import Registry
from .states import ACTIVE, RunStatus


def headline_class(task: str) -> str:
    """The AUC a run is judged by: COVID-19 for the COVID-19 and 15-class tasks (the study's
    Table 2 and section 5.3), the mean over classes for ChestX-ray14 (Table 1)."""
    return COVID_LABEL if task in ("covid", "combined15") else "mean"  # pneumonia: the mean of its five classes


def headline_class_of(config: dict) -> str:
    """The headline class of a run's config (a dict as the registry keeps it)."""
    return headline_class(config.get("data", {}).get("task", "nih"))


def headline(config: dict, aucs: dict) -> tuple[str, float | None]:
    """(class, AUC) of the headline metric from a {class: auc} mapping of a split."""
    cls = headline_class_of(config)
    value = aucs.get(cls)
    if isinstance(value, dict):
        value = value.get("auc")
    return cls, value


def run_details(reg: Registry, name: str) -> dict:
    """The registry row plus per-epoch metrics, per-split AUCs by class, checkpoints and folder."""
    row = reg.require(name)
    folder = reg.folder(name)
    metrics = folder.read_metrics()
    aucs = {s: {r["class"]: r for r in metrics[s]["auc"]} for s in ("val", "test") if s in metrics}
    return {**row.as_dict(), "epochs": reg.epochs(name), "auc": aucs, "checkpoints": folder.checkpoints(),
            "folder": str(folder.path), "headline": headline(row.config, aucs.get("test", {}))}


def fmt_eta(s) -> str:
    if s is None:
        return ""
    s = int(s)
    return f"{s // 3600}h {s % 3600 // 60}m" if s >= 3600 else f"{s // 60}m {s % 60}s"


def progress_text(prog: dict) -> tuple[float, str]:
    """(fraction of the run, text) of a trainer's progress: training moves the bar; validation holds it
    at the epoch's end; the final validation and test hold it full (never back to an epoch's start)."""
    phase, step, steps = prog["phase"], prog["step"], prog["steps"]
    epochs = max(prog["epochs"], 1)
    where = f"step {step}/{steps}" if steps else "starting"
    if phase.startswith("final"):
        return 1.0, f"{phase} (training done): {where}"
    if phase == "train":
        frac = ((prog["epoch"] - 1) + step / max(steps, 1)) / epochs
    else:  # validation of an epoch whose training has finished
        frac = prog["epoch"] / epochs
    return frac, f"{phase}: epoch {prog['epoch']}/{prog['epochs']}, {where}"


def duration_s(row: RunRecord, now: float) -> float | None:
    if not row.started:
        return None
    return (row.finished or now) - row.started


def parent_state(reg: Registry, row: RunRecord) -> tuple[str, str] | None:
    """For a queued run that waits for a parent: ("waiting", why) while the parent is queued or
    running, ("blocked", why) when the parent ended without succeeding; None otherwise."""
    parent = row.depends_on
    if row.status != RunStatus.QUEUED or not parent:
        return None
    p = reg.get(parent)
    if p is None:
        return "blocked", f"its parent {parent} no longer exists"
    if p.status in ACTIVE:
        return "waiting", f"waits for its parent {parent} ({p.status})"
    if p.status == "succeeded":
        return None
    return "blocked", f"its parent {parent} is {p.status}" + (f" ({p.error})" if p.error else "")
