"""The study's scale files and the names of the runs it starts, without importing the study's machinery
(the Overview folds a study's runs into one line on its first draw)."""
from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

SCALES_DIR = Path(__file__).resolve().parent / "scales"
SCALES = ("pack", "full")


def study_keys() -> set[str]:
    """The experiment keys of the study's own scale files (pack, full)."""
    keys = set()
    for scale in SCALES:
        with contextlib.suppress(OSError, ValueError):
            keys |= {e["key"] for e in json.loads((SCALES_DIR / f"{scale}.json").read_text())["experiments"]}
    return keys


def study_of(name: str, keys: set[str]) -> tuple[str, int] | None:
    """(prefix, repeat) of a run named by a study (run_name: `prefix-[rR-]key`, a learning-curve row
    `...-fNN`, a held-out origin's `...-out-ORIGIN`), None for any other run."""
    for key in sorted(keys, key=len, reverse=True):
        m = re.fullmatch(rf"(?P<p>.+?)-(?:r(?P<r>\d+)-)?{re.escape(key)}(?:-f\d+|-out-.+)?", name)
        if m:
            return m["p"], int(m["r"] or 0)
    return None
