"""The field's public chest X-ray datasets in their own published layouts, read for scoring a run on
them (`evaluate RUN --on ROOT --format chexpert|mimic|padchest|rsna`) and for training on them
(`train --task manifest --manifest ROOT --manifest-format chexpert|...`: the layout is read into a
manifest of the lab's format, with the dataset's own classes, `NATIVE`, and kept in the cache).

- **CheXpert** (Irvin et al., AAAI 2019; `--format chexpert`): the folder `CheXpert-v1.0[-small]` with
  `train.csv` and `valid.csv`. Columns: `Path` (from the folder's parent: `CheXpert-v1.0-small/train/
  patient00001/study1/view1_frontal.jpg`), `Sex`, `Age`, `Frontal/Lateral`, `AP/PA`, and 14
  observations coded `1.0` (positive), `0.0` (negative), `-1.0` (uncertain) or blank (not mentioned).
  The patient is the path's `patientNNNNN`. Uncertain labels follow one of Irvin et al.'s policies,
  chosen by `--uncertain` and recorded: `ignore` (U-Ignore: not scored), `zeros` (U-Zeros), `ones`
  (U-Ones). Blank is not scored. Frontal views only unless `--all-views`.
- **MIMIC-CXR-JPG** 2.0/2.1 (Johnson et al., 2019; `--format mimic`): `mimic-cxr-2.0.0-chexpert.csv`
  (or `-negbio.csv`: `subject_id`, `study_id`, the same 14 observations and codes, per study),
  `mimic-cxr-2.0.0-split.csv` (`dicom_id`, `study_id`, `subject_id`, `split` = train/validate/test),
  `mimic-cxr-2.0.0-metadata.csv` (`dicom_id`, ..., `ViewPosition`), and the images at
  `files/p<first two digits>/p<subject_id>/s<study_id>/<dicom_id>.jpg`. `subject_id` is the patient.

- **PadChest** (Bustos et al., 2020; `--format padchest`): `PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv`
  (`ImageID`, `ImageDir`, `PatientID`, `PatientSex_DICOM`, `PatientBirth`, `StudyDate_DICOM`, `Projection`,
  `Labels` as a list of findings, e.g. `['pleural effusion', 'cardiomegaly']`), images at
  `<ImageDir>/<ImageID>` (16-bit PNGs, windowed by the lab's reader). A finding is positive where a
  label names it (torchxrayvision's reading, `PADCHEST_TERMS`), negative otherwise; rows without labels
  are skipped and counted. Frontal (PA, AP, AP horizontal) only unless `--all-views`.
- **RSNA Pneumonia Detection** (Shih et al., 2019; `--format rsna`): `stage_2_train_labels.csv`
  (`patientId`, `x`, `y`, `width`, `height`, `Target`; one row per box, or one row with `Target` 0) and
  the DICOMs at `stage_2_train_images/<patientId>.dcm`; the class is Pneumonia (any box). The boxes
  are counted here, and score class maps in engine.explain.localize (`localize --format rsna`).

Their labels meet ChestX-ray14's where the two name the same finding (`SHARED`, documented in
docs/own-data.md); a ChestX-ray14 run is scored on those. Near matches (Lung Lesion ~ Mass/Nodule,
Lung Opacity ~ Infiltration) are listed there but not scored: they are not the same label.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import MANIFEST_FORMATS, UNCERTAIN
from ..constants import DEFAULT_CACHE_SIZE, default_cache_dir
from .dataset import XrayDataset

CHEXPERT_OBSERVATIONS = ("No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
                         "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
                         "Pleural Other", "Fracture", "Support Devices")
# the dataset's label -> ChestX-ray14's, where both name the same finding
SHARED = {"Atelectasis": "Atelectasis", "Cardiomegaly": "Cardiomegaly", "Consolidation": "Consolidation",
          "Edema": "Edema", "Pleural Effusion": "Effusion", "Pneumonia": "Pneumonia", "Pneumothorax": "Pneumothorax"}
NEAR = {"Lung Lesion": "Mass, Nodule", "Lung Opacity": "Infiltration"}  # documented, not scored
POLICIES = UNCERTAIN
FORMATS = MANIFEST_FORMATS[1:]  # after "csv", the lab's own manifest
# ChestX-ray14's label -> the PadChest findings that name it (a label containing the term counts, as in
# torchxrayvision's PC_Dataset)
PADCHEST_TERMS = {"Atelectasis": ("atelectasis",), "Cardiomegaly": ("cardiomegaly",),
                  "Consolidation": ("consolidation", "air bronchogram"), "Edema": ("edema",),
                  "Effusion": ("effusion",), "Emphysema": ("emphysema",), "Fibrosis": ("fibrosis",),
                  "Hernia": ("hernia",), "Infiltration": ("infiltrates", "interstitial pattern", "ground glass pattern",
                                                         "alveolar pattern", "consolidation", "air bronchogram"),
                  "Mass": ("mass",), "Nodule": ("nodule",), "Pleural_Thickening": ("pleural thickening",),
                  "Pneumonia": ("pneumonia",), "Pneumothorax": ("pneumothorax",)}
PADCHEST_CSV = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
FRONTAL = {"PA", "AP", "AP_HORIZONTAL", "AP SUPINE"}


class PublicDatasetError(ValueError):
    pass


def _labels(frame: pd.DataFrame, class_names, policy: str, name: str) -> tuple[np.ndarray, dict]:
    """Targets in the run's class order from the dataset's observation columns (NaN = not scored)."""
    if policy not in POLICIES:
        raise PublicDatasetError(f"--uncertain {policy!r}: one of {', '.join(POLICIES)}")
    by_lab = {v.casefold(): k for k, v in SHARED.items()}
    targets = np.full((len(frame), len(class_names)), np.nan, dtype=np.float32)
    used = {}
    for k, c in enumerate(class_names):
        own = by_lab.get(str(c).casefold()) or (c if c in CHEXPERT_OBSERVATIONS else None)
        if own is None or own not in frame:
            continue
        raw = frame[own]
        v = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float32)
        blank = raw.isna().to_numpy() | (raw.astype(str).str.strip() == "").to_numpy()
        wrong = ~blank & ~np.isin(v, (1.0, 0.0, -1.0))
        if wrong.any():
            bad = sorted(set(raw[wrong].astype(str)))[:5]
            raise PublicDatasetError(f"{name}: column {own!r} holds {', '.join(bad)} (row {int(np.argmax(wrong)) + 2} "
                                     "of its table); expected 1.0, 0.0, -1.0 or blank")
        v = np.where(v == -1.0, {"ignore": np.nan, "zeros": 0.0, "ones": 1.0}[policy], v)
        targets[:, k] = v
        used[c] = own
    if not used:
        raise PublicDatasetError(f"{name}: none of the run's classes ({', '.join(class_names)}) is labelled there; "
                                 f"it labels {', '.join(CHEXPERT_OBSERVATIONS[1:])}")
    return targets, used


def _dataset(frame, targets, class_names, used, name, load_size, skipped) -> XrayDataset:
    keep = frame["path"].map(lambda p: Path(p).is_file()).to_numpy(bool)
    skipped = {**skipped, "missing_images": int((~keep).sum())}
    frame = frame.loc[keep].reset_index(drop=True)
    ds = XrayDataset(frame, targets[keep], class_names, load_size=load_size, skipped=skipped)
    ds.label_columns = used
    ds.name = name
    return ds


def read_chexpert(root, class_names, *, policy: str = "ignore", frontal_only: bool = True,
                  load_size: int = DEFAULT_CACHE_SIZE) -> XrayDataset:
    root = Path(root)
    csvs = [(root / f, split) for f, split in (("train.csv", "train"), ("valid.csv", "val")) if (root / f).is_file()]
    if not csvs:
        raise PublicDatasetError(f"{root} holds neither train.csv nor valid.csv: pass the CheXpert-v1.0[-small] folder")
    parts = []
    for path, split in csvs:
        t = pd.read_csv(path, dtype={"Path": str})
        missing = [c for c in ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA") if c not in t]
        if missing:
            raise PublicDatasetError(f"{path}: not CheXpert's layout, no column {', '.join(missing)}")
        parts.append(t.assign(_split=split))
    t = pd.concat(parts, ignore_index=True)
    skipped = {}
    if frontal_only:
        lateral = t["Frontal/Lateral"].astype(str).str.casefold() != "frontal"
        skipped["lateral"] = int(lateral.sum())
        t = t.loc[~lateral].reset_index(drop=True)

    def where(rel: str) -> str:  # Path starts with the folder's own name, relative to its parent
        first, _, rest = rel.partition("/")
        return str(root.parent / rel) if first == root.name or not rest else str(root / rest)

    frame = pd.DataFrame({
        "image": t["Path"], "path": t["Path"].map(where),
        "patient_id": "chexpert-" + t["Path"].str.extract(r"(patient\d+)", expand=False).fillna("unknown"),
        "sex": t["Sex"].map({"Male": "M", "Female": "F"}).fillna(""),
        "age": pd.to_numeric(t["Age"], errors="coerce").where(lambda a: a > 0),
        "view": np.where(t["Frontal/Lateral"].astype(str) == "Frontal", t["AP/PA"].fillna("").astype(str), "LL"),
        "source": "CheXpert (Stanford)", "split": "external", "dataset": "chexpert"})
    targets, used = _labels(t, class_names, policy, f"CheXpert at {root}")
    return _dataset(frame, targets, class_names, used, "chexpert", load_size, skipped)


MIMIC_FILES = {"labels": ("mimic-cxr-2.0.0-chexpert.csv", "mimic-cxr-2.0.0-negbio.csv"),
               "split": ("mimic-cxr-2.0.0-split.csv",), "meta": ("mimic-cxr-2.0.0-metadata.csv",)}


def _first(root: Path, names) -> Path | None:
    for n in names:
        for cand in (root / n, root / (n + ".gz")):
            if cand.is_file():
                return cand
    return None


def read_mimic(root, class_names, *, policy: str = "ignore", frontal_only: bool = True,
               load_size: int = DEFAULT_CACHE_SIZE) -> XrayDataset:
    root = Path(root)
    found = {k: _first(root, v) for k, v in MIMIC_FILES.items()}
    if not all(found.values()):
        need = [MIMIC_FILES[k][0] for k, v in found.items() if v is None]
        raise PublicDatasetError(f"{root} is not MIMIC-CXR-JPG's layout: {', '.join(need)} not found")
    labels = pd.read_csv(found["labels"])
    split = pd.read_csv(found["split"], dtype={"dicom_id": str})
    meta = pd.read_csv(found["meta"], dtype={"dicom_id": str}, usecols=lambda c: c in ("dicom_id", "ViewPosition"))
    t = split.merge(meta, on="dicom_id", how="left").merge(labels, on=["subject_id", "study_id"], how="left")
    skipped = {}
    if frontal_only:
        lateral = ~t["ViewPosition"].astype(str).str.upper().isin(["PA", "AP"])
        skipped["not_frontal"] = int(lateral.sum())
        t = t.loc[~lateral].reset_index(drop=True)
    sub = t["subject_id"].astype(str)
    rel = "files/p" + sub.str[:2] + "/p" + sub + "/s" + t["study_id"].astype(str) + "/" + t["dicom_id"] + ".jpg"
    frame = pd.DataFrame({"image": rel, "path": [str(root / r) for r in rel], "patient_id": "mimic-" + sub,
                          "sex": "", "age": np.nan, "view": t["ViewPosition"].fillna("").astype(str),
                          "source": "MIMIC-CXR (Beth Israel Deaconess)", "split": "external", "dataset": "mimic",
                          "official_split": t["split"].astype(str)})
    targets, used = _labels(t, class_names, policy, f"MIMIC-CXR-JPG at {root}")
    return _dataset(frame, targets, class_names, used, "mimic", load_size, skipped)


def _findings(text) -> list[str] | None:
    """PadChest's `Labels` cell (a Python list literal) as lowercase findings; None when empty or unreadable."""
    import ast
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        items = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        return None
    if not isinstance(items, (list, tuple)):
        return None
    return [str(x).strip().casefold() for x in items if str(x).strip()]


def read_padchest(root, class_names, *, policy: str = "ignore", frontal_only: bool = True,
                  load_size: int = DEFAULT_CACHE_SIZE) -> XrayDataset:
    root = Path(root)
    csv = _first(root, (PADCHEST_CSV,)) or next(iter(sorted(root.glob("PADCHEST_chest_x_ray_images_labels*.csv*"))), None)
    if csv is None:
        raise PublicDatasetError(f"{root} holds no {PADCHEST_CSV}: pass the PadChest folder")
    t = pd.read_csv(csv, dtype=str, low_memory=False)
    missing = [c for c in ("ImageID", "ImageDir", "PatientID", "Projection", "Labels") if c not in t]
    if missing:
        raise PublicDatasetError(f"{csv}: not PadChest's layout, no column {', '.join(missing)}")
    found = t["Labels"].map(_findings)
    skipped = {"no_labels": int(found.isna().sum())}
    t, found = t.loc[found.notna()].reset_index(drop=True), found.loc[found.notna()].reset_index(drop=True)
    if frontal_only:
        side = ~t["Projection"].fillna("").str.upper().isin(FRONTAL)
        skipped["not_frontal"] = int(side.sum())
        t, found = t.loc[~side].reset_index(drop=True), found.loc[~side].reset_index(drop=True)

    def where(r) -> str:
        nested = root / str(r["ImageDir"]) / r["ImageID"]
        return str(nested if nested.is_file() else root / r["ImageID"])

    empty = pd.Series("", index=t.index)
    birth = pd.to_numeric(t["PatientBirth"] if "PatientBirth" in t else empty, errors="coerce")
    year = pd.to_numeric((t["StudyDate_DICOM"] if "StudyDate_DICOM" in t else empty).str[:4], errors="coerce")
    frame = pd.DataFrame({"image": t["ImageDir"].astype(str) + "/" + t["ImageID"], "path": t.apply(where, axis=1),
                          "patient_id": "padchest-" + t["PatientID"].astype(str),
                          "sex": (t["PatientSex_DICOM"] if "PatientSex_DICOM" in t else empty).fillna("").str.upper()
                          .map({"M": "M", "F": "F"}).fillna(""),
                          "age": (year - birth).where(lambda a: a >= 0),
                          "view": t["Projection"].fillna("").str.replace("_horizontal", " supine", case=False),
                          "source": "PadChest (Hospital San Juan, Alicante)", "split": "external",
                          "dataset": "padchest"})
    targets = np.full((len(frame), len(class_names)), np.nan, dtype=np.float32)
    used = {}
    for k, c in enumerate(class_names):
        terms = PADCHEST_TERMS.get(c)
        if terms:
            targets[:, k] = [float(any(term in f for f in fs for term in terms)) for fs in found]
            used[c] = "Labels: " + " / ".join(terms)
    if not used:
        raise PublicDatasetError(f"PadChest at {root}: none of the run's classes ({', '.join(class_names)}) is one "
                                 f"it names; it names {', '.join(PADCHEST_TERMS)}")
    return _dataset(frame, targets, class_names, used, "padchest", load_size, skipped)


def read_rsna(root, class_names, *, policy: str = "ignore", frontal_only: bool = True,
              load_size: int = DEFAULT_CACHE_SIZE) -> XrayDataset:
    root = Path(root)
    csv = _first(root, ("stage_2_train_labels.csv", "stage_1_train_labels.csv"))
    if csv is None:
        raise PublicDatasetError(f"{root} holds no stage_2_train_labels.csv: pass the RSNA Pneumonia folder")
    t = pd.read_csv(csv, dtype={"patientId": str})
    missing = [c for c in ("patientId", "x", "y", "width", "height", "Target") if c not in t]
    if missing:
        raise PublicDatasetError(f"{csv}: not RSNA Pneumonia's layout, no column {', '.join(missing)}")
    target = pd.to_numeric(t["Target"], errors="coerce")
    if target.isna().any() or not target.isin((0, 1)).all():
        bad = int(np.argmax(target.isna().to_numpy() | ~target.isin((0, 1)).to_numpy()))
        raise PublicDatasetError(f"{csv}: Target must be 0 or 1 (row {bad + 2}: {t['Target'].iloc[bad]!r})")
    per = t.assign(Target=target).groupby("patientId", sort=True).agg(Target=("Target", "max"),
                                                                      boxes=("Target", "sum")).reset_index()
    images = "stage_2_train_images" if (root / "stage_2_train_images").is_dir() else "stage_1_train_images"
    frame = pd.DataFrame({"image": images + "/" + per["patientId"] + ".dcm",
                          "path": [str(root / images / f"{p}.dcm") for p in per["patientId"]],
                          "patient_id": "rsna-" + per["patientId"], "sex": "", "age": np.nan, "view": "",
                          "source": "RSNA Pneumonia Detection (NIH images, RSNA/STR labels)", "split": "external",
                          "dataset": "rsna", "boxes": per["boxes"].astype(int)})
    targets = np.full((len(frame), len(class_names)), np.nan, dtype=np.float32)
    used = {}
    for k, c in enumerate(class_names):
        if str(c).casefold() == "pneumonia":
            targets[:, k] = per["Target"].to_numpy(dtype=np.float32)
            used[c] = "Target"
    if not used:
        raise PublicDatasetError(f"RSNA Pneumonia at {root} labels Pneumonia only; the run predicts "
                                 f"{', '.join(class_names)}")
    return _dataset(frame, targets, class_names, used, "rsna", load_size, {})


READERS = {"chexpert": read_chexpert, "mimic": read_mimic, "padchest": read_padchest, "rsna": read_rsna}


def read_public(root, fmt: str, class_names, **kw) -> XrayDataset:
    if fmt not in READERS:
        raise PublicDatasetError(f"unknown format {fmt!r}; allowed: {', '.join(FORMATS)}")
    return READERS[fmt](root, class_names, **kw)


# the classes a run trained on a layout predicts: the dataset's own findings ("No Finding" is their absence)
NATIVE = {"chexpert": CHEXPERT_OBSERVATIONS[1:], "mimic": CHEXPERT_OBSERVATIONS[1:], "padchest": tuple(PADCHEST_TERMS),
          "rsna": ("Pneumonia",)}
MIMIC_SPLITS = {"train": "train", "validate": "val", "test": "test"}  # its official split, kept as given
LABEL_FILES = {"chexpert": ("train.csv", "valid.csv"), "mimic": tuple(n for v in MIMIC_FILES.values() for n in v),
               "padchest": (PADCHEST_CSV,), "rsna": ("stage_2_train_labels.csv", "stage_1_train_labels.csv")}


def manifest_frame(root, fmt: str, *, policy: str = "ignore", frontal_only: bool = True) -> pd.DataFrame:
    """The layout at `root` as a manifest of the lab's format (engine.data.labelled): absolute paths,
    patient, sex, age, view, source, one column per NATIVE class (1, 0 or blank = not scored), and
    MIMIC-CXR's official split as `split` (the others get the lab's patient-wise split)."""
    if fmt not in READERS:
        raise PublicDatasetError(f"unknown format {fmt!r}; allowed: {', '.join(FORMATS)}")
    ds = read_public(root, fmt, list(NATIVE[fmt]), policy=policy, frontal_only=frontal_only)
    f = ds.frame
    out = pd.DataFrame({"path": f["path"], "patient_id": f["patient_id"], "sex": f["sex"].fillna(""),
                        "age": f["age"], "view": f["view"], "source": f["source"]})
    if "official_split" in f:
        out["split"] = f["official_split"].map(MIMIC_SPLITS).fillna("")
        out = out[out["split"] != ""]
    for k, c in enumerate(NATIVE[fmt]):
        v = ds.targets[out.index, k]
        if c in ds.label_columns and (v > 0.5).any():  # a finding never positive here cannot be learned from it
            out[c] = np.where(np.isnan(v), "", np.where(v > 0.5, "1", "0"))
    return out.reset_index(drop=True)


def public_manifest(root, fmt: str, *, policy: str = "ignore", frontal_only: bool = True, cache_dir=None) -> Path:
    """The manifest CSV of the layout at `root` (manifest_frame), written once into the cache and
    rewritten when the layout's label files change; the same root, format and policy give the same
    file, so a resumed run or a repeat reads what the first read."""
    root = Path(root).absolute()
    stamp = [str(root), fmt, policy, str(frontal_only)]
    for name in LABEL_FILES.get(fmt, ()):
        for cand in (root / name, root / (name + ".gz")):
            if cand.is_file():
                st = cand.stat()
                stamp.append(f"{cand.name}:{st.st_size}:{st.st_mtime_ns}")
    key = hashlib.sha256("|".join(stamp).encode()).hexdigest()[:16]
    out = Path(cache_dir or default_cache_dir()) / "manifests" / f"{fmt}-{key}.csv"
    if out.is_file():
        return out
    frame = manifest_frame(root, fmt, policy=policy, frontal_only=frontal_only)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, out)
    return out
