"""Figures to take away and run bundles (issue 23): every chart exports as PNG and SVG without a
browser; `runs bundle RUN` writes one zip a reader can check without the lab."""
import io
import json
import os
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import run_cli
from engine import figures

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(*args, ck):
    return run_cli(*args, env={"CXR_CHECKPOINTS": ck})


def test_a_chart_exports_as_png_and_svg_with_the_dashboard_colours():
    recs = pd.DataFrame({"fpr": [0, 0.5, 1, 0, 1], "tpr": [0, 0.8, 1, 0, 1],
                         "label": ["Effusion (0.812)"] * 3 + ["COVID-19 (0.700)"] * 2})
    spec = figures.spec_of(figures.roc_chart(recs))
    png = figures.export(spec, "png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    svg = figures.export(spec, "svg").decode()
    assert svg.lstrip().startswith("<svg") and "Effusion (0.812)" in svg and "COVID-19 (0.700)" in svg
    assert figures.EXPORT_CONFIG["background"] in svg  # the dark background: the white mean line stays visible
    assert "config" not in spec or spec["config"].get("background") != figures.EXPORT_CONFIG["background"]  # a copy
    with pytest.raises(ValueError, match="pdf"):
        figures.export(spec, "pdf")


def test_the_study_figure_draws_ours_with_intervals_beside_the_published_value():
    cells = pd.DataFrame([{"table": "Table 2", "label": "from ChestX-ray14", "class": "COVID-19", "ours": 0.61,
                           "low": 0.5, "high": 0.7, "published": 0.88},
                          {"table": "Table 2", "label": "scratch", "class": "COVID-19", "ours": None, "low": None,
                           "high": None, "published": 0.73}])
    svg = figures.export(figures.spec_of(figures.study_chart(cells)), "svg").decode()
    assert "Table 2 · from ChestX-ray14 (COVID-19)" in svg and "Table 2 · scratch (COVID-19)" in svg


def test_a_paper_figure_is_white_serif_titled_and_captioned_and_keeps_the_mean_visible():
    """Issue 37, N13: the screen theme's white mean line would vanish on paper, its 21 ROC ticks crowd a
    column; the paper theme darkens what was drawn for the dark screen and leaves Vega about six ticks."""
    recs = pd.DataFrame({"fpr": [0, 0.5, 1, 0, 1], "tpr": [0, 0.8, 1, 0, 1],
                         "label": ["Effusion (0.812)"] * 3 + ["COVID-19 (0.700)"] * 2})
    epochs = pd.DataFrame([{"epoch": 1, "val_auc": {"Effusion": 0.7, "Mass": 0.6}, "val_auc_mean": 0.65}])
    for spec in (figures.spec_of(figures.roc_chart(recs)), figures.spec_of(figures.auc_chart(figures.epoch_aucs(epochs)))):
        svg = figures.export(spec, "svg", theme="paper", title="ROC curves, test split",
                             caption="Run demo, test split: 5 images.\nAUC [95 % interval]").decode()
        assert "ROC curves, test split" in svg and "Run demo, test split: 5 images." in svg and "95 % interval" in svg
        assert "#0e1117" not in svg and "Times New Roman" in svg  # white paper, serif text
        paper = figures._for_paper(spec)
        ranges = [c.lower() for enc in ([paper] + paper.get("layer", [])) for ch in ("color",)
                  for c in ((enc.get("encoding", {}).get(ch) or {}).get("scale", {}).get("range") or [])]
        assert "#ffffff" not in ranges  # the mean: black on paper, white on the screen
    assert figures._for_paper({"axis": {"values": list(range(21)), "title": "x"}}) == {"axis": {"title": "x",
                                                                                              "tickCount": 6}}
    png = figures.export(figures.spec_of(figures.roc_chart(recs)), "png", theme="paper")
    assert png[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="poster"):
        figures.export(spec, "svg", theme="poster")


def test_runs_bundle_writes_one_zip_with_settings_metrics_predictions_figures_and_a_readme(trained_run, tmp_path):
    ck, name = trained_run
    out = tmp_path / "share" / "tiny.zip"
    r = _cli("runs", "bundle", name, "--out", str(out), ck=ck)
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stdout and out.is_file()
    with zipfile.ZipFile(out) as z:
        names = set(z.namelist())
        readme = z.read("README.txt").decode()
        run = json.loads(z.read("run.json"))
        metrics = json.loads(z.read("metrics.json"))
        svg = z.read("figures/roc_test.svg").decode()
        png = z.read("figures/roc_test.png")
        paper = z.read("figures/paper/roc_test.svg").decode()
    for member in ("run.json", "metrics.json", "train.log", "predictions_test.csv", "predictions_val.csv",
                   "figures/roc_test.svg", "figures/roc_test.png", "figures/loss.svg", "figures/val_auc.png"):
        assert member in names, (member, sorted(names))
        assert member in readme  # the README says what every file is
    assert "best.pt" not in names and "--weights" in readme
    assert run["name"] == name and run["code_version"] and run["data_fingerprint"]
    assert metrics["test"]["auc"] and "COVID-19" in svg and png[:4] == b"\x89PNG"
    assert "figures/paper/roc_test.png" in names and "figures/paper/loss.svg" in names  # for a paper too (N13)
    assert "ROC curves, test split" in paper and f"Run {name}, test split" in paper and "bootstrap over patients" in paper
    assert not list(out.parent.glob("*.partial"))  # written through a temporary file


def test_a_bundle_holds_no_absolute_path_and_says_what_personal_data_it_carries(trained_run, tmp_path, data_pack):
    """Issue 37, N14: no folder of this machine in any file; the README names the personal fields;
    --deidentify hashes patient ids (salted, the salt not kept) and drops sex and age."""
    ck, name = trained_run
    machine = [str(ck.resolve()), str(data_pack.resolve()), str(Path.home())]
    for flags in ((), ("--deidentify",)):
        out = tmp_path / f"b{len(flags)}.zip"
        r = _cli("runs", "bundle", name, "--out", str(out), *flags, ck=ck)
        assert r.returncode == 0, r.stderr
        with zipfile.ZipFile(out) as z:
            texts = {n: z.read(n).decode("utf-8", "replace") for n in z.namelist()
                     if n.endswith((".json", ".log", ".md", ".txt", ".csv", ".svg"))}
        leaks = {n: m for n, t in texts.items() for m in machine if m in t}
        assert not leaks, leaks
        readme = texts["README.txt"]
        preds = pd.read_csv(io.StringIO(texts["predictions_test.csv"]), dtype={"patient_id": str})
        assert "path" not in preds and not preds["image"].str.startswith("/").any()
        if flags:
            assert "de-identified" in readme and "sex" not in preds and "age" not in preds
            original = pd.read_csv(ck / name / "predictions_test.csv", dtype={"patient_id": str})
            assert not set(preds["patient_id"]) & set(original["patient_id"])
            assert preds["patient_id"].nunique() == original["patient_id"].nunique()  # one hash per patient
        else:
            assert "patient_id" in readme and "--deidentify" in readme and "<covid_root>" in texts["run.json"]


def test_a_bundle_with_weights_carries_a_checkpoint_that_loads_safely(trained_run, tmp_path):
    ck, name = trained_run
    r = _cli("runs", "bundle", name, "--out", str(tmp_path), "--weights", "--json", ck=ck)
    assert r.returncode == 0, r.stderr
    path = json.loads(r.stdout)["bundle"]
    assert path == str(tmp_path / f"{name}-bundle.zip")
    with zipfile.ZipFile(path) as z:
        state = torch.load(io.BytesIO(z.read("best.pt")), weights_only=True, map_location="cpu")
    assert state


def test_bundling_an_unknown_run_names_it_and_writes_nothing(trained_run, tmp_path):
    ck, _ = trained_run
    r = _cli("runs", "bundle", "no-such-run", "--out", str(tmp_path / "x.zip"), ck=ck)
    assert r.returncode != 0 and "no-such-run" in r.stderr and "Traceback" not in r.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]  # only the fixture's own cache folder


def test_the_model_card_says_when_an_interval_includes_chance(trained_run, tmp_path, monkeypatch):
    """Issue 37, N15: the card said nothing when a test AUC's interval includes 0.5."""
    import shutil

    from engine.runs import Registry
    from engine.runs.card import build_card, markdown

    ck = tmp_path / "checkpoints"
    shutil.copytree(trained_run[0], ck)
    monkeypatch.setenv("CXR_CHECKPOINTS", str(ck))
    name = trained_run[1]
    path = ck / name / "metrics.json"
    metrics = json.loads(path.read_text())
    for low, said in ((0.41, True), (0.62, False)):
        for r in metrics["test"]["auc"]:
            r.update(auc=low + 0.05, low=low, high=low + 0.1)
        path.write_text(json.dumps(metrics))
        md = markdown(build_card(Registry(), name))
        assert ("includes 0.5" in md) is said, md[-1500:]
