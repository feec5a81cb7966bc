"""Issue 34, size: the field's largest public datasets read at their real size. MIMIC-CXR-JPG has 377,110
images and CheXpert 224,316. This builds each layout at its published schema (CheXpert-v1.0-small's
train.csv/valid.csv; MIMIC-CXR-JPG's chexpert, split and metadata CSVs and its files/pXX/pSUBJECT/sSTUDY/
DICOM.jpg tree), with every image a hard link to one of the pack's real 64-px ChestX-ray14 images (no
extra disk), at prefixes of the full size. Patients: CheXpert has 64,740 and MIMIC 65,379; the layouts
keep those counts at full size, and their share of images per patient at the smaller sizes.

For each dataset and size, in its own process (CPU seconds with wait4, as bench_scale.py; peak RSS):
  read   engine.data.public.read_public (the reader `evaluate --on ROOT --format NAME` uses): the CSVs,
         the uncertainty policy, frontal views, every image's existence checked
  split  the lab's patient-wise stratified split (engine.data.splits.split_by_patient, 70/10/20) of the
         read frame, as training on a collection without a split column draws it

Targets (issue 34): read + split <= 10 CPU-s and <= 2 GB at 377k rows, and linear in the rows: the
exponent k of CPU ~ n^k over the sizes is printed (1 is linear).

Usage: python bench/bench_public_scale.py [--sizes 10000 100000 0] [--datasets chexpert mimic] [--workdir DIR]
       (0 = the dataset's full size)
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import DATA_PACK, REPO

FULL = {"chexpert": 224_316, "mimic": 377_110}
PATIENTS = {"chexpert": 64_740, "mimic": 65_379}
OBSERVATIONS = ("No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
                "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
                "Fracture", "Support Devices")


def _images() -> list[Path]:
    return sorted((DATA_PACK / "nih" / "images_64px").rglob("*.png"))


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except FileExistsError:
        pass
    except OSError:
        dst.symlink_to(src)


def _values(rng, n: int):
    """CheXpert's value conventions per observation: 1.0, 0.0, -1.0 (uncertain) or blank."""
    import numpy as np

    return rng.choice(np.array(["1.0", "0.0", "-1.0", ""], dtype=object), size=(n, len(OBSERVATIONS)),
                      p=[0.15, 0.2, 0.05, 0.6])


def build_chexpert(dest: Path, n: int, seed: int = 0) -> Path:
    import numpy as np

    rng = np.random.default_rng(seed)
    real = _images()
    folder = dest / "CheXpert-v1.0-small"
    per = FULL["chexpert"] / PATIENTS["chexpert"]
    patient = (np.arange(n) / per).astype(int) + 1
    vals = _values(rng, n)
    sex = rng.choice(["Male", "Female"], n)
    age = rng.integers(18, 90, n)
    view = rng.choice(["Frontal", "Lateral"], n, p=[0.85, 0.15])
    appa = np.where(view == "Frontal", rng.choice(["AP", "PA"], n), "")
    n_valid = max(1, round(n * 234 / FULL["chexpert"]))
    header = ",".join(["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *OBSERVATIONS])
    lines = {"train": [header], "valid": [header]}
    pick = rng.integers(0, len(real), n)
    for i in range(n):
        split = "valid" if i < n_valid else "train"
        rel = f"CheXpert-v1.0-small/{split}/patient{patient[i]:05d}/study{i % 3 + 1}/view{i}_{view[i].lower()}.jpg"
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        _link(real[pick[i]], dest / rel)
        lines[split].append(",".join([rel, sex[i], str(age[i]), view[i], appa[i], *vals[i]]))
    for split, rows in lines.items():
        (folder / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return folder


def build_mimic(dest: Path, n: int, seed: int = 0) -> Path:
    import numpy as np

    rng = np.random.default_rng(seed)
    real = _images()
    per = FULL["mimic"] / PATIENTS["mimic"]
    subject = 10_000_000 + (np.arange(n) / per).astype(int) * 13
    study = 50_000_000 + (np.arange(n) / 2).astype(int)  # two images a study, as MIMIC's PA + lateral pairs
    view = rng.choice(["PA", "AP", "LATERAL", "LL"], n, p=[0.35, 0.25, 0.3, 0.1])
    split = rng.choice(["train", "validate", "test"], n, p=[0.978, 0.008, 0.014])
    vals = _values(rng, n)
    pick = rng.integers(0, len(real), n)
    labels = [",".join(["subject_id", "study_id", *OBSERVATIONS])]
    splits, meta = ["dicom_id,study_id,subject_id,split"], [
        "dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns,StudyDate,StudyTime,"
        "ProcedureCodeSequence_CodeMeaning,ViewCodeSequence_CodeMeaning,PatientOrientationCodeSequence_CodeMeaning"]
    seen_study = set()
    for i in range(n):
        dicom = f"{i:08x}-{seed:08x}-{i * 7919 % 99991:08x}"
        sub, st = str(subject[i]), str(study[i])
        path = dest / "files" / f"p{sub[:2]}" / f"p{sub}" / f"s{st}" / f"{dicom}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        _link(real[pick[i]], path)
        splits.append(f"{dicom},{st},{sub},{split[i]}")
        meta.append(f"{dicom},{sub},{st},CHEST (PA AND LAT),{view[i]},2544,3056,21800506,213014.531,"
                    "CHEST (PA AND LAT),postero-anterior,Erect")
        if st not in seen_study:  # labels are per study
            seen_study.add(st)
            labels.append(",".join([sub, st, *vals[i]]))
    (dest / "mimic-cxr-2.0.0-chexpert.csv").write_text("\n".join(labels) + "\n")
    (dest / "mimic-cxr-2.0.0-split.csv").write_text("\n".join(splits) + "\n")
    (dest / "mimic-cxr-2.0.0-metadata.csv").write_text("\n".join(meta) + "\n")
    return dest


CHILD = """
import json, sys, time
from engine.constants import NIH_LABELS
from engine.data.public import read_public
from engine.data.splits import split_by_patient
root, fmt = sys.argv[1], sys.argv[2]
t = time.process_time()
ds = read_public(root, fmt, list(NIH_LABELS))
read_s = time.process_time() - t
t = time.process_time()
strata = ds.targets.argmax(axis=1)
split = split_by_patient(ds.frame["patient_id"], {"train": 0.7, "val": 0.1, "test": 0.2}, 0, strata)
split_s = time.process_time() - t
print(json.dumps({"images": len(ds), "patients": int(ds.frame["patient_id"].nunique()), "read_cpu_s": read_s,
                  "split_cpu_s": split_s, "skipped": {k: v for k, v in ds.skipped.items() if isinstance(v, int)},
                  "splits": {s: int((split == s).sum()) for s in ("train", "val", "test")}}))
"""


def measure(root: Path, fmt: str) -> dict:
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(root), fmt], cwd=REPO, stdout=out,
                                stderr=subprocess.PIPE)
        _, status, ru = os.wait4(proc.pid, 0)
        err = proc.stderr.read().decode(errors="replace")
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"{fmt} at {root}: {err[-1500:]}")
        out.seek(0)
        res = json.loads(out.read().decode().strip().splitlines()[-1])
    res.update(process_cpu_s=ru.ru_utime + ru.ru_stime, rss_mb=ru.ru_maxrss / 1024)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 0], help="rows; 0 = the full size")
    ap.add_argument("--datasets", nargs="+", choices=list(FULL), default=list(FULL))
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="cxr-public-scale-"))
    results = []
    try:
        for fmt in args.datasets:
            sizes = 0
            for size in args.sizes:
                n = size or FULL[fmt]
                dest = work / f"{fmt}-{n}"
                t0 = time.perf_counter()
                root = (build_chexpert if fmt == "chexpert" else build_mimic)(dest, n)
                built = time.perf_counter() - t0
                r = measure(root, fmt)
                r.update(dataset=fmt, rows=n, build_wall_s=round(built, 1))
                results.append(r)
                sizes += 1
                print(f"{fmt:9} {n:>8,} rows: {r['images']:>8,} frontal images, {r['patients']:>6,} patients; read "
                      f"{r['read_cpu_s']:.2f} CPU-s, split {r['split_cpu_s']:.2f} CPU-s; the process "
                      f"{r['process_cpu_s']:.2f} CPU-s (imports included), peak RSS {r['rss_mb']:.0f} MB "
                      f"(layout built in {built:.0f} s)", flush=True)
                if size == 0 or n == max(s or FULL[fmt] for s in args.sizes):
                    ok = r["read_cpu_s"] + r["split_cpu_s"] <= 10 and r["rss_mb"] <= 2048
                    print(f"          target read + split <= 10 CPU-s and <= 2 GB: {'met' if ok else 'NOT met'}")
                import shutil
                shutil.rmtree(dest, ignore_errors=True)
            if sizes >= 2:
                work_s = [(r["rows"], r["read_cpu_s"] + r["split_cpu_s"]) for r in results if r["dataset"] == fmt]
                (m0, w0), (m1, w1) = work_s[0], work_s[-1]
                k = math.log(w1 / w0) / math.log(m1 / m0) if w0 > 0 and m1 != m0 else float("nan")
                print(f"          growth of read + split CPU over {m0:,} -> {m1:,} rows: n^{k:.2f}")
    finally:
        if not args.workdir:
            import shutil
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
