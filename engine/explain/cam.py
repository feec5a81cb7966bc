"""Class activation maps: the study's CAM and gradient-based maps through the `grad-cam` package.

CAM (Zhou et al., CVPR 2016), as the study defines it: M_c = sum_k w_ck f_k over the final conv
features f_k (after ReLU) and the classifier weights w_ck, for every class from one forward pass.
Gradient methods (Grad-CAM, Grad-CAM++, XGradCAM, LayerCAM, HiResCAM, EigenCAM) come from
pytorch-grad-cam (github.com/jacobgil/pytorch-grad-cam) and need one backward pass per class.
Scaling: "image" min-max per map (the usual, but maps are then not comparable across images) or
"class", one scale per class over the batch, so that maps compare across images.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..constants import CAM_METHODS, CAM_SCALES
from ..models.build import XrayNet


def cam_from_features(model: XrayNet, features: torch.Tensor) -> torch.Tensor:
    """The study's CAM, M_c = sum_k w_ck f_k: (N, K, h, w) last-conv features -> (N, C, h, w) maps,
    unscaled, at feature resolution. The only place the product computes it."""
    return torch.einsum("ck,nkhw->nchw", model.classifier.weight.float(), features.float())


def _grad_method(name: str):
    import pytorch_grad_cam as pgc

    return {"gradcam": pgc.GradCAM, "gradcam++": pgc.GradCAMPlusPlus, "xgradcam": pgc.XGradCAM,
            "layercam": pgc.LayerCAM, "hirescam": pgc.HiResCAM, "eigencam": pgc.EigenCAM}[name]


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
        lo, hi = torch.zeros((), device=maps.device), maps.amax().clamp(min=eps)
    else:
        raise ValueError(f"unknown scaling {mode!r}; allowed: {', '.join(CAM_SCALES)}")
    return ((maps - lo) / (hi - lo).clamp(min=eps)).clamp(0, 1)


@torch.no_grad()
def _raw_cam(model: XrayNet, images: torch.Tensor, upsample: bool = True,
             relu: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Unscaled M_c for every class and the logits, from one forward pass (ReLU, if asked, at the
    feature resolution, before upsampling, as Grad-CAM does)."""
    model.eval()
    features = model.forward_features(images).float()  # (N, K, h, w), post-ReLU
    logits = model.forward_head(features)
    cams = cam_from_features(model, features)
    if relu:
        cams = cams.clamp(min=0)
    if upsample:
        cams = F.interpolate(cams, size=images.shape[-2:], mode="bilinear", align_corners=False)
    return cams, logits.float()


def class_activation_maps(model: XrayNet, images: torch.Tensor, *, scale: str = "image",
                          upsample: bool = True, relu: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """All classes' CAMs from one forward pass.

    images (N, 3, H, W) normalised -> (cams (N, C, H, W) float32 in [0, 1], logits (N, C)).
    relu=True keeps only positive evidence (as Grad-CAM does) before scaling.
    """
    cams, logits = _raw_cam(model, images, upsample, relu)
    return scale_maps(cams, scale).float(), logits


def activation_maps(model: XrayNet, images: torch.Tensor, *, method: str = "cam", classes: Sequence[int] | None = None,
                    scale: str = "image") -> tuple[torch.Tensor, torch.Tensor]:
    """Maps of `method` for `classes` (default: all): (maps (N, len(classes), H, W) in [0, 1], logits (N, C)).

    Gradient methods run one forward/backward per class; their hooks and the weight gradients
    they leave are released on return.
    """
    if method not in CAM_METHODS:
        raise ValueError(f"unknown CAM method {method!r}; allowed: {', '.join(CAM_METHODS)}")
    if scale not in CAM_SCALES:
        raise ValueError(f"unknown scaling {scale!r}; allowed: {', '.join(CAM_SCALES)}")
    classes = list(range(model.num_classes)) if classes is None else list(classes)
    if method == "cam":
        maps, logits = class_activation_maps(model, images, scale=scale)
        return maps[:, classes], logits
    if not classes:
        with torch.no_grad():
            logits = model.eval()(images).float()
        return images.new_zeros((len(images), 0, *images.shape[-2:])), logits
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model.eval()
    raws = []
    with _grad_method(method)(model=model, target_layers=[model.cam_module()]) as cam:
        for c in classes:
            cam(input_tensor=images, targets=[ClassifierOutputTarget(c)] * len(images))
            acts = cam.activations_and_grads.activations[0].cpu().numpy()
            grad_list = cam.activations_and_grads.gradients
            grads = grad_list[0].cpu().numpy() if grad_list else None  # EigenCAM uses none
            raw = cam.get_cam_image(images, model.cam_module(), None, acts, grads, False)  # (N, h, w), unscaled
            raws.append(torch.from_numpy(raw).float().clamp(min=0))
        with torch.no_grad():
            logits = model(images).float()
    model.zero_grad(set_to_none=True)  # the backward passes' weight gradients: a model's size, freed
    if len(raws) != len(classes):  # grad-cam's context manager swallows IndexError/ValueError
        raise RuntimeError(f"{method} failed for {len(classes) - len(raws)} of {len(classes)} classes")
    raw = torch.stack(raws, dim=1)
    raw = F.interpolate(raw, size=images.shape[-2:], mode="bilinear", align_corners=False)
    return scale_maps(raw, scale).float(), logits
