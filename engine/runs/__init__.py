"""Runs: the registry (SQLite), the run folder (RunDir: best/last/metrics/predictions/logs), the
allowed state changes, the reporter that records a trainer's progress, and the jobs that submit,
schedule, cancel, resume and work runs. Nothing here imports torch until a run is trained."""
from .._lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, globals(), {
    "Registry": "store", "pid_alive": "liveness", "validate_name": "states", "observe": "liveness",
    "rebuild_registry": "recovery",
    "RunError": "states", "IllegalTransition": "states", "STATUSES": "states", "FINAL": "states",
    "RESUMABLE": "states", "RunDir": "folder", "best_checkpoint": "folder",
    "Reporter": "reporter",
    "submit": "jobs", "schedule": "jobs", "cancel": "jobs", "resume": "jobs", "work": "jobs", "wait": "jobs",
    "capacity": "jobs", "prepare_config": "jobs", "resolve_init": "jobs",
    "evaluate_run": "evaluate", "evaluate_external": "external", "run_details": "details", "headline": "details",
    "headline_class": "details",
})
