"""Widgets shared by pages: the run picker (remembers the run chosen on any page)."""
from __future__ import annotations

import streamlit as st

from dashboard import state


def runs_with_checkpoint(reg) -> list[str]:
    """Names of runs with a model to use (best.pt or last.pt), newest first."""
    return [r.name for r in reg.list() if reg.folder(r.name).has_checkpoint()]


def runs_with_metrics(reg) -> list[str]:
    """Names of evaluated runs (metrics.json), newest first."""
    return [r.name for r in reg.list() if reg.folder(r.name).metrics_path.is_file()]


def runs_with_predictions(reg, split: str) -> list[str]:
    """Names of runs with per-image predictions of `split`, newest first."""
    return [r.name for r in reg.list() if reg.folder(r.name).predictions(split).is_file()]


def pick_run(names: list[str], key: str, label: str = "Run", container=st) -> str:
    """A run selectbox that starts on the run selected elsewhere in the app, and remembers the pick."""
    sel = st.session_state.get(state.SELECTED_RUN)
    run = container.selectbox(label, names, index=names.index(sel) if sel in names else 0, key=key)
    st.session_state[state.SELECTED_RUN] = run
    return run
