"""Subcommands that take a run out of the lab: its model as ONNX (`export`), its model card (`card`),
its bundle (`runs bundle`) and its copy in TensorBoard or MLflow (`runs export`)."""
from __future__ import annotations

import sys

from ..text import human_bytes
from ..runs.liveness import observe
from ..runs.states import ACTIVE, RunError
from .common import CLIError, emit, registry


def cmd_export(args) -> int:
    from ..models.export import export_onnx  # torch, onnx, onnxruntime

    out = export_onnx(registry(), args.run, args.out)
    emit(out, args.json,
         lambda o: print(f"wrote {o['onnx']} ({human_bytes(o['bytes'])}, dynamic batch) and {o['sidecar']}; "
                                         f"onnxruntime vs PyTorch on {o['images']} images: max |difference| "
                                         f"{o['max_abs_diff']:.1e}"))
    return 0


def cmd_card(args) -> int:
    from ..runs.card import write_card

    paths = write_card(registry(), args.run, args.out)
    emit({k: str(v) for k, v in paths.items()}, args.json, lambda o: print(f"wrote {o['md']} and {o['json']}"))
    return 0


def cmd_runs_bundle(args) -> int:
    from ..runs.bundle import describe, write_bundle  # figures and ROC curves: altair, scikit-learn

    reg = registry()
    observe(reg)
    row = reg.require(args.run)
    if row.status in ACTIVE:
        print(f"note: {args.run} is {row.status}; the bundle holds what it has written so far", file=sys.stderr)
    path = write_bundle(reg, args.run, args.out, weights=args.weights, force=args.force, deidentify=args.deidentify)
    emit({"run": args.run, "bundle": str(path), "weights": args.weights}, args.json,
         lambda o: print(f"wrote {describe(path)}"))
    return 0


def cmd_runs_export(args) -> int:
    """Finished runs into TensorBoard or MLflow, with the content live logging gives (engine.tracking)."""
    from ..tracking import TrackingError, normalise
    from ..tracking.export import export_run

    reg = registry()
    observe(reg)
    targets = normalise(f"{kind}:{where}" for kind, where in args.to)  # every target checked before any export
    done, failed = [], []
    for run in args.runs:
        reg.require(run)
    for run in args.runs:
        for target in targets:
            try:
                out = export_run(reg, run, target)
            except (TrackingError, RunError) as exc:
                raise CLIError(str(exc)) from exc
            except Exception as exc:  # a server down, a full disk: the other exports still go
                failed.append({"run": run, "target": target, "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
                if not args.json:
                    print(f"{run} -> {target}: failed ({failed[-1]['error']})", file=sys.stderr)
                continue
            done.append(out)
            if not args.json:
                where = out.get("tensorboard") or f"{out['mlflow']} run {out['run_id']}" + (
                    " (updated)" if out.get("updated") else "")
                print(f"{run} -> {where}: {out['steps']} steps, {out['epochs']} epochs, status {out['status']}"
                      + (f", {out['cams']} CAM overlays" if out["cams"] else ""))
    if args.json:
        emit({"exported": done, "failed": failed}, True, None)
    return 1 if failed else 0


def register_runs(rsub) -> None:
    """`runs bundle` and `runs export`."""
    p = rsub.add_parser("bundle", help="one zip of a run to share: settings, metrics, predictions, external "
                                        "evaluations, audit, figures (PNG, SVG) and a README; weights on request")
    p.add_argument("run")
    p.add_argument("--out", metavar="PATH", help="a .zip file or a folder (default: checkpoints/RUN/RUN-bundle.zip)")
    p.add_argument("--weights", action="store_true", help="include best.pt")
    p.add_argument("--force", action="store_true", help="replace the file --out names if it exists")
    p.add_argument("--deidentify", action="store_true",
                   help="patient ids as salted hashes (the salt is not kept), sex and age dropped")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_runs_bundle)
    p = rsub.add_parser("export", help="finished runs into TensorBoard or MLflow: curves, AUCs, PR curves, CAMs, "
                                        "settings, predictions and figures (exporting again updates, never doubles)")
    p.add_argument("runs", nargs="+", metavar="RUN")
    p.add_argument("--to", nargs=2, action="append", required=True, metavar=("KIND", "WHERE"),
                   help="tensorboard DIR (event files in DIR/RUN) or mlflow URI (http://HOST:PORT, file:PATH); "
                        "repeatable")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_runs_export)


def register(sub) -> None:
    """`export` (ONNX) and `card`."""
    p = sub.add_parser("export",
                       help="a run's model as ONNX (dynamic batch) with a JSON sidecar: input size, channels, "
                                      "normalisation, class names, run and data fingerprint; checked against PyTorch")
    p.add_argument("run")
    p.add_argument("--format", choices=["onnx"], default="onnx")
    p.add_argument("--out", metavar="DIR",
                   help="folder for RUN.onnx and RUN.onnx.json (default checkpoints/RUN/export)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("card", help="a run's model card (Mitchell et al. 2019) in Markdown and JSON, with the CLAIM "
                                    "checklist items its records fill")
    p.add_argument("run")
    p.add_argument("--out", metavar="DIR", help="folder for model-card.md and model-card.json (default the run folder)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_card)
