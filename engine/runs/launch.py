"""Starting queued runs: claim the oldest while capacity allows and start each in a trainer process of
its own, with its GPU (CUDA_VISIBLE_DEVICES) or its share of the CPU cores. Used by the scheduler
(engine.runs.jobs.schedule) and by the reader that finds a dead trainer (engine.runs.liveness), so
a freed slot is handed on whoever notices it."""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from .folder import RunDir
from .states import RunStatus
from .store import Registry

REPO = Path(__file__).resolve().parents[2]
log = logging.getLogger(__name__)


_said: set = set()


def say_once(key: str, message: str, *args) -> None:
    """A warning about an odd setting, once per process (hostile round 4: odd values are not silent)."""
    if key not in _said:
        _said.add(key)
        log.warning(message, *args)


def env_number(name: str, default, kind=int, least=None, meaning: str = ""):
    """A number from the environment variable `name` (`kind`: int or float), `default` when unset; an
    odd value is said once ("... : `meaning`") and the default used; a value under `least` is raised to it."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        say_once(f"{name}:{raw}", "%s=%r is not a %s: %s", name, raw,
                 "whole number" if kind is int else "number", meaning)
        return default
    if least is not None and value < least:
        say_once(f"{name}:{raw}", "%s=%r is less than %s: %s", name, raw, least, meaning)
        return least
    return value


def capacity() -> int:
    return env_number("CXR_MAX_RUNNING", 1, int, least=1, meaning="1 run at a time")


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def machine() -> dict:
    """This machine as a cost estimate needs it, without importing torch: its cores, the runs it trains
    at once, its GPUs."""
    return {"cores": cores(), "running": capacity(), "gpus": len(visible_gpus())}


def capacity_text() -> str:
    """How many runs may run at once, in words: the local queue's slots, or the Ray cluster's resources."""
    from .cluster import executor
    if executor() == "ray":
        return "placed by the Ray cluster at " + (os.environ.get("RAY_ADDRESS") or "auto") + \
            " (its free resources bound how many run)"
    return f"at most {capacity()} run(s) at a time"


def visible_gpus(env: dict | None = None, dev: Path = Path("/dev")) -> list[str]:
    """The GPUs this machine lets workers use, without importing torch: CUDA_VISIBLE_DEVICES when
    set (ids or UUIDs; empty = none), else the NVIDIA device files /dev/nvidia0, /dev/nvidia1, ..."""
    env = os.environ if env is None else env
    if "CUDA_VISIBLE_DEVICES" in env:
        raw = env["CUDA_VISIBLE_DEVICES"]
        ids = [g.strip() for g in raw.split(",") if g.strip() and g.strip() != "-1"]
        odd = [g for g in ids if not (g.isdigit() or g.startswith(("GPU-", "MIG-")))]
        if odd:  # CUDA itself reads the list up to its first bad entry
            say_once(f"cuda:{raw}", "CUDA_VISIBLE_DEVICES=%r has entries that are neither GPU numbers nor GPU UUIDs "
                     "(%s): CUDA reads it only up to the first, so the lab uses %s", raw, ", ".join(odd),
                     ids[:ids.index(odd[0])] or "no GPU")
            return ids[:ids.index(odd[0])]
        return ids
    try:
        found = [p.name[len("nvidia"):] for p in dev.iterdir() if p.name[len("nvidia"):].isdigit()
                 and p.name.startswith("nvidia")]
    except OSError:
        return []
    return sorted(found, key=int)


def assign_gpu(visible: list[str], busy: list[str]) -> str | None:
    """The GPU for the next worker: the first with the fewest running workers (one each while
    CXR_MAX_RUNNING <= the number of GPUs); None on a machine without GPUs."""
    if not visible:
        return None
    load = {g: busy.count(g) for g in visible}
    return min(visible, key=lambda g: (load[g], visible.index(g)))


def _gpu_for(reg: Registry, name: str) -> str | None:
    row = reg.require(name)
    device = row.config.get("train", {}).get("device", "auto")
    if device not in ("auto", "cuda"):
        return None  # cpu, or an explicit cuda:N that indexes every GPU
    busy = []
    for r in reg.list():
        if r.status == "running" and r.name != name:
            try:
                busy.append(reg.folder(r.name).gpu_file.read_text().strip())
            except OSError:
                pass
    return assign_gpu(visible_gpus(), busy)


def cpu_threads() -> int | None:
    """Torch threads for each CPU trainer when several run at once: the cores shared out
    (CXR_MAX_RUNNING=2 on 2 cores: 1 each), so N trainers do not each start one thread per core and
    fight over them (2 cores, two 2-epoch runs: side by side at 1 thread each 85 s, one after the
    other at 2 threads 116 s). None with one run at a time, or when OMP_NUM_THREADS is
    set by the user. A thread count changes a run's float rounding, so runs are bit-reproducible at
    the same count."""
    if capacity() <= 1 or os.environ.get("OMP_NUM_THREADS"):
        return None
    return max(1, cores() // capacity())


def _spawn(folder: RunDir, gpu: str | None = None) -> int:
    folder.path.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CXR_CHECKPOINTS": str(folder.path.parent), "PYTHONUNBUFFERED": "1"}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
        folder.gpu_file.write_text(gpu)
    else:
        if (threads := cpu_threads()) is not None:
            env["OMP_NUM_THREADS"] = str(threads)
        folder.gpu_file.unlink(missing_ok=True)
    with open(folder.process_log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "engine", "worker", folder.name], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    return proc.pid


KEEPER_LOCK = "runs.sqlite-keeper.lock"  # beside the registry; a run can never take the name (states.RESERVED_PREFIX)


def keeper_poll_s() -> float:
    """Seconds between the queue keeper's looks (CXR_QUEUE_POLL_S, default 5); 0: no keeper, the queue
    moves only when a trainer ends or a reader looks."""
    return env_number("CXR_QUEUE_POLL_S", 5.0, float, least=0.0, meaning="the queue keeper looks every 5 s")


@contextlib.contextmanager
def keeper_lock(reg: Registry, wait_s: float = 0.0):
    """Hold this registry's queue-keeper lock while the block runs: yields True, or False when another
    keeper holds it (tried for `wait_s`). An unwritable folder raises OSError."""
    with open(reg.root / KEEPER_LOCK, "a") as fh:  # closing the file releases the lock
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = True
                break
            except OSError:
                if time.monotonic() >= deadline:
                    held = False
                    break
                time.sleep(0.1)
        yield held


def keeper_free(reg: Registry) -> bool:
    """True when no queue keeper holds this registry's lock."""
    try:
        with keeper_lock(reg) as held:
            return held
    except OSError:
        return False


def wake_keeper(reg: Registry) -> None:
    """With runs left queued behind a running one, make sure a queue keeper watches this registry: a
    detached process (`python -m engine keeper`) that settles a trainer killed without a word (kill -9,
    a lost machine) and starts the next run, even when nobody looks; it ends when nothing is queued."""
    if keeper_poll_s() <= 0 or os.environ.get("CXR_QUEUE_KEEPER") or not keeper_free(reg):
        return
    env = {**os.environ, "CXR_CHECKPOINTS": str(reg.root), "CXR_QUEUE_KEEPER": "1"}
    try:
        subprocess.Popen([sys.executable, "-m", "engine", "keeper"], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError as exc:
        say_once("keeper", "could not start the queue keeper (%s): the queue moves when a reader looks", exc)


def start_queued(reg: Registry) -> list[str]:
    """Start the oldest queued runs while capacity allows (the caller has settled dead trainers
    first); returns the names started. With CXR_EXECUTOR=ray they are handed to the cluster instead
    (engine.runs.cluster), whose resources bound how many run."""
    from .cluster import executor
    if getattr(reg, "remote", False):
        return []  # a trainer on a Ray node: the head dispatches
    if executor() == "ray":
        from .cluster import schedule
        return schedule(reg)
    started = []
    while (name := reg.claim_next(capacity())) is not None:
        try:
            pid = _spawn(reg.folder(name), _gpu_for(reg, name))
        except OSError as exc:
            reg.transition(name, "failed", only_from=("running",), finished=time.time(),
                           error=f"could not start the trainer: {exc}")
            continue
        reg.update(name, pid=pid, heartbeat=time.time(), placement=None)  # this machine's queue placed it
        started.append(name)
    if any(r.status == RunStatus.QUEUED for r in reg.list()):
        wake_keeper(reg)
    return started
