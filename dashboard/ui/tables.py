"""Tables on the page: a missing value reads "—" (never "None"), numbers are rounded for reading.

Streamlit's grid draws a missing cell as "None" whatever a Styler or a column format says, so a
column with a missing value is shown as text ("0.812", "—"); a complete numeric column stays a
number (it sorts as one) with a format. `styled` gives the same frame as a Styler, for tables that
also colour cells.
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from engine.runs.tables import neutralise

MISSING = "—"


def safe(df: pd.DataFrame) -> pd.DataFrame:
    """The frame with text cells, column names and index labels that cannot run as spreadsheet formulas:
    every grid has Streamlit's own "Download as CSV", which writes what is shown (hostile round 4, S11)."""
    out = neutralise(df)
    if not pd.api.types.is_numeric_dtype(out.index):
        out.index = neutralise(out.index.to_frame(name="i"))["i"].to_numpy()
    return out


def _digits(df: pd.DataFrame, digits: int | dict[str, int]) -> dict[str, int]:
    if isinstance(digits, dict):
        return {c: d for c, d in digits.items() if c in df.columns}
    return {c: digits for c in df.columns if pd.api.types.is_float_dtype(df[c]) or (
        df[c].dtype == object and df[c].map(lambda v: isinstance(v, float)).any())}


def _text(v, d: int | None) -> str:
    if v is None or (not isinstance(v, (list, tuple, dict)) and pd.isna(v)):
        return MISSING
    if d is not None and isinstance(v, (int, float)) and not isinstance(v, bool):
        return f"{v:.{d}f}"
    return str(v)


def display(df: pd.DataFrame, digits: int | dict[str, int] = 3) -> tuple[pd.DataFrame, dict]:
    """(the frame as shown, column_config): columns with a missing value as text, complete numeric
    columns as numbers with a format."""
    df = safe(df)
    per = _digits(df, digits)
    out, config = df.copy(), {}
    for c in df.columns:
        if df[c].isna().any():
            out[c] = [_text(v, per.get(c)) for v in df[c]]
        elif c in per and pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]):
            config[c] = st.column_config.NumberColumn(format=f"%.{per[c]}f")
    return out, config


def styled(df: pd.DataFrame, digits: int | dict[str, int] = 3):
    """`display`'s frame as a Styler (for colouring cells), with the numbers' formats applied."""
    out, _ = display(df, digits)
    per = _digits(df, digits)
    return out.style.format({c: f"{{:.{d}f}}" for c, d in per.items() if pd.api.types.is_numeric_dtype(out[c])})


def show(df: pd.DataFrame, *, digits: int | dict[str, int] = 3, where=None, **kw):
    """st.dataframe of `df` as `display` shows it (hide_index and full width by default); a
    column_config given here wins over the formats."""
    out, config = display(df, digits)
    kw = {"hide_index": True, "width": "stretch", **kw, "column_config": {**config, **kw.get("column_config", {})}}
    return (where or st).dataframe(out, **kw)
