"""COVID-19 image data collection (Cohen, Morrison, Dao, arXiv:2003.11597, 2020).

`metadata.csv` + `images/` from https://github.com/ieee8023/covid-chestxray-dataset. Both schemas
are read: the 2020 one (`finding` = "COVID-19", "COVID-19, ARDS", "SARS", "todo", ...) and the
current one (hierarchical findings such as "Pneumonia/Viral/COVID-19"). Only X-ray modality and
frontal views are kept. Target: 1 when the finding names COVID-19, 0 for any other finding
("No Finding" included), NaN for "todo"/empty (unlabelled, excluded from supervised tasks).
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
)
from .dataset import XrayDataset
from .duplicates import DEFAULT_MAX_DISTANCE, duplicate_pairs, image_hashes, keep_together, linked_clusters, pair_records
from .splits import split_by_patient

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
                 dedupe: bool = True, max_distance: int = DEFAULT_MAX_DISTANCE, progress=None):
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
        keep = present.copy()
        if not include_unlabelled:
            skipped["unlabelled"] = int((present & (groups == "unlabelled")).sum())
            keep &= groups != "unlabelled"
        super().__init__(frame[keep], status[keep, None], COVID_LABELS, transform=transform,
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

    def group_counts(self) -> dict[str, int]:
        g = self.frame["label_group"]
        return {k: int((g == k).sum()) for k in (COVID_LABEL, "other", "unlabelled")}


def _inside(root: Path, path: str) -> bool:
    """Whether `path` stays under `root` by its name alone (symlinked image folders still work)."""
    base = os.path.normpath(str(root))
    return os.path.normpath(path).startswith(base + os.sep)
