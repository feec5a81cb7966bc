"""One place lists everything queued or running with its place and a cancel (issue 23): the CLI's
`runs queue` and the Overview's Queue, which share engine.runs.jobs.queue."""
import json
import os
import time

from conftest import dashboard_app, run_cli
from engine.runs import Registry
from engine.runs.jobs import queue

CONFIG = {"data": {"task": "covid", "image_size": 64}, "model": {"arch": "densenet121", "init": "scratch"},
          "train": {"epochs": 1}}


def _runs(reg: Registry) -> None:
    """A running run, two free queued runs and a child waiting for its parent (the running one)."""
    for name in ("busy", "first", "second"):
        reg.create(name, CONFIG, "covid-scratch")
        time.sleep(0.01)
    reg.create("child", {**CONFIG, "model": {**CONFIG["model"], "init": "busy"}}, "covid-from-nih", depends_on="busy")
    reg.transition("busy", "running", pid=os.getpid(), heartbeat=time.time(), started=time.time())


def test_the_queue_lists_running_first_then_places_and_who_waits_for_a_parent(tmp_path):
    reg = Registry(tmp_path / "checkpoints")
    _runs(reg)
    rows = {r["run"]: r for r in queue(reg)}
    assert [r["run"] for r in queue(reg)][0] == "busy" and rows["busy"]["place"] == "running"
    assert rows["first"]["place"] == "1" and rows["first"]["state"] == "next to start"
    assert rows["second"]["place"] == "2" and rows["second"]["state"] == "1 queued ahead"
    assert rows["child"]["place"] == "waiting" and "busy" in rows["child"]["state"]
    assert rows["child"]["init"] == "busy"


def test_runs_queue_on_the_command_line(tmp_path):
    ck = tmp_path / "checkpoints"
    _runs(Registry(ck))
    env = {"CXR_CHECKPOINTS": ck}
    out = run_cli("runs", "queue", env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[1].split()[:2] == ["running", "busy"] and lines[2].split()[:2] == ["1", "first"]
    rows = json.loads(run_cli("runs", "queue", "--json", env=env).stdout)
    assert [r["place"] for r in rows] == ["running", "1", "2", "waiting"]


def test_resume_on_the_command_line_says_the_new_status(tmp_path):
    """`engine resume RUN` crashed after queueing the run (it read the registry row as a dict)."""
    ck = tmp_path / "checkpoints"
    reg = Registry(ck)
    _runs(reg)  # "busy" holds the one slot (this process is its trainer), so the resumed run waits
    reg.create("stopped", CONFIG, "covid-scratch")
    reg.transition("stopped", "running", pid=os.getpid(), heartbeat=time.time())
    reg.transition("stopped", "cancelled", finished=time.time())
    out = run_cli("resume", "stopped", env={"CXR_CHECKPOINTS": ck, "CXR_MAX_RUNNING": "1"})
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    assert out.stdout.strip() == "stopped: queued"


def test_the_overview_shows_the_queue_and_cancels_the_runs_picked(tmp_path, monkeypatch):
    reg = Registry()
    _runs(reg)
    at = dashboard_app("overview").run()
    assert not at.exception, at.exception
    table = next(df.value for df in at.dataframe if "place" in df.value.columns)
    assert list(table["run"]) == ["busy", "first", "second", "child"]
    at.multiselect(key="overview.cancel").set_value(["second", "child"]).run()
    at.button(key="overview.cancel_go").click().run()
    assert not at.exception, at.exception
    assert reg.get("second").status == "cancelled" and reg.get("child").status == "cancelled"
    assert "the dashboard (Overview queue)" in reg.get("second").error
    assert reg.get("first").status == "queued"


def test_trainers_side_by_side_on_the_cpu_share_the_cores_out(tmp_path, monkeypatch):
    """CXR_MAX_RUNNING=N on a CPU: each trainer is started with OMP_NUM_THREADS = cores // N, so N
    trainers do not each take every core; one at a time, or a user's own OMP_NUM_THREADS, is left alone."""
    from engine.runs import jobs, launch
    from engine.runs.folder import RunDir

    monkeypatch.setattr(jobs.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    seen = []

    class Proc:
        pid = 12345

    def popen(cmd, env, **kw):
        seen.append(env.get("OMP_NUM_THREADS"))
        return Proc()

    monkeypatch.setattr(launch.subprocess, "Popen", popen)
    folder = RunDir(tmp_path / "checkpoints" / "r")
    monkeypatch.setenv("CXR_MAX_RUNNING", "1")
    jobs._spawn(folder)
    monkeypatch.setenv("CXR_MAX_RUNNING", "2")
    jobs._spawn(folder)
    jobs._spawn(folder, gpu="0")  # a GPU trainer: its CPU threads feed the loader, left alone
    monkeypatch.setenv("CXR_MAX_RUNNING", "8")
    jobs._spawn(folder)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    jobs._spawn(folder)
    assert seen == [None, "2", None, "1", "3"]
