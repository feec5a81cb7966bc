"""`study` (start or continue the study's graph of runs, then follow it), `study status`,
`study report --out DIR`, and `compare RUN_A RUN_B` (paired statistics of two runs)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from ..text import estimate
from .common import CLIError, add_roots, emit, fmt, registry

DEFAULT_PREFIX = "study"


def _cell_line(c, width: int) -> str:
    prog = (c.row.progress if c.row else None) or {}
    where = f" (epoch {prog.get('epoch')}/{prog.get('epochs')}, {prog.get('phase')})" if c.state == "running" and prog else ""
    return f"  {c.name:<{width}}  {c.describe()}{where}"


def _cells_text(cells) -> str:
    width = max(len(c.name) for c in cells)
    return "\n".join(_cell_line(c, width) for c in cells)


def spread_text(sp: dict) -> str:
    """"5 repeats: mean 0.612, sd 0.041, 0.55-0.66" (or how many have finished)."""
    if not sp["n"]:
        return f"{len(sp['values'])} repeats: none finished yet"
    text = f"{sp['n']} of {len(sp['values'])} repeats: mean {sp['mean']:.3f}"
    return text + (f", sd {sp['sd']:.3f}, {sp['min']:.3f}-{sp['max']:.3f}" if sp["sd"] is not None else "")


def cmd_study(args) -> int:
    from ..study.graph import plan, status, unfinished, watch
    from ..study.results import study_results
    from ..runs.launch import machine
    from ..study.spec import changes_from_full, cost_text, load_spec

    spec, reg = load_spec(args.scale, getattr(args, "covid_root", None)), registry()
    if args.action == "report":
        return _report(args, spec, reg)
    if args.action == "stop":
        from ..study.graph import stop, stop_summary

        out = stop(spec, args.name, reg)
        emit(out, args.json, lambda o: print("\n".join([*(f"{k}: {v}" for k, v in o.items()),
                                                        stop_summary(o, spec, args.name, reg)])))
        return 0
    if args.action == "status":
        cells = status(spec, args.name, reg, args.repeats)
        if not args.json:
            print(_cells_text(cells))
    else:
        if not args.json:
            changed = changes_from_full(spec)
            print(f"study at scale {spec.scale} ({spec.path})" + (": settings changed from the study's:" if changed else ""))
            print("\n".join(f"  {line}" for line in changed))
            cost = cost_text(spec, args.repeats, machine())
            if cost:
                print(f"cost where measured: {cost}")
        roots = {"nih": args.nih_root, "covid": args.covid_root}
        cells = plan(spec, args.name, reg, roots, submit=True, repeats=args.repeats)
        if not args.json:
            print(_cells_text(cells), flush=True)
        if args.wait and unfinished(cells):
            shown = {c.name: c.describe() for c in cells}

            def show(cs):  # only what changed, on stderr
                width = max(len(c.name) for c in cs)
                for c in cs:
                    if shown.get(c.name) != c.describe() and not args.json:
                        print(time.strftime("%H:%M:%S") + _cell_line(c, width), file=sys.stderr, flush=True)
                    shown[c.name] = c.describe()

            if not args.json:
                print("following the runs (Ctrl-C stops following; the runs go on)", file=sys.stderr)
            cells = watch(spec, args.name, reg, on_change=show, repeats=args.repeats)
    results = study_results(spec, cells, reg, n_boot=args.bootstrap)

    def human(res):
        print("results (test AUC [95% CI] beside the published value):")
        w = max([26] + [len(r["key"]) for r in res["cells"]])  # the held-out origins' keys are long
        for r in res["cells"]:
            print(f"  {r['key']:<{w}} {r['class']:<9} ours {estimate(r['ours'], r['low'], r['high'], 4)}"
                  + (f"  study {r['published']:.2f}" if r["published"] is not None else "") + f"  ({r['state']})")
            if r.get("repeats") and r["repeats"]["n"] and res["repeats"] > 1:
                print(f"  {'':<{w}} {'':<9} over {spread_text(r['repeats'])}")
            if r.get("collection_only"):
                print(f"  {'':<{w}} {'':<9} {r['collection_only']['text']}")
        if res.get("learning_curves"):
            print("learning curve (test AUC by share of training patients):")
            for c in res["learning_curves"]:
                print(f"  {c['arm']}: " + ", ".join(f"{p['fraction']:.0%} {fmt(p['auc'])}" for p in c["points"]))
        if res.get("held_out"):
            print("leave one source out (AUC on the held-out origin; internal test AUC):")
            for r in res["held_out"]:
                n = "" if r["positives"] is None else f" ({r['positives']}+/{r['negatives']}-)"
                print(f"  {r['origin']:<24} {estimate(r['auc'], r['low'], r['high'], 4)}{n}; internal {fmt(r['internal_auc'])}"
                      + ("" if r["state"] == "finished" else f"  ({r['state']})"))
        for note in res.get("notes", []):
            print(note)
        print("comparisons:")
        for c in res["comparisons"]:
            print(f"  {c['what']}: {c['verdict']}" + (f" ({c['images_note']})" if c.get('images_note') else ""))
            if c.get("across_repeats"):
                print(f"    across repeats: {c['across_repeats']['text']}")
        if res.get("repeat_note"):
            print(res["repeat_note"])

    emit(results, args.json, human)
    if args.action == "status":
        return 0
    stuck = [c for c in cells if c.state in STUCK]
    for c in stuck:
        print(f"{c.name}: {c.describe()}", file=sys.stderr)
    if stuck:
        print(f"{len(stuck)} experiment(s) failed, blocked or have other settings: the study is not complete "
              "(exit 1)", file=sys.stderr)
    return 1 if stuck else 0


STUCK = ("failed", "blocked", "other settings", "cancelled", "interrupted")  # a study that ends so exits 1


def _report(args, spec, reg) -> int:
    from ..study.graph import status
    from ..study.report import write_report
    from ..study.results import study_results

    if not args.out:
        raise CLIError("study report needs --out DIR")
    paths = write_report(study_results(spec, status(spec, args.name, reg, args.repeats), reg, n_boot=args.bootstrap),
                         reg,
                         Path(args.out))
    emit({k: str(v) for k, v in paths.items()}, args.json,
         lambda o: print("\n".join(f"{k}: {v}" for k, v in o.items())))
    return 0


def cmd_compare(args) -> int:
    from ..evaluation.compare import compare_runs

    out = compare_runs(registry(), args.run_a, args.run_b, args.cls, split=args.split, n_boot=args.bootstrap,
                       images="common" if args.common else "same")

    def human(o):
        print(f"{o['run_a']} vs {o['run_b']} · {o['class']} · {o['split']}: {o['images']} images, "
              f"{o['patients']} patients")
        print(f"  AUC {fmt(o['auc_a'])} vs {fmt(o['auc_b'])}; difference {o['verdict']}")
        print(f"  ({o['test']}; {o['bootstrap']} bootstrap resamples)")
        print(f"  settings: {o['design']}")

    emit(out, args.json, human)
    return 0


def register(sub) -> None:
    p = sub.add_parser("study", help="run the study's experiments as one graph; its tables with paired statistics")
    p.add_argument("action", nargs="?", choices=["run", "status", "report", "stop"], default="run",
                   help="run (default): start or continue, then follow; status: where it stands; report: write "
                        "files; stop: cancel its queued and running runs (run again to resume them)")
    p.add_argument("--scale", default="pack",
                   help="pack (the shared data pack on a CPU; its measured cost is printed as it starts), full (the "
                   "study's settings), or the path of a study JSON file (default pack)")
    add_roots(p)
    p.add_argument("--executor", choices=["local", "ray"],
                   help="who starts queued runs: this machine's queue (default) or a Ray cluster at RAY_ADDRESS "
                        "(the same as CXR_EXECUTOR; docs/cluster.md)")
    p.add_argument("--name", default=DEFAULT_PREFIX, help=f"prefix of the study's run names (default {DEFAULT_PREFIX})")
    p.add_argument("--repeats", type=int, default=1, metavar="K",
                   help="run every experiment K times, repeat r with the training seed and the split seed moved by r "
                        "(COVID-19 patient split and ChestX-ray14 train/val redrawn; the official test list stays); "
                        "the tables then give each AUC's spread and each comparison's test across repeats (default 1)")
    p.add_argument("--no-wait", dest="wait", action="store_false", help="submit and return; the runs go on")
    p.add_argument("--out", default=None, help="report: the folder for study.html, study.json and study.md")
    p.add_argument("--bootstrap", type=int, default=2000, help="paired bootstrap resamples (default 2000)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("compare", help="two runs on the same images: AUC difference, paired bootstrap CI, DeLong p")
    p.add_argument("run_a")
    p.add_argument("run_b")
    p.add_argument("--class", dest="cls", default=None,
                   help="a class both runs score, or mean (default: run A's headline)")
    p.add_argument("--split", choices=["test", "val"], default="test")
    p.add_argument("--common", action="store_true",
                   help="runs scored on different image sets: compare them on the images both scored (said in the result)")
    p.add_argument("--bootstrap", type=int, default=2000)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_compare)
