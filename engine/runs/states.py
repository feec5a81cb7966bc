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


def check(run: str, old: str | None, new: str) -> None:
    """Raise IllegalTransition unless `old -> new` is allowed (old None: a new run)."""
    if new not in STATUSES:
        raise IllegalTransition(f"invalid status {new!r}; allowed: {', '.join(STATUSES)}")
    allowed = BORN if old is None else ALLOWED.get(old, ())
    if new not in allowed:
        start = "a new run" if old is None else f"run {run!r} is {old}"
        raise IllegalTransition(f"{start}: it cannot become {new} (allowed: {', '.join(allowed) or 'nothing'})")
