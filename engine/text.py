"""Text for people, one way each: numbers and estimates with their intervals, sizes; and user text
shown as text: form values, file names, study files' labels and error messages are escaped before
they reach Markdown (a dashboard element, the study's study.md), so `![x](http://...)` or
`<img src=...>` is never rendered (or fetched) as an image or run as HTML."""
from __future__ import annotations

import math
import re

_SPECIAL = re.compile(r"([\\`*_\[\]<>!|~$])")


def md_escape(text) -> str:
    """Backslash-escape the characters that make Markdown links, images, emphasis, code, HTML and
    Streamlit's colour directives; the text then reads as typed."""
    return _SPECIAL.sub(r"\\\1", str(text))


def number(x, digits: int = 3, missing: str = "n/a") -> str:
    """A figure at `digits` decimals; None or a non-finite value as `missing`."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return missing
    return f"{x:.{digits}f}"


def estimate(value, low=None, high=None, digits: int = 3, missing: str = "n/a") -> str:
    """"0.812 [0.790, 0.833]": an estimate with its interval, the one way the CLI, the pages, the
    study report and the model card write one. No interval (either bound missing) gives the value
    alone; no value gives `missing`."""
    text = number(value, digits, missing)
    if value is None or low is None or high is None or text == missing:
        return text
    return f"{text} [{number(low, digits, missing)}, {number(high, digits, missing)}]"


def human_bytes(n: int | float | None) -> str:
    """'283 MB', '1.2 GB': decimal units, as disks are sold and `df -H` counts."""
    if n is None:
        return ""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}" if n < 10 * size else f"{n / size:.0f} {unit}"
    return f"{int(n)} B"
