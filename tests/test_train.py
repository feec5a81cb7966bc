"""Real training on the shared pack, on the CPU, at 64 px: runs, resume after kill -9, DDP."""
import json
import os
import signal
import subprocess
import sys

import pandas as pd
import pytest
import torch

from conftest import REPO, wait_for
from engine.cli import main
from engine.runs import Registry
from engine.runs.registry import observe

pytestmark = pytest.mark.slow

QUICK = ["--arch", "tiny", "--image-size", "64", "--load-size", "64", "--max-images-per-split", "48", "--bootstrap", "50",
         "--num-workers", "0"]


def covid_args(data_pack, name, epochs=2, preset="covid-scratch"):
    return ["train", "--preset", preset, "--covid-root", str(data_pack / "covid"), "--epochs", str(epochs),
            "--name", name, *QUICK]


def test_covid_scratch_run_on_the_pack_records_everything(data_pack, capsys):
    assert main(covid_args(data_pack, "cs1") + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "succeeded" and out["best_epoch"] in (1, 2)
    reg = Registry()
    row = reg.get("cs1")
    assert row.status == "succeeded" and row.epochs_done == 2 and row.device.startswith("cpu")
    assert row.data_fingerprint and row.code_version and row.finished >= row.started
    epochs = reg.epochs("cs1")
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert all(0 < e["train_loss"] < 5 and 0 < e["val_loss"] < 5 for e in epochs)
    assert [s["step"] for s in reg.steps("cs1")] == list(range(1, 7))  # 48 images / 16 = 3 steps x 2
    d = reg.run_dir("cs1")
    best = torch.load(d / "best.pt", weights_only=True)  # the weights only: the optimizer state is not needed
    assert best["class_names"] == ["COVID-19"] and best["arch"] == "tiny" and "optimizer" not in best
    assert not (d / "last.pt").exists()  # dropped when the run succeeded (no --keep-last)
    metrics = json.loads((d / "metrics.json").read_text())
    test = {r["class"]: r for r in metrics["test"]["auc"]}
    assert test["COVID-19"]["low"] <= test["COVID-19"]["auc"] <= test["COVID-19"]["high"]
    preds = pd.read_csv(d / "predictions_test.csv")
    assert len(preds) == 48 and {"prob_COVID-19", "target_COVID-19", "patient_id"} <= set(preds.columns)
    # runs show --json carries what the dashboard and report need
    assert main(["runs", "show", "cs1", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    for key in ("status", "config", "epochs", "best_epoch", "auc"):
        assert key in shown
    assert set(shown["auc"]) == {"val", "test"}
    assert main(["evaluate", "cs1", "--split", "test", "--bootstrap", "20", "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["test"]["images"] == 48


def test_keep_last_keeps_the_optimizer_state_and_the_run_trains_further(data_pack, capsys):
    assert main(covid_args(data_pack, "kl", epochs=1) + ["--keep-last"]) == 0
    d = Registry().run_dir("kl")
    last, best = (torch.load(d / f, weights_only=True) for f in ("last.pt", "best.pt"))
    assert "optimizer" in last and "optimizer" not in best
    assert (d / "best.pt").stat().st_size < 0.6 * (d / "last.pt").stat().st_size
    assert main(["train", "--resume", "kl", "--epochs", "2"]) == 0
    assert Registry().get("kl").epochs_done == 2 and (d / "last.pt").is_file()  # still kept
    capsys.readouterr()
    assert main(["runs", "list", "--json"]) == 0
    listed = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert listed["kl"]["disk_bytes"] > (d / "last.pt").stat().st_size


def _spawn(args, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "engine", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def test_kill9_mid_epoch_then_resume_gives_a_consistent_history(data_pack):
    reg = Registry()
    args = covid_args(data_pack, "k9", epochs=3) + ["--checkpoint-minutes", "0.0001"]
    p = _spawn(args)
    try:
        # wait until the run is in the middle of epoch 2 (3 steps per epoch)
        assert wait_for(lambda: getattr(reg.get("k9"), "step", 0) >= 4), p.stderr.read().decode()[-2000:]
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    assert reg.get("k9").status == "running"
    assert [r.status for r in observe(reg) if r.name == "k9"] == ["interrupted"]
    ck = torch.load(reg.run_dir("k9") / "last.pt", weights_only=True)  # the last good checkpoint loads
    assert ck["step"] >= 3
    assert main(["train", "--resume", "k9"]) == 0
    row = reg.get("k9")
    assert row.status == "succeeded" and row.epochs_done == 3
    assert [e["epoch"] for e in reg.epochs("k9")] == [1, 2, 3]
    assert [s["step"] for s in reg.steps("k9")] == list(range(1, 10))


def test_sigterm_cancels_with_a_checkpoint_and_resume_finishes(data_pack):
    reg = Registry()
    p = _spawn(covid_args(data_pack, "st", epochs=2))
    try:
        assert wait_for(lambda: getattr(reg.get("st"), "step", 0) >= 1)
        os.killpg(p.pid, signal.SIGTERM)
        assert p.wait(timeout=120) == 3
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    row = reg.get("st")
    assert row.status == "cancelled" and "cancelled by signal SIGTERM in epoch" in row.error  # a bare signal
    assert (reg.run_dir("st") / "last.pt").is_file()
    assert main(["train", "--resume", "st"]) == 0
    assert reg.get("st").status == "succeeded"
    assert [e["epoch"] for e in reg.epochs("st")] == [1, 2]
    assert [s["step"] for s in reg.steps("st")] == list(range(1, 7))


def test_two_process_gloo_ddp_run_completes(data_pack):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "engine", *covid_args(data_pack, "ddp", epochs=1), "--device", "cpu"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    row = Registry().get("ddp")
    assert row.status == "succeeded" and "gloo" in row.device
    assert [s["step"] for s in Registry().steps("ddp")] == [1, 2]  # 48 images / (16 x 2 ranks)


def test_transfer_from_an_nih_run(data_pack):
    assert main(["train", "--preset", "nih-densenet121-imagenet", "--init", "scratch", "--nih-root",
                 str(data_pack / "nih"), "--epochs", "1", "--name", "nih1", *QUICK]) == 0
    assert main(covid_args(data_pack, "tr", epochs=1, preset="covid-from-nih") + ["--init", "nih1"]) == 0
    reg = Registry()
    src = torch.load(reg.run_dir("nih1") / "best.pt", weights_only=True)
    cfg = reg.get("tr").config
    assert cfg["model"]["init"].endswith("nih1/best.pt")
    assert len(src["class_names"]) == 14
    assert torch.load(reg.run_dir("tr") / "best.pt", weights_only=True)["class_names"] == ["COVID-19"]
