"""A model card for a run, after Mitchell et al., *Model Cards for Model Reporting* (FAT* 2019): model
details, intended use, data, metrics with intervals, subgroups, external results, the shortcut
audit's verdict, limitations; and the items of the CLAIM checklist (Mongan et al., *Checklist for
Artificial Intelligence in Medical Imaging*, Radiology: AI 2020) that the run's records can fill,
the others listed as not recorded. Markdown for people, JSON for tools; both from the run's files.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from ..published import study_counterpart
from ..text import estimate, md_escape, number
from .details import headline
from .folder import AUDIT, check_out, write_json
from .registry import Registry

DATASETS = {
    "nih": "NIH ChestX-ray14 (Wang et al., CVPR 2017): 112,120 frontal chest X-rays of 30,805 patients, 14 labels "
           "text-mined from radiology reports",
    "covid": "COVID-19 image data collection (Cohen et al., 2020): frontal chest X-rays from publications and websites, "
             "COVID-19 vs other findings",
    "combined15": "ChestX-ray14's 14 labels and the COVID-19 collection's COVID-19 images, balanced per class",
    "pneumonia": "COVID-19 image data collection (Cohen et al., 2020): its finding hierarchy as five classes (COVID-19, "
                 "other viral, bacterial, fungal, no finding); findings outside it are left out",
}
SMALL_TEST = 1000  # test images below this: the card says the intervals are wide


def _fmt(x, digits: int = 3) -> str:
    return number(x, digits, missing="—")


def _ci(r: dict) -> str:
    return estimate(r.get("auc"), r.get("low"), r.get("high"), missing="—")


def build_card(reg: Registry, name: str, *, n_boot: int = 200) -> dict:
    """The card's content as a dict (the JSON file); `markdown(card)` renders it."""
    from ..trust.report import stored_trust_tables

    row = reg.require(name)
    folder = reg.folder(name)
    cfg = row.config
    d, m, o, t = (cfg.get(k, {}) for k in ("data", "model", "optim", "train"))
    metrics = folder.read_metrics()
    test = metrics.get("test", {})
    aucs = {r["class"]: r for r in test.get("auc", [])}
    cls, value = headline(cfg, aucs)
    subgroups, flagged = [], []
    if folder.predictions("test").is_file():
        tables = stored_trust_tables(folder.predictions("val") if folder.predictions("val").is_file() else None,
                                     folder.predictions("test"), n_boot=n_boot)
        subgroups = [r for r in tables["subgroups"] if r["status"] != "not grouped"]
        flagged = [r for r in subgroups if r["status"] == "flagged"]
    externals = {e: folder.read_external(e) for e in folder.externals()}
    audit_path = folder.path / AUDIT
    audit = json.loads(audit_path.read_text()) if audit_path.is_file() else None
    limits = []
    n_test = test.get("images")
    if n_test is not None and n_test < SMALL_TEST:
        limits.append(f"The test split has {n_test} images: the intervals are wide, and one split's numbers move with a "
                      "handful of images (repeat the study with study --repeats K to see the spread).")
    if d.get("max_images_per_split"):
        limits.append(f"Trained on at most {d['max_images_per_split']} images per split (a capped run, not the study's).")
    for e, em in externals.items():
        shared = (em.get("overlap") or {}).get("shared_images")
        if shared:
            limits.append(f"{shared} images of the external collection {e} are the same film as a training image.")
    chance = [r for c, r in aucs.items() if c != "mean" and r.get("low") is not None and r["low"] <= 0.5]
    if chance:  # issue 37 N15: said, not left for the reader to notice
        limits.append("Not shown to be better than chance on this test split (the 95 % interval includes 0.5): "
                      + ", ".join(f"{c['class']} {_ci(c)}" for c in chance) + ".")
    if flagged:
        limits.append("Worse for: " + ", ".join(f"{r['attribute']} {r['group']} ({r['class']})" for r in flagged) + ".")
    if audit and audit.get("verdict", {}).get("shortcut"):
        limits.append("The shortcut audit suspects the model reads the image's source: " + audit["verdict"]["summary"])
    limits.append("Labels of ChestX-ray14 are text-mined from reports (estimated above 90 % accurate), and the COVID-19 "
                  "collection gathers images from publications: neither is a clinical reference standard.")
    card = {
        "card": "model card (Mitchell et al. 2019)", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": {"run": name, "preset": row.preset, "status": row.status, "architecture": m.get("arch"),
                  "initialisation": m.get("init"), "task": d.get("task"), "classes": list(aucs.keys() - {"mean"}),
                  "training": {k: v for k, v in {**o, **t, "image_size": d.get("image_size"),
                                                 "augment": t.get("augment")}.items() if k not in ("device",)},
                  "best_epoch": metrics.get("best_epoch"), "code_version": row.code_version, "device": row.device,
                  "study_counterpart": study_counterpart(cfg)},
        "intended_use": {"primary": "research on transfer learning for chest X-ray classification (reproducing and "
                                    "extending Panagiotakopoulos et al.)",
                         "users": "machine-learning and medical-imaging researchers",
                         "out_of_scope": "diagnosis, triage or any clinical decision: this is not a medical device and "
                                         "has not been validated prospectively"},
        "data": {"datasets": DATASETS.get(d.get("task"), d.get("task")), "fingerprint": row.data_fingerprint,
                 "split": f"patient-wise, split seed {d.get('split_seed')}, validation fraction {d.get('val_fraction')}; "
                          "films found twice (perceptual hash) kept in one split",
                 "images": {"train": metrics.get("train_images"), "val": metrics.get("val", {}).get("images"),
                            "test": n_test}},
        "metrics": {"headline": {"class": cls, "auc": value}, "test_auc": list(aucs.values()),
                    "intervals": "95 % percentile bootstrap over patients"},
        "subgroups": subgroups,
        "external": {e: {"images": em.get("images"), "auc": em.get("auc")} for e, em in externals.items()},
        "audit": None if audit is None else {"verdict": audit["verdict"]["summary"],
                                             "shortcut": audit["verdict"].get("shortcut")},
        "limitations": limits,
    }
    card["claim"] = claim_items(card, cfg)
    return card


def claim_items(card: dict, cfg: dict) -> list[dict]:
    """The 42 items of CLAIM: filled from the records where they can be, else "not recorded"."""
    d, m, t, o = (cfg.get(k, {}) for k in ("data", "model", "train", "optim"))
    img = card["data"]["images"]
    filled = {
        5: "retrospective: public collections",
        6: "model creation and comparison of initialisations (exploratory)",
        7: card["data"]["datasets"],
        8: "frontal (PA/AP) chest X-rays; COVID-19 collection rows without a finding left out",
        9: f"8-bit grayscale, resized to {d.get('load_size')} then {d.get('image_size')} px, ImageNet normalisation",
        10: f"max images per split: {d.get('max_images_per_split') or 'all'}",
        13: "unreadable images are skipped and counted (metrics.json 'skipped')",
        14: "the collections' labels (ChestX-ray14: text-mined reports; COVID-19 collection: its metadata's finding)",
        20: f"patient-wise random split (seed {d.get('split_seed')}): train {img.get('train')}, val {img.get('val')}, "
            f"test {img.get('test')} images",
        21: "patient (patients linked by a duplicate film share a split)",
        22: f"{m.get('arch')} with global average pooling and a linear head (one sigmoid output per class)",
        23: "PyTorch, torchvision; this lab's engine at code version " + str(card["model"]["code_version"]),
        24: f"init = {m.get('init')}",
        25: f"Adam (betas {o.get('beta1')}, {o.get('beta2')}), lr {o.get('lr')}, weight decay {o.get('weight_decay')}, "
            f"ReduceLROnPlateau, batch {t.get('batch_size')}, {t.get('epochs')} epochs, augmentation "
            f"{t.get('augment')}, seed {t.get('seed')}, oversampling {t.get('oversample')}",
        26: "the epoch with the best validation mean AUC",
        27: "none",
        28: "AUROC per class and mean",
        29: card["metrics"]["intervals"] + "; DeLong's test and the paired bootstrap for comparisons",
        30: f"{len(card['subgroups'])} subgroup rows (sex, age, view)" if card["subgroups"] else None,
        31: "class activation maps (CAM, Grad-CAM family) and the shortcut audit" + (
            f": {card['audit']['verdict']}" if card["audit"] else " (not run for this model)"),
        32: ", ".join(card["external"]) or None,
        35: "; ".join(f"{r['class']} {_ci(r)}" for r in card["metrics"]["test_auc"]) or None,
        36: card["metrics"]["intervals"],
        38: " ".join(card["limitations"]),
    }
    titles = ("title identifies AI methodology", "structured abstract", "scientific and clinical background",
              "objectives and hypotheses", "prospective or retrospective", "study goal", "data sources",
              "eligibility criteria", "pre-processing", "selection of data subsets", "definitions of data elements",
              "de-identification", "missing data", "ground-truth reference standard", "rationale for the reference "
              "standard", "source of annotations and annotators' qualifications", "annotation tools",
              "inter- and intra-rater variability", "intended sample size", "assignment to partitions",
              "level at which partitions are disjoint", "model description", "software", "initialisation",
              "training details", "selection of the final model", "ensembling", "performance metrics",
              "significance and uncertainty", "robustness or sensitivity analysis", "explainability",
              "external validation", "flow of cases", "demographics per partition", "performance on all partitions",
              "estimates of diagnostic performance with precision", "failure analysis", "limitations",
              "implications for practice", "registration", "protocol", "funding")
    return [{"item": i, "title": title, "value": filled.get(i), "recorded": filled.get(i) is not None}
            for i, title in enumerate(titles, start=1)]


def markdown(card: dict) -> str:
    mo, da, me = card["model"], card["data"], card["metrics"]
    lines = [f"# Model card: {md_escape(mo['run'])}", "", f"*{md_escape(card['card'])}; written {card['created']}.*",
             "",
             "## Model details", "",
             f"- Architecture: {md_escape(mo['architecture'])}, initialised from {md_escape(mo['initialisation'])}",
             f"- Task: {md_escape(mo['task'])} ({len(mo['classes'])} class{'es' if len(mo['classes']) != 1 else ''}); "
             f"preset {md_escape(mo['preset'])}; "
             f"status {mo['status']}; best epoch {mo['best_epoch']}",
             f"- Code version `{mo['code_version']}`; trained on {md_escape(mo['device'])}",
             "", "## Intended use", "",
             f"- Primary: {card['intended_use']['primary']}", f"- Users: {card['intended_use']['users']}",
             f"- **Out of scope: {card['intended_use']['out_of_scope']}.**",
             "", "## Data", "", f"- {md_escape(da['datasets'])}", f"- Split: {da['split']}",
             "- Images: " + ", ".join(f"{k} {'not recorded' if v is None else v}" for k, v in da["images"].items()),
             f"- Data fingerprint `{da['fingerprint']}`",
             "", "## Metrics (test split)", "", f"Headline: {me['headline']['class']} AUC {_fmt(me['headline']['auc'])}. "
             f"Intervals: {me['intervals']}.", "", "| class | AUC [95% CI] |", "|---|---|"]
    lines += [f"| {md_escape(r['class'])} | {_ci(r)} |" for r in me["test_auc"]]
    lines += ["", "## Subgroups", ""]
    if card["subgroups"]:
        lines += ["| class | attribute | group | images | AUC [95% CI] | status |", "|---|---|---|---:|---|---|"]
        lines += [f"| {md_escape(r['class'])} | {r['attribute']} | {md_escape(r['group'])} | {r['images']} | {_ci(r)} | "
                  f"{r['status']} |" for r in card["subgroups"]]
    else:
        lines.append("Not computed (no test predictions).")
    lines += ["", "## External results", ""]
    lines += [f"- {md_escape(e)}: {x['images']} images; " + ", ".join(f"{md_escape(r['class'])} {_ci(r)}"
                                                                      for r in (x["auc"] or []))
              for e, x in card["external"].items()] or ["None yet: `python -m engine evaluate RUN --on ROOT`."]
    lines += ["", "## Shortcut audit", "", md_escape(card["audit"]["verdict"]) if card["audit"] else
              "Not run: `python -m engine audit RUN`.", "", "## Limitations", ""]
    lines += [f"- {md_escape(x)}" for x in card["limitations"]]
    filled = sum(c["recorded"] for c in card["claim"])
    lines += ["", f"## CLAIM checklist ({filled} of {len(card['claim'])} items filled from the records)", "",
              "| # | item | from the records |", "|---:|---|---|"]
    lines += [f"| {c['item']} | {c['title']} | {md_escape(c['value']) if c['recorded'] else '*not recorded*'} |"
              for c in card["claim"]]
    return "\n".join(lines) + "\n"


def write_card(reg: Registry, name: str, out: Path | None = None) -> dict[str, Path]:
    """model-card.md and model-card.json in `out` (default: the run folder); returns their paths."""
    card = build_card(reg, name)
    if out is not None:
        check_out(Path(out), folder=True)
    out = Path(out) if out else reg.folder(name).path
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "model-card.md", "json": out / "model-card.json"}
    write_json(paths["json"], card)
    tmp = paths["md"].with_name(".model-card.md.tmp")
    tmp.write_text(markdown(card), encoding="utf-8")
    tmp.replace(paths["md"])
    return paths
