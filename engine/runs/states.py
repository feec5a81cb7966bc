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

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted")
FINAL = ("succeeded", "failed", "cancelled")
RESUMABLE = ("cancelled", "interrupted", "failed")
BORN = ("queued", "running")

ALLOWED: dict[str, tuple[str, ...]] = {
    "queued": ("running", "cancelled", "failed"),
    "running": ("succeeded", "failed", "cancelled", "interrupted"),
    "cancelled": ("queued",),
    "interrupted": ("queued",),
    "failed": ("queued",),
    "succeeded": ("queued",),
}


class RunError(ValueError):
    """A user-facing problem with a run (unknown name, wrong state, invalid name)."""


class IllegalTransition(RunError):
    """A status change the life of a run does not allow."""


def validate_name(name: str) -> str:
    """A run's name, checked: it is a folder under checkpoints/, so it can never escape it."""
    if not isinstance(name, str) or not NAME_RE.match(name) or name in (".", ".."):
        raise RunError(f"invalid run name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
                       "starting with a letter or digit (no '/' or '..')")
    return name


DAMAGE_MESSAGES = ("not a database", "malformed", "file is encrypted", "disk I/O error", "no such table")


class RegistryDamaged(RunError):
    """runs.sqlite cannot be read: names the file and the way back (`runs rebuild`)."""

    def __init__(self, path, exc):
        self.path = path
        super().__init__(f"the run registry {path} is damaged ({exc}). The run folders beside it are intact: "
                         "`python -m engine runs rebuild` moves the damaged file aside and rebuilds the registry "
                         "from them")


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
