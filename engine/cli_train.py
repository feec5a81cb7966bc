"""Subcommands: train, evaluate, runs list|show, report."""
from __future__ import annotations

import json
import os
import sys
import time

from .cli import CLIError, emit
from .config import PRESETS, ConfigError, ExperimentConfig, field_types, set_field

RESUME_OVERRIDABLE = ("epochs", "early_stopping", "num_workers", "device", "checkpoint_minutes", "bootstrap")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_flags(p) -> None:
    g = p.add_argument_group("config overrides (any field of the preset)")
    for name, (section, typ) in field_types().items():
        kind = "true/false" if typ is bool else typ.__name__
        g.add_argument(_flag(name), dest=f"cfg_{name}", default=None, metavar=kind.upper() if typ is not bool else "BOOL",
                       help=f"{section}.{name} ({kind})")


def overrides_from(args) -> dict:
    return {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_") and v is not None}


def _registry():
    from .runs import Registry

    return Registry()


def cmd_train(args) -> int:
    from .jobs import prepare_config
    from .runs import RunError, validate_name
    from .train import dist_info, fit, init_distributed

    reg = _registry()
    over = overrides_from(args)
    rank, world, _ = dist_info()
    if args.resume:
        row = reg.get(args.resume)
        if row is None:
            raise CLIError(f"no run named {args.resume!r} to resume (see `python -m engine runs list`)")
        if row["status"] == "running":
            from .runs import pid_alive

            if pid_alive(row["pid"]):
                raise CLIError(f"run {args.resume!r} is still running (pid {row['pid']})")
        if row["status"] == "succeeded" and "epochs" not in over:
            raise CLIError(f"run {args.resume!r} already succeeded; pass --epochs N to train it further")
        bad = [k for k in over if k not in RESUME_OVERRIDABLE]
        if bad:
            raise CLIError(f"--resume can only change {', '.join(RESUME_OVERRIDABLE)}; not {', '.join(bad)}")
        cfg = ExperimentConfig.from_dict(row["config"])
        for k, v in over.items():
            set_field(cfg, k, v)
        cfg.validate()
        name = args.resume
        if rank == 0:  # this process runs it from now on: a kill before training starts reads as interrupted
            reg.update(name, config=cfg.to_dict(), status="running", pid=os.getpid(), heartbeat=time.time())
    else:
        if not args.preset:
            raise CLIError("pass --preset NAME (or --resume RUN); presets: " + ", ".join(PRESETS))
        cfg = prepare_config(args.preset, over, reg)  # roots and the init run checked before any run row exists
        name = None
        if rank == 0:
            name = validate_name(args.name) if args.name else reg.unique_name(args.preset)
            if reg.get(name) is not None:
                raise CLIError(f"a run named {name!r} already exists; choose another --name or --resume it")
            reg.create(name, cfg.to_dict(), args.preset, status="running")
            reg.update(name, pid=os.getpid(), heartbeat=time.time())
    if world > 1:
        import torch.distributed as dist

        init_distributed(cfg.train.device)
        box = [name]
        dist.broadcast_object_list(box, 0)
        name = box[0]
    if rank == 0 and not args.json:
        print(f"run {name}: logs in {reg.run_dir(name) / 'train.log'}", file=sys.stderr)
    progress = None if args.json or rank != 0 else _progress_printer()
    try:
        status = fit(cfg, name, reg, resume=bool(args.resume), on_progress=progress)
    except (RunError, ConfigError, OSError, ValueError) as exc:  # OSError: disk full, unreadable root, ...
        raise CLIError(f"run {name} failed: {exc.__class__.__name__}: {exc}; the registry says why "
                       f"(python -m engine runs show {name})") from exc
    if rank == 0:
        row = reg.get(name)
        emit({"name": name, "status": status, "best_epoch": row["best_epoch"], "best_val_auc": row["best_val_auc"],
              "test_auc": row["test_auc"]}, args.json,
             lambda o: print(f"run {o['name']} {o['status']}: best epoch {o['best_epoch']}, val mean AUC "
                             f"{_fmt(o['best_val_auc'])}, test mean AUC {_fmt(o['test_auc'])}"))
    return 0 if status == "succeeded" else 3


def cmd_queue(args) -> int:
    from .jobs import submit

    name = submit(args.preset, overrides_from(args), args.name)
    row = _registry().get(name)
    emit({"name": name, "status": row["status"]}, args.json, lambda o: print(f"run {o['name']}: {o['status']}"))
    return 0


def _progress_printer():
    from tqdm import tqdm

    bar = {"b": None, "epoch": None}

    def update(p: dict) -> None:
        if bar["epoch"] != p["epoch"]:
            if bar["b"] is not None:
                bar["b"].close()
            bar["b"] = tqdm(total=p["steps"], desc=f"epoch {p['epoch']}/{p['epochs']}", unit="step", file=sys.stderr)
            bar["epoch"] = p["epoch"]
        bar["b"].n = p["step"]
        bar["b"].refresh()

    return update


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def cmd_evaluate(args) -> int:
    from .train import evaluate_run

    splits = ("val", "test") if args.split == "both" else (args.split,)
    out = evaluate_run(_registry(), args.run, splits, n_boot=args.bootstrap)

    def human(o):
        for s in splits:
            r = o[s]
            print(f"{s}: {r['images']} images, mean AUC {_fmt(r['mean_auc'])}")
            for row in r["auc"]:
                ci = f" [{_fmt(row['low'])}, {_fmt(row['high'])}]" if row["low"] is not None else ""
                print(f"  {row['class']:<20} {_fmt(row['auc'])}{ci}")

    emit(out, args.json, human)
    return 0


def _duration(r) -> float | None:
    if not r["started"]:
        return None
    return (r["finished"] or time.time()) - r["started"]


def cmd_runs_list(args) -> int:
    reg = _registry()
    reg.mark_stale()
    rows = [{"name": r["name"], "preset": r["preset"], "status": r["status"], "epochs_done": r["epochs_done"],
             "epochs": r["config"].get("train", {}).get("epochs"), "best_val_auc": r["best_val_auc"],
             "test_auc": r["test_auc"], "duration_s": _duration(r), "created": r["created"]} for r in reg.list()]

    def human(rs):
        if not rs:
            print("no runs yet: python -m engine train --preset ...")
            return
        print(f"{'name':<40} {'status':<11} {'epochs':>7} {'val AUC':>8} {'test AUC':>8}")
        for r in rs:
            print(f"{r['name']:<40} {r['status']:<11} {r['epochs_done']:>3}/{r['epochs']:<3} "
                  f"{_fmt(r['best_val_auc']):>8} {_fmt(r['test_auc']):>8}")

    emit(rows, args.json, human)
    return 0


def run_details(reg, name: str) -> dict:
    row = reg.get(name)
    if row is None:
        raise CLIError(f"no run named {name!r}")
    d = reg.run_dir(name)
    metrics = json.loads((d / "metrics.json").read_text()) if (d / "metrics.json").is_file() else {}
    aucs = {s: {r["class"]: r for r in metrics[s]["auc"]} for s in ("val", "test") if s in metrics}
    return {**row, "epochs": reg.epochs(name), "best_epoch": row["best_epoch"], "auc": aucs,
            "checkpoints": sorted(p.name for p in d.glob("*.pt")), "folder": str(d)}


def cmd_runs_show(args) -> int:
    reg = _registry()
    reg.mark_stale()
    out = run_details(reg, args.run)

    def human(o):
        print(f"run {o['name']} ({o['preset']}): {o['status']}" + (f" — {o['error']}" if o["error"] else ""))
        print(f"  device {o['device']}, code {o['code_version']}, data {o['data_fingerprint']}")
        print(f"  folder {o['folder']}; checkpoints: {', '.join(o['checkpoints']) or 'none'}")
        for e in o["epochs"]:
            print(f"  epoch {e['epoch']:>3}: train loss {e['train_loss']:.4f}  val loss {e['val_loss']:.4f}  "
                  f"val AUC {_fmt(e['val_auc_mean'])}  lr {e['lr']:.1e}")
        for s, rows in o["auc"].items():
            print(f"  {s} AUC: " + ", ".join(f"{c} {_fmt(r['auc'])}" for c, r in rows.items()))

    emit(out, args.json, human)
    return 0


def cmd_report(args) -> int:
    from .constants import COVID_LABEL, NIH_LABELS
    from .published import STUDY_RESULTS, nih_table

    reg = _registry()
    ours = []
    for r in reg.list():
        if r["status"] != "succeeded":
            continue
        if args.run and r["name"] not in args.run:
            continue
        det = run_details(reg, r["name"])
        test = det["auc"].get("test", {})
        row = {"source": f"ours: {r['name']}", "preset": r["preset"], "task": r["config"]["data"]["task"],
               "mean": test.get("mean", {}).get("auc")}
        for c in list(NIH_LABELS) + [COVID_LABEL]:
            if c in test:
                row[c] = test[c]["auc"]
                row[c + " CI"] = [test[c]["low"], test[c]["high"]]
        pub = STUDY_RESULTS.get(r["preset"] or "")
        if pub:
            row["study"] = {"what": pub[0], "value": pub[1], "citation": pub[2]}
        ours.append(row)
    out = {"ours": ours, "published_nih": nih_table(),
           "published_study": [{"preset": k, "what": v[0], "value": v[1], "citation": v[2]} for k, v in STUDY_RESULTS.items()]}

    def human(o):
        short = [c[:6] for c in NIH_LABELS]
        print("ChestX-ray14 test AUROC per class (published rows: their own splits)")
        print(f"{'source':<46} " + " ".join(f"{s:>6}" for s in short) + "   mean")
        for r in o["published_nih"] + [x for x in o["ours"] if x["task"] in ("nih", "combined15")]:
            vals = " ".join(f"{r.get(c):>6.3f}" if r.get(c) is not None else "     -" for c in NIH_LABELS)
            print(f"{r['source'][:46]:<46} {vals}  {_fmt(r.get('mean'))}")
        print("\nThe study's other results beside ours")
        for p in o["published_study"]:
            mine = [x for x in o["ours"] if x["preset"] == p["preset"]]
            ours_txt = ", ".join(f"{x['source'][6:]} {_fmt(x.get(COVID_LABEL) if p['preset'].startswith(('covid', 'combined')) else x.get('mean'))}"
                                 for x in mine) or "no run yet"
            print(f"  {p['what']}: study {p['value']:.2f} ({p['citation']}); ours: {ours_txt}")

    emit(out, args.json, human)
    return 0


def _run_model(reg, run: str):
    from .inference import LoadedModel, best_checkpoint

    if reg.get(run) is None:
        raise CLIError(f"no run named {run!r}")
    return LoadedModel(best_checkpoint(reg.run_dir(run)))


def cmd_localize(args) -> int:
    from .cli import tqdm_progress
    from .localize import localize

    reg = _registry()
    row = reg.get(args.run)
    if row is None:
        raise CLIError(f"no run named {args.run!r}")
    root = args.nih_root or row["config"]["data"].get("nih_root") or os.environ.get("CXR_NIH_ROOT")
    if not root or not os.path.isdir(root):
        raise CLIError(f"no NIH root with BBox_List_2017.csv: pass --nih-root DIR (got {root!r})")
    loaded = _run_model(reg, args.run)
    out = localize(loaded, root, method=args.method, threshold=args.threshold,
                   progress=None if args.json else tqdm_progress("localize"))
    out["run"] = args.run

    def human(o):
        print(f"{o['run']} · {o['method']}: {o['boxes_evaluated']} boxes evaluated "
              f"({o['boxes_with_image']} with an image file, of {o['boxes_in_file']} in the list)")
        for lab, r in o["per_class"].items():
            if r["boxes"]:
                print(f"  {lab:<14} boxes {r['boxes']:>4}  pointing {r['pointing']:.3f}  IoU@{o['threshold']} {r['iou']:.3f}")

    emit(out, args.json, human)
    return 0


def cmd_cam(args) -> int:
    from pathlib import Path

    import cv2

    from .data.images import read_xray
    from .overlay import overlay_heatmap

    loaded = _run_model(_registry(), args.run)
    gray = read_xray(args.image)
    names = loaded.class_names
    if args.cls == "all":
        classes = list(range(len(names)))
    elif args.cls in names:
        classes = [names.index(args.cls)]
    else:
        raise CLIError(f"unknown class {args.cls!r} for run {args.run}; its classes: {', '.join(names)} (or all)")
    probs, maps = loaded.predict(gray, method=args.method, classes=classes, scale=args.scale)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(args.image).stem
    files = []
    for i, c in enumerate(classes):
        img = overlay_heatmap(gray, maps[i], alpha=args.alpha, colormap=args.colormap)
        f = out / f"{stem}_{args.method}_{names[c]}.png"
        cv2.imwrite(str(f), img[..., ::-1])
        files.append(str(f))
    result = {"run": args.run, "image": str(args.image), "method": args.method,
              "probabilities": {n: float(p) for n, p in zip(names, probs)}, "overlays": files}
    (out / f"{stem}_probabilities.json").write_text(json.dumps(result, indent=1))
    emit(result, args.json, lambda o: print("\n".join(f"{n:<20} {p:.3f}" for n, p in sorted(
        o["probabilities"].items(), key=lambda kv: -kv[1])) + f"\noverlays in {out}"))
    return 0


def _landscape(args):
    from .cli import tqdm_progress
    from .landscape import load_landscape

    reg = _registry()
    if reg.get(args.run) is None:
        raise CLIError(f"no run named {args.run!r}")
    return load_landscape(reg, args.run, nih_root=args.nih_root, covid_root=args.covid_root, split=args.split,
                          per_label=args.per_label, seed=args.seed,
                          progress=None if args.json else tqdm_progress("features"))


def cmd_embed(args) -> int:
    import numpy as np

    from .embeddings import TsneMap, landscape_numbers
    from .som import cell_label_distribution, fit_som_pca

    ls = _landscape(args)
    x = ls.space(args.space)
    labels, datasets = ls.frame["label"].to_numpy(), ls.frame["dataset"].to_numpy()
    out = {"run": args.run, "method": args.method, "space": args.space, "images": int(len(x)),
           "unreadable_images": ls.unreadable,
           "numbers": landscape_numbers(x, labels, datasets, k=args.k)}
    if args.method == "tsne":
        coords = TsneMap(x, perplexity=args.perplexity, seed=args.seed).coords
    else:
        som = fit_som_pca(x, grid=(args.grid, args.grid), epochs=args.epochs, seed=args.seed, schedule=args.schedule)
        coords = som.winners.astype(float) + np.random.default_rng(args.seed).uniform(-0.3, 0.3, som.winners.shape)
        out["som"] = {"grid": [args.grid, args.grid], "quantization_error": som.quantization_error,
                      "topographic_error": som.topographic_error, "umatrix": som.umatrix.round(4).tolist(),
                      "cells": cell_label_distribution(som.winners, labels, (args.grid, args.grid))}
    out["points"] = [{"image": i, "label": lab, "dataset": d, "x": float(a), "y": float(b)}
                     for i, lab, d, (a, b) in zip(ls.frame["image"], labels, datasets, coords)]

    def human(o):
        n = o["numbers"]
        print(f"{o['run']} · {o['method']} of {o['space']}: {o['images']} images"
              + (f" ({o['unreadable_images']} unreadable left out)" if o["unreadable_images"] else ""))
        print(f"  kNN label purity {n['knn_purity']:.3f}, silhouette by label {_fmt(n['silhouette_label'])}, "
              f"by dataset {_fmt(n['silhouette_dataset'])}")
        if "som" in o:
            print(f"  SOM quantisation error {o['som']['quantization_error']:.4f}, topographic error "
                  f"{o['som']['topographic_error']:.3f}")
        print("  (use --json for the coordinates)")

    emit(out, args.json, human)
    return 0


def cmd_neighbours(args) -> int:
    from .embeddings import nearest_neighbours, neighbourhood

    ls = _landscape(args)
    labels = ls.frame["label"].to_numpy()
    if args.label not in set(labels):
        raise CLIError(f"no image labelled {args.label!r} in the selection; labels: {', '.join(sorted(set(labels)))}")
    spaces = ("pixels", "features")
    shares, cents = neighbourhood({s: ls.space(s) for s in spaces}, labels, args.label, args.k)
    out = {"run": args.run, "label": args.label, "k": args.k, "unreadable_images": ls.unreadable, "spaces": {
        s: {"shares": shares[shares["space"] == s].drop(columns="space").to_dict("records"),
            "centroid_distance": cents[cents["space"] == s].drop(columns="space").to_dict("records")} for s in spaces}}
    q = (labels == args.label).nonzero()[0]
    idx, sims = nearest_neighbours(ls.space(args.space), q, args.k, candidates=labels != args.label)
    out["neighbours"] = [{"image": ls.frame.at[i, "image"], "neighbours": [
        {"image": ls.frame.at[j, "image"], "label": labels[j], "similarity": float(s)} for j, s in zip(row, srow)]}
        for i, row, srow in zip(q, idx, sims)]

    def human(o):
        print(f"{o['run']}: nearest other pathologies of {o['label']} ({len(o['neighbours'])} images, k={o['k']})")
        print(f"  {'label':<28} {'share px':>9} {'share feat':>10} {'centroid px':>12} {'centroid feat':>14}")
        sh = {s: {r["label"]: r["share"] for r in o["spaces"][s]["shares"]} for s in ("pixels", "features")}
        cd = {s: {r["label"]: r["distance"] for r in o["spaces"][s]["centroid_distance"]} for s in ("pixels", "features")}
        for lab in sorted(cd["features"], key=lambda l: -sh["features"].get(l, 0)):
            print(f"  {lab:<28} {sh['pixels'].get(lab, 0):>9.3f} {sh['features'].get(lab, 0):>10.3f} "
                  f"{cd['pixels'].get(lab, float('nan')):>12.3f} {cd['features'].get(lab, float('nan')):>14.3f}")

    emit(out, args.json, human)
    return 0


def register(sub) -> None:
    p = sub.add_parser("train", help="train a preset (or --resume a run)")
    p.add_argument("--preset", choices=list(PRESETS), help="the study's experiment to run")
    p.add_argument("--name", help="run name (letters, digits, . _ -); default: preset + timestamp")
    p.add_argument("--resume", metavar="RUN", help="continue RUN from its last checkpoint")
    p.add_argument("--json", action="store_true", help="print the final run summary as JSON")
    add_config_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("worker", help="(internal) run a queued run of the registry; used by the dashboard")
    p.add_argument("run")
    p.set_defaults(func=lambda a: __import__("engine.jobs", fromlist=["worker"]).worker(a.run))

    p = sub.add_parser("queue", help="queue runs (started one at a time per device) instead of training in this shell")
    p.add_argument("--preset", choices=list(PRESETS), required=True)
    p.add_argument("--name")
    p.add_argument("--json", action="store_true")
    add_config_flags(p)
    p.set_defaults(func=cmd_queue)

    p = sub.add_parser("cancel", help="cancel a queued or running run (graceful: checkpoint kept)")
    p.add_argument("run")
    p.set_defaults(func=lambda a: print(__import__("engine.jobs", fromlist=["cancel"]).cancel(a.run)) or 0)

    p = sub.add_parser("evaluate", help="evaluate a run's best checkpoint (AUCs with bootstrap CIs)")
    p.add_argument("run")
    p.add_argument("--split", choices=["val", "test", "both"], default="test")
    p.add_argument("--bootstrap", type=int, default=None, help="bootstrap resamples (default: the run's)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    runs = sub.add_parser("runs", help="list or show runs of the registry")
    rsub = runs.add_subparsers(dest="runs_command", required=True, metavar="ACTION")
    p = rsub.add_parser("list", help="all runs, newest first")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_runs_list)
    p = rsub.add_parser("show", help="one run: status, config, per-epoch metrics, AUCs")
    p.add_argument("run")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_runs_show)

    from .constants import CAM_METHODS as METHODS
    from .constants import CAM_SCALES
    from .overlay import COLORMAPS

    p = sub.add_parser("cam", help="class activation map overlays and probabilities for one image")
    p.add_argument("run")
    p.add_argument("--image", required=True, help="PNG, JPEG or DICOM file")
    p.add_argument("--class", dest="cls", default="all", help="a class name of the run, or all (default)")
    p.add_argument("--method", choices=METHODS, default="cam")
    p.add_argument("--scale", choices=CAM_SCALES, default="image",
                   help="image: each map min-max scaled; class/none: raw magnitudes kept comparable")
    p.add_argument("--colormap", choices=list(COLORMAPS), default="jet")
    p.add_argument("--alpha", type=float, default=0.45, help="heatmap opacity 0..1")
    p.add_argument("--out", required=True, help="folder for the overlay PNGs and the probabilities JSON")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_cam)

    p = sub.add_parser("localize", help="pointing game and IoU of class maps against NIH's bounding boxes")
    p.add_argument("run")
    p.add_argument("--method", choices=METHODS, default="cam")
    p.add_argument("--threshold", type=float, default=0.5, help="map threshold as a fraction of its maximum (IoU)")
    p.add_argument("--nih-root", default=None, help="default: the run's recorded NIH root, then $CXR_NIH_ROOT")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_localize)

    def landscape_args(p):
        p.add_argument("run")
        p.add_argument("--nih-root", default=None, help="default: the run's recorded root, then $CXR_NIH_ROOT")
        p.add_argument("--covid-root", default=None, help="default: the run's recorded root, then $CXR_COVID_ROOT")
        p.add_argument("--split", choices=["train", "val", "test"], default=None, help="default: all splits")
        p.add_argument("--per-label", type=int, default=80, help="images per pathology label at most (default 80)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--k", type=int, default=10, help="neighbours (purity, neighbour shares)")
        p.add_argument("--json", action="store_true")

    p = sub.add_parser("embed", help="t-SNE or SOM of a run's features or of raw pixels, with purity/silhouette")
    landscape_args(p)
    p.add_argument("--method", choices=["tsne", "som"], default="tsne")
    p.add_argument("--space", choices=["features", "pixels"], default="features")
    p.add_argument("--perplexity", type=float, default=30.0)
    p.add_argument("--grid", type=int, default=12, help="SOM grid side")
    p.add_argument("--epochs", type=int, default=50, help="SOM epochs")
    p.add_argument("--schedule", choices=["study", "minisom"], default="study", help="SOM neighbourhood decay")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("neighbours", help="which pathologies lie nearest a label (default COVID-19), pixels vs features")
    landscape_args(p)
    p.add_argument("--label", default="COVID-19")
    p.add_argument("--space", choices=["features", "pixels"], default="features", help="space of the per-image lists")
    p.set_defaults(func=cmd_neighbours)

    p = sub.add_parser("report", help="our per-class AUCs beside the published ones")
    p.add_argument("--run", action="append", help="only these runs (repeatable)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_report)
