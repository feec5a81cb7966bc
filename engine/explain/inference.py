"""Single-image inference for a run's model: probabilities and CAMs (the Diagnose page, `cam` CLI)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data.images import resize_gray
from ..data.transforms import build_transform
from ..devices import pick_device
from ..models.build import XrayNet, build_model
from ..models.checkpoint import load_checkpoint
from .cam import activation_maps


class LoadedModel:
    """A run's best model ready for inference."""

    def __init__(self, checkpoint_path, device: str = "auto"):
        ckpt = load_checkpoint(checkpoint_path)
        self.path = Path(checkpoint_path)
        self.class_names = list(ckpt["class_names"])
        self.arch = ckpt["arch"]
        cfg = ckpt.get("config", {})
        self.image_size = int(cfg.get("data", {}).get("image_size", 224))
        self.load_size = int(cfg.get("data", {}).get("load_size", 256))
        self.device = pick_device(device)
        self.model: XrayNet = build_model(self.arch, len(self.class_names), "scratch")
        self.model.load_state_dict(ckpt["model"])
        self.model.to(self.device).eval()
        self.epoch = ckpt.get("epoch")
        self.transform = build_transform(False, self.image_size)

    def tensor(self, gray: np.ndarray) -> torch.Tensor:
        """Grayscale uint8 (H, W) of any size -> (1, 3, S, S), preprocessed like evaluation."""
        return self.transform(resize_gray(gray, self.load_size)).unsqueeze(0).to(self.device)

    def predict(self, gray: np.ndarray, method: str = "cam", classes=None, scale: str = "image") -> tuple[np.ndarray,
                                                                                                          np.ndarray]:
        """-> (probs (C,), maps (len(classes), S, S) in [0, 1]); CAM needs a single forward pass."""
        maps, logits = activation_maps(self.model, self.tensor(gray), method=method, classes=classes, scale=scale)
        return torch.sigmoid(logits)[0].detach().cpu().numpy(), maps[0].detach().cpu().numpy()
