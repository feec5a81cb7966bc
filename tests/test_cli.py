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
    """--help of every subcommand builds the parser only: no torch import (seconds on a cold start), no
    Ray (the local executor never needs it; docs/cluster.md), no TensorBoard or MLflow (issue 38)."""
    code = ("import sys\nfrom engine.cli import main\n"
            "for argv in (['--help'], ['train', '--help'], ['queue', '--help'], ['study', '--help'], ['cam', '--help'],"
            " ['embed', '--help'], ['runs', 'export', '--help']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "print(*[m in sys.modules for m in ('torch', 'ray', 'tensorboard', 'mlflow')])")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("False False False False"), out.stdout[-300:]


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
    with pytest.raises(SystemExit) as refused:  # out of NUMERIC_RANGES: refused by the parser
        main(argv[:-1] + ["--size", "7"])
    assert refused.value.code == 2


def _readme_commands() -> list[str]:
    """Every `python -m engine ...` command the README and docs/ show (code lines and inline code),
    comments cut; docs/cli.md, generated from the parser, is left out."""
    import re

    pages = [REPO / "README.md", *sorted(p for p in (REPO / "docs").rglob("*.md") if p.name != "cli.md")]
    text = "\n".join(p.read_text() for p in pages)
    lines = [re.split(r"\s#\s", ln)[0].strip() for ln in text.splitlines()
             if ln.startswith(("python -m engine", "torchrun"))]
    lines += re.findall(r"`(python -m engine [^`]+)`", text)
    return sorted({ln.split("-m engine", 1)[1].strip() for ln in lines})


STAND_INS = {"--preset": "covid-scratch", "--method": "gradcam"}


def _variants(command: str) -> list[list[str]]:
    """The documented syntax made concrete: optional [groups] left out and put in, each a|b alternative
    taken in turn, `...` placeholders dropped (with the flag they stand for), numeric placeholders given numbers."""
    import re
    import shlex

    out = []
    for with_optional in (False, True):
        text = re.sub(r"\[([^\]]*)\]", (lambda m: m.group(1)) if with_optional else "", command)
        tokens = [t for t in shlex.split(text.replace("--wait S", "--wait 5"))]
        alts = max((t.count("|") + 1 for t in tokens if not t.startswith("--")), default=1)
        for k in range(alts):
            argv = []
            for t in tokens:
                if t == "...":  # "--preset ...": any preset; "RUN ...": more of the same
                    if argv and argv[-1] in STAND_INS:
                        argv.append(STAND_INS[argv[-1]])
                    continue
                parts = t.split("|") if "|" in t and not t.startswith("--") else [t]
                argv.append(parts[min(k, len(parts) - 1)])
            out.append(argv)
    return out


def test_every_command_in_the_readme_parses():
    """The README's commands match the CLI: each form of each documented command is accepted by the
    parser (nothing runs), so a renamed flag or subcommand cannot leave the docs behind."""
    from engine.cli import build_parser

    commands = _readme_commands()
    assert len(commands) >= 35, commands
    bad = []
    for command in commands:
        for argv in _variants(command):
            try:
                build_parser().parse_args(argv)
            except SystemExit as exc:
                if exc.code != 0:  # --help exits 0
                    bad.append(" ".join(argv))
    assert not bad, bad


def test_every_numeric_flag_is_range_checked_with_one_clear_error():
    """Issue 22: 0, -5 and 10^9 fed to every numeric flag: accepted within its range, otherwise one
    line naming the range (no traceback, no allocation first)."""
    import argparse

    from engine.cli import build_parser

    def numeric(parser, path=()):
        for a in parser._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sub in a.choices.items():
                    yield from numeric(sub, path + (name,))
            elif hasattr(a.type, "bounds"):
                yield path, a

    flags = list(numeric(build_parser()))
    assert len(flags) >= 20
    for path, action in flags:
        lo, hi = action.type.bounds
        for text in ("0", "-5", "1000000000", "nan", "x"):
            try:
                value = action.type(text)
            except argparse.ArgumentTypeError as exc:
                assert "between" in str(exc) or "expected" in str(exc), (path, action.dest, text)
            else:
                assert lo <= value <= hi, (path, action.dest, text)
        if action.dest != "seed":  # a seed of 10^9 is a seed like any other (numpy takes 0 .. 2^32 - 1)
            assert hi < 10**9, (path, action.dest)


def test_compare_refuses_absurd_resample_counts_before_any_work(capsys):
    for value in ("0", "-5", "1000000000"):
        with pytest.raises(SystemExit) as refused:
            main(["compare", "a", "b", "--bootstrap", value])
        assert refused.value.code == 2
        err = capsys.readouterr().err
        assert "--bootstrap: must be between 20 and 100,000" in err and "Traceback" not in err
