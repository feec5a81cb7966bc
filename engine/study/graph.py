"""The study as a graph of runs: each experiment becomes a run of the registry, submitted through
the same queue as the Train page (capacity respected), children waiting for their parent.

Running the graph again continues it: finished runs with the same settings and data are reused,
cancelled or interrupted ones resumed, failed ones reported with their reason; a child whose parent
failed is blocked (naming the parent), and an experiment that needs ImageNet weights this machine
cannot fetch is reported with the file to place, while the rest of the graph goes on.
"""
from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass, field

from ..config import ExperimentConfig
from ..models import xrv
from ..runs.details import parent_state
from ..runs.jobs import resume, schedule
from ..runs.jobs import submit as submit_run
from ..runs.liveness import observe
from ..runs.record import RunRecord
from ..runs.states import RunStatus, validate_name
from ..runs.store import Registry
from .spec import LOCAL_FIELDS, Experiment, StudySpec, planned_config, repeat_overrides

ACTIVE = (RunStatus.QUEUED, RunStatus.RUNNING, "waiting")


@dataclass
class Cell:
    """One experiment of the study and where its run stands."""
    key: str
    name: str
    table: str
    label: str
    state: str           # finished | running | queued | waiting | blocked | failed | cancelled | interrupted |
    detail: str = ""     #   needs weights | not started | other settings; detail says why or what to do
    parent: str | None = None
    row: RunRecord | None = field(default=None, repr=False)
    repeat: int = 0      # 0: the study's own split and seeds; r: both seeds moved by r (spec.repeat_overrides)

    def describe(self) -> str:
        """The state in words, with what to do where there is something to do."""
        label = self.short() if self.state == "needs weights" else self.state
        return label + (f": {self.detail}" if self.detail else "")

    def short(self) -> str:
        """The state as a short phrase: "needs ImageNet weights", "has other settings", "is failed"."""
        weights = "needs torchxrayvision weights" if "torchxrayvision" in self.detail else "needs ImageNet weights"
        return {"needs weights": weights, "other settings": "has other settings"}.get(self.state, f"is {self.state}")

    def as_dict(self) -> dict:
        r = self.row
        return {"key": self.key, "name": self.name, "repeat": self.repeat, "table": self.table, "label": self.label,
                "state": self.state,
                "detail": self.detail, "text": self.describe(), "parent": self.parent,
                "progress": r.progress if r else None, "epochs_done": r.epochs_done if r else None,
                "epochs": r.epochs if r else None}


def run_name(prefix: str, key: str, repeat: int = 0) -> str:
    """`prefix-key` for repeat 0 (the names of a study without repeats), `prefix-rR-key` for the others."""
    return validate_name(f"{prefix}-{key}" if repeat == 0 else f"{prefix}-r{repeat}-{key}")


MAX_REPEATS = 50




def known_repeats(spec: StudySpec, prefix: str, reg: Registry) -> int:
    """How many repeats of this study the registry holds runs of (at least 1)."""
    names = {r.name for r in reg.list()}
    found = 1
    for r in range(1, MAX_REPEATS):
        if any(run_name(prefix, e.key, r) in names for e in spec.experiments):
            found = r + 1
    return found


def imagenet_missing(arch: str, fetch: bool) -> str | None:
    from ..models.build import imagenet_weights_missing

    with contextlib.redirect_stdout(sys.stderr):  # torch.hub reports on stdout; --json output stays clean
        return imagenet_weights_missing(arch, fetch)


def xrv_missing(init: str, fetch: bool) -> str | None:
    with contextlib.redirect_stdout(sys.stderr):
        return xrv.weights_missing(xrv.xrv_name(init), fetch)


class _Fingerprints:
    """The current data fingerprint of a config's task, computed once per distinct data setting."""

    def __init__(self):
        self.known: dict = {}

    def __call__(self, config: dict) -> str | None:
        from ..data.tasks import build_datasets, data_fingerprint

        d = config.get("data", {})
        key = tuple(sorted((k, str(v)) for k, v in d.items() if k not in ("num_workers", "cache_dir", "image_size")))
        if key not in self.known:
            try:
                self.known[key] = data_fingerprint(build_datasets(ExperimentConfig.from_dict(config)))
            except (OSError, ValueError):
                self.known[key] = None
        return self.known[key]


def _differences(row: RunRecord, planned: dict, parent: str | None) -> list[str]:
    have = ExperimentConfig.from_dict(row.config).flat()
    diff = [f"{k} {have[k]} vs {planned[k]}" for k in planned if k not in LOCAL_FIELDS and have.get(k) != planned[k]]
    if parent and row.depends_on not in (None, parent):
        diff.append(f"parent {row.depends_on} vs {parent}")
    return diff


def _existing(cell: Cell, row: RunRecord, planned: dict, reg: Registry, fingerprints, submit: bool) -> Cell:
    """Where a run the study already has stands; resumes it if it stopped and submit is set."""
    cell.row = row
    diff = _differences(row, planned, cell.parent)
    if diff:
        cell.state, cell.detail = "other settings", (f"the run {cell.name} differs from this scale in "
                                                   + ", ".join(diff) + "; use another run-name prefix")
        return cell
    status = row.status
    if status == "succeeded":
        now = fingerprints(row.config) if fingerprints else None
        if now and row.data_fingerprint and now != row.data_fingerprint:
            cell.state, cell.detail = "other settings", (f"finished on other data (fingerprint {row.data_fingerprint},"
                                                       f" the data now {now}); use another run-name prefix")
        else:
            cell.state, cell.detail = "finished", "reused" if submit else ""
        return cell
    if status in ("cancelled", "interrupted") and submit:
        resume(name := cell.name, reg, start=False)
        cell.row = reg.require(name)
        cell.state, cell.detail = RunStatus.QUEUED, f"resumed from last.pt ({status} before)"
        return cell
    cell.state, cell.detail = status, row.error or ""
    waiting = parent_state(reg, row)
    if waiting:
        cell.state, cell.detail = waiting
    return cell


def _choose_parent(exp: Experiment, cells: dict[str, Cell]) -> tuple[Cell | None, str]:
    """The first parent that can run; (None, why) when none can."""
    for key in exp.init_from:
        if cells[key].state not in ("needs weights", "other settings", "blocked"):
            return cells[key], ""
    return None, "no parent can run: " + "; ".join(f"{k} {cells[k].short()}" for k in exp.init_from)


def plan(spec: StudySpec, prefix: str, reg: Registry, roots: dict, *, submit: bool, fetch_weights: bool = True,
         repeats: int = 1) -> list[Cell]:
    """Every experiment's cell in every repeat (repeat 0 first); with submit, start what is missing
    and resume what stopped. Each repeat is its own graph: its children start from its parents."""
    if not 1 <= repeats <= MAX_REPEATS:
        raise ValueError(f"repeats must be between 1 and {MAX_REPEATS}, got {repeats}")
    fingerprints = _Fingerprints() if submit else None  # the data is re-read only when the study acts
    weights: dict = {}
    cells = [c for r in range(repeats) for c in _plan_repeat(spec, prefix, r, reg, roots, submit, fetch_weights,
                                                               fingerprints, weights)]
    if submit:
        schedule(reg)
        for cell in cells:
            if cell.row is not None:
                cell.row = reg.require(cell.name)
                if cell.state in ACTIVE:
                    cell.state = cell.row.status
                    _refine(cell, reg)
    return cells


def _plan_repeat(spec: StudySpec, prefix: str, repeat: int, reg: Registry, roots: dict, submit: bool,
                 fetch_weights: bool, fingerprints, weights: dict) -> list[Cell]:
    cells: dict[str, Cell] = {}
    planned: dict[str, dict] = {}  # each experiment's config (flat) as this study plans it
    for exp in spec.experiments:
        if repeat and not exp.repeats:
            continue  # its split is fixed by design (a held-out origin): repeat 0 only
        cell = cells[exp.key] = Cell(exp.key, run_name(prefix, exp.key, repeat), exp.table, exp.label, "not started",
                                     repeat=repeat)
        # the command's roots, unless the study file gives this experiment a root of its own (which wins)
        over = {**{f"{k}_root": str(v) for k, v in roots.items() if v}, **spec.overrides(exp),
                **repeat_overrides(spec, exp, repeat)}
        parent = None
        if exp.init_from:
            parent, why = _choose_parent(exp, cells)
            if parent is None:
                cell.state, cell.detail = "blocked", why
                continue
            cell.parent = over["init"] = parent.name
        config = planned[exp.key] = planned_config(spec, exp, over.get("init"), repeat)
        if parent is not None and "arch" not in spec.overrides(exp):
            config["arch"] = planned.get(parent.key, config)["arch"]  # a transfer takes its parent's backbone
        row = reg.get(cell.name)
        if row is not None:
            _existing(cell, row, config, reg, fingerprints, submit)
            continue
        if parent is not None and parent.state in ("failed", "cancelled", "interrupted"):
            cell.state = "blocked"
            cell.detail = f"its parent {parent.name} {parent.short()}" + (f" ({parent.detail})" if parent.detail else "")
            continue
        if config["init"] == "imagenet" or xrv.is_xrv(config["init"]):
            key = config["init"] if xrv.is_xrv(config["init"]) else config["arch"]
            if key not in weights:  # asked once per architecture (or torchxrayvision model), not once per repeat
                weights[key] = (xrv_missing(key, fetch_weights) if xrv.is_xrv(key)
                                else imagenet_missing(config["arch"], fetch_weights))
            if weights[key]:
                cell.state, cell.detail = "needs weights", weights[key]
                continue
        if submit:
            submit_run(exp.preset, over, cell.name, reg, start=False)
            _existing(cell, reg.require(cell.name), config, reg, fingerprints, submit=False)
    return list(cells.values())


def stop(spec: StudySpec, prefix: str, reg: Registry, by: str = "the command line (study stop)") -> dict:
    """Cancel the study's queued and running runs in every repeat (running ones finish their step and
    keep last.pt; `study` again resumes them). {run: "cancelled" | "stopping" | "interrupted"}."""
    from ..runs.jobs import cancel
    from ..runs.manage import BUSY

    out = {}
    for r in range(known_repeats(spec, prefix, reg)):
        for exp in spec.experiments:
            row = reg.get(name := run_name(prefix, exp.key, r))
            if row is not None and row.status in BUSY:
                out[name] = cancel(name, reg, by=by)
    return out



def stop_summary(stopped: dict, spec: StudySpec, prefix: str, reg: Registry) -> str:
    """What a stop did and what stays, in words (issue 37, N8)."""
    running = sorted(n for n, v in stopped.items() if v != "cancelled")
    queued = sorted(n for n, v in stopped.items() if v == "cancelled")
    names = {run_name(prefix, e.key, r) for r in range(known_repeats(spec, prefix, reg)) for e in spec.experiments}
    done = sum(1 for r in reg.list() if r.name in names and r.status == "succeeded")
    if not stopped:
        return (f"Nothing of study {prefix!r} was queued or running; {done} finished run(s) stay. "
                "Start or continue picks up what is missing.")
    parts = []
    if running:
        parts.append(f"{len(running)} running ({', '.join(running[:4])}{' ...' if len(running) > 4 else ''}) "
                     "finish their step and keep their last checkpoint")
    if queued:
        parts.append(f"{len(queued)} queued cancelled before they started")
    return (f"Stopped {len(stopped)} run(s) of study {prefix!r}: " + "; ".join(parts) + f". {done} finished run(s) "
            "stay, with their results. Start or continue resumes the stopped ones where they were.")


def _refine(cell: Cell, reg: Registry) -> None:
    waiting = parent_state(reg, cell.row)
    if waiting:
        cell.state, cell.detail = waiting


def status(spec: StudySpec, prefix: str, reg: Registry, repeats: int | None = None) -> list[Cell]:
    """The cells as they stand in every repeat the registry holds (or `repeats`), without submitting,
    resuming or fetching anything."""
    observe(reg)
    repeats = max(repeats or 1, known_repeats(spec, prefix, reg))
    return plan(spec, prefix, reg, {}, submit=False, fetch_weights=False, repeats=repeats)


def unfinished(cells: list[Cell]) -> list[Cell]:
    return [c for c in cells if c.state in ACTIVE]


def watch(spec: StudySpec, prefix: str, reg: Registry, *, every: float = 5.0, on_change=None,
          timeout: float | None = None, repeats: int | None = None) -> list[Cell]:
    """Wait until no cell is queued, waiting or running; on_change(cells) after each change."""
    t0, last = time.time(), None
    while True:
        cells = status(spec, prefix, reg, repeats)
        snapshot = [(c.state, c.row.epochs_done if c.row else None, c.row.step if c.row else None) for c in cells]
        if snapshot != last and on_change:
            on_change(cells)
        last = snapshot
        if not unfinished(cells) or (timeout is not None and time.time() - t0 > timeout):
            return cells
        time.sleep(every)
