"""Looking inside a model: single-image inference, class activation maps (CAM and the grad-cam
methods), heatmap overlays, top-k galleries and localisation against NIH's boxes."""
from .._lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, globals(), {
    "LoadedModel": "inference",
    "activation_maps": "cam", "class_activation_maps": "cam", "scale_maps": "cam", "METHODS": "cam",
    "overlay_heatmap": "overlay", "COLORMAPS": "overlay",
    "top_k": "gallery", "gallery_maps": "gallery",
    "localize": "localize", "read_bbox_list": "localize", "NIH_BOX_SPACE": "localize",
})
