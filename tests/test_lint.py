"""The lint holds: ruff, configured in pyproject.toml, finds nothing in the tree."""
import shutil
import subprocess

import pytest

from conftest import REPO


def test_ruff_is_clean():
    ruff = shutil.which("ruff")
    if not ruff:
        pytest.skip("ruff is not installed (pip install -r requirements.txt installs it)")
    out = subprocess.run([ruff, "check", "--no-cache", "."], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
