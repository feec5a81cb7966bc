"""Subcommands that read runs: runs list|show, evaluate, report."""
from __future__ import annotations

import sys
import time

from ..constants import COVID_LABEL, NIH_LABELS
from ..published import STUDY_RESULTS, nih_table, study_counterpart
from ..runs.details import duration_s, fmt_eta, progress_text, run_details
from ..evaluation.evaluate import evaluate_run
from ..runs.folder import disk_bytes
from ..runs.jobs import capacity_text, queue
from ..runs.liveness import observe
from ..runs.manage import archive_run, delete_run, prune_run
from ..runs.recovery import orphans, remove_orphan, restore_orphan, unlisted
from ..runs.registry import rebuild_registry
from . import trust
from ..text import estimate, human_bytes
from . import share
from .common import CLIError, emit, fmt, progress_bar, registry


def cmd_runs_list(args) -> int:
    reg = registry()
    now = time.time()
    rows = [{"name": r.name, "preset": r.preset, "status": r.status, "epochs_done": r.epochs_done,
             "epochs": r.config.get("train", {}).get("epochs"), "best_val_auc": r.best_val_auc,
             "test_auc": r.test_auc, "duration_s": duration_s(r, now), "created": r.created,
             "disk_bytes": disk_bytes(reg.run_dir(r.name))} for r in observe(reg)]

    restorable, problems = unlisted(reg)

    def human(rs):
        if reg.read_only:
            print(f"(read-only: {reg.read_only})")
        if restorable:
            print(f"{len(restorable)} run folder(s) in {reg.root} are not in the registry (was runs.sqlite deleted or "
                  f"replaced?): {', '.join(restorable[:8])}{' ...' if len(restorable) > 8 else ''}. "
                  "`python -m engine runs rebuild --missing` restores them")
        for name, why in problems.items():
            print(f"folder {name} in {reg.root} is not a run the registry can restore: {why}")
        if not rs:
            print("no runs yet: python -m engine train --preset ...")
            return
        print(f"{'name':<40} {'status':<11} {'epochs':>7} {'val AUC':>8} {'test AUC':>8} {'disk':>8}")
        for r in rs:
            epochs = "?" if r["epochs"] is None else r["epochs"]  # a row recorded without its settings
            print(f"{r['name']:<40} {r['status']:<11} {r['epochs_done']:>3}/{epochs!s:<3} "
                  f"{fmt(r['best_val_auc']):>8} {fmt(r['test_auc']):>8} {human_bytes(r['disk_bytes']):>8}")
        print(f"{len(rs)} runs, {human_bytes(sum(r['disk_bytes'] for r in rs))} on disk in {reg.root}")

    emit(rows, args.json, human)
    return 0


def cmd_runs_orphans(args) -> int:
    reg = registry()
    if args.restore:
        out = restore_orphan(reg, args.restore, args.as_name)
        emit(out, args.json, lambda o: print(f"{args.restore} restored as run {o['run']} ({o['status']}, "
                                             f"{o['epochs_done']} epochs)"))
        return 0
    if args.remove is not None or args.all:
        names = sorted(o["name"] for o in orphans(reg)) if args.all else args.remove
        if not args.all and not names:
            raise CLIError("name the folders to remove (see `runs orphans`), or pass --all")
        freed = {n: remove_orphan(reg, n) for n in names}
        emit({"removed": freed}, args.json, lambda o: print(
            f"removed {len(freed)} folder(s), {human_bytes(sum(freed.values()))} freed" if freed else "nothing to remove"))
        return 0
    rows = orphans(reg)

    def human(rs):
        if not rs:
            print(f"no moved-aside folders in {reg.root / '.orphans'}")
            return
        print(f"{'folder':<48} {'found as run':<32} {'checkpoint':>10} {'size':>8}")
        for o in rs:
            print(f"{o['name']:<48} {o['run']:<32} {'yes' if o['has_checkpoint'] else 'no':>10} "
                  f"{human_bytes(o['bytes']):>8}")
        print(f"{len(rs)} folder(s), {human_bytes(sum(o['bytes'] for o in rs))}. Restore one with "
              "`runs orphans --restore FOLDER [--as RUN]`; remove with `runs orphans --remove FOLDER` (or --all)")

    emit(rows, args.json, human)
    return 0


def cmd_runs_show(args) -> int:
    reg = registry()
    observe(reg)
    out = run_details(reg, args.run)

    def human(o):
        print(f"run {o['name']} ({o['preset']}): {o['status']}" + (f" — {o['error']}" if o["error"] else ""))
        print(f"  device {o['device']}, code {o['code_version']}, data {o['data_fingerprint']}")
        place = o.get("placement") or {}
        if place.get("node_id"):  # placed by a Ray cluster (docs/cluster.md)
            print(f"  ran on {place.get('host')} ({place.get('ip')}, Ray node {place['node_id'][:12]}), "
                  f"GPUs {','.join(place.get('gpus') or []) or 'none'}")
        prog = o.get("progress") or {}
        if o["status"] == "running" and prog.get("phase"):
            text = progress_text(prog)[1]
            eta = prog.get("run_eta_s") or prog.get("eta_s")
            print(f"  now: {text}" + (f", about {fmt_eta(eta)} left" if eta else ""))
        print(f"  folder {o['folder']}; checkpoints: {', '.join(o['checkpoints']) or 'none'}")
        for e in o["epochs"]:
            print(f"  epoch {e['epoch']:>3}: train loss {e['train_loss']:.4f}  val loss {e['val_loss']:.4f}  "
                  f"val AUC {fmt(e['val_auc_mean'])}  lr {e['lr']:.1e}")
        for s, rows in o["auc"].items():
            print(f"  {s} AUC: " + ", ".join(f"{c} {fmt(r['auc'])}" for c, r in rows.items()))
        cls, value = o["headline"]
        print(f"  headline: test AUC ({cls}) {fmt(value)}")

    emit(out, args.json, human)
    return 0


_mb = human_bytes  # the one way a size is written (engine.text)


def cmd_runs_queue(args) -> int:
    rows = queue(registry())

    def human(rows):
        if not rows:
            print(f"nothing queued or running ({capacity_text()})")
            return
        print(f"{'place':<9} {'run':<40} {'init':<24} {'node':<28} {'gpu':<5} state")
        for r in rows:
            print(f"{r['place']:<9} {r['run']:<40} {str(r['init']):<24} {r['node']:<28} {r['gpu']:<5} {r['state']}")
        print(f"{capacity_text()}; `python -m engine cancel RUN` takes one out")

    emit(rows, args.json, human)
    return 0


def cmd_runs_delete(args) -> int:
    if not args.yes:
        if not sys.stdin.isatty():
            raise CLIError(f"deleting {args.run} cannot be undone: pass --yes to confirm")
        if input(f"delete run {args.run} and its folder? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    out = delete_run(registry(), args.run)
    emit(out, args.json, lambda o: print(f"deleted {o['run']} ({_mb(o['freed_bytes'])} freed)"))
    return 0


def cmd_runs_rebuild(args) -> int:
    out = rebuild_registry(missing_only=args.missing)

    def human(o):
        if o["moved_aside"]:
            print(f"moved aside: {', '.join(o['moved_aside'])}")
        print(f"registry {o['registry']}: {len(o['restored'])} run(s) restored")
        for r in o["restored"]:
            print(f"  {r['run']}: {r['status']} ({r['epochs_done']} epochs)")
        for name, why in o["skipped"].items():
            print(f"  not a run folder: {name} ({why})")

    emit(out, args.json, human)
    return 0


def cmd_runs_archive(args) -> int:
    out = archive_run(registry(), args.run, args.to)
    emit(out, args.json, lambda o: print(f"archived {o['run']} to {o['archived_to']} ({_mb(o['bytes'])})"))
    return 0


def cmd_runs_prune(args) -> int:
    reg = registry()
    out = [prune_run(reg, name) for name in args.run]

    def human(rows):
        for o in rows:
            print(f"{o['run']}: " + (f"removed {', '.join(o['removed'])} ({_mb(o['freed_bytes'])})" if o["removed"]
                                     else "nothing to prune"))

    emit(out, args.json, human)
    return 0


def cmd_evaluate(args) -> int:
    if args.model:
        return _evaluate_baseline(args)
    if not args.run:
        raise CLIError("evaluate needs a RUN (or --model xrv:NAME for torchxrayvision's classifier)")
    if args.on:
        return trust.cmd_evaluate_external(args)
    if args.map or args.format or args.name or args.uncertain or args.all_views:
        raise CLIError("--format, --name, --map, --uncertain and --all-views describe an external collection: "
                       "add --on ROOT")
    if args.operating_points:
        return trust.cmd_operating_points(args)

    splits = ("val", "test") if args.split == "both" else (args.split,)
    bars = {s: progress_bar(f"evaluate {s}", unit="batch") for s in splits}
    out = evaluate_run(registry(), args.run, splits, n_boot=args.bootstrap,
                       progress=None if args.json else (lambda s, k, n: bars[s](k, n)))

    def human(o):
        for s in splits:
            r = o[s]
            print(f"{s}: {r['images']} images, mean AUC {fmt(r['mean_auc'])}")
            for row in r["auc"]:
                print(f"  {row['class']:<20} {estimate(row['auc'], row['low'], row['high'], 4)}")

    emit(out, args.json, human)
    return 0


def _evaluate_baseline(args) -> int:
    from ..evaluation.baseline import evaluate_baseline

    if args.run:
        raise CLIError("--model scores torchxrayvision's own classifier: give no RUN with it")
    bar = progress_bar(f"evaluate {args.model} on the ChestX-ray14 test split", unit="batch")
    out = evaluate_baseline(registry(), args.model, nih_root=args.nih_root, image_size=args.image_size,
                            max_images=args.max_images_per_split, n_boot=args.bootstrap or 1000,
                            progress=None if args.json else bar)

    def human(o):
        r = o["test"]
        print(f"{o['source']}: {r['images']} test images, mean AUC {fmt(r['mean_auc'])} over {len(o['classes'])} labels")
        for row in r["auc"]:
            print(f"  {row['class']:<20} {estimate(row['auc'], row['low'], row['high'], 4)}")
        print("kept for `report`, the Results page and the study's Table 1")

    emit(out, args.json, human)
    return 0


def cmd_report(args) -> int:
    reg = registry()
    ours = []
    newest_per_preset: set[str] = set()
    for r in reg.list():  # newest first
        if r.status != "succeeded" or (args.run and r.name not in args.run):
            continue
        if not (args.run or args.all) and r.preset in newest_per_preset:
            continue  # by default the newest finished run of each preset, not every smoke run
        newest_per_preset.add(r.preset)
        det = run_details(reg, r.name)
        test = det["auc"].get("test", {})
        row = {"source": f"ours: {r.name}", "preset": r.preset, "task": r.config["data"]["task"],
               "mean": test.get("mean", {}).get("auc"), "headline": det["headline"][1],
               "headline_class": det["headline"][0], "study_experiment": study_counterpart(r.config)}
        for c in list(NIH_LABELS) + [COVID_LABEL]:
            if c in test:
                row[c] = test[c]["auc"]
                row[c + " CI"] = [test[c]["low"], test[c]["high"]]
        pub = STUDY_RESULTS.get(study_counterpart(r.config) or "")
        if pub:
            row["study"] = {"what": pub[0], "value": pub[1], "citation": pub[2]}
        from ..evaluation.external import cross_dataset
        row["cross_dataset"] = cross_dataset(reg, r.name)  # the run on every collection it was scored on
        ours.append(row)
    from ..evaluation.baseline import baseline_row, baselines

    out = {"ours": ours, "published_nih": nih_table() + [baseline_row(b) for b in baselines(reg)],
           "published_study": [{"preset": k, "what": v[0], "value": v[1], "citation": v[2]} for k,
                               v in STUDY_RESULTS.items()]}

    def human(o):
        nih_rows = o["published_nih"] + [x for x in o["ours"] if x["task"] in ("nih", "combined15")]
        names = [r["source"] for r in nih_rows]
        print("ChestX-ray14 test AUROC per class (published rows: their own splits)")
        for k, n in enumerate(names):
            print(f"  [{k + 1}] {n}")
        print(f"{'class':<20}" + "".join(f"{f'[{k + 1}]':>7}" for k in range(len(names))))
        for c in list(NIH_LABELS) + ["mean"]:
            vals = "".join(f"{r.get(c):>7.3f}" if r.get(c) is not None else f"{'-':>7}" for r in nih_rows)
            print(f"{c:<20}{vals}")
        print("\nThe study's other results beside ours")
        for p in o["published_study"]:
            mine = [x for x in o["ours"] if x["study_experiment"] == p["preset"]]
            ours_txt = ", ".join(f"{x['source'][6:]} {fmt(x['headline'])}" for x in mine) or "no run yet"
            print(f"  {p['what']}: study {p['value']:.2f} ({p['citation']}); ours: {ours_txt}")
        for x in o["ours"]:
            if x["cross_dataset"]:
                print(f"\nAcross collections: {x['source'][6:]} (AUC [95% patient-bootstrap CI], images)")
                for c in dict.fromkeys(r["class"] for r in x["cross_dataset"]):
                    cells = [f"{r['collection']} {estimate(r['auc'], r['low'], r['high'])} ({r['images']})"
                             for r in x["cross_dataset"] if r["class"] == c]
                    print(f"  {c:<20}" + "; ".join(cells))

    emit(out, args.json, human)
    return 0


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate a run's best checkpoint (AUCs with bootstrap CIs), on its own "
                       "splits or on another collection (--on)")
    p.add_argument("run", nargs="?", help="the run (none with --model)")
    p.add_argument("--model", metavar="xrv:NAME", help="score torchxrayvision's own classifier (e.g. "
                   "xrv:densenet121-res224-nih) on this lab's ChestX-ray14 test split, as a baseline row")
    p.add_argument("--nih-root", help="with --model: the ChestX-ray14 root (default: $CXR_NIH_ROOT or the saved root)")
    p.add_argument("--image-size", type=int, default=224, help="with --model: input side (its weights: 224)")
    p.add_argument("--max-images-per-split", type=int, default=0, help="with --model: cap the test images (0: all)")
    p.add_argument("--split", choices=["val", "test", "both"], default="test")
    p.add_argument("--bootstrap", type=int, default=None, help="bootstrap resamples (default: the run's)")
    p.add_argument("--on", metavar="ROOT", help="score every image of another collection (a COVID-19 collection "
                   "or ChestX-ray14 root, a manifest CSV or a folder holding manifest.csv)")
    p.add_argument("--format", choices=["covid", "nih", "manifest", "chexpert", "mimic", "padchest", "rsna"],
                   help="the collection's layout (default: detected); chexpert: the CheXpert-v1.0[-small] folder; "
                        "mimic: the MIMIC-CXR-JPG folder; padchest, rsna: their folders (docs/own-data.md)")
    p.add_argument("--uncertain", choices=["ignore", "zeros", "ones"],
                   help="chexpert, mimic: how an uncertain (-1) label is read, Irvin et al.'s U-Ignore (default), "
                        "U-Zeros or U-Ones; recorded with the evaluation")
    p.add_argument("--all-views", action="store_true", help="chexpert, mimic: lateral views too (default frontal only)")
    p.add_argument("--name", help="name of the external evaluation (default: FORMAT-FOLDER)")
    p.add_argument("--map", action="append", metavar="COLUMN=FIELD",
                   help="manifest: read COLUMN as FIELD (path, patient_id, sex, age, view, source or a class name); repeatable")
    p.add_argument("--no-overlap-check", action="store_true",
                   help="do not look for images shared with the run's training data (pHash)")
    p.add_argument("--operating-points", action="store_true",
                   help="thresholds chosen on validation, applied to test (or --on): sensitivity, specificity, "
                   "PPV, NPV, F1 with intervals, confusion counts, calibration; and subgroup AUCs")
    p.add_argument("--sensitivity", type=float, default=0.9, help="target of the 'sensitivity' rule (default 0.9)")
    p.add_argument("--specificity", type=float, default=0.9, help="target of the 'specificity' rule (default 0.9)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    runs = sub.add_parser("runs", help="list or show runs of the registry")
    rsub = runs.add_subparsers(dest="runs_command", required=True, metavar="ACTION")
    p = rsub.add_parser("list", help="all runs, newest first")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_runs_list)
    p = rsub.add_parser("delete", help="delete a run: its registry rows and its folder")
    p.add_argument("run")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_runs_delete)
    p = rsub.add_parser("archive", help="move a run's folder (with its registry rows) out of checkpoints/")
    p.add_argument("run")
    p.add_argument("--to", required=True, metavar="DIR", help="archive folder (outside checkpoints/)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_runs_archive)
    p = rsub.add_parser("prune", help="drop last.pt of succeeded runs (best.pt stays; they can no longer be extended)")
    p.add_argument("run", nargs="+")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_runs_prune)
    p = rsub.add_parser("rebuild", help="rebuild a damaged or lost registry (runs.sqlite) from the run folders")
    p.add_argument("--missing", action="store_true",
                   help="keep the registry (it is readable) and add only the run folders it has no row for")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_runs_rebuild)
    p = rsub.add_parser("orphans", help="folders a new run found in its place, moved to checkpoints/.orphans/: "
                                        "list them with their size, restore one as a run, or remove them")
    p.add_argument("--restore", metavar="FOLDER", help="make this moved-aside folder a run again")
    p.add_argument("--as", dest="as_name", metavar="RUN", help="the run name to restore it under (default: its own)")
    p.add_argument("--remove", metavar="FOLDER", nargs="*", help="delete these moved-aside folders (--all: every one)")
    p.add_argument("--all", action="store_true", help="with --remove: every moved-aside folder")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_runs_orphans)
    p = rsub.add_parser("queue", help="everything running or queued, with its place; `cancel RUN` takes one out")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_runs_queue)
    share.register_runs(rsub)
    p = rsub.add_parser("show", help="one run: status, config, per-epoch metrics, AUCs")
    p.add_argument("run")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_runs_show)

    share.register(sub)

    p = sub.add_parser("report", help="our per-class AUCs beside the published ones")
    p.add_argument("--run", action="append", help="only these runs (repeatable)")
    p.add_argument("--all", action="store_true", help="every finished run (default: the newest of each preset)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_report)
