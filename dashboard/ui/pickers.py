"""Widgets shared by pages: the run picker (remembers the run chosen on any page)."""
from __future__ import annotations

import streamlit as st

from dashboard import state
from engine.runs.states import ACTIVE


def runs_with_checkpoint(reg) -> list[str]:
    """Names of runs with a model to use (best.pt or last.pt), newest first."""
    return [r.name for r in reg.list() if reg.folder(r.name).has_checkpoint()]


def runs_with_metrics(reg) -> list[str]:
    """Names of evaluated runs (metrics.json), newest first."""
    return [r.name for r in reg.list() if reg.folder(r.name).metrics_path.is_file()]


def runs_with_predictions(reg, split: str) -> list[str]:
    """Names of runs with per-image predictions of `split`, newest first."""
    return [r.name for r in reg.list() if reg.folder(r.name).predictions(split).is_file()]


def pick_run(names: list[str], key: str, label: str = "Run", container=st, reg=None) -> str:
    """A run selectbox that starts on the run selected elsewhere in the app, and remembers the pick.
    With `reg`, a run still training is marked as such in the list, is never the default pick when a
    finished one exists, and is said when picked (its checkpoint is its best epoch so far)."""
    status = {r.name: r.status for r in reg.list()} if reg is not None else {}
    sel = st.session_state.get(state.SELECTED_RUN)
    if sel not in names:
        sel = next((n for n in names if status.get(n, "succeeded") not in ACTIVE), names[0])
    run = container.selectbox(label, names, index=names.index(sel), key=key,
                              format_func=lambda n: f"{n} (still training)" if status.get(n) == "running" else n)
    st.session_state[state.SELECTED_RUN] = run
    if status.get(run) == "running":
        st.caption(f"{run} is still training: this page uses its best checkpoint so far, which changes as it "
                   "trains.")
    return run
