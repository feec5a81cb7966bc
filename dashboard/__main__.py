"""`python dashboard` (from the repository root) or `python /path/to/repo/dashboard` (from anywhere):
start the dashboard with its safe settings whatever the working folder, since Streamlit reads
`.streamlit/config.toml` only from the folder it is started in. Extra arguments go to
`streamlit run` and win (e.g. `--server.port 8600`)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

APP = Path(__file__).resolve().parent / "app.py"
# the Host names a WebSocket may present (.streamlit/config.toml's list); Streamlit takes a list option
# as the flag repeated, once per element (one comma-joined string would be one name that matches nothing)
ALLOWED_HOSTS = ("localhost", "127.0.0.1", "[::1]", "::1")
SAFE = ["--server.address", "127.0.0.1", "--server.maxUploadSize", "50", "--server.enableXsrfProtection", "true",
        *[arg for host in ALLOWED_HOSTS for arg in ("--server.allowedHosts", host)],
        "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none", "--runner.postScriptGC", "false"]


def main(argv: list[str]) -> None:
    os.chdir(APP.parent.parent)  # the repository root: its .streamlit/config.toml applies too
    os.execv(sys.executable, [sys.executable, "-m", "streamlit", "run", str(APP), *SAFE, *argv])


if __name__ == "__main__":
    main(sys.argv[1:])
