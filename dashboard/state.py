"""Session-state key names ("<page>.<thing>") and defaults, defined once."""
from __future__ import annotations

import os

from engine.constants import ENV_COVID_ROOT, ENV_NIH_ROOT

NIH_ROOT = "data.nih_root"
COVID_ROOT = "data.covid_root"
SELECTED_RUN = "app.selected_run"

DEFAULTS = {
    NIH_ROOT: os.environ.get(ENV_NIH_ROOT, ""),
    COVID_ROOT: os.environ.get(ENV_COVID_ROOT, ""),
    SELECTED_RUN: None,
}


def init(session_state) -> None:
    """Defaults for a new session. An empty data root falls back to its environment variable: a page
    opened from the sidebar before the first run had drawn the root fields came back with them empty."""
    for key, value in DEFAULTS.items():
        session_state.setdefault(key, value)
        if key in (NIH_ROOT, COVID_ROOT) and value and not session_state[key]:
            session_state[key] = value
