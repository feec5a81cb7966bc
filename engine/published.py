"""Published numbers to compare with, stored once, each with its citation.

Per-class ChestX-ray14 AUROCs (label order of constants.NIH_LABELS) and the study's COVID-19 and
15-class figures. Splits differ between sources: the official NIH test list typically gives
0.80-0.82 mean AUROC, random patient splits 0.84-0.85, so rows are indicative, not strictly comparable.
"""
from __future__ import annotations

from .constants import NIH_LABELS

# source -> (citation, split, 14 AUCs in NIH_LABELS order (None = not reported), reported mean or None)
NIH_AUCS: dict[str, tuple[str, str, tuple, float | None]] = {
    "Wang et al. 2017 ResNet-50 (study Table 1)": (
        "Wang et al., ChestX-ray8, CVPR 2017", "ChestX-ray8, 8 classes",
        (0.7069, 0.8141, 0.7362, 0.6128, 0.5609, 0.7164, 0.6333, 0.7891) + (None,) * 6, None),
    "CheXNet DenseNet-121 (study Table 1)": (
        "Rajpurkar et al., CheXNet, arXiv:1711.05225", "random patient split (420-image test)",
        (0.8094, 0.9248, 0.8638, 0.7345, 0.8676, 0.7802, 0.7680, 0.8887, 0.7901, 0.8878, 0.9371, 0.8047, 0.8062,
         0.9164), 0.841),
    "Joseph R. Kaggle model (study Table 1)": (
        "ryanpjoseph17, Kaggle CheXNet notebook, May 2020", "official NIH split",
        (0.7355, 0.8940, 0.7727, 0.6714, 0.7841, 0.6851, 0.6832, 0.8077, 0.6932, 0.7777, 0.8279, 0.7289, 0.7250,
         0.9261), None),
    "the study's DenseNet-121 (Table 1)": (
        "Panagiotakopoulos et al., Transfer learning for COVID-19 detection, Table 1", "official NIH split (57/20/23)",
        (0.7705, 0.8823, 0.8291, 0.6992, 0.8172, 0.7536, 0.7194, 0.8602, 0.7507, 0.8467, 0.9157, 0.8150, 0.7804,
         0.8996), 0.81),
    "arnoweng/CheXNet": (
        "github.com/arnoweng/CheXNet README", "arnoweng patient split",
        (0.8294, 0.9165, 0.8870, 0.7143, 0.8597, 0.7873, 0.7745, 0.8726, 0.8142, 0.8932, 0.9254, 0.8304, 0.7831,
         0.9104), 0.843),
    "jrzech/reproduce-chexnet": (
        "github.com/jrzech/reproduce-chexnet pretrained/aucs.csv", "jrzech patient split",
        (0.8180, 0.9090, 0.8827, 0.7156, 0.8377, 0.7756, 0.7617, 0.8776, 0.8002, 0.8945, 0.9316, 0.8251, 0.7889,
         0.9175), 0.838),
    "zoogzog/chexnet": (
        "github.com/zoogzog/chexnet README", "arnoweng patient split",
        (0.8321, 0.9107, 0.8860, 0.7145, 0.8653, 0.8037, 0.7655, 0.8857, 0.8157, 0.9017, 0.9422, 0.8523, 0.7948,
         0.9416), 0.851),
}

STUDY = "Panagiotakopoulos et al., Transfer learning for COVID-19 detection"
# preset -> (what, published value, citation)
STUDY_RESULTS: dict[str, tuple[str, float, str]] = {
    "covid-from-nih": ("COVID-19 test AUC, DenseNet-121 pretrained on ChestX-ray14", 0.88, f"{STUDY}, Table 2"),
    "covid-from-imagenet": ("COVID-19 test AUC, DenseNet-121 pretrained on ImageNet only", 0.87, f"{STUDY}, Table 2"),
    "covid-scratch": ("COVID-19 test AUC, DenseNet-121 not pretrained", 0.73, f"{STUDY}, Table 2"),
    "combined15": ("COVID-19 test AUC in the 15-class task", 0.89, f"{STUDY}, section 5.3"),
    "nih-resnet50-scratch": ("ChestX-ray14 mean AUC, own ResNet-50 not pretrained", 0.74, f"{STUDY}, section 5.1"),
    "nih-densenet121-imagenet": ("ChestX-ray14 mean AUC, DenseNet-121 ImageNet-pretrained", 0.81,
                                 f"{STUDY}, section 5.1"),
}


def nih_table() -> list[dict]:
    """One row per published source: {source, citation, split, <label>: auc, mean}."""
    rows = []
    for src, (cite, split, aucs, mean) in NIH_AUCS.items():
        row = {"source": src, "citation": cite, "split": split}
        row.update(dict(zip(NIH_LABELS, aucs)))
        row["mean"] = mean
        rows.append(row)
    return rows


def study_counterpart(config: dict) -> str | None:
    """The study's experiment a run's *settings* reproduce (a key of STUDY_RESULTS), whatever preset
    it started from: task, architecture and initialisation decide (a covid-from-imagenet run
    overridden to init=scratch is compared with the study's not-pretrained model). None: no match."""
    task = config.get("data", {}).get("task")
    arch = config.get("model", {}).get("arch")
    init = str(config.get("model", {}).get("init", ""))
    kind = init if init in ("scratch", "imagenet") else "transfer"
    table = {("covid", "densenet121", "scratch"): "covid-scratch",
             ("covid", "densenet121", "imagenet"): "covid-from-imagenet",
             ("covid", "densenet121", "transfer"): "covid-from-nih",
             ("combined15", "densenet121", "transfer"): "combined15",
             ("nih", "resnet50_own", "scratch"): "nih-resnet50-scratch",
             ("nih", "densenet121", "imagenet"): "nih-densenet121-imagenet"}
    return table.get((task, arch, kind))
