"""`data summary`: what a data root holds, per dataset and split, and whether patients leak."""
from __future__ import annotations

from ..constants import NO_FINDING
from .covid import COVID19Collection
from .nih import NIHChestXray14
from .splits import patient_overlap


def _splits(ds) -> dict:
    return ds.split_counts()


def summarize_nih(root, **kw) -> dict:
    ds = NIHChestXray14(root, **kw)
    labels = ds.label_counts()
    labels[NO_FINDING] = int((ds.targets.sum(axis=1) == 0).sum())
    return {
        "root": str(ds.root), "metadata": ds.csv_path.name, "rows": ds.rows_in_metadata,
        "present": len(ds), "missing": ds.skipped["missing_images"], "labels": labels,
        "splits": _splits(ds), "patients": int(ds.frame["patient_id"].nunique()),
        "patient_overlap": patient_overlap(ds.frame["patient_id"], ds.frame["split"]),
        "skipped": ds.skipped,
    }


def summarize_covid(root, **kw) -> dict:
    ds = COVID19Collection(root, include_unlabelled=True, **kw)
    return {"duplicates": ds.duplicates,
        "root": str(ds.root), "rows": ds.rows_in_metadata, "frontal_xray_files": ds.frontal_rows,
        "present": len(ds), "missing": ds.skipped["missing_images"], "labels": ds.group_counts(),
        "splits": _splits(ds), "patients": int(ds.frame["patient_id"].nunique()),
        "patient_overlap": patient_overlap(ds.frame["patient_id"], ds.frame["split"]),
        "skipped": ds.skipped,
    }
