"""The documentation: a short README in front of docs/ (MkDocs), a CLI reference that cannot go
stale, and a site that builds with `mkdocs build --strict` (broken links and pages left out of the
navigation fail)."""
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

DOCS = REPO / "docs"


def test_the_readme_is_short_and_links_only_to_pages_that_exist():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    for cmd in ("pip install -r requirements.txt", "python -m streamlit run dashboard/app.py", "python -m pytest"):
        assert cmd in text
    import re

    links = re.findall(r"\]\((docs/[^)#]+)", text)
    assert len(links) >= 10 and all((REPO / link).is_file() for link in links), links


def test_the_cli_reference_is_generated_from_the_parser():
    out = subprocess.run([sys.executable, "-m", "engine.cli.reference"], cwd=REPO, capture_output=True, text=True,
                         timeout=120, env={"PATH": "/usr/bin:/bin", "COLUMNS": "37"})
    assert out.returncode == 0, out.stderr
    assert out.stdout == (DOCS / "cli.md").read_text(), (
        "docs/cli.md is stale: python -m engine.cli.reference > docs/cli.md")
    for command in ("train", "study", "runs rebuild", "evaluate", "compare", "prepare"):
        assert f"`python -m engine {command}`" in out.stdout


def test_the_site_builds_strictly(tmp_path):
    if shutil.which("mkdocs") is None and subprocess.run([sys.executable, "-m", "mkdocs", "--version"],
                                                        capture_output=True).returncode != 0:
        pytest.fail("mkdocs is pinned in requirements.txt but not installed")
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    pages = sorted(p.relative_to(tmp_path / "site").as_posix() for p in (tmp_path / "site").rglob("index.html"))
    for page in ("data", "training", "study", "trust", "dashboard", "guarantees", "architecture", "development", "cli"):
        assert f"{page}/index.html" in pages, pages
    assert len(list((DOCS / "decisions").glob("0*.md"))) >= 5
