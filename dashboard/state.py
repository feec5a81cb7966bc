"""Session-state key names ("<page>.<thing>") and defaults, defined once."""
from __future__ import annotations

from engine.data.roots import default_root

NIH_ROOT = "data.nih_root"
COVID_ROOT = "data.covid_root"
SELECTED_RUN = "app.selected_run"
ROOT_KINDS = {NIH_ROOT: "nih", COVID_ROOT: "covid"}


def defaults() -> dict:
    """A new session's defaults: the data roots from the environment, else from the roots the user
    saved (engine.settings: they persist across tabs and reloads), read when the session starts."""
    return {NIH_ROOT: default_root("nih"), COVID_ROOT: default_root("covid"), SELECTED_RUN: None}


def set_root_next_run(session_state, key: str, value: str) -> None:
    """A root set by the page (a finished download) reaches the sidebar's field on the next run: a
    widget's value cannot change once the widget is drawn in this one."""
    session_state[f"{key}.pending"] = value


def init(session_state) -> None:
    """Defaults for a new session. An empty data root falls back to its default: a page opened from
    the sidebar before the first run had drawn the root fields came back with them empty."""
    for key in ROOT_KINDS:
        pending = session_state.pop(f"{key}.pending", None)
        if pending:
            session_state[key] = pending
    for key, value in defaults().items():
        session_state.setdefault(key, value)
        if key in ROOT_KINDS and value and not session_state[key]:
            session_state[key] = value
