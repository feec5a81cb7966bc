import json
import sqlite3

import pytest

from engine.cli import main
from engine.config import PRESETS, ConfigError, ExperimentConfig, from_preset
from engine.runs import Registry, RunError, validate_name
from engine.runs.registry import observe


def test_presets_carry_the_study_settings():
    d = from_preset("nih-densenet121-imagenet")
    assert (d.model.arch, d.model.init, d.optim.lr, d.optim.weight_decay, d.optim.plateau_patience) == (
        "densenet121", "imagenet", 1e-4, 5e-5, 5)
    r = from_preset("nih-resnet50-scratch")
    assert (r.model.arch, r.model.init, r.optim.lr, r.optim.weight_decay, r.optim.plateau_patience) == (
        "resnet50_own", "scratch", 1e-3, 1e-5, 1)
    c = from_preset("covid-scratch")
    assert c.data.task == "covid" and c.train.oversample and c.train.epochs == 100
    assert (c.train.batch_size, c.data.image_size, c.optim.beta1, c.optim.beta2) == (16, 224, 0.9, 0.999)
    assert set(PRESETS) >= {"nih-resnet50-scratch", "nih-resnet50-imagenet", "nih-densenet121-imagenet",
                            "covid-from-nih", "covid-from-imagenet", "covid-scratch", "combined15"}


@pytest.mark.parametrize("field,value,message", [
    ("lr", "abc", "invalid lr='abc': expected float"),
    ("batch_size", "0", "invalid batch_size=0"),
    ("batch_size", "2.5", "expected int"),
    ("arch", "vgg16", "allowed: resnet50_own, resnet50, densenet121, tiny"),
    ("augment", "heavy", "allowed: study, flip, none"),
    ("epochs", "-1", "between 1 and"),
    ("reshuffle", "maybe", "true/false"),
    ("seed", "-5", "between 0 and"),
    ("split_seed", "1e30", "between 0 and"),
])
def test_invalid_settings_name_the_field_and_what_is_allowed(field, value, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        from_preset("covid-scratch", {field: value})


def test_config_round_trips_through_json():
    c = from_preset("covid-scratch", {"epochs": 3, "image_size": 64})
    assert ExperimentConfig.from_dict(json.loads(c.to_json())).to_dict() == c.to_dict()


@pytest.mark.parametrize("name", ["../evil", "/abs/path", "a/b", "..", ".hidden", "", "x" * 65, "semi;colon"])
def test_run_names_cannot_escape_checkpoints(name):
    with pytest.raises(RunError):
        validate_name(name)


def test_registry_rows_and_metrics_without_duplicates(tmp_path):
    reg = Registry(tmp_path)
    reg.create("r1", {"a": 1}, "covid-scratch")
    with pytest.raises(RunError, match="already exists"):
        reg.create("r1", {}, None)
    reg.log_steps("r1", [(1, 0, 0.9, 1e-3), (2, 0, 0.8, 1e-3)])
    reg.log_steps("r1", [(2, 0, 0.7, 1e-3)])  # replayed after a resume: replaced, not added
    assert [s["train_loss"] for s in reg.steps("r1")] == [0.9, 0.7]
    reg.log_epoch("r1", 1, train_loss=0.8, val_loss=0.7, lr=1e-3, val_auc_mean=0.6, val_auc={"a": 0.6}, seconds=1,
                  skipped_images=0)
    reg.truncate_after("r1", 0, 1)
    assert reg.epochs("r1") == [] and len(reg.steps("r1")) == 1
    with sqlite3.connect(tmp_path / "runs.sqlite") as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert reg.integrity_ok()


def test_dead_running_process_is_marked_interrupted(tmp_path):
    reg = Registry(tmp_path)
    reg.create("r1", {}, None)
    reg.transition("r1", "running", pid=2 ** 22 + 12345, heartbeat=0.0)
    assert [r.status for r in observe(reg)] == ["interrupted"]
    assert reg.get("r1").status == "interrupted"


def test_train_errors_fail_before_any_run_row(tmp_path, capsys, monkeypatch, data_pack):
    monkeypatch.delenv("CXR_COVID_ROOT", raising=False)
    cases = [
        (["train", "--preset", "nope"], "invalid choice"),
        (["train", "--preset", "covid-scratch", "--covid-root", str(tmp_path / "absent")], "does not exist"),
        (["train", "--preset", "covid-scratch"], "--covid-root"),
        (["train", "--preset", "covid-from-nih", "--covid-root", str(data_pack / "covid")], "needs --init"),
        (["train", "--preset", "covid-from-nih", "--covid-root", str(data_pack / "covid"), "--init", "no-such-run"],
         "neither"),
        (["train", "--preset", "covid-scratch", "--covid-root", str(data_pack / "covid"), "--lr", "fast"],
         "invalid lr"),
        (["train", "--preset", "covid-scratch", "--covid-root", str(data_pack / "covid"), "--name", "../x"],
         "invalid run name"),
    ]
    for argv, msg in cases:
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse choices
            rc = exc.code
        assert rc == 2, argv
        assert msg in capsys.readouterr().err, argv
    assert Registry().list() == []
    assert not any(p.is_dir() for p in Registry().root.iterdir())


def _claim_in_process(args):
    root, capacity = args
    return Registry(root).claim_next(capacity)


def test_concurrent_schedulers_never_exceed_capacity(tmp_path):
    """Eight processes race to claim queued runs: the count and the claim are one transaction."""
    from concurrent.futures import ProcessPoolExecutor

    reg = Registry(tmp_path)
    for i in range(6):
        reg.create(f"q{i}", ExperimentConfig().to_dict(), "covid-scratch", status="queued")
    with ProcessPoolExecutor(8) as pool:
        claimed = [n for n in pool.map(_claim_in_process, [(str(tmp_path), 2)] * 8) if n]
    assert len(claimed) == 2, claimed
    assert sorted(claimed) == ["q0", "q1"]  # oldest first
    assert sorted(r.name for r in reg.list() if r.status == "running") == ["q0", "q1"]
    assert reg.claim_next(2) is None


def test_a_device_this_machine_lacks_is_refused_before_a_run_is_recorded(data_pack, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    base = ["train", "--preset", "covid-scratch", "--covid-root", str(data_pack / "covid")]
    assert main(base + ["--device", "cuda"]) == 2
    assert "CUDA is not available on this machine" in capsys.readouterr().err
    assert main(base + ["--device", "cuda:x"]) == 2
    assert "auto, cpu, cuda or cuda:N" in capsys.readouterr().err
    from engine.runs.jobs import submit

    with pytest.raises(ConfigError, match="CUDA is not available"):
        submit("covid-scratch", {"covid_root": str(data_pack / "covid"), "device": "cuda"})
    assert Registry().list() == []


def test_a_transfer_takes_its_parents_architecture_unless_another_is_asked_for(tmp_path, data_pack):
    from engine.config import from_preset
    from engine.runs.jobs import ParentArchMismatch, prepare_config

    reg = Registry(tmp_path / "ck")
    reg.create("nih-rn50", from_preset("nih-resnet50-scratch", {}).to_dict(), "nih-resnet50-scratch",
               status="queued")
    covid = {"covid_root": str(data_pack / "covid"), "init": "nih-rn50"}
    cfg = prepare_config("covid-from-nih", covid, reg, wait_for_parent=True)
    assert cfg.model.arch == "resnet50_own" and cfg.model.init == "nih-rn50"
    with pytest.raises(ParentArchMismatch, match="use arch resnet50_own"):
        prepare_config("covid-from-nih", {**covid, "arch": "densenet121"}, reg, wait_for_parent=True)
    assert prepare_config("covid-from-nih", {**covid, "init": "scratch"}, reg).model.arch == "densenet121"


def test_the_cli_says_when_a_transfer_takes_its_parents_architecture(data_pack, capsys):
    import os

    reg = Registry()
    reg.create("nih-rn50", from_preset("nih-resnet50-scratch", {}).to_dict(), "nih-resnet50-scratch",
               status="running", pid=os.getpid())  # training: the child waits in the queue
    assert main(["queue", "--preset", "covid-from-nih", "--covid-root", str(data_pack / "covid"),
                 "--init", "nih-rn50", "--name", "child"]) == 0
    assert "arch resnet50_own, the architecture of its init run (the preset's is densenet121)" in capsys.readouterr().err
    assert reg.get("child").config["model"]["arch"] == "resnet50_own"
    assert main(["queue", "--preset", "covid-from-nih", "--covid-root", str(data_pack / "covid"),
                 "--init", "nih-rn50", "--arch", "densenet121", "--name", "child2"]) == 2
    assert "use arch resnet50_own" in capsys.readouterr().err and reg.get("child2") is None
    reg.transition("nih-rn50", "failed", error="stopped by the test")
    reg.transition("child", "cancelled")
