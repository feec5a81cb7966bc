"""Who is still alive: a run the registry calls running whose trainer is gone becomes interrupted,
or takes the end its trainer wrote in outcome.json when it could not write the registry.

Readers call `observe(reg)` before they show or act on statuses (the CLI's `runs list/show`, the
scheduler, resume, cancel, wait, the dashboard's pages); it returns the runs as they stand."""
from __future__ import annotations

import os
import time

from .launch import keeper_lock, keeper_poll_s, start_queued
from .states import FINAL, RunError, RunStatus
from .store import Registry

__all__ = ["HEARTBEAT_STALE_S", "STARTING_GRACE_S", "keep_queue", "observe", "pid_alive"]
HEARTBEAT_STALE_S = 120.0  # a running trainer beats every few seconds; this much silence means it is gone
STARTING_GRACE_S = 60.0  # a claimed run whose process has not written its pid yet


def pid_alive(pid) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) is not alive
        with open(f"/proc/{int(pid)}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def observe(reg: Registry, stale_after: float = HEARTBEAT_STALE_S, schedule_next: bool = True) -> list[dict]:
    """Settle the runs whose trainer is gone (process vanished, or heartbeat older than stale_after);
    when one was settled and runs are queued, start the next ones (schedule_next); then return every
    run's row as it now stands (newest first). A read-only folder is only read."""
    if reg.read_only:
        return reg.list()
    now, settled = time.time(), False
    rows = reg.list()
    for r in rows:
        if r.status != "running":
            continue
        if not r.pid and now - (r.heartbeat or 0) < STARTING_GRACE_S:
            continue  # claimed by the scheduler, process starting
        beat = r.heartbeat or r.started or r.created
        # a trainer on a Ray node has a pid of that node: its heartbeat (relayed by the head) says it
        # lives, and the head interrupts a run whose task was lost (engine.runs.cluster)
        alive = (now - beat <= stale_after) if (r.placement or {}).get("executor") == "ray" else pid_alive(r.pid)
        if alive and now - beat <= stale_after:
            continue
        settled = True
        if not alive and _apply_outcome(reg, r):
            continue
        why = r.error or ("trainer process vanished" if not alive else "heartbeat stopped")
        reg.transition(r.name, "interrupted", only_from=("running",), pid=None, error=why)
    if settled and schedule_next and any(r.status == RunStatus.QUEUED for r in rows):
        # a trainer that died (kill -9, a lost machine) could not hand its slot on: the reader that
        # finds it does, so the queue moves without waiting for a new submission
        start_queued(reg)
    return reg.list()


def _apply_outcome(reg: Registry, row: dict) -> bool:
    """A dead trainer's own account of its end (outcome.json of this start of the run), if any."""
    try:
        out = reg.folder(row.name).read_outcome()
    except RunError:
        return False
    started = out.get("started")
    if out.get("status") not in FINAL + ("interrupted",) or started is None or row.started is None \
            or abs(float(started) - float(row.started)) > 1e-3:
        return False
    fields = {k: out.get(k) for k in ("finished", "error", "test_auc") if out.get(k) is not None}
    return reg.transition(row.name, out["status"], only_from=("running",), pid=None, progress=None, **fields)


def keep_queue(reg: Registry) -> str:
    """The queue keeper's loop (`python -m engine keeper`, started by engine.runs.launch.wake_keeper):
    while runs are queued, look every CXR_QUEUE_POLL_S seconds, settle trainers that died without a
    word and start what may start. One keeper per registry (a lock beside it); it ends when nothing
    is queued or the registry is gone. Returns why it ended."""
    try:
        with keeper_lock(reg, wait_s=2.0) as held:  # a look by keeper_free holds the lock for an instant
            return _watch(reg, keeper_poll_s() or 5.0) if held else "another keeper watches this registry"
    except OSError as exc:  # no lock file can be made, or the folder went away under the keeper
        return f"stopped ({exc})"


def _watch(reg: Registry, poll: float) -> str:
    while True:
        if not reg.db_path.is_file():
            return "the registry is gone"
        try:
            rows = observe(reg, schedule_next=False)
            if not any(r.status == RunStatus.QUEUED for r in rows):
                return "nothing queued"
            start_queued(reg)
        except RunError as exc:  # damaged or shadowed: the readers say it; the keeper only stops
            return str(exc)
        _reap()
        time.sleep(poll)


def _reap() -> None:
    """Collect the trainers this keeper started and that have ended (no zombies while it watches)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
