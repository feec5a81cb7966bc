"""Issue 38: runs where researchers already look. TensorBoard's own reader (EventAccumulator, the
projector's config) and MLflow's client (a file: store, and a real `mlflow server` on 127.0.0.1) read
back what the lab logged live and what it exported. No test reaches any other address."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from conftest import TIME_FACTOR, dashboard_app, free_port, run_cli, stop_process_group, train_tiny, wait_for
from engine import tracking


@pytest.fixture(autouse=True)
def _mlflow_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the reading client's store, as the tracker's
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def _events(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _runs(client) -> list:
    exp = client.get_experiment_by_name("cxr-lab")
    return client.search_runs([exp.experiment_id]) if exp else []


def _artifacts(client, run_id: str, path: str | None = None) -> list[str]:
    out = []
    for a in client.list_artifacts(run_id, path):
        out += _artifacts(client, run_id, a.path) if a.is_dir else [a.path]
    return out


def _env(ck: Path) -> dict:
    return {"CXR_CHECKPOINTS": ck, "CXR_CACHE_DIR": ck.parent / "cache"}


# -- targets and the setting --------------------------------------------------------------------------
def test_targets_are_checked_named_and_the_setting_adds_to_every_new_run(tmp_path, tiny_covid):
    assert tracking.parse_target(f"tensorboard:{tmp_path}/tb") == ("tensorboard", str(tmp_path / "tb"))
    assert tracking.parse_target("mlflow:http://127.0.0.1:5000") == ("mlflow", "http://127.0.0.1:5000")
    assert tracking.parse_target(f"mlflow:{tmp_path}/ml") == ("mlflow", (tmp_path / "ml").as_uri())
    for bad, says in (("wandb:project", "tensorboard:DIR or mlflow:URI"), ("tensorboard", "tensorboard:DIR"),
                      ("tensorboard:http://x/y", "folder on this machine"), ("mlflow:ftp://h/x", "MLflow takes"),
                      ("mlflow:", "mlflow:URI"), ("tensorboard:a\nb", "control characters")):
        with pytest.raises(tracking.TrackingError, match="invalid tracker") as exc:
            tracking.parse_target(bad)
        assert says in str(exc.value), (bad, str(exc.value))
    assert tracking.normalise([f"tensorboard:{tmp_path}/tb", f"tensorboard:{tmp_path}/tb/../tb"]) == \
        [f"tensorboard:{tmp_path}/tb"]
    # the CLI refuses a bad target before anything is recorded
    out = run_cli("queue", "--preset", "covid-scratch", "--covid-root", tiny_covid, "--log-to", "wandb:x",
                  "--name", "refused")
    assert out.returncode == 2 and "invalid tracker 'wandb:x'" in out.stderr, out.stderr
    assert not (Path(os.environ["CXR_CHECKPOINTS"]) / "refused").exists()
    # the saved setting: every new run logs there too, after its own targets; a resume adds, never drops
    assert tracking.save_always([f"mlflow:{tmp_path}/always"]) == [f"mlflow:{(tmp_path / 'always').as_uri()}"]
    folder = tmp_path / "run"
    assert tracking.attach(folder, [f"tensorboard:{tmp_path}/tb"]) == [
        f"tensorboard:{tmp_path}/tb", f"mlflow:{(tmp_path / 'always').as_uri()}"]
    tracking.save_always([])
    assert tracking.always() == []
    assert tracking.attach(folder, [f"tensorboard:{tmp_path}/more"])[-1] == f"tensorboard:{tmp_path}/more"
    assert len(tracking.read(folder)["targets"]) == 3


# -- live logging -------------------------------------------------------------------------------------
def test_a_run_logs_live_to_tensorboard_and_mlflow_and_a_dead_server_never_fails_it(tmp_path, data_pack,
                                                                                     monkeypatch):
    ck, tb, ml = tmp_path / "checkpoints", tmp_path / "tb", tmp_path / "mlruns"
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    out = train_tiny(ck, "live", "--max-images-per-split", "32", "--bootstrap", "20", "--log-to", f"tensorboard:{tb}",
                     "--log-to", f"mlflow:file:{ml}", "--log-to", f"mlflow:{dead}", root=data_pack / "covid",
                     epochs=2)
    assert "succeeded" in out.stdout, out.stdout + out.stderr
    from engine.runs.registry import Registry

    reg = Registry(ck)
    steps, epochs = reg.steps("live"), reg.epochs("live")
    # TensorBoard: every step's loss and lr, every epoch's AUCs, the end's PR curves, figures and CAMs
    acc = _events(tb / "live")
    tags = acc.Tags()
    assert [e.step for e in acc.Scalars("train/loss")] == [s["step"] for s in steps]
    assert [round(e.value, 5) for e in acc.Scalars("train/loss")] == [round(s["train_loss"], 5) for s in steps]
    assert [e.step for e in acc.Scalars("epoch/val_auc_mean")] == [1, 2]
    assert "epoch/val_auc/COVID-19" in tags["scalars"] and "final/test_auc_mean" in tags["scalars"]
    assert {"pr_test/COVID-19", "pr_val/COVID-19"} <= set(tags["tensors"])
    assert {"figures/roc_test", "figures/loss", "cam/COVID-19"} <= set(tags["images"])
    assert len(acc.Images("cam/COVID-19")) == 3
    # MLflow (file store): params, tags, metrics by step, artifacts
    client = _client(f"file:{ml}")
    (run,) = _runs(client)
    assert run.info.status == "FINISHED" and run.data.tags["cxr.run"] == "live"
    assert run.data.params["model.arch"] == "tiny" and len(run.data.params) >= 5
    assert {t: run.data.tags[t] for t in ("cxr.task", "cxr.init", "cxr.arch")} == {
        "cxr.task": "covid", "cxr.init": "scratch", "cxr.arch": "tiny"}
    assert run.data.tags["cxr.data_fingerprint"] == reg.require("live").data_fingerprint
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == len(steps)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_auc_mean")] == [1, 2]
    assert run.data.metrics["test_auc_mean"] == pytest.approx(reg.require("live").test_auc, abs=1e-6)
    arts = _artifacts(client, run.info.run_id)
    assert {"run/predictions_test.csv", "run/metrics.json", "run/model-card.md", "figures/roc_test.svg"} <= set(arts)
    # the dead server: said once in the log and in tracking.json; the run went on
    log = (ck / "live" / "train.log").read_text()
    assert log.count(f"tracker mlflow:{dead} failed") == 1, log
    assert "the run goes on without it" in log
    failed = tracking.read(ck / "live")["failed"]
    assert list(failed) == [f"mlflow:{dead}"] and "failed at the start" in failed[f"mlflow:{dead}"]
    assert len(epochs) == 2 and reg.require("live").status == "succeeded"
    # ... and the Train page says so beside the run
    monkeypatch.setenv("CXR_CHECKPOINTS", str(ck))
    at = dashboard_app("train", data_pack=data_pack, run="live").run()
    assert not at.exception
    warns = " ".join(w.value for w in at.warning)
    assert f"Tracker `mlflow:{dead}` stopped" in warns and "goes on without it" in warns, warns
    assert any("Also logged to" in c.value and "tensorboard" in c.value for c in at.caption)


# -- export of finished runs --------------------------------------------------------------------------
def test_a_finished_run_exports_to_both_and_exporting_again_updates_without_doubles(tmp_path, data_pack):
    ck, tb, ml = tmp_path / "checkpoints", tmp_path / "tb", tmp_path / "mlruns"
    train_tiny(ck, "done", "--max-images-per-split", "32", "--bootstrap", "20", root=data_pack / "covid", epochs=2)
    assert run_cli("export", "done", env=_env(ck)).returncode == 0  # the ONNX model, logged as an MLflow model
    for attempt in (1, 2):
        out = run_cli("runs", "export", "done", "--to", "tensorboard", tb, "--to", "mlflow", f"file:{ml}",
                      "--json", env=_env(ck))
        assert out.returncode == 0, out.stderr
        done = json.loads(out.stdout)
        assert not done["failed"] and len(done["exported"]) == 2
        assert done["exported"][1]["updated"] is (attempt == 2)
    acc = _events(tb / "done")
    assert len(acc.Scalars("train/loss")) == len(acc.Scalars("train/lr")) > 0  # once each, not twice
    assert [e.step for e in acc.Scalars("epoch/val_auc_mean")] == [1, 2]
    assert acc.Scalars("final/test_auc_mean")[0].value > 0
    client = _client(f"file:{ml}")
    runs = _runs(client)
    assert len(runs) == 1, [r.info.run_name for r in runs]  # found by its cxr.run tag and updated
    run = runs[0]
    assert len(run.data.params) >= 5 and "test_auc_mean" in run.data.metrics
    assert "val_auc/COVID-19" in run.data.metrics
    assert len(client.get_metric_history(run.info.run_id, "val_auc_mean")) == 2
    arts = _artifacts(client, run.info.run_id)
    assert {"run/predictions_val.csv", "run/predictions_test.csv", "model/MLmodel", "model/model.onnx"} <= set(arts)
    import mlflow.onnx

    model = mlflow.onnx.load_model(client.download_artifacts(run.info.run_id, "model", str(tmp_path / "dl")))
    assert model.graph.input[0].name
    # an unknown run is named
    out = run_cli("runs", "export", "nope", "--to", "tensorboard", tb, env=_env(ck))
    assert out.returncode == 2 and "nope" in out.stderr


# -- the projector ------------------------------------------------------------------------------------
def test_the_landscape_goes_to_tensorboards_projector_with_metadata_and_a_sprite(trained_run, data_pack, tmp_path):
    from google.protobuf import text_format
    from PIL import Image
    from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

    ck, name = trained_run
    out = run_cli("embed", name, "--per-label", "6", "--to", "tensorboard", tmp_path / "tb", "--json",
                  env={**_env(ck), "CXR_NIH_ROOT": data_pack / "nih", "CXR_COVID_ROOT": data_pack / "covid"})
    assert out.returncode == 0, out.stderr
    done = json.loads(out.stdout)
    folder = Path(done["projector"])
    config = text_format.Parse((folder / "projector_config.pbtxt").read_text(), ProjectorConfig())
    assert [e.tensor_name.split(":")[0] for e in config.embeddings] == [f"{name}/features", f"{name}/pixels"]
    emb = config.embeddings[0]
    meta = (folder / emb.metadata_path).read_text().splitlines()
    assert meta[0].split("\t") == ["label", "dataset", "source", "split", "image"]
    rows = [line.split("\t") for line in meta[1:]]
    assert len(rows) == done["images"] and {r[0] for r in rows} >= {"COVID-19"}
    assert {r[1] for r in rows} == {"nih", "covid"} and any("." in r[2] for r in rows if r[1] == "covid")
    vectors = (folder / emb.tensor_path).read_text().splitlines()
    assert len(vectors) == done["images"] and len(vectors[0].split("\t")) == done["dimensions"]
    sprite = Image.open(folder / emb.sprite.image_path)
    assert list(emb.sprite.single_image_dim) == [32, 32] and sprite.size[0] % 32 == 0
    # written again: replaced, not doubled
    assert run_cli("embed", name, "--per-label", "6", "--to", "tensorboard", tmp_path / "tb",
                   env={**_env(ck), "CXR_NIH_ROOT": data_pack / "nih",
                        "CXR_COVID_ROOT": data_pack / "covid"}).returncode == 0
    config = text_format.Parse((folder / "projector_config.pbtxt").read_text(), ProjectorConfig())
    assert len(config.embeddings) == 2


# -- a real MLflow server ------------------------------------------------------------------------------
def test_a_real_mlflow_server_on_loopback_receives_a_live_run_and_an_export_updates_it(tmp_path, data_pack):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "mlflow-server.log"
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                             "--artifacts-destination", str(tmp_path / "artifacts"), "--workers", "1"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=open(log, "wb"), start_new_session=True)
    try:
        def healthy():
            try:
                return urllib.request.urlopen(url + "/health", timeout=2).status == 200
            except OSError:
                return proc.poll() is not None  # it died: stop waiting and say why below
        assert wait_for(healthy, timeout=180 * TIME_FACTOR, poll=0.5) and proc.poll() is None, log.read_text()[-3000:]
        ck = tmp_path / "checkpoints"
        train_tiny(ck, "served", "--max-images-per-split", "32", "--bootstrap", "20", "--log-to", f"mlflow:{url}",
                   root=data_pack / "covid")
        assert tracking.read(ck / "served")["failed"] == {}
        client = _client(url)  # MLflow's REST client
        (run,) = _runs(client)
        assert run.info.status == "FINISHED" and run.data.tags["cxr.run"] == "served"
        assert len(run.data.params) >= 5 and run.data.params["data.task"] == "covid"
        assert {"train_loss", "val_auc_mean", "test_auc_mean", "val_auc/COVID-19"} <= set(run.data.metrics)
        assert "run/predictions_test.csv" in _artifacts(client, run.info.run_id)
        assert (tmp_path / "artifacts").is_dir()  # the server stored them, proxied
        n = len(client.get_metric_history(run.info.run_id, "train_loss"))
        out = run_cli("runs", "export", "served", "--to", "mlflow", url, env=_env(ck))
        assert out.returncode == 0 and "(updated)" in out.stdout, out.stdout + out.stderr
        assert len(_runs(client)) == 1 and len(client.get_metric_history(run.info.run_id, "train_loss")) == n
    finally:
        stop_process_group(proc)
