"""Heatmap-on-image rendering, pure numpy/OpenCV (drawing kept apart from map computation)."""
from __future__ import annotations

import cv2
import numpy as np

COLORMAPS = {"jet": cv2.COLORMAP_JET, "inferno": cv2.COLORMAP_INFERNO, "viridis": cv2.COLORMAP_VIRIDIS,
             "turbo": cv2.COLORMAP_TURBO, "hot": cv2.COLORMAP_HOT}


def overlay_heatmap(gray: np.ndarray, cam: np.ndarray, *, alpha: float = 0.45, colormap: str = "jet",
                    box: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """gray (H, W) uint8 original image, cam (h, w) in [0, 1] -> RGB uint8 (H, W, 3).

    The map is resized to the original image (aspect ratio of the original kept). `box` (x, y, w, h)
    in original pixels is drawn as a rectangle (NIH bounding boxes).
    """
    if colormap not in COLORMAPS:
        raise ValueError(f"unknown colormap {colormap!r}; allowed: {', '.join(COLORMAPS)}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be within [0, 1], got {alpha}")
    h, w = gray.shape
    cam = cv2.resize(np.clip(cam, 0, 1).astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    heat = cv2.applyColorMap((cam * 255).astype(np.uint8), COLORMAPS[colormap])[..., ::-1]
    base = np.repeat(gray[..., None], 3, axis=-1).astype(np.float32)
    out = ((1 - alpha) * base + alpha * heat.astype(np.float32)).clip(0, 255).astype(np.uint8)
    if box is not None:
        x, y, bw, bh = (int(round(v)) for v in box)
        cv2.rectangle(out, (x, y), (x + bw, y + bh), (0, 255, 0), max(1, w // 256))
    return np.ascontiguousarray(out)
