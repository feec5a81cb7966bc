"""Issue 5 benchmarks: all 14 class maps of a batch from one forward pass (the study's CAM) vs 14
separate Grad-CAM calls (target >= 5x), and CAM for one uploaded image on this machine including
the forward pass (target < 1 s). Usage: python bench/bench_cam.py
"""
from __future__ import annotations


import torch
from common import DATA_PACK, best_of

from engine.explain.cam import activation_maps
from engine.data.images import read_xray
from engine.data.transforms import build_transform
from engine.data.images import resize_gray
from engine.models import build_model


def main() -> None:
    model = build_model("densenet121", 14, "scratch").eval()
    images = torch.randn(8, 3, 224, 224)
    one = best_of(lambda: activation_maps(model, images, method="cam"), 2)
    many = best_of(lambda: activation_maps(model, images, method="gradcam"), 1)
    print(f"14 maps x 8 images at 224 px (densenet121, CPU): CAM one pass {one:.2f}s, Grad-CAM 14 calls {many:.2f}s "
          f"-> RATIO {many / one:.1f}x (target >= 5x)")
    path = next((DATA_PACK / "nih" / "images").glob("*.png"))
    tf = build_transform(False, 224)

    def upload():
        gray = read_xray(path)
        x = tf(resize_gray(gray, 256)).unsqueeze(0)
        activation_maps(model, x, method="cam")

    t = best_of(upload, 3)
    print(f"CAM for one uploaded image (decode + forward + 14 maps): {t:.2f}s (target < 1 s)")


if __name__ == "__main__":
    main()
