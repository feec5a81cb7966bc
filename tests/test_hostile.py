"""Hostile input, round 3 (issue 22): spreadsheet formulas in manifests never reach a CSV the product
writes, and a manifest cell over the csv field limit is refused in one line."""
import shutil

import pandas as pd

from conftest import run_cli
from engine.runs.tables import FORMULA_START, csv_text, neutralise


def test_formula_cells_are_neutralised_and_numbers_stay_numbers():
    frame = pd.DataFrame({"image": ["=HYPERLINK(\"http://x\")", "@SUM(A1)", "+cmd", "-1.5", "ok", "\tx"],
                          "prob": [0.1, -0.2, 0.3, 0.4, 0.5, 0.6], "n": [1, -2, 3, 4, 5, 6]})
    out = neutralise(frame)
    assert out["image"].tolist() == ["'=HYPERLINK(\"http://x\")", "'@SUM(A1)", "'+cmd", "-1.5", "ok", "'\tx"]
    assert out["prob"].tolist() == frame["prob"].tolist() and out["n"].dtype == frame["n"].dtype
    assert "'=HYPERLINK" in csv_text(frame) and frame["image"][0].startswith("=")  # the input is not changed


def _copy_run(trained_run, tmp_path):
    ck = tmp_path / "checkpoints"
    shutil.copytree(trained_run[0], ck)
    return ck


def _engine(ck, *args):
    return run_cli(*args, env={"CXR_CHECKPOINTS": ck, "HOME": ck.parent})


def test_an_outside_manifest_with_formulas_is_scored_without_writing_them_back(trained_run, tmp_path):
    ck = _copy_run(trained_run, tmp_path)
    test = pd.read_csv(ck / trained_run[1] / "predictions_test.csv").head(24)
    formulas = ["=HYPERLINK(\"http://evil.example\",\"x\")", "@SUM(1+1)", "+cmd|' /C calc'!A0", "=1+1"]
    manifest = pd.DataFrame({"path": test["path"], "COVID-19": test["target_COVID-19"].astype(int),
                             "patient_id": [formulas[k % 4] + str(k) for k in range(len(test))],
                             "source": [formulas[(k + 1) % 4] for k in range(len(test))]})
    manifest.to_csv(tmp_path / "m.csv", index=False)
    out = _engine(ck, "evaluate", trained_run[1], "--on", str(tmp_path / "m.csv"), "--name", "formulas",
                  "--no-overlap-check", "--bootstrap", "20")
    assert out.returncode == 0, out.stderr[-2000:]
    written = pd.read_csv(ck / trained_run[1] / "external" / "formulas" / "predictions.csv", dtype=str,
                          keep_default_na=False)
    cells = [c for col in written.columns for c in written[col]]
    bad = [c for c in cells if c.startswith(FORMULA_START) and not _number(c)]
    assert not bad, bad[:5]
    assert any(c.startswith("'=HYPERLINK") for c in cells)  # kept, as text


def _number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


def test_a_manifest_cell_over_the_csv_limit_is_refused_in_one_line(trained_run, tmp_path):
    ck = _copy_run(trained_run, tmp_path)
    (tmp_path / "long.csv").write_text("path,COVID-19\n" + "a.png,1\n" + "x" * (200 * 1024) + ".png,0\n")
    out = _engine(ck, "evaluate", trained_run[1], "--on", str(tmp_path / "long.csv"), "--no-overlap-check")
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert "a cell longer than 128 KiB" in out.stderr and "long.csv, line 3" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
