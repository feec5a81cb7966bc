"""Every st.cache_* of the dashboard lives here: the bridge from Streamlit to the engine."""
from __future__ import annotations

import streamlit as st

from engine.data.summary import summarize_covid, summarize_nih


@st.cache_data(show_spinner="Reading dataset metadata…", max_entries=8)
def data_summary(nih_root: str, covid_root: str) -> dict:
    """Per-dataset counts; errors come back as {"error": message} so pages can show them."""
    out = {}
    for name, root, fn in (("nih", nih_root, summarize_nih), ("covid", covid_root, summarize_covid)):
        if not root:
            continue
        try:
            out[name] = fn(root)
        except (FileNotFoundError, ValueError) as exc:
            out[name] = {"error": str(exc)}
    return out
