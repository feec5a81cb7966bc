"""Data roots: the one place that turns a flag, a run's recorded root or an environment variable
into a checked folder (NIH ChestX-ray14 or the COVID-19 collection)."""
from __future__ import annotations

import os
from pathlib import Path

from ..constants import ENV_COVID_ROOT, ENV_NIH_ROOT
from ..settings import saved

KINDS = {"nih": ("NIH", ENV_NIH_ROOT), "covid": ("COVID", ENV_COVID_ROOT)}


class DataRootError(FileNotFoundError):
    """A data root is missing or not a folder; `kind` is "nih" or "covid"."""

    def __init__(self, kind: str, message: str):
        self.kind = kind
        super().__init__(message)


def expand(value) -> Path:
    """`~` and `~user` expanded; an unknown user is a NotADirectoryError in words (pathlib raises
    RuntimeError)."""
    try:
        return Path(value).expanduser()
    except RuntimeError:  # Path("~nosuchuser/x").expanduser()
        raise NotADirectoryError(f"{value} is not a folder here (no user {str(value).split('/')[0][1:]!r} on "
                                 "this machine)") from None


def typed_folder(value: str) -> Path:
    """A folder typed by a user (a flag, the sidebar, --dest) as an absolute path, checked: `~user`
    of an unknown user, a missing path, a file or a folder this process cannot read raise
    NotADirectoryError / PermissionError with the reason in words, never a traceback's RuntimeError."""
    path = expand(value)
    if not path.is_dir():
        raise NotADirectoryError(f"{path} does not exist or is not a folder here")
    if not os.access(path, os.R_OK | os.X_OK):
        raise PermissionError(f"{path} cannot be read (permission denied)")
    return path.absolute()


def default_root(kind: str) -> str:
    """$CXR_<KIND>_ROOT, else the root saved in the user's settings (engine.settings), else ""."""
    return os.environ.get(KINDS[kind][1], "") or saved(f"{kind}_root")


def resolve_root(kind: str, *candidates, required: bool = True) -> Path | None:
    """The first non-empty candidate (flag, then recorded root, ...), else $CXR_<KIND>_ROOT, else the
    root saved by the dashboard, as a resolved folder. Missing and required: DataRootError naming the
    flag and the variable."""
    what, env = KINDS[kind]
    value = next((str(c) for c in candidates if c), "") or default_root(kind)
    if not value:
        if required:
            raise DataRootError(kind, f"no {what} data root: pass --{kind}-root DIR, set ${env} or set it in "
                                      "the dashboard's sidebar (it is saved)")
        return None
    try:
        path = typed_folder(value)
    except OSError as exc:
        raise DataRootError(kind, f"{what} data root: {exc}") from None
    return path.resolve()


def task_roots(task: str) -> tuple[str, ...]:
    """The root kinds a task reads."""
    return {"nih": ("nih",), "covid": ("covid",), "combined15": ("nih", "covid"), "pneumonia": ("covid",),
            "manifest": ()}[task]
