"""Tables on the page: a missing value reads "—" (never "None"), numbers are rounded for reading and
still sort as numbers (a pandas Styler carries the display text; the values underneath stay)."""
from __future__ import annotations

import pandas as pd
import streamlit as st

MISSING = "—"


def styled(df: pd.DataFrame, digits: int | dict[str, int] = 3):
    """`df` with floats shown to `digits` places (or per column) and missing values as "—"."""
    per = digits if isinstance(digits, dict) else {
        c: digits for c in df.columns if pd.api.types.is_float_dtype(df[c]) or (
            df[c].dtype == object and df[c].map(lambda v: isinstance(v, float)).any())}
    fmt = {c: (lambda v, d=d: MISSING if v is None or pd.isna(v) else
               f"{v:.{d}f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v))
           for c, d in per.items() if c in df.columns}
    return df.style.format(na_rep=MISSING).format(fmt, na_rep=MISSING)


def show(df: pd.DataFrame, *, digits: int | dict[str, int] = 3, where=None, **kw):
    """st.dataframe of `df` as `styled` shows it (hide_index and full width by default)."""
    kw = {"hide_index": True, "width": "stretch", **kw}
    return (where or st).dataframe(styled(df, digits), **kw)
