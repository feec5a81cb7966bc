"""Peak memory of one hostile upload on Diagnose: a 7740 x 7740 PNG of a few dozen KB.

Usage: python bench/bench_upload.py

Each measurement runs in a fresh process and prints its peak RSS above the process's baseline:
  full    the old path: the full-size image kept, a CAM upsampled to it and overlaid at full size
  upload  the dashboard's path now: decode_upload (at most 1024 px kept), map and overlay at that size
  4x      four uploads decoded at once (threads), the new path
The ratio full / upload is the saving; the absolute figures depend on the machine.
"""
from __future__ import annotations

import subprocess
import sys

from common import REPO

SIDE = 7740

CHILD = r"""
import io, resource, sys, threading
import numpy as np
from PIL import Image
sys.path.insert(0, {repo!r})
from engine.data.images import decode_upload, decode_xray
from engine.explain.overlay import overlay_heatmap

img = Image.new("L", ({side}, {side}), 40)
img.paste(200, (1000, 1000, 6000, 6000))
buf = io.BytesIO(); img.save(buf, format="PNG", optimize=True); data = buf.getvalue(); del img, buf
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
mode = sys.argv[1]

def one():
    if mode == "full":
        gray = decode_xray(data, "big.png")
    else:
        gray = decode_upload(data, "big.png")[0]
    cam = np.random.default_rng(0).random((7, 7)).astype(np.float32)
    overlay_heatmap(gray, cam)

if mode == "4x":
    ts = [threading.Thread(target=one) for _ in range(4)]
    [t.start() for t in ts]; [t.join() for t in ts]
else:
    one()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(len(data), (peak - base) / 1024)
"""


def measure(mode: str) -> tuple[int, float]:
    out = subprocess.run([sys.executable, "-c", CHILD.format(repo=str(REPO), side=SIDE), mode], capture_output=True,
                         text=True, check=True)
    size, mb = out.stdout.split()
    return int(size), float(mb)


def main() -> int:
    results = {m: measure(m) for m in ("full", "upload", "4x")}
    size = results["upload"][0]
    print(f"upload: a {SIDE}x{SIDE} PNG of {size / 1024:.0f} KB")
    for m, (_, mb) in results.items():
        print(f"  {m:<7} peak RSS above baseline {mb:8.0f} MB")
    print(f"  full / upload = {results['full'][1] / max(results['upload'][1], 1):.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
