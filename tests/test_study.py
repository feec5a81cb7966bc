"""The study graph: ordering, children waiting for and blocked by their parent, reuse, resume,
missing ImageNet weights; the scale files; compare; and the whole study on the shared pack
(killed mid-way and continued) with its page and report."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, dashboard_app, ms, run_cli, warm_cache
from engine.runs.registry import Registry
from engine.study.graph import plan, status
from engine.study.spec import SpecError, changes_from_full, load_spec


@pytest.fixture
def offline_queue(monkeypatch):
    """The graph's decisions without training: nothing is started, ImageNet weights are absent."""
    import engine.runs.jobs as jobs
    import engine.study.graph as graph

    monkeypatch.setattr(jobs, "schedule", lambda reg=None: [])
    monkeypatch.setattr(graph, "schedule", lambda reg=None: [])
    monkeypatch.setattr(graph, "imagenet_missing", lambda arch, fetch: f"place {arch}.pth in /hub")
    monkeypatch.setattr(graph, "xrv_missing", lambda init, fetch: f"the torchxrayvision weights {init} are not here")


def _cells(cells):
    return {c.key: c for c in cells}


def test_the_scales_ship_validated_and_the_pack_lists_its_changes():
    pack, full = load_spec("pack"), load_spec("full")
    assert [e.key for e in full.experiments] == ["t1-resnet50-scratch", "t1-resnet50-imagenet",
                                                 "t1-densenet121-imagenet",
                                                 "t2-from-nih", "t2-from-imagenet", "t2-scratch", "t2-from-xrv",
                                                 "s53-combined15", "fw-pneumonia-from-nih", "fw-pneumonia-scratch",
                                                 "t2-from-nih-f25", "t2-from-nih-f50", "t2-scratch-f25", "t2-scratch-f50"]
    assert "no COVID-19 root is configured" in full.notes[0]  # held-out origins need the collection's metadata
    assert full.experiment("t2-scratch-f25").overrides["train_fraction"] == 0.25
    assert full.experiment("t2-from-xrv").overrides["init"] == "xrv:densenet121-res224-all"  # the fourth arm
    assert full.experiment("t2-from-nih").init_from == ["t1-densenet121-imagenet"]
    changes = "\n".join(changes_from_full(pack))
    assert "image_size 224 -> 96" in changes and "epochs 100 -> 12" in changes
    assert "pack-densenet121-scratch: added at this scale" in changes
    assert changes_from_full(full) == []


@pytest.mark.parametrize("edit,message", [
    (lambda s: s["experiments"][0].update(preset="nope"), "unknown preset"),
    (lambda s: s["experiments"][3].update(init_from=["s53-combined15"]), "must be an experiment listed before"),
    (lambda s: s["experiments"][0]["overrides"].update(epochs="many"), "invalid epochs"),
    (lambda s: s["comparisons"].append({"a": "x", "b": "t2-scratch", "what": "x vs scratch"}), "unknown experiment"),
    (lambda s: s["comparisons"][0].update(images="some"), "images must be one of same, common"),
])
def test_a_broken_study_file_is_refused_naming_the_file(tmp_path, edit, message):
    raw = json.loads((REPO / "engine" / "study" / "scales" / "full.json").read_text())
    edit(raw)
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(SpecError, match=message) as err:
        load_spec(str(path))
    assert str(path) in str(err.value)


def test_the_graph_queues_children_behind_their_parent(tiny_nih, tiny_covid, offline_queue):
    reg, spec = Registry(), load_spec("pack")
    roots = {"nih": tiny_nih, "covid": tiny_covid}
    cells = _cells(plan(spec, "s", reg, roots, submit=True))
    assert cells["t1-densenet121-imagenet"].state == "needs weights"
    assert "place densenet121.pth in /hub" in cells["t1-densenet121-imagenet"].describe()
    assert cells["t2-from-imagenet"].state == "needs weights"
    assert cells["t1-resnet50-scratch"].state == "queued"
    child = cells["t2-from-nih"]
    assert child.parent == "s-pack-densenet121-scratch" and child.state == "waiting"
    assert reg.get("s-t2-from-nih").depends_on == "s-pack-densenet121-scratch"
    assert cells["s53-combined15"].state == "waiting"
    claimed = [reg.claim_next(10) for _ in range(12)]  # however many slots, no child before its parent
    assert "s-t2-from-nih" not in claimed and "s-s53-combined15" not in claimed
    assert set(filter(None, claimed)) == {"s-t1-resnet50-scratch", "s-pack-densenet121-scratch", "s-t2-scratch",
                                          "s-fw-pneumonia-scratch", "s-t2-scratch-f25", "s-t2-scratch-f50"}
    # the parent fails: its children are blocked, naming it
    reg.transition("s-pack-densenet121-scratch", "failed", error="OSError: disk full")
    cells = _cells(status(spec, "s", reg))
    assert cells["t2-from-nih"].state == "blocked"
    assert "s-pack-densenet121-scratch is failed" in cells["t2-from-nih"].detail
    assert reg.claim_next(10) is None
    # resumed and finished: the children can start
    reg.transition("s-pack-densenet121-scratch", "queued", "running")
    reg.transition("s-pack-densenet121-scratch", "succeeded")
    assert {reg.claim_next(10) for _ in range(6)} == {"s-t2-from-nih", "s-s53-combined15", "s-fw-pneumonia-from-nih",
                                                      "s-t2-from-nih-f25", "s-t2-from-nih-f50", None}


def test_a_custom_graph_reports_its_own_runs_and_exits_non_zero_when_blocked(tiny_nih, tiny_covid, offline_queue,
                                                                            tmp_path, capsys):
    """Issue 22 R3: with covid-from-nih under an nih-resnet50-scratch parent, the study called its own
    child "other settings" (the child takes its parent's architecture), never reported it blocked when
    the parent failed, and exited 0."""
    from engine.cli import main

    spec_path = tmp_path / "mine.json"
    pack = json.loads((REPO / "engine" / "study" / "scales" / "pack.json").read_text())
    keep = {"t1-resnet50-scratch", "t2-from-nih"}
    pack["experiments"] = [e for e in pack["experiments"] if e["key"] in keep]
    for e in pack["experiments"]:
        if e["key"] == "t2-from-nih":
            e["init_from"] = ["t1-resnet50-scratch"]
    pack["comparisons"] = []
    pack.pop("learning_curve"), pack.pop("leave_one_source_out")
    spec_path.write_text(json.dumps(pack))
    roots = ["--nih-root", str(tiny_nih), "--covid-root", str(tiny_covid)]
    assert main(["study", "--scale", str(spec_path), "--name", "m", "--no-wait", *roots]) == 0
    reg = Registry()
    cells = _cells(status(load_spec(str(spec_path)), "m", reg))
    assert cells["t2-from-nih"].state == "waiting", cells["t2-from-nih"].describe()  # not "other settings"
    assert reg.get("m-t2-from-nih").config["model"]["arch"] == "resnet50_own"
    reg.transition("m-t1-resnet50-scratch", "running")
    reg.transition("m-t1-resnet50-scratch", "failed", error="RuntimeError: boom")
    capsys.readouterr()
    assert main(["study", "--scale", str(spec_path), "--name", "m", "--no-wait", *roots]) == 1
    err = capsys.readouterr().err
    assert "m-t2-from-nih: blocked" in err and "m-t1-resnet50-scratch is failed" in err and "exit 1" in err
    assert main(["study", "status", "--scale", str(spec_path), "--name", "m"]) == 0  # a question, not a run


def test_running_the_graph_again_reuses_resumes_and_reports(tiny_nih, tiny_covid, offline_queue):
    reg, spec = Registry(), load_spec("pack")
    roots = {"nih": tiny_nih, "covid": tiny_covid}
    plan(spec, "s", reg, roots, submit=True)
    reg.transition("s-t1-resnet50-scratch", "running")
    reg.transition("s-t1-resnet50-scratch", "succeeded")
    reg.transition("s-t2-scratch", "running")
    reg.transition("s-t2-scratch", "cancelled", error="cancelled by signal SIGTERM")
    reg.transition("s-pack-densenet121-scratch", "running")
    reg.transition("s-pack-densenet121-scratch", "failed", error="RuntimeError: out of memory")
    before = {r.name: r.created for r in reg.list()}
    cells = _cells(plan(spec, "s", reg, roots, submit=True))
    assert cells["t1-resnet50-scratch"].state == "finished"           # reused, not redone
    assert cells["t2-scratch"].state == "queued" and "resumed" in cells["t2-scratch"].detail
    assert cells["pack-densenet121-scratch"].state == "failed"
    assert "out of memory" in cells["pack-densenet121-scratch"].detail
    assert cells["t2-from-nih"].state == "blocked"
    assert {r.name: r.created for r in reg.list()} == before    # no run was added
    other = load_spec("pack")
    other.common = {**other.common, "image_size": 48}
    cells = _cells(plan(other, "s", reg, roots, submit=False))
    assert cells["t1-resnet50-scratch"].state == "other settings"
    assert "image_size 96 vs 48" in cells["t1-resnet50-scratch"].detail


def test_compare_refuses_runs_scored_on_different_images(tmp_path):
    import pandas as pd

    from engine.evaluation.compare import ComparisonError, compare_runs

    reg = Registry()
    for name, images in (("a", ["x1", "x2", "x3", "x4"]), ("b", ["x1", "x2", "x3", "x9"])):
        reg.create(name, {"data": {"task": "covid"}}, None)
        pd.DataFrame({"image": images, "dataset": "covid", "patient_id": [1, 2, 3, 4], "split": "test", "path": "",
                      "target_COVID-19": [1, 0, 1, 0], "prob_COVID-19": [0.9, 0.2, 0.6, 0.4]}).to_csv(
            reg.folder(name).predictions("test"), index=False)
    with pytest.raises(ComparisonError, match="different images: a has 4 test images, b has 4, 3 in common"):
        compare_runs(reg, "a", "b")
    from engine.cli import main

    assert main(["compare", "a", "b"]) == 2
    with pytest.raises(ComparisonError, match="3 test images in common .*fewer than 20"):
        compare_runs(reg, "a", "b", images="common")


def test_runs_scored_on_different_sets_compare_on_the_images_both_scored(capsys):
    """The 15-class model and the COVID-19-vs-not model: test sets that overlap (the 15-class one adds
    NIH images); on request they are compared on the images in common, and the result says so."""
    import numpy as np
    import pandas as pd

    from engine.cli import main
    from engine.evaluation.compare import compare_runs

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    reg = Registry()
    for name, extra, signal_ in (("wide", 40, 1.5), ("narrow", 0, 0.1)):
        images = [f"c{i}" for i in range(60)] + [f"n{i}" for i in range(extra)]
        target = np.r_[y, np.zeros(extra)]
        prob = 1 / (1 + np.exp(-(signal_ * (2 * target - 1) + rng.normal(0, 1, len(target)))))
        reg.create(name, {"data": {"task": "covid"}}, None)
        pd.DataFrame({"image": images, "dataset": ["covid"] * 60 + ["nih"] * extra, "patient_id": range(len(images)),
                      "split": "test", "path": "", "target_COVID-19": target, "prob_COVID-19": prob}).to_csv(
            reg.folder(name).predictions("test"), index=False)
    out = compare_runs(reg, "wide", "narrow", "COVID-19", n_boot=200, images="common")
    assert out["images"] == 60 and out["positives"] + out["negatives"] == 60
    assert out["images_note"] == "on the 60 test images both runs scored (wide was scored on 100, narrow on 60)"
    assert out["images_note"] in out["test"] and out["diff"] > 0
    assert main(["compare", "wide", "narrow", "--common"]) == 0
    assert "60 images" in capsys.readouterr().out


# -- the whole study on the shared pack -----------------------------------------------------
def tiny_scale(path):
    """The pack scale made tiny: the tiny test model at 32 px, 16 images per split, one epoch (the rows
    that need ImageNet or torchxrayvision weights keep their architecture: they are not trained here)."""
    raw = json.loads((REPO / "engine" / "study" / "scales" / "pack.json").read_text())
    raw["scale"] = "tiny"
    raw["common"] = {"image_size": 32, "load_size": 32, "bootstrap": 20, "max_images_per_split": 16,
                     "num_workers": 0, "epochs": 1, "checkpoint_minutes": 0}
    for e in raw["experiments"]:
        e["overrides"].pop("epochs", None)
        needs_weights = "imagenet" in e["preset"] and e["overrides"].get("init") != "scratch"
        if not needs_weights and "arch" not in e["overrides"]:  # rows that train: the tiny test model
            e["overrides"]["arch"] = "tiny"
    raw["learning_curve"] = {"fractions": [0.5], "experiments": ["t2-scratch"]}
    raw["leave_one_source_out"] = {"experiment": "t2-scratch", "min_images": 95, "min_per_label": 5}  # radiopaedia.org
    path.write_text(json.dumps(raw))
    return path


@pytest.fixture(scope="session")
def finished_study(tmp_path_factory, data_pack, _pack_hash_journal):
    """The tiny study run from the CLI, its command killed with -9 after the first run finished and
    started again: (checkpoints dir, scale file, {run: started} of runs finished before the kill)."""
    base = tmp_path_factory.mktemp("study")
    ck, scale = base / "checkpoints", tiny_scale(base / "tiny.json")
    cache = warm_cache(base / "cache", _pack_hash_journal)
    env = {**os.environ, "CXR_CHECKPOINTS": str(ck), "CXR_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "engine", "study", "--scale", str(scale), "--nih-root", str(data_pack / "nih"),
           "--covid-root", str(data_pack / "covid"), "--bootstrap", "200"]
    first = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    reg = Registry(ck)
    t0 = time.time()
    while time.time() - t0 < 300 and not any(r.status == "succeeded" for r in reg.list()):
        time.sleep(0.5)
    os.killpg(first.pid, signal.SIGKILL)  # the study command dies; its runs are processes of their own
    first.wait()
    done_before = {r.name: r.started for r in reg.list() if r.status == "succeeded"}
    assert done_before, "no run finished within 5 minutes"
    out = subprocess.run(cmd + ["--json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.lstrip().startswith("{"), (out.stdout[:500], out.stderr[-1500:])
    return ck, scale, done_before, json.loads(out.stdout)


@pytest.mark.slow
def test_the_study_on_the_pack_continues_after_a_kill_and_fills_its_tables(finished_study, tmp_path, data_pack):
    ck, scale, done_before, results = finished_study
    reg = Registry(ck)
    for name, started in done_before.items():  # finished runs were reused, not redone
        assert reg.get(name).started == started
    cells = {c["key"]: c for c in results["cells"]}
    for key in ("t1-resnet50-scratch", "pack-densenet121-scratch", "t2-from-nih", "t2-scratch", "s53-combined15"):
        assert cells[key]["state"] == "finished", cells[key]
        assert cells[key]["ours"] is not None and cells[key]["low"] <= cells[key]["ours"] <= cells[key]["high"]
    for key in ("t1-resnet50-imagenet", "t1-densenet121-imagenet", "t2-from-imagenet"):
        assert cells[key]["state"] == "needs weights" and ".pth in " in cells[key]["text"]
    assert reg.get("study-t2-from-nih").config["model"]["init"].endswith("study-pack-densenet121-scratch/best.pt")
    comps = {c["what"].split(" (")[0]: c for c in results["comparisons"]}
    c = comps["COVID-19: from ChestX-ray14 vs scratch"]
    assert 0 <= c["p"] <= 1 and c["low"] <= c["high"]
    assert "p = " in c["verdict"] or "p < " in c["verdict"]
    assert c["images"] == 16 and c["delong"]["se"] >= 0
    for key in ("fw-pneumonia-from-nih", "fw-pneumonia-scratch", "t2-scratch-f50", "t2-scratch-out-radiopaedia-org"):
        assert cells[key]["state"] == "finished", cells[key]
    assert set(cells["fw-pneumonia-scratch"]["per_class"]) == {"COVID-19", "Other viral", "Bacterial", "Fungal",
                                                                "No Finding"}
    assert "Pneumonia types" in next(x["what"] for x in results["comparisons"] if x["a"] == "study-fw-pneumonia-from-nih")
    curve = results["learning_curves"][0]
    assert curve["arm"] == "t2-scratch" and [p["fraction"] for p in curve["points"]] == [0.5, 1.0]
    assert curve["points"][0]["train_images"] < curve["points"][1]["train_images"]
    held = results["held_out"][0]
    assert held["origin"] == "radiopaedia.org" and held["internal_run"] == "study-t2-scratch" and held["auc"] is not None
    test = reg.folder(held["run"]).predictions("test")
    from engine.runs.predictions import read

    tested = read(test).info["source"]  # the origin, with its patients' (and linked patients') other images
    assert (tested == "radiopaedia.org").mean() >= 0.75
    assert "radiopaedia.org" not in set(read(reg.folder(held["run"]).predictions("val")).info["source"])
    within = cells["s53-combined15"]["collection_only"]
    assert within["images"] <= 16  # at 16 images per split the collection has too few of both labels: said so
    assert ("a score that only names the collection gets" in within["text"] if within["auc"] is not None
            else "no COVID-19-collection test image of both labels" in within["text"])
    assert "needs ImageNet weights" in comps["COVID-19: ImageNet only vs scratch"]["verdict"]
    assert "different images" in comps["COVID-19: the 15-class task vs COVID-19 vs not"]["verdict"]
    env = {"CXR_CHECKPOINTS": ck, "CXR_COVID_ROOT": data_pack / "covid"}
    out = run_cli("study", "report", "--scale", scale, "--out", tmp_path / "report", "--bootstrap", "100", env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    page = (tmp_path / "report" / "study.html").read_text()
    assert "Table 1" in page and "<svg" in page and "study-t2-from-nih" in page and "http" not in page.split("<body>")[0]
    assert json.loads((tmp_path / "report" / "study.json").read_text())["comparisons"]
    md = (tmp_path / "report" / "study.md").read_text()
    assert "## Comparisons (A - B on the same test images)" in md and "| study-t2-from-nih |" in md
    figs = sorted(p.name for p in (tmp_path / "report" / "figures").iterdir())  # one paper figure per table (N13)
    assert "study-table-2.svg" in figs and "study-table-2.png" in figs, figs
    table2 = (tmp_path / "report" / "figures" / "study-table-2.svg").read_text()
    assert "Table 2: ours beside the published value" in table2 and "percentile bootstrap over patients" in table2
    assert "figures/study-table-2.svg" in page and "(figures/study-table-2.svg)" in md
    for title in ("## Leave one source out", "## Learning curve", "## The study's future work: pneumonia types",
                  "## The 15-class task's COVID-19 AUC within the COVID-19 collection"):
        assert title in md
    out = run_cli("compare", "study-t2-from-nih", "study-t2-scratch", env=env)
    assert out.returncode == 0 and "DeLong" in out.stdout, out.stderr


@pytest.mark.slow
def test_the_study_page_shows_the_tables_and_comparisons(finished_study, monkeypatch):
    ck, scale, _, _ = finished_study
    monkeypatch.setenv("CXR_CHECKPOINTS", str(ck))
    at = dashboard_app(timeout=180)
    at.switch_page("app_pages/study.py")
    at.run()
    assert not at.exception, at.exception
    assert [s.value for s in at.subheader][:6] == ["Table 1", "Table 2", "Section 5.3", "Future work", "Learning curve",
                                                   "Comparisons"]
    assert any("no COVID-19 root is configured" in i.value for i in at.info)  # held-out origins: said why none
    states = " ".join(" ".join(t.value["state"].astype(str)) for t in at.table)
    assert "needs ImageNet weights" in states  # the pack scale's page over the tiny study: settings differ
    assert "differs from this scale" in states


@pytest.mark.slow
@pytest.mark.browser
def test_the_study_page_and_the_report_in_chromium(finished_study, tmp_path, data_pack):
    """The Study page at the tiny scale in a real browser: its tables, a comparison in words, and a
    finished run opened on the Results page; the report opens offline and shows its tables."""
    if not os.path.exists("/usr/bin/chromium"):
        pytest.skip("/usr/bin/chromium not installed (apt-get install -y chromium; .ci/run does)")
    playwright = pytest.importorskip("playwright.sync_api")
    from conftest import CHROMIUM_ARGS, serve_dashboard

    ck, scale, _, _ = finished_study
    env = {"CXR_CHECKPOINTS": str(ck), "CXR_NIH_ROOT": str(data_pack / "nih"),
           "CXR_COVID_ROOT": str(data_pack / "covid")}
    out = run_cli("study", "report", "--scale", scale, "--out", tmp_path / "report", "--bootstrap", "100", env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    with serve_dashboard(tmp_path, env) as url, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.set_default_timeout(ms(90))
        expect = playwright.expect
        expect.set_options(timeout=ms(90))
        page.goto((tmp_path / "report" / "study.html").as_uri())  # offline: a file, no server, no network
        expect(page.get_by_role("heading", name="Table 1: ChestX-ray14 test AUC per class")).to_be_visible()
        expect(page.get_by_role("heading", name="Leave one source out: trained without an origin")).to_be_visible()
        expect(page.locator("table")).to_have_count(8)
        expect(page.locator("svg").first).to_be_visible()
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        page.goto(url + "/study")
        expect(page.get_by_text("Start or continue the study")).to_be_visible()
        page.get_by_text("a study file").click()
        box = page.get_by_label("Study file (JSON)")
        box.fill(str(scale))
        box.press("Enter")
        # the first render computes every comparison's statistics (13 of them, 1000 resamples each)
        expect(page.get_by_text("COVID-19: from ChestX-ray14 vs scratch").first).to_be_visible(timeout=ms(120))
        expect(page.locator('[data-testid="stTable"]')).to_have_count(6)
        expect(page.locator('[data-testid="stTable"]').filter(has_text="radiopaedia.org")).to_be_visible()  # held out
        expect(page.get_by_text("needs ImageNet weights: place densenet121").first).to_be_visible()
        expect(page.get_by_text(" p = ").or_(page.get_by_text(" p < ")).first).to_be_visible()
        page.screenshot(path=str(tmp_path / "study.png"), full_page=True)
        page.get_by_role("button", name="Open study-t2-scratch in Results").click()
        expect(page.get_by_text("ROC curves · test")).to_be_visible()
        page.screenshot(path=str(tmp_path / "results.png"), full_page=True)
        expect(page.get_by_text("Viewing study-t2-scratch:")).to_be_visible(timeout=ms(30))  # the run opened is shown
        browser.close()


def test_malformed_study_files_are_refused_naming_the_file_and_the_field(tmp_path):
    """Issue 22 R4: these crashed `study status` and the Study page with TypeError, AttributeError or
    RecursionError tracebacks; each is now one line naming the file and the field."""
    import json

    from engine.study.spec import SpecError, SCALES_DIR, load_spec

    pack = json.loads((SCALES_DIR / "pack.json").read_text())

    def variant(change):
        raw = json.loads(json.dumps(pack))
        change(raw)
        return raw

    cases = {
        "overrides": variant(lambda r: r["experiments"][0].__setitem__("overrides", [1, 2])),
        "common": variant(lambda r: r.__setitem__("common", [1])),
        "comparisons": variant(lambda r: r.__setitem__("comparisons", "ab")),
        "comparison 1": variant(lambda r: r.__setitem__("comparisons", ["a"])),
        "published": variant(lambda r: r["experiments"][0].__setitem__("published", "0.9")),
        "'what'": variant(lambda r: r["comparisons"][0].pop("what")),
        "experiments": variant(lambda r: r.__setitem__("experiments", {"a": 1})),
        "'further_repeat_minutes'": variant(lambda r: r.__setitem__("cost", {"first_repeat_minutes": 50,
                                                                           "measured": "today"})),
    }
    for field, raw in cases.items():
        path = tmp_path / f"bad-{len(field)}-{abs(hash(field)) % 1000}.json"
        path.write_text(json.dumps(raw))
        with pytest.raises(SpecError) as err:
            load_spec(str(path))
        assert str(path) in str(err.value) and field in str(err.value), (field, str(err.value))
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(SpecError, match="nested too deep"):
        load_spec(str(deep))
    bad = tmp_path / "overrides.json"
    bad.write_text(json.dumps(cases["overrides"]))
    out = run_cli("study", "status", "--scale", bad)
    assert out.returncode == 2 and "Traceback" not in out.stderr and "'overrides' must be dict" in out.stderr


def test_the_markdown_report_reads_a_study_files_text_as_typed(tmp_path):
    """Issue 22: study.md copied a study file's raw HTML (study.html escaped it)."""
    from engine.study.report import write_report

    evil = "<img src=x onerror=alert(1)>"
    results = {"scale": "mine", "description": evil, "table1": [], "comparisons": [],
               "cells": [{"key": "k", "table": "Table 2", "label": "[click](http://evil.example)", "name": "r",
                          "state": "queued", "detail": "", "class": "COVID-19", "ours": None, "low": None,
                          "high": None, "published": 0.88, "source": "<script>alert(2)</script>"}]}
    paths = write_report(results, Registry(), tmp_path)
    import re

    for kind in ("md", "html"):  # no tag survives unescaped, and in Markdown no link
        text = paths[kind].read_text()
        assert not re.search(r"(?<!\\)<(img|script)", text), kind
    assert not re.search(r"(?<!\\)\]\(http", paths["md"].read_text())
    assert "\\<img src=x onerror=alert(1)\\>" in paths["md"].read_text()  # shown as typed, not run


def test_the_study_can_be_stopped_from_the_cli_and_the_page(tiny_nih, tiny_covid, offline_queue, capsys):
    """Issue 23 N2: the Study page queued 5 runs and nothing stopped them."""
    from engine.cli import main

    reg, spec = Registry(), load_spec("pack")
    plan(spec, "s", reg, {"nih": tiny_nih, "covid": tiny_covid}, submit=True)
    queued = sorted(r.name for r in reg.list() if r.status == "queued")
    assert len(queued) >= 3
    assert main(["study", "stop", "--name", "s"]) == 0
    assert all(f"{n}: cancelled" in capsys.readouterr().out for n in queued[:1])
    assert {r.status for r in reg.list()} == {"cancelled"}
    assert all("cancelled from the command line" in r.error for r in reg.list())
    plan(spec, "s", reg, {"nih": tiny_nih, "covid": tiny_covid}, submit=True)  # continuing resumes them
    assert {r.status for r in reg.list() if r.name in queued} == {"queued"}
    at = dashboard_app("study").run()
    at.text_input(key="study.prefix").input("s").run()
    at.button(key="study.stop").click().run()
    assert not at.exception, at.exception
    assert {r.status for r in reg.list()} == {"cancelled"}
    assert all("cancelled from the dashboard (Study page)" in r.error for r in reg.list())
    # issue 37, N8: the stop says what it stopped and what stays
    said = " ".join(i.value for i in at.info)
    assert f"Stopped {len(queued)} run(s) of study 's'" in said and "queued cancelled before they started" in said
    assert "0 finished run(s) stay" in said and "Start or continue resumes the stopped ones" in said, said
    at.button(key="study.stop").click().run()
    assert "Nothing of study 's' was queued or running" in " ".join(i.value for i in at.info)


def test_repeats_move_both_seeds_and_each_repeat_is_its_own_graph(tiny_nih, tiny_covid, offline_queue):
    """`study --repeats K`: repeat r is the same graph with the training and split seeds moved by r,
    named prefix-rR-key, its children waiting for its own parent; status finds the repeats by name;
    stop cancels every repeat."""
    from engine.study.graph import known_repeats, stop

    reg, spec = Registry(), load_spec("pack")
    cells = plan(spec, "s", reg, {"nih": tiny_nih, "covid": tiny_covid}, submit=True, repeats=3)
    assert {c.repeat for c in cells} == {0, 1, 2} and len(cells) == 3 * len(spec.experiments)
    r0, r2 = reg.get("s-t2-scratch"), reg.get("s-r2-t2-scratch")
    assert (r0.config["train"]["seed"], r0.config["data"]["split_seed"]) == (0, 0)
    assert (r2.config["train"]["seed"], r2.config["data"]["split_seed"]) == (2, 2)
    assert reg.get("s-r1-t2-from-nih").depends_on == "s-r1-pack-densenet121-scratch"
    assert known_repeats(spec, "s", reg) == 3 and len(status(spec, "s", reg)) == len(cells)
    # issue 37, N8: a new tab (or a reload) of the Study page shows the 3 repeats the registry holds
    at = dashboard_app("study")
    at.session_state["study.prefix"] = "s"
    at.run()
    assert not at.exception, at.exception
    assert at.number_input(key="study.repeats").value == 3
    again = plan(spec, "s", reg, {"nih": tiny_nih, "covid": tiny_covid}, submit=True, repeats=3)
    assert [c.state for c in again] == [c.state for c in cells]  # the same runs, not new ones
    stopped = stop(spec, "s", reg, by="a test")
    assert "s-r2-t2-scratch" in stopped and all(r.status != "queued" for r in reg.list())


def _finished(reg, name, config, probs, y, patients, train_images=300):
    import pandas as pd

    from engine.metrics import per_class_auc
    from engine.runs.predictions import Predictions

    reg.create(name, config, "covid-scratch")
    reg.transition(name, "running")
    reg.transition(name, "succeeded")
    info = pd.DataFrame({"image": [f"i{k}.png" for k in range(len(y))], "dataset": "covid", "patient_id": patients})
    Predictions.build(info, ["COVID-19"], y[:, None], probs[:, None]).write(reg.folder(name).predictions("test"))
    auc = float(per_class_auc(y[:, None], probs[:, None])[0])
    rows = [{"class": c, "auc": auc, "low": auc - 0.1, "high": auc + 0.1} for c in ("COVID-19", "mean")]
    reg.folder(name).write_metrics({"test": {"images": len(y), "auc": rows}, "train_images": train_images})


def test_results_over_repeats_give_the_spread_and_the_corrected_test_across_repeats(tmp_path):
    """Every experiment's AUC over the repeats (mean, sd, range, each value) and every comparison's
    differences per repeat with Nadeau and Bengio's corrected resampled t-test and "A beat B in k of K"."""
    import numpy as np

    from engine.stats import corrected_resampled_t
    from engine.study.graph import Cell
    from engine.study.results import study_results

    spec = tiny_scale(tmp_path / "tiny.json")
    spec = load_spec(str(spec))
    reg = Registry()
    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 40, float)
    patients = [f"p{k // 2}" for k in range(80)]
    cells = []
    for r in range(3):
        for e in spec.experiments:
            name = ("tiny" if r == 0 else f"tiny-r{r}") + f"-{e.key}"
            strength = {"t2-from-nih": 1.5, "t2-scratch": 0.5}.get(e.key, 1.0) + 0.2 * r
            probs = 1 / (1 + np.exp(-(strength * (2 * y - 1) + rng.normal(size=80))))
            _finished(reg, name, {"data": {"task": "covid"}}, probs, y, patients)
            cells.append(Cell(e.key, name, e.table, e.label, "finished", repeat=r))
    res = study_results(spec, cells, reg, n_boot=50)
    assert res["repeats"] == 3 and "official test list stays fixed" in res["repeat_note"]
    row = next(r for r in res["cells"] if r["key"] == "t2-scratch")
    sp = row["repeats"]
    assert sp["n"] == 3 and len(sp["values"]) == 3 and sp["values"][0] == row["ours"]
    assert np.isclose(sp["mean"], np.mean(sp["values"])) and np.isclose(sp["sd"], np.std(sp["values"], ddof=1))
    comp = next(c for c in res["comparisons"] if c["a"] == "tiny-t2-from-nih" and c["b"] == "tiny-t2-scratch")
    across = comp["across_repeats"]
    assert across["K"] == 3 and len(across["diffs"]) == 3 and across["diffs"][0] == comp["diff"]
    expect = corrected_resampled_t(across["diffs"], 300, 80)
    assert np.isclose(across["p"], expect["p"]) and across["ratio"] == 80 / 300
    assert f"beat t2-scratch in {across['wins']} of 3 repeats" in across["text"]
    # the same differences with the plain t-test would give a smaller p: the correction matters
    from scipy import stats as sps

    d = np.array(across["diffs"])
    plain = 2 * sps.t.sf(abs(d.mean() / (d.std(ddof=1) / np.sqrt(3))), 2)
    assert across["p"] > plain


def test_a_scales_measured_cost_is_said_for_the_repeats_asked(tmp_path):
    import json

    from engine.study.spec import SCALES_DIR, cost_text

    pack = load_spec("pack")
    assert pack.cost and "measured" in pack.cost  # the pack scale ships its measurement
    raw = json.loads((SCALES_DIR / "pack.json").read_text())
    raw["cost"] = {"first_repeat_minutes": 50, "further_repeat_minutes": 30, "measured": "on a 2-core CPU"}
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(raw))
    spec = load_spec(str(path))
    assert cost_text(spec, 1) == "1 repeat: about 50 min (the first 50 min; measured on a 2-core CPU)"
    assert cost_text(spec, 5) == ("5 repeats: about 2 h 50 min (the first 50 min; each further repeat 30 min; "
                                  "measured on a 2-core CPU)")
    # issue 37, N9: the estimate follows the set-up where the file names its basis
    raw["cost"].update(cores=2, running=2)
    path.write_text(json.dumps(raw))
    spec = load_spec(str(path))
    same = cost_text(spec, 1, {"cores": 2, "running": 2, "gpus": 0})
    assert same == cost_text(spec, 1)  # the measured set-up: nothing to add
    more = cost_text(spec, 1, {"cores": 8, "running": 2, "gpus": 0})
    assert more.endswith("This machine has 8 cores, not 2: about 12 min here, if the work spreads over them"), more
    one = cost_text(spec, 1, {"cores": 2, "running": 1, "gpus": 0})
    assert "runs 1 run(s) at a time (CXR_MAX_RUNNING), the measurement ran 2" in one and "about 50 min" in one
    gpu = cost_text(spec, 3, {"cores": 16, "running": 1, "gpus": 1})
    assert "train on 1 GPU(s), where this study's time has not been measured" in gpu and "cores" not in gpu
    raw["cost"]["cores"] = 0
    path.write_text(json.dumps(raw))
    with pytest.raises(SpecError, match="cost: cores must be a whole number of 1 or more"):
        load_spec(str(path))
    raw.pop("cost")
    path.write_text(json.dumps(raw))
    assert cost_text(load_spec(str(path)), 5) is None  # not measured: nothing is claimed
    # the Study page quotes the pack's measurement for the repeats asked
    at = dashboard_app("study").run()
    at.number_input(key="study.repeats").set_value(5).run()
    assert not at.exception, at.exception
    total = pack.cost["first_repeat_minutes"] + 4 * pack.cost["further_repeat_minutes"]
    assert any(c.value.startswith(f"Cost: 5 repeats: about {total // 60} h {total % 60:02d} min") for c in at.caption), \
        [c.value for c in at.caption]
