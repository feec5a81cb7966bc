"""The trainer's reporter: turns training callbacks into registry rows, owns the heartbeat and the
run's train.log. The training loop itself never touches the registry.

A registry that cannot be written while the run trains (a full disk, runs.sqlite deleted or damaged
under it) never stops the training: the run's files stay current, a lost row is written back, and
the end of the run is also kept in its folder (outcome.json), from which `liveness.observe` and
`rebuild_registry` take it when the registry could not record it.
"""
from __future__ import annotations

import logging
import math
import os
import sqlite3
import threading
import time

from .folder import OUTCOME, RunDir
from .recovery import restore_row
from .store import Registry
from .states import RunError

HEARTBEAT_S = 5.0
FINAL_TRIES = 5
log = logging.getLogger("engine.training")
REGISTRY_ERRORS = (sqlite3.Error, RunError, OSError)


class Heartbeat(threading.Thread):
    """Writes the run's heartbeat every few seconds while its trainer lives."""

    def __init__(self, reporter: "Reporter", every: float = HEARTBEAT_S):
        super().__init__(daemon=True, name=f"heartbeat-{reporter.run}")
        self.reporter, self.every = reporter, every
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.wait(self.every):
            self.reporter.update("the heartbeat", heartbeat=time.time())


class Reporter:
    """Records one run's life in the registry (rank 0 of its trainer). It implements the hooks of
    engine.training.callbacks.Callback (duck-typed, so runs/ needs nothing of training/ to load)."""

    def __init__(self, registry: Registry, run: str):
        self.registry, self.run = registry, run
        self.folder: RunDir = registry.folder(run)
        self.row = registry.require(run).as_dict()  # what this trainer knows of its row, to write back if lost
        self.trouble: str | None = None  # why the registry cannot be written now (said once, in the logs)
        self.heartbeat: Heartbeat | None = None
        self._lock = threading.Lock()
        self._log_handler: logging.Handler | None = None

    # -- registry writes that must not stop the training ------------------------------------------
    def record(self, what: str, write) -> bool:
        """Run one registry write; on failure write back a lost row and retry once, else say why once
        and go on training. True if it was written."""
        with self._lock:
            for attempt in (0, 1):
                try:
                    write()
                except REGISTRY_ERRORS as exc:
                    if attempt == 0 and self._restore_row():
                        continue
                    if self.trouble is None:
                        log.warning("run %s: could not write %s to the registry (%s); training goes on, and its "
                                    "checkpoints and train.log in %s stay current", self.run, what,
                                    _short(exc), self.folder.path)
                    self.trouble = _short(exc)
                    return False
                if self.trouble is not None:
                    log.info("run %s: the registry can be written again", self.run)
                    self.trouble = None
                return True
        return False

    def update(self, what: str, **fields) -> bool:
        self.row.update(fields)
        return self.record(what, lambda: self.registry.update(self.run, **fields))

    def _restore_row(self) -> bool:
        try:
            if restore_row(self.registry, {**self.row, "status": "running"}):
                log.warning("run %s: its row had vanished from the registry %s (deleted or replaced while the run "
                            "trained); it was written again. Other runs' folders can be restored with `python -m "
                            "engine runs rebuild --missing`", self.run, self.registry.db_path)
                return True
        except REGISTRY_ERRORS:
            pass
        return False

    # -- callbacks --------------------------------------------------------------------------------
    def on_start(self, info: dict) -> None:
        self._open_log()
        self.record("the resume point", lambda: self.registry.truncate_after(self.run, info["epoch"], info["step"]))
        now = time.time()
        self.update("the start", pid=os.getpid(), started=now, heartbeat=now, finished=None, error=None,
                    device=info["device"], data_fingerprint=info["data_fingerprint"], epochs_done=info["epoch"],
                    step=info["step"])
        if self.heartbeat is None:
            self.heartbeat = Heartbeat(self)
            self.heartbeat.start()

    def on_steps(self, rows) -> None:
        if rows:
            self.record("the step losses", lambda: self.registry.log_steps(self.run, rows))
            self.update("the step", step=rows[-1][0])

    def on_progress(self, progress: dict) -> None:
        self.update("the progress", progress=progress)

    def on_epoch(self, record: dict) -> None:
        self.record(f"epoch {record['epoch']}", lambda: self.registry.log_epoch(
            self.run, record["epoch"], train_loss=record["train_loss"], val_loss=record["val_loss"], lr=record["lr"],
            val_auc_mean=record["val_auc_mean"], val_auc=record["val_auc"], seconds=record["seconds"],
            skipped_images=record["skipped_images"]))
        self.update(f"epoch {record['epoch']}", epochs_done=record["epoch"], best_epoch=record["best_epoch"],
                    best_val_auc=record["best_val_auc"])

    def on_end(self, status: str, summary: dict) -> None:
        fields = {"finished": time.time(), "pid": None, "progress": None}
        if status == "succeeded":
            fields["test_auc"] = _finite(summary.get("test", {}).get("mean_auc"))
        else:
            fields["error"] = summary.get("reason", status)
        self._end(status, fields)

    def on_exception(self, exc: BaseException) -> None:
        """Record a trainer that raised: failed with the reason (the traceback stays in process.log)."""
        status = "cancelled" if isinstance(exc, KeyboardInterrupt) else "failed"
        msg = f"{exc.__class__.__name__}: {exc}"
        log.error("run %s %s: %s", self.run, status, msg)
        self._end(status, {"finished": time.time(), "pid": None, "progress": None, "error": msg[:2000]},
                  only_from=("running",))

    def _end(self, status: str, fields: dict, only_from=None) -> None:
        """The run's end: in its folder first (outcome.json, which survives a registry that cannot be
        written), then in the registry, retried a few times (a full disk may free up as the failed
        checkpoint's temporary file is removed)."""
        try:
            self.folder.write_outcome({"status": status, "started": self.row.get("started"),
                                       **{k: fields.get(k) for k in ("finished", "error", "test_auc")}})
        except OSError as exc:
            log.error("run %s: could not write %s (%s)", self.run, self.folder.path / OUTCOME, exc)
        for attempt in range(FINAL_TRIES):
            if self.record(f"its end ({status})", lambda: self.registry.transition(
                    self.run, status, only_from=only_from, **fields)):
                return
            time.sleep(0.2 * (attempt + 1))
        log.error("run %s ended %s, but the registry could not record it (%s); outcome.json in its folder keeps "
                  "the end, and the next `runs list` or dashboard page applies it", self.run, status, self.trouble)

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


def _short(exc: BaseException) -> str:
    return f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]


def _finite(x):
    return float(x) if x is not None and math.isfinite(x) else None
