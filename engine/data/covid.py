"""COVID-19 image data collection (Cohen, Morrison, Dao, arXiv:2003.11597, 2020).

`metadata.csv` + `images/` from https://github.com/ieee8023/covid-chestxray-dataset. Both schemas
are read: the 2020 one (`finding` = "COVID-19", "COVID-19, ARDS", "SARS", "todo", ...) and the
current one (hierarchical findings such as "Pneumonia/Viral/COVID-19"). Only X-ray modality and
frontal views are kept. Target: 1 when the finding names COVID-19, 0 for any other finding
("No Finding" included), NaN for "todo"/empty (unlabelled, excluded from supervised tasks).
With labels="pneumonia" the targets are the finding hierarchy's five classes instead (COVID-19,
other viral, bacterial, fungal, no finding; `pneumonia_type`); findings outside it are left out.
`holdout_source` tests on one origin (internal-external validation) and trains on the others.
"""
from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from ..constants import (
    COVID_FRONTAL_VIEWS,
    COVID_LABEL,
    COVID_LABELS,
    DEFAULT_CACHE_SIZE,
    PNEUMONIA_LABELS,
)
from .dataset import XrayDataset
from .duplicates import DEFAULT_MAX_DISTANCE, duplicate_pairs, image_hashes, keep_together, linked_clusters, pair_records
from .splits import hold_out, split_by_patient

REQUIRED_COLUMNS = ("patientid", "finding", "view", "modality", "filename")
UNLABELLED = {"todo", "", "unknown"}
DEFAULT_FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}
_COVID_RE = re.compile(r"covid[-_ ]?19", re.IGNORECASE)
LATERAL_VIEWS = {"l", "lateral", "ll", "rl", "lat"}


def view_key(view) -> str:
    """A view name compared without case or spacing: "AP  erect", "AP Erect" -> "ap erect"."""
    return " ".join(str(view or "").split()).casefold()


def covid_status(finding: str) -> float:
    """1.0 COVID-19 positive, 0.0 other finding, NaN unlabelled."""
    f = (finding or "").strip()
    if f.lower() in UNLABELLED:
        return float("nan")
    parts = [p.strip() for p in re.split(r"[/,]", f)]
    return 1.0 if any(_COVID_RE.fullmatch(p) for p in parts) or _COVID_RE.search(f) else 0.0


# the 2020 schema's flat findings, by branch of the current schema's hierarchy
# ("Pneumonia/Viral/COVID-19", "Pneumonia/Bacterial/Streptococcus", "Pneumonia/Fungal/Pneumocystis")
VIRAL = {"viral", "sars", "mers", "mers-cov", "varicella", "influenza", "herpes", "h1n1", "rsv", "adenovirus"}
BACTERIAL = {"bacterial", "streptococcus", "klebsiella", "e.coli", "e. coli", "mycoplasma bacterial pneumonia",
             "mycoplasma", "legionella", "chlamydophila", "staphylococcus", "staphylococcus aureus", "nocardia",
             "tuberculosis", "mycobacterium tuberculosis", "pseudomonas"}
FUNGAL = {"fungal", "pneumocystis", "aspergillosis", "candida", "histoplasmosis"}


def pneumonia_type(finding: str) -> int:
    """The finding's class in PNEUMONIA_LABELS (0 COVID-19, 1 other viral, 2 bacterial, 3 fungal,
    4 no finding), or -1: unlabelled ("todo") or outside the hierarchy (ARDS alone, lipoid or
    unspecified pneumonia), which the task leaves out and counts."""
    f = (finding or "").strip()
    if f.lower() in UNLABELLED:
        return -1
    if covid_status(f) == 1.0:
        return 0
    parts = {" ".join(p.split()).casefold() for p in re.split(r"[/,]", f)}
    for k, names in ((1, VIRAL), (2, BACTERIAL), (3, FUNGAL)):
        if parts & names:
            return k
    return 4 if "no finding" in parts else -1


def origin_of(url) -> str:
    """Where an image of the collection came from: the web host of its `url` ("radiopaedia.org",
    "sirm.org", a journal), or "unknown"."""
    host = urlparse(str(url or "").strip()).netloc.lower()
    return host.removeprefix("www.") or "unknown"


def label_group(status: float) -> str:
    if np.isnan(status):
        return "unlabelled"
    return COVID_LABEL if status == 1.0 else "other"


def read_metadata(csv_path: Path) -> pd.DataFrame:
    """metadata.csv as strings; raises naming the file and the columns that are missing."""
    with open(csv_path, newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.DictReader(fh)
        fields = [f for f in (reader.fieldnames or []) if f]
        missing = [c for c in REQUIRED_COLUMNS if c not in fields]
        if missing:
            raise ValueError(f"{csv_path}: missing column(s) {', '.join(missing)}; found {', '.join(fields) or 'none'}")
        records = [{k: (v or "") for k, v in row.items() if k} for row in reader]
    return pd.DataFrame.from_records(records, columns=fields)


class COVID19Collection(XrayDataset):
    """Frontal chest X-rays of the COVID-19 image data collection, one row per distinct file.

    skipped counts: `malformed_rows`, `not_xray` (CT and other modalities), `no_view` (empty or "?"),
    `lateral`, `not_frontal` (other views), `duplicate_files`, `outside_root`, `missing_images`.
    Views match case- and space-insensitively. `dedupe` keeps the same film under two patient ids in
    one split (`self.duplicates` says what moved; see data.duplicates).
    `include_unlabelled=False` drops "todo" rows (use it for training; summaries keep them).
    Split: patient-wise, seeded, stratified by COVID-19 / other / unlabelled.
    """

    name = "covid"

    def __init__(self, root, *, views=COVID_FRONTAL_VIEWS, fractions: dict | None = None, seed: int = 0,
                 include_unlabelled: bool = True, transform=None, load_size: int = DEFAULT_CACHE_SIZE, cache=None,
                 dedupe: bool = True, max_distance: int = DEFAULT_MAX_DISTANCE, progress=None,
                 labels: str = "covid", holdout_source: str = ""):
        if labels not in LABEL_SETS:
            raise ValueError(f"unknown labels {labels!r}; allowed: {', '.join(LABEL_SETS)}")
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"COVID-19 root {root} does not exist or is not a folder")
        csv_path = root / "metadata.csv"
        if not csv_path.is_file():
            raise FileNotFoundError(f"no metadata.csv in COVID-19 root {root}")
        self.root = root
        meta = read_metadata(csv_path)
        self.rows_in_metadata = len(meta)
        skipped = {"malformed_rows": 0, "not_xray": 0, "not_frontal": 0, "duplicate_files": 0}
        bad = (meta["filename"].str.strip() == "") | (meta["patientid"].str.strip() == "")
        skipped["malformed_rows"] = int(bad.sum())
        meta = meta[~bad]
        xray = meta["modality"].str.strip().str.lower() == "x-ray"
        skipped["not_xray"] = int((~xray).sum())
        meta = meta[xray]
        view = meta["view"].map(view_key)
        wanted = {view_key(v): v for v in views}
        frontal = view.isin(set(wanted))
        no_view = view.isin({"", "?"})
        lateral = view.isin(LATERAL_VIEWS)
        skipped["no_view"] = int(no_view.sum())
        skipped["lateral"] = int((lateral & ~frontal).sum())
        skipped["not_frontal"] = int((~frontal & ~no_view & ~lateral).sum())  # CT planes and other views
        meta = meta[frontal].copy()
        meta["view"] = view[frontal].map(wanted)  # one spelling: "AP erect" and "AP Erect" -> "AP Erect"
        dup = meta["filename"].duplicated(keep="first")
        skipped["duplicate_files"] = int(dup.sum())
        meta = meta[~dup].reset_index(drop=True)
        self.frontal_rows = len(meta)

        status = meta["finding"].map(covid_status).to_numpy(dtype=np.float32)
        groups = np.array([label_group(s) for s in status])
        if labels == "pneumonia":
            kind = meta["finding"].map(pneumonia_type).to_numpy()
            targets = np.full((len(meta), len(PNEUMONIA_LABELS)), np.nan, dtype=np.float32)
            targets[kind >= 0] = np.eye(len(PNEUMONIA_LABELS), dtype=np.float32)[kind[kind >= 0]]
            outside = (kind < 0) & (groups != "unlabelled")
            groups = np.where(kind >= 0, np.array(PNEUMONIA_LABELS)[np.maximum(kind, 0)], "unlabelled")
        else:
            targets, outside = status[:, None], np.zeros(len(meta), bool)
        frame = pd.DataFrame({
            "image": meta["filename"].str.strip(),
            "findings": meta["finding"],
            "patient_id": "covid-" + meta["patientid"].str.strip(),
            "age": pd.to_numeric(meta.get("age", pd.Series([""] * len(meta))), errors="coerce"),
            "sex": meta.get("sex", ""),
            "view": meta["view"].str.strip(),
            "source": meta.get("url", pd.Series([""] * len(meta))).map(origin_of),
            "label_group": groups,
        })
        folder = meta["folder"].str.strip() if "folder" in meta else pd.Series(["images"] * len(meta))
        frame["path"] = [str(root / (f or "images") / n) for f, n in zip(folder, frame["image"])]
        # split over every frontal row (present or not) so adding files never reshuffles patients
        frame["split"] = split_by_patient(frame["patient_id"].to_numpy(), fractions or DEFAULT_FRACTIONS, seed,
                                          strata=groups)
        frame["dataset"] = self.name
        inside = np.array([_inside(root, p) for p in frame["path"]], dtype=bool)
        skipped["outside_root"] = int((~inside).sum())  # "../" or absolute names: rejected, never looked up
        present = inside & np.array([ok and os.path.isfile(p) for ok, p in zip(inside, frame["path"])], dtype=bool)
        skipped["missing_images"] = int((inside & ~present).sum())
        self.duplicates = None
        if dedupe:
            frame["split"] = self._dedupe(frame, present, max_distance, progress)
        self.holdout = None
        if holdout_source:
            frame["split"] = self._hold_out(frame, present & (groups != "unlabelled"), holdout_source)
        keep = present.copy()
        if labels == "pneumonia":
            skipped["not_in_hierarchy"] = int((present & outside).sum())
        if not include_unlabelled:
            skipped["unlabelled"] = int((present & (groups == "unlabelled") & ~outside).sum())
            keep &= groups != "unlabelled"
        names = PNEUMONIA_LABELS if labels == "pneumonia" else COVID_LABELS
        super().__init__(frame[keep], targets[keep], names, transform=transform,
                         load_size=load_size, cache=cache, skipped=skipped)

    def _dedupe(self, frame: pd.DataFrame, present: np.ndarray, max_distance: int, progress) -> np.ndarray:
        """Find the same film under different names among present images and keep copies in one
        split (see data.duplicates); `self.duplicates` reports the pairs and the moves."""
        idx = np.flatnonzero(present)
        hashes, unreadable = image_hashes(frame["path"].to_numpy()[idx].tolist(), progress=progress)
        pairs = [(int(idx[i]), int(idx[j]), d) for i, j, d in duplicate_pairs(hashes, max_distance)]
        before = frame["split"].to_numpy()
        splits, report = keep_together(frame["patient_id"].to_numpy(), before, pairs)
        frame["cluster_id"] = linked_clusters(frame["patient_id"].to_numpy(), pairs)  # the bootstrap's unit
        report["max_distance"] = max_distance
        report["unreadable"] = len(unreadable)
        report["pairs_list"] = pair_records(frame.assign(split=before), pairs)
        self.duplicates = report
        return splits

    def _hold_out(self, frame: pd.DataFrame, usable: np.ndarray, source: str) -> np.ndarray:
        """`source`'s images (and their patients' other images) are the test split (splits.hold_out)."""
        splits, self.holdout = hold_out(frame, usable, source, f"the COVID-19 collection at {self.root}")
        return splits

    def group_counts(self) -> dict[str, int]:
        g = self.frame["label_group"]
        return {k: int((g == k).sum()) for k in (COVID_LABEL, "other", "unlabelled")}


LABEL_SETS = ("covid", "pneumonia")


def origins(ds: XrayDataset) -> pd.DataFrame:
    """Images per origin (web host) with each class's count, largest first."""
    f = pd.DataFrame(np.nan_to_num(ds.targets, nan=0.0) > 0.5, columns=list(ds.class_names))
    f["source"] = ds.frame["source"].to_numpy()
    out = f.groupby("source").agg(images=("source", "size"), **{c: (c, "sum") for c in ds.class_names})
    return out.sort_values("images", ascending=False)


def eligible_origins(ds: XrayDataset, min_images: int, min_per_label: int, cls: str = COVID_LABEL) -> list[str]:
    """Origins a held-out test can be made of: at least `min_images` labelled images and at least
    `min_per_label` of each label of `cls` (positives and negatives), largest first."""
    table = origins(ds)
    ok = (table["images"] >= min_images) & (table[cls] >= min_per_label) & (table["images"] - table[cls] >= min_per_label)
    return [str(s) for s in table.index[ok] if s != "unknown"]


def _inside(root: Path, path: str) -> bool:
    """Whether `path` stays under `root` by its name alone (symlinked image folders still work)."""
    base = os.path.normpath(str(root))
    return os.path.normpath(path).startswith(base + os.sep)
