import json
import subprocess
import sys

import pytest

from conftest import REPO
from engine.cli import main


def test_help_works_for_every_subcommand():
    for argv in (["--help"], ["data", "--help"], ["data", "summary", "--help"], ["data", "download", "--help"],
                 ["prepare", "--help"]):
        with pytest.raises(SystemExit) as ei:
            main(argv)
        assert ei.value.code == 0


def test_module_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "engine", "--help"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0 and "data" in out.stdout


def test_help_does_not_import_torch():
    """--help of every subcommand builds the parser only: no torch import (seconds on a cold start)."""
    code = ("import sys\nfrom engine.cli import main\n"
            "for argv in (['--help'], ['train', '--help'], ['cam', '--help'], ['embed', '--help']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("False"), out.stdout[-300:]


def test_missing_root_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CXR_NIH_ROOT", raising=False)
    monkeypatch.delenv("CXR_COVID_ROOT", raising=False)
    assert main(["data", "summary", "--nih-root", str(tmp_path / "absent")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["data", "summary"]) == 2
    assert "--nih-root" in capsys.readouterr().err


def test_prepare_builds_then_reuses_the_cache(tiny_nih, tiny_covid, tmp_path, capsys):
    argv = ["prepare", "--nih-root", str(tiny_nih), "--covid-root", str(tiny_covid), "--size", "32",
            "--cache-dir", str(tmp_path / "cache"), "--json"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["nih"]["decoded"] == 40 and first["covid"]["decoded"] == 22
    assert main(argv) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["nih"]["reused"] == 40 and second["nih"]["decoded"] == 0
    assert main(argv[:-1] + ["--size", "7"]) == 2
