"""Fault and abuse suite: a planned kill in every phase, restarts, concurrent submissions, bad data,
bad requests, a full disk. Figures measured here are reported in docs/guarantees.md."""
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

from conftest import REPO, dashboard_app, wait_for, write_nih, xray_png
from engine.runs import Registry
from engine.runs.registry import observe

pytestmark = pytest.mark.slow
QUICK = ["--arch", "tiny", "--image-size", "64", "--load-size", "64", "--bootstrap", "10", "--num-workers", "0"]


def _consistent(reg: Registry, name: str) -> tuple[int, int]:
    """Epoch rows are exactly 1..e and step rows exactly 1..s, each once; returns (e, s)."""
    epochs = [e["epoch"] for e in reg.epochs(name)]
    steps = [s["step"] for s in reg.steps(name)]
    assert epochs == list(range(1, len(epochs) + 1)), epochs
    assert steps == list(range(1, len(steps) + 1)), steps
    return len(epochs), len(steps)


# One planned kill -9 per phase, in the order a run meets them, each in a fresh trainer process that
# continues the previous one (engine.faults: the trainer kills itself at PHASE:N, no sleep, no chance).
KILL_PLAN = ("startup", "step:2", "checkpoint:1", "validate:1", "final:1")


def test_a_planned_kill9_in_every_phase_loses_nothing(data_pack):
    """kill -9 at start-up, after a step, inside a checkpoint write, in validation and in the final
    evaluation: after each the registry is intact and the run `interrupted`, the last checkpoint loads,
    epoch and step rows are each there once; the next process resumes; the run ends with every step."""
    from engine.faults import ENV_KILL_AT, KILL_MESSAGE

    reg, name = Registry(), "killed"
    args = ["train", "--preset", "covid-scratch", "--covid-root", str(data_pack / "covid"), "--epochs", "2",
            "--max-images-per-split", "48", "--checkpoint-minutes", "0.0001", "--name", name, *QUICK]
    for kill_at in KILL_PLAN:
        env = {**os.environ, "OMP_NUM_THREADS": "1", ENV_KILL_AT: kill_at}
        out = subprocess.run([sys.executable, "-m", "engine", *args], cwd=REPO, env=env, capture_output=True, text=True,
                             timeout=300, start_new_session=True)
        assert out.returncode == -signal.SIGKILL, (kill_at, out.returncode, out.stderr[-2000:])
        assert f"{KILL_MESSAGE} {kill_at}" in out.stderr
        assert reg.integrity_ok()
        observe(reg)
        row = reg.get(name)
        assert row.status == "interrupted", (kill_at, row.status)
        last = reg.run_dir(name) / "last.pt"
        if kill_at != "startup":  # every later phase runs after a checkpoint (one per step here)
            ck = torch.load(last, weights_only=True)
            assert 0 <= ck["step"] <= 6 and ck["epoch"] <= 2
        if kill_at == "checkpoint:1":  # the torn write stays a temporary file; last.pt is the previous one
            assert [p for p in reg.run_dir(name).iterdir() if p.name.endswith(".tmp")]
        _consistent(reg, name)
        args = ["train", "--resume", name]
    out = subprocess.run([sys.executable, "-m", "engine", "train", "--resume", name], cwd=REPO, capture_output=True,
                         text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert reg.get(name).status == "succeeded"
    assert _consistent(reg, name) == (2, 6)  # 48 images / 16 = 3 steps x 2 epochs, each once
    assert not [p for p in reg.run_dir(name).iterdir() if p.name.endswith(".tmp")]


def test_a_fault_plan_with_an_unknown_phase_is_refused():
    from engine import faults

    for bad in ("lunch", "step:x", "step:-1"):
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(faults.ENV_KILL_AT, bad)
            with pytest.raises(ValueError, match="PHASE"):
                faults._plan(faults.ENV_KILL_AT)


def test_stale_heartbeat_marks_a_silent_run_interrupted():
    reg = Registry()
    reg.create("silent", {}, None)
    reg.transition("silent", "running", pid=os.getpid(), heartbeat=time.time() - 3600, started=time.time() - 3600)
    assert [r.status for r in observe(reg)] == ["interrupted"]
    assert "heartbeat" in reg.get("silent").error


def test_dashboard_restart_reattaches_to_a_running_run(data_pack):
    """Runs are processes recorded in the registry: a fresh dashboard process (AppTest) shows them,
    and its Cancel button stops the run gracefully."""
    from engine.runs.jobs import submit

    name = submit("covid-scratch",
                  {"covid_root": str(data_pack / "covid"), "arch": "tiny", "epochs": 1000, "image_size": 64,
                                    "load_size": 64, "max_images_per_split": 48, "num_workers": 0}, "long")
    reg = Registry()
    try:
        assert wait_for(lambda: reg.get(name).status == "running" and reg.get(name).pid)
        for _ in range(2):  # two dashboard "restarts"
            at = dashboard_app(timeout=120)
            at.switch_page("app_pages/train.py")
            at.run()
            assert not at.exception
            assert "running" in [m.value for m in at.metric]
        at.button(key=f"cancel.{name}").click().run()  # the Train page's button, as a user presses it
        assert not at.exception
        assert any(f"{name}: stopping" in t.value for t in at.toast)
        assert wait_for(lambda: reg.get(name).status == "cancelled", 120)
        assert (reg.run_dir(name) / "last.pt").is_file()
    finally:
        row = reg.get(name)
        if row.status == "running" and row.pid:
            os.killpg(row.pid, signal.SIGKILL)


def test_cancel_through_the_cli_with_loader_workers_is_graceful(data_pack, monkeypatch):
    """`engine cancel` mid-epoch of a queued run trained with the default loader workers: the run
    ends cancelled (not failed: the workers are not signalled), keeps last.pt, and resumes to the end."""
    from engine.config import DataConfig
    from engine.faults import ENV_PAUSE_AT, PAUSE_MESSAGE
    from engine.runs.jobs import resume, submit

    assert DataConfig().num_workers >= 2
    # the tiny model's steps are too quick to catch: the trainer holds after its 3rd step until the cancel
    monkeypatch.setenv(ENV_PAUSE_AT, "step:3")
    over = {"covid_root": str(data_pack / "covid"), "arch": "tiny", "epochs": 2, "image_size": 64, "load_size": 64,
            "max_images_per_split": 160, "bootstrap": 10, "checkpoint_minutes": 0}  # 10 steps an epoch
    name = submit("covid-scratch", over, "cli-cancel")
    reg = Registry()
    try:
        assert wait_for(lambda: PAUSE_MESSAGE in (reg.run_dir(name) / "process.log").read_text(), 240)
        out = subprocess.run([sys.executable, "-m", "engine", "cancel", name], cwd=REPO, capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        assert f"{name}: stopping" in out.stdout and f"{name}: cancelled" in out.stdout, out.stdout
        row = reg.get(name)
        assert row.status == "cancelled" and "cancelled from the command line" in row.error, row.error
        ck = torch.load(reg.run_dir(name) / "last.pt", weights_only=True)
        assert ck["step"] == row.step and ck["step_in_epoch"] > 0  # stopped mid-epoch, every step kept
        assert "killed by signal" not in (reg.run_dir(name) / "process.log").read_text()
        resume(name)
        assert wait_for(lambda: reg.get(name).status in ("succeeded", "failed"), 400)
        assert reg.get(name).status == "succeeded", reg.get(name).error
        assert _consistent(reg, name) == (2, 20)
    finally:
        row = reg.get(name)
        if row and row.status == "running" and row.pid:
            os.killpg(row.pid, signal.SIGKILL)


def test_ten_concurrent_submissions_queue_and_all_finish(data_pack):
    from engine.runs.jobs import submit

    overrides = {"covid_root": str(data_pack / "covid"), "arch": "tiny", "epochs": 1, "image_size": 64, "load_size": 64,
                 "max_images_per_split": 16, "num_workers": 0, "bootstrap": 10}
    names, errors = [], []

    def session(i):
        try:
            names.append(submit("covid-scratch", overrides, f"q{i}"))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=session, args=(i,)) for i in range(10)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors and len(names) == 10
    reg = Registry()
    assert wait_for(lambda: all(reg.get(n).status in ("succeeded", "failed", "cancelled") for n in names), 600)
    rows = [reg.get(n) for n in names]
    assert [r.status for r in rows] == ["succeeded"] * 10, [(r.name, r.error) for r in rows]
    spans = sorted((r.started, r.finished) for r in rows)
    assert all(a[1] <= b[0] + 0.5 for a, b in zip(spans, spans[1:])), "two runs overlapped (capacity is 1)"
    assert reg.integrity_ok()


def test_training_skips_and_counts_bad_files(tmp_path):
    rows = [(f"{100 + i:08d}_000.png", ["No Finding", "Mass", "Effusion"][i % 3], 100 + i) for i in range(30)]
    root = write_nih(tmp_path / "nih", rows, test=[r[0] for r in rows[-6:]])
    img = root / "images"
    (img / rows[0][0]).write_bytes(b"")                                           # zero bytes
    (img / rows[1][0]).write_text("just text")                                    # text named .png
    data = (img / rows[2][0]).read_bytes()
    (img / rows[2][0]).write_bytes(data[: len(data) // 3])                        # truncated
    xray_png(img / rows[3][0], mode="RGBA")                                       # RGBA: fine
    from PIL import Image
    import numpy as np
    Image.fromarray((np.arange(48 * 48).reshape(48, 48) * 20).astype(np.uint16)).save(img / rows[4][0])  # 16-bit
    Image.new("CMYK", (48, 48), (0, 0, 0, 128)).save(img / rows[5][0], format="JPEG")  # CMYK JPEG under .png
    from engine.cli import main

    assert main(["train", "--preset", "nih-densenet121-imagenet", "--init", "scratch", "--nih-root", str(root),
                 "--epochs", "1", "--name", "bad", "--val-fraction", "0.2", "--batch-size", "8", *QUICK]) == 0
    reg = Registry()
    epochs = reg.epochs("bad")
    skipped = sum(e["skipped_images"] for e in epochs)
    log = (reg.run_dir("bad") / "train.log").read_text()
    assert reg.get("bad").status == "succeeded" and skipped >= 1
    assert "skipped unreadable image" in log


def test_disk_full_during_checkpoint_fails_cleanly(data_pack, monkeypatch):
    """The disk fills while a checkpoint is half written: the previous one stays valid, no temp
    file is left, the run fails with the reason."""
    import engine.models.checkpoint as ck_mod
    from engine.cli import main

    real_save, calls = ck_mod.torch.save, {"n": 0}

    def filling_disk(obj, fh, *a, **k):
        calls["n"] += 1
        if calls["n"] > 2:  # epoch 1 writes best-candidate.pt and last.pt; then the disk is full
            fh.write(b"partial bytes")
            raise OSError(28, "No space left on device")
        return real_save(obj, fh, *a, **k)

    with monkeypatch.context() as m:
        m.setattr(ck_mod.torch, "save", filling_disk)
        rc = main(["train", "--preset", "covid-scratch", "--covid-root", str(data_pack / "covid"), "--epochs", "3",
                   "--max-images-per-split", "32", "--name", "full", *QUICK])
    reg = Registry()
    row = reg.get("full")
    assert rc == 2 and row.status == "failed" and "No space left" in row.error
    ck = torch.load(reg.run_dir("full") / "last.pt", weights_only=True)  # the previous checkpoint is intact
    assert ck["epoch"] == 1
    assert not [p for p in reg.run_dir("full").iterdir() if p.name.endswith(".tmp")]


def test_nothing_is_written_outside_checkpoints_for_hostile_names(data_pack, tmp_path):
    from engine.cli import main
    from engine.runs.jobs import submit
    from engine.runs import RunError

    before = set(os.listdir(tmp_path))
    for name in ("../escape", "/tmp/abs", "a/../../b", "..", "x" * 200):
        with pytest.raises(RunError):
            submit("covid-scratch", {"covid_root": str(data_pack / "covid")}, name)
        assert main(["train", "--preset", "covid-scratch", "--covid-root", str(data_pack / "covid"), "--name",
                     name]) == 2
    assert set(os.listdir(tmp_path)) - before <= {"checkpoints"}
    assert not os.path.exists("/tmp/abs")
