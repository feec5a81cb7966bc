"""Subcommands that look inside a run's model: cam (maps for one image), localize (NIH or RSNA boxes)."""
from __future__ import annotations

import json
from pathlib import Path

from ..constants import BOX_FORMATS
from ..constants import CAM_METHODS as METHODS
from ..constants import CAM_SCALES
from ..data.roots import resolve_root
from .common import CLIError, emit, progress_bar, registry


def _run_model(reg, run: str):
    from ..explain.inference import LoadedModel

    reg.require(run)
    return LoadedModel(reg.folder(run).best_checkpoint())


def cmd_localize(args) -> int:
    from ..explain.localize import localize

    reg = registry()
    row = reg.require(args.run)
    data = row.config["data"]
    if args.format == "nih":
        root = resolve_root("nih", args.root or args.nih_root, data.get("nih_root"))
    elif args.root or data.get("manifest_format") == "rsna":  # a run trained on the RSNA folder knows it
        root = Path(args.root or data["manifest"]).expanduser()
    else:
        raise CLIError("--format rsna needs --root: the RSNA Pneumonia folder (stage_2_train_labels.csv and "
                       "stage_2_train_images/)")
    try:
        out = localize(_run_model(reg, args.run), root, fmt=args.format, method=args.method, threshold=args.threshold,
                       progress=None if args.json else progress_bar("localize"))
    except (OSError, ValueError) as exc:
        raise CLIError(str(exc)) from None
    out["run"] = args.run

    def human(o):
        print(f"{o['run']} · {o['method']}: {o['boxes_evaluated']} boxes evaluated "
              f"({o['boxes_with_image']} with an image file, of {o['boxes_in_file']} in the list)")
        if o.get("too_coarse"):
            print(f"  not scored: {o['too_coarse']}")
        for lab, r in o["per_class"].items():
            if r["boxes"]:
                print(f"  {lab:<14} boxes {r['boxes']:>4}  pointing {r['pointing']:.3f}  IoU@{o['threshold']} {r['iou']:.3f}")

    emit(out, args.json, human)
    return 0


def cmd_cam(args) -> int:
    import cv2

    from ..data.images import read_xray
    from ..explain.overlay import overlay_heatmap

    loaded = _run_model(registry(), args.run)
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


def register(sub) -> None:
    from ..explain.overlay import COLORMAPS

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

    p = sub.add_parser("localize", help="pointing game and IoU of class maps against radiologists' boxes: NIH's "
                                        "BBox_List_2017.csv or RSNA Pneumonia's stage_2_train_labels.csv")
    p.add_argument("run")
    p.add_argument("--method", choices=METHODS, default="cam")
    p.add_argument("--threshold", type=float, default=0.5, help="map threshold as a fraction of its maximum (IoU)")
    p.add_argument("--format", choices=BOX_FORMATS, default="nih",
                   help="whose boxes: nih (a ChestX-ray14 root) or rsna (an RSNA Pneumonia folder; its DICOMs are "
                        "NIH films, scored on the run's Pneumonia class)")
    p.add_argument("--root", default=None, help="the folder holding the boxes (default: the run's NIH root, or its "
                                                "RSNA folder when it was trained on one)")
    p.add_argument("--nih-root", default=None, help="default: the run's recorded NIH root, then $CXR_NIH_ROOT")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_localize)
