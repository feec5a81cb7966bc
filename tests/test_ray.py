"""Runs placed by a real two-node Ray cluster on 127.0.0.1 (issue 35): placement, one writer of the
registry, the study graph's order, cancel, a lost node, the storage check, and exactness against the
local queue. Custom resources stand in for GPUs (`slot` on both nodes, `node2` on the second only)."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import REPO, TINY, ms, warm_cache

from engine.runs import Registry

if importlib.util.find_spec("ray") is None:
    pytest.skip("Ray is not installed (pip install -r requirements.txt)", allow_module_level=True)

CLUSTER_START_S = 240


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory, _pack_hash_journal):
    """A head and a second node on 127.0.0.1 (tests/ray_local_cluster.py, a process of its own), with Ray's
    files in a folder of their own (RAY_TMPDIR); stopped at the end of the module. The test process never
    joins the cluster: the CLI does, in its own processes."""
    temp = Path("/tmp") / f"cxr-ray-{os.getpid()}"  # not /tmp/ray; Ray's socket paths must stay short
    temp.mkdir(exist_ok=True)
    ck = tmp_path_factory.mktemp("ray-checkpoints")
    env = {**os.environ, "RAY_TMPDIR": str(temp), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "RAY_USAGE_STATS_ENABLED": "0", "CXR_EXECUTOR": "ray", "CXR_CHECKPOINTS": str(ck),
           "CXR_CACHE_DIR": str(warm_cache(ck.parent / "ray-cache", _pack_hash_journal)),
           "CXR_RAY_RESOURCES": json.dumps({"slot": 1}),
           "PYTHONPATH": str(REPO)}
    env.pop("CXR_MAX_RUNNING", None)
    helper = subprocess.Popen([sys.executable, str(REPO / "tests" / "ray_local_cluster.py")], env=env, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(temp / "cluster.log", "w"))
    try:
        started = _read_line(helper, CLUSTER_START_S, temp)
        env["RAY_ADDRESS"] = started["address"]

        def kill_second():
            helper.stdin.write("kill-second\n")
            helper.stdin.flush()
            assert _read_line(helper, 120, temp)["removed"]

        yield {"env": env, "checkpoints": ck, "address": started["address"], "kill_second": kill_second}
    finally:
        try:
            helper.communicate("stop\n", timeout=ms(120) / 1000)
        except (subprocess.TimeoutExpired, OSError, ValueError):
            helper.kill()
        _kill_leftovers(temp)
        shutil.rmtree(temp, ignore_errors=True)


def _read_line(helper, seconds: float, temp: Path) -> dict:
    box: dict = {}
    reader = threading.Thread(target=lambda: box.setdefault("line", helper.stdout.readline()), daemon=True)
    reader.start()
    reader.join(ms(seconds) / 1000)
    if not box.get("line"):
        helper.kill()
        raise AssertionError("the Ray cluster did not answer: " + (temp / "cluster.log").read_text()[-3000:])
    return json.loads(box["line"])


def _kill_leftovers(temp: Path) -> None:
    """Any process of this cluster still alive (a trainer, a worker): its environment names our RAY_TMPDIR."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if f"RAY_TMPDIR={temp}\0".encode() in (proc / "environ").read_bytes() + b"\0":
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass


def cli(env, *args, timeout=240, **extra_env):
    out = subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=REPO, env={**env, **extra_env},
                         capture_output=True, text=True, timeout=ms(timeout) / 1000)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def queue_tiny(rc, name, *args, epochs=1, **extra_env):
    return cli(rc["env"], "queue", "--preset", "covid-scratch", "--covid-root", rc["pack"] / "covid", "--epochs", epochs,
               "--name", name, *TINY, *args, **extra_env)


def wait_for(reg: Registry, names, statuses=("succeeded", "failed", "cancelled", "interrupted"), timeout=300):
    deadline = time.time() + ms(timeout) / 1000
    while time.time() < deadline:
        rows = {n: reg.get(n) for n in names}
        if all(r is not None and r.status in statuses for r in rows.values()):
            return rows
        time.sleep(1)
    raise AssertionError({n: (r.status, r.error) if r else None for n, r in rows.items()})


@pytest.fixture
def rc(ray_cluster, data_pack):
    return {**ray_cluster, "pack": data_pack, "reg": Registry(ray_cluster["checkpoints"])}


def test_two_tiny_runs_land_on_two_nodes_and_match_the_local_queue(rc, tmp_path):
    reg = rc["reg"]
    queue_tiny(rc, "ray-a")
    queue_tiny(rc, "ray-b")
    rows = wait_for(reg, ["ray-a", "ray-b"])
    assert {r.status for r in rows.values()} == {"succeeded"}, {n: r.error for n, r in rows.items()}
    nodes = {r.placement["node_id"] for r in rows.values()}
    assert len(nodes) == 2, "two runs of one slot each on two one-slot nodes"
    assert all(r.placement["ip"] == "127.0.0.1" and r.placement["executor"] == "ray" for r in rows.values())
    # the curves and the end came through the head: the same rows as a local run has
    assert reg.epochs("ray-a") and reg.steps("ray-a")
    assert "ran on" in cli(rc["env"], "runs", "show", "ray-a").stdout  # where it ran, in words
    # Ray's own lists show them
    tasks = subprocess.run(["ray", "list", "tasks", "--address", rc["address"], "--format", "json",
                            "--filter", "name=cxrlab:ray-a", "--detail"], capture_output=True, text=True,
                           timeout=ms(120) / 1000, env=rc["env"])
    assert tasks.returncode == 0 and "cxrlab:ray-a" in tasks.stdout, tasks.stderr[-2000:]
    actors = subprocess.run(["ray", "list", "actors", "--address", rc["address"], "--format", "json"],
                            capture_output=True, text=True, timeout=ms(120) / 1000, env=rc["env"])
    assert "cxrlab-head-" in actors.stdout
    # the same run by the local queue, at the thread count Ray gave it (1 CPU), ends with the same numbers
    local_ck = tmp_path / "local"
    env = {**rc["env"], "CXR_EXECUTOR": "local", "CXR_CHECKPOINTS": str(local_ck), "OMP_NUM_THREADS": "1"}
    cli(env, "train", "--preset", "covid-scratch", "--covid-root", rc["pack"] / "covid", "--epochs", 1,
        "--name", "ray-a", *TINY)
    local = Registry(local_ck).get("ray-a")
    assert round(local.test_auc, 6) == round(rows["ray-a"].test_auc, 6)
    assert round(local.best_val_auc, 6) == round(rows["ray-a"].best_val_auc, 6)
    mine = json.loads((reg.run_dir("ray-a") / "metrics.json").read_text())
    theirs = json.loads((local_ck / "ray-a" / "metrics.json").read_text())
    assert _rounded(mine["val"]) == _rounded(theirs["val"]) and _rounded(mine["test"]) == _rounded(theirs["test"])


def _rounded(x):
    """Every number to 6 decimals (the issue's check), recursively."""
    if isinstance(x, float):
        return round(x, 6)
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_rounded(v) for v in x]
    return x


def test_a_child_waits_for_its_parent_and_the_queue_shows_nodes(rc):
    reg = rc["reg"]
    queue_tiny(rc, "ray-parent", epochs=2)
    queue_tiny(rc, "ray-child", "--init", "ray-parent", "--lr", "0.0001")
    assert reg.get("ray-child").depends_on == "ray-parent"
    shown = cli(rc["env"], "runs", "queue").stdout
    assert "placed by the Ray cluster" in shown
    rows = wait_for(reg, ["ray-parent", "ray-child"], timeout=400)
    assert rows["ray-child"].status == "succeeded", rows["ray-child"].error
    assert rows["ray-child"].started >= rows["ray-parent"].finished - 1e-3


def test_cancel_and_a_lost_node(rc):
    reg = rc["reg"]
    queue_tiny(rc, "ray-cancel", epochs=40)
    deadline = time.time() + ms(240) / 1000
    while (reg.get("ray-cancel").step or 0) < 2 and time.time() < deadline:
        time.sleep(1)
    said = cli(rc["env"], "cancel", "ray-cancel").stdout
    assert "ray-cancel: stopping" in said and "ray-cancel: cancelled" in said, said  # it waits, as for a local run
    row = wait_for(reg, ["ray-cancel"], timeout=180)["ray-cancel"]
    assert row.status == "cancelled", row.error
    assert reg.folder("ray-cancel").last.is_file()  # it stopped as a local run does: last.pt kept
    # a run on the second node, whose node is then lost
    queue_tiny(rc, "ray-lost", epochs=40, CXR_RAY_RESOURCES=json.dumps({"slot": 1, "node2": 1}))
    deadline = time.time() + ms(240) / 1000
    while (reg.get("ray-lost").step or 0) < 1 and time.time() < deadline:
        time.sleep(1)
    assert reg.get("ray-lost").status == "running"
    rc["kill_second"]()
    row = wait_for(reg, ["ray-lost"], statuses=("interrupted",), timeout=180)["ray-lost"]
    assert "Ray task was lost" in row.error, row.error
    out = cli(rc["env"], "runs", "list")
    assert "ray-lost" in out.stdout


def test_a_node_that_does_not_see_the_run_folders_is_named(rc):
    reg = rc["reg"]
    mark = rc["checkpoints"] / ".cxr-storage"
    good = mark.read_text()
    mark.write_text("another-disk")  # what a node with its own local folder at that path would read
    try:
        queue_tiny(rc, "ray-nostorage")
        row = wait_for(reg, ["ray-nostorage"], timeout=180)["ray-nostorage"]
    finally:
        mark.write_text(good)
    assert row.status == "failed" and "sees another folder" in row.error and "Ray node" in row.error, row.error
