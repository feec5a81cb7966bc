"""Model adapters: one place hides the DenseNet/ResNet differences (head, pooled features, CAM layer).

Like timm, every model exposes `forward_features` (the final conv feature map, after ReLU: the
study's f_k), `forward_head(features, pre_logits=...)` and `reset_classifier`. Initialisations:
"scratch", "imagenet" (torchvision's weights through the torch hub cache) or a checkpoint / run
(transfer: keep the backbone, new head).
"""
from __future__ import annotations

import logging
import os
import re
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..constants import ARCHS, IMAGENET_MEAN, IMAGENET_STD
from .checkpoint import load_checkpoint
from . import xrv
from .resnet import ResNet50
from .tiny import TinyCNN

log = logging.getLogger(__name__)

INIT_KINDS = ("scratch", "imagenet")


class WeightsUnavailable(FileNotFoundError):
    """ImageNet weights could not be downloaded; the message names the file to place in the cache."""


def _torchvision_body(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision  # imported where needed: it costs seconds (torch._dynamo) for pages that build no model

        return getattr(torchvision.models, name)(weights=None)
    return build


def _resnet_features(b: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
    return b.layer4(b.layer3(b.layer2(b.layer1(x))))


@dataclass(frozen=True)
class Architecture:
    """One row of the architecture table: how to build a body and where its parts are."""
    name: str
    build: Callable[[], nn.Module]                              # the body, ImageNet head included
    head: str                                                   # the body's attribute holding that head
    features: Callable[[nn.Module, torch.Tensor], torch.Tensor]  # body, images -> final conv feature map
    imagenet: str | None                                         # torchvision's weights enum (IMAGENET1K_V1)


# Every architecture the engine builds; constants.ARCHS lists the same names (a test holds them equal).
ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (
    # the project's own ResNet-50 (the study's "implemented from scratch"); torchvision's weights load into it
    Architecture("resnet50_own", ResNet50, "fc", lambda b, x: b.forward_features(x), "ResNet50_Weights"),
    Architecture("resnet50", _torchvision_body("resnet50"), "fc", _resnet_features, "ResNet50_Weights"),
    Architecture("densenet121", _torchvision_body("densenet121"), "classifier", lambda b, x: b.features(x),
                 "DenseNet121_Weights"),
    # a few-layer CNN with the same stride: for tests and smoke runs, where the architecture is not the point
    Architecture("tiny", TinyCNN, "classifier", lambda b, x: b.features(x), None),
)}


def architecture(arch: str) -> Architecture:
    try:
        return ARCHITECTURES[arch]
    except KeyError:
        raise ValueError(f"unknown arch {arch!r}; allowed: {', '.join(ARCHS)}") from None


class XrayNet(nn.Module):
    """A backbone + global-average-pool + linear head.

    body: the torchvision (or own) network; its final conv feature map (N, K, h, w) is read through the
    architecture table. classifier: nn.Linear(K, num_classes). `cam_layer` names the module whose
    output CAM reads.
    """

    def __init__(self, arch: str, body: nn.Module, num_classes: int):
        super().__init__()
        self.arch = arch
        self.body = body
        self._features = architecture(arch).features
        # the final conv features after their ReLU: the study's f_k, where CAM and Grad-CAM hook in.
        # Out of place, so hooks and gradients stay valid (torchvision's DenseNet applies an
        # in-place ReLU in forward(), a known Grad-CAM trap). ResNet's layer4 already ends in a ReLU:
        # applying it again changes nothing but gives one hook point.
        self.final_relu = nn.ReLU(inplace=False)
        self.cam_layer = "final_relu"
        head = architecture(arch).head
        self.num_features = getattr(body, head).in_features
        setattr(body, head, nn.Identity())
        self.classifier = nn.Linear(self.num_features, num_classes)
        self.num_classes = num_classes

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, K, H/32, W/32), non-negative (post-ReLU) final conv features."""
        return self.final_relu(self._features(self.body, x))

    def cam_module(self) -> nn.Module:
        """The module whose output is the final conv feature map (CAM / Grad-CAM target layer)."""
        return self.get_submodule(self.cam_layer)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pooled = torch.flatten(F.adaptive_avg_pool2d(features, 1), 1)
        return pooled if pre_logits else self.classifier(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, K) global-average-pooled final features (the latent space of the landscape maps)."""
        return self.forward_head(self.forward_features(x), pre_logits=True)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """As nn.Module's; a state saved from a model started from torchxrayvision (its first layer
        is XrvScale + a 1-channel conv) gives this model that first layer before loading."""
        if self.arch == "densenet121" and any(k.startswith(xrv.STEM) for k in state_dict):
            use_xrv_stem(self.body)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def reset_classifier(self, num_classes: int) -> None:
        self.classifier = nn.Linear(self.num_features, num_classes)
        self.num_classes = num_classes


def _torchvision_weights(arch: str):
    import torchvision  # imported where needed: it costs seconds (torch._dynamo) for pages that build no model

    enum = architecture(arch).imagenet
    if enum is None:
        raise ValueError(f"{arch} has no ImageNet weights: start it from scratch or from a run of the same arch")
    return getattr(torchvision.models, enum).IMAGENET1K_V1


def imagenet_cache_file(arch: str) -> Path:
    """Where torch hub keeps (and looks for) the ImageNet weights of `arch`."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(_torchvision_weights(arch).url)


def load_imagenet_state_dict(arch: str, url: str | None = None) -> dict:
    """torchvision's ImageNet weights via the torch hub cache (downloaded once, hash-checked)."""
    weights = _torchvision_weights(arch)
    target = imagenet_cache_file(arch)
    try:
        return torch.hub.load_state_dict_from_url(url or weights.url, file_name=target.name, progress=True,
                                                  check_hash=url is None, map_location="cpu", weights_only=True)
    except (urllib.error.URLError, OSError, RuntimeError) as exc:
        raise WeightsUnavailable(
            f"ImageNet weights for {arch} are not in the cache and cannot be downloaded ({exc}). "
            f"Download {weights.url} on a machine with internet and place it at {target}") from exc


def imagenet_weights_missing(arch: str, fetch: bool = True) -> str | None:
    """None when torchvision's ImageNet weights for arch are in the cache (downloaded now when
    fetch is set and the network allows); else what to do, naming the file and the folder."""
    target = imagenet_cache_file(arch)
    if target.is_file():
        return None
    if fetch:
        try:
            load_imagenet_state_dict(arch)
            return None
        except WeightsUnavailable:
            pass
    return f"place {target.name} in {target.parent} (download {_torchvision_weights(arch).url})"


class XrvScale(nn.Module):
    """The engine's input (grayscale replicated to 3 channels, ImageNet-normalised) as
    torchxrayvision's (1 channel, [-1024, 1024]): x = 2048 * (std_0 * x_0 + mean_0) - 1024."""

    def __init__(self):
        super().__init__()
        self.register_buffer("scale", torch.tensor(2048.0 * IMAGENET_STD[0]))
        self.register_buffer("offset", torch.tensor(2048.0 * IMAGENET_MEAN[0] - 1024.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1] * self.scale + self.offset


def use_xrv_stem(body: nn.Module) -> None:
    """Give a torchvision DenseNet-121 torchxrayvision's first layer: XrvScale, then a 1-channel conv0."""
    conv = body.features.conv0
    if isinstance(conv, nn.Sequential):
        return
    body.features.conv0 = nn.Sequential(XrvScale(), nn.Conv2d(1, conv.out_channels, kernel_size=conv.kernel_size,
                                                               stride=conv.stride, padding=conv.padding, bias=False))


def load_xrv_backbone(body: nn.Module, name: str) -> None:
    """torchxrayvision's backbone into a torchvision DenseNet-121 (its classifier is the engine's)."""
    use_xrv_stem(body)
    state = {("features.conv0.1.weight" if k == "features.conv0.weight" else k): v
             for k, v in _densenet_legacy_keys(xrv.load_state(name)).items() if not k.startswith("classifier.")}
    missing, unexpected = body.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(("classifier.", "features.conv0.0."))]
    if missing or unexpected:
        raise ValueError(f"the torchxrayvision weights {name} do not match a DenseNet-121: missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}")


def _densenet_legacy_keys(state: dict) -> dict:
    # old DenseNet checkpoints name layers "norm.1"; torchvision's loader renames them to "norm1"
    pattern = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")
    out = {}
    for k, v in state.items():
        m = pattern.match(k)
        out[(m.group(1) + m.group(2)) if m else k] = v
    return out


def build_model(arch: str, num_classes: int, init: str = "scratch") -> XrayNet:
    """A model ready to train. `init`: "scratch", "imagenet", "xrv:NAME" (torchxrayvision's chest X-ray
    DenseNet-121, engine.models.xrv) or a checkpoint path (transfer).

    For a checkpoint, the backbone is loaded and the head is new (`num_classes` outputs) unless the
    checkpoint's head already has that size and the same classes (then it is kept too).
    """
    spec = architecture(arch)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    body = spec.build()
    if init == "imagenet":
        state = _densenet_legacy_keys(load_imagenet_state_dict(arch))
        body.load_state_dict(state)
    elif xrv.is_xrv(init):
        if arch != "densenet121":
            raise ValueError(f"torchxrayvision's weights ({init}) are DenseNet-121s: use arch densenet121, not {arch}")
        load_xrv_backbone(body, xrv.xrv_name(init))
    model = XrayNet(arch, body, num_classes)
    if init not in INIT_KINDS and not xrv.is_xrv(init):
        load_backbone(model, init)
    return model


def load_backbone(model: XrayNet, checkpoint_path) -> None:
    """Copy the backbone (everything but the head) of a saved checkpoint into `model`."""
    ckpt = load_checkpoint(checkpoint_path)
    if ckpt.get("arch") != model.arch:
        raise ValueError(f"checkpoint {checkpoint_path} holds a {ckpt.get('arch')} model, not {model.arch}")
    state = {k: v for k, v in ckpt["model"].items() if not k.startswith("classifier.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("classifier.")]
    if missing or unexpected:
        raise ValueError(f"checkpoint {checkpoint_path} does not match {model.arch}: missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
