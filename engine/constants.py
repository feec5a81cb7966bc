"""Label orders, normalisation constants and defaults shared by the whole engine.

The 14 ChestX-ray14 labels follow Wang et al., CVPR 2017 (and CheXNet's column order); the 15-class
order of the study's section 5.3 appends COVID-19. Every other module takes its label order from here.
"""
from __future__ import annotations

import os
from pathlib import Path

NIH_LABELS: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)
NO_FINDING = "No Finding"
COVID_LABEL = "COVID-19"
COVID_LABELS: tuple[str, ...] = (COVID_LABEL,)
COMBINED15_LABELS: tuple[str, ...] = NIH_LABELS + (COVID_LABEL,)
# the COVID-19 collection's finding hierarchy (the study's future work: viral vs bacterial pneumonia)
PNEUMONIA_LABELS: tuple[str, ...] = (COVID_LABEL, "Other viral", "Bacterial", "Fungal", "No Finding")

# ImageNet statistics used by every torchvision backbone.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Frontal views kept from the COVID-19 collection (section 3.2 of the study keeps "coronal plane" X-rays).
COVID_FRONTAL_VIEWS: tuple[str, ...] = ("PA", "AP", "AP Supine", "AP Erect")

DEFAULT_IMAGE_SIZE = 224   # network input (study section 3.3)
DEFAULT_CACHE_SIZE = 256   # side of the preprocessed cache; augmentation then resizes to 224
SPLITS: tuple[str, ...] = ("train", "val", "test")

# Environment variables: data roots and cache locations. Flags always win over these.
ENV_NIH_ROOT = "CXR_NIH_ROOT"
ENV_COVID_ROOT = "CXR_COVID_ROOT"
ENV_CACHE_DIR = "CXR_CACHE_DIR"
ENV_CHECKPOINTS = "CXR_CHECKPOINTS"
ENV_DATA_DIR = "CXR_DATA_DIR"  # where `data download` puts a dataset when no --dest is given


def default_cache_dir() -> Path:
    """Where `prepare` writes image caches: $CXR_CACHE_DIR or ~/.cache/cxrlab."""
    env = os.environ.get(ENV_CACHE_DIR)
    return Path(env) if env else Path.home() / ".cache" / "cxrlab"


def default_data_dir() -> Path:
    """Where downloaded datasets go by default: $CXR_DATA_DIR, else $XDG_DATA_HOME/cxrlab, else
    ~/.local/share/cxrlab (one folder per dataset inside: covid/, nih/)."""
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "cxrlab"


def default_checkpoints_dir() -> Path:
    """The run folder root: $CXR_CHECKPOINTS or ./checkpoints (the repository's folder)."""
    env = os.environ.get(ENV_CHECKPOINTS)
    return Path(env) if env else Path(__file__).resolve().parent.parent / "checkpoints"

# model architectures (engine.models) and augmentation presets (engine.data.transforms)
BACKBONE_STRIDE = 32  # every architecture's last conv layer: one feature cell per 32 px of input


def feature_grid(image_size: int) -> int:
    """The side of the last conv layer's feature map (the CAM grid) at `image_size` px: 224 -> 7."""
    return image_size // BACKBONE_STRIDE


ARCHS = ("resnet50_own", "resnet50", "densenet121", "tiny")  # tiny: tests and smoke runs (engine.models.tiny)
AUGMENTATIONS = ("study", "flip", "none")
# class activation map methods (engine.explain.cam) and how maps are scaled
CAM_METHODS = ("cam", "gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigencam")
CAM_SCALES = ("image", "class", "none")

BOX_FORMATS = ("nih", "rsna")  # collections whose radiologists' boxes `localize` scores maps against
