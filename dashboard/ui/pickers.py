"""Widgets shared by pages: the run picker (remembers the run chosen on any page)."""
from __future__ import annotations

import streamlit as st

from dashboard import state


def runs_with_file(reg, *files: str) -> list[str]:
    """Names of runs whose folder holds any of `files` (newest first)."""
    return [r["name"] for r in reg.list() if any((reg.run_dir(r["name"]) / f).is_file() for f in files)]


def pick_run(names: list[str], key: str, label: str = "Run", container=st) -> str:
    """A run selectbox that starts on the run selected elsewhere in the app, and remembers the pick."""
    sel = st.session_state.get(state.SELECTED_RUN)
    run = container.selectbox(label, names, index=names.index(sel) if sel in names else 0, key=key)
    st.session_state[state.SELECTED_RUN] = run
    return run
