"""Audit: is a run reading the disease or the source of the image? (engine.trust.audit)"""
import time

import pandas as pd
import streamlit as st

from dashboard.ui import tables
from dashboard import cache, guard
from dashboard.ui.pickers import pick_run, runs_with_checkpoint
from engine.text import md_escape
from engine.trust.audit import MARK_RULES, MIN_TP

st.title("Shortcut audit")
st.caption("COVID-19 classifiers are known to learn the image source (scanner, markers, panel letters) instead of "
           "the disease and then fail in a new hospital (DeGrave et al., Nature Machine Intelligence 2021). "
           "This page gathers the evidence for one run and says what it shows.")
reg = cache.registry()
runs = runs_with_checkpoint(reg)
if not runs:
    st.info("No run with a checkpoint yet: train one on the **Train** page.")
    st.stop()
c1, c2, c3 = st.columns([3, 1, 1])
run = pick_run(runs, "audit.run", container=c1)
per_source = c2.number_input("Images per source", 20, 2000, 120, 10, key="audit.per_source",
                             help="sampled per source for the probe")
top_k = c3.number_input("Top k per class", 3, 48, 12, key="audit.top_k",
                        help="most confident test images whose maps are read")
run_dir = reg.run_dir(run)
row = reg.get(run)
if row and row.status != "succeeded":
    st.warning(f"{run} is {row.status}: the audit reads its current best checkpoint.")

if guard.action("Run the audit", type="primary", key="audit.go"):
    from engine.data.images import ImageReadError
    from engine.trust.audit import audit_run

    bar = st.progress(0.0, text="Loading the model and the data…")
    clock = {"stage": None, "t": time.monotonic()}

    def progress(stage, k, n):
        """Each stage with its own count and estimate (the bar sat near 0 with stage names only)."""
        if stage != clock["stage"]:
            clock.update(stage=stage, t=time.monotonic())
        left = (time.monotonic() - clock["t"]) / max(k, 1) * (n - k) if k else None
        bar.progress(min(k / max(n, 1), 1.0), text=f"{stage}: {k}/{n}"
                     + (f", about {left:.0f} s left in this stage" if left is not None else ""))

    try:
        audit_run(reg, run, per_source=int(per_source), top_k=int(top_k), progress=progress)
    except (FileNotFoundError, ValueError, ImageReadError) as exc:
        st.error(f"The audit could not run: {md_escape(str(exc))}")
    bar.empty()

audit = cache.audit(run_dir)
if not audit:
    st.info(f"No audit of {run} yet. Press **Run the audit** (or `python -m engine audit {run}`); on the pack it "
            "takes seconds on a CPU.")
    st.stop()

v = audit["verdict"]
box = (st.error if v["shortcut"] else st.warning if v.get("confounded") else st.success if v["shortcut"] is False
       else st.info)
box(f"**{md_escape(v['summary'])}**")
with st.expander(f"The verdict's evidence in sentences ({len(v['evidence'])}); the tables below hold the numbers"):
    for line in v["evidence"]:
        st.markdown(f"- {md_escape(line)}")
for note in audit.get("notes", []):
    st.caption(f"Note: {note}")
st.caption(f"Audited {pd.to_datetime(audit['created'], unit='s').strftime('%Y-%m-%d %H:%M')} UTC; headline class "
           f"{audit['headline_class']}.")

st.subheader("Source predictability")
if not audit["sources"]:
    st.caption("Not measured: the run's data holds one source only and no second collection is configured.")
for s in audit["sources"]:
    features_auc, pixels_auc = (None if s[k] is None else round(s[k], 3) for k in ("source_auc", "pixel_source_auc"))
    st.markdown(f"**{s['title']}**: probe AUC {features_auc} from the run's features, {pixels_auc} "
                f"from raw pixels, on {s['images']} images.")
    if s.get("per_source"):
        per = pd.DataFrame(s["per_source"])
        cache.chart("source_chart", per, name=f"{run}_sources_{s['title']}")
        lfs = s["label_from_source"]
        st.caption(("The source alone predicts the label with AUC "
                    f"{lfs:.2f} (0.5: says nothing; 1: gives it away)." if lfs is not None else
                    "The run's labels come from one of these sources only.")
                   + " Red flag: a source the features pick out (AUC ≥ 0.9) whose share of positives differs from the "
                   "others' by 50 points or more.")

st.subheader("Where the model looks")
maps = audit["maps"]
for key in ("too_coarse", "band_too_coarse"):
    if maps.get(key):
        st.warning(f"{maps[key][0].upper()}{maps[key][1:]}.")
COLUMNS = {"border": "border band share", "outside_lung": "outside lung share", "corner_focus": "corner focus (x area)",
           "drop_border_blanked": "prob. drop, border blanked", "patch": "prob. drop, worst fixed place"}
rows, marks = [], []
for cls, d in maps.get("classes", {}).items():
    tp, fp = d["TP"], d["FP"]
    patch = tp.get("patch") or {}
    rows.append({"class": cls, "true positives used": tp["maps"], COLUMNS["border"]: tp["border"],
                 COLUMNS["outside_lung"]: tp["outside_lung"], COLUMNS["corner_focus"]: tp["corner_focus"],
                 COLUMNS["drop_border_blanked"]: tp["drop_border_blanked"],
                 "prob. drop, centre blanked": tp["drop_centre_blanked"], COLUMNS["patch"]: patch.get("drop"),
                 "worst place vs typical (x)": patch.get("ratio"), "images where it is the worst": patch.get("consistency"),
                 "false positives used": fp["maps"], "FP drop, border blanked": fp["drop_border_blanked"],
                 "flagged": "; ".join(d["reasons"]) if d["flag"] else "no"})
    marks.append({**{COLUMNS[k]: bool(v) for k, v in d.get("marks", {}).items()}, "flagged": bool(d["flag"])})
if rows:
    evidence = pd.DataFrame(rows)
    flags = pd.DataFrame(marks).reindex(columns=evidence.columns, fill_value=False).fillna(False)
    st.dataframe(tables.styled(evidence).apply(
        lambda _: flags.replace({True: "background-color: rgba(255, 75, 75, 0.35)", False: ""}), axis=None),
        hide_index=True, width="stretch")
    st.caption(f"One row per class, from its most confident test images (top {audit.get('top_k', 'k')}). Red: the "
               f"value that raised the flag ({'; '.join(MARK_RULES.values())}), "
               f"read for classes with {MIN_TP} true positives or more.")
st.caption("TP/FP: true and false positives among the most confident test images of each class. Border band: the "
           f"outer 10 % of each side ({maps['border_area']:.0%} of the image). Lung field: the box x 10–90 %, "
           "y 10–85 %. Corner focus: the largest share of the map's mass in one corner cell of the feature grid, "
           "over that cell's share of the area (1 = even). Occlusion: how much the class probability falls when the "
           "border band, or a central box of the same area, is set to the image's median; the fixed place: a square a "
           "quarter of the side blanked at each of 7x7 places in turn (a marker anywhere, mid-field included, is one "
           "place that decides on most images).")

st.subheader("Internal vs external")
ext = pd.DataFrame(audit["external"])
if ext.empty:
    st.info(f"No external evaluation: add one on the **Results** page or with `python -m engine evaluate {run} --on ROOT`.")
else:
    tables.show(ext)
with st.expander("What the numbers mean, and their limits"):
    st.markdown(
        "- **Probe AUC** is cross-validated with patients kept within one fold; near 1 the features carry the source. "
        "That is common (collections differ in scanners and processing) and harmful only when the source also "
        "tells the label.\n"
        "- **Maps** are the study's CAM. A 7x7 grid (224 px) is the least that can place mass in a band 10 % wide; "
        "below it only the corner focus (3x3 and up) and the occlusion test are scored.\n"
        "- **Occlusion** blanks regions of the input; a model that needs the border to call a positive is reading "
        "something outside the lungs.\n"
        "- **Drops** need an external collection labelled for the run's classes; with few images the interval is wide "
        "and no drop is flagged unless the interval clears the internal AUC.\n"
        "- No finding is proof of no shortcut: the audit tests the shortcuts it knows.")
