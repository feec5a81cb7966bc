"""Screenshots of every dashboard page at 1400 px width, in Debian's Chromium (Playwright).

Usage:
    python bench/screenshots.py --out DIR [--checkpoints DIR] [--run NAME] [--docs]

--docs writes what docs/img holds: the first screen of each page (1400 x 1000, not the whole page),
reduced to 256 colours so that the documentation stays small.

Without --checkpoints, a tiny COVID-19 run (96 px, 1 epoch) is trained on the data pack into a
temporary folder first (about a minute on a 2-core CPU). Each page is opened with the run picked;
the Landscape is built on request; every chart is waited for. Checking that legends and axes name
every class in the Vega-Lite specs is tests/test_charts.py's job; this script prints the charts drawn per page.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from common import DATA_PACK, REPO

PAGES = ["", "train", "study", "results", "audit", "heatmaps", "landscape", "diagnose"]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def _port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _train(ck: Path) -> str:
    env = {**os.environ, "CXR_CHECKPOINTS": str(ck)}
    subprocess.run([sys.executable, "-m", "engine", "train", "--preset", "covid-scratch", "--covid-root",
                    str(DATA_PACK / "covid"), "--epochs", "1", "--name", "shots", "--image-size", "96", "--load-size",
                    "96", "--max-images-per-split", "64", "--bootstrap", "50", "--num-workers", "0"],
                   cwd=REPO, env=env, check=True, capture_output=True)
    return "shots"


def settle(page) -> None:
    """Wait until the script has run and nothing is a placeholder any more."""
    page.wait_for_timeout(1500)
    page.wait_for_function("""() => !document.querySelector('[data-testid="stSkeleton"]')
                                && !document.querySelector('[data-testid="stStatusWidget"]')""")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--checkpoints")
    ap.add_argument("--run")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--docs", action="store_true", help="first screen only, 256 colours (for docs/img)")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="shots-"))
    ck = Path(args.checkpoints) if args.checkpoints else tmp / "checkpoints"
    run = args.run or (None if args.checkpoints else _train(ck))
    port = _port()
    env = {**os.environ, "CXR_CHECKPOINTS": str(ck), "CXR_CACHE_DIR": str(tmp / "cache"),
           "CXR_NIH_ROOT": str(DATA_PACK / "nih"), "CXR_COVID_ROOT": str(DATA_PACK / "covid")}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "dashboard/app.py", "--server.port", str(port),
                             "--server.headless", "true"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(url + "/_stcore/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            page = browser.new_page(viewport={"width": args.width, "height": 1000})
            page.set_default_timeout(180_000)
            for name in PAGES:
                page.goto(f"{url}/{name}")
                page.wait_for_selector('[data-testid="stMainBlockContainer"]')
                settle(page)
                if run and name not in ("", "train", "study"):
                    box = page.locator('[data-testid="stSelectbox"]').filter(has_text="Run").first
                    if box.count():
                        box.click()
                        page.get_by_role("option", name=run, exact=True).click()
                        settle(page)
                if name == "landscape" and page.get_by_role("button", name="Build the landscape").count():
                    page.get_by_role("button", name="Build the landscape").click()
                    page.wait_for_selector('[data-testid="stVegaLiteChart"]', timeout=600_000)
                page.wait_for_timeout(2000)
                page.wait_for_function("""() => !document.querySelector('[data-testid="stSkeleton"]')
                                            && !document.querySelector('[data-testid="stStatusWidget"]')""")
                page.wait_for_timeout(3000)  # charts draw after the script finishes
                charts = page.locator('[data-testid="stVegaLiteChart"]').count()
                shot = out / f"{name or 'overview'}.png"
                page.screenshot(path=str(shot), full_page=not args.docs)
                if args.docs:
                    from PIL import Image

                    Image.open(shot).convert("RGB").quantize(256).save(shot, optimize=True)
                print(f"{name or 'overview':<10} {charts} charts  -> {shot}")
            browser.close()
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
