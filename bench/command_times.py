"""How long the README's commands take here (issue 13): each documented command on the shared pack,
in order, in a temporary checkpoints folder; prints a table of wall-clock seconds (and, with --markdown,
the same table as the README carries it). The dashboard's start is timed to its health check and to its
first page (Chromium) when Chromium is installed.

Usage: python bench/command_times.py [--markdown]
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import DATA_PACK, REPO

NIH, COVID = str(DATA_PACK / "nih"), str(DATA_PACK / "covid")


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="times-"))
    env = {**os.environ, "CXR_CHECKPOINTS": str(tmp / "checkpoints"), "CXR_CACHE_DIR": str(tmp / "cache")}
    image = next(p for p in sorted((DATA_PACK / "covid" / "images").iterdir()) if p.suffix.lower() in (".png", ".jpg",
                                                                                                          ".jpeg"))
    steps = [
        ("data summary", ["data", "summary", "--nih-root", NIH, "--covid-root", COVID]),
        ("prepare --size 64 (the image cache, both datasets)",
         ["prepare", "--nih-root", NIH, "--covid-root", COVID, "--size", "64"]),
        ("train: the CPU smoke run (covid-scratch, 64 px, 2 epochs)",
         ["train", "--preset", "covid-scratch", "--covid-root", COVID, "--image-size", "64", "--epochs", "2",
          "--name", "smoke", "--keep-last"]),
        ("train --resume smoke --epochs 3 (one more epoch)", ["train", "--resume", "smoke", "--epochs", "3"]),
        ("train: an NIH run (nih-resnet50-scratch, 64 px, 1 epoch)",
         ["train", "--preset", "nih-resnet50-scratch", "--nih-root", NIH, "--image-size", "64", "--epochs", "1",
          "--name", "nih-smoke"]),
        ("train: covid-from-nih --init nih-smoke (64 px, 1 epoch)",
         ["train", "--preset", "covid-from-nih", "--covid-root", COVID, "--init", "nih-smoke", "--image-size", "64",
          "--epochs", "1", "--name", "from-nih"]),
        ("train: covid-scratch with the same ResNet-50 (64 px, 1 epoch)",
         ["train", "--preset", "covid-scratch", "--covid-root", COVID, "--arch", "resnet50_own", "--image-size", "64",
          "--epochs", "1", "--name", "rn50-scratch"]),
        ("compare from-nih rn50-scratch (paired, same test images; only the init differs)",
         ["compare", "from-nih", "rn50-scratch"]),
        ("localize nih-smoke (pointing game, IoU)", ["localize", "nih-smoke"]),
        ("evaluate smoke (val and test, bootstrap CIs)", ["evaluate", "smoke", "--split", "both"]),
        ("evaluate smoke --operating-points", ["evaluate", "smoke", "--operating-points"]),
        ("evaluate smoke --on the collection (external)", ["evaluate", "smoke", "--on", COVID, "--name", "self"]),
        ("audit smoke", ["audit", "smoke"]),
        ("report", ["report"]),
        ("runs list", ["runs", "list"]),
        ("cam smoke --image (14 maps)", ["cam", "smoke", "--image", str(image), "--out", str(tmp / "cam")]),
        ("embed smoke --method tsne --space features", ["embed", "smoke", "--method", "tsne", "--space", "features"]),
        ("embed smoke --method som --space pixels", ["embed", "smoke", "--method", "som", "--space", "pixels"]),
        ("neighbours smoke", ["neighbours", "smoke"]),
        ("study status", ["study", "status"]),
        ("runs prune smoke", ["runs", "prune", "smoke"]),
    ]
    rows = []
    for what, args in steps:
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "engine", *args], cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=3600)
        rows.append((what, time.perf_counter() - t0, out.returncode))
        print(f"{what:<60} {rows[-1][1]:7.1f} s  exit {out.returncode}"
              + ("" if out.returncode == 0 else f"  {out.stderr.strip().splitlines()[-1][:160]}"), flush=True)
    rows.append(("dashboard: start to health check / to the first page drawn", *dashboard_start(env)))
    print(f"{rows[-1][0]:<60} {rows[-1][1]}", flush=True)
    if "--markdown" in sys.argv:
        print("\n| command | seconds |\n|---|---:|")
        for what, t, code in rows:
            print(f"| {what} | {t if isinstance(t, str) else f'{t:.0f}'}{'' if code == 0 else ' (failed)'} |")
    return 0 if all(r[2] == 0 for r in rows) else 1


def dashboard_start(env: dict) -> tuple[str, int]:
    """Seconds from `python -m streamlit run dashboard/app.py` to the health check answering, and to the
    Overview drawn in Chromium (when installed)."""
    import urllib.request

    from screenshots import ARGS, CHROMIUM, _port, settle

    port = _port()
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "dashboard/app.py", "--server.port", str(port),
                             "--server.headless", "true"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                urllib.request.urlopen(url + "/_stcore/health", timeout=1)
                break
            except OSError:
                if time.perf_counter() - t0 > 120 or proc.poll() is not None:
                    return "did not start", 1
                time.sleep(0.2)
        health = time.perf_counter() - t0
        if not Path(CHROMIUM).exists():
            return f"{health:.0f} / (no Chromium)", 0
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            settle(page)
            drawn = time.perf_counter() - t0
            browser.close()
        return f"{health:.0f} / {drawn:.0f}", 0
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
