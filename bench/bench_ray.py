"""The Ray executor against the local queue, measured in one run on this machine (issue 35).

Both place 8 tiny runs (the test architecture, 64 px, 1 epoch on the pack's COVID-19 collection) with
two at a time: the local queue with CXR_MAX_RUNNING=2, Ray on a 2-node cluster on 127.0.0.1 with one
CPU per node (tests/ray_local_cluster.py). Prints, for each:
- latency from `queue` returning to the first recorded step of the first run;
- wall time from the first submission until all 8 have succeeded;
- for Ray, the head actor's CPU seconds per run (dispatch, relayed registry writes, watching).

Usage: python bench/bench_ray.py [--runs 8]
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import DATA_PACK, REPO

from engine.runs import Registry

TINY = ["--arch", "tiny", "--image-size", "64", "--load-size", "64", "--num-workers", "0"]


def queue(env, name) -> None:
    subprocess.run([sys.executable, "-m", "engine", "queue", "--preset", "covid-scratch", "--covid-root",
                    str(DATA_PACK / "covid"), "--epochs", "1", "--name", name, *TINY], env=env, check=True,
                   capture_output=True, cwd=REPO)


def measure(env, ck: Path, n: int) -> dict:
    reg = Registry(ck)
    t0 = time.perf_counter()
    names = [f"b{k}" for k in range(n)]
    queue(env, names[0])
    t_queued = time.perf_counter()
    for name in names[1:]:
        queue(env, name)
    first_step = None
    while True:
        rows = [reg.get(x) for x in names]
        if first_step is None and rows[0] and rows[0].step:
            first_step = time.perf_counter() - t_queued
        if all(r and r.status in ("succeeded", "failed", "cancelled", "interrupted") for r in rows):
            break
        time.sleep(0.2)
    bad = [(r.name, r.status, r.error) for r in rows if r.status != "succeeded"]
    if bad:
        raise SystemExit(f"runs did not succeed: {bad}")
    return {"first_step_s": first_step, "wall_s": time.perf_counter() - t0,
            "test_auc": rows[0].test_auc}


def head_cpu(env) -> dict:
    code = ("import json, ray, sys; from engine.runs.cluster import connect, head_name, NAMESPACE; "
            "from engine.runs import Registry; import os; connect(); "
            "a = ray.get_actor(head_name(Registry().root), namespace=NAMESPACE); print(json.dumps(ray.get(a.ping.remote())))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=REPO, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    n = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 8
    base = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    temp = Path("/tmp") / f"cxr-ray-bench-{os.getpid()}"
    temp.mkdir()
    common = {**os.environ, "PYTHONPATH": str(REPO), "CXR_CACHE_DIR": str(base / "cache"),
              "RAY_TMPDIR": str(temp), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    try:
        local = measure({**common, "CXR_EXECUTOR": "local", "CXR_MAX_RUNNING": "2",
                         "CXR_CHECKPOINTS": str(base / "local")}, base / "local", n)
        print(f"local queue (2 slots): first step {local['first_step_s']:.1f} s after queue, {n} runs in "
              f"{local['wall_s']:.1f} s", flush=True)
        helper = subprocess.Popen([sys.executable, str(REPO / "tests" / "ray_local_cluster.py")], env=common,
                                  text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=open(temp / "cluster.log", "w"))
        box: dict = {}
        t = threading.Thread(target=lambda: box.setdefault("line", helper.stdout.readline()), daemon=True)
        t.start()
        t.join(300)
        address = json.loads(box["line"])["address"]
        env = {**common, "CXR_EXECUTOR": "ray", "RAY_ADDRESS": address, "CXR_CHECKPOINTS": str(base / "ray"),
               "CXR_RAY_RESOURCES": json.dumps({"slot": 1})}
        try:
            ray = measure(env, base / "ray", n)
            cpu = head_cpu(env)
        finally:
            helper.communicate("stop\n", timeout=120)
        print(f"Ray, 2 nodes x 1 CPU: first step {ray['first_step_s']:.1f} s after queue, {n} runs in "
              f"{ray['wall_s']:.1f} s; head actor {cpu['cpu_s'] / n:.2f} CPU s per run", flush=True)
        print(f"ratios Ray / local: first step {ray['first_step_s'] / local['first_step_s']:.2f}, "
              f"wall {ray['wall_s'] / local['wall_s']:.2f}; same test AUC: {ray['test_auc'] == local['test_auc']}")
    finally:
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(temp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
