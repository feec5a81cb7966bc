"""Printing what `evaluate --on` and `evaluate --operating-points` find (the command itself is in
cli/runs.py), and the `audit` subcommand."""
from __future__ import annotations

import sys

from ..text import estimate as ci
from .common import emit, fmt, progress_bar, registry, staged_progress_bar


def print_operating_points(op: dict) -> None:
    print(f"operating points (thresholds chosen on validation; sensitivity target {op['sensitivity_target']}, "
          f"specificity target {op['specificity_target']})")
    for c, d in op["classes"].items():
        print(f"  {c}")
        print(f"    {'rule':<12} {'threshold':>9}  {'sensitivity':<22} {'specificity':<22} {'PPV':<22} {'NPV':<22} F1")
        for p in d["points"]:
            if p.get("threshold") is None:
                print(f"    {p['rule']:<12} {'n/a':>9}  (validation has no positives or no negatives)")
                continue
            cells = [ci(p[k], p[f"{k}_low"], p[f"{k}_high"]) for k in ("sensitivity", "specificity", "ppv", "npv",
                                                                       "f1")]
            print(f"    {p['rule']:<12} {p['threshold']:>9.4f}  " + " ".join(f"{x:<22}" for x in cells[:4]) + cells[4])
            print(f"    {'':<12} {'':>9}  TP {p['tp']}  FP {p['fp']}  TN {p['tn']}  FN {p['fn']}")
        cal = d["calibration"]
        print(f"    calibration: ECE {fmt(cal['ece'])}, Brier {fmt(cal['brier'])} over {cal['n']} images")


def print_subgroups(rows: list[dict]) -> None:
    if not rows:
        return
    print("subgroups (AUC with patient-bootstrap interval; 'flagged': interval wholly below the overall AUC)")
    for r in rows:
        print(f"  {r['class']:<18} {r['attribute']:<9} {r['group']:<10} {r['images']:>6} img {r['positives']:>5} pos  "
              f"{ci(r['auc'], r['low'], r['high']):<24} overall {r['overall_auc']:.3f}  {r['status']}")


def print_external(o: dict) -> None:
    print(f"external evaluation {o['name']} of {o['run']}: {o['images']} images from {o['root']} ({o['format']})")
    skipped = {k: v for k, v in o["skipped"].items() if isinstance(v, int) and v}
    if skipped or o["unreadable"]:
        print("  skipped: " + ", ".join(f"{k} {v}" for k, v in {**skipped, "unreadable": o["unreadable"]}.items() if v))
    if not o["patient_ids"]:
        print("  no patient ids: intervals resample images, as if every image were its own patient")
    ov = o["overlap"]
    if ov["checked"]:
        print(f"  same film as a training/validation image of the run: {ov['shared_images']} of {o['images']} images")
        for r in ov["pairs"][:10]:
            print(f"    {r['image_a']} = {r['image_b']} ({r['split_b']}, patient {r['patient_b']}), distance {r['distance']}")
        if len(ov["pairs"]) > 10:
            print(f"    ... {len(ov['pairs']) - 10} more pairs in metrics.json")
    else:
        print(f"  overlap with the run's training data not checked: {ov['reason']}")
    unseen = {r["class"]: r for r in (o.get("unseen") or {}).get("auc", [])}
    print(f"  {'class':<20} {'external AUC':<26} {'internal test':>13} {'drop':>7}"
          + (f"  {'without the shared films':<26}" if unseen else ""))
    for r in o["auc"]:
        if not r.get("labelled"):
            continue
        u = unseen.get(r["class"])
        print(f"  {r['class']:<20} {ci(r['auc'], r['low'], r['high']):<26} {fmt(r['internal_auc']):>13} "
              f"{fmt(r['drop']):>7}" + (f"  {ci(u['auc'], u['low'], u['high']):<26}" if u else ""))
    if unseen:
        print(f"  (without the shared films: {o['unseen']['images']} images, the {o['unseen']['excluded']} the "
              f"model was trained or validated on left out)")
    print_subgroups(o["subgroups"])


def cmd_evaluate_external(args) -> int:
    from ..data.manifest import parse_mapping
    from ..evaluation.external import evaluate_external

    bars = {"hash": progress_bar("hash images (overlap check)"), "predict": progress_bar("predict", unit="batch")}
    out = evaluate_external(registry(), args.run, args.on, fmt=args.format, name=args.name,
                            mapping=parse_mapping(args.map), n_boot=args.bootstrap, check_overlap=not args.no_overlap_check,
                            thresholds={"sensitivity": args.sensitivity, "specificity": args.specificity},
                            public={k: v for k, v in (("policy", args.uncertain),
                                                      ("frontal_only", False if args.all_views else None)) if v is not None},
                            progress=None if args.json else (lambda s, k, n: bars[s](k, n)),
                            notice=lambda text: print(text, file=sys.stderr))

    def human(o):
        print_external(o)
        if args.operating_points:
            print_operating_points(o["operating_points"])

    emit(out, args.json, human)
    return 0


def cmd_operating_points(args) -> int:
    """`evaluate RUN --operating-points` without --on: from the run's own val/test predictions."""
    from ..trust.report import run_tables

    reg = registry()
    reg.require(args.run)
    out = run_tables(reg.folder(args.run), n_boot=200 if args.bootstrap is None else args.bootstrap,
                     sensitivity=args.sensitivity, specificity=args.specificity)

    def human(o):
        print_subgroups(o["subgroups"])
        print_operating_points(o["operating_points"])

    emit(out, args.json, human)
    return 0


def cmd_audit(args) -> int:
    from ..trust.audit import audit_run

    out = audit_run(registry(), args.run, per_source=args.per_source, top_k=args.top_k, seed=args.seed,
                    progress=None if args.json else staged_progress_bar("audit", unit="item"))

    def human(o):
        v = o["verdict"]
        print(f"audit of {o['run']} ({o['headline_class']}): {v['summary']}")
        for line in v["evidence"]:
            print(f"  - {line}")
        for n in o["notes"]:
            print(f"  note: {n}")

    emit(out, args.json, human)
    return 0


def register(sub) -> None:
    p = sub.add_parser("audit", help="shortcut audit of a run: source predictability, where the model looks, "
                       "internal vs external AUC, and a plain-language verdict")
    p.add_argument("run")
    p.add_argument("--per-source", type=int, default=120, help="images sampled per source for the probe (default 120)")
    p.add_argument("--top-k", type=int, default=12,
                   help="most confident test images per class for the maps (default 12)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_audit)
