"""Train and eval preprocessing presets (torchvision `references/classification/presets.py` style).

Input: a grayscale uint8 tensor (1, H, W). Output: a float32 tensor (3, size, size), ImageNet
normalised. Augmentation runs on the single channel (a third of the work of RGB) and the channel is
replicated at the end, because X-rays carry no colour. The study's augmentation (section 5.1):
horizontal flip, rotation within +-20 degrees, colour jitter (brightness, contrast), affine.
"""
from __future__ import annotations

import torch
from torchvision.transforms import v2

from ..constants import DEFAULT_IMAGE_SIZE, IMAGENET_MEAN, IMAGENET_STD


class _ToNormalisedRGB:
    """uint8 (1, H, W) -> float32 (3, H, W), ImageNet-normalised."""

    def __init__(self):
        self.mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        x = img.to(torch.float32).div_(255.0)
        if x.shape[0] == 1:
            x = x.expand(3, -1, -1)
        return (x - self.mean) / self.std


class ClassificationPresetTrain:
    """Training augmentation. Every knob is keyword-only; 0 disables that augmentation."""

    def __init__(self, *, size: int = DEFAULT_IMAGE_SIZE, hflip_prob: float = 0.5,
                 rotation_degrees: float = 20.0, brightness: float = 0.2, contrast: float = 0.2,
                 translate: float = 0.05, scale: tuple[float, float] = (0.95, 1.05), shear: float = 0.0):
        ops: list = [v2.Resize((size, size), antialias=True)]
        if hflip_prob > 0:
            ops.append(v2.RandomHorizontalFlip(hflip_prob))
        if rotation_degrees > 0 or translate > 0 or tuple(scale) != (1.0, 1.0) or shear > 0:
            # One affine warp does rotation, translation, scale and shear: one interpolation, not four.
            ops.append(v2.RandomAffine(degrees=rotation_degrees, translate=(translate, translate) if translate > 0 else None,
                                       scale=tuple(scale) if tuple(scale) != (1.0, 1.0) else None,
                                       shear=shear if shear > 0 else None))
        if brightness > 0 or contrast > 0:
            ops.append(v2.ColorJitter(brightness=brightness or None, contrast=contrast or None))
        self.transforms = v2.Compose(ops)
        self.finish = _ToNormalisedRGB()
        self.size = size

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        return self.finish(self.transforms(img))


class ClassificationPresetEval:
    """Deterministic evaluation preprocessing: resize to a square and normalise."""

    def __init__(self, *, size: int = DEFAULT_IMAGE_SIZE):
        self.resize = v2.Resize((size, size), antialias=True)
        self.finish = _ToNormalisedRGB()
        self.size = size

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        return self.finish(self.resize(img))


def build_transform(train: bool, size: int = DEFAULT_IMAGE_SIZE, augment: str = "study"):
    """`augment`: "study" (flip, rotation, jitter, affine), "flip" (flip only), "none"."""
    if not train or augment == "none":
        return ClassificationPresetEval(size=size)
    if augment == "flip":
        return ClassificationPresetTrain(size=size, rotation_degrees=0, brightness=0, contrast=0,
                                         translate=0, scale=(1.0, 1.0))
    if augment == "study":
        return ClassificationPresetTrain(size=size)
    raise ValueError(f"unknown augmentation preset {augment!r}; allowed: study, flip, none")


def denormalise(images: torch.Tensor) -> torch.Tensor:
    """Inverse of the normalisation: (N, 3, H, W) float -> [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images * std + mean).clamp(0, 1)
