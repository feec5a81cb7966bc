"""User text shown as text: form values, file names, study files' labels and error messages are
escaped before they reach Markdown (a dashboard element, the study's study.md), so
`![x](http://...)` or `<img src=...>` is never rendered (or fetched) as an image or run as HTML."""
from __future__ import annotations

import re

_SPECIAL = re.compile(r"([\\`*_\[\]<>!|~$])")


def md_escape(text) -> str:
    """Backslash-escape the characters that make Markdown links, images, emphasis, code, HTML and
    Streamlit's colour directives; the text then reads as typed."""
    return _SPECIAL.sub(r"\\\1", str(text))
