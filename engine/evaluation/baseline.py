"""torchxrayvision's own classifier as a baseline on this lab's ChestX-ray14 test split
(`evaluate --model xrv:NAME`): the labels it shares with ChestX-ray14, scored on the same images and
with the same statistics as the lab's runs, kept in checkpoints/.baselines/<name>/ so `report`, the
Results page and the study's Table 1 can set it beside the study's and CheXNet's numbers.

Its network is mapped into the engine's DenseNet-121 (engine.models.build.load_xrv_backbone) and its
classifier's rows for the shared labels kept, so prediction runs through the lab's own path.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..config import from_preset
from ..constants import NIH_LABELS
from ..models import xrv
from ..runs.folder import METRICS, write_json
from ..runs.store import Registry

BASELINES = ".baselines"


def baseline_dir(reg: Registry, model: str) -> Path:
    return reg.root / BASELINES / model.replace(":", "-")


def _model(name: str):
    import torch

    from ..models.build import build_model

    labels = xrv.labels(name)
    shared = [c for c in NIH_LABELS if c in labels]
    net = build_model("densenet121", len(labels), xrv.PREFIX + name)
    state = xrv.load_state(name)
    rows = [labels.index(c) for c in shared]
    head = torch.nn.Linear(net.num_features, len(shared))
    with torch.no_grad():
        head.weight.copy_(state["classifier.weight"][rows])
        head.bias.copy_(state["classifier.bias"][rows])
    net.classifier, net.num_classes = head, len(shared)
    return net.eval(), shared


def evaluate_baseline(reg: Registry, model: str, *, nih_root=None, image_size: int = 224, max_images: int = 0,
                      n_boot: int = 1000, progress=None) -> dict:
    """Score torchxrayvision's classifier `model` ("xrv:NAME") on the ChestX-ray14 test split (the
    official test list); AUCs with patient-bootstrap intervals for the shared labels."""
    from ..data.tasks import build_datasets
    from ..devices import pick_device
    from ..training.evaluation import evaluate_split

    name = xrv.xrv_name(model)
    missing = xrv.weights_missing(name, fetch=True)
    if missing:
        raise xrv.XrvUnavailable(missing)
    cfg = from_preset("nih-densenet121-imagenet", {"nih_root": str(nih_root) if nih_root else None, "init": "scratch",
                                                   "image_size": image_size, "load_size": max(image_size, 224),
                                                   "max_images_per_split": max_images, "bootstrap": n_boot})
    net, shared = _model(name)
    test = build_datasets(cfg)["test"]
    if shared != list(test.class_names):  # every torchxrayvision DenseNet names all 14 ChestX-ray14 labels
        raise ValueError(f"{model} predicts {', '.join(shared)} of ChestX-ray14's labels, not all 14 in order")
    device = pick_device("auto")
    report, preds = evaluate_split(net.to(device), test, cfg, device, "test", n_boot=n_boot, progress=progress)
    out_dir = baseline_dir(reg, model)
    out_dir.mkdir(parents=True, exist_ok=True)
    preds.write(out_dir / "predictions_test.csv")
    out = {"model": f"{xrv.PREFIX}{name}", "source": f"torchxrayvision {name} (our test split)",
           "citation": "Cohen et al., TorchXRayVision, MIDL 2022", "weights": xrv.weights_url(name),
           "classes": shared, "image_size": image_size, "test": report}
    write_json(out_dir / METRICS, out)
    return out


def baselines(reg: Registry) -> list[dict]:
    """Every baseline scored so far (metrics.json of checkpoints/.baselines/*)."""
    base = reg.root / BASELINES
    out = []
    for p in sorted(base.glob("*/metrics.json")) if base.is_dir() else []:
        try:
            out.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            continue
    return out


def baseline_row(b: dict) -> dict:
    """A baseline as a row of the published-numbers tables: {"source", "citation", "split", class: AUC, "mean"}."""
    aucs = {r["class"]: r["auc"] for r in b["test"]["auc"]}
    return {"source": b["source"], "citation": b["citation"], "split": "this project's split (official test list)",
            **{c: aucs.get(c) for c in NIH_LABELS}, "mean": aucs.get("mean")}
