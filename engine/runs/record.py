"""A run as the registry records it: one typed, immutable value (as mlflow's RunInfo), read by the
engine and the dashboard through attributes, never by string keys."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class RunRecord:
    name: str
    preset: str | None
    config: dict               # the ExperimentConfig as a dict (ExperimentConfig.from_dict reads it)
    status: str                # engine.runs.states.STATUSES
    created: float             # seconds since the epoch, as every timestamp here
    started: float | None = None
    finished: float | None = None
    pid: int | None = None     # the trainer process while running
    heartbeat: float | None = None
    device: str | None = None
    code_version: str | None = None
    data_fingerprint: str | None = None
    error: str | None = None   # why it failed, was cancelled or interrupted
    epochs_done: int = 0
    step: int = 0              # global steps done
    best_epoch: int | None = None
    best_val_auc: float | None = None
    test_auc: float | None = None  # the headline test AUC (engine.runs.details)
    progress: dict | None = None   # phase, epoch/epochs, step/steps, ETAs (engine.training.callbacks)
    depends_on: str | None = None  # the parent run it waits for
    placement: dict | None = None  # where it ran: executor, host, Ray node id, GPUs (engine.runs.cluster)

    @classmethod
    def from_row(cls, row) -> "RunRecord":
        """From an sqlite3.Row (or a dict) of the `runs` table."""
        d = dict(row)
        d["config"] = json.loads(d["config"]) if d.get("config") else {}
        d["progress"] = json.loads(d["progress"]) if d.get("progress") else None
        d["placement"] = json.loads(d["placement"]) if d.get("placement") else None
        d["epochs_done"], d["step"] = d.get("epochs_done") or 0, d.get("step") or 0
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @property
    def task(self) -> str:
        return self.config.get("data", {}).get("task", "nih")

    @property
    def epochs(self) -> int | None:
        """The epochs it is set to train."""
        return self.config.get("train", {}).get("epochs")

    def as_dict(self) -> dict:
        """Plain data (for JSON output and tables)."""
        return asdict(self)
