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
    for key, value in DEFAULTS.items():
        session_state.setdefault(key, value)
