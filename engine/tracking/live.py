"""Trackers fed while a run trains: one callback per tracker (the trainer's Callback hooks, duck-typed),
each guarded so that a tracker that fails is said once and left out, and the run goes on."""
from __future__ import annotations

import logging

from . import clear_failures, make_tracker, mark_failed, read
from .content import RunInfo, final_content

log = logging.getLogger("engine.tracking")


class TrackerCallback:
    """Feeds one tracker from the trainer's callbacks. Any exception inside the tracker (its import,
    a server down, a full disk) is logged once, recorded in the run's tracking.json, and the tracker
    gets nothing more; training never sees it."""

    def __init__(self, registry, run: str, target: str):
        self.registry, self.run, self.target = registry, run, target
        self.folder = registry.folder(run)
        self.tracker = None
        self.dead = False

    def _guard(self, what: str, fn) -> None:
        if self.dead:
            return
        try:
            fn()
        except Exception as exc:
            self.dead = True
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
            log.warning("run %s: tracker %s failed at %s (%s); the run goes on without it", self.run, self.target,
                        what, reason)
            mark_failed(self.folder, self.target, f"failed at {what}: {reason}")
            try:
                if self.tracker is not None:
                    self.tracker.close()
            except Exception:
                pass

    def on_start(self, info: dict) -> None:
        def begin():
            row = self.registry.require(self.run)
            self.tracker = make_tracker(self.target, self.run)
            self.tracker.begin(RunInfo.of(row, info.get("data_fingerprint"), live=True))
            log.info("run %s: logging to %s", self.run, self.tracker.where)
        self._guard("the start", begin)

    def on_steps(self, rows) -> None:
        if rows:
            self._guard("the step losses", lambda: self.tracker.steps(rows))

    def on_epoch(self, record: dict) -> None:
        self._guard(f"epoch {record.get('epoch')}", lambda: self.tracker.epoch(record))

    def end(self, status: str, final) -> None:
        def finish():
            self.tracker.finish(status, final)
            self.tracker.close()
        self._guard("the end", finish)


class Trackers:
    """Every tracker of a run as one callback: the end's content (CAMs, card, figures) is made once."""

    def __init__(self, items: list[TrackerCallback]):
        self.items = items

    @classmethod
    def of_run(cls, registry, run: str) -> "Trackers | None":
        """The run's trackers from its tracking.json, or None when it logs nowhere."""
        folder = registry.folder(run)
        targets = read(folder).get("targets", [])
        if not targets:
            return None
        clear_failures(folder)
        return cls([TrackerCallback(registry, run, t) for t in targets])

    def on_start(self, info):
        for t in self.items:
            t.on_start(info)

    def on_steps(self, rows):
        for t in self.items:
            t.on_steps(rows)

    def on_epoch(self, record):
        for t in self.items:
            t.on_epoch(record)

    def on_end(self, status, summary):
        alive = [t for t in self.items if not t.dead]
        final = None
        if alive and status == "succeeded":
            try:
                final = final_content(alive[0].registry, alive[0].run)
            except Exception as exc:
                log.warning("run %s: the trackers get no final content (%s)", alive[0].run, str(exc)[:300])
        for t in alive:
            t.end(status, final)

    def on_exception(self, exc):
        for t in self.items:
            if not t.dead:
                t.end("failed", None)
