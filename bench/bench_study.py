"""Issue 11 benchmark: the study's orchestration overhead. Runs the study command end to end on the
shared pack (a tiny version of the pack scale by default, or --scale pack/full/FILE) in a fresh
registry, then prints the study's wall time against the sum of its runs' own times (start of
training to end of evaluation): the rest is queueing, process start-up and the study's checks.

Usage: python bench/bench_study.py [--scale tiny|pack|FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import DATA_PACK, REPO


def tiny(path: Path) -> Path:
    raw = json.loads((REPO / "engine" / "study" / "scales" / "pack.json").read_text())
    raw["scale"] = "tiny"
    raw["common"] = {"image_size": 32, "load_size": 32, "bootstrap": 20, "max_images_per_split": 16,
                     "num_workers": 0, "epochs": 1}
    for e in raw["experiments"]:
        e["overrides"].pop("epochs", None)
    path.write_text(json.dumps(raw))
    return path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", default="tiny")
    args = p.parse_args()
    from engine.runs.registry import Registry

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        scale = str(tiny(tmp / "tiny.json")) if args.scale == "tiny" else args.scale
        env = {**os.environ, "CXR_CHECKPOINTS": str(tmp / "ck"), "CXR_CACHE_DIR": str(tmp / "cache")}
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "engine", "study", "--scale", scale, "--nih-root",
                              str(DATA_PACK / "nih"), "--covid-root", str(DATA_PACK / "covid"), "--json"],
                             cwd=REPO, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if out.returncode != 0:
            print(out.stderr[-3000:])
            return 1
        runs = [r for r in Registry(tmp / "ck").list() if r.started and r.finished]
        busy = sum(r.finished - r.started for r in runs)
        cells = json.loads(out.stdout)["cells"]
        print(f"study at scale {args.scale}: {len(runs)} runs trained, "
              f"{sum(c['state'] == 'needs weights' for c in cells)} need ImageNet weights")
        print(f"wall time {wall:.1f} s, sum of the runs' own times {busy:.1f} s -> orchestration overhead "
              f"{wall - busy:.1f} s ({(wall - busy) / wall:.0%} of the wall time; RATIO wall/runs {wall / busy:.2f})")
        for r in sorted(runs, key=lambda r: r.started):
            print(f"  {r.name:<34} {r.finished - r.started:7.1f} s")
        results = json.loads(out.stdout)
        print("results (test AUC of the class each experiment is judged by, 95% CI, published):")
        for c in results["cells"]:
            ours = "-" if c["ours"] is None else f"{c['ours']:.3f} [{c['low']:.3f}, {c['high']:.3f}]"
            pub = "" if c["published"] is None else f"  study {c['published']:.2f}"
            print(f"  {c['key']:<26} {c['class']:<9} {ours}{pub}  ({c['state']})")
        print("comparisons:")
        for c in results["comparisons"]:
            print(f"  {c['what']}: {c['verdict']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
