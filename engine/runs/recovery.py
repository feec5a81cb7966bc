"""Disaster recovery: the registry rebuilt from the run folders, a lost row written back, and the
one explicit state change that adopts an existing folder as a run's.

A run folder holds everything a run needs (checkpoints, metrics.json, outcome.json, predictions), so
a damaged, deleted or replaced runs.sqlite loses only the per-step and per-epoch curves."""
from __future__ import annotations

import time
from pathlib import Path

from ..constants import default_checkpoints_dir
from .details import headline
from .folder import RunDir
from .states import FINAL, NAME_RE, RunError, validate_name
from .store import DB_NAME, RUN_COLUMNS, Registry

__all__ = ["adopt", "rebuild_registry", "restore_row", "unlisted_folders"]


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


def unlisted_folders(reg: Registry) -> list[str]:
    """Run folders with a checkpoint that the registry has no row for (a deleted or replaced
    runs.sqlite): `rebuild_registry(missing_only=True)` restores them."""
    try:
        folders = [p for p in reg.root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        return []
    known = {r.name for r in reg.list()}
    return sorted(p.name for p in folders if p.name not in known and NAME_RE.match(p.name)
                  and RunDir(p).has_checkpoint())


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
