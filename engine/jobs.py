"""Launching, queueing, cancelling and supervising training processes.

A run is an OS process (`python -m engine worker RUN`, its own session/process group), never a
thread of a web page; its state lives in the registry. `submit` validates and records a run as
queued; `schedule` starts queued runs while fewer than `capacity()` are running (CXR_MAX_RUNNING,
default 1 per machine). A finishing trainer calls `schedule` itself, so the queue advances with no
browser open. `cancel` sends SIGTERM to the process group: the trainer finishes its step, writes
`last.pt` and marks the run cancelled; `resume` queues it again and it continues from `last.pt`.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .config import ExperimentConfig, from_preset
from .experiment import needed_roots
from .runs import Registry, RunError, pid_alive, validate_name

REPO = Path(__file__).resolve().parent.parent


def capacity() -> int:
    try:
        return max(1, int(os.environ.get("CXR_MAX_RUNNING", "1")))
    except ValueError:
        return 1


def prepare_config(preset: str, overrides: dict, registry: Registry) -> ExperimentConfig:
    """Validate everything a run needs before it is recorded (raises ConfigError / FileNotFoundError)."""
    from .train import resolve_init

    cfg = from_preset(preset, overrides)
    roots = needed_roots(cfg)
    if "nih" in roots:
        cfg.data.nih_root = str(roots["nih"])
    if "covid" in roots:
        cfg.data.covid_root = str(roots["covid"])
    if cfg.model.init not in ("scratch", "imagenet"):
        cfg.model.init = resolve_init(cfg.model.init, registry)
    return cfg


def submit(preset: str, overrides: dict, name: str | None = None, registry: Registry | None = None,
           start: bool = True) -> str:
    """Record a validated run as queued and start it if there is capacity. Returns its name."""
    reg = registry or Registry()
    cfg = prepare_config(preset, overrides, reg)
    name = validate_name(name) if name else reg.unique_name(preset)
    reg.create(name, cfg.to_dict(), preset, status="queued")
    if start:
        schedule(reg)
    return name


def schedule(reg: Registry | None = None) -> list[str]:
    """Start the oldest queued runs while capacity allows; returns the names started."""
    reg = reg or Registry()
    reg.mark_stale()
    started = []
    while (name := reg.claim_next(capacity())) is not None:
        try:
            pid = _spawn(name, reg)
        except OSError as exc:
            reg.update(name, status="failed", finished=time.time(), error=f"could not start the trainer: {exc}")
            continue
        reg.update(name, pid=pid, heartbeat=time.time())
        started.append(name)
    return started


def _spawn(name: str, reg: Registry) -> int:
    run_dir = reg.run_dir(name)
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CXR_CHECKPOINTS": str(reg.root), "PYTHONUNBUFFERED": "1"}
    with open(run_dir / "process.log", "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "engine", "worker", name], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    return proc.pid


def cancel(name: str, reg: Registry | None = None) -> str:
    """Cancel a queued run at once, or ask a running one to stop gracefully. Returns what happened."""
    reg = reg or Registry()
    row = reg.get(name)
    if row is None:
        raise RunError(f"no run named {name!r}")
    if row["status"] == "queued":
        reg.update(name, status="cancelled", finished=time.time(), error="cancelled before it started")
        return "cancelled"
    if row["status"] != "running":
        raise RunError(f"run {name!r} is {row['status']}, not running")
    if not pid_alive(row["pid"]):
        reg.mark_stale(stale_after=0)
        return "interrupted"
    try:
        os.killpg(int(row["pid"]), signal.SIGTERM)
    except ProcessLookupError:
        reg.mark_stale(stale_after=0)
        return "interrupted"
    return "stopping"


def resume(name: str, reg: Registry | None = None, start: bool = True) -> None:
    reg = reg or Registry()
    row = reg.get(name)
    if row is None:
        raise RunError(f"no run named {name!r}")
    if row["status"] not in ("cancelled", "interrupted", "failed"):
        raise RunError(f"run {name!r} is {row['status']}; only cancelled, interrupted or failed runs resume")
    reg.update(name, status="queued", error=None)
    if start:
        schedule(reg)


def worker(name: str) -> int:
    """The body of `python -m engine worker RUN`: train the run (resuming if it has last.pt), then
    start the next queued run."""
    from .train import fit

    reg = Registry()
    row = reg.get(name)
    if row is None:
        print(f"error: no run named {name!r}", file=sys.stderr)
        return 2
    cfg = ExperimentConfig.from_dict(row["config"])
    status = "failed"
    try:
        status = fit(cfg, name, reg, resume=(reg.run_dir(name) / "last.pt").is_file())
    except BaseException as exc:  # fit has recorded the failure; keep the traceback in process.log
        import traceback

        traceback.print_exc()
        if isinstance(exc, KeyboardInterrupt):
            status = "cancelled"
    finally:
        try:
            schedule(reg)
        except Exception:
            pass
    return 0 if status == "succeeded" else 3
