"""Disaster recovery: the registry rebuilt from the run folders, a lost row written back, and the
one explicit state change that adopts an existing folder as a run's.

A run folder holds everything a run needs (checkpoints, metrics.json, outcome.json, predictions), so
a damaged, deleted or replaced runs.sqlite loses only the per-step and per-epoch curves."""
from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

from ..constants import default_checkpoints_dir
from .details import headline
from .folder import RunDir, disk_bytes
from .states import FINAL, NAME_RE, RunError, validate_name
from .store import DB_NAME, ORPHANS, RUN_COLUMNS, Registry, shadowing_folders

__all__ = ["adopt", "orphans", "rebuild_registry", "remove_orphan", "restore_orphan", "restore_row", "unlisted",
           "unlisted_folders"]


def adopt(reg: Registry, name: str, config: dict, preset: str | None, status: str, **fields) -> dict:
    """A registry row for a folder that exists already (its checkpoint is the run's state). Only
    recovery adopts: `Registry.create` moves an unknown folder aside instead."""
    return reg.create(name, config, preset, status=status, adopt=True, **fields)


def restore_row(reg: Registry, row: dict) -> bool:
    """Write back a run's row that vanished with the registry file (deleted or replaced under its
    running trainer): the tables if they are gone, then the row as the trainer knows it. True if
    the row was missing."""
    reg.ensure_schema()
    if reg.get(row["name"]) is not None:
        return False
    keep = {k: row[k] for k in RUN_COLUMNS if k not in ("config", "status") and row.get(k) is not None}
    preset = keep.pop("preset", None)
    keep.pop("code_version", None)
    try:
        adopt(reg, row["name"], row["config"], preset, status=row.get("status") or "running", **keep)
    except RunError:
        if reg.get(row["name"]) is None:  # not a lost race with another restorer
            raise
    return True


ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format: a checkpoint that does not start so cannot load


def unlisted(reg: Registry) -> tuple[list[str], dict[str, str]]:
    """Folders under the checkpoints folder that the registry has no row for (a deleted or replaced
    runs.sqlite): (those `rebuild_registry(missing_only=True)` restores, {name: why not} for the rest,
    each reason saying how to clear it). Cheap: reads 4 bytes of a checkpoint, loads none."""
    try:
        folders = [p for p in reg.root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        return [], {}
    known = {r.name for r in reg.list()}
    ok, problems = [], {}
    for p in sorted(folders, key=lambda p: p.name):
        if p.name in known:
            continue
        d = RunDir(p)
        clear = f"move it out of {reg.root} or delete it"
        if p.is_symlink():
            problems[p.name] = f"a symbolic link (runs are never restored through links): {clear}"
        elif not NAME_RE.match(p.name):
            problems[p.name] = f"not a valid run name: rename it to letters, digits, '.', '_' or '-', or {clear}"
        elif not d.has_checkpoint():
            continue  # no checkpoint: not a run folder (an evaluation's or a user's own), not ours to judge
        elif not _looks_like_checkpoint(d.best_checkpoint()):
            problems[p.name] = f"its {d.best_checkpoint().name} is not a readable checkpoint: {clear}"
        else:
            ok.append(p.name)
    return ok, problems


def _looks_like_checkpoint(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == ZIP_MAGIC
    except OSError:
        return False


def unlisted_folders(reg: Registry) -> list[str]:
    """The unlisted folders `rebuild_registry(missing_only=True)` can restore (see `unlisted`)."""
    return unlisted(reg)[0]


# -- checkpoints/.orphans: folders a new run found in its place, moved aside (never adopted) --------
def orphans(reg: Registry) -> list[dict]:
    """The folders under checkpoints/.orphans/: name, path, size, whether it holds a checkpoint, and
    the run name it was found under."""
    base = reg.root / ORPHANS
    if not base.is_dir():
        return []
    out = []
    for p in sorted(base.iterdir(), key=lambda p: p.name):
        if p.is_dir() and not p.is_symlink():
            run = _found_as(p.name)
            out.append({"name": p.name, "path": str(p), "bytes": disk_bytes(p), "run": run,
                        "has_checkpoint": RunDir(p).has_checkpoint(), "moved": p.stat().st_mtime})
    return out


def _found_as(folder: str) -> str:
    """The run name a moved-aside folder was found under (store.create appends -YYYYmmdd-HHMMSS)."""
    return re.sub(r"-\d{8}-\d{6}$", "", folder)


def _orphan(reg: Registry, name: str) -> Path:
    path = (reg.root / ORPHANS / validate_name(name)).resolve()
    if path.parent != (reg.root / ORPHANS).resolve() or not path.is_dir():
        raise RunError(f"no folder named {name!r} in {reg.root / ORPHANS} (see `python -m engine runs orphans`)")
    return path


def remove_orphan(reg: Registry, name: str) -> int:
    """Delete one moved-aside folder; the bytes freed."""
    reg.require_writable()
    path = _orphan(reg, name)
    freed = disk_bytes(path)
    shutil.rmtree(path)
    return freed


def restore_orphan(reg: Registry, name: str, as_name: str | None = None) -> dict:
    """Make a moved-aside folder a run again, under `as_name` (default: the run name it was found
    under, when free): moved into place, then restored from its checkpoint as `rebuild` does. On
    failure the folder goes back to .orphans/ untouched."""
    reg.require_writable()
    path = _orphan(reg, name)
    run = validate_name(as_name or _found_as(name))
    if reg.get(run) is not None or reg.run_dir(run).exists():
        raise RunError(f"a run or folder named {run!r} exists already: restore it under another name (--as NAME)")
    found = RunDir(path)
    if not (found.has_checkpoint() and _looks_like_checkpoint(found.best_checkpoint())):
        raise RunError(f"{path} holds no readable checkpoint: it cannot become a run (remove it instead)")
    target = reg.run_dir(run)
    path.rename(target)
    try:
        return _restore_folder(reg, run)
    except Exception:
        if reg.get(run) is not None:
            reg.delete(run)
        target.rename(path)
        raise


def rebuild_registry(root=None, missing_only: bool = False) -> dict:
    """Registry rows from the run folders. By default the damaged (or missing) runs.sqlite is moved
    aside and every folder with a checkpoint becomes a run again; with missing_only, a readable
    registry is kept and only the folders it has no row for are added (`unlisted_folders`).

    A restored run has the config, epoch, best epoch and AUCs its checkpoint and metrics.json record,
    and the status its trainer wrote in outcome.json; without one, `succeeded` when it has test
    metrics, else `interrupted` (resumable). Per-step and per-epoch curves were only in the old file
    and are not recovered."""
    root = Path(root) if root else default_checkpoints_dir()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    moved = []
    shadows = shadowing_folders(root)
    for folder in shadows:  # a run folder standing where SQLite's file goes: moved to .orphans/, nothing lost
        aside = root / ORPHANS / f"{folder.name}-{stamp}"
        aside.parent.mkdir(parents=True, exist_ok=True)
        folder.rename(aside)
        moved.append(f"{folder.name} (a folder, now {ORPHANS}/{aside.name})")
    if shadows and not missing_only and _opens(root):
        return {"registry": str(root / DB_NAME), "moved_aside": moved, "restored": [], "skipped": {}}
    if missing_only:
        reg = Registry(root)
        names = unlisted_folders(reg)
    else:
        for suffix in ("", "-wal", "-shm"):
            p = root / (DB_NAME + suffix)
            if p.exists():
                p.rename(p.with_name(f"{DB_NAME}.damaged-{stamp}{suffix}"))
                moved.append(p.name)
        reg = Registry(root)
        names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    restored, skipped = [], {}
    for name in names:
        try:
            restored.append(_restore_folder(reg, name))
        except Exception as exc:  # a folder without a readable checkpoint is left as it is, and said
            skipped[name] = str(exc).splitlines()[0][:200]
    return {"registry": str(reg.db_path), "moved_aside": moved, "restored": restored, "skipped": skipped}


def _opens(root: Path) -> bool:
    """True when the registry in `root` opens and passes SQLite's integrity check."""
    try:
        return Registry(root).integrity_ok()
    except RunError:
        return False


def _restore_folder(reg: Registry, name: str) -> dict:
    from ..models.checkpoint import load_checkpoint  # torch: only when a folder is restored

    validate_name(name)
    d = RunDir(reg.root / name)
    ckpt = load_checkpoint(d.last if d.last.is_file() else d.best_checkpoint())
    metrics = d.read_metrics()
    test = {r["class"]: r.get("auc") for r in metrics.get("test", {}).get("auc", [])}
    outcome = d.read_outcome()
    status = outcome.get("status") if outcome.get("status") in FINAL + ("interrupted",) else None
    status = status or ("succeeded" if test else "interrupted")
    cfg = ckpt.get("config", {})
    adopt(reg, name, cfg, None, status="running")
    reg.update(name, epochs_done=int(ckpt.get("epoch") or 0), step=int(ckpt.get("step") or 0),
               best_epoch=ckpt.get("best_epoch"), test_auc=headline(cfg, test)[1] if test else None,
               best_val_auc=ckpt.get("best_val_auc") if (ckpt.get("best_val_auc") or -1) >= 0 else None)
    error = outcome.get("error") if status != "succeeded" else None
    if status != "succeeded" and not error:
        error = "rebuilt from its folder: resume to continue"
    reg.transition(name, status, pid=None, finished=outcome.get("finished"), error=error)
    return {"run": name, "status": status, "epochs_done": int(ckpt.get("epoch") or 0)}
