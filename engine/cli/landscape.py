"""Subcommands of the pathology landscape: embed (t-SNE / SOM with purity and silhouettes) and
neighbours (which pathologies lie nearest COVID-19, pixels vs features)."""
from __future__ import annotations

from .common import CLIError, emit, fmt, registry, staged_progress_bar


def _landscape(args):
    from ..landscape.store import load_landscape

    reg = registry()
    row = reg.require(args.run)
    bar, stage = staged_progress_bar("landscape"), {"now": "starting"}
    return load_landscape(reg.run_dir(args.run), row.config, nih_root=args.nih_root, covid_root=args.covid_root,
                          split=args.split, per_label=args.per_label, seed=args.seed,
                          progress=None if args.json else (lambda done, total: bar(stage["now"], done, total)),
                          on_stage=None if args.json else (lambda text: stage.update(now=text)))


def cmd_embed(args) -> int:
    import numpy as np

    from ..landscape.embeddings import TsneMap, landscape_numbers
    from ..landscape.som import cell_label_distribution, fit_som_pca

    ls = _landscape(args)
    if args.to:
        return _to_projector(args, ls)
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
        print(f"  kNN label purity {n['knn_purity']:.3f}, silhouette by label {fmt(n['silhouette_label'])}, "
              f"by dataset {fmt(n['silhouette_dataset'])}")
        if n.get("silhouette_sample"):
            print(f"  (silhouettes scored on a seeded sample of {n['silhouette_sample']:,} of {n['points']:,} points)")
        if "som" in o:
            print(f"  SOM quantisation error {o['som']['quantization_error']:.4f}, topographic error "
                  f"{o['som']['topographic_error']:.3f}")
        print("  (use --json for the coordinates)")

    emit(out, args.json, human)
    return 0


def _to_projector(args, ls) -> int:
    from ..tracking.projector import write_projector

    kind, where = args.to
    if kind != "tensorboard":
        raise CLIError(f"--to {kind}: the embedding projector is TensorBoard's; use --to tensorboard DIR")
    out = {"run": args.run, **write_projector(ls, where, args.run), "unreadable_images": ls.unreadable}
    emit(out, args.json, lambda o: print(
        f"{o['run']}: {o['images']} images ({len(o['labels'])} labels), features ({o['dimensions']} dims) and raw "
        f"pixels with label, dataset, source, split and a sprite in {o['projector']}\n"
        f"  open it: tensorboard --logdir {where} --host 127.0.0.1, tab Projector"))
    return 0


def cmd_neighbours(args) -> int:
    from ..landscape.embeddings import nearest_neighbours, neighbourhood

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
        cd = {s: {r["label"]: r["distance"] for r in o["spaces"][s]["centroid_distance"]} for s in ("pixels",
                                                                                                    "features")}
        for lab in sorted(cd["features"], key=lambda l: -sh["features"].get(l, 0)):
            print(f"  {lab:<28} {sh['pixels'].get(lab, 0):>9.3f} {sh['features'].get(lab, 0):>10.3f} "
                  f"{cd['pixels'].get(lab, float('nan')):>12.3f} {cd['features'].get(lab, float('nan')):>14.3f}")

    emit(out, args.json, human)
    return 0


def register(sub) -> None:
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
    p.add_argument("--to", nargs=2, metavar=("tensorboard", "DIR"),
                   help="instead of a map here: the features and raw pixels with their metadata (label, dataset, "
                        "source, split) and a sprite of thumbnails for TensorBoard's projector, in DIR/RUN-landscape")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("neighbours",
                       help="which pathologies lie nearest a label (default COVID-19), pixels vs features")
    landscape_args(p)
    p.add_argument("--label", default="COVID-19")
    p.add_argument("--space", choices=["features", "pixels"], default="features", help="space of the per-image lists")
    p.set_defaults(func=cmd_neighbours)
