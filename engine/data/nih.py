"""NIH ChestX-ray14 (Wang et al., "ChestX-ray8", CVPR 2017).

112,120 frontal X-rays of 30,805 patients, 14 text-mined labels (multi-label; "No Finding" = none).
Download: https://nihcc.app.box.com/v/ChestXray-NIHCC (12 archives `images_001.tar.gz` ...), see
`engine.data.download`. Cite the CVPR 2017 paper and acknowledge the NIH Clinical Center.
"""
from __future__ import annotations

import csv
import logging
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..constants import DEFAULT_CACHE_SIZE, NIH_LABELS, NO_FINDING
from .dataset import XrayDataset
from .splits import split_by_patient

log = logging.getLogger(__name__)

CSV_NAMES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".dcm")
# The study's split (section 5.1): 57 / 20 / 23 % of all images. With the official test list
# (~23 %), validation is 20/77 of train_val_list.
STUDY_VAL_FRACTION = 0.26


def find_metadata_csv(root: Path) -> Path:
    for name in CSV_NAMES:
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(f"no NIH metadata in {root}: expected one of {', '.join(CSV_NAMES)}")


def index_images(root: Path, images_dir: Path | None = None) -> dict[str, str]:
    """Map file name -> path over ROOT/images/, the official ROOT/images_NNN/images/ folders, or
    an explicit folder. Later folders never shadow earlier ones (first found wins)."""
    folders: list[Path] = []
    if images_dir is not None:
        folders.append(Path(images_dir))
    else:
        if (root / "images").is_dir():
            folders.append(root / "images")
        numbered = sorted(p for p in root.glob("images_*") if re.fullmatch(r"images_\d{3}", p.name) and p.is_dir())
        folders.extend(p / "images" for p in numbered if (p / "images").is_dir())
        # a flattened official layout (images_001/*.png) is accepted too
        folders.extend(p for p in numbered if not (p / "images").is_dir())
    index: dict[str, str] = {}
    for folder in folders:
        if not folder.is_dir():
            raise FileNotFoundError(f"NIH images folder {folder} does not exist")
        with os.scandir(folder) as it:
            for entry in it:
                if entry.name.lower().endswith(IMAGE_EXTS) and entry.is_file():
                    index.setdefault(entry.name, entry.path)
    return index


def read_list(path: Path) -> list[str]:
    if not path.is_file():
        return []
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


def parse_metadata(csv_path: Path) -> tuple[pd.DataFrame, np.ndarray, dict]:
    """Parse Data_Entry_2017*.csv into (frame, targets, skipped) for every well-formed row.

    Skipped and counted, in this order: malformed rows (fewer than 7 fields, no image name, a
    patient id that is not an integer), rows with an unknown or no label, repeated image names
    (the first kept). Vectorised with pandas: the 112,120-row file parses in a fraction of a second."""
    cols = ["image", "findings", "follow_up", "patient_id", "age", "sex", "view"]
    with open(csv_path, newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if not header or header[0].strip() != "Image Index" or len(header) < 7:
            raise ValueError(f"{csv_path}: not an NIH Data_Entry file (header {header[:3] if header else None})")
        records, short = [], 0
        for rec in reader:
            if len(rec) >= 7:
                records.append(rec[:7])
            else:
                short += 1
    skipped = {"malformed_rows": 0, "unknown_label_rows": 0, "duplicate_rows": 0}
    frame = pd.DataFrame(records, columns=cols, dtype=str)
    for c in cols:
        frame[c] = frame[c].str.strip()
    pid_ok = frame["patient_id"].str.fullmatch(r"[+-]?\d+").fillna(False).to_numpy(bool)
    ok = pid_ok & (frame["image"] != "").to_numpy()
    skipped["malformed_rows"] = short + len(records) - int(ok.sum())
    frame = frame[ok].reset_index(drop=True)
    frame["patient_id"] = frame["patient_id"].astype("int64").astype(str)

    # ~800 distinct label strings in 112k rows: parse each once, then index by code
    codes, uniques = pd.factorize(frame["findings"])
    label_pos = {c: k for k, c in enumerate(NIH_LABELS)}
    u_targets = np.zeros((len(uniques), len(NIH_LABELS)), dtype=np.float32)
    u_bad = np.zeros(len(uniques), bool)
    u_unknown: list[list[str]] = []
    for j, text in enumerate(uniques):
        names = [x.strip() for x in str(text).split("|") if x.strip()]
        wrong = [x for x in names if x != NO_FINDING and x not in label_pos]
        u_unknown.append(wrong or ([] if names else ["<empty>"]))
        u_bad[j] = bool(u_unknown[j])
        for x in names:
            if x in label_pos:
                u_targets[j, label_pos[x]] = 1.0
    unknown: dict[str, int] = {}
    for j, n in enumerate(np.bincount(codes, minlength=len(uniques))):
        for x in u_unknown[j]:
            unknown[x] = unknown.get(x, 0) + int(n)
    bad = u_bad[codes]
    skipped["unknown_label_rows"] = int(bad.sum())
    keep = ~bad
    dup = frame["image"].where(keep).duplicated(keep="first").to_numpy() & keep
    skipped["duplicate_rows"] = int(dup.sum())
    keep &= ~dup
    targets = u_targets[codes]
    frame, targets = frame[keep].reset_index(drop=True), targets[keep]
    frame["age"] = pd.to_numeric(frame["age"], errors="coerce")
    frame["follow_up"] = pd.to_numeric(frame["follow_up"], errors="coerce")
    if unknown:
        skipped["unknown_labels"] = unknown
    return frame, targets, skipped


def assign_splits(frame: pd.DataFrame, root: Path, val_fraction: float, seed: int) -> np.ndarray:
    """Official test list = test; validation carved by patient from train_val_list.

    Without the official lists, a seeded patient-wise 57/20/23 split (the study's shares)."""
    test = set(read_list(root / "test_list.txt"))
    pids = frame["patient_id"].to_numpy()
    if not test:
        log.warning("no test_list.txt in %s: using a random patient-wise 57/20/23 split", root)
        return split_by_patient(pids, {"train": 0.57, "val": 0.20, "test": 0.23}, seed)
    # set membership on Python strings: pandas' isin on Arrow strings is ~10x slower at this size
    is_test = np.fromiter((x in test for x in frame["image"].tolist()), dtype=bool, count=len(frame))
    splits = np.full(len(frame), "test", dtype=object)
    tv = ~is_test
    if val_fraction > 0:
        splits[tv] = split_by_patient(pids[tv], {"train": 1 - val_fraction, "val": val_fraction}, seed)
    else:
        splits[tv] = "train"
    # a patient never straddles train_val and test in the official lists; if a custom list does,
    # the test side wins so that no test patient is ever trained on
    test_pids = set(pids[is_test].tolist())
    straddle = tv & np.fromiter((p in test_pids for p in pids.tolist()), dtype=bool, count=len(frame))
    splits[straddle] = "test"
    return splits.astype(str)


class NIHChestXray14(XrayDataset):
    """NIH ChestX-ray14 from a root holding `Data_Entry_2017[_v2020].csv`, `train_val_list.txt`,
    `test_list.txt` and images under `images/`, `images_NNN/images/` or `images_dir`.

    Rows whose image file is absent are skipped and counted in `skipped["missing_images"]`, so a
    partial download trains on what is there. Targets are the 14 labels in `NIH_LABELS` order.
    """

    name = "nih"

    def __init__(self, root, *, images_dir=None, val_fraction: float = STUDY_VAL_FRACTION, seed: int = 0,
                 transform=None, load_size: int = DEFAULT_CACHE_SIZE, cache=None):
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"NIH root {root} does not exist or is not a folder")
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        self.root = root
        self.csv_path = find_metadata_csv(root)
        frame, targets, skipped = parse_metadata(self.csv_path)
        self.rows_in_metadata = len(frame)
        frame["split"] = assign_splits(frame, root, val_fraction, seed)
        index = index_images(root, images_dir)
        paths = frame["image"].map(index)
        present = paths.notna().to_numpy()
        skipped["missing_images"] = int((~present).sum())
        frame["path"] = paths
        frame["dataset"] = self.name
        frame = frame[present]
        super().__init__(frame, targets[present], NIH_LABELS, transform=transform, load_size=load_size,
                         cache=cache, skipped=skipped)
