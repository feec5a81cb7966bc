"""Chest X-ray transfer-learning lab engine: data, models, training, evaluation, CAM, runs.

The public surface the dashboard and the CLI use. Nothing here imports Streamlit.
"""
from .cam import class_activation_maps, scale_maps
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import PRESETS, ConfigError, ExperimentConfig, field_types, from_preset
from .constants import COMBINED15_LABELS, COVID_LABEL, NIH_LABELS
from .devices import describe_device, pick_device
from .inference import LoadedModel, best_checkpoint
from .metrics import auc_table, bootstrap_auc, per_class_auc, roc_curves
from .models import ARCHS, build_model
from .overlay import overlay_heatmap
from .runs import STATUSES, Registry, RunError, validate_name

__all__ = [
    "class_activation_maps", "scale_maps", "CheckpointError", "load_checkpoint", "save_checkpoint", "PRESETS",
    "ConfigError", "ExperimentConfig", "field_types", "from_preset", "COMBINED15_LABELS", "COVID_LABEL",
    "NIH_LABELS", "describe_device", "pick_device", "LoadedModel", "best_checkpoint", "auc_table",
    "bootstrap_auc", "per_class_auc", "roc_curves", "ARCHS", "build_model", "overlay_heatmap", "STATUSES",
    "Registry", "RunError", "validate_name",
]
