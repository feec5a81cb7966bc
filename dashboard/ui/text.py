"""User text shown as text: form values, file names and error messages are escaped before they
reach a Markdown element, so `![x](http://...)` is never rendered (or fetched) as an image."""
from __future__ import annotations

import re

_SPECIAL = re.compile(r"([\\`*_\[\]<>!|~$])")


def md_escape(text) -> str:
    """Backslash-escape the characters that make Markdown links, images, emphasis, code, HTML and
    Streamlit's colour directives; the text then reads as typed."""
    return _SPECIAL.sub(r"\\\1", str(text))
