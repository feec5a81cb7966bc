"""Runs placed by a Ray cluster (CXR_EXECUTOR=ray): the executor beside the lab's own local queue.

With `CXR_EXECUTOR=local` (the default) nothing here is imported and Ray is not needed. With
`CXR_EXECUTOR=ray` (or `--executor ray` on `queue`/`study`, or the dashboard's setting), every queued
run, from the Train page, `queue`, `resume` or the study graph, is started by Ray on a node with free
resources, and the cluster's resources (not CXR_MAX_RUNNING) bound how many run.

One writer of the registry (docs/decisions/ray-executor.md). The SQLite registry stays on the head,
the machine of the dashboard and the CLI. A detached actor, `Head`, pinned to that machine, is its only
Ray-side user: it opens runs.sqlite there, and

- dispatches: every second it hands each queued run whose parent has succeeded to Ray as a task with
  the run's resources; Ray starts it where they are free;
- relays: remote trainers call the registry through it (`RemoteRegistry`), so no process on another
  node opens the file (SQLite's locking is unsafe on network file systems);
- watches: a task that ends without its trainer recording an end (a node lost, a worker killed) is
  marked interrupted with the reason, at once.

On the node, the task claims the run (queued -> running, recording where it landed), checks that the
node sees the shared run folders and cache, and runs the same trainer as the local queue
(`python -m engine worker RUN`) as a child process with its registry calls relayed; a cancel reaches
it as the same SIGTERM. Run folders and the image cache must be on storage every node mounts at the
same path (CXR_CHECKPOINTS, CXR_CACHE_DIR), and so must the lab's code.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from .states import RunError, RunStatus
from .store import Registry

log = logging.getLogger(__name__)

ENV_EXECUTOR, ENV_HEAD_ACTOR, ENV_NODE_IP = "CXR_EXECUTOR", "CXR_RAY_HEAD_ACTOR", "CXR_RAY_NODE_IP"
ENV_CPUS, ENV_GPUS, ENV_MEMORY, ENV_RESOURCES = "CXR_RAY_CPUS", "CXR_RAY_GPUS", "CXR_RAY_MEMORY_GB", "CXR_RAY_RESOURCES"
EXECUTORS = ("local", "ray")
NAMESPACE = "cxrlab"
STORAGE_MARK = ".cxr-storage"  # in the checkpoints folder: a token the nodes must read back
DISPATCH_EVERY_S = 1.0
POLL_S = 2.0  # how often a run's task asks the head whether it was cancelled
# What a remote trainer may do to the registry through the head (the Reporter's and work()'s calls).
RELAYED = ("get", "require", "update", "transition", "log_steps", "log_epoch", "truncate_after", "list", "create")
REPO = Path(__file__).resolve().parents[2]
_said: set = set()


def executor(value: str | None = None) -> str:
    """The executor asked for (a flag's value, else CXR_EXECUTOR, else the saved setting); 'local'
    for anything else, said once."""
    if value is None:
        value = os.environ.get(ENV_EXECUTOR)
    if value is None:
        from ..settings import saved
        value = saved("executor") or "local"
    value = value.strip().lower()
    if value not in EXECUTORS:
        if value not in _said:
            _said.add(value)
            log.warning("%s=%r is not one of %s: the local queue is used", ENV_EXECUTOR, value, ", ".join(EXECUTORS))
        return "local"
    return value


def run_resources(env=None) -> dict:
    """Ray options of each run: CPUs (CXR_RAY_CPUS, default 1), GPUs (CXR_RAY_GPUS, default 1 where
    the cluster has GPUs), memory in GB (CXR_RAY_MEMORY_GB) and custom resources (CXR_RAY_RESOURCES,
    JSON, e.g. '{"a100": 1}'). Bad values are refused in one line naming the variable."""
    env = os.environ if env is None else env
    out: dict = {}
    for var, key, conv in ((ENV_CPUS, "num_cpus", float), (ENV_GPUS, "num_gpus", float),
                           (ENV_MEMORY, "memory", lambda v: float(v) * 2**30)):
        raw = env.get(var)
        if raw in (None, ""):
            continue
        try:
            val = conv(raw)
        except ValueError:
            raise RunError(f"{var}={raw!r} is not a number") from None
        if not val >= 0:
            raise RunError(f"{var}={raw!r} must be 0 or more")
        out[key] = val
    raw = env.get(ENV_RESOURCES)
    if raw:
        try:
            res = json.loads(raw)
        except ValueError:
            raise RunError(f"{ENV_RESOURCES} is not JSON: {raw[:80]!r}") from None
        if not isinstance(res, dict) or not all(isinstance(k, str) and isinstance(v, (int, float)) and v >= 0
                                                for k, v in res.items()):
            raise RunError(f"{ENV_RESOURCES} must map resource names to numbers >= 0: {raw[:80]!r}")
        out["resources"] = res
    out.setdefault("num_cpus", 1.0)
    return out


# -- the head's side ---------------------------------------------------------------------------------------

def _ray():
    try:
        import ray
    except ImportError as exc:
        raise RunError("CXR_EXECUTOR=ray needs Ray: pip install -r requirements.txt (it pins ray[default])") from exc
    return ray


def connect(address: str | None = None):
    """Join the cluster at RAY_ADDRESS (Ray's own variable; 'auto' finds a local `ray start`)."""
    ray = _ray()
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or "auto"
        extra = {"_node_ip_address": os.environ[ENV_NODE_IP]} if os.environ.get(ENV_NODE_IP) else {}
        try:  # a trainer on a node joins as that node's address (its task said which)
            ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING,
                     configure_logging=False, **extra)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise RunError(f"cannot join the Ray cluster at {address!r} (RAY_ADDRESS): {str(exc).splitlines()[0]}; "
                           "start one with `ray start --head` or set CXR_EXECUTOR=local") from exc
    return ray


def head_name(root: Path) -> str:
    """The head actor of one checkpoints folder (several labs may share a cluster)."""
    import hashlib
    return "cxrlab-head-" + hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:12]


def storage_token(root: Path) -> str:
    """The checkpoints folder's mark, made once: a node that reads the same token sees the same folder."""
    mark = Path(root) / STORAGE_MARK
    try:
        return mark.read_text().strip()
    except OSError:
        pass
    token = secrets.token_hex(16)
    tmp = mark.with_name(mark.name + f".{os.getpid()}.tmp")
    tmp.write_text(token)
    os.replace(tmp, mark)
    return mark.read_text().strip()


def head(reg: Registry):
    """The head actor for this registry, started (detached, on this machine) if it is not running."""
    ray = connect()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    actor = ray.remote(_Head).options(
        name=head_name(reg.root), namespace=NAMESPACE, lifetime="detached", get_if_exists=True, num_cpus=0,
        max_concurrency=32, max_restarts=-1, scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False),
        runtime_env={"env_vars": _code_env()})
    from ..constants import default_cache_dir
    return actor.remote(str(reg.root.resolve()), storage_token(reg.root), run_resources(),
                        str(Path(default_cache_dir()).resolve()))


def _code_env() -> dict:
    """What a process on a node needs to import the lab: its code on the same path (PYTHONPATH)."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path}


def schedule(reg: Registry) -> list[str]:
    """Hand the queued runs that may start to Ray; returns the names handed over now."""
    ray = connect()
    return ray.get(head(reg).dispatch.remote(), timeout=60)


def cancel(reg: Registry, name: str) -> None:
    """Ask a Ray-placed run to stop: its task sends its trainer SIGTERM, as the local queue does."""
    ray = connect()
    ray.get(head(reg).stop.remote(name), timeout=60)


def dashboard_url() -> str | None:
    """Ray's own dashboard, when the cluster has one."""
    try:
        ray = connect()
        url = ray.get_runtime_context().dashboard_url if hasattr(ray.get_runtime_context(), "dashboard_url") else None
        url = url or ray.worker.get_dashboard_url()  # type: ignore[attr-defined]
    except Exception:  # no cluster reachable now: the page shows the runs without the link
        return None
    return (url if url.startswith("http") else f"http://{url}") if url else None


class _Head:
    """The registry's one user on the cluster (a detached Ray actor on the head machine)."""

    def __init__(self, root: str, token: str, resources: dict, cache: str):
        self.reg = Registry(root)
        self.root, self.token, self.resources, self.cache = root, token, resources, cache
        Path(cache).mkdir(parents=True, exist_ok=True)  # the nodes must see it (checked before each run)
        self.tasks: dict = {}  # run name -> ObjectRef of its task
        self.stopping: set[str] = set()
        self.lock = threading.Lock()
        self.loop = threading.Thread(target=self._loop, daemon=True, name="cxr-dispatch")
        self.loop.start()

    # relayed registry calls (RemoteRegistry)
    def call(self, method: str, args: tuple, kwargs: dict):
        if method not in RELAYED:
            raise RunError(f"the head does not relay {method!r}")
        return getattr(self.reg, method)(*args, **kwargs)

    def claim(self, name: str, placement: dict) -> bool:
        """The task on its node takes the run: queued -> running, with where it landed."""
        return self.reg.transition(name, "running", only_from=(RunStatus.QUEUED,), pid=None, heartbeat=time.time(),
                                   error=None, placement=placement)

    def stop(self, name: str) -> None:
        self.stopping.add(name)

    def should_stop(self, name: str) -> bool:
        return name in self.stopping

    def ping(self) -> dict:
        """What the head is doing, and the CPU time it has used (bench/bench_ray.py: its overhead per run)."""
        import resource
        use = resource.getrusage(resource.RUSAGE_SELF)
        return {"root": self.root, "tasks": sorted(self.tasks), "pid": os.getpid(),
                "cpu_s": use.ru_utime + use.ru_stime}

    def dispatch(self) -> list[str]:
        import ray
        with self.lock:
            started = []
            for row in self.reg.list():
                if row.status != RunStatus.QUEUED or row.name in self.tasks:
                    continue
                if row.depends_on:
                    parent = self.reg.get(row.depends_on)
                    if parent is None or parent.status != "succeeded":
                        continue  # the study graph's order: a child waits for its parent to succeed
                opts = dict((row.placement or {}).get("requested") or self.resources)  # asked for when queued
                opts.setdefault("num_gpus", 1.0 if ray.cluster_resources().get("GPU") else 0.0)
                ref = ray.remote(_train_task).options(max_retries=0, name=f"cxrlab:{row.name}",
                                                      runtime_env={"env_vars": _code_env()}, **opts).remote(
                    row.name, self.root, self.cache, self.token, head_name(Path(self.root)), opts)
                self.tasks[row.name] = ref
                started.append(row.name)
            return started

    def _loop(self) -> None:
        while True:
            time.sleep(DISPATCH_EVERY_S)
            try:
                self._settle()
                self.dispatch()
            except Exception as exc:  # keep watching; said in the actor's log
                log.warning("the Ray head could not dispatch: %s", exc)

    def _settle(self) -> None:
        """Tasks that ended: a run still 'running' after its task ended lost its trainer (node died,
        worker killed) and is interrupted with the reason; a queued run whose task ended is handed out again."""
        import ray
        with self.lock:
            refs = list(self.tasks.values())
            if not refs:
                return
            done, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            for name, ref in [(n, r) for n, r in self.tasks.items() if r in done]:
                del self.tasks[name]
                self.stopping.discard(name)
                try:
                    ray.get(ref)
                    why = "its Ray task ended before the trainer recorded an end"
                except Exception as exc:  # NodeDiedError, WorkerCrashedError, TaskCancelledError, ...
                    why = f"its Ray task was lost ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
                row = self.reg.get(name)
                if row is not None and row.status == "running":
                    self.reg.transition(name, "interrupted", only_from=("running",), pid=None, error=why)


# -- the node's side ---------------------------------------------------------------------------------------

def _train_task(name: str, root: str, cache: str, token: str, actor_name: str, resources: dict) -> int:
    """A run on the node Ray chose: claim it, check the shared storage, train it in a child process."""
    import ray
    head_actor = ray.get_actor(actor_name, namespace=NAMESPACE)
    ctx = ray.get_runtime_context()
    gpus = [str(g) for g in ray.get_gpu_ids()]
    host = socket.gethostname()
    node_id = ctx.get_node_id()
    ip = next((n.get("NodeManagerAddress") for n in ray.nodes() if n.get("NodeID") == node_id), None) or "?"
    placement = {"executor": "ray", "host": host, "ip": ip, "node_id": node_id, "gpus": gpus, "requested": resources}
    if not ray.get(head_actor.claim.remote(name, placement)):
        return 0  # cancelled (or taken) while it waited for resources
    row = ray.get(head_actor.call.remote("require", (name,), {}))
    problem = _storage_problem(Path(root), token, Path(cache), row.config.get("data", {}))
    if problem:
        ray.get(head_actor.call.remote("transition", (name, "failed"), {
            "only_from": ("running",), "finished": time.time(),
            "error": f"node {host} ({placement['ip']}, Ray node {placement['node_id'][:12]}) {problem}"}))
        return 2
    threads = max(1, int(resources.get("num_cpus") or 1))
    env = {**os.environ, **_code_env(), "CXR_CHECKPOINTS": root, "CXR_CACHE_DIR": cache, ENV_HEAD_ACTOR: actor_name,
           ENV_EXECUTOR: "local",
           "RAY_ADDRESS": ctx.gcs_address, ENV_NODE_IP: ip, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(threads),
           "CUDA_VISIBLE_DEVICES": ",".join(gpus)}
    folder = Path(root) / name
    with open(folder / "process.log", "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "engine", "worker", name], cwd=REPO, env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=_die_with_parent)
    signalled = False
    try:
        while proc.poll() is None:
            time.sleep(POLL_S)
            if not signalled and ray.get(head_actor.should_stop.remote(name)):
                proc.send_signal(signal.SIGTERM)  # the trainer finishes its step, writes last.pt, ends cancelled
                signalled = True
    except BaseException:  # ray.cancel(): the same stop as a cancel
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        raise
    return proc.returncode


def _die_with_parent() -> None:
    """In the trainer child: die when its Ray task's process dies (a lost node, a killed worker), so no
    orphaned trainer goes on writing a run the head has marked interrupted. Linux only; elsewhere a no-op."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _storage_problem(root: Path, token: str, cache: Path, data: dict) -> str | None:
    """Why this node cannot train the run: the shared run folders, cache or data roots it does not see."""
    try:
        seen = (root / STORAGE_MARK).read_text().strip()
    except OSError:
        return f"does not see the run folders {root} (CXR_CHECKPOINTS): mount the shared storage there"
    if seen != token:
        return f"sees another folder at {root} (CXR_CHECKPOINTS): every node must mount the same shared storage"
    if not cache.is_dir():
        return f"does not see the image cache {cache} (CXR_CACHE_DIR): mount the shared storage there"
    for key in ("nih_root", "covid_root", "manifest"):
        where = data.get(key)
        if where and not Path(where).exists():
            return f"does not see the data {where} ({key}): every node must see the data at the same path"
    return None


class RemoteRegistry:
    """The registry as a trainer on a Ray node sees it: its calls go to the head actor; run folders are
    the shared ones under CXR_CHECKPOINTS. Nothing here opens runs.sqlite."""

    remote = True
    read_only = None

    def __init__(self, actor_name: str, root=None):
        ray = connect(os.environ.get("RAY_ADDRESS"))
        self._actor = ray.get_actor(actor_name, namespace=NAMESPACE)
        self._ray = ray
        from ..constants import default_checkpoints_dir
        self.root = Path(root) if root else default_checkpoints_dir()
        self.db_path = f"runs.sqlite on the head (through Ray actor {actor_name})"

    def __getattr__(self, method: str):
        if method not in RELAYED:
            raise AttributeError(method)

        def relayed(*args, **kwargs):
            return self._ray.get(self._actor.call.remote(method, args, kwargs), timeout=120)
        return relayed

    def run_dir(self, name: str) -> Path:
        return Registry.run_dir(self, name)  # type: ignore[arg-type]

    def folder(self, name: str):
        return Registry.folder(self, name)  # type: ignore[arg-type]


def worker_registry() -> Registry | RemoteRegistry:
    """The registry of `engine worker`: relayed through the head on a Ray node, else the file here."""
    name = os.environ.get(ENV_HEAD_ACTOR)
    return RemoteRegistry(name) if name else Registry()


def queue_columns(row) -> dict:
    """Where a run ran, for the queue and the Overview: node and GPUs (empty for the local queue)."""
    p = row.placement or {}
    if not p:
        return {"node": "", "gpu": ""}
    node = p.get("host", "")
    if p.get("node_id"):
        node += f" (Ray {p['node_id'][:8]})"
    return {"node": node, "gpu": ",".join(p.get("gpus") or []) or "-"}
