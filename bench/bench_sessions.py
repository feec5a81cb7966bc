"""Issue 14 (item 20): page times with many browser sessions at once.

A real dashboard server (as `streamlit run` starts it) over a checkpoints folder holding one real tiny
run (its landscape built) and 30 finished runs; then 1, and N, Chromium sessions (contexts of one
browser) go from page to page through the sidebar for a while, as users do. A page counts as loaded
when its title is up, its script has finished and its charts are drawn. It prints the median and
90th percentile of the load time per page, the ratio N sessions / 1 session, and the server's CPU
time per page load (what one more session costs the server). Target (issue 14): the median under
2 s with 10 sessions on a 2-core machine.

Two clients:
- `--client browser` (default): Chromium sessions. The browsers share the machine's 2 cores with the
  server, so with 10 of them their own rendering dominates what is measured.
- `--client protocol`: each session speaks Streamlit's websocket protocol as the browser does (the
  same BackMsg per page, the same message cache, no rendering): a page counts as loaded when its
  script-finished message has arrived, so this measures what the server gives each user when the
  browsers run on the users' own machines. A page whose script ends in an exception is an error.

Usage: python bench/bench_sessions.py [--client browser|protocol] [--sessions 10] [--seconds 90]
       [--pages overview results landscape] [--checkpoints DIR --run NAME]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from common import DATA_PACK, REPO
from screenshots import ARGS, CHROMIUM, _port, _train, settle

DONE = """([title, charts]) => { const app = document.querySelector('.stApp');
  const h1 = document.querySelector('[data-testid="stMainBlockContainer"] h1');
  return app && app.getAttribute('data-test-script-state') === 'notRunning' && h1 && h1.innerText.startsWith(title)
      && !document.querySelector('[data-testid="stSkeleton"]')
      && !document.querySelector('[data-testid="stStatusWidget"]')
      && document.querySelectorAll('[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg')
           .length >= charts; }"""
PAGES = {  # sidebar label, page title, charts drawn when the page is complete
    "overview": ("Overview", "Chest X-ray", 1), "results": ("Results", "Results", 1),
    "landscape": ("Landscape", "Pathology landscape", 2), "train": ("Train", "Train", 0),
    "heatmaps": ("Heatmaps", "Heatmaps", 0), "audit": ("Audit", "Shortcut audit", 0)}


def start_server(ck: Path, cache: Path, nih_root: Path | None = None,
                 covid_root: Path | None = None) -> tuple[subprocess.Popen, str]:
    port = _port()
    env = {**os.environ, "CXR_CHECKPOINTS": str(ck), "CXR_CACHE_DIR": str(cache),
           "CXR_NIH_ROOT": str(nih_root or DATA_PACK / "nih"), "CXR_COVID_ROOT": str(covid_root or DATA_PACK / "covid")}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "dashboard/app.py", "--server.port", str(port),
                             "--server.headless", "true"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            urllib.request.urlopen(url + "/_stcore/health", timeout=1)
            return proc, url
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("the dashboard did not start")


def prepare(ck: Path, n_fill: int) -> str:
    from bench_dashboard import fill_registry

    fill_registry(str(ck), n_fill)
    return _train(ck)  # the real run is the newest: the pages open on it


def build_landscape(browser, url: str) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(600_000)
    page.goto(f"{url}/landscape")
    settle(page)
    button = page.get_by_role("button", name="Build the landscape")
    if button.count():
        button.click()
        page.wait_for_selector('[data-testid="stVegaLiteChart"]', timeout=600_000)
    page.close()


def load(page, name: str) -> float:
    """Open a page from the sidebar; seconds until it is complete."""
    label, title, charts = PAGES[name]
    t0 = time.perf_counter()
    page.locator('[data-testid="stSidebarNav"] a').filter(has_text=label).first.click()
    page.wait_for_function(DONE, arg=[title, charts], timeout=180_000, polling=50)
    return time.perf_counter() - t0


class ProtocolSession:
    """One user as the server sees it: Streamlit's websocket protocol, as the browser speaks it, without
    rendering. Navigation is a rerun request carrying the page's script hash and the hashes of the
    messages this client already holds (the browser's message cache), as the frontend sends them."""

    def __init__(self, url: str):
        from contextlib import ExitStack

        from websockets.sync.client import connect

        ws_url = url.replace("http://", "ws://") + "/_stcore/stream"
        self._stack = ExitStack()
        self.ws = self._stack.enter_context(connect(ws_url, subprotocols=["streamlit"], origin=url, max_size=None,
                                                    open_timeout=60))
        self.pages: dict[str, str] = {}  # title -> page script hash
        self.cached: set[str] = set()
        self.load("")

    def load(self, title: str) -> float:
        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        msg = BackMsg()
        msg.rerun_script.query_string = ""
        if title:
            msg.rerun_script.page_script_hash = self.pages[title]
        msg.rerun_script.cached_message_hashes.extend(sorted(self.cached))
        t0 = time.perf_counter()
        self.ws.send(msg.SerializeToString())
        exceptions = []
        while True:
            fwd = ForwardMsg()
            fwd.ParseFromString(self.ws.recv(timeout=180))
            kind = fwd.WhichOneof("type")
            if fwd.metadata.cacheable and fwd.hash:
                self.cached.add(fwd.hash)
            if kind == "navigation":
                self.pages = {p.page_name: p.page_script_hash for p in fwd.navigation.app_pages}
            elif kind == "delta" and fwd.delta.WhichOneof("type") == "new_element" \
                    and fwd.delta.new_element.WhichOneof("type") == "exception":
                exceptions.append(fwd.delta.new_element.exception.message)
            elif kind == "script_finished":
                if fwd.script_finished == fwd.FINISHED_EARLY_FOR_RERUN:
                    continue
                break
        elapsed = time.perf_counter() - t0
        if exceptions:
            raise RuntimeError(f"the page raised: {exceptions[0][:200]}")
        return elapsed

    def close(self) -> None:
        self._stack.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def protocol_user(url: str):
    """A protocol session; yields load(page) -> seconds."""
    client = ProtocolSession(url)
    try:
        yield lambda name: client.load(PAGES[name][0])
    finally:
        client.close()


@contextmanager
def browser_user(url: str):
    """A Chromium session (its own browser); yields load(page) -> seconds."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(180_000)
            page.goto(url)
            page.wait_for_selector('[data-testid="stSidebarNav"]')
            yield lambda name: load(page, name)
        finally:
            browser.close()


def sessions(url: str, server_pid: int, n: int, seconds: float, pages: list[str], client: str = "browser") -> dict:
    """n users moving from page to page for `seconds` (each opens every page once first, not counted):
    load times per page, errors, and the server's CPU seconds per load."""
    user_session = browser_user if client == "browser" else protocol_user
    times: dict[str, list[float]] = {p: [] for p in pages}
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(n + 1)

    def user(k: int) -> None:
        started = False
        try:
            with user_session(url) as load_page:
                for name in pages:  # warm: this session's first visits are not counted
                    load_page(name)
                started = True
                start.wait()
                deadline, i = time.time() + seconds, k
                while time.time() < deadline:
                    name = pages[i % len(pages)]
                    try:
                        t = load_page(name)
                        with lock:
                            times[name].append(t)
                    except Exception as exc:  # a page that never completes, or raises, is an error, counted
                        with lock:
                            errors.append(f"{name}: {str(exc).splitlines()[0]}")
                    i += 1
        except Exception as exc:
            if not started:
                with lock:
                    errors.append(f"session {k} could not start: {str(exc).splitlines()[0]}")
                start.abort()
            raise

    threads = [threading.Thread(target=user, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
        if client == "browser":
            time.sleep(1.0)  # browsers start one after another
    start.wait()
    cpu0 = cpu_seconds(server_pid)
    for t in threads:
        t.join()
    loads = sum(len(v) for v in times.values())
    return {"times": times, "errors": errors, "server_cpu_per_load": (cpu_seconds(server_pid) - cpu0) / max(loads, 1)}


def summary(result: dict) -> dict[str, tuple[float, float, int]]:
    out = {}
    for name, ts in result["times"].items():
        if not ts:
            continue
        q = statistics.quantiles(ts, n=10) if len(ts) > 1 else [ts[0]] * 9
        out[name] = (statistics.median(ts), q[8], len(ts))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--client", choices=["browser", "protocol"], default="browser")
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=90)
    ap.add_argument("--pages", nargs="+", default=["overview", "results", "landscape"], choices=sorted(PAGES))
    ap.add_argument("--fill", type=int, default=30, help="finished runs added beside the real one")
    ap.add_argument("--checkpoints")
    ap.add_argument("--run")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="sessions-"))
    ck = Path(args.checkpoints) if args.checkpoints else tmp / "checkpoints"
    if not args.checkpoints:
        t0 = time.perf_counter()
        prepare(ck, args.fill)
        print(f"set-up: a tiny real run and {args.fill} finished runs in {time.perf_counter() - t0:.0f} s", flush=True)
    proc, url = start_server(ck, tmp / "cache")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            build_landscape(browser, url)
            browser.close()
        one_raw = sessions(url, proc.pid, 1, args.seconds / 2, args.pages, args.client)
        many_raw = sessions(url, proc.pid, args.sessions, args.seconds, args.pages, args.client)
        one, many = summary(one_raw), summary(many_raw)
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
    print(f"\nclient: {args.client}")
    print(f"{'page':<10} {'1 session: median / p90 (n)':>30} {f'{args.sessions} sessions: median / p90 (n)':>32}"
          f" {'RATIO':>7}")
    for name in args.pages:
        a, b = one.get(name), many.get(name)
        if not a or not b:
            print(f"{name:<10} no complete loads")
            continue
        print(f"{name:<10} {a[0]:>11.2f} s / {a[1]:5.2f} s ({a[2]:>3}) {b[0]:>13.2f} s / {b[1]:5.2f} s ({b[2]:>3}) "
              f"{b[0] / a[0]:>7.2f}")
    print(f"server CPU per page load: {one_raw['server_cpu_per_load']:.2f} s (1 session), "
          f"{many_raw['server_cpu_per_load']:.2f} s ({args.sessions} sessions)")
    errors = many_raw["errors"]
    print(f"errors: {len(errors)}" + (f" (first: {errors[0]})" if errors else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
