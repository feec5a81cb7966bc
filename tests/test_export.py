"""The field's models and formats (issue 25): ONNX export checked with onnxruntime, model cards, and
torchxrayvision's DenseNet-121s as a starting point and a baseline, with weights made locally (a
randomly initialised torchxrayvision model saved where the library looks), never downloaded."""
import json
import subprocess

import numpy as np
import pytest
import torch

from conftest import run_cli

XRV = "densenet121-res224-all"


def _cli(*args, env_extra=None):
    return run_cli(*args, env=env_extra)


def test_export_writes_onnx_that_onnxruntime_scores_as_pytorch_does(trained_run, tmp_path, data_pack):
    """Issue 25's check: a COVID-19 run exported to ONNX, scored by onnxruntime on real X-rays
    preprocessed as the sidecar says, at two batch sizes, within 1e-4 of PyTorch."""
    import onnxruntime as ort

    from engine.data.images import read_xray
    from engine.explain.inference import LoadedModel
    from engine.runs import Registry

    ck, run = trained_run
    out = _cli("export", run, "--format", "onnx", "--out", str(tmp_path), "--json",
               env_extra={"CXR_CHECKPOINTS": str(ck)})
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout)
    assert res["max_abs_diff"] < 1e-4
    meta = json.loads((tmp_path / f"{run}.onnx.json").read_text())
    assert meta["input"]["shape"] == ["batch", 3, 64, 64] and meta["input"]["channels"] == 3
    assert meta["input"]["normalisation"]["mean"] == [0.485, 0.456, 0.406]
    assert meta["output"]["class_names"] == ["COVID-19"] and meta["output"]["activation"] == "sigmoid"
    row = Registry(ck).get(run)
    assert meta["run"]["name"] == run and meta["run"]["data_fingerprint"] == row.data_fingerprint
    loaded = LoadedModel(Registry(ck).folder(run).best_checkpoint(), device="cpu")
    images = sorted((data_pack / "covid" / "images").iterdir())[:7]
    x = torch.cat([loaded.tensor(read_xray(p)) for p in images]).numpy()
    session = ort.InferenceSession(str(tmp_path / f"{run}.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        want = torch.sigmoid(loaded.model(torch.from_numpy(x))).numpy()
    for batch in (x[:1], x):  # a dynamic batch: 1 and 7 (the export traced 2)
        got = session.run(None, {"image": batch})[0]
        assert got.shape == (len(batch), 1)
        assert np.abs(got - want[:len(batch)]).max() < 1e-4


def test_a_model_card_fills_what_the_records_hold_and_lists_the_rest(trained_run, tmp_path):
    ck, run = trained_run
    out = _cli("card", run, "--out", str(tmp_path), env_extra={"CXR_CHECKPOINTS": str(ck)})
    assert out.returncode == 0, out.stderr[-2000:]
    md = (tmp_path / "model-card.md").read_text()
    card = json.loads((tmp_path / "model-card.json").read_text())
    for heading in ("## Model details", "## Intended use", "## Data", "## Metrics (test split)", "## Subgroups",
                    "## External results", "## Shortcut audit", "## Limitations", "## CLAIM checklist"):
        assert heading in md
    assert "not a medical device" in md and "COVID-19" in md
    claim = {c["item"]: c for c in card["claim"]}
    assert len(claim) == 42 and claim[21]["recorded"] and claim[24]["value"] == "init = scratch"
    assert not claim[12]["recorded"] and "*not recorded*" in md  # de-identification: not in the records
    assert any("48 images" in x or "test split has" in x for x in card["limitations"])
    assert card["data"]["fingerprint"] and card["model"]["code_version"]


def _xrv_weights(folder):
    """A randomly initialised torchxrayvision DenseNet-121 saved as the library saves its weights."""
    import torchxrayvision as xrv

    from engine.models import xrv as engine_xrv

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = xrv.models.DenseNet(num_classes=18).eval()
    for m in model.modules():  # running statistics away from 0/1, so a wrong mapping shows
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = engine_xrv.weights_file(XRV)
    torch.save(model, path)
    return model, path


def test_offline_an_xrv_init_is_refused_before_a_run_is_recorded_naming_the_weights_file(tmp_path, data_pack):
    """Issue 25's check. No weights here and no internet (the tests' loopback proxy): refused with
    the file, the folder and the URL, and nothing recorded."""
    from engine.models import xrv
    from engine.runs import Registry

    out = _cli("train", "--preset", "covid-scratch", "--init", f"xrv:{XRV}", "--covid-root", str(data_pack / "covid"),
               "--epochs", "1", "--name", "from-xrv")
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr[-2000:]
    wanted = xrv.weights_file(XRV)
    assert wanted.name in out.stderr and str(wanted.parent) in out.stderr and xrv.weights_url(XRV) in out.stderr
    assert Registry().list() == [] and not wanted.exists()
    bad = _cli("train", "--preset", "covid-scratch", "--init", "xrv:no-such-model", "--covid-root",
               str(data_pack / "covid"))
    assert bad.returncode != 0 and "densenet121-res224-all" in bad.stderr  # the choices are named


def test_an_xrv_start_maps_its_network_exactly_and_trains(tmp_path, data_pack):
    """With the weights file here: the engine's DenseNet-121 computes torchxrayvision's features from
    the lab's own preprocessing (its first layer converts the input), and a run trains from it,
    keeps that first layer through its checkpoint, and explains with CAM."""
    from engine.data.transforms import to_normalised_rgb
    from engine.explain.inference import LoadedModel
    from engine.models.build import build_model
    from engine.runs import Registry

    xmodel, _ = _xrv_weights(tmp_path / "xrv")
    ours = build_model("densenet121", 1, f"xrv:{XRV}").eval()
    gray = np.random.default_rng(0).integers(0, 256, (96, 96)).astype(np.uint8)
    with torch.no_grad():
        a = ours.body.features(to_normalised_rgb(gray)[None])
        b = xmodel.features(torch.from_numpy(gray.astype(np.float32) / 255 * 2048 - 1024)[None, None])
    assert (a - b).abs().max() / b.abs().max() < 1e-5
    out = _cli("train", "--preset", "covid-scratch", "--init", f"xrv:{XRV}", "--covid-root", str(data_pack / "covid"),
               "--epochs", "1", "--name", "from-xrv", "--image-size", "64", "--load-size", "64",
               "--max-images-per-split", "24", "--bootstrap", "20", "--num-workers", "0")
    assert out.returncode == 0, out.stderr[-3000:]
    row = Registry().get("from-xrv")
    assert row.status == "succeeded" and row.config["model"]["init"] == f"xrv:{XRV}"
    assert row.config["model"]["arch"] == "densenet121"
    loaded = LoadedModel(Registry().folder("from-xrv").best_checkpoint(), device="cpu")
    assert any(k.startswith("body.features.conv0.0.") for k in loaded.model.state_dict())
    probs, maps = loaded.predict(gray, method="cam")
    assert probs.shape == (1,) and maps.shape[-1] == 64 and np.isfinite(maps).all()


def test_xrv_as_a_baseline_on_the_chestxray14_test_split_is_a_row_of_the_report(tmp_path, data_pack):
    _xrv_weights(tmp_path / "xrv")
    out = _cli("evaluate", "--model", f"xrv:{XRV}", "--nih-root", str(data_pack / "nih"), "--image-size", "64",
               "--max-images-per-split", "40", "--bootstrap", "20", "--json")
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout)
    assert res["test"]["images"] == 40 and len(res["classes"]) == 14
    rep = _cli("report", "--json")
    rows = json.loads(rep.stdout)["published_nih"]
    assert any(r["source"].startswith(f"torchxrayvision {XRV}") for r in rows)
    assert "torchxrayvision" in _cli("report").stdout


def test_a_weights_file_that_would_run_code_is_refused(tmp_path):
    """The weights file is a pickle: only the module classes such files hold are allowed."""
    from engine.models import xrv

    path = xrv.weights_file(XRV)
    path.parent.mkdir(parents=True)
    torch.save({"model": torch.nn.Linear(2, 2), "evil": subprocess.Popen}, path)
    with pytest.raises(ValueError, match="refused"):
        xrv.load_state(XRV)
