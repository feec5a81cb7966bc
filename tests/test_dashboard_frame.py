from conftest import REPO, dashboard_app


def test_overview_renders_dataset_counts_from_the_pack(data_pack):
    at = dashboard_app(timeout=120)
    at.session_state["data.nih_root"] = str(data_pack / "nih")
    at.session_state["data.covid_root"] = str(data_pack / "covid")
    at.run()
    assert not at.exception
    assert [m.value for m in at.metric][:2] == ["658", "111,462"]


def test_overview_reports_a_bad_root_without_crashing(tmp_path):
    at = dashboard_app(timeout=120)
    at.session_state["data.nih_root"] = str(tmp_path / "nope")
    at.run()
    assert not at.exception
    assert any("does not exist" in e.value for e in at.error)


def test_the_first_page_imports_nothing_heavy():
    """The Overview (first page of a fresh server) reads metadata and the registry without torch:
    torch loads in the background after the first page is drawn."""
    import subprocess
    import sys

    code = ("import sys\nimport dashboard.cache, dashboard.state, engine\n"
            "from engine.data.summary import summarize_covid, summarize_nih\n"
            "from engine.runs import Registry\nengine.PRESETS, engine.RunError\n"
            "print('torch' in sys.modules, 'sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False False"
    page = (REPO / "dashboard" / "app_pages" / "overview.py").read_text()
    assert "from engine import describe_device" not in page  # a lazy name imports torch when imported


def test_a_pool_worker_importing_the_app_as_its_main_module_draws_nothing():
    """Issue 37, N16: forkserver workers of a pool the dashboard starts (the duplicate check's image
    hashes) import app.py as __mp_main__. It must not run the app there: it printed dozens of "missing
    ScriptRunContext" lines per root typed, and ran every page's imports in every worker."""
    import subprocess
    import sys

    code = ("import runpy, sys\n"
            "runpy.run_path('dashboard/app.py', run_name='__mp_main__')\n"
            "print('imported')")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ScriptRunContext" not in out.stderr and "ScriptRunContext" not in out.stdout, out.stderr[-2000:]
    assert out.stdout.strip().endswith("imported")
    # run as the main module (how Streamlit runs it, bare here), the same file does draw: the guard is real
    out = subprocess.run([sys.executable, "-c", code.replace("__mp_main__", "__main__")], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert "ScriptRunContext" in out.stderr + out.stdout, (out.stdout + out.stderr)[-2000:]
