"""The life of a run: its states and the only changes allowed between them.

    queued -> running -> succeeded | failed | cancelled | interrupted
    cancelled | interrupted | failed -> queued        (resume; a failed run once its cause is fixed)
    succeeded -> queued                               (train further with more --epochs)
    queued -> cancelled                               (cancelled before it started)
    queued -> failed                                  (its trainer process could not be started)

A run is born queued (submitted), or running when the shell that submits it trains it at once
(`python -m engine train`: submitted and claimed in one step). Every status write goes through
`check`; anything else raises IllegalTransition.
"""
from __future__ import annotations

import re
from enum import StrEnum

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class RunStatus(StrEnum):
    """A run's status, spelled here only (mlflow's entities/run_status.py). Members are strings: they
    compare equal to, hash like and are stored as their values ("queued", ...)."""
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"

    @staticmethod
    def is_active(status) -> bool:
        """Queued or running: the run is not over (it holds or waits for a slot)."""
        return status in ACTIVE

    @staticmethod
    def is_terminated(status) -> bool:
        return status in ENDED


STATUSES = tuple(RunStatus)
ACTIVE = (RunStatus.QUEUED, RunStatus.RUNNING)   # queued or running: not over
ENDED = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.INTERRUPTED)
FINAL = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)
RESUMABLE = (RunStatus.CANCELLED, RunStatus.INTERRUPTED, RunStatus.FAILED)
BORN = ACTIVE

ALLOWED: dict[str, tuple[str, ...]] = {
    RunStatus.QUEUED: (RunStatus.RUNNING, RunStatus.CANCELLED, RunStatus.FAILED),
    RunStatus.RUNNING: (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.INTERRUPTED),
    RunStatus.CANCELLED: (RunStatus.QUEUED,),
    RunStatus.INTERRUPTED: (RunStatus.QUEUED,),
    RunStatus.FAILED: (RunStatus.QUEUED,),
    RunStatus.SUCCEEDED: (RunStatus.QUEUED,),
}


class RunError(ValueError):
    """A user-facing problem with a run (unknown name, wrong state, invalid name)."""


class IllegalTransition(RunError):
    """A status change the life of a run does not allow."""


# Files the registry keeps beside the run folders: runs.sqlite and SQLite's -wal, -shm and -journal,
# the copies `runs rebuild` moves aside (runs.sqlite.damaged-*); and .orphans/ (no name starts with a dot).
# A run folder under one of these names would take the file's place and lock every session out.
RESERVED_PREFIX = "runs.sqlite"
RESERVED_PART = ".damaged-"


def validate_name(name: str) -> str:
    """A run's name, checked: it is a folder under checkpoints/, so it can never escape it, nor take
    the place of the registry's own files."""
    if not isinstance(name, str) or not NAME_RE.match(name) or name in (".", ".."):
        raise RunError(f"invalid run name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
                       "starting with a letter or digit (no '/' or '..')")
    if name.lower().startswith(RESERVED_PREFIX) or RESERVED_PART in name.lower():
        raise RunError(f"invalid run name {name!r}: names starting with {RESERVED_PREFIX!r} or holding "
                       f"{RESERVED_PART!r} are the run registry's own files; pick another name")
    return name


DAMAGE_MESSAGES = ("not a database", "malformed", "file is encrypted", "disk I/O error", "no such table")


class RegistryDamaged(RunError):
    """runs.sqlite cannot be read: names the file and the way back (`runs rebuild`)."""

    def __init__(self, path, exc):
        self.path = path
        super().__init__(f"the run registry {path} is damaged ({exc}). The run folders beside it are intact: "
                         "`python -m engine runs rebuild` moves the damaged file aside and rebuilds the registry "
                         "from them")


class RegistryShadowed(RegistryDamaged):
    """A folder stands where SQLite keeps one of the registry's files (a run named so by an older version)."""

    def __init__(self, path, folders):
        self.path, self.folders = path, folders
        RunError.__init__(self, f"the run registry {path} cannot be opened: {', '.join(str(f) for f in folders)} "
                          "is a folder where SQLite keeps the registry's own file (a run named so by an older "
                          "version). The registry and every run are intact: `python -m engine runs rebuild` "
                          "moves that folder to .orphans/ and keeps every curve")


class RegistryReadOnly(RunError):
    """The checkpoints folder cannot be written: runs can be browsed, not started or changed."""

    def __init__(self, root, why: str):
        super().__init__(f"the checkpoints folder {root} is read-only ({why}): its runs can be browsed, but not "
                         "started, resumed, cancelled, deleted or evaluated into it. Make it writable, or point "
                         "$CXR_CHECKPOINTS (the sidebar's checkpoints folder) at a writable one")



def check(run: str, old: str | None, new: str) -> None:
    """Raise IllegalTransition unless `old -> new` is allowed (old None: a new run)."""
    if new not in STATUSES:
        raise IllegalTransition(f"invalid status {new!r}; allowed: {', '.join(STATUSES)}")
    allowed = BORN if old is None else ALLOWED.get(old, ())
    if new not in allowed:
        start = "a new run" if old is None else f"run {run!r} is {old}"
        raise IllegalTransition(f"{start}: it cannot become {new} (allowed: {', '.join(allowed) or 'nothing'})")
