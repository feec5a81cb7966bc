"""Who may drive the dashboard. It starts training processes and reads files under the data roots,
and has no login: by default only this machine may use it, however it was started.

Streamlit reads `.streamlit/config.toml` from the folder it is started in only; started elsewhere it
listens on every interface with a 200 MB upload limit and no Host allow-list. So the app itself:
- refuses every session whose client is not on this machine, unless CXR_DASHBOARD_REMOTE=1 (set it
  only behind an authenticating proxy; see docs/guarantees.md);
- applies the upload limit and the Host allow-list when the configuration did not;
- can require a token for every action that changes anything (CXR_DASHBOARD_TOKEN), for machines
  where other local web apps could reach the dashboard's WebSocket. Every such button is made by
  `action`, and tests/test_guard.py fails for a button that changes state without it.
"""
from __future__ import annotations

import hmac
import ipaddress
import os

import streamlit as st
from streamlit import config

LOCAL_HOSTS = ["localhost", "127.0.0.1", "[::1]", "::1"]
MAX_UPLOAD_MB = 50
ENV_REMOTE, ENV_TOKEN = "CXR_DASHBOARD_REMOTE", "CXR_DASHBOARD_TOKEN"
TOKEN_KEY = "guard.token"


def enforce_local_settings() -> None:
    """The upload limit and Host allow-list of .streamlit/config.toml, when it was not read (and its
    serving setting: no full garbage collection after every page run)."""
    if config.get_option("runner.postScriptGC"):
        config.set_option("runner.postScriptGC", False)
    if config.get_option("server.maxUploadSize") > MAX_UPLOAD_MB and os.environ.get(ENV_REMOTE) != "1":
        config.set_option("server.maxUploadSize", MAX_UPLOAD_MB)
    if not config.get_option("server.allowedHosts") and os.environ.get(ENV_REMOTE) != "1":
        config.set_option("server.allowedHosts", LOCAL_HOSTS)


def is_local(ip: str | None) -> bool:
    if not isinstance(ip, str) or not ip:
        return True  # no client address: bare mode or AppTest (where it is a mock object)
    try:
        addr = ipaddress.ip_address(ip.split("%")[0])
    except ValueError:
        return False
    mapped = getattr(addr, "ipv4_mapped", None)  # "::ffff:127.0.0.1" on a dual-stack listener
    return (mapped or addr).is_loopback


def host_name(host: str) -> str:
    """The name of a Host header, without its port ("[::1]:8501" -> "[::1]", "localhost:8501" -> "localhost")."""
    host = host.strip().lower()
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def refuse_foreign_hosts() -> None:
    """Render nothing for a request whose Host is not on the allow-list, on every run of every session.
    Streamlit checks the list at the WebSocket only once it is set, which a plain `streamlit run`
    started elsewhere does not do before the app's first run: a page that rebinds its DNS name to
    127.0.0.1 would get that first session (DNS rebinding)."""
    host = (getattr(st.context, "headers", None) or {}).get("Host")
    if not isinstance(host, str) or not host:
        return  # AppTest and bare mode have no request
    allowed = [h.lower() for h in (config.get_option("server.allowedHosts") or [])]
    if not allowed:
        if os.environ.get(ENV_REMOTE) == "1":
            return  # behind a proxy whose name the administrator did not list
        allowed = LOCAL_HOSTS
    if host_name(host) not in allowed:
        st.error(f"This dashboard does not answer to the name {host_name(host)!r}: open it as http://localhost or "
                 "http://127.0.0.1, or add the name to server.allowedHosts (docs/guarantees.md).")
        st.stop()


def refuse_remote_clients() -> None:
    if os.environ.get(ENV_REMOTE) == "1":
        return
    ip = getattr(st.context, "ip_address", None)
    if not is_local(ip):
        st.error(f"This dashboard only serves this machine; your address {ip} is refused. To share it, put it "
                 f"behind an authenticating proxy and set {ENV_REMOTE}=1 (docs/guarantees.md: Serving the dashboard to a team).")
        st.stop()


def token_field() -> None:
    """The sidebar's token field, shown only when CXR_DASHBOARD_TOKEN is set."""
    if os.environ.get(ENV_TOKEN):
        st.text_input("Dashboard token", type="password", key=TOKEN_KEY,
                      help=f"needed for every action that changes something (start, cancel, delete, evaluate ...); "
                           f"set by {ENV_TOKEN} where the dashboard was started")


def token_ok() -> bool:
    """True when no token is required or the sidebar's token matches; says nothing."""
    expected = os.environ.get(ENV_TOKEN)
    typed = st.session_state.get(TOKEN_KEY) or ""
    return not expected or hmac.compare_digest(typed.encode(), expected.encode())


def authorised(what: str = "this action") -> bool:
    """True when no token is required, or the sidebar's token matches; otherwise says why not."""
    if token_ok():
        return True
    st.error(f"Not done: {what} needs the dashboard token (sidebar). Every action that changes something does.")
    return False


def action(label: str, *, key: str | None = None, where=None, form: bool = False, **kwargs) -> bool:
    """The one button for anything that changes state (starts, stops, deletes, writes): True only when
    it was pressed and the session is authorised. `where` is a container (st, a column, the sidebar);
    form=True makes the form's submit button."""
    where = where if where is not None else st
    make = where.form_submit_button if form else where.button
    pressed = make(label, key=key, **kwargs) if key is not None else make(label, **kwargs)
    return bool(pressed) and authorised(f"“{label}”")
