"""The run registry's public face. Its parts each have one home:

- engine.runs.store: SQLite and the row API (`Registry`: create, transition, claim, metrics);
- engine.runs.liveness: `observe`, which settles runs whose trainer is gone before they are shown;
- engine.runs.recovery: `rebuild_registry` from the run folders, adopting a folder, unlisted folders
  and the moved-aside ones in checkpoints/.orphans/;
- engine.runs.states: the life of a run, run names and the registry's errors.

Callers outside engine.runs import from here."""
from __future__ import annotations

from .liveness import observe, pid_alive
from .recovery import orphans, rebuild_registry, remove_orphan, restore_orphan, unlisted, unlisted_folders
from .states import FINAL, STATUSES, RegistryDamaged, RegistryReadOnly, RunError, validate_name
from .store import Registry

__all__ = ["FINAL", "STATUSES", "Registry", "RegistryDamaged", "RegistryReadOnly", "RunError", "observe", "orphans",
           "pid_alive", "rebuild_registry", "remove_orphan", "restore_orphan", "unlisted", "unlisted_folders",
           "validate_name"]
