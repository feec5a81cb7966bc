"""Models: the DenseNet/ResNet adapters (head, pooled features, CAM layer), the project's own
ResNet-50, ImageNet weights, and checkpoints (atomic writes, weights_only loads)."""
from .._lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, globals(), {
    "XrayNet": "build", "build_model": "build", "load_backbone": "build", "count_parameters": "build",
    "WeightsUnavailable": "build", "imagenet_cache_file": "build", "load_imagenet_state_dict": "build",
    "imagenet_weights_missing": "build",
    "ARCHS": "build", "ResNet50": "resnet",
    "CheckpointError": "checkpoint", "load_checkpoint": "checkpoint", "save_checkpoint": "checkpoint",
})
