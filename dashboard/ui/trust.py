"""The Results page's "Can this result be trusted?" sections: external collections, subgroups,
operating points and calibration. Numbers come from engine.trust on the predictions CSVs."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard.ui import tables
from dashboard import cache, guard
from engine.text import md_escape
from engine.data.images import ImageReadError
from engine.data.manifest import parse_mapping
from engine.evaluation.external import evaluate_external
from engine.runs.folder import EXTERNAL_PREDICTIONS
from engine.runs.predictions import read as read_predictions
from engine.trust.operating import rates_at
from engine.text import estimate

PAGE_BOOT = 200


def _across(reg, run: str) -> None:
    """The run on every collection it was scored on, one column per collection (Zech et al. 2018)."""
    from engine.evaluation.external import cross_dataset
    from engine.text import estimate

    rows = cross_dataset(reg, run)
    if not rows:
        return
    st.markdown("**Across collections** (the classes scored on at least two; AUC [95 % CI], images)")
    grid = pd.DataFrame([{"class": r["class"], "collection": r["collection"],
                          "cell": f"{estimate(r['auc'], r['low'], r['high'])} ({r['images']})"} for r in rows])
    wide = grid.pivot(index="class", columns="collection", values="cell")
    wide = wide.reindex(list(dict.fromkeys(grid["class"]))).reset_index()
    tables.show(wide)


def external_section(reg, run: str) -> None:
    """The run's external evaluations beside its internal test AUC, and a form to add one."""
    run_dir = reg.run_dir(run)
    ext = cache.externals(run_dir)
    if ext:
        rows = []
        for name, e in ext.items():
            unseen = {u["class"]: u for u in (e.get("unseen") or {}).get("auc", [])}
            for r in e.get("auc", []):
                if r.get("labelled") and r["class"] != "mean":
                    rows.append({"evaluation": name, "class": r["class"], "images": e["images"],
                                 "external AUC": r["auc"], "CI low": r["low"], "CI high": r["high"],
                                 "internal test AUC": r["internal_auc"], "drop": r["drop"],
                                 "same film as training": e.get("overlap", {}).get("shared_images"),
                                 "AUC without them": unseen.get(r["class"], {}).get("auc")})
        tables.show(pd.DataFrame(rows))
        _across(reg, run)
        st.caption("Drop = internal test AUC − external AUC (positive: worse outside the run's own data). "
                   "Intervals resample patients. 'Same film as training': external images whose perceptual hash "
                   "matches one of the run's training or validation images and whose pixels confirm it "
                   "(correlation ≥ 0.95 at 32 px); 'AUC without them' scores only the films the model never "
                   "saw.")
        for name, e in ext.items():
            pairs = (e.get("overlap") or {}).get("pairs") or []
            if pairs:
                with st.expander(f"{name}: {e['overlap']['shared_images']} image(s) are the same film as a training "
                                 f"image; the matches side by side"):
                    _matches(pairs[:12])
                    if len(pairs) > 12:
                        st.caption(f"The first 12 of {len(pairs)} matches; all are in the evaluation's metrics.json.")
    else:
        st.info("No external evaluation of this run yet.")
    with st.expander("Evaluate on another collection", expanded=not ext):
        with st.form("results.external"):
            root = st.text_input("Collection root, or a manifest CSV", key="results.ext_root",
                                 placeholder="/data/other-hospital or /data/other/manifest.csv")
            c1, c2 = st.columns(2)
            fmt = c1.selectbox("Format", ["detect", "covid", "nih", "manifest", "chexpert", "mimic", "padchest", "rsna"],
                               key="results.ext_format",
                               help="chexpert, mimic, padchest, rsna: the public datasets in their own layouts "
                                    "(docs/own-data.md); uncertain CheXpert/MIMIC labels are not scored")
            name = c2.text_input("Name (optional)", key="results.ext_name", placeholder="e.g. hospital-b")
            mapping = st.text_area("Manifest column map, one COLUMN=FIELD per line (optional)", key="results.ext_map",
                                   placeholder="Image Index=path\nPatient ID=patient_id\nFinding=COVID-19", height=90)
            check = st.checkbox("Look for films shared with the run's training data (hashes every training image "
                                "once; cached after that)", value=True, key="results.ext_overlap")
            go = guard.action("Evaluate", form=True, type="primary")
        if go:
            _run_external(reg, run, root.strip(), None if fmt == "detect" else fmt, name.strip() or None, mapping,
                          check)


def _matches(pairs: list[dict]) -> None:
    """Each matched pair as two thumbnails: the outside image and the run's training image."""
    for p in pairs:
        a, b, c = st.columns([1, 1, 2])
        for col, side, what in ((a, "a", "outside"), (b, "b", "training")):
            path = p.get(f"path_{side}") or ""
            thumb = cache.thumbnails("match", (path,), 160)[0] if path else ""
            if thumb:
                col.image(thumb, width="stretch")
            col.caption(f"{what}: {md_escape(p[f'image_{side}'])} (patient {md_escape(str(p[f'patient_{side}']))})")
        c.caption(f"hash distance {p['distance']} bits" + (f", pixel correlation {p['correlation']:.3f}"
                                                           if p.get("correlation") is not None else ""))


def _run_external(reg, run, root, fmt, name, mapping_text, check_overlap: bool = True) -> None:
    if not root:
        st.error("Give the collection's root folder or manifest CSV.")
        return
    said = st.empty()
    bar = st.progress(0.0, text="Starting…")
    labels = {"hash": "Looking for images shared with the training data", "predict": "Scoring images"}

    def progress(stage, k, n):
        bar.progress(min(k / max(n, 1), 1.0), text=f"{labels.get(stage, stage)}: {k}/{n}")

    try:
        out = evaluate_external(reg, run, root, fmt=fmt, name=name,
                                mapping=parse_mapping([x for x in mapping_text.splitlines() if x.strip()]),
                                check_overlap=check_overlap, progress=progress,
                                notice=lambda text: said.info(text.replace("--no-overlap-check",
                                                                           "unticking the overlap check")))
    except (FileNotFoundError, ValueError, ImageReadError) as exc:
        bar.empty()
        st.error(f"Not evaluated: {md_escape(str(exc))}")
        return
    bar.empty()
    st.success(f"Evaluated on {out['images']} images of {md_escape(out['root'])} as **{md_escape(out['name'])}**.")
    st.rerun()


def _evaluations(reg, run: str) -> dict[str, tuple[Path | None, Path]]:
    """{label: (validation CSV, predictions CSV)} of the internal test split and each external."""
    folder = reg.folder(run)
    out = {}
    if folder.predictions("test").is_file():
        out["internal test"] = (folder.predictions("val"), folder.predictions("test"))
    for name in folder.externals():
        p = folder.external_dir(name) / EXTERNAL_PREDICTIONS
        if p.is_file():
            out[f"external: {name}"] = (folder.predictions("val"), p)
    return out


def subgroup_section(reg, run: str) -> None:
    evals = _evaluations(reg, run)
    if not evals:
        st.info("No predictions to slice yet.")
        return
    c1, c2 = st.columns([2, 2])
    which = c1.selectbox("Evaluation", list(evals), key="results.sub_eval")
    computed = cache.trust_tables(*evals[which], n_boot=PAGE_BOOT)
    rows = pd.DataFrame(computed["subgroups"])
    if rows.empty:
        st.info("No class of this evaluation has both positives and negatives.")
        return
    cls = c2.selectbox("Class", list(dict.fromkeys(rows["class"])), key="results.sub_class")
    r = rows[(rows["class"] == cls) & (rows["status"] != "not grouped")]
    unknown = rows[(rows["class"] == cls) & (rows["status"] == "not grouped")]
    flagged = r[r["status"] == "flagged"]
    if len(flagged):
        st.error("Worse for: " + ", ".join(f"{a} {g}" for a, g in zip(flagged["attribute"], flagged["group"]))
                 + " (the interval lies wholly below the overall AUC).")
    if r.empty:
        st.info("The predictions carry no sex, age or view to group by.")
    else:
        cache.chart("forest_chart", r, name=f"{run}_subgroups_{cls}")
    small = r[r["status"] == "too small"]
    single = r[r["status"] == "one class"]
    notes = []
    if len(single):
        notes.append("One class only, so no AUC exists: " + ", ".join(
            f"{a} {g} ({n} images, {'all' if p == n else 'no'} positive)" for a, g, n, p in
            zip(single["attribute"], single["group"], single["images"], single["positives"])) + ".")
    if len(small):
        notes.append("Too small to score (fewer than 20 images or 5 positives or 5 negatives): "
                     + ", ".join(f"{a} {g} ({n} images, {p} positive)" for a, g, n, p in
                                 zip(small["attribute"], small["group"], small["images"], small["positives"])) + ".")
    if len(unknown):
        notes.append("Unknown value, not grouped: " + ", ".join(f"{a} {n} images" for a, n in
                                                                 zip(unknown["attribute"], unknown["images"])) + ".")
    notes.append(f"Intervals: {PAGE_BOOT} patient-bootstrap resamples (the CLI uses the run's own setting). "
                 "Age bands 0-39, 40-59, 60-79, 80+.")
    st.caption(" ".join(notes))


def operating_section(reg, run: str) -> None:
    evals = _evaluations(reg, run)
    if not evals:
        st.info("No predictions yet.")
        return
    c1, c2 = st.columns(2)
    which = c1.selectbox("Evaluation", list(evals), key="results.op_eval")
    computed = cache.trust_tables(*evals[which], n_boot=PAGE_BOOT)
    op = computed["operating_points"]["classes"]
    if not op:
        st.info("No class to threshold.")
        return
    cls = c2.selectbox("Class", list(op), key="results.op_class")
    points = op[cls]["points"]
    table = pd.DataFrame([{"rule": p["rule"], "threshold": p.get("threshold"),
                           **{k: estimate(p.get(k), p.get(f"{k}_low"), p.get(f"{k}_high"))
                              for k in ("sensitivity", "specificity", "ppv", "npv", "f1")}} for p in points])
    tables.show(table, digits={"threshold": 4})
    st.caption("Thresholds are chosen on the run's validation predictions (Youden's J; sensitivity ≥ 0.90; "
               "specificity ≥ 0.90; best F1) and applied unchanged here, as a deployed model would be.")
    preds = read_predictions(evals[which][1])
    youden = next((p["threshold"] for p in points if p["rule"] == "youden" and p.get("threshold") is not None), 0.5)
    thr = st.slider("Threshold", 0.0, 1.0, float(round(youden, 3)), 0.001, format="%.3f",
                    key=f"results.op_thr.{which}.{cls}")
    r = rates_at(preds.target(cls), preds.prob(cls), thr, preds.clusters, n_boot=PAGE_BOOT)
    left, right = st.columns([2, 3])
    with left:
        cache.chart("confusion_chart", r, name=f"{run}_confusion_{cls}")
    with right:
        m = st.columns(5)
        for col, (k, label) in zip(m, (("sensitivity", "Sensitivity"), ("specificity", "Specificity"), ("ppv", "PPV"),
                                       ("npv", "NPV"), ("f1", "F1"))):
            col.metric(label, "n/a" if r[k] is None else f"{r[k]:.3f}")
            if r[k] is not None and r[f"{k}_low"] is not None:
                col.caption(f"[{r[f'{k}_low']:.3f}, {r[f'{k}_high']:.3f}]")
        st.caption(f"At threshold {thr:.3f} on {r['n']} images: an image is called positive when its probability "
                   "is at least the threshold.")
    cal = op[cls]["calibration"]
    st.markdown("**Calibration**")
    if not cal["bins"]:
        st.caption("Not measurable: this class has no positives or no negatives here.")
        return
    a, b = st.columns([3, 1])
    cache.chart("reliability_chart", pd.DataFrame(cal["bins"]), container=a, name=f"{run}_reliability_{cls}")
    b.metric("Expected calibration error", f"{cal['ece']:.3f}")
    b.metric("Brier score", f"{cal['brier']:.3f}")
    b.caption("ECE: the bin-weighted mean gap between observed rate and mean predicted probability (10 bins). "
              "Brier: mean squared error of the probabilities. Lower is better for both.")
