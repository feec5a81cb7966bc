"""Deleting, archiving and pruning runs: from the CLI and the Overview, never a half-deleted run."""
import json
import os
from pathlib import Path

import pytest
from conftest import dashboard_app, run_cli

from engine.runs import Registry, RunError
from engine.runs.manage import archive_run, delete_run, prune_run


def _finished(reg, name, status="succeeded"):
    reg.create(name, {"data": {"task": "covid"}, "train": {"epochs": 1}}, "covid-scratch")
    reg.transition(name, "running")
    reg.transition(name, status)
    d = reg.run_dir(name)
    d.mkdir(parents=True, exist_ok=True)
    for f in ("best.pt", "last.pt"):
        (d / f).write_bytes(b"x" * 1000)
    (d / "metrics.json").write_text("{}")
    return d


def test_delete_archive_prune_and_refusals(tmp_path):
    reg = Registry()
    d = _finished(reg, "a")
    assert prune_run(reg, "a")["removed"] == ["last.pt"] and (d / "best.pt").is_file() and not (d / "last.pt").exists()
    with pytest.raises(RunError, match="no last.pt .*--keep-last"):
        from engine.runs.jobs import resume

        resume("a", reg, overrides={"epochs": 3}, start=False)
    _finished(reg, "b", "cancelled")
    with pytest.raises(RunError, match="only a succeeded run"):
        prune_run(reg, "b")
    out = archive_run(reg, "b", tmp_path / "archive")
    target = tmp_path / "archive" / "b"
    assert reg.get("b") is None and (target / "best.pt").is_file()
    assert json.loads((target / "registry.json").read_text())["run"]["status"] == "cancelled"
    assert out["archived_to"] == str(target)
    with pytest.raises(RunError, match="inside the run folder root"):
        _finished(reg, "c")
        archive_run(reg, "c", reg.run_dir("c").parent)
    assert delete_run(reg, "c")["freed_bytes"] > 0
    assert reg.get("c") is None and not reg.run_dir("c").exists()
    assert not list(reg.run_dir("c").parent.glob(".trash-*"))
    reg.create("busy", {"train": {"epochs": 1}}, "covid-scratch")
    with pytest.raises(RunError, match="cancel it first"):
        delete_run(reg, "busy")
    _finished(reg, "parent")
    reg.create("child", {"train": {"epochs": 1}}, "covid-from-nih", depends_on="parent")
    with pytest.raises(RunError, match="parent of child"):
        delete_run(reg, "parent")


def test_a_failed_archive_changes_nothing_says_why_and_the_retry_works(tmp_path, monkeypatch):
    """Issue 22 R9: on a full disk the archive left a partial best.pt and an empty registry.json, printed
    a raw list of tuples, and the retry said "already exists"."""
    import shutil

    import engine.runs.manage as manage

    reg = Registry()
    d = _finished(reg, "arch")
    before = sorted(p.name for p in d.iterdir())
    real_copy2 = shutil.copy2

    def full_disk(src, dst, **kw):  # the first file copies half, then the disk is full
        if os.fspath(src).endswith("best.pt"):
            Path(dst).write_bytes(Path(src).read_bytes()[:10])
            raise OSError(28, "No space left on device", str(dst))
        return real_copy2(src, dst, **kw)

    monkeypatch.setattr(shutil, "copy2", full_disk)
    with pytest.raises(RunError, match=r"could not archive arch to .*No space left on device.*Nothing changed") as err:
        manage.archive_run(reg, "arch", tmp_path / "archive")
    assert "[(" not in str(err.value)  # words, not shutil's list of tuples
    assert reg.get("arch") is not None and sorted(p.name for p in d.iterdir()) == before  # the source untouched
    assert not list((tmp_path / "archive").iterdir())  # no partial copy left
    monkeypatch.setattr(shutil, "copy2", real_copy2)
    out = manage.archive_run(reg, "arch", tmp_path / "archive")  # the retry works
    assert reg.get("arch") is None and not d.exists() and (Path(out["archived_to"]) / "best.pt").is_file()


def test_a_kill_during_delete_leaves_no_half_run(tmp_path):
    """The folder is renamed away before the rows go: a trash folder left by a kill is swept later."""
    reg = Registry()
    _finished(reg, "x")
    trash = reg.run_dir("x").with_name(".trash-old-1")
    trash.mkdir()
    (trash / "best.pt").write_bytes(b"left by a kill")
    _finished(reg, "y")
    delete_run(reg, "y")
    assert not trash.exists() and reg.get("x") is not None and reg.run_dir("x").is_dir()


def test_cli_delete_needs_confirmation_and_prune_reports(tmp_path):
    reg = Registry()
    _finished(reg, "z")
    def cli(*args):
        return run_cli("runs", *args)

    out = cli("delete", "z")
    assert out.returncode == 2 and "--yes" in out.stderr and reg.get("z") is not None
    out = cli("prune", "z")
    assert out.returncode == 0 and "removed last.pt" in out.stdout
    out = cli("delete", "z", "--yes")
    assert out.returncode == 0 and "deleted z" in out.stdout and reg.get("z") is None
    out = cli("delete", "../escape", "--yes")
    assert out.returncode == 2 and "error" in out.stderr


def test_overview_deletes_the_picked_run_after_confirmation(data_pack):
    reg = Registry()
    _finished(reg, "old")
    at = dashboard_app(timeout=120)
    at.session_state["app.selected_run"] = "old"
    at.switch_page("app_pages/overview.py")
    at.run()
    assert at.button(key="overview.delete").disabled
    at.checkbox(key="overview.delete_sure").check().run()
    at.button(key="overview.delete").click().run()
    assert not at.exception, at.exception
    assert reg.get("old") is None


def test_a_leftover_folder_is_never_adopted_by_a_new_run():
    """Before: a new run named like a leftover folder holding last.pt 'succeeded' at once with the
    other run's weights. Now the folder is moved aside (kept) and the run starts clean."""
    reg = Registry()
    old = reg.run_dir("again")
    old.mkdir(parents=True)
    (old / "last.pt").write_bytes(b"another run's weights")
    reg.create("again", {"train": {"epochs": 1}}, "covid-scratch")
    assert not (reg.run_dir("again") / "last.pt").exists()
    kept = list((reg.root / ".orphans").glob("again-*/last.pt"))
    assert len(kept) == 1 and kept[0].read_bytes() == b"another run's weights"


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path):
    from engine.config import from_preset
    from engine.runs.folder import RunDir
    from engine.training.loop import _check_own

    cfg = from_preset("covid-scratch")
    d = RunDir(tmp_path / "mine")
    _check_own({"run": "mine", "config": cfg.to_dict()}, d, cfg)  # its own: fine
    with pytest.raises(RunError, match="belongs to another run"):
        _check_own({"run": "theirs", "config": cfg.to_dict()}, d, cfg)
    other = from_preset("nih-densenet121-imagenet").to_dict()
    with pytest.raises(RunError, match="task 'nih'"):
        _check_own({"run": "mine", "config": other}, d, cfg)


def test_a_damaged_registry_is_said_plainly_and_rebuilt_from_the_run_folders(trained_run, tmp_path, monkeypatch):
    import shutil

    from engine.runs.registry import RegistryDamaged

    ck = tmp_path / "ck"
    shutil.copytree(trained_run[0] / trained_run[1], ck / "tiny",
                    ignore=shutil.ignore_patterns("landscape", "external"))
    (ck / "runs.sqlite").write_bytes(b"this is not a database" * 100)  # a torn or overwritten file
    monkeypatch.setenv("CXR_CHECKPOINTS", str(ck))
    with pytest.raises(RegistryDamaged, match="runs rebuild"):
        Registry().list()
    out = run_cli("runs", "list")
    assert out.returncode == 2 and "damaged" in out.stderr and "Traceback" not in out.stderr
    at = dashboard_app(timeout=120).run()
    assert not at.exception and any("runs rebuild" in e.value for e in at.error)
    at.button(key="app.rebuild").click().run()
    assert any("1 run(s) restored" in s.value for s in at.success)
    row = Registry().get("tiny")
    assert row.status == "succeeded" and row.epochs_done == 1 and row.test_auc is not None
    assert list(ck.glob("runs.sqlite.damaged-*"))
    # a lost registry (deleted mid-life) is rebuilt the same way, from the CLI
    (ck / "runs.sqlite").unlink()
    out = run_cli("runs", "rebuild")
    assert out.returncode == 0 and "1 run(s) restored" in out.stdout


def _checkpoint(folder: Path, epoch: int = 1) -> None:
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {}, "config": {"data": {"task": "covid"}, "train": {"epochs": 1}}, "epoch": epoch, "step": 3,
                "best_epoch": epoch, "best_val_auc": 0.6}, folder / "best.pt")


def test_orphans_are_listed_with_sizes_restored_as_runs_or_removed(tmp_path, capsys):
    """Issue 22 R10: checkpoints/.orphans/ grew unseen; no command or page listed, restored or removed it."""
    from engine.cli import main
    from engine.runs.registry import orphans

    reg = Registry()
    old = reg.run_dir("again")
    _checkpoint(old)
    reg.create("again", {"train": {"epochs": 1}}, "covid-scratch")  # the leftover folder is moved aside
    (found,) = orphans(reg)
    assert found["run"] == "again" and found["has_checkpoint"] and found["bytes"] > 0
    assert main(["runs", "orphans"]) == 0
    out = capsys.readouterr().out
    assert found["name"] in out and "1 folder(s)" in out and "--restore FOLDER" in out
    assert main(["runs", "orphans", "--restore", found["name"]]) == 2  # "again" is taken: said, nothing moved
    assert "exists already: restore it under another name" in capsys.readouterr().err and orphans(reg)
    assert main(["runs", "orphans", "--restore", found["name"], "--as", "again-old", "--json"]) == 0
    restored = json.loads(capsys.readouterr().out)
    assert restored["run"] == "again-old" and reg.get("again-old").status == "interrupted" and not orphans(reg)
    _checkpoint(reg.run_dir("again-old2"))
    reg.create("again-old2", {}, None)
    assert len(orphans(reg)) == 1
    assert main(["runs", "orphans", "--remove", "--all"]) == 0
    assert "removed 1 folder(s)" in capsys.readouterr().out and not orphans(reg)


def test_a_folder_rebuild_cannot_restore_is_named_with_the_way_to_clear_it(tmp_path):
    """Issue 22 R11: `runs rebuild --missing` refused a garbage best.pt and a symlinked folder, yet every
    page kept saying "`runs rebuild --missing` restores them"."""
    from engine.runs.registry import unlisted

    reg = Registry()
    _checkpoint(reg.run_dir("good"))
    bad = reg.run_dir("garbage")
    bad.mkdir(parents=True)
    (bad / "best.pt").write_bytes(b"not a checkpoint")
    elsewhere = tmp_path / "elsewhere"
    _checkpoint(elsewhere)
    (reg.root / "linked").symlink_to(elsewhere, target_is_directory=True)
    ok, problems = unlisted(reg)
    assert ok == ["good"]
    assert "not a readable checkpoint" in problems["garbage"] and "move it out of" in problems["garbage"]
    assert "symbolic link" in problems["linked"]
    out = run_cli("runs", "list")
    assert "1 run folder(s)" in out.stdout and "good" in out.stdout
    assert "folder garbage" in out.stdout and "not a readable checkpoint" in out.stdout
    at = dashboard_app(timeout=120).run()
    assert not at.exception
    assert any("not in the registry" in w.value and "garbage" not in w.value for w in at.warning)
    assert any("garbage" in c.value and "not a readable checkpoint" in c.value for c in at.caption)
