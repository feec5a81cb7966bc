"""Results: per-class ROC curves, AUCs with confidence intervals, run comparison, the paper's numbers."""
import re

import pandas as pd
import streamlit as st

from dashboard.ui import tables
from dashboard import cache, guard
from dashboard.cache import ROC_POINTS
from dashboard.ui import trust
from dashboard.ui.forms import prefill_from_run
from dashboard.ui.pickers import pick_run, runs_with_metrics
from engine import NIH_LABELS, RunError, figures, roc_curves
from engine.stats import p_text
from engine.text import md_escape
from engine.constants import COVID_LABEL
from engine.published import STUDY, STUDY_RESULTS, nih_table, study_counterpart
from engine.evaluation.baseline import baseline_row, baselines
from engine.runs.bundle import bundle_bytes
from engine.runs.details import headline
from engine.runs.tables import csv_text

st.title("Results")
reg = cache.registry()
names = runs_with_metrics(reg)
if not names:
    st.info("No evaluated runs yet. Finished runs appear here with their ROC curves and AUCs; "
            "`python -m engine evaluate RUN` evaluates a run again.")
    st.subheader("Published numbers")
    tables.show(pd.DataFrame(nih_table()), width="content")
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
               f"init {cfg.get('model', {}).get('init')}, {row.status}. Where it came from: code "
               f"`{row.code_version or 'not recorded'}`, data fingerprint `{row.data_fingerprint or 'not recorded'}`"
               + (f", trained on {row.device}" if row.device else "") + ".",
               help="The code version is the git commit (with '+dirty' for uncommitted changes) the run was started "
                    "from; the data fingerprint hashes the train and test splits' image names and labels, so two runs "
                    "with the same fingerprint saw the same data.")
    # one row that wraps as the page narrows: no button or toggle label is ever cut (issue 37, N11)
    a1 = a2 = a3 = st.container(horizontal=True, vertical_alignment="center", gap="medium")
    if a1.button("Train again with these settings", key="results.train_again", on_click=prefill_from_run, args=(row,),
                 help="the Train page, with this run's preset and every setting filled in; nothing starts until "
                      "you press Start there"):
        st.switch_page("app_pages/train.py")
    weights = a2.toggle("with weights", key="results.bundle_weights", help="add best.pt to the bundle")
    deid = a2.toggle("de-identified", key="results.bundle_deid",
                     help="patient ids as salted hashes (the salt is not kept), sex and age dropped; a bundle never "
                          "holds an absolute path, and its README says which personal fields it carries")
    a2.download_button("Run bundle (zip)", lambda: bundle_bytes(reg, run, weights=weights, deidentify=deid),
                       f"{run}-bundle.zip",
                       "application/zip", key="results.bundle", on_click="ignore",
                       help="settings, metrics, predictions, external evaluations, audit, model card, figures (PNG, "
                            "SVG) and a README, as `python -m engine runs bundle RUN` writes it")
    export_dir = reg.folder(run).export_dir
    onnx_file, sidecar_file = export_dir / f"{run}.onnx", export_dir / f"{run}.onnx.json"
    if guard.action("Export to ONNX", key="results.export", where=a3,
                    help="the model with a dynamic batch size and a JSON sidecar (input size, channels, normalisation, "
                         "class names, run, data fingerprint), checked against PyTorch with onnxruntime; as "
                         "`python -m engine export RUN`"):
        from engine.models.export import export_onnx

        with st.spinner("Exporting and checking with onnxruntime (a minute on a CPU)…"):
            try:
                done = export_onnx(reg, run)
                a3.caption(f"onnxruntime vs PyTorch: max |difference| {done['max_abs_diff']:.1e} on {done['images']} images")
            except (ValueError, OSError, RuntimeError) as exc:
                a3.error(f"Not exported: {md_escape(exc)}")
    if onnx_file.is_file() and sidecar_file.is_file():
        e1 = e2 = a3
        e1.download_button("ONNX model", lambda: onnx_file.read_bytes(), onnx_file.name, "application/octet-stream",
                           key="results.onnx", on_click="ignore")
        e2.download_button("Sidecar (JSON)", lambda: sidecar_file.read_bytes(), sidecar_file.name, "application/json",
                           key="results.onnx_json", on_click="ignore")
    with st.expander("Send to TensorBoard or MLflow", icon=":material/ios_share:"):
        from engine import tracking

        with st.form("results.track_form", border=False, enter_to_submit=False):  # target and click go together
            target = st.text_input("target", key="results.track_target", value=(tracking.always() or [""])[0],
                                   placeholder="tensorboard:runs/tb  or  mlflow:http://127.0.0.1:5000",
                                   help="a TensorBoard folder (the run goes to FOLDER/RUN) or an MLflow tracking URI; "
                                        "sending again updates what is there, never doubles it")
            send = guard.action("Send", key="results.track_send", form=True,
                                help="the run's curves, AUCs, PR curves, CAM overlays, settings, predictions, model "
                                     "card and figures, as `python -m engine runs export RUN --to KIND WHERE`")
        if send:
            from engine.tracking.export import export_run

            with st.spinner(f"Sending {run} to {target}…"):
                try:
                    done = export_run(reg, run, target)
                    st.success(f"Sent: {done['steps']} steps, {done['epochs']} epochs"
                               + (f", {done['cams']} CAM overlays" if done["cams"] else "") + " to "
                               + md_escape(done.get("tensorboard") or f"{done['mlflow']} (run {done['run_id']})"))
                except Exception as exc:  # a bad target, a server down, a full disk: said, nothing lost
                    st.error(f"Not sent: {md_escape(f'{type(exc).__name__}: {exc}'[:500])}")

left, right = st.columns(2)
with left:
    st.subheader(f"ROC curves · {split}")
    if not pred_file.is_file():
        st.warning(f"no {pred_file.name} in {run_dir}")
    else:
        n_images = cache.roc_chart(pred_file, name=f"{run}_roc_{split}", title=f"ROC curves, {split} split",
                                   caption=figures.roc_caption(run, split, metrics.get(split, {}),
                                                               (row.config or {}) if row else {}))
        st.caption(f"{n_images} images. Click a legend entry to highlight a class.")
with right:
    st.subheader("AUC with 95% CI")
    table = pd.DataFrame(metrics.get(split, {}).get("auc", []))
    if table.empty:
        st.caption("not evaluated on this split")
    else:
        tables.show(table.rename(columns={"low": "CI low", "high": "CI high"}),
                    height=min(560, 35 * (len(table) + 1) + 3))  # as tall as its rows: no empty grid lines
        st.caption("Intervals: percentile bootstrap over patients.")
    d1 = d2 = st.container(horizontal=True)
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
        tables.show(comp.pivot_table(index="class", columns="run", values="auc", sort=False).reset_index())
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

    st.markdown("**Is the difference real?** Two runs on the same test images, paired")
    q1, q2, q3 = st.columns([2, 2, 2], vertical_alignment="bottom")
    q3 = q4 = q3.container(horizontal=True, vertical_alignment="center")  # the checkbox's label whole, then the button
    run_b = q1.selectbox("against", [n for n in names if n != run], key="results.paired_b",
                         help="the other run; both must have been scored on the same images (same task, data, split "
                              "seed and image cap), or tick 'images in common'")
    pair_classes = ["(headline)", "mean",
                    *(r["class"] for r in metrics.get(split, {}).get("auc", []) if r["class"] != "mean")]
    pair_cls = q2.selectbox("class", pair_classes, key="results.paired_class",
                            help="(headline): this run's headline class, as `compare` takes it; mean: the mean AUC over "
                                 "the shared classes (bootstrap p)")
    common = q3.checkbox("images in common", key="results.paired_common",
                         help="runs scored on different image sets: compare on the images both scored (said in the result)")
    if run_b and q4.button("Compare", key="results.paired_go"):
        st.session_state["results.paired_shown"] = (run, run_b, pair_cls, split, common)
    if run_b and st.session_state.get("results.paired_shown") == (run, run_b, pair_cls, split, common):
        try:
            res = cache.paired_comparison(run, run_b, None if pair_cls == "(headline)" else pair_cls, split, common)
        except (RunError, ValueError, OSError) as exc:
            st.warning(f"Not compared: {md_escape(str(exc).replace('--common', 'tick images in common'))}")
        else:
            m = st.columns(4)
            m[0].metric(f"AUC {run}", f"{res['auc_a']:.3f}")
            m[1].metric(f"AUC {run_b}", f"{res['auc_b']:.3f}")
            m[2].metric("difference A - B", f"{res['diff']:+.3f}", help=f"[{res['low']:+.3f}, {res['high']:+.3f}] "
                                                                         "95 % paired patient-bootstrap interval")
            m[3].metric("p", p_text(res["p"], res.get("p_floor")).removeprefix("p ").removeprefix("= "))
            st.markdown(f"**{md_escape(res['class'])}**, {res['split']} split, {res['images']} images of "
                        f"{res['patients']} patients: {md_escape(res['verdict'])}")
            (st.warning if "confounded" in res.get("design", "") else st.caption)(
                f"Settings: {md_escape(res.get('design', ''))}.")
            st.caption(f"{res['test']}; {res['bootstrap']} bootstrap resamples. The same as "
                       f"`python -m engine compare {run} {run_b} --split {split}`"
                       + ("" if pair_cls == "(headline)" else f" --class {pair_cls!r}") + (" --common" if common else "")
                       + ".")

def _short(what: str) -> str:
    """A published row's name without what the table's column already says ("COVID-19 test AUC")."""
    rest = re.sub(r"^COVID-19 test AUC,?\s*(in the\s*)?", "", what)
    return rest[:1].upper() + rest[1:] if rest else what


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
    pub = pd.concat([pd.DataFrame([ours]), pub, pd.DataFrame([baseline_row(b) for b in baselines(reg)])],
                    ignore_index=True)
    # one row per class and one column per source: all 14 classes and the mean fit without a sideways scroll
    wide = pub.set_index("source")[[*NIH_LABELS, "mean"]].T.rename_axis("class").reset_index()
    tables.show(wide, column_config={"class": st.column_config.TextColumn(pinned=True)},
                height=36 * (len(wide) + 1) + 4)
    with st.expander("Where each column comes from"):
        st.markdown("\n".join(f"- **{md_escape(r['source'])}**: {md_escape(r['citation'])}; {md_escape(r['split'])}"
                                for r in pub.to_dict("records")))
    st.caption("Published splits differ (official NIH list vs random patient splits); columns are indicative.")
if COVID_LABEL in test_auc and (row is None or row.config["data"]["task"] in ("covid", "combined15")):
    r = test_rows[COVID_LABEL]
    table = [{"experiment": _short(what), "COVID-19 AUC": value, "95% CI": "—",
              "source": cite.replace(STUDY, "the study")}
             for key, (what, value, cite) in STUDY_RESULTS.items() if key in COVID_EXPERIMENTS]
    table.insert(0, {"experiment": f"ours: {run}", "COVID-19 AUC": r["auc"],
                     "95% CI": f"[{r['low']:.3f}, {r['high']:.3f}]" if r.get("low") is not None else "—",
                     "source": "this run, test split"})
    tables.show(pd.DataFrame(table))
    st.caption(f"The study: {STUDY}.")
    if row and row.config["data"]["task"] == "combined15":
        within = cache.collection_only(run)
        if within:
            st.caption("This 15-class COVID-19 AUC mixes two collections: " + within["text"] + ". Table 2's "
                       "comparison is the collection-only number.")
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
