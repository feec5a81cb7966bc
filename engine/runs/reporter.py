"""The trainer's reporter: turns training callbacks into registry rows, owns the heartbeat and the
run's train.log. The training loop itself never touches the registry."""
from __future__ import annotations

import logging
import math
import os
import threading
import time

from .folder import RunDir
from .registry import Registry

HEARTBEAT_S = 5.0


class Heartbeat(threading.Thread):
    """Writes the run's heartbeat every few seconds while its trainer lives."""

    def __init__(self, registry: Registry, run: str, every: float = HEARTBEAT_S):
        super().__init__(daemon=True, name=f"heartbeat-{run}")
        self.registry, self.run_name, self.every = registry, run, every
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.wait(self.every):
            try:
                self.registry.update(self.run_name, heartbeat=time.time())
            except Exception:  # the registry may be briefly locked; the next beat retries
                pass


class Reporter:
    """Records one run's life in the registry (rank 0 of its trainer). It implements the hooks of
    engine.training.callbacks.Callback (duck-typed, so runs/ needs nothing of training/ to load)."""

    def __init__(self, registry: Registry, run: str):
        self.registry, self.run = registry, run
        self.folder: RunDir = registry.folder(run)
        self.heartbeat: Heartbeat | None = None
        self._log_handler: logging.Handler | None = None

    def on_start(self, info: dict) -> None:
        self._open_log()
        self.registry.truncate_after(self.run, info["epoch"], info["step"])  # history past last.pt is redone
        now = time.time()
        self.registry.update(self.run, pid=os.getpid(), started=now, heartbeat=now, finished=None, error=None,
                             device=info["device"], data_fingerprint=info["data_fingerprint"],
                             epochs_done=info["epoch"], step=info["step"])
        if self.heartbeat is None:
            self.heartbeat = Heartbeat(self.registry, self.run)
            self.heartbeat.start()

    def on_steps(self, rows) -> None:
        if rows:
            self.registry.log_steps(self.run, rows)
            self.registry.update(self.run, step=rows[-1][0])

    def on_progress(self, progress: dict) -> None:
        self.registry.update(self.run, progress=progress)

    def on_epoch(self, record: dict) -> None:
        self.registry.log_epoch(self.run, record["epoch"], train_loss=record["train_loss"], val_loss=record["val_loss"],
                                lr=record["lr"], val_auc_mean=record["val_auc_mean"], val_auc=record["val_auc"],
                                seconds=record["seconds"], skipped_images=record["skipped_images"])
        self.registry.update(self.run, epochs_done=record["epoch"], best_epoch=record["best_epoch"],
                             best_val_auc=record["best_val_auc"])

    def on_end(self, status: str, summary: dict) -> None:
        fields = {"finished": time.time(), "pid": None, "progress": None}
        if status == "succeeded":
            fields["test_auc"] = _finite(summary.get("test", {}).get("mean_auc"))
        else:
            fields["error"] = summary.get("reason", status)
        self.registry.transition(self.run, status, **fields)

    def fail(self, exc: BaseException) -> None:
        """Record a trainer that raised: failed with the reason (the traceback stays in process.log)."""
        status = "cancelled" if isinstance(exc, KeyboardInterrupt) else "failed"
        msg = f"{exc.__class__.__name__}: {exc}"
        logging.getLogger("engine.training").error("run %s %s: %s", self.run, status, msg)
        self.registry.transition(self.run, status, only_from=("running",), finished=time.time(), pid=None,
                                 progress=None, error=msg[:2000])

    def close(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.stopped.set()
        if self._log_handler is not None:
            logging.getLogger("engine").removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None

    def _open_log(self) -> None:
        if self._log_handler is not None:
            return
        root = logging.getLogger("engine")
        self._log_handler = logging.FileHandler(self.folder.train_log)
        self._log_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        root.addHandler(self._log_handler)
        root.setLevel(logging.INFO)


def _finite(x):
    return float(x) if x is not None and math.isfinite(x) else None
