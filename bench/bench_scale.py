"""Issue 20: the full-size path measured. Every stage a user with all of ChestX-ray14 walks, at the
sizes asked for, on a ChestX-ray14 root built from the pack: the real metadata (all 112,120 rows,
the official lists, the boxes) with every image name a hard link to one of the pack's real 512-px
images (bench/common.link_nih_root), and subsets of it (the first N rows, patients whole).

For each stage and size it prints CPU seconds (the stage's processes, pool workers included: CPU
time carries over to an idle machine, wall time on this shared one does not), peak RSS, disk, and,
per stage, the growth exponent k fitted over the sizes (CPU ~ n^k: 1 is linear, 2 quadratic).

Stages (each in its own process, measured with wait4):
  summary    `data summary` of the root
  prepare    `prepare --size 64`, then `prepare` again with nothing changed (it must write nothing)
  splits     a run's train/val/test datasets as training builds them (`tasks.build_datasets`), all
             patients and a learning curve's 25 % of the training patients (drawn per label group)
  hash       pHash of every image (a process pool, cached per file); --hash-max caps the sizes hashed
  search     duplicate search within n hashes and n x the 25,596-image test list (multi-index hashing)
  bootstrap  the Results page's engine work on a run's full-size predictions (test + val of the
             root, written by the engine's own writer: bench/scale_run.py): patient bootstrap of the
             AUCs, subgroups and operating points (200 resamples, stored beside the predictions)
  pages      the dashboard's server CPU per page at that size (Streamlit's websocket protocol, as
             bench_sessions.py --client protocol), Results first and again
  embed      t-SNE, kNN purity, silhouettes and COVID-19 neighbour shares at --points (1k, 10k, 25k)
  registry   500 finished runs: `runs list`, and the Overview and Train pages' server CPU

Usage: python bench/bench_scale.py [--sizes 1000 10000 112120] [--stages ...] [--points 1000 10000 25000]
       [--hash-max 112120] [--runs 500] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import DATA_PACK, REPO, link_nih_root

STAGES = ("summary", "prepare", "splits", "hash", "search", "bootstrap", "pages", "embed", "registry")
PAGES = ("Overview", "Overview (again)", "Results", "Results (again)", "Train", "Heatmaps", "Landscape", "Audit",
         "Diagnose", "Study", "Study (again)")


def measure(cmd: list[str], env: dict | None = None, timeout: float = 7200) -> dict:
    """Run a command; its CPU seconds (user + system, reaped children included), peak RSS and stdout."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, **(env or {})}, stdout=out, stderr=err)
        _, status, ru = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        text, errors = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} ... exited {proc.returncode}: {errors[-1500:]}")
    return {"cpu_s": ru.ru_utime + ru.ru_stime, "rss_mb": ru.ru_maxrss / 1024, "wall_s": wall, "stdout": text}


def du_mb(path: Path) -> float:
    """Disk actually used (allocated blocks: a sparse file counts what it holds)."""
    total = 0
    for base, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(base, f)).st_blocks * 512
            except OSError:
                pass
    return total / 2**20


def engine(*args) -> list[str]:
    return [sys.executable, "-m", "engine", *map(str, args)]


CLOCK = """
import resource, sys
sys.path[:0] = [{repo!r}, {bench!r}]
def _cpu():
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime
"""


def child(code: str) -> list[str]:
    """A Python child whose code brackets its work with `T0 = _cpu()` ... `print("WORK", _cpu() - T0)`,
    so the row counts the stage's work (pool workers included), not the interpreter's imports."""
    return [sys.executable, "-c", CLOCK.format(repo=str(REPO), bench=str(REPO / "bench")) + code]


def work_cpu(m: dict) -> dict:
    """The measured row with cpu_s taken from the child's WORK line (its imports left out)."""
    lines = [ln for ln in m["stdout"].splitlines() if ln.startswith("WORK ")]
    out = {**m, "stdout": "\n".join(ln for ln in m["stdout"].splitlines() if not ln.startswith("WORK "))}
    if lines:
        out["cpu_s"] = float(lines[-1].split()[1])
    return out


# -- the stages: each returns rows {stage, n, cpu_s, rss_mb, disk_mb, note} --------------------------

def stage_summary(root: Path, n: int, work: Path, args) -> list[dict]:
    m = measure(engine("data", "summary", "--nih-root", root, "--json"), env=_env(work))
    rows = json.loads(m["stdout"])["nih"]["rows"]
    return [{"stage": "data summary", "n": n, **_pick(m), "note": f"{rows} rows"}]


def stage_prepare(root: Path, n: int, work: Path, args) -> list[dict]:
    cache = work / "cache"
    m = measure(engine("prepare", "--nih-root", root, "--size", 64, "--cache-dir", cache, "--json"), env=_env(work))
    first = json.loads(m["stdout"])["nih"]
    again = measure(engine("prepare", "--nih-root", root, "--size", 64, "--cache-dir", cache, "--json"), env=_env(work))
    second = json.loads(again["stdout"])["nih"]
    return [{"stage": "prepare 64 px", "n": n, **_pick(m), "disk_mb": du_mb(cache),
             "note": f"{first['decoded']} decoded"},
            {"stage": "prepare again, nothing changed", "n": n, **_pick(again),
             "note": f"{second['reused']} reused, {second['bytes_written']} bytes written"}]


def stage_splits(root: Path, n: int, work: Path, args) -> list[dict]:
    rows = []
    for fraction in (1.0, 0.25):
        code = (f"from engine.config import from_preset\nfrom engine.data.tasks import build_datasets\n"
                f"cfg = from_preset('nih-resnet50-scratch', {{'nih_root': {str(root)!r}, 'train_fraction': {fraction}}})\n"
                f"T0 = _cpu()\nd = build_datasets(cfg)\nprint('WORK', _cpu() - T0)\n"
                f"print(' / '.join(f'{{k}} {{len(v):,}}' for k, v in d.items()))")
        m = work_cpu(measure(child(code), env=_env(work)))
        rows.append({"stage": f"splits, {fraction:.0%} of training patients", "n": n, **_pick(m),
                     "note": m["stdout"].strip().splitlines()[-1] if m["stdout"].strip() else ""})
    return rows


def stage_hash(root: Path, n: int, work: Path, args) -> list[dict]:
    if n > args.hash_max:
        return [{"stage": "pHash (pool, cached)", "n": n, "cpu_s": None,
                 "note": f"skipped (--hash-max {args.hash_max})"}]
    code = (f"from engine.data.duplicates import image_hashes\nfrom pathlib import Path\n"
            f"paths = sorted(str(p) for p in Path({str(root / 'images')!r}).iterdir())\n"
            f"T0 = _cpu()\nh, bad = image_hashes(paths, cache_dir={str(work / 'hash-cache')!r})\nprint('WORK', _cpu() - T0)")
    m = work_cpu(measure(child(code)))
    again = work_cpu(measure(child(code)))
    return [{"stage": "pHash (pool, cached)", "n": n, **_pick(m), "disk_mb": du_mb(work / "hash-cache")},
            {"stage": "pHash again (all cached)", "n": n, **_pick(again)}]


def stage_search(root: Path, n: int, work: Path, args) -> list[dict]:
    code = f"""
import numpy as np
from engine.data.duplicates import cross_arrays, duplicate_arrays, image_hashes
from pathlib import Path
real, _ = image_hashes(sorted(str(p) for p in Path({str(DATA_PACK / 'nih' / 'images')!r}).iterdir()),
                       cache_dir={str(work / 'pack-hashes')!r})
rng = np.random.default_rng(0)
seeds = np.array([int(h, 16) for h in real], dtype=np.uint64)
def films(k):  # distinct films: real pack hashes with 6-20 bits changed (as pHashes cluster), a few true copies
    v = seeds[rng.integers(0, len(seeds), k)].copy()
    for b in range(64):
        v ^= (rng.random(k) < rng.uniform(0.09, 0.31, k)).astype(np.uint64) << np.uint64(b)
    return [f"{{int(x):016x}}" for x in v]
a = films({n})
b = films(25596)
T0 = _cpu()
i, j, d = duplicate_arrays(a)
x, y, e = cross_arrays(b, a)
print("WORK", _cpu() - T0)
print(len(i), len(x))
"""
    m = work_cpu(measure(child(code)))
    pairs, cross = m["stdout"].split()
    return [{"stage": "duplicate search (n, and 25,596 x n)", "n": n, **_pick(m),
             "note": f"{pairs} pairs within, {cross} across, at <= 4 bits"}]


def stage_bootstrap(root: Path, n: int, work: Path, args) -> list[dict]:
    ck = work / "checkpoints"
    if not (ck / "full" / "metrics.json").is_file():
        code = f"from scale_run import make_full_run\nprint(make_full_run({str(ck)!r}, {str(root)!r}))"
        measure(child(code), env=_env(work))
    run = ck / "full"
    code = (f"from engine.trust.report import stored_trust_tables\nT0 = _cpu()\n"
            f"t = stored_trust_tables({str(run / 'predictions_val.csv')!r}, {str(run / 'predictions_test.csv')!r}, "
            f"n_boot=200)\nprint('WORK', _cpu() - T0)")
    sizes = {s: sum(1 for _ in open(run / f"predictions_{s}.csv")) - 1 for s in ("test", "val")}
    for f in run.glob("trust-*.json"):
        f.unlink()
    m = work_cpu(measure(child(code)))
    again = work_cpu(measure(child(code)))
    return [{"stage": "subgroups + operating points (200 boot.)", "n": n, **_pick(m),
             "note": f"{sizes['test']} test + {sizes['val']} val predictions"},
            {"stage": "the same, stored (second read)", "n": n, **_pick(again)}]


def stage_pages(root: Path, n: int, work: Path, args) -> list[dict]:
    stage_bootstrap(root, n, work, args)  # the run whose pages are read
    for f in (work / "checkpoints" / "full").glob("trust-*.json"):
        f.unlink()
    loads = server_pages(work / "checkpoints", work / "cache", root, PAGES)
    return [{"stage": f"page: {p}", "n": n, "cpu_s": cpu, "rss_mb": rss} for p, (cpu, rss) in loads.items()]


def server_pages(ck: Path, cache: Path, root: Path | None, pages) -> dict:
    """{page: (server CPU seconds of its load, server RSS MB after it)} over one protocol session."""
    from bench_sessions import ProtocolSession, cpu_seconds, start_server

    proc, url = start_server(ck, cache, nih_root=root)
    out = {}
    try:
        start = cpu_seconds(proc.pid)
        session = ProtocolSession(url)  # the first session opens the default page (Overview) with cold caches
        idle, last, deadline = 0, cpu_seconds(proc.pid), time.time() + 90
        while idle < 3 and time.time() < deadline:  # the server's background warm-up imports are not a page's cost
            time.sleep(1)
            now = cpu_seconds(proc.pid)
            idle, last = (idle + 1 if now - last < 0.05 else 0), now
        rss = int(Path(f"/proc/{proc.pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        out["first session: Overview, cold, with the server's warm-up imports"] = (last - start, rss)
        for page in pages:
            before = cpu_seconds(proc.pid)
            session.load(page.replace(" (again)", ""))
            rss = int(Path(f"/proc/{proc.pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
            out[page] = (cpu_seconds(proc.pid) - before, rss)
        session.close()
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
    return out


def stage_embed(points: int, work: Path) -> list[dict]:
    code = f"""
import numpy as np
from engine.landscape.embeddings import TsneMap, landscape_numbers, neighbour_shares, pca_reduce
rng = np.random.default_rng(0)
labels = np.array([f"L{{k % 15}}" for k in range({points})])
centres = rng.normal(size=(15, 256)).astype(np.float32)
x = centres[np.arange({points}) % 15] * 0.5 + rng.normal(size=({points}, 256)).astype(np.float32)
T0 = _cpu()
nums = landscape_numbers(x, labels, labels == "L0")
shares = neighbour_shares(labels, "L0", x, 10)
tsne = TsneMap(x, seed=0)
print("WORK", _cpu() - T0)
print(nums["silhouette_sample"], len(shares))
"""
    m = work_cpu(measure(child(code)))
    sample = m["stdout"].split()[0]
    return [{"stage": "embed: t-SNE + purity + silhouettes + neighbours", "n": points, **_pick(m),
             "note": "" if sample == "None" else f"silhouettes on a {sample}-point sample (said on page and CLI)"}]


def stage_registry(work: Path, runs: int) -> list[dict]:
    ck = work / f"registry-{runs}"
    code = f"from bench_dashboard import fill_registry\nfill_registry({str(ck)!r}, {runs})"
    measure(child(code), env={"CXR_CHECKPOINTS": str(ck)})
    m = measure(engine("runs", "list"), env={"CXR_CHECKPOINTS": str(ck)})
    loads = server_pages(ck, work / "cache", None, ("Overview", "Overview (again)", "Train", "Results"))
    rows = [{"stage": "runs list", "n": runs, **_pick(m), "disk_mb": du_mb(ck)}]
    rows += [{"stage": f"page with {runs} runs: {p}", "n": runs, "cpu_s": c, "rss_mb": r}
             for p, (c, r) in loads.items()]
    return rows


def _env(work: Path) -> dict:
    return {"CXR_CHECKPOINTS": str(work / "checkpoints"), "CXR_CACHE_DIR": str(work / "cache")}


def _pick(m: dict) -> dict:
    return {"cpu_s": m["cpu_s"], "rss_mb": m["rss_mb"]}


def growth(rows: list[dict]) -> dict[str, float]:
    """Per stage, the exponent k of CPU ~ n^k fitted (least squares on logs) over the sizes measured."""
    import numpy as np

    out = {}
    for stage in dict.fromkeys(r["stage"] for r in rows):
        pts = [(r["n"], r["cpu_s"]) for r in rows if r["stage"] == stage and r.get("cpu_s") and r["cpu_s"] > 0.05]
        if len({n for n, _ in pts}) >= 2:
            x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
            out[stage] = float(np.polyfit(x, y, 1)[0])
    return out


def table(rows: list[dict]) -> str:
    k = growth(rows)
    lines = ["| stage | n | CPU s | peak RSS MB | disk MB | growth k | note |", "|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        cpu = "" if r.get("cpu_s") is None else f"{r['cpu_s']:.2f}"
        rss = "" if r.get("rss_mb") is None else f"{r['rss_mb']:.0f}"
        disk = "" if r.get("disk_mb") is None else f"{r['disk_mb']:.1f}"
        kk = f"{k[r['stage']]:.2f}" if r["stage"] in k else ""
        lines.append(f"| {r['stage']} | {r['n']:,} | {cpu} | {rss} | {disk} | {kk} | {r.get('note', '')} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 112120])
    ap.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    ap.add_argument("--points", type=int, nargs="+", default=[1000, 10000, 25000])
    ap.add_argument("--hash-max", type=int, default=112120, help="hash only roots of at most this many images")
    ap.add_argument("--runs", type=int, default=500)
    ap.add_argument("--workdir", default=None, help="keep roots, caches and runs here (default: a temporary folder)")
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    args = ap.parse_args()
    work_root = Path(args.workdir or tempfile.mkdtemp(prefix="scale-"))
    rows: list[dict] = []

    def report(new):
        for r in new:
            rows.append(r)
            cpu = "skipped" if r.get("cpu_s") is None else f"{r['cpu_s']:.2f} CPU-s"
            extra = "".join(f", {k} {r[k]:.0f} MB" for k in ("rss_mb", "disk_mb") if r.get(k) is not None)
            print(f"{r['stage']:<48} n={r['n']:>7,}: {cpu}{extra} {r.get('note', '')}", flush=True)

    try:
        for n in args.sizes:
            t0 = time.perf_counter()
            root, mode = link_nih_root(work_root / f"nih-{n}", None if n >= 112120 else n)
            print(f"-- ChestX-ray14 root of {n:,} images ({mode}s to the pack's real images) in "
                  f"{time.perf_counter() - t0:.0f} s: {root}", flush=True)
            work = work_root / f"work-{n}"
            work.mkdir(exist_ok=True)
            for stage in args.stages:
                if stage in ("embed", "registry"):
                    continue
                report(globals()[f"stage_{stage}"](root, n, work, args))
        if "embed" in args.stages:
            for p in args.points:
                report(stage_embed(p, work_root))
        if "registry" in args.stages:
            report(stage_registry(work_root, args.runs))
    finally:
        if not args.workdir:
            shutil.rmtree(work_root, ignore_errors=True)
    print()
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
