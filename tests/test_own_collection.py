"""Your own collection (issue 34): training on a manifest with its own classes, transfer from a
ChestX-ray14 run, and bad manifests refused before anything is recorded, in one line."""
from __future__ import annotations

import os

import pandas as pd
import pytest
from conftest import TINY, run_cli, train_tiny, xray_png

from engine.data.labelled import LabelledCollection
from engine.data.manifest import ManifestError
from engine.runs import Registry


def unseen_collection(data_pack, dst):
    """The pack's frontal COVID-19-collection films under new names, with the collection's own label
    columns (COVID-19, Pneumonia), patient ids and origins: a manifest the lab has never seen."""
    src = data_pack / "covid"
    meta = pd.read_csv(src / "metadata.csv", dtype=str, keep_default_na=False)
    (dst / "films").mkdir(parents=True)
    rows = []
    for k, r in meta.iterrows():
        p = src / "images" / r["filename"]
        if not p.is_file() or r["view"] not in ("PA", "AP", "AP Supine"):
            continue
        name = f"film-{k:04d}{p.suffix}"
        os.link(p, dst / "films" / name)
        rows.append({"path": f"films/{name}", "COVID-19": int("COVID-19" in r["finding"]),
                     "Pneumonia": int("Pneumonia" in r["finding"] or "Streptococcus" in r["finding"]),
                     "patient_id": "P" + r["patientid"], "source": r["url"].split("/")[2] if "//" in r["url"] else ""})
    pd.DataFrame(rows).to_csv(dst / "manifest.csv", index=False)
    return dst / "manifest.csv"


def test_a_manifest_trains_with_its_own_classes_from_a_chestxray14_run(data_pack, tmp_path):
    ck = tmp_path / "checkpoints"
    train_tiny(ck, "nih-parent", "--init", "scratch", "--max-images-per-split", "64", "--bootstrap", "10",
               root=data_pack / "nih", preset="nih-densenet121-imagenet")
    manifest = unseen_collection(data_pack, tmp_path / "own")
    best = ck / "nih-parent" / "best.pt"
    out = run_cli("train", "--task", "manifest", "--manifest", manifest, "--init", best, *TINY, "--epochs", "1",
                  "--bootstrap", "10", "--name", "own", env={"CXR_CHECKPOINTS": ck, "CXR_CACHE_DIR": tmp_path / "c"})
    assert out.returncode == 0, out.stderr[-2000:]
    reg = Registry(ck)
    row = reg.get("own")
    assert row.status == "succeeded" and row.config["data"]["task"] == "manifest"
    assert row.config["model"]["init"] == str(best) and os.path.isabs(row.config["data"]["manifest"])
    preds = {s: pd.read_csv(ck / "own" / f"predictions_{s}.csv") for s in ("val", "test")}
    for frame in preds.values():
        assert sorted(c[len("prob_"):] for c in frame.columns if c.startswith("prob_")) == ["COVID-19", "Pneumonia"]
    assert not set(preds["val"]["patient_id"]) & set(preds["test"]["patient_id"])
    # downstream: evaluation with intervals and the model card read the manifest's classes
    out = run_cli("evaluate", "own", "--json", env={"CXR_CHECKPOINTS": ck})
    assert out.returncode == 0, out.stderr[-1500:]
    assert "Pneumonia" in out.stdout and "COVID-19" in out.stdout
    assert run_cli("card", "own", env={"CXR_CHECKPOINTS": ck}).returncode == 0


def _images(root, n=24):
    for k in range(n):
        xray_png(root / "img" / f"{k:03d}.png", seed=k)
    return [f"img/{k:03d}.png" for k in range(n)]


def _write(root, frame: pd.DataFrame):
    frame.to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


def _good(root):
    paths = _images(root)
    return pd.DataFrame({"path": paths, "Effusion": [k % 2 for k in range(24)],
                         "Mass": [int(k % 3 == 0) for k in range(24)], "patient_id": [f"p{k // 2}" for k in range(24)]})


BAD = {
    "no path column": (lambda f: f.rename(columns={"path": "picture"}), "no image path column"),
    "a class named twice": (lambda f: f.assign(effusion=f["Effusion"]), "name one class"),
    "a label outside the allowed values": (lambda f: f.assign(Mass=["maybe"] + list(f["Mass"][1:])),
                                           "line 2, column 'Mass': maybe is not a label"),
    "a class with no positive in the training split": (lambda f: f.assign(Mass=0), "'Mass' has no positive"),
    "a patient in two splits": (lambda f: f.assign(split=["train", "test"] + ["train"] * 14 + ["val"] * 4
                                                   + ["test"] * 4),
                                "patient 'p0' has rows in two splits"),
    "an unknown split": (lambda f: f.assign(split=["train"] * 23 + ["holdout"]), "'holdout' is not a split"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_manifest_is_refused_in_one_line_before_anything_is_recorded(case, tmp_path):
    change, said = BAD[case]
    manifest = _write(tmp_path, change(_good(tmp_path)))
    with pytest.raises(ManifestError, match=said):
        LabelledCollection(manifest, dedupe=False)
    out = run_cli("train", "--task", "manifest", "--manifest", manifest, *TINY, "--epochs", "1", "--name", "bad")
    assert out.returncode == 2 and said.split(":")[0] in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert Registry().get("bad") is None and not (Registry().root / "bad").exists()


def test_a_label_column_with_several_values_gives_one_class_per_value_and_a_given_split_is_kept(tmp_path):
    paths = _images(tmp_path)
    labels = ["Normal", "COVID-19", "Viral"] * 8
    split = ["train"] * 12 + ["val"] * 6 + ["test"] * 6
    ds = LabelledCollection(_write(tmp_path, pd.DataFrame({"path": paths, "label": labels, "split": split})),
                            dedupe=False)
    assert ds.class_names == ("COVID-19", "Normal", "Viral")
    assert ds.targets.sum(axis=1).tolist() == [1.0] * 24 and ds.frame["split"].tolist() == split
    assert ds.given_split and len(ds.split("val")) == 6


def test_your_collection_on_the_train_page_starts_a_run_or_says_what_is_wrong(tmp_path):
    from conftest import dashboard_app

    from engine.runs.jobs import cancel

    good = _write(tmp_path, _good(tmp_path))
    at = dashboard_app("train").run()
    at.selectbox(key="train.preset").set_value("manifest").run()
    assert not at.exception
    at.text_input(key="train.f.manifest").set_value(str(tmp_path / "nowhere.csv"))
    at.text_input(key="train.name").set_value("mine")
    at.button[0].click().run()
    assert not at.exception and any("no manifest at" in e.value for e in at.error)
    assert Registry().get("mine") is None
    at.text_input(key="train.f.manifest").set_value(str(good))
    at.selectbox(key="train.f.arch").set_value("tiny")
    at.text_input(key="train.f.epochs").set_value("1")
    at.button[0].click().run()
    assert not at.exception, at.exception
    row = Registry().get("mine")
    assert row is not None and row.config["data"]["task"] == "manifest", [e.value for e in at.error]
    cancel("mine")


def test_your_data_page_adds_a_collection_shows_it_and_starts_a_transfer_run(tmp_path):
    """Issue 34: "Your data": add a collection (refused in words when wrong), see its classes, splits,
    sources and images, start a transfer run on it in one step; it is remembered for the next session."""
    from conftest import dashboard_app

    from engine.data.collections import remembered
    from engine.runs.jobs import cancel

    good = _write(tmp_path, _good(tmp_path).assign(source=["site-a", "site-b"] * 12))
    at = dashboard_app("your_data").run()
    assert not at.exception, at.exception
    at.text_input(key="data.add_name").set_value("hospital-b")
    at.text_input(key="data.add_path").set_value(str(tmp_path / "nowhere"))
    at.button[0].click().run()
    assert not at.exception and any("Not added" in e.value for e in at.error)
    assert remembered() == []
    at.text_input(key="data.add_path").set_value(str(good))
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert [c["name"] for c in remembered()] == ["hospital-b"]
    shown = " ".join(str(m.value) for m in at.metric)
    assert "24" in shown and "12" in shown  # images and patients
    assert any("site-a" in str(df.value) for df in at.dataframe)
    at2 = dashboard_app("your_data").run()  # a new session: remembered
    assert at2.selectbox(key="data.picked").value == "hospital-b"
    at2.selectbox(key="data.init").set_value("scratch")
    at2.number_input(key="data.epochs").set_value(1)
    at2.number_input(key="data.size").set_value(64)
    at2.text_input(key="data.run_name").set_value("to-b")
    next(b for b in at2.button if b.label == "Start the transfer run").click().run()
    assert not at2.exception, at2.exception
    row = Registry().get("to-b")
    assert row is not None and row.config["data"]["task"] == "manifest", [e.value for e in at2.error]
    assert row.config["data"]["manifest"] == str(good.resolve())
    cancel("to-b")


def test_a_manifests_source_is_held_out_and_a_study_file_leaves_each_source_out(data_pack, tmp_path):
    """Issue 34: leave one source out on your own collection. `holdout_source` makes one value of the
    manifest's `source` column the test split (with its patients' other films), as for the COVID-19
    collection; a study file's `leave_one_source_out` on a manifest experiment gets one row per source
    with enough images of both labels."""
    import json

    from engine.config import ConfigError, from_preset
    from engine.study.spec import SCALES_DIR, load_spec

    manifest = unseen_collection(data_pack, tmp_path / "own")
    frame = pd.read_csv(manifest, keep_default_na=False)
    big = frame["source"].value_counts().index[0]
    ds = LabelledCollection(manifest, dedupe=False, holdout_source=big)
    test = ds.frame[ds.frame["split"] == "test"]
    assert set(ds.frame.loc[ds.frame["source"] == big, "split"]) == {"test"}
    assert ds.holdout["source"] == big and ds.holdout["images"] == len(test)
    assert not set(test["patient_id"]) & set(ds.frame.loc[ds.frame["split"] != "test", "patient_id"])
    with pytest.raises(ValueError, match=f"no labelled image of the manifest {manifest} comes from origin 'nowhere'"):
        LabelledCollection(manifest, dedupe=False, holdout_source="nowhere")
    assert from_preset("manifest", {"manifest": str(manifest), "holdout_source": big}).data.holdout_source == big
    with pytest.raises(ConfigError, match="only the covid, pneumonia, manifest tasks hold out a source"):
        from_preset("nih-densenet121-imagenet", {"holdout_source": big})
    # a study file of one manifest experiment, each of its sources left out in turn
    raw = json.loads((SCALES_DIR / "pack.json").read_text())
    raw.update(experiments=[{"key": "own", "table": "Your data", "label": "own collection, scratch",
                             "preset": "manifest", "overrides": {"manifest": str(manifest), "init": "scratch"}}],
               comparisons=[], leave_one_source_out={"experiment": "own", "min_images": 20, "min_per_label": 3})
    raw.pop("learning_curve", None)
    raw.pop("cost", None)
    study = tmp_path / "own-study.json"
    study.write_text(json.dumps(raw))
    spec = load_spec(str(study))
    rows = [e for e in spec.experiments if e.table == "Leave one source out"]
    counts = frame.groupby("source").size()
    assert rows and {e.overrides["holdout_source"] for e in rows} <= set(counts[counts >= 20].index)
    assert big in {e.overrides["holdout_source"] for e in rows}
    raw["experiments"][0]["overrides"].pop("manifest")
    study.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="experiment 'own': invalid manifest='': task manifest needs the CSV"):
        load_spec(str(study))
