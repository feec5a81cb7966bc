"""Runs where researchers already look: TensorBoard and MLflow.

A run's trackers are named by targets, `tensorboard:DIR` or `mlflow:URI` (`python -m engine train
--log-to ...`, the Train form, or the saved setting `log_to` for every run). They are kept in the run's
folder (tracking.json), so a worker anywhere (a Ray node included) logs the same run, and a resume goes
on logging it. While the run trains, one callback per tracker feeds it (engine.tracking.live); for runs
made before or without logging, `runs export` replays the same content from the run's record
(engine.tracking.export).

A tracker that fails (server down, disk full) never fails the run: it is said once in train.log,
recorded in tracking.json (the Train page shows it) and left out for the rest of the run.

Nothing here imports tensorboard or mlflow at module level: `python -m engine --help` stays free of them.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

KINDS = ("tensorboard", "mlflow")


class TrackingError(ValueError):
    """A target that cannot be used: names it and says what is allowed."""


def parse_target(text: str) -> tuple[str, str]:
    """`tensorboard:DIR` or `mlflow:URI` -> (kind, where). A TensorBoard folder becomes absolute (a
    trainer started elsewhere writes to the same place); an MLflow URI is kept as given, and a bare
    folder becomes a `file:` store."""
    text = (text or "").strip()
    kind, sep, where = text.partition(":")
    kind = kind.strip().lower()
    if not sep or kind not in KINDS or not where.strip():
        raise TrackingError(f"invalid tracker {text!r}: use tensorboard:DIR or mlflow:URI "
                            f"(mlflow:http://127.0.0.1:5000, mlflow:file:/path/mlruns or mlflow:/path/mlruns)")
    where = where.strip()
    if any(ord(ch) < 32 for ch in where):
        raise TrackingError(f"invalid tracker {text!r}: control characters in the target")
    if kind == "tensorboard":
        if "://" in where:
            raise TrackingError(f"invalid tracker {text!r}: TensorBoard writes to a folder on this machine; "
                                f"give its path (tensorboard:runs/tb)")
        return kind, str(Path(where).expanduser().resolve())
    if "://" not in where and not where.startswith("file:"):
        where = Path(where).expanduser().resolve().as_uri()  # a folder: MLflow's file store there
    scheme = where.split(":", 1)[0].lower()
    if scheme not in ("file", "http", "https", "sqlite", "postgresql", "mysql", "databricks"):
        raise TrackingError(f"invalid tracker {text!r}: MLflow takes http(s)://, file:, sqlite:, postgresql:, "
                            f"mysql: or databricks URIs")
    return kind, where


def normalise(targets) -> list[str]:
    """Validated, de-duplicated targets in their canonical `kind:where` form, order kept."""
    out: list[str] = []
    for t in targets or ():
        kind, where = parse_target(t)
        canon = f"{kind}:{where}"
        if canon not in out:
            out.append(canon)
    return out


def always() -> list[str]:
    """The saved setting `log_to`: targets every new run logs to (a JSON list; unreadable = none)."""
    from ..settings import saved
    text = saved("log_to")
    try:
        value = json.loads(text) if text else []
    except ValueError:
        return []
    return [t for t in value if isinstance(t, str)] if isinstance(value, list) else []


def save_always(targets) -> list[str]:
    """Keep `targets` as the setting every new run logs to (validated first); [] clears it."""
    from ..settings import save_setting
    targets = normalise(targets)
    save_setting("log_to", json.dumps(targets) if targets else "")
    return targets


def _path(folder) -> Path:
    from ..runs.folder import TRACKING
    return Path(getattr(folder, "path", folder)) / TRACKING


def read(folder) -> dict:
    """The run's tracking record: {"targets": [...], "failed": {target: reason}} ({} when none)."""
    try:
        data = json.loads(_path(folder).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {"targets": [t for t in data.get("targets", []) if isinstance(t, str)],
            "failed": {k: str(v) for k, v in (data.get("failed") or {}).items() if isinstance(k, str)}}


def _write(folder, data: dict) -> None:
    from ..runs.folder import write_json
    write_json(_path(folder), data)


def attach(folder, targets) -> list[str]:
    """Record the run's trackers in its folder: those it had, `targets`, and the saved `log_to`
    setting's; returns them."""
    targets = normalise([*read(folder).get("targets", []), *(targets or ()), *always()])
    if targets:
        Path(getattr(folder, "path", folder)).mkdir(parents=True, exist_ok=True)
        _write(folder, {"targets": targets, "failed": read(folder).get("failed", {})})
    return targets


def mark_failed(folder, target: str, reason: str) -> None:
    """Say in tracking.json that `target` failed (the Train page shows it); never raises."""
    try:
        data = read(folder) or {"targets": [target], "failed": {}}
        data["failed"][target] = f"{time.strftime('%Y-%m-%d %H:%M:%S')}: {reason}"
        _write(folder, data)
    except OSError:
        pass


def clear_failures(folder) -> None:
    """A new attempt of the run (a resume) tries every tracker again."""
    data = read(folder)
    if data.get("failed"):
        data["failed"] = {}
        try:
            _write(folder, data)
        except OSError:
            pass


def make_tracker(target: str, run: str):
    """The tracker for one canonical target (imports its library only now)."""
    kind, where = parse_target(target)
    if kind == "tensorboard":
        from .tensorboard import TensorBoardTracker
        return TensorBoardTracker(where, run)
    from .mlflow_tracker import MlflowTracker
    return MlflowTracker(where, run)
