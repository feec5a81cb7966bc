"""The CPU-only install route (issue 13): `pip install -r requirements-cpu.txt` resolved against a
loopback stand-in for https://download.pytorch.org/whl/cpu (never the internet) picks PyTorch's CPU
wheels, pulls no CUDA library, and keeps every other pin of requirements.txt."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import REPO

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
TAG = f"cp{sys.version_info.major}{sys.version_info.minor}"
# what the real CPU wheels require (their METADATA, without the CUDA libraries of PyPI's build)
NEEDS = {"torch": ["filelock", "typing-extensions>=4.10.0", "setuptools>=77.0.3", "sympy>=1.13.3",
                   "networkx>=2.5.1", "jinja2", "fsspec>=0.8.5"],
         "torchvision": ["numpy", "torch==2.14.1", "pillow!=8.3.*,>=5.3.0"]}


def wheel(folder: Path, name: str, version: str) -> Path:
    """A wheel with the real name, version and dependencies (and no code): enough for pip to resolve."""
    path = folder / f"{name}-{version}-{TAG}-{TAG}-manylinux_2_28_x86_64.whl"
    info = f"{name}-{version}.dist-info"
    meta = "\n".join([f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}",
                      *(f"Requires-Dist: {r}" for r in NEEDS[name])]) + "\n"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{info}/METADATA", meta)
        z.writestr(f"{info}/WHEEL", f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\nTag: {TAG}-{TAG}-"
                                    "manylinux_2_28_x86_64\n")
        z.writestr(f"{info}/RECORD", "")
    return path


def pinned(text: str) -> dict[str, str]:
    return {m[1].lower(): m[2] for m in re.finditer(r"^([A-Za-z0-9_.-]+)==(\S+)", text, re.M)}


def test_the_cpu_only_route_installs_cpu_wheels_and_every_other_pin(tmp_path):
    src = (REPO / "requirements-cpu.txt").read_text()
    assert f"--extra-index-url {CPU_INDEX}" in src and "-r requirements.txt" in src
    base = pinned((REPO / "requirements.txt").read_text())
    cpu = pinned(src)
    assert cpu["torch"] == base["torch"] + "+cpu" and cpu["torchvision"] == base["torchvision"] + "+cpu"
    for name in ("torch", "torchvision"):
        d = tmp_path / "simple" / name
        d.mkdir(parents=True)
        w = wheel(d, name, cpu[name])
        (d / "index.html").write_text(f'<html><body><a href="{w.name}">{w.name}</a></body></html>')
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(tmp_path)))
    server.RequestHandlerClass.log_message = lambda *a: None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        req = tmp_path / "requirements-cpu.txt"
        req.write_text(src.replace(CPU_INDEX, f"http://127.0.0.1:{server.server_port}/simple")
                       .replace("-r requirements.txt", f"-r {REPO / 'requirements.txt'}"))
        report = tmp_path / "report.json"
        # the other pins resolve from the package index pip is configured with, as the README's install does:
        # this test alone is let past the tests' offline proxy (conftest), and skips when no index answers
        env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
        out = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                              "--report", str(report), "-r", str(req)], capture_output=True, text=True, timeout=600,
                             env=env)
    finally:
        server.shutdown()
    if out.returncode and re.search(r"No matching distribution|Could not find a version", out.stderr) \
            and "torch" not in out.stderr.split("No matching")[-1][:80]:
        pytest.skip(f"no package index reachable for the other pins here: {out.stderr.strip()[-300:]}")
    assert out.returncode == 0, out.stderr[-3000:]
    chosen = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.loads(report.read_text())["install"]}
    assert chosen["torch"] == "2.14.1+cpu" and chosen["torchvision"] == "0.29.1+cpu"
    cuda = sorted(n for n in chosen if n.startswith(("nvidia-", "cuda-")) or n == "triton")
    assert not cuda, f"the CPU route would install CUDA libraries: {cuda}"
    for name, version in base.items():
        if name not in ("torch", "torchvision"):
            assert chosen.get(name.replace("_", "-")) == version, (name, chosen.get(name))
