"""Study: the paper's tables filled live from the study's runs, one button to start or continue
it, and every comparison with its difference, interval and p-value in plain words."""
import pandas as pd
import streamlit as st

from dashboard.ui import tables
from dashboard import guard, cache, state
from engine.runs.details import fmt_eta
from engine.runs.launch import machine
from engine.study.results import study_caption
from engine.study.spec import cost_text
from engine.text import estimate, md_escape
from engine import RunError, validate_name

st.title("Study")
st.caption("The study's experiments as one graph: Table 1 (ChestX-ray14), Table 2 (COVID-19 vs not, three "
           "initialisations), the 15-class task of section 5.3 and the study's future work (viral vs bacterial "
           "pneumonia), then a learning curve and each origin of the COVID-19 collection held out in turn. Each is "
           "a run of the queue, children waiting for their parent.")
c1 = c2 = c3 = st.container(horizontal=True, vertical_alignment="bottom", gap="large")  # wraps, never squeezed (N11)
choice = c1.radio("Scale", ["pack", "full", "a study file"], horizontal=True, key="study.scale", width="content",
                  help="pack: the shared data pack on a CPU (its measured cost is shown below); full: the study's "
                       "settings; or your own copy of engine/study/scales/pack.json, edited")
prefix = c2.text_input("Run names start with", value="study", key="study.prefix", width=220)
scale = choice
if choice == "a study file":
    scale = st.text_input("Study file (JSON)", key="study.file", placeholder="/path/to/my-study.json")
    if not scale:
        st.info("Give the path of a study file: a copy of engine/study/scales/pack.json with your settings.")
        st.stop()
covid_root = st.session_state[state.COVID_ROOT] or ""
try:
    spec, changes = cache.study_spec(scale, covid_root)
except ValueError as exc:  # SpecError: the file and what is wrong with it
    st.error(str(exc))
    st.stop()
if "study.repeats" not in st.session_state:  # a reload, a new tab: the repeats the registry holds (issue 37, N8)
    from engine.study.graph import known_repeats

    st.session_state["study.repeats"] = known_repeats(spec, prefix, cache.registry())
repeats = c3.number_input("Repeats", 1, 50, key="study.repeats", width=140,
                          help="run every experiment K times: repeat r moves the training seed and the split seed by r "
                               "(the COVID-19 patient split and ChestX-ray14's train/val are redrawn; the official test "
                               "list stays). The tables then show each AUC's spread and each comparison's test across "
                               "repeats. Held-out origins run once.")
st.caption(spec.description)
if cost_text(spec, int(repeats), machine()):
    st.caption(f"Cost: {cost_text(spec, int(repeats), machine())}.")
if changes:
    with st.expander(f"{len(changes)} settings differ from the study's"):
        st.text("\n".join(changes))

b1, b2 = st.columns([1, 1])
if guard.action("Stop the study", key="study.stop", where=b2,
                help="cancel its queued and running runs: running ones finish their step and keep their checkpoint; "
                     "Start or continue resumes them"):
    from engine.study.graph import stop, stop_summary

    stopped = stop(spec, prefix, cache.registry(), by="the dashboard (Study page)")
    st.info(stop_summary(stopped, spec, prefix, cache.registry()), icon=":material/stop_circle:")
if guard.action("Start or continue the study", type="primary", key="study.start", where=b1):
    from engine.data.roots import DataRootError
    from engine.study.graph import plan

    roots = {"nih": st.session_state[state.NIH_ROOT], "covid": st.session_state[state.COVID_ROOT]}
    try:
        validate_name(f"{prefix}-x")
        with st.spinner("Checking the data, the ImageNet weights and the runs already there…"):
            cells = plan(spec, prefix, cache.registry(), roots, submit=True, repeats=int(repeats))
    except DataRootError as exc:
        which = "NIH ChestX-ray14 root" if exc.kind == "nih" else "COVID-19 collection root"
        st.error(f"Not started: set the {which} in the sidebar ({exc}).")
    except (RunError, ValueError, OSError) as exc:
        st.error(f"Not started: {exc}")
    else:
        st.success(f"The study is under way: {sum(c.state == 'finished' for c in cells)} of {len(cells)} "
                   "experiments finished, the others queued, waiting or reported below.")

TABLES = ("Table 1", "Table 2", "Section 5.3", "Future work")


def _state_text(row: dict, live: dict) -> str:
    run = live.get(row["name"])
    prog = (run.progress if run else None) or {}
    if row["state"] == "running" and prog:
        eta = prog.get("run_eta_s") or prog.get("eta_s")
        return (f"running: epoch {prog['epoch']}/{prog['epochs']}, {prog['phase']} {prog['step']}/{prog['steps']}"
                + (f", about {fmt_eta(eta)} left" if eta else ""))
    return row["text"]


def _spread(row: dict) -> str:
    sp = row.get("repeats")
    if not sp or not sp["n"]:
        return "—"
    text = f"{sp['mean']:.3f}"
    return text + (f" ± {sp['sd']:.3f} ({sp['min']:.2f}–{sp['max']:.2f}, {sp['n']} of {len(sp['values'])})"
                   if sp["sd"] is not None else f" (1 of {len(sp['values'])})")


def _ours(row: dict) -> str:
    return estimate(row["ours"], row["low"], row["high"], missing="—")


def _per_class(lines: list[dict]) -> pd.DataFrame:
    keys = [k for k in lines[0] if k != "class" and not k.endswith(" CI")]
    return pd.DataFrame([{"class": x["class"], **{k: _ci(x.get(k), x.get(k + " CI")) for k in keys}} for x in lines])


def _ci(auc, ci) -> str:
    return estimate(auc, *(ci or (None, None)), missing="—")


def _curves(results: dict) -> None:
    curves = results["learning_curves"]
    if not curves:
        return
    from engine.study.results import curve_frames

    st.subheader("Learning curve")
    st.caption("Each arm trained on a share of its training patients (drawn per label group, nested: 25 % lies "
               "inside 50 %), tested on the same test split. A curve still rising at 100 % says more data would help.")
    points, dots = curve_frames(curves)
    if points["auc"].notna().any():
        cache.chart("learning_curve_chart", points, dots, name=f"{prefix}_learning_curve")
    else:  # an empty frame of axes says nothing (issue 37, N12)
        st.caption("The curve is drawn once its first run has finished and been tested.")
    st.table(pd.DataFrame([{"arm": c["label"], "training patients": f"{p['fraction']:.0%}",
                            "training images": "—" if p["train_images"] is None else f"{p['train_images']:,}",
                            "test AUC (95% CI)": _ci(p["auc"], [p["low"], p["high"]]),
                            **({"over repeats": _spread({"repeats": p["repeats"]})} if results["repeats"] > 1 else {}),
                            "run": p["run"], "state": p["state"]} for c in curves for p in c["points"]]))


def _held_out(results: dict) -> None:
    rows = results["held_out"]
    for note in results.get("notes", []):
        st.info(note)
    if not rows:
        return
    st.subheader("Leave one source out")
    st.caption("Internal-external validation: for each origin of the COVID-19 collection with enough images of both "
               "labels, the model is trained without it and tested on it alone. An AUC far below the internal one says "
               "the model learnt where an image came from more than what it shows. Each runs once (its split is the "
               "origin).")
    st.table(pd.DataFrame([{"held-out origin": r["origin"],
                            "test images (positive / negative)": "—" if r["positives"] is None
                            else f"{r['positives'] + r['negatives']} ({r['positives']} / {r['negatives']})",
                            "AUC on it (95% CI)": _ci(r["auc"], [r["low"], r["high"]]),
                            "internal test AUC": _ci(r["internal_auc"], [r["internal_low"], r["internal_high"]]),
                            "state": r["text"], "run": r["run"]} for r in rows]))


@st.fragment(run_every=3.0)
def _live() -> None:
    results = cache.study_results(scale, covid_root, prefix)
    live = {r.name: r for r in cache.registry().list()}
    for table in TABLES:
        rows = [r for r in results["cells"] if r["table"] == table]
        st.subheader(table)
        st.table(pd.DataFrame([{  # a static table: long states wrap instead of pushing the numbers off screen
            "experiment": r["label"], "class": r["class"], "ours (95% CI)": _ours(r),
            **({f"over {results['repeats']} repeats (mean ± sd, range)": _spread(r)} if results["repeats"] > 1 else {}),
            "published": "—" if r["published"] is None else f"{r['published']:.2f}",
            "state": _state_text(r, live), "run": r["name"]} for r in rows]).set_index("experiment"))
        done = [r["name"] for r in rows if r["state"] == "finished"]
        if done:
            cols = st.columns(min(len(done), 4))
            for k, name in enumerate(done):
                if cols[k % len(cols)].button(f"Open {name} in Results", key=f"study.open.{name}"):
                    st.session_state[state.SELECTED_RUN] = name
                    st.switch_page("app_pages/results.py")
        if table == "Table 1" and any(r["state"] == "finished" for r in rows):
            with st.expander("Table 1 per class (test AUC), the study's DenseNet-121 beside ours"):
                t1 = pd.DataFrame(results["table1"])
                tables.show(t1[[c for c in t1.columns if not c.endswith(" CI")]])
        for r in rows:
            if r.get("collection_only"):
                st.caption(f"{r['label']}: its COVID-19 AUC mixes two collections; "
                           f"{r['collection_only']['text']}. Table 2's comparison is the collection-only number.")
        if table == "Future work" and results["future_work"]:
            with st.expander("Per class (test AUC [95% CI]): COVID-19, other viral, bacterial, fungal, no finding",
                             expanded=True):
                tables.show(_per_class(results["future_work"]))
    _curves(results)
    _held_out(results)
    figure = pd.DataFrame([{k: r[k] for k in ("table", "label", "class", "ours", "low", "high", "published")}
                           for r in results["cells"]])
    dots = pd.DataFrame([{"table": r["table"], "label": r["label"], "class": r["class"], "repeat": k, "auc": v}
                         for r in results["cells"] for k, v in enumerate((r.get("repeats") or {}).get("values", []))
                         if v is not None], columns=["table", "label", "class", "repeat", "auc"])
    if not figure.empty:
        with st.expander("The tables as figures, one per table (PNG, SVG; screen or paper)"
                         + (": every repeat a dot" if len(dots) else "")):
            for table, cells in figure.groupby("table", sort=False):
                cache.chart("study_chart", cells, dots[dots["table"] == table],
                            name=f"{prefix}_{choice.replace(' ', '_')}_{table.replace(' ', '_')}",
                            title=f"{table}: ours beside the published value",
                            caption=study_caption(results, table))
    st.subheader("Comparisons")
    st.caption("A minus B on the same test images: difference of AUCs [95% paired patient-bootstrap interval], "
               "p from DeLong's test for correlated ROC curves (one class) or the bootstrap (mean over classes).")
    for c in results["comparisons"]:
        note = f" ({c['images_note']})" if c.get("images_note") else ""
        st.markdown(f"- **{md_escape(c['what'])}**: {md_escape(c['verdict'] + note)}"
                    + (f"  \n  across repeats: {md_escape(c['across_repeats']['text'])}" if c.get("across_repeats") else ""))
    if results.get("repeat_note"):
        st.caption(results["repeat_note"] + " Repeat 0 (the study's own split) fills the intervals and p-values above.")


_live()
