"""Class activation maps (Zhou et al., "Learning Deep Features for Discriminative Localization",
CVPR 2016), as the study defines them: M_c = sum_k w_ck f_k over the final conv features f_k
(after ReLU) and the classifier weights w_ck, for every class from one forward pass.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .models import XrayNet


def scale_maps(maps: torch.Tensor, mode: str = "image", eps: float = 1e-8) -> torch.Tensor:
    """Min-max scale (N, C, H, W) maps to [0, 1]: "image" per map, "class" with one scale per class
    over the batch (so maps compare across images), "none" clamps at 0 and divides by the batch max."""
    if mode == "image":
        lo = maps.amin(dim=(2, 3), keepdim=True)
        hi = maps.amax(dim=(2, 3), keepdim=True)
    elif mode == "class":
        lo = maps.amin(dim=(0, 2, 3), keepdim=True)
        hi = maps.amax(dim=(0, 2, 3), keepdim=True)
    elif mode == "none":
        maps = maps.clamp(min=0)
        lo, hi = torch.zeros(()), maps.amax().clamp(min=eps)
    else:
        raise ValueError(f"unknown scaling {mode!r}; allowed: image, class, none")
    return ((maps - lo) / (hi - lo).clamp(min=eps)).clamp(0, 1)


@torch.no_grad()
def class_activation_maps(model: XrayNet, images: torch.Tensor, *, scale: str = "image",
                          upsample: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """All classes' CAMs from one forward pass.

    images (N, 3, H, W) normalised -> (cams (N, C, H, W) float32 in [0, 1], logits (N, C)).
    """
    model.eval()
    features = model.forward_features(images).float()  # (N, K, h, w), post-ReLU
    logits = model.forward_head(features)
    weights = model.classifier.weight.float()  # (C, K)
    cams = torch.einsum("ck,nkhw->nchw", weights, features)
    if upsample:
        cams = F.interpolate(cams, size=images.shape[-2:], mode="bilinear", align_corners=False)
    return scale_maps(cams, scale).float(), logits.float()
