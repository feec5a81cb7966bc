"""A registry that cannot be written (issue 14: a full disk, runs.sqlite deleted under a running
trainer, a read-only checkpoints folder): training goes on, its end is never lost, reading works."""
from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import as_study_densenet, dashboard_app, run_cli, write_covid

from engine.runs import jobs
from engine.runs.registry import Registry, RegistryReadOnly, observe, rebuild_registry, unlisted_folders
from engine.runs.states import RunError

TINY = {"arch": "tiny", "epochs": 1, "image_size": 32, "load_size": 32, "num_workers": 0, "bootstrap": 10, "batch_size": 4,
        "checkpoint_minutes": 0}
WRITES = ("INSERT", "UPDATE", "DELETE", "BEGIN", "REPLACE")


@pytest.fixture
def disk(monkeypatch):
    """While disk["full"] is set, every SQLite write fails as on a full disk ("database or disk is full")."""
    state = {"full": False, "refused": 0}

    class FullDisk(sqlite3.Connection):
        def _check(self, sql):
            if state["full"] and sql.lstrip().split(None, 1)[0].upper() in WRITES:
                state["refused"] += 1
                raise sqlite3.OperationalError("database or disk is full")

        def execute(self, sql, *args):
            self._check(sql)
            return super().execute(sql, *args)

        def executemany(self, sql, *args):
            self._check(sql)
            return super().executemany(sql, *args)

    real = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: real(*a, factory=FullDisk, **k))
    return state


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


class AtStep:
    """A training callback doing `action` once, after the reporter has recorded step `step`."""

    def __init__(self, step: int, action):
        self.step, self.action, self.done = step, action, False

    def on_steps(self, rows):
        if not self.done and rows and rows[-1][0] >= self.step:
            self.done = True
            self.action()

    def on_start(self, info): ...
    def on_progress(self, progress): ...
    def on_epoch(self, record): ...
    def on_end(self, status, summary): ...


def test_a_full_disk_under_the_registry_never_stops_training_and_its_end_is_kept(tmp_path, disk, caplog,
                                                                                  monkeypatch):
    from engine.training import loop

    monkeypatch.setattr(loop, "FLUSH_S", 0.0)
    reg = Registry(tmp_path / "ck")
    name = jobs.submit("covid-scratch", {"covid_root": str(write_covid(tmp_path / "covid")), **TINY}, "full",
                       reg, claim=True)
    with caplog.at_level(logging.WARNING, logger="engine"):
        fill = AtStep(1, lambda: disk.update(full=True))
        assert jobs.work(name, reg, progress=fill) == "succeeded"  # before: the first refused write killed it
    assert disk["refused"] > 3
    warned = [r.getMessage() for r in caplog.records if "could not write" in r.getMessage()]
    assert len(warned) == 1 and "No space left on device" in warned[0] and "training goes on" in warned[0]  # said once
    outcome = reg.folder(name).read_outcome()
    assert outcome["status"] == "succeeded" and outcome["test_auc"] is not None
    row = reg.get(name)  # reads work on a full disk; the end could not be written
    assert row.status == "running"
    # the trainer has exited and space is freed: the next reader applies the end the trainer kept
    disk["full"] = False
    reg.update(name, pid=dead_pid())
    assert {r.name: r.status for r in observe(reg)}[name] == "succeeded"
    row = reg.get(name)
    assert row.status == "succeeded" and row.test_auc == pytest.approx(outcome["test_auc"])
    assert row.error is None


def test_a_failure_the_registry_cannot_record_keeps_its_reason(tmp_path, disk):
    from engine.runs.reporter import Reporter

    reg = Registry(tmp_path)
    reg.create("r", {}, None, status="running", pid=os.getpid())
    rep = Reporter(reg, "r")
    rep.on_start({"epoch": 0, "step": 0, "device": "cpu", "data_fingerprint": "x"})
    disk["full"] = True
    rep.on_exception(OSError(28, "No space left on device while writing /ck/r/last.pt"))  # before: raised, reason lost
    rep.close()
    assert reg.get("r").status == "running"
    disk["full"] = False
    reg.update("r", pid=dead_pid())
    observe(reg)
    row = reg.get("r")
    assert row.status == "failed" and "No space left on device while writing /ck/r/last.pt" in row.error
    # and a registry write on a full disk says so (not "unexpected pos" nor a raw OperationalError)
    disk["full"] = True
    with pytest.raises(RunError, match="No space left on device while writing the registry"):
        reg.update("r", heartbeat=1.0)


def test_deleting_the_registry_mid_run_keeps_the_run_and_finds_the_other_folders(trained_run, tmp_path, monkeypatch):
    import shutil

    from engine.training import loop

    monkeypatch.setattr(loop, "FLUSH_S", 0.0)
    ck = tmp_path / "ck"
    shutil.copytree(trained_run[0] / trained_run[1], ck / "tiny",
                    ignore=shutil.ignore_patterns("landscape", "external"))
    rebuild_registry(ck)
    monkeypatch.setenv("CXR_CHECKPOINTS", str(ck))
    reg = Registry(ck)
    name = jobs.submit("covid-scratch", {"covid_root": str(write_covid(tmp_path / "covid")), **TINY}, "second",
                       reg, claim=True)

    def delete():
        for suffix in ("", "-wal", "-shm"):
            (ck / f"runs.sqlite{suffix}").unlink(missing_ok=True)

    assert jobs.work(name, reg, progress=AtStep(1, delete)) == "succeeded"  # before: RegistryDamaged, no such table
    row = Registry(ck).get(name)
    assert row.status == "succeeded" and row.test_auc is not None and row.epochs_done == 1
    assert unlisted_folders(Registry(ck)) == ["tiny"]
    # the dashboard does not say "No runs yet": it shows the run and offers the lost folders back
    at = dashboard_app(timeout=120).run()
    assert not at.exception
    assert any("not in the registry" in w.value and "tiny" in w.value for w in at.warning)
    at.button(key="app.restore").click().run()
    assert any("1 run(s) restored" in s.value for s in at.success)
    rows = {r.name: r for r in Registry(ck).list()}
    assert rows["tiny"].status == "succeeded" and rows[name].status == "succeeded"
    assert unlisted_folders(Registry(ck)) == []
    out = run_cli("runs", "rebuild", "--missing")
    assert out.returncode == 0 and "0 run(s) restored" in out.stdout
    assert Registry(ck).get(name).epochs_done == 1  # the kept registry's rows are untouched


@pytest.fixture
def read_only(tmp_path):
    """A read-only bind mount of a folder: mount(src) -> the read-only path; unmounted afterwards."""
    mounted = []

    def mount(src: Path) -> Path:
        dst = tmp_path / f"ro{len(mounted)}"
        dst.mkdir()
        for cmd in (["mount", "--bind", str(src), str(dst)], ["mount", "-o", "remount,bind,ro", str(dst)]):
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode:
                if mounted or cmd[1] == "-o":
                    subprocess.run(["umount", str(dst)], capture_output=True)
                pytest.skip(f"cannot make a read-only mount here ({' '.join(cmd[:2])}: {out.stderr.strip()})")
        mounted.append(dst)
        return dst

    yield mount
    for dst in mounted:
        subprocess.run(["umount", str(dst)], capture_output=True)


def test_a_read_only_checkpoints_folder_is_browsed_and_writes_say_why(trained_run, tmp_path, monkeypatch, read_only):

    src = as_study_densenet(trained_run, tmp_path / "ck")  # `report` places it in the study's table by its arch
    ro = read_only(src)
    with pytest.raises(OSError):
        (ro / "probe").write_text("x")  # really read-only, even for root
    reg = Registry(ro)  # before: "attempt to write a readonly database" on opening
    assert reg.read_only == "a read-only file system"
    assert [r.name for r in reg.list()] == ["tiny"] and reg.get("tiny").status == "succeeded"
    assert reg.epochs("tiny") and [r.status for r in observe(reg)] == ["succeeded"]
    with pytest.raises(RegistryReadOnly, match="read-only .*a read-only file system.*CXR_CHECKPOINTS"):
        jobs.submit("covid-scratch", {"covid_root": str(write_covid(tmp_path / "covid")), **TINY}, "new", reg)
    with pytest.raises(RegistryReadOnly):
        reg.update("tiny", heartbeat=1.0)
    env = {"CXR_CHECKPOINTS": ro}
    for args in (["runs", "list"], ["runs", "show", "tiny"], ["report", "--run", "tiny"]):
        out = run_cli(*args, env=env)
        assert out.returncode == 0 and "Traceback" not in out.stderr, (args, out.stderr[-1500:])
        assert "tiny" in out.stdout
    out = run_cli("runs", "delete", "tiny", "--yes", env=env)
    assert out.returncode == 2 and "read-only" in out.stderr and "Traceback" not in out.stderr
    monkeypatch.setenv("CXR_CHECKPOINTS", str(ro))
    for page in ("overview", "results", "train", "heatmaps", "landscape", "audit", "diagnose", "study"):
        at = dashboard_app(timeout=180)
        at.run()
        if page != "overview":
            at.switch_page(f"app_pages/{page}.py").run()
        assert not at.exception, (page, at.exception)
        assert any("Read-only checkpoints folder" in i.value for i in at.info), page
    assert (src / "tiny" / "best.pt").is_file() and sorted(p.name for p in src.iterdir()) == sorted(
        p.name for p in ro.iterdir())
