"""Disk housekeeping for runs: delete, archive, prune. Every step leaves a readable state if killed.

    delete   the run's folder is first renamed to `.trash-<run>-<time>` (atomic), then its registry
             rows go, then the renamed folder; a kill midway leaves a trash folder that the next
             delete removes, never half a run
    archive  the folder is copied to a temporary name in the archive directory with its registry rows
             (`registry.json`), renamed into place, then the rows and the original go; a failure (a full
             disk) removes the partial copy, changes nothing and says why, so a retry works
    prune    a succeeded run drops `last.pt` (resume and extension state: optimizer, the last epoch's
             weights) and keeps `best.pt`, which every evaluation, map and transfer uses; the run can
             no longer be extended with more epochs, and `prune` says so

Queued or running runs are refused (cancel first), and so is a run that a queued or running run
waits on as its parent.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from ..text import human_bytes
from .folder import disk_bytes, write_json
from .store import Registry
from .states import ACTIVE, RunError

BUSY = ACTIVE


def _check_free(reg: Registry, name: str) -> dict:
    reg.require_writable()
    row = reg.require(name)
    if row.status in BUSY:
        raise RunError(f"run {name!r} is {row.status}: cancel it first (python -m engine cancel {name})")
    waiting = [r.name for r in reg.list() if r.depends_on == name and r.status in BUSY]
    if waiting:
        raise RunError(f"run {name!r} is the parent of {', '.join(waiting)}, which wait for it: cancel them first")
    return row


def _sweep_trash(root: Path) -> None:
    for p in root.glob(".trash-*"):
        shutil.rmtree(p, ignore_errors=True)


def delete_run(reg: Registry, name: str) -> dict:
    """Remove a run's registry rows and folder. Returns {"run", "freed_bytes"}."""
    _check_free(reg, name)
    folder = reg.run_dir(name)
    freed = folder_size(folder)
    if folder.exists():
        trash = folder.with_name(f".trash-{name}-{int(time.time() * 1000)}")
        folder.rename(trash)
    reg.delete(name)
    _sweep_trash(folder.parent)
    return {"run": name, "freed_bytes": freed}


def archive_run(reg: Registry, name: str, dest) -> dict:
    """Move a run's folder under `dest` with its registry rows in registry.json; the registry forgets it."""
    row = _check_free(reg, name)
    folder = reg.run_dir(name)
    try:
        dest = Path(dest).expanduser().resolve()
    except RuntimeError:  # ~nosuchuser
        raise RunError(f"{dest} is not a folder here (no such user on this machine)") from None
    target = dest / name
    root = folder.parent.resolve()
    if dest == root or root in dest.parents:
        raise RunError(f"archive folder {dest} is inside the run folder root; choose a folder outside it")
    if target.exists():
        raise RunError(f"{target} already exists: choose another archive folder")
    need = folder_size(folder)
    partial = dest / f".partial-{name}-{int(time.time() * 1000)}"
    try:
        dest.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(dest).free
        if need > free:
            raise OSError(28, f"No space left on device: {human_bytes(need)} to copy, {human_bytes(free)} free")
        if folder.exists():
            shutil.copytree(folder, partial, copy_function=shutil.copy2)
        else:
            partial.mkdir()
        write_json(partial / "registry.json", {"run": row.as_dict(), "epochs": reg.epochs(name),
                                               "steps": reg.steps(name), "archived": time.time()})
        partial.rename(target)
    except (OSError, shutil.Error) as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise RunError(f"could not archive {name} to {dest}: {_why(exc)}. Nothing changed: the run is still in "
                       "the registry and its folder, and the partial copy was removed") from None
    reg.delete(name)
    if folder.exists():
        trash = folder.with_name(f".trash-{name}-{int(time.time() * 1000)}")
        folder.rename(trash)
        _sweep_trash(folder.parent)
    return {"run": name, "archived_to": str(target), "bytes": folder_size(target)}


def _why(exc: BaseException) -> str:
    """An OSError or shutil.Error (a list of (src, dst, reason) tuples) in words."""
    if isinstance(exc, shutil.Error) and exc.args and isinstance(exc.args[0], list) and exc.args[0]:
        first = exc.args[0][0]
        more = len(exc.args[0]) - 1
        return f"{first[-1]}" + (f" (and {more} more file(s))" if more else "")
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror + (f": {exc.filename}" if exc.filename else "")
    return str(exc)


def prune_run(reg: Registry, name: str) -> dict:
    """Drop last.pt of a succeeded run that has best.pt. Returns {"run", "removed", "freed_bytes"}."""
    reg.require_writable()  # a read-only folder: said in words, before anything
    row = reg.require(name)
    if row.status != "succeeded":
        raise RunError(f"run {name!r} is {row.status}: only a succeeded run is pruned (the others need last.pt "
                       "to resume)")
    folder = reg.folder(name)
    freed = folder.drop_last()
    return {"run": name, "removed": [folder.last.name] if freed else [], "freed_bytes": freed}


folder_size = disk_bytes  # the one way to count a run folder's disk
