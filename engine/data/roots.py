"""Data roots: the one place that turns a flag, a run's recorded root or an environment variable
into a checked folder (NIH ChestX-ray14 or the COVID-19 collection)."""
from __future__ import annotations

import os
from pathlib import Path

from ..constants import ENV_COVID_ROOT, ENV_NIH_ROOT

KINDS = {"nih": ("NIH", ENV_NIH_ROOT), "covid": ("COVID", ENV_COVID_ROOT)}


class DataRootError(FileNotFoundError):
    """A data root is missing or not a folder; `kind` is "nih" or "covid"."""

    def __init__(self, kind: str, message: str):
        self.kind = kind
        super().__init__(message)


def resolve_root(kind: str, *candidates, required: bool = True) -> Path | None:
    """The first non-empty candidate (flag, then recorded root, ...), else $CXR_<KIND>_ROOT, as a
    resolved folder. Missing and required: DataRootError naming the flag and the variable."""
    what, env = KINDS[kind]
    value = next((str(c) for c in candidates if c), "") or os.environ.get(env, "")
    if not value:
        if required:
            raise DataRootError(kind, f"no {what} data root: pass --{kind}-root DIR or set ${env}")
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise DataRootError(kind, f"{what} data root {path} does not exist or is not a folder")
    return path.resolve()


def task_roots(task: str) -> tuple[str, ...]:
    """The root kinds a task reads."""
    return {"nih": ("nih",), "covid": ("covid",), "combined15": ("nih", "covid")}[task]
