"""Every page renders under AppTest, with and without runs; forms validate; Diagnose predicts."""
import os
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, as_study_densenet, dashboard_app
from engine.runs import Registry

PAGES = ["overview", "train", "results", "audit", "heatmaps", "landscape", "diagnose", "your_data"]


def app(page: str, data_pack=None):
    return dashboard_app(page, data_pack=data_pack)


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_without_runs(page, data_pack):
    at = app(page, data_pack).run()
    assert not at.exception, at.exception
    assert not at.error


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_with_a_run(page, data_pack, trained_run, monkeypatch):
    monkeypatch.setenv("CXR_CHECKPOINTS", str(trained_run[0]))
    at = app(page, data_pack).run()
    assert not at.exception, at.exception
    assert not at.error
    if page == "landscape":  # heavy work starts on request, then is cached in the run folder
        assert any("not built yet" in i.value for i in at.info) and not at.metric
        at.button(key="landscape.build").click().run()
        assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
        again = app(page, data_pack).run()  # a new session opens the cached landscape without asking
        assert not any(b.key == "landscape.build" for b in again.button) and len(again.metric) == 3
    if page == "results":
        assert any(df.value.shape[0] >= 2 for df in at.dataframe)  # the AUC table
    if page == "landscape":
        assert len(at.metric) == 3 and len(at.get("vega_lite_chart")) == 3  # t-SNE, SOM, shares
    if page == "heatmaps":
        assert len(at.get("image")) == 12  # the top-12 gallery
    if page == "overview":
        assert "tiny" in at.dataframe[-1].value["run"].tolist()


def test_heatmaps_details_show_every_class_map(data_pack, trained_run, monkeypatch):
    monkeypatch.setenv("CXR_CHECKPOINTS", str(trained_run[0]))
    at = app("heatmaps", data_pack).run()
    at.button(key="heatmaps.pick.0").click().run()
    assert not at.exception, at.exception
    n_classes = len(at.selectbox(key="heatmaps.class").options)
    assert len(at.get("image")) == 12 + 1 + n_classes  # gallery, the original, one map per class
    assert any("Method cam" in c.value for c in at.caption)
    # the details follow the gallery's method, and name the image picked, not a position
    at.selectbox(key="heatmaps.method").set_value("gradcam").run()
    first = at.get("image")[0].proto.imgs[0].caption
    at.button(key="heatmaps.pick.0").click().run()
    assert not at.exception, at.exception
    assert any("Method gradcam" in c.value for c in at.caption)
    assert any(first.split(" · ")[-1] in m.value for m in at.subheader)
    at.run()  # any other interaction closes the dialog
    assert len(at.get("image")) == 12


def test_diagnose_predicts_a_dataset_image_with_a_cam(data_pack, trained_run, monkeypatch):
    monkeypatch.setenv("CXR_CHECKPOINTS", str(trained_run[0]))
    at = app("diagnose", data_pack).run()
    at.radio(key="diagnose.source").set_value("From a dataset").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="diagnose.class").value == "COVID-19"
    assert len(at.get("image")) == 2  # the original and the CAM overlay
    assert len(at.get("vega_lite_chart")) == 1  # the probabilities


def test_diagnose_says_when_a_film_is_the_runs_own_and_when_its_maps_are_too_coarse(data_pack, trained_run,
                                                                                      monkeypatch, tmp_path):
    """Issue 37, N6: a 64-px run's CAM carries the 2x2-grid caveat of Heatmaps and Audit; a film that is
    one of the run's own images is named as such, picked from a dataset (by its file) or uploaded (by
    its pixels, on request)."""
    import pandas as pd

    ck, name = trained_run
    monkeypatch.setenv("CXR_CHECKPOINTS", str(ck))
    test = pd.read_csv(ck / name / "predictions_test.csv")
    at = app("diagnose", data_pack).run()
    at.radio(key="diagnose.source").set_value("From a dataset").run()
    picker = at.selectbox(key="diagnose.pick")
    own = next(k for k, text in enumerate(picker.options) if text.split(" · ")[1] in set(test["image"]))
    picker.select_index(own).run()
    assert not at.exception, at.exception
    warns = " ".join(w.value for w in at.warning)
    assert "2x2 feature grid" in warns and "too coarse" in warns, warns
    assert f"one of the images {name} was tested on" in warns and "the same file" in warns, warns
    # uploaded: the same film, found by its pixels when asked
    at.radio(key="diagnose.source").set_value("Upload").run()
    image = Path(test["path"].iloc[0])
    # AppTest cannot upload a file: the rule the page calls on an upload, called directly
    from engine.data.images import read_xray
    from engine.data.membership import by_pixels, caveat, run_frames
    from engine import ExperimentConfig
    from engine.runs.registry import Registry

    frame = run_frames(ExperimentConfig.from_dict(Registry(ck).require(name).config))
    match = by_pixels(frame, read_xray(image), cache_dir=tmp_path / "hashes")
    assert match and match["split"] == "test" and match["image"] == test["image"].iloc[0]
    assert "pixel correlation" in match["how"] and "tested on" in caveat(match, name)
    other = np.random.default_rng(0).integers(0, 255, (128, 128), dtype=np.uint8)
    assert by_pixels(frame, other, cache_dir=tmp_path / "hashes") is None


def test_train_form_names_the_invalid_field(data_pack):
    at = app("train", data_pack).run()
    at.selectbox(key="train.preset").set_value("covid-scratch").run()
    at.text_input(key="train.f.lr").input("fast")
    at.text_input(key="train.f.epochs").input("0")
    at.button[0].click().run()
    errors = " ".join(e.value for e in at.error)
    assert "**lr**" in errors and "expected float" in errors
    assert Registry().list() == []


def test_the_held_out_origin_is_picked_from_the_collections_origins(data_pack):
    at = app("train", data_pack).run()
    at.selectbox(key="train.preset").set_value("covid-scratch").run()
    picker = at.selectbox(key="train.f.holdout_source")
    labels = picker.options  # as shown: "host · N images, P COVID-19", largest first
    assert picker.value == "" and labels[0].startswith("(none") and not any(x.startswith("unknown") for x in labels)
    assert any(x.startswith("radiopaedia.org · ") and x.endswith(" COVID-19") for x in labels)
    picker.set_value("github.com")
    at.text_input(key="train.f.lr").input("fast")  # refused: nothing starts, the form's values stay
    at.button[0].click().run()
    assert "**lr**" in " ".join(e.value for e in at.error) and Registry().list() == []
    assert at.selectbox(key="train.f.holdout_source").value == "github.com"  # the value is the host itself
    # a ChestX-ray14 preset cannot hold an origin out: no picker there
    at.selectbox(key="train.preset").set_value("nih-resnet50-scratch").run()
    assert not at.exception, at.exception
    assert not [w for w in at.selectbox if w.key == "train.f.holdout_source"]
    # a value from elsewhere ("Train again" on a run trained on another copy) is kept and said, not snapped back
    at = app("train", data_pack)
    at.session_state["train.preset"] = "covid-scratch"
    at.session_state["train.form_preset"] = "covid-scratch"
    at.session_state["train.f.holdout_source"] = "old.example.org"
    at.run()
    assert not at.exception, at.exception
    picker = at.selectbox(key="train.f.holdout_source")
    assert picker.value == "old.example.org" and "old.example.org (not in this collection)" in picker.options


def test_train_form_starts_a_run_that_succeeds(data_pack):
    at = app("train", data_pack).run()
    at.selectbox(key="train.preset").set_value("covid-scratch").run()
    assert at.selectbox(key="train.f.arch").value == "densenet121"  # the preset's own, not the first preset's
    at.selectbox(key="train.f.arch").set_value("tiny")  # the tiny test model trains the run
    for key, value in {"epochs": "1", "image_size": "64", "max_images_per_split": "32", "batch_size": "16"}.items():
        at.text_input(key=f"train.f.{key}").input(value)
    at.text_input(key="train.f.load_size").input("64")
    at.text_input(key="train.f.num_workers").input("0")
    at.text_input(key="train.f.bootstrap").input("20")
    at.text_input(key="train.name").input("from-form")
    at.button[0].click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    reg = Registry()
    t0 = time.time()
    while time.time() - t0 < 240 and reg.get("from-form").status in ("queued", "running"):
        time.sleep(0.5)
    row = reg.get("from-form")
    assert row.status == "succeeded", (row.error, (reg.run_dir("from-form") / "process.log").read_text()[-2000:])
    assert row.config["data"]["image_size"] == 64 and row.preset == "covid-scratch"
    # the preset's own defaults, not those of the preset shown first; the arch as picked
    assert row.config["model"]["arch"] == "tiny" and row.config["optim"]["lr"] == 1e-4


def test_the_train_pages_live_view_only_reads(data_pack):
    """The monitor's refresh never starts runs: a queued run stays queued (with its place in the
    queue shown) until a submission, a resume, a finishing trainer or the user's click starts it."""
    from engine.config import from_preset

    reg = Registry()
    reg.create("waiting", from_preset("covid-scratch", {"covid_root": str(data_pack / "covid")}).to_dict(),
               "covid-scratch")
    at = app("train", data_pack).run()
    assert not at.exception, at.exception
    at.run()  # a second refresh
    assert reg.get("waiting").status == "queued"
    assert any("waiting in the queue: 0 queued ahead, 0 running" in str(p.proto) for p in at.get("progress"))
    assert at.button(key="schedule.waiting") is not None


def test_the_monitor_follows_the_run_just_started(data_pack):
    reg = Registry()
    reg.create("older", {"data": {"image_size": 64}, "model": {"arch": "densenet121", "init": "scratch"},
                         "train": {"epochs": 1}}, "covid-scratch")
    reg.transition("older", "running")
    reg.transition("older", "succeeded")
    at = app("train", data_pack).run()
    assert at.selectbox(key="train.monitor_run").value == "older"
    at.selectbox(key="train.preset").set_value("covid-scratch").run()
    at.selectbox(key="train.f.arch").set_value("tiny")
    for key, value in {"epochs": "1", "image_size": "32", "max_images_per_split": "16", "load_size": "32",
                       "num_workers": "0", "bootstrap": "10"}.items():
        at.text_input(key=f"train.f.{key}").input(value)
    at.text_input(key="train.name").input("newer")
    at.button[0].click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.selectbox(key="train.monitor_run").value == "newer"
    assert any("newer" in m.value for m in at.markdown)
    t0 = time.time()
    while time.time() - t0 < 240 and reg.get("newer").status in ("queued", "running"):
        time.sleep(0.5)
    at.run()  # the status shown is current, not the one of the first draw
    assert at.selectbox(key="train.monitor_run").value == "newer"
    assert "succeeded" in [m.value for m in at.metric]


def test_the_train_monitor_opens_on_the_run_training_not_the_newest_queued(data_pack):
    """Issue 37, N12: with one run training and a newer one waiting, Train opened on the waiting one.
    One run at a time (the default): the waiting one stays queued while this process holds the slot."""
    reg = Registry()
    cfg = {"data": {"image_size": 64}, "model": {"arch": "densenet121", "init": "scratch"}, "train": {"epochs": 1}}
    reg.create("training", cfg, "covid-scratch")
    reg.transition("training", "running", pid=os.getpid(), heartbeat=time.time())  # alive: this process
    time.sleep(0.01)
    reg.create("waiting", cfg, "covid-scratch")
    at = app("train", data_pack).run()
    assert not at.exception, at.exception
    assert at.selectbox(key="train.monitor_run").options[0] == "waiting"  # newest first in the list
    assert at.selectbox(key="train.monitor_run").value == "training"


def test_a_run_picked_in_the_train_monitor_stays_picked(data_pack):
    """Issue 23 N1: with two runs, picking the older one in Train's Run list returned to the other."""
    reg = Registry()
    for name in ("older", "newer"):
        reg.create(name, {"data": {"image_size": 64}, "model": {"arch": "densenet121", "init": "scratch"},
                          "train": {"epochs": 1}}, "covid-scratch")
        time.sleep(0.01)
    at = app("train", data_pack)
    at.session_state["app.selected_run"] = "newer"  # the run just submitted
    at.run()
    assert at.selectbox(key="train.monitor_run").value == "newer"
    at.selectbox(key="train.monitor_run").set_value("older").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="train.monitor_run").value == "older"
    assert any("older" in m.value for m in at.markdown)
    at.run()  # the next refresh keeps it too
    assert at.selectbox(key="train.monitor_run").value == "older"
    assert at.session_state["app.selected_run"] == "older"


def test_sidebar_roots_reach_an_open_form(data_pack):
    at = app("train").run()  # no roots yet
    at.selectbox(key="train.preset").set_value("covid-scratch").run()
    assert at.text_input(key="train.f.covid_root").value == ""
    at.session_state["data.covid_root"] = str(data_pack / "covid")  # typed in the sidebar afterwards
    at.run()
    assert at.text_input(key="train.f.covid_root").value == str(data_pack / "covid")


def test_every_invalid_field_is_reported_at_once(data_pack):
    at = app("train", data_pack).run()
    at.selectbox(key="train.preset").set_value("covid-scratch").run()
    at.text_input(key="train.f.lr").input("fast")
    at.text_input(key="train.f.epochs").input("0")
    at.text_input(key="train.f.batch_size").input("-4")
    at.text_input(key="train.f.seed").input("1.5")
    at.button[0].click().run()
    text = " ".join(e.value for e in at.error)
    for field in ("**lr**", "**epochs**", "**batch_size**", "**seed**"):
        assert field in text, text
    assert Registry().list() == []


def test_a_transfer_run_picks_its_parent_from_a_list_and_can_wait_for_it(data_pack):
    import os

    from engine.config import from_preset

    reg = Registry()
    reg.create("nih-parent", from_preset("nih-densenet121-imagenet", {"init": "scratch"}).to_dict(),
               "nih-densenet121-imagenet", status="running", pid=os.getpid())  # still training
    at = app("train", data_pack).run()
    at.selectbox(key="train.preset").set_value("covid-from-nih").run()
    init = at.selectbox(key="train.f.init")
    assert "nih-parent · running · densenet121" in init.options and init.value == ""
    at.text_input(key="train.name").input("child")
    at.button[0].click().run()
    assert any("**init**" in e.value for e in at.error)  # no parent chosen yet
    at.selectbox(key="train.f.init").set_value("nih-parent")
    at.button[0].click().run()
    assert not at.error, [e.value for e in at.error]
    child = reg.get("child")
    assert child.status == "queued" and child.depends_on == "nih-parent"
    assert any("waits for its parent nih-parent" in str(p.proto) for p in at.get("progress"))
    reg.transition("nih-parent", "failed", error="stopped by the test")
    reg.transition("child", "cancelled")


def test_a_parent_of_another_architecture_is_refused_with_a_fix(data_pack):
    """covid-from-nih (DenseNet-121) from a ResNet-50 run: refused before anything is recorded (it used to
    record a run that failed at start), with a button that sets arch to the parent's."""
    from engine.config import from_preset

    reg = Registry()
    reg.create("nih-rn50", from_preset("nih-resnet50-scratch", {}).to_dict(), "nih-resnet50-scratch",
               status="queued")
    at = app("train", data_pack).run()
    at.selectbox(key="train.preset").set_value("covid-from-nih").run()
    at.selectbox(key="train.f.init").set_value("nih-rn50")
    at.text_input(key="train.name").input("child")
    at.button[0].click().run()
    assert any("'nih-rn50' is a resnet50_own model" in e.value.replace("\\", "") for e in at.error), \
        [e.value for e in at.error]
    assert reg.get("child") is None
    at.button(key="train.use_parent_arch").click().run()
    assert at.selectbox(key="train.f.arch").value == "resnet50_own"
    reg.transition("nih-rn50", "cancelled")


def test_offline_imagenet_is_caught_before_a_run_is_recorded(data_pack, monkeypatch):
    import engine.models.build as build

    monkeypatch.setattr(build, "imagenet_weights_missing",
                        lambda arch, fetch=True: f"place {arch}-weights.pth in /hub/checkpoints (download URL)")
    at = app("train", data_pack).run()
    at.selectbox(key="train.preset").set_value("nih-densenet121-imagenet").run()
    at.button[0].click().run()
    assert any("ImageNet weights of densenet121 are missing" in e.value and "densenet121-weights.pth" in e.value
               for e in at.error)
    assert Registry().list() == []
    at.button(key="train.use_scratch").click().run()
    assert at.selectbox(key="train.f.init").value == "scratch"


def test_form_values_are_shown_as_text_not_markdown(data_pack):
    """A value such as a Markdown image must not make the browser fetch anything."""
    at = app("train", data_pack).run()
    at.selectbox(key="train.preset").set_value("covid-scratch").run()
    at.text_input(key="train.f.lr").input("![x](http://127.0.0.1:9/x.png)")
    at.button[0].click().run()
    text = " ".join(e.value for e in at.error)
    assert "**lr**" in text and "![x](" not in text and "\\!\\[x\\]" in text


def test_results_set_a_covid_run_beside_the_studys_table_2_by_its_settings(trained_run, tmp_path, monkeypatch):
    from engine.published import study_counterpart

    assert study_counterpart({"data": {"task": "covid"},
                              "model": {"arch": "densenet121", "init": "scratch"}}) == "covid-scratch"
    # a preset overridden to another init is matched by what it ran, not by its name
    assert study_counterpart({"data": {"task": "covid"},
                              "model": {"arch": "densenet121", "init": "nih-run"}}) == "covid-from-nih"
    assert study_counterpart({"data": {"task": "nih"}, "model": {"arch": "densenet121", "init": "scratch"}}) is None
    monkeypatch.setenv("CXR_CHECKPOINTS", str(as_study_densenet(trained_run, tmp_path / "ck")))
    at = app("results").run()
    assert not at.exception, at.exception
    table = next(df.value for df in at.dataframe if "COVID-19 AUC" in df.value.columns)
    assert table["experiment"].iloc[0] == "ours: tiny" and len(table) == 5
    assert any("DenseNet-121 not pretrained" in m.label for m in at.metric)
    assert at.multiselect(key="results.compare").options == []  # the viewed run is not offered: always included
    assert any("tiny" in df.value.columns for df in at.dataframe)  # the comparison pivot has the viewed run


def test_the_progress_bar_never_jumps_back_in_the_final_phases():
    from engine.runs.details import progress_text

    base = {"epoch": 3, "epochs": 3}
    train = progress_text({**base, "phase": "train", "step": 9, "steps": 10})
    val = progress_text({**base, "phase": "validate", "step": 1, "steps": 4})
    final = progress_text({**base, "phase": "final test", "step": 0, "steps": 0})
    assert train[0] < val[0] <= final[0] == 1.0
    assert "step 0/0" not in final[1] and "starting" in final[1] and "training done" in final[1]


def test_sessions_share_chart_specs_and_the_server_settings_hold(data_pack, trained_run, monkeypatch):
    """Issue 14 (20): ten sessions on one page built and validated every chart ten times; a spec is now
    built once for the same data and shared. And no full GC or source polling per page run."""
    import tomllib

    from dashboard import cache
    from dashboard.__main__ import SAFE
    from engine import figures as charts

    monkeypatch.setenv("CXR_CHECKPOINTS", str(trained_run[0]))
    built = []
    real = charts.roc_chart
    monkeypatch.setattr(charts, "roc_chart", lambda *a, **k: built.append(1) or real(*a, **k))
    cache.chart_spec.clear()  # earlier tests in this process may have drawn these charts already
    counts = []
    for _ in range(3):  # three sessions opening Results on the same run
        at = app("results", data_pack).run()
        assert not at.exception and len(at.get("vega_lite_chart")) >= 1
        counts.append(len(built))
    assert counts[0] >= 1 and counts[2] == counts[0]  # the first session built its ROC charts; the others reused them
    cfg = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert cfg["runner"]["postScriptGC"] is False and cfg["server"]["fileWatcherType"] == "none"
    flags = dict(zip(SAFE[::2], SAFE[1::2]))
    assert flags["--runner.postScriptGC"] == "false" and flags["--server.fileWatcherType"] == "none"


def test_a_root_typed_in_the_sidebar_is_kept_for_new_tabs_and_the_cli(data_pack, tmp_path, monkeypatch):
    """Issue 23 N7: the sidebar's data roots were empty on every new tab or reload."""
    from engine.data.roots import resolve_root
    from engine.settings import settings_path

    at = app("overview").run()
    assert at.text_input(key="data.covid_root").value == ""
    at.text_input(key="data.covid_root").input(str(data_pack / "covid")).run()
    assert not at.exception, at.exception
    again = app("overview").run()  # a reload: a new session
    assert again.text_input(key="data.covid_root").value == str(data_pack / "covid")
    assert resolve_root("covid") == (data_pack / "covid").resolve()  # the CLI reads it too
    monkeypatch.setenv("CXR_COVID_ROOT", str(tmp_path))  # the environment still wins
    assert resolve_root("covid") == tmp_path.resolve()
    monkeypatch.delenv("CXR_COVID_ROOT")
    again.text_input(key="data.covid_root").input(str(tmp_path / "typo")).run()
    assert any("Not saved" in c.value for c in again.caption)  # not a folder: said, the saved root kept
    assert app("overview").run().text_input(key="data.covid_root").value == str(data_pack / "covid")
    assert settings_path().parent == tmp_path / "config"


def test_diagnose_never_quietly_picks_a_run_still_training(tmp_path):
    """Issue 23 N6: Diagnose and Landscape quietly picked a run that was still training."""
    reg = Registry()
    for name, status in (("done", "succeeded"), ("busy", "running")):  # "busy" is the newest
        reg.create(name, {}, None)
        reg.transition(name, "running")
        if status == "succeeded":
            reg.transition(name, "succeeded")
        (reg.run_dir(name) / "best.pt").write_bytes(b"x")
        time.sleep(0.01)
    at = dashboard_app("diagnose").run()
    assert not at.exception, at.exception
    box = at.selectbox(key="diagnose.run")
    assert box.value == "done" and "busy (still training)" in box.options
    box.set_value("busy").run()
    assert any("busy is still training" in c.value for c in at.caption)


def test_changing_the_preset_clears_the_run_name_typed_for_the_old_one(data_pack):
    """Issue 23 N13: the run name was kept when the preset changed."""
    at = dashboard_app("train", data_pack=data_pack).run()
    at.selectbox(key="train.preset").set_value("covid-scratch").run()
    at.text_input(key="train.name").input("my-covid-run").run()
    at.selectbox(key="train.preset").set_value("nih-resnet50-scratch").run()
    assert not at.exception and at.text_input(key="train.name").value == ""


def test_the_overview_folds_a_studys_runs_into_one_line():
    """Issue 37, N8: a stopped study left 27 cancelled rows crowding the Overview; its runs fold into one
    line per study (and repeat), which a switch unfolds."""
    from engine.study.names import study_keys, study_of

    keys = study_keys()
    assert study_of("study-t2-from-nih", keys) == ("study", 0) and study_of("mine-r2-t2-scratch-f50", keys) == ("mine", 2)
    assert study_of("study-t2-scratch-out-github-com", keys) == ("study", 0) and study_of("browser-run", keys) is None
    reg = Registry()
    for name, status in (("study-t2-from-nih", "succeeded"), ("study-t2-scratch", "cancelled"),
                         ("study-s53-combined15", "cancelled"), ("own-run", "succeeded")):
        reg.create(name, {"model": {"arch": "tiny"}, "train": {"epochs": 1}}, "covid-scratch")
        reg.transition(name, "running", status, started=time.time() - 60, finished=time.time())
    at = app("overview").run()
    assert not at.exception, at.exception
    runs = next(df.value for df in at.dataframe if "run" in df.value.columns and "disk (MB)" in df.value.columns)
    assert sorted(runs["run"]) == ["own-run", "study (study, 3 runs)"]
    line = runs[runs["run"] == "study (study, 3 runs)"].iloc[0]
    assert line["status"] == "2 cancelled, 1 succeeded" and line["preset"] == "study"
    at.toggle(key="overview.fold").set_value(False).run()
    runs = next(df.value for df in at.dataframe if "run" in df.value.columns and "disk (MB)" in df.value.columns)
    assert len(runs) == 4 and "study" not in runs.columns
