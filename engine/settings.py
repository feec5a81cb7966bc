"""The user's saved settings: a small JSON file in the user's config folder that the dashboard writes
(the data roots typed in its sidebar) and the CLI reads too, so a root set once holds in every new
tab, after a reload and in the shell. Flags and environment variables still win over it.

Where: $CXR_CONFIG_DIR/settings.json, else $XDG_CONFIG_HOME/cxrlab/settings.json, else
~/.config/cxrlab/settings.json. Written atomically; an unreadable file counts as empty (and says so
in the log), never as an error.
"""
from __future__ import annotations

import json
import logging
import os
import stat
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)
ENV_CONFIG_DIR = "CXR_CONFIG_DIR"
# executor: engine.runs.cluster; collections: engine.data.collections (a JSON list); log_to: engine.tracking
KEYS = ("nih_root", "covid_root", "executor", "collections", "log_to")


def settings_path() -> Path:
    base = os.environ.get(ENV_CONFIG_DIR)
    if base:
        return Path(base) / "settings.json"
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return (Path(xdg) if xdg else Path.home() / ".config") / "cxrlab" / "settings.json"


MAX_BYTES = 64 * 1024  # two paths fit in far less; anything larger is not this file


def _read_bounded(path: Path) -> str:
    """The file's text if it is a regular file of at most MAX_BYTES; a FIFO, a device (a link to
    /dev/zero) or a huge file raises OSError before anything is read into memory or blocks."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"not a regular file (mode {stat.filemode(st.st_mode)})")
        data = os.read(fd, MAX_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:
        raise OSError(f"larger than {MAX_BYTES // 1024} KB")
    return data.decode("utf-8")


def load_settings() -> dict:
    path = settings_path()
    try:
        data = json.loads(_read_bounded(path))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: JSON nested thousands deep
        log.warning("ignoring unreadable settings file %s (%s)", path, str(exc)[:200])
        return {}
    return {k: v for k, v in data.items() if k in KEYS and isinstance(v, str)} if isinstance(data, dict) else {}


def saved(key: str) -> str:
    """A saved setting ("" when none)."""
    return load_settings().get(key, "")


def save_setting(key: str, value: str) -> Path:
    """Keep `value` under `key` ("" removes it); atomic. OSError (a read-only home) is the caller's."""
    if key not in KEYS:
        raise KeyError(f"unknown setting {key!r}; settings: {', '.join(KEYS)}")
    path = settings_path()
    data = load_settings()
    if value:
        data[key] = value
    else:
        data.pop(key, None)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="settings.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1)
    os.replace(tmp, path)
    return path
