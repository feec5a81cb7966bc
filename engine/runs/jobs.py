"""Starting, queueing, cancelling and resuming runs: one way for the Train page, the CLI and the
study graph alike.

submit(config) -> row `queued` -> `schedule` claims it (capacity: CXR_MAX_RUNNING, default 1) and
starts `python -m engine worker RUN`, its own process and session -> `work` trains it. The CLI's
`train` submits and claims in one step and runs `work` in the foreground. The scheduler runs where
work is submitted (submit, resume) and where it ends (`work`), never in a page's read poll.
`cancel` sends SIGTERM to the trainer process alone: it finishes its step, writes last.pt and ends
`cancelled`; its DataLoader workers are shut down by the loader. `resume` queues it again.
"""
from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

from ..config import ConfigError, ExperimentConfig, from_preset, set_field
from ..models import xrv
from .details import parent_state, progress_text
from .folder import GPU_FILE  # noqa: F401 - read as jobs.GPU_FILE too
from .launch import (  # noqa: F401 - capacity, the GPU helpers and _spawn are read as jobs.* too
    REPO,
    _gpu_for,
    _spawn,
    assign_gpu,
    capacity,
    capacity_text,
    cpu_threads,
    start_queued,
    visible_gpus,
)
from .liveness import observe, pid_alive
from .reporter import Reporter
from .states import ACTIVE, RunError, RunStatus, validate_name
from .store import Registry

RESUME_OVERRIDABLE = ("epochs", "early_stopping", "num_workers", "device", "checkpoint_minutes", "bootstrap",
                      "keep_last")
log = logging.getLogger("engine.runs")


def resolve_init(init: str, registry: Registry, wait_for_parent: bool = False) -> str:
    """scratch / imagenet pass through, and xrv:NAME once its weights file is here (else refused,
    naming the file, the folder and the URL: before any run is recorded); a run name becomes its best
    (or last) checkpoint path. With wait_for_parent, a queued or running run is kept by name."""
    if init in ("scratch", "imagenet"):
        return init
    if xrv.is_xrv(init):
        missing = xrv.weights_missing(xrv.xrv_name(init), fetch=True)
        if missing:
            raise xrv.XrvUnavailable(missing)
        xrv.load_state(xrv.xrv_name(init))  # a file that cannot be read safely: refused before a run is recorded
        return init
    row = registry.get(init)
    if row is not None:
        folder = registry.folder(init)
        if wait_for_parent and row.status in ACTIVE:
            return init
        if folder.has_checkpoint():
            return str(folder.best_checkpoint())
        raise FileNotFoundError(f"init run {init!r} has no checkpoint yet (status {row.status})")
    if Path(init).is_file():
        return str(Path(init).resolve())
    raise FileNotFoundError(f"init {init!r} is neither scratch, imagenet, an existing run nor a checkpoint file")


def prepare_config(preset: str, overrides: dict, registry: Registry, wait_for_parent: bool = False) -> ExperimentConfig:
    """Validate everything a run needs before it is recorded (raises ConfigError / FileNotFoundError).
    With wait_for_parent, `init` may name a queued or running run (kept by name)."""
    from ..data.tasks import check_holdout, check_manifest, needed_roots

    cfg = from_preset(preset, overrides)
    _check_device(cfg.train.device)
    for kind, root in needed_roots(cfg).items():
        setattr(cfg.data, f"{kind}_root", str(root))
    if cfg.data.task == "manifest":  # read and checked whole: a bad manifest is refused before a run is recorded
        check_manifest(cfg)
    check_holdout(cfg)
    match_parent_arch(cfg, "arch" in overrides, registry)
    cfg.model.init = resolve_init(cfg.model.init, registry, wait_for_parent)
    return cfg


class ParentArchMismatch(ConfigError):
    """`init` names a run of another architecture than the one asked for; `arch` is the parent's."""

    def __init__(self, parent: str, arch: str, wanted: str):
        self.arch = arch
        super().__init__("arch", wanted, f"init {parent!r} is a {arch} model, so its weights cannot start a "
                                         f"{wanted}; use arch {arch} to start from it, or choose a {wanted} run")


def match_parent_arch(cfg: ExperimentConfig, arch_given: bool, registry: Registry) -> None:
    """A transfer starts from its parent's backbone, so it has the parent's architecture: taken from the
    parent when no arch was asked for, refused before anything is recorded when another one was."""
    init = cfg.model.init
    if xrv.is_xrv(init):  # torchxrayvision's weights are DenseNet-121s
        if arch_given and cfg.model.arch != "densenet121":
            raise ParentArchMismatch(init, "densenet121", cfg.model.arch)
        cfg.model.arch = "densenet121"
        return
    row = None if init in ("scratch", "imagenet") else registry.get(init)
    arch = row and row.config.get("model", {}).get("arch")
    if not arch or arch == cfg.model.arch:
        return
    if arch_given:
        raise ParentArchMismatch(init, arch, cfg.model.arch)
    log.info("init run %s is a %s model: the new run uses %s (not the preset's %s)", init, arch, arch, cfg.model.arch)
    cfg.model.arch = arch


def _check_device(device: str) -> None:
    """Refuse, before a run is recorded, a CUDA device this machine does not have (engine.devices;
    torch is imported only for a CUDA request)."""
    if device.startswith("cuda"):
        from ..devices import check_device
        check_device(device)


def parent_of(cfg: ExperimentConfig, registry: Registry) -> str | None:
    """The run a config waits for: its init when that names a run not yet finished."""
    init = cfg.model.init
    if init in ("scratch", "imagenet") or xrv.is_xrv(init) or Path(init).is_file():
        return None
    return init if registry.get(init) is not None else None


def submit(preset: str, overrides: dict, name: str | None = None, registry: Registry | None = None,
           start: bool = True, claim: bool = False, log_to=()) -> str:
    """Record a validated run and return its name. Queued (and started when capacity allows; a run
    whose init names a queued or running run waits for that parent to succeed), or, with
    claim=True, running in this process at once (the CLI's foreground `train`). `log_to`: tracker
    targets (tensorboard:DIR, mlflow:URI; engine.tracking), with the saved `log_to` setting's."""
    from .. import tracking
    reg = registry or Registry()
    cfg = prepare_config(preset, overrides, reg, wait_for_parent=not claim)
    log_to = tracking.normalise(log_to)  # a bad target is refused before anything is recorded
    name = validate_name(name) if name else reg.unique_name(preset)
    if claim:
        reg.create(name, cfg.to_dict(), preset, status="running", pid=os.getpid(), heartbeat=time.time())
        tracking.attach(reg.folder(name), log_to)
        return name
    reg.create(name, cfg.to_dict(), preset, status=RunStatus.QUEUED, depends_on=parent_of(cfg, reg), placement=_requested())
    tracking.attach(reg.folder(name), log_to)
    if start:
        schedule(reg)
    return name


def _requested() -> dict | None:
    """A queued run's placement request: with CXR_EXECUTOR=ray, the resources it asks of the cluster
    (CXR_RAY_CPUS/GPUS/MEMORY_GB/RESOURCES where it was queued); None for the local queue."""
    from .cluster import executor, run_resources
    return {"executor": "ray", "requested": run_resources()} if executor() == "ray" else None


def resume(name: str, registry: Registry | None = None, *, overrides: dict | None = None, start: bool = True,
           claim: bool = False, log_to=()) -> None:
    """Queue a cancelled, interrupted or failed run again (a succeeded one only with more epochs);
    `overrides` may change RESUME_OVERRIDABLE fields; `log_to` adds trackers. claim=True: run it in
    this process now."""
    from .. import tracking
    log_to = tracking.normalise(log_to)
    reg = registry or Registry()
    observe(reg)
    row = reg.require(name)
    overrides = overrides or {}
    if row.status in ACTIVE:
        raise RunError(f"run {name!r} is {row.status}" + (f" (pid {row.pid})" if row.pid else ""))
    if row.status == "succeeded" and "epochs" not in overrides:
        raise RunError(f"run {name!r} already succeeded; pass --epochs N to train it further")
    if row.status == "succeeded" and not reg.folder(name).last.is_file():
        raise RunError(f"run {name!r} has no last.pt (dropped when it succeeded, or pruned): it cannot be trained "
                       f"further; start a new run with --init {name}, and pass --keep-last to runs you mean to extend")
    bad = [k for k in overrides if k not in RESUME_OVERRIDABLE]
    if bad:
        raise RunError(f"a resume can only change {', '.join(RESUME_OVERRIDABLE)}; not {', '.join(bad)}")
    cfg = ExperimentConfig.from_dict(row.config)
    for k, v in overrides.items():
        set_field(cfg, k, v)
    cfg.validate()
    _check_device(cfg.train.device)
    now = {"pid": os.getpid(), "heartbeat": time.time()} if claim else {}
    if not claim:
        now["placement"] = _requested()
    if log_to:
        tracking.attach(reg.folder(name), log_to)
    reg.transition(name, *(ACTIVE if claim else (RunStatus.QUEUED,)), config=cfg.to_dict(), error=None, **now)
    if start and not claim:
        schedule(reg)


def schedule(registry: Registry | None = None) -> list[str]:
    """Start the oldest queued runs while capacity allows; returns the names started. On a machine
    with several GPUs each worker is given its own (CUDA_VISIBLE_DEVICES), so CXR_MAX_RUNNING=N
    spreads N runs over N GPUs."""
    reg = registry or Registry()
    observe(reg, schedule_next=False)
    return start_queued(reg)


def cancel(name: str, registry: Registry | None = None, pid_wait_s: float = 10.0,
           by: str = "the command line (python -m engine cancel)") -> str:
    """Cancel a queued run at once ("cancelled"), or ask a running one to stop after its step
    ("stopping"); "interrupted" if its trainer was already gone. `by` is said in the run's end."""
    reg = registry or Registry()
    row = reg.require(name)
    if row.status == RunStatus.QUEUED and reg.transition(name, "cancelled", only_from=(RunStatus.QUEUED,), finished=time.time(),
                                                    error=f"cancelled from {by} before it started"):
        return "cancelled"
    deadline = time.time() + pid_wait_s
    while (row := reg.require(name)).status == "running" and not row.pid and time.time() < deadline:
        time.sleep(0.1)  # claimed by the scheduler; its process is being started
    if row.status != "running":
        raise RunError(f"run {name!r} is {row.status}, not running")
    if (row.placement or {}).get("executor") == "ray":  # its trainer is on a Ray node: the head signals it
        from .cluster import cancel as cluster_cancel
        reg.folder(name).request_cancel(by)
        cluster_cancel(reg, name)
        return "stopping"
    try:
        if not pid_alive(row.pid):
            raise ProcessLookupError
        reg.folder(name).request_cancel(by)
        os.kill(int(row.pid), signal.SIGTERM)  # the trainer only: never its loader workers
    except ProcessLookupError:
        observe(reg, stale_after=0)
        return "interrupted"
    return "stopping"


def queue(registry: Registry | None = None) -> list[dict]:
    """Everything running or queued, in the order the scheduler takes it: running runs first, then
    queued ones by place (the oldest free to start is next); a run held by its parent says so."""
    reg = registry or Registry()
    runs = observe(reg)
    out = []
    for r in sorted((r for r in runs if r.status == "running"), key=lambda r: r.started or r.created):
        prog = r.progress or {}
        out.append({"place": "running", "run": r.name, "preset": r.preset,
                    "init": r.config.get("model", {}).get("init"),
                    "state": progress_text(prog)[1] if prog.get("phase") else "starting", **where(reg, r),
                    "created": r.created})
    place = 0
    for r in sorted((r for r in runs if r.status == RunStatus.QUEUED), key=lambda r: (r.created, r.name)):
        held = parent_state(reg, r)
        if held is None:
            place += 1
        out.append({"place": str(place) if held is None else held[0], "run": r.name, "preset": r.preset,
                    "init": r.config.get("model", {}).get("init"),
                    "state": held[1] if held else ("next to start" if place == 1 else f"{place - 1} queued ahead"),
                    "node": "", "gpu": "", "created": r.created})
    return out


def where(reg: Registry, row) -> dict:
    """Where a running run runs: the Ray node and its GPUs, or this machine and the GPU it was given."""
    from .cluster import queue_columns
    if row.placement:
        return queue_columns(row)
    try:
        gpu = reg.folder(row.name).gpu_file.read_text().strip()
    except (OSError, RunError):
        gpu = ""
    return {"node": "this machine", "gpu": gpu or "-"}


def wait(name: str, registry: Registry | None = None, timeout: float = 300.0, poll: float = 0.5) -> dict:
    """Block until the run leaves `running` (or the timeout passes); returns its row."""
    reg = registry or Registry()
    deadline = time.time() + timeout
    while (row := reg.require(name)).status == "running" and time.time() < deadline:
        time.sleep(poll)
        observe(reg)
    return row


def work(name: str, registry: Registry | None = None, progress=None) -> str:
    """Train a run claimed for this process (status running) to its end: the body of both
    `engine worker RUN` and the CLI's `train`. Resumes from last.pt when the folder has one.
    Failures are recorded with their reason and re-raised; the queue advances afterwards."""
    from ..training.distributed import dist_info
    from ..training.loop import fit  # training imports runs; runs reaches training only to work a run
    from ..training.signals import stop_requests
    from ..tracking.live import Trackers
    reg = registry or Registry()
    rank = dist_info()[0]
    row = reg.require(name)
    if row.status != "running":
        raise RunError(f"run {name!r} is {row.status}; only a claimed (running) run can be trained")
    folder = reg.folder(name)
    reporter = Reporter(reg, name) if rank == 0 else None
    try:  # from here on every failure, start-up included, is recorded as the run's error
        try:  # before fit; fit's own failures reach the reporter through on_exception
            cfg = ExperimentConfig.from_dict(row.config)
            if reporter:
                reg.update(name, pid=os.getpid(), heartbeat=time.time())
                if parent_of(cfg, reg):  # the parent it waited for has finished: train from its checkpoint
                    cfg.model.init = resolve_init(cfg.model.init, reg)
                    reg.update(name, config=cfg.to_dict())
        except BaseException as exc:
            if reporter:
                reporter.on_exception(exc)
            raise
        trackers = Trackers.of_run(reg, name) if reporter else None  # TensorBoard / MLflow (tracking.json)
        with stop_requests() as stop:
            outcome = fit(cfg, folder, callbacks=[reporter, progress, trackers], resume=folder.last.is_file(),
                          stop=stop)
        if outcome == "succeeded" and reporter and not cfg.train.keep_last:
            try:  # the optimizer state is only needed to train further
                freed = folder.drop_last()
            except OSError as exc:  # a read-only folder: the run succeeded all the same
                log.warning("could not drop %s: %s", folder.last, exc)
            else:
                if freed:
                    log.info("last.pt dropped (%.0f MB): the run is used through best.pt; --keep-last keeps it",
                             freed / 2**20)
        return outcome
    finally:
        if reporter:
            reporter.close()
        if reporter and not getattr(reg, "remote", False):  # on a Ray node the head dispatches the next
            try:
                schedule(reg)
            except Exception as exc:  # the next submission schedules again
                log.warning("could not start the next queued run: %s", exc)
