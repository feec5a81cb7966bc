"""Who can drive the dashboard: a DNS-rebinding Host is refused, the safe settings hold when it is
started from another folder, remote clients are refused, and a token can guard starting runs."""
import base64
import http.client
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import CHROMIUM_ARGS, REPO, dashboard_app, free_port, ms, serve_dashboard, stop_process_group

CHROMIUM = "/usr/bin/chromium"


def _ws_status(port: int, host: str) -> int:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/_stcore/stream", headers={
        "Host": host, "Upgrade": "websocket", "Connection": "Upgrade", "Origin": f"http://{host}",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(), "Sec-WebSocket-Version": "13"})
    return c.getresponse().status


def _start(cmd, cwd, port, tmp_path, **extra):
    env = {**os.environ, "CXR_CHECKPOINTS": str(tmp_path / "ck"), **extra}
    proc = subprocess.Popen(cmd + ["--server.port", str(port), "--server.headless", "true"], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    for _ in range(120):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1)
            return proc
        except OSError:
            time.sleep(0.5)
    os.killpg(proc.pid, 15)
    pytest.fail("dashboard did not start")


def test_a_dns_rebinding_host_cannot_open_the_websocket(tmp_path):
    with serve_dashboard(tmp_path, {"CXR_CHECKPOINTS": str(tmp_path / "ck")}) as url:
        port = int(url.rsplit(":", 1)[1])
        assert _ws_status(port, "evil.example:" + str(port)) == 403
        assert _ws_status(port, f"localhost:{port}") == 101 and _ws_status(port, f"127.0.0.1:{port}") == 101


def _listening_addresses(port: int) -> set[str]:
    """The local addresses a TCP socket listens on at port, read from /proc/net/tcp{,6} (no traffic)."""
    out = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.split(":")
            if state == "0A" and int(p, 16) == port:  # LISTEN
                raw = bytes.fromhex(addr)
                if width == 8:
                    out.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
                else:
                    out.add(socket.inet_ntop(socket.AF_INET6, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))))
    return out


def test_the_launcher_binds_localhost_from_any_folder(tmp_path):
    port = free_port()
    proc = _start([sys.executable, str(REPO / "dashboard")], tmp_path, port, tmp_path)  # started from elsewhere
    try:
        listening = _listening_addresses(port)
        assert listening and listening <= {"127.0.0.1", "::1"}, listening  # never 0.0.0.0 or ::
        assert _ws_status(port, "evil.example") == 403
        for host in ("localhost", "127.0.0.1"):  # each allowed name opens the WebSocket (issue 36, S2)
            assert _ws_status(port, f"{host}:{port}") == 101, host
    finally:
        stop_process_group(proc)


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} not installed")
def test_the_launchers_page_loads_in_chromium_from_another_folder(tmp_path):
    """`python /repo/dashboard` from another folder: the page a user opens draws the app (its WebSocket
    is accepted), on localhost and on 127.0.0.1."""
    from playwright.sync_api import expect, sync_playwright

    port = free_port()
    proc = _start([sys.executable, str(REPO / "dashboard")], tmp_path, port, tmp_path)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page()
            for host in ("localhost", "127.0.0.1"):
                page.goto(f"http://{host}:{port}/")
                expect(page.get_by_text("Chest X-ray transfer-learning lab")).to_be_visible(timeout=ms(60))
            browser.close()
    finally:
        stop_process_group(proc)


def test_the_app_folder_carries_the_same_config():
    """`streamlit run /abs/dashboard/app.py` reads dashboard/.streamlit/config.toml, wherever it is
    started: it must say exactly what the project's .streamlit/config.toml says (issue 36, S14)."""
    assert (REPO / "dashboard" / ".streamlit" / "config.toml").read_bytes() == \
        (REPO / ".streamlit" / "config.toml").read_bytes()


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} not installed")
def test_a_plain_streamlit_run_from_elsewhere_keeps_its_guarantees(tmp_path):
    """`streamlit run /abs/app.py` from another folder, with an empty home: the app's own config is read,
    so the server binds loopback, refuses a foreign Host from its very first session (DNS rebinding),
    and the browser contacts nothing but the dashboard: no usage statistics (issue 36, S14). Chromium
    resolves evil.example to 127.0.0.1 and every other name to nothing: every packet stays on loopback."""
    from playwright.sync_api import expect, sync_playwright

    port = free_port()
    proc = _start([sys.executable, "-m", "streamlit", "run", str(REPO / "dashboard" / "app.py")], tmp_path, port,
                  tmp_path, HOME=str(tmp_path))  # no ~/.streamlit either
    try:
        assert _ws_status(port, "evil.example") == 403 and _ws_status(port, f"10.9.8.7:{port}") == 403
        listening = _listening_addresses(port)
        assert listening and listening <= {"127.0.0.1", "::1"}, listening
        asked = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                        args=CHROMIUM_ARGS + ["--host-resolver-rules=MAP evil.example 127.0.0.1, "
                                                              "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"])
            page = browser.new_page()
            page.on("request", lambda r: asked.append(r.url))
            page.goto(f"http://evil.example:{port}/")
            page.wait_for_timeout(3000)
            assert "Chest X-ray transfer-learning lab" not in page.inner_text("body")
            page.goto(f"http://127.0.0.1:{port}/")
            expect(page.get_by_text("Chest X-ray transfer-learning lab")).to_be_visible(timeout=ms(60))
            page.wait_for_timeout(3000)  # the frontend asks for usage statistics, if ever, right after drawing
            browser.close()
        from urllib.parse import urlsplit

        hosts = {urlsplit(u).hostname for u in asked if not u.startswith(("data:", "blob:"))}
        assert hosts <= {"127.0.0.1", "evil.example"}, sorted(hosts)
    finally:
        stop_process_group(proc)


def test_host_names_are_read_without_their_port():
    from dashboard.guard import host_name

    assert host_name("localhost:8501") == "localhost" and host_name("[::1]:8501") == "[::1]"
    assert host_name("EVIL.example") == "evil.example" and host_name("127.0.0.1") == "127.0.0.1"


def test_a_token_guards_starting_runs(data_pack, monkeypatch):
    from engine.runs import Registry

    monkeypatch.setenv("CXR_DASHBOARD_TOKEN", "s3cret")
    at = dashboard_app(timeout=120)
    at.session_state["data.covid_root"] = str(data_pack / "covid")
    at.switch_page("app_pages/train.py")
    at.run()
    at.selectbox(key="train.preset").set_value("covid-scratch").run()
    at.text_input(key="train.name").input("guarded")
    at.button[0].click().run()
    assert any("needs the dashboard token" in e.value for e in at.error)
    assert Registry().get("guarded") is None
    at.text_input(key="guard.token").input("wrong")
    at.button[0].click().run()
    assert Registry().get("guarded") is None
    at.text_input(key="guard.token").input("s3cret")
    at.text_input(key="train.f.epochs").input("1")
    at.button[0].click().run()
    row = Registry().get("guarded")
    assert row is not None
    from engine.runs.jobs import cancel

    if row.status in ("queued", "running"):
        cancel("guarded", Registry())


def test_local_addresses():
    from dashboard.guard import is_local

    assert is_local("127.0.0.1") and is_local("::1") and is_local("::ffff:127.0.0.1") and is_local(None)
    assert not is_local("192.0.2.2") and not is_local("::ffff:192.0.2.2") and not is_local("garbage")


def test_the_app_refuses_a_remote_address_itself(monkeypatch):
    """The second line of defence, for a Host allow-list widened by a proxy's name."""
    import dashboard.guard as guard

    monkeypatch.setattr(guard, "is_local", lambda ip: False)
    at = dashboard_app(timeout=60).run()
    assert any("only serves this machine" in e.value for e in at.error)
    assert not at.button and not at.text_input


# Buttons that change nothing: they open, pick, show or fill a form field.
NON_STATE_CHANGING = {"Details", "Continue", "Use init = scratch instead", "Open {name} in Results",
                      "Use arch = {exc.arch} instead", "Train again with these settings", "Compare",
                      "Is this one of {run}'s own films?"}  # reads the run's images; writes only the hash cache


def test_every_state_changing_button_goes_through_the_one_guard():
    """A button made with st.button / form_submit_button directly (not guard.action) must be one that
    changes nothing; anything else bypasses the token. Downloads only read."""
    import ast

    bypass = []
    for path in sorted((REPO / "dashboard").rglob("*.py")):
        if path.name == "guard.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in ("button", "form_submit_button"):
                label = node.args[0] if node.args else None
                text = (label.value if isinstance(label, ast.Constant) else
                        ast.unparse(label)[2:-1] if isinstance(label, ast.JoinedStr) else ast.unparse(label))
                if text not in NON_STATE_CHANGING:
                    bypass.append(f"{path.relative_to(REPO)}:{node.lineno} {text!r}")
    assert not bypass, bypass
    guarded = sum(p.read_text().count("guard.action(") for p in (REPO / "dashboard").rglob("*.py"))
    assert guarded >= 14  # start, cancel, resume, start queued, study, evaluate, delete, archive, prune, ...


def test_a_token_guards_deleting_a_run_on_the_overview(tmp_path, monkeypatch):
    from engine.runs import Registry

    reg = Registry()
    reg.create("keep-me", {}, None)
    reg.transition("keep-me", "cancelled", finished=time.time())
    monkeypatch.setenv("CXR_DASHBOARD_TOKEN", "s3cret")
    at = dashboard_app("overview", run="keep-me", timeout=120).run()
    at.checkbox(key="overview.delete_sure").check().run()
    at.button(key="overview.delete").click().run()
    assert not at.exception, at.exception
    assert any("needs the dashboard token" in e.value for e in at.error)
    assert Registry().get("keep-me") is not None and Registry().run_dir("keep-me").is_dir()
    at.text_input(key="guard.token").input("s3cret").run()
    at.button(key="overview.delete").click().run()
    assert not at.exception, at.exception
    assert Registry().get("keep-me") is None
