"""Overview: datasets found, the compute device, and every run."""
import sys
import time

import pandas as pd
import streamlit as st

from dashboard.ui import tables
from dashboard import cache, guard, state
from engine.data.download import NIH_METADATA_FILES, NIH_PAGE, SIZES, DownloadError, covid_url, dataset_dir, download_covid
from engine.runs.folder import disk_bytes
from engine.text import human_bytes
from engine.runs.jobs import cancel, capacity_text, queue
from engine.settings import save_setting
from engine.study.names import study_keys, study_of
from engine.text import md_escape
from engine.runs.registry import RunError, observe, orphans, remove_orphan, restore_orphan
from engine.runs.states import ACTIVE

st.title("Chest X-ray transfer-learning lab")
st.caption("Reproducing *Transfer learning for COVID-19 detection* (ChestX-ray14 → COVID-19) with real data.")


def _compute_text() -> str:
    """The device line; torch loads in the background after the first page is drawn (app.py's
    warm-up), and until it has, the line says so rather than making the page wait for the import."""
    if "torch" not in sys.modules:
        return "detecting (loading PyTorch)…"
    from engine.devices import describe_device

    return describe_device()


@st.fragment(run_every=1.0)
def _compute_line() -> None:
    st.markdown(f"**Compute:** {_compute_text()}")


if "torch" in sys.modules:
    st.markdown(f"**Compute:** {_compute_text()}")
else:
    _compute_line()

def _download_covid() -> None:
    """Fetch the COVID-19 collection into the default data folder, with progress; a stop (a closed tab,
    another click) keeps the partial file, and the next click resumes it. The root then becomes the
    default of the dashboard and the CLI."""
    dest = dataset_dir("covid")
    bar = st.progress(0.0, text="connecting…")
    shown = [0.0]

    def progress(name: str, done: int, total: int) -> None:
        if time.monotonic() - shown[0] < 0.25 and done != total:
            return
        shown[0] = time.monotonic()
        bar.progress(min(done / total, 1.0) if total else 0.0,
                     text=f"{name}: {human_bytes(done)}" + (f" of {human_bytes(total)}" if total else " (size not sent)"))

    try:
        out = download_covid(dest, url=covid_url(), progress=progress)
    except (DownloadError, OSError) as exc:
        bar.empty()
        st.error(f"Not downloaded: {md_escape(exc)}")
        return
    bar.progress(1.0, text=f"{out['files_extracted']:,} files in {dest}")
    try:
        save_setting("covid_root", str(dest))
    except OSError as exc:
        st.warning(f"Downloaded, but the root could not be saved for later visits ({md_escape(exc)}).")
    state.set_root_next_run(st.session_state, state.COVID_ROOT, str(dest))
    st.session_state["overview.fetched"] = str(dest)
    st.rerun()


def _get_data(nih_root: str, covid_root: str) -> None:
    """What a newcomer without data sees: fetch the COVID-19 collection in one click, how to get
    ChestX-ray14, or where to type roots they already have."""
    st.markdown("**No data set up yet.** Type the folders you already have in the sidebar (they are saved for "
                "the next visit and the CLI), or fetch them here.")
    a, b = st.columns(2)
    with a:
        st.markdown("**COVID-19 image data collection** (Cohen et al.): enough for Table 2's COVID-19 vs not")
        st.caption(f"{SIZES['covid'][0].upper()}{SIZES['covid'][1:]}. From `{covid_url()}` into `{dataset_dir('covid')}`; "
                   "it becomes your COVID-19 root. Same as `python -m engine data download covid`.")
        if covid_root:
            st.caption(f"Set: `{covid_root}`.")
        elif guard.action("Download the COVID-19 collection", key="overview.get_covid", type="primary"):
            _download_covid()
    with b:
        st.markdown("**NIH ChestX-ray14**: Table 1 and the ChestX-ray14 start of Table 2")
        st.caption(f"{SIZES['nih'][0].upper()}{SIZES['nih'][1:]}. Too long for a page: run it in a terminal (it resumes "
                   "after a stop). The four metadata files (" + ", ".join(f"`{f}`" for f in NIH_METADATA_FILES)
                   + f") have no stable direct link: download them from {NIH_PAGE} into the same folder.")
        st.code(f"python -m engine data download nih --dest {dataset_dir('nih')}", language="bash", wrap_lines=True)


st.subheader("Datasets")
nih_root, covid_root = st.session_state[state.NIH_ROOT], st.session_state[state.COVID_ROOT]
fetched = st.session_state.pop("overview.fetched", None)
if fetched:
    st.success(f"The COVID-19 collection is in `{fetched}` and is now your COVID-19 root (saved for later visits "
               "and the CLI). Next: **Train** → preset `covid-scratch` or `covid-from-imagenet`, then **Results** "
               "and **Heatmaps** for its ROC curves and CAMs.")
if not nih_root or not covid_root:
    if not nih_root and not covid_root:
        _get_data(nih_root, covid_root)
    else:
        with st.expander("Get the other dataset"):
            _get_data(nih_root, covid_root)
if nih_root or covid_root:
    summary = cache.data_summary(nih_root, covid_root)
    cols = st.columns(2)
    for col, (name, title) in zip(cols, (("nih", "NIH ChestX-ray14"), ("covid", "COVID-19 collection"))):
        with col:
            st.markdown(f"**{title}**")
            s = summary.get(name)
            if s is None:
                st.caption("not set: type its root in the sidebar, or see how to get it above")
            elif "error" in s:
                st.error(s["error"])
            else:
                a = b = c = st.container(horizontal=True, gap="medium")  # wraps: no label or number cut (N11)
                a.metric("images present", f"{s['present']:,}", width="content")
                b.metric("missing files", f"{s['missing']:,}", width="content")
                c.metric("patients in 2 splits", s["patient_overlap"], width="content")
                labels = pd.DataFrame({"label": list(s["labels"]), "images": list(s["labels"].values())})
                cache.chart("label_counts_chart", labels, name=f"{name}_labels")
                tables.show(pd.DataFrame(s["splits"]).T.rename_axis("split").reset_index())
                dropped = {k.replace("_", " "): v for k, v in s["skipped"].items() if isinstance(v, int) and v}
                if dropped:
                    st.caption("Rows left out: " + ", ".join(f"{k} {v:,}" for k, v in dropped.items()))
                d = s.get("duplicates")
                if d and d["pairs"]:
                    st.warning(f"**{d['pairs']} pairs of images are the same film** under different names "
                               f"(perceptual hash within {d['max_distance']} bits); {d['pairs_across_splits_before']} "
                               f"pairs fell in two splits. {d['images_moved']} images were moved so that copies "
                               "share a split (patients linked by a copy count as one).")
                    with st.expander("The duplicate pairs"):
                        tables.show(pd.DataFrame(d["pairs_list"]))



@st.cache_data(show_spinner=False)
def _study_keys() -> frozenset:
    return frozenset(study_keys())


def _study_label(name: str) -> str | None:
    """The study a run belongs to ("study", "study repeat 2"), None for a run of its own."""
    found = study_of(name, set(_study_keys()))
    return None if found is None else found[0] + (f" repeat {found[1]}" if found[1] else "")


def _folded(df: pd.DataFrame) -> pd.DataFrame:
    """The runs table with each study's runs as one line: how many, their statuses, their time and disk."""
    own = df[df["study"].isna()].drop(columns=["study"])
    lines = []
    for study, g in df.dropna(subset=["study"]).groupby("study", sort=False):
        counts = g["status"].value_counts()
        lines.append({"run": f"{study} (study, {len(g)} runs)", "preset": "study", "init": None, "arch": None,
                      "status": ", ".join(f"{n} {s}" for s, n in counts.items()), "epochs": "",
                      "best val AUC": None, "test AUC": None, "duration (min)": g["duration (min)"].sum(min_count=1),
                      "created": g["created"].min(), "disk (MB)": g["disk (MB)"].sum()})
    return pd.concat([pd.DataFrame(lines, columns=own.columns), own], ignore_index=True) if lines else own


def _ray_link() -> str:
    """A link to Ray's own dashboard when runs are placed by a Ray cluster that has one."""
    from engine.runs.cluster import dashboard_url, executor
    url = dashboard_url() if executor() == "ray" else None
    return f" · [Ray dashboard]({url})" if url else ""


st.subheader("Runs")
reg = cache.registry()
runs = observe(reg)
waiting = queue(reg) if any(r.status in ACTIVE for r in runs) else []
if waiting:
    st.markdown(f"**Queue**: {sum(w['place'] == 'running' for w in waiting)} running, "
                f"{sum(w['place'] != 'running' for w in waiting)} queued ({capacity_text()})" + _ray_link())
    tables.show(pd.DataFrame(waiting).drop(columns=["created"]))
    q1, q2 = st.columns([3, 1])
    chosen = q1.multiselect("Cancel", [w["run"] for w in waiting], key="overview.cancel", placeholder="runs to cancel",
                            label_visibility="collapsed")
    if guard.action("Cancel the selected runs", key="overview.cancel_go", where=q2, disabled=not chosen,
                    help="a queued run is cancelled at once; a running one finishes its step and keeps its checkpoint "
                         "(resume it from the Train page or with `python -m engine resume RUN`)"):
        said = []
        for name in chosen:
            try:
                said.append(f"{name}: {cancel(name, reg, by='the dashboard (Overview queue)')}")
            except RunError as exc:
                said.append(f"{name}: {exc}")
        st.toast("; ".join(said))
        st.rerun()
    st.caption("The same list: `python -m engine runs queue`.")
if not runs:
    st.info("No runs yet. Start one on the **Train** page or with `python -m engine train --preset NAME`.")
else:
    now = time.time()
    df = pd.DataFrame([{
        "run": r.name, "preset": r.preset, "init": r.config.get("model", {}).get("init"),
        "arch": r.config.get("model", {}).get("arch"), "status": r.status,
        "epochs": f"{r.epochs_done}/{r.config.get('train', {}).get('epochs', '?')}",
        "best val AUC": r.best_val_auc, "test AUC": r.test_auc,
        "duration (min)": None if not r.started else round(((r.finished or now) - r.started) / 60, 1),
        "created": pd.to_datetime(r.created, unit="s").strftime("%Y-%m-%d %H:%M"),
        "disk (MB)": round(disk_bytes(reg.run_dir(r.name)) / 1e6, 1),
    } for r in runs])
    total_mb = df["disk (MB)"].sum()
    df["study"] = [_study_label(n) for n in df["run"]]
    studies = df["study"].dropna().value_counts()
    fold = bool(len(studies)) and st.toggle(
        "one line per study", value=True, key="overview.fold",
        help=f"the runs a study started ({', '.join(f'{k}: {v}' for k, v in studies.items())}) as one line each; "
             "the Study page has them cell by cell")
    shown = _folded(df) if fold else df.drop(columns=["study"])
    # the table's key changes when a run leaves it (deleted, archived) or the fold changes, so no stale row
    # selection outlives the row: the last row's index would be out of range, a middle one's would pick the next
    event = tables.show(shown, digits={"best val AUC": 3, "test AUC": 3, "duration (min)": 1, "disk (MB)": 1},
                        on_select="rerun", selection_mode="single-row",
                        key=f"overview.runs.{st.session_state.get('overview.table_version', 0)}.{fold}")
    st.caption(f"{len(df)} runs, {human_bytes(int(total_mb * 1e6))} on disk. A succeeded run keeps "
               "best.pt (weights); last.pt (the optimizer state) only when trained with keep-last.")
    rows = event.selection.rows if event is not None else []
    if rows and rows[0] < len(shown):
        chosen_row = shown.iloc[rows[0]]["run"]
        if chosen_row in set(df["run"]):
            st.session_state[state.SELECTED_RUN] = chosen_row
        else:
            st.caption(f"{chosen_row} is a study folded into one line: switch off *one line per study* to pick "
                       "one of its runs, or open the **Study** page.")
    picked = st.session_state.get(state.SELECTED_RUN)
    c1, c2, c3 = st.columns(3)
    c1.page_link("app_pages/train.py", label=f"Monitor {picked or 'a run'}", icon=":material/show_chart:")
    c2.page_link("app_pages/results.py", label="ROC curves and AUCs", icon=":material/monitoring:")
    c3.page_link("app_pages/diagnose.py", label="Diagnose an image", icon=":material/image_search:")
    if picked and picked in set(df["run"]):
        with st.expander(f"Disk: delete, archive or prune {picked}"):
            from engine.runs.manage import archive_run, delete_run, folder_size, prune_run

            folder = reg.folder(picked)
            st.caption(f"{folder.path} holds {human_bytes(folder_size(folder.path))}: "
                       + (", ".join(folder.checkpoints()) or "no checkpoint"))
            a, b, c = st.columns(3)
            sure = a.checkbox("I want to delete it", key="overview.delete_sure")
            try:
                if guard.action("Delete run", key="overview.delete", where=a, disabled=not sure):
                    out = delete_run(reg, picked)
                    st.session_state[state.SELECTED_RUN] = None
                    st.session_state["overview.table_version"] = st.session_state.get("overview.table_version", 0) + 1
                    st.toast(f"Deleted {picked} ({human_bytes(out['freed_bytes'])} freed)")
                    st.rerun()
                dest = b.text_input("Archive folder", key="overview.archive_to", placeholder="/data/cxr-archive")
                if guard.action("Archive run", key="overview.archive", where=b, disabled=not dest.strip()):
                    out = archive_run(reg, picked, dest.strip())
                    st.session_state[state.SELECTED_RUN] = None
                    st.session_state["overview.table_version"] = st.session_state.get("overview.table_version", 0) + 1
                    st.toast(f"Archived {picked} to {out['archived_to']}")
                    st.rerun()
                c.caption("Prune keeps best.pt (evaluation, maps, transfer) and drops last.pt: the run can no longer "
                          "be trained further.")
                if guard.action("Prune checkpoints", key="overview.prune", where=c):
                    out = prune_run(reg, picked)
                    c.success(f"Removed {', '.join(out['removed']) or 'nothing'} "
                              f"({human_bytes(out['freed_bytes'])})")
            except (RunError, OSError) as exc:
                st.error(str(exc))

_orphans = orphans(reg)
if _orphans:
    total = sum(o["bytes"] for o in _orphans)
    with st.expander(f"Moved-aside folders: {len(_orphans)} in {reg.root / '.orphans'} ({human_bytes(total)})"):
        st.caption("A new run that found a folder already in its place moved that folder here instead of adopting "
                   "it. Restore one as a run (from its checkpoint, as `runs rebuild` does) or remove it; "
                   "`python -m engine runs orphans` does the same.")
        tables.show(pd.DataFrame([{"folder": o["name"], "found as run": o["run"],
                                   "checkpoint": "yes" if o["has_checkpoint"] else "no",
                                   "size (MB)": round(o["bytes"] / 1e6, 1)} for o in _orphans]), digits=1)
        which = st.selectbox("Folder", [o["name"] for o in _orphans], key="overview.orphan")
        o1, o2 = st.columns(2)
        as_name = o1.text_input("Restore as run", key="overview.orphan_as", placeholder="its own name")
        try:
            if guard.action("Restore as a run", key="overview.orphan_restore", where=o1):
                out = restore_orphan(reg, which, as_name.strip() or None)
                st.toast(f"{which} restored as {out['run']} ({out['status']})")
                st.rerun()
            if guard.action("Remove it", key="overview.orphan_remove", where=o2):
                st.toast(f"Removed {which} ({human_bytes(remove_orphan(reg, which))} freed)")
                st.rerun()
        except (RunError, OSError, ValueError) as exc:
            st.error(str(exc))
