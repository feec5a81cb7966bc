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

from conftest import CHROMIUM_ARGS, REPO, dashboard_app, free_port, serve_dashboard

CHROMIUM = "/usr/bin/chromium"


def _ws_status(port: int, host: str) -> int:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/_stcore/stream", headers={
        "Host": host, "Upgrade": "websocket", "Connection": "Upgrade", "Origin": f"http://{host}",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(), "Sec-WebSocket-Version": "13"})
    return c.getresponse().status


def _outside_ip() -> str | None:
    """An address of this machine that is not loopback (None when it has none)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
        ip = s.getsockname()[0]
    except OSError:
        return None
    finally:
        s.close()
    return None if ip.startswith("127.") else ip


def _start(cmd, cwd, port, tmp_path):
    env = {**os.environ, "CXR_CHECKPOINTS": str(tmp_path / "ck")}
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


def test_the_launcher_binds_localhost_from_any_folder(tmp_path):
    port = free_port()
    proc = _start([sys.executable, str(REPO / "dashboard")], tmp_path, port, tmp_path)  # started from elsewhere
    try:
        outside = _outside_ip()
        if outside:
            with pytest.raises(OSError):
                socket.create_connection((outside, port), timeout=3).close()
        assert _ws_status(port, "evil.example") == 403
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} not installed")
def test_started_elsewhere_without_config_it_still_refuses_remote_clients(tmp_path):
    """`streamlit run /abs/app.py` from another folder reads no config and listens everywhere: the app
    itself refuses a client that is not on this machine, and then applies the Host allow-list."""
    from playwright.sync_api import expect, sync_playwright

    outside = _outside_ip()
    if outside is None:
        pytest.skip("this machine has no non-loopback address to come from")
    port = free_port()
    proc = _start([sys.executable, "-m", "streamlit", "run", str(REPO / "dashboard" / "app.py")], tmp_path, port,
                  tmp_path)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            expect(page.get_by_text("Chest X-ray transfer-learning lab")).to_be_visible(timeout=60_000)
            # the first session set the Host allow-list the config would have set: the outside name is refused
            # at the WebSocket; were it not, the app's own check refuses the client's address
            page.goto(f"http://{outside}:{port}/")
            page.wait_for_timeout(8000)
            text = page.inner_text("body")
            assert "Chest X-ray transfer-learning lab" not in text and "Start training" not in text
            browser.close()
        assert _ws_status(port, f"{outside}:{port}") == 403 and _ws_status(port, "evil.example") == 403
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


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
