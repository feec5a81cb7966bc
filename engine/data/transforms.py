"""Train and eval preprocessing presets (torchvision `references/classification/presets.py` style).

Input: a grayscale uint8 array (H, W). Output: a float32 tensor (3, size, size), ImageNet
normalised. The study's augmentation (section 5.1) is horizontal flip, rotation within +-20
degrees, colour jitter (brightness, contrast) and an affine transform. Here resize, flip, rotation,
translation and scale are composed into one 2x3 matrix and applied by a single OpenCV warp on the
one gray channel (one interpolation instead of four, a third of the pixels of RGB); the channel is
replicated at the end, because X-rays carry no colour. With `normalise=False` a preset stops at
the uint8 gray image, (1, S, S): the trainer ships that (12x fewer bytes than float RGB) and
`normalise_batch` finishes the job on the training device, as FFCV and DALI pipelines do. Random draws
use torch's generator, which DataLoader seeds differently in every worker.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from ..constants import AUGMENTATIONS, DEFAULT_IMAGE_SIZE, IMAGENET_MEAN, IMAGENET_STD

_MEAN = np.array(IMAGENET_MEAN, dtype=np.float32).reshape(3, 1, 1)
_STD = np.array(IMAGENET_STD, dtype=np.float32).reshape(3, 1, 1)


def _as_gray(img) -> np.ndarray:
    if isinstance(img, torch.Tensor):
        img = img.numpy()
    img = np.asarray(img)
    if img.ndim == 3:
        img = img[0] if img.shape[0] in (1, 3) else img[..., 0]
    return img


# (x / 255 - mean) / std folded into one multiply-add per channel
_SCALE = (1.0 / (255.0 * _STD)).astype(np.float32)
_OFFSET = (-_MEAN / _STD).astype(np.float32)


def to_normalised_rgb(gray: np.ndarray) -> torch.Tensor:
    """uint8 or float [0, 255] (H, W) -> float32 (3, H, W), ImageNet-normalised."""
    g = gray.astype(np.float32)
    out = np.empty((3, *g.shape), dtype=np.float32)
    for c in range(3):  # in place: no (3, H, W) temporaries
        np.multiply(g, _SCALE[c, 0, 0], out=out[c])
        out[c] += _OFFSET[c, 0, 0]
    return torch.from_numpy(out)


def normalise_batch(x: torch.Tensor) -> torch.Tensor:
    """A batch as the model takes it: uint8 gray (B, 1, H, W) becomes float32 (B, 3, H, W),
    ImageNet-normalised, on x's device (equal to `to_normalised_rgb` per image); float batches
    (already normalised) pass through unchanged."""
    if x.dtype != torch.uint8:
        return x
    scale = torch.as_tensor(_SCALE.reshape(1, 3, 1, 1), device=x.device)
    offset = torch.as_tensor(_OFFSET.reshape(1, 3, 1, 1), device=x.device)
    return x.float() * scale + offset


def _finish(gray: np.ndarray, normalise: bool) -> torch.Tensor:
    if normalise:
        return to_normalised_rgb(gray)
    return torch.from_numpy(np.ascontiguousarray(gray, dtype=np.uint8))[None]


class ClassificationPresetTrain:
    """Training augmentation. Every knob is keyword-only; 0 (or (1, 1) for scale) disables it."""

    def __init__(self, *, size: int = DEFAULT_IMAGE_SIZE, hflip_prob: float = 0.5,
                 rotation_degrees: float = 20.0, brightness: float = 0.2, contrast: float = 0.2,
                 translate: float = 0.05, scale: tuple[float, float] = (0.95, 1.05), normalise: bool = True):
        self.size = int(size)
        self.normalise = normalise
        self.hflip_prob = hflip_prob
        self.rotation_degrees = rotation_degrees
        self.brightness = brightness
        self.contrast = contrast
        self.translate = translate
        self.scale = tuple(scale)

    def draw(self) -> dict:
        """One random draw of every knob (a single call into torch's generator)."""
        u = torch.rand(7).tolist()

        def between(x, lo, hi):
            return lo + (hi - lo) * x

        r, t = self.rotation_degrees, self.translate
        return {"angle": between(u[0], -r, r) if r else 0.0,
                "zoom": between(u[1], *self.scale) if self.scale != (1.0, 1.0) else 1.0,
                "tx": between(u[2], -t, t) * self.size if t else 0.0,
                "ty": between(u[3], -t, t) * self.size if t else 0.0,
                "flip": self.hflip_prob > 0 and u[4] < self.hflip_prob,
                "brightness": between(u[5], 1 - self.brightness, 1 + self.brightness) if self.brightness else 1.0,
                "contrast": between(u[6], 1 - self.contrast, 1 + self.contrast) if self.contrast else 1.0}

    def matrix(self, h: int, w: int, draw: dict | None = None) -> np.ndarray:
        """The 2x3 map from source pixels to output pixels for one draw (a random one if not given).

        Composed in closed form: source pixel centres (u + 0.5) * s / w - 0.5 land on the resized
        grid; then the flip; then rotation and zoom about the centre c; then the translation."""
        d = draw or self.draw()
        s = self.size
        sx, ox = s / w, 0.5 * s / w - 0.5
        sy, oy = s / h, 0.5 * s / h - 0.5
        if d["flip"]:
            sx, ox = -sx, (s - 1) - ox
        c = (s - 1) / 2
        rad = math.radians(d["angle"])
        zc, zs = d["zoom"] * math.cos(rad), d["zoom"] * math.sin(rad)
        bx, by = ox - c, oy - c  # offsets about the centre
        return np.array([[zc * sx, -zs * sy, zc * bx - zs * by + c + d["tx"]],
                         [zs * sx, zc * sy, zs * bx + zc * by + c + d["ty"]]], dtype=np.float64)

    def __call__(self, img) -> torch.Tensor:
        gray = _as_gray(img)
        h, w = gray.shape
        d = self.draw()
        m = self.matrix(h, w, d)
        shrink = min(w, h) / self.size
        interp = cv2.INTER_AREA if shrink >= 2 else cv2.INTER_LINEAR
        if interp == cv2.INTER_AREA:  # warpAffine has no area filter: shrink first, then warp
            gray = cv2.resize(gray, (self.size, self.size), interpolation=cv2.INTER_AREA)
            sw, sh = w / self.size, h / self.size  # resized pixel centres back to source pixels
            m = m @ np.array([[sw, 0, 0.5 * sw - 0.5], [0, sh, 0.5 * sh - 0.5], [0, 0, 1]])
        out = cv2.warpAffine(gray, m, (self.size, self.size), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        if self.brightness or self.contrast:
            # brightness b then contrast k about the (brightened) mean, as torchvision's ColorJitter:
            # y = k * (b x) + (1 - k) * mean(b x), saturated to 0..255 in one OpenCV pass
            b, k = d["brightness"], d["contrast"]
            mean = cv2.mean(out)[0] * b
            out = cv2.addWeighted(out, b * k, out, 0.0, (1 - k) * mean)
        return _finish(out, self.normalise)


class ClassificationPresetEval:
    """Deterministic evaluation preprocessing: resize to a square and normalise."""

    def __init__(self, *, size: int = DEFAULT_IMAGE_SIZE, normalise: bool = True):
        self.size = int(size)
        self.normalise = normalise

    def __call__(self, img) -> torch.Tensor:
        gray = _as_gray(img)
        if gray.shape != (self.size, self.size):
            interp = cv2.INTER_AREA if min(gray.shape) >= self.size else cv2.INTER_LINEAR
            gray = cv2.resize(gray, (self.size, self.size), interpolation=interp)
        return _finish(gray, self.normalise)


def build_transform(train: bool, size: int = DEFAULT_IMAGE_SIZE, augment: str = "study", *, normalise: bool = True):
    """`augment`: "study" (flip, rotation, jitter, affine), "flip" (flip only), "none".
    `normalise=False`: uint8 (1, S, S) output, to be finished by `normalise_batch` on the device."""
    if augment not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation preset {augment!r}; allowed: {', '.join(AUGMENTATIONS)}")
    if not train or augment == "none":
        return ClassificationPresetEval(size=size, normalise=normalise)
    if augment == "flip":
        return ClassificationPresetTrain(size=size, rotation_degrees=0, brightness=0, contrast=0,
                                         translate=0, scale=(1.0, 1.0), normalise=normalise)
    return ClassificationPresetTrain(size=size, normalise=normalise)


def denormalise(images: torch.Tensor) -> torch.Tensor:
    """Inverse of the normalisation: (N, 3, H, W) float -> [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images * std + mean).clamp(0, 1)
