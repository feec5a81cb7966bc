"""Results: per-class ROC curves, AUCs with confidence intervals, run comparison, the paper's numbers."""
import pandas as pd
import streamlit as st

from dashboard import cache
from dashboard.cache import ROC_POINTS
from dashboard.ui import trust
from dashboard.ui.pickers import pick_run, runs_with_metrics
from engine import NIH_LABELS, roc_curves
from engine.constants import COVID_LABEL
from engine.published import STUDY_RESULTS, nih_table, study_counterpart
from engine.runs.details import headline
from engine.runs.tables import csv_text

st.title("Results")
reg = cache.registry()
names = runs_with_metrics(reg)
if not names:
    st.info("No evaluated runs yet. Finished runs appear here with their ROC curves and AUCs; "
            "`python -m engine evaluate RUN` evaluates a run again.")
    st.subheader("Published numbers")
    st.dataframe(pd.DataFrame(nih_table()), hide_index=True)
    st.stop()

c1, c2 = st.columns([3, 1])
run = pick_run(names, "results.run", container=c1)
split = c2.radio("Split", ["test", "val"], horizontal=True, key="results.split")
run_dir = reg.run_dir(run)
metrics = cache.run_metrics(run_dir) or {}
pred_file = reg.folder(run).predictions(split)
row = reg.get(run)
if row:
    cfg = row.config
    st.caption(f"Viewing {run}: task {cfg.get('data', {}).get('task')}, {cfg.get('model', {}).get('arch')}, "
               f"init {cfg.get('model', {}).get('init')}, {row.status}.")

left, right = st.columns([3, 2])
with left:
    st.subheader(f"ROC curves · {split}")
    if not pred_file.is_file():
        st.warning(f"no {pred_file.name} in {run_dir}")
    else:
        n_images = cache.roc_chart(pred_file, name=f"{run}_roc_{split}")
        st.caption(f"{n_images} images. Click a legend entry to highlight a class.")
with right:
    st.subheader("AUC with 95% CI")
    table = pd.DataFrame(metrics.get(split, {}).get("auc", []))
    if table.empty:
        st.caption("not evaluated on this split")
    else:
        st.dataframe(table.rename(columns={"low": "CI low", "high": "CI high"}), hide_index=True, height=560,
                     column_config={c: st.column_config.NumberColumn(format="%.3f") for c in ("auc", "CI low", "CI high")})
        st.caption("Intervals: percentile bootstrap over patients.")
    d1, d2 = st.columns(2)
    if pred_file.is_file():  # the file is read only when the button is pressed, never on a rerun
        d1.download_button("Predictions CSV", pred_file.read_bytes, f"{run}_predictions_{split}.csv", "text/csv",
                           on_click="ignore")
    if not table.empty:
        d2.download_button("AUC table CSV", csv_text(table), f"{run}_auc_{split}.csv", "text/csv",
                           on_click="ignore")

st.divider()
st.subheader("Can this result be trusted?")
st.caption("Outside its own data, for every group of patients, at a threshold a clinician would use. "
           "The **Audit** page asks whether the model reads the disease or the source of the image.")
# one section at a time: subgroups and operating points bootstrap every image, so they are computed
# only when opened (then kept beside the predictions file), never on every rerun of the page
SECTIONS = {"External collections": trust.external_section, "Subgroups": trust.subgroup_section,
            "Operating point and calibration": trust.operating_section}
shown = st.segmented_control("Section", list(SECTIONS), default="External collections", key="results.trust_section",
                             label_visibility="collapsed")
if shown:
    SECTIONS[shown](reg, run)

st.divider()
st.subheader("Compare runs")
picked = st.multiselect("Runs to overlay (the run viewed is always included)", [n for n in names if n != run],
                        key="results.compare")
others = [run] + [n for n in picked if n != run]
if others:
    rows = []
    for name in others:
        m = cache.run_metrics(reg.run_dir(name)) or {}
        for r in m.get(split, {}).get("auc", []):
            rows.append({"run": name, "class": r["class"], "auc": r["auc"]})
    comp = pd.DataFrame(rows)
    if not comp.empty:
        st.dataframe(comp.pivot_table(index="class", columns="run", values="auc", sort=False), width="stretch")
        shared = sorted(set(comp["class"]) - {"mean"})
        cls = st.selectbox("ROC of one class across runs", shared, key="results.compare_class")
        recs = []
        for name in others:
            p = cache.predictions(reg.run_dir(name), split)
            if p is None or not p.has(cls):
                continue
            for c in roc_curves(*p.columns([cls]), [cls]):
                recs += [{**r, "label": f"{name} ({c.auc:.3f})"} for r in c.records(ROC_POINTS)]
        if recs:
            cache.chart("roc_chart", pd.DataFrame(recs), name=f"roc_{cls}_{len(others)}_runs_{split}")

st.divider()
st.subheader("Beside the paper")
COVID_EXPERIMENTS = ("covid-from-nih", "covid-from-imagenet", "covid-scratch", "combined15")
test_rows = {r["class"]: r for r in metrics.get("test", {}).get("auc", [])}
test_auc = {c: r["auc"] for c, r in test_rows.items()}
counterpart = study_counterpart(row.config) if row else None
if any(c in test_auc for c in NIH_LABELS):
    pub = pd.DataFrame(nih_table())
    ours = {"source": f"ours: {run} (test)", "citation": "this run", "split": "this project's split",
            **{c: test_auc.get(c) for c in NIH_LABELS}, "mean": test_auc.get("mean")}
    pub = pd.concat([pd.DataFrame([ours]), pub], ignore_index=True)
    pub = pub[["source", *NIH_LABELS, "mean", "split", "citation"]]  # the AUCs first, on screen
    st.dataframe(pub, hide_index=True, width="stretch",
                 column_config={"source": st.column_config.TextColumn(pinned=True, width="medium"),
                                **{c: st.column_config.NumberColumn(format="%.3f") for c in list(NIH_LABELS) + ["mean"]}})
    st.caption("Published splits differ (official NIH list vs random patient splits); rows are indicative.")
if COVID_LABEL in test_auc:
    r = test_rows[COVID_LABEL]
    table = [{"experiment": what, "COVID-19 AUC": value, "CI low": None, "CI high": None, "source": cite}
             for key, (what, value, cite) in STUDY_RESULTS.items() if key in COVID_EXPERIMENTS]
    table.insert(0, {"experiment": f"ours: {run}", "COVID-19 AUC": r["auc"], "CI low": r["low"], "CI high": r["high"],
                     "source": "this run, test split"})
    st.dataframe(pd.DataFrame(table), hide_index=True, width="stretch",
                 column_config={c: st.column_config.NumberColumn(format="%.3f") for c in ("COVID-19 AUC", "CI low", "CI high")})
if counterpart:
    what, value, cite = STUDY_RESULTS[counterpart]
    _, ours_value = headline(row.config, test_auc)
    st.metric(what, "—" if ours_value is None else f"{ours_value:.3f}",
              None if ours_value is None else f"{ours_value - value:+.3f} vs study {value:.2f}")
    st.caption(f"{cite}. Matched by this run's settings (task {row.config['data']['task']}, "
               f"{row.config['model']['arch']}, init {row.config['model']['init']}), not by its preset's name.")
elif row:
    cfg = row.config
    st.caption(f"No experiment of the study uses these settings (task {cfg['data']['task']}, {cfg['model']['arch']}, "
               f"init {cfg['model']['init']}), so there is no published number to set beside this run's.")
