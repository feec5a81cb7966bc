"""Writing the CSV tables the product hands out (predictions, external predictions, downloads):
atomically, and with spreadsheet formulas neutralised.

A text cell that begins with `=`, `+`, `-`, `@`, a tab or a carriage return is run as a formula by
Excel, LibreOffice and Google Sheets (`=HYPERLINK(...)` in a manifest's patient id would reach a
reviewer's spreadsheet). As OWASP's *CSV Injection* page recommends, such cells get a leading
apostrophe; numbers, and text that reads as a number ("-1.5"), stay as they are.
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _defuse(value):
    if isinstance(value, str) and value.startswith(FORMULA_START):
        try:
            float(value)
            return value  # "-1.5", "+3": a number written as text
        except ValueError:
            return "'" + value
    return value


def neutralise(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of `frame` whose text cells cannot run as spreadsheet formulas (numeric columns untouched)."""
    out = frame.copy()
    for col in out.columns:
        if not pd.api.types.is_numeric_dtype(out[col]) and not pd.api.types.is_bool_dtype(out[col]):
            out[col] = out[col].map(_defuse)
    out.columns = [_defuse(c) for c in out.columns]
    return out


def csv_text(frame: pd.DataFrame) -> str:
    """The frame as CSV text for a download, formulas neutralised."""
    return neutralise(frame).to_csv(index=False)


def write_csv(frame: pd.DataFrame, path) -> Path:
    """Write `frame` to `path` as CSV, formulas neutralised; atomically (a temporary file renamed)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    neutralise(frame).to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path
