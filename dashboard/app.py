"""The dashboard frame: navigation between pages and the shared sidebar.

Start it from the repository root: `python -m streamlit run dashboard/app.py`.
"""
from __future__ import annotations

import importlib
import sys
import os
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `streamlit run dashboard/app.py` without -m
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from dashboard import guard, state  # noqa: E402
from engine.text import md_escape  # noqa: E402
from engine.runs.registry import Registry, RegistryDamaged, RunError, rebuild_registry, unlisted  # noqa: E402
from engine.data.roots import typed_folder  # noqa: E402
from engine.settings import save_setting  # noqa: E402


@st.cache_resource(show_spinner=False)
def _icon():
    """The page icon, drawn here (two lungs on the theme's blue): a ":material/...:" icon would make
    every browser fetch it from fonts.gstatic.com, which fails offline."""
    from PIL import Image, ImageDraw

    img = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    d.rounded_rectangle((0, 0, 63, 63), radius=14, fill=(79, 195, 247, 255))
    d.ellipse((10, 12, 30, 54), fill=(255, 255, 255, 255))
    d.ellipse((34, 12, 54, 54), fill=(255, 255, 255, 255))
    d.rectangle((30, 6, 34, 30), fill=(255, 255, 255, 255))
    return img


def _save_root(key: str) -> None:
    """Keep a root the user typed (a folder, or cleared) for every new tab and the CLI. With a token set,
    a session without it keeps the root for itself only: settings.json is shared by every tab and the
    CLI, so changing it is an action like any other (hostile round 4, S5)."""
    value = (st.session_state.get(key) or "").strip()
    if value:
        try:  # saved absolute: the CLI run from another folder reads the same folder
            value = str(typed_folder(value))
        except OSError as exc:  # ~nosuchuser, a file, an unreadable folder: said, nothing saved
            st.session_state[f"{key}.unsaved"] = str(exc)
            return
        st.session_state[key] = value
    st.session_state.pop(f"{key}.unsaved", None)
    if not guard.token_ok():
        st.session_state[f"{key}.unsaved"] = ("used in this tab only; saving a root for every tab and the CLI "
                                              "needs the dashboard token (sidebar)")
        return
    try:
        save_setting(f"{state.ROOT_KINDS[key]}_root", value)
    except OSError as exc:
        st.session_state[f"{key}.unsaved"] = f"{value} ({exc.strerror or exc})"  # a read-only home


def _save_executor() -> None:
    """Where queued runs start: this machine's queue, or the Ray cluster at RAY_ADDRESS (saved like a root)."""
    value = st.session_state.get("app.executor") or "local"
    if not guard.token_ok():
        st.session_state["app.executor.unsaved"] = "changing it needs the dashboard token (sidebar)"
        return
    st.session_state.pop("app.executor.unsaved", None)
    try:
        save_setting("executor", value)
    except OSError as exc:
        st.session_state["app.executor.unsaved"] = str(exc.strerror or exc)


@st.cache_resource(show_spinner=False)
def _warm_up() -> threading.Thread:
    """Once per server process, after the first page is drawn: import the model and metrics stacks
    (torch, torchvision, scikit-learn; seconds on a cold start) and the study's modules in the
    background, so the first visit to Results, Study, Heatmaps, Landscape or Diagnose does not wait
    for them."""
    def work():
        for module in ("torch", "engine.explain.inference", "engine.metrics", "engine.explain.cam",
                       "engine.study.graph", "engine.study.results", "engine.trust.report"):
            try:
                importlib.import_module(module)
            except Exception:  # the page that needs it reports the error
                pass

    thread = threading.Thread(target=work, name="cxr-warm-up", daemon=True)
    thread.start()
    return thread


def _registry_or_stop() -> None:
    """A damaged runs.sqlite is said plainly on every page, with the way back, never as a traceback."""
    try:
        reg = Registry()
        unlisted_runs, problems = unlisted(reg)
    except RegistryDamaged as exc:
        st.error(str(exc))
        if guard.action("Rebuild the registry from the run folders", type="primary", key="app.rebuild"):
            out = rebuild_registry()
            st.success(f"{len(out['restored'])} run(s) restored; moved aside and kept: "
                       f"{', '.join(out['moved_aside']) or '—'}.")
            st.button("Continue", key="app.rebuilt")
        st.stop()
    except RunError as exc:  # e.g. a checkpoints folder that cannot be created
        st.error(str(exc))
        st.stop()
    if reg.read_only:
        st.info(f"Read-only checkpoints folder ({reg.read_only}): runs can be browsed; starting, resuming, "
                "cancelling, deleting and evaluating are off.", icon=":material/lock:")
    if unlisted_runs:
        shown = ", ".join(unlisted_runs[:6]) + (" ..." if len(unlisted_runs) > 6 else "")
        st.warning(f"{len(unlisted_runs)} run folder(s) in `{reg.root}` are not in the registry (was runs.sqlite deleted "
                   f"or replaced?): {shown}. Their checkpoints and metrics are intact.")
        if not reg.read_only and guard.action("Restore them to the registry", key="app.restore"):
            out = rebuild_registry(missing_only=True)
            st.success(f"{len(out['restored'])} run(s) restored" + (
                f"; not restorable: {', '.join(out['skipped'])}" if out["skipped"] else "."))
            st.button("Continue", key="app.restored")
    for name, why in problems.items():
        st.caption(f"The folder `{name}` in `{reg.root}` is not a run the registry can restore: {why}.")


def _sidebar() -> None:
    with st.sidebar:
        st.caption("Data roots (flags of the CLI: --nih-root / --covid-root; saved for new tabs and the CLI)")
        for key, label, example in ((state.NIH_ROOT, "NIH ChestX-ray14 root", "/data/nih"),
                                    (state.COVID_ROOT, "COVID-19 collection root", "/data/covid")):
            st.text_input(label, key=key, placeholder=example, on_change=_save_root, args=(key,))
            if st.session_state.get(f"{key}.unsaved"):
                st.caption(f"Not saved: {md_escape(st.session_state[f'{key}.unsaved'])}.")
        from engine.runs.cluster import ENV_EXECUTOR, EXECUTORS, executor
        if os.environ.get(ENV_EXECUTOR):
            st.caption(f"Runs start on: {executor()} ({ENV_EXECUTOR} where the dashboard was started)")
        else:
            st.session_state.setdefault("app.executor", executor())
            st.selectbox("Runs start on", EXECUTORS, key="app.executor", on_change=_save_executor,
                         format_func=lambda e: {"local": "this machine's queue", "ray": "a Ray cluster (RAY_ADDRESS)"}[e],
                         help="ray: every queued run is placed by the Ray cluster at RAY_ADDRESS (docs/cluster.md)")
            if st.session_state.get("app.executor.unsaved"):
                st.caption(f"Not saved: {st.session_state['app.executor.unsaved']}.")
        guard.token_field()


def main() -> None:
    """One run of the dashboard script: the page config and its guards, navigation, the sidebar, then the page."""
    st.set_page_config(page_title="CXR transfer-learning lab", page_icon=_icon(), layout="wide")
    guard.enforce_local_settings()
    guard.refuse_foreign_hosts()
    guard.refuse_remote_clients()
    state.init(st.session_state)

    nav = st.navigation({
        "Lab": [
            st.Page("app_pages/overview.py", title="Overview", icon=":material/home:", default=True),
            st.Page("app_pages/train.py", title="Train", icon=":material/model_training:"),
            st.Page("app_pages/study.py", title="Study", icon=":material/table_chart:"),
            st.Page("app_pages/results.py", title="Results", icon=":material/monitoring:"),
            st.Page("app_pages/audit.py", title="Audit", icon=":material/policy:"),
            st.Page("app_pages/heatmaps.py", title="Heatmaps", icon=":material/local_fire_department:"),
            st.Page("app_pages/landscape.py", title="Landscape", icon=":material/scatter_plot:"),
            st.Page("app_pages/diagnose.py", title="Diagnose", icon=":material/image_search:"),
            st.Page("app_pages/your_data.py", title="Your data", icon=":material/folder_open:"),
        ],
    })
    _sidebar()
    _registry_or_stop()
    nav.run()
    _warm_up()


# Streamlit runs this file as __main__. A worker process of a pool the dashboard starts (forkserver:
# the image hashes of the duplicate check) imports it as __mp_main__: it must draw nothing (it printed
# dozens of "missing ScriptRunContext" lines to the console and ran the whole app per worker; issue 37, N16).
if __name__ == "__main__":
    main()
