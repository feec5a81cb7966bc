"""Chest X-ray transfer-learning lab engine: data, models, training, evaluation, CAM, runs.

The public surface the dashboard and the CLI use. Names load lazily (PEP 562), so that
`python -m engine` starts fast and installs its signal handlers before torch is imported.
Nothing here imports Streamlit.
"""
from importlib import import_module

_EXPORTS = {
    "class_activation_maps": "cam", "activation_maps": "cam", "scale_maps": "cam",
    "CheckpointError": "checkpoint", "load_checkpoint": "checkpoint", "save_checkpoint": "checkpoint",
    "PRESETS": "config", "ConfigError": "config", "ExperimentConfig": "config", "field_types": "config",
    "from_preset": "config", "COMBINED15_LABELS": "constants", "COVID_LABEL": "constants", "NIH_LABELS": "constants",
    "describe_device": "devices", "pick_device": "devices", "LoadedModel": "inference", "best_checkpoint": "inference",
    "auc_table": "metrics", "bootstrap_auc": "metrics", "per_class_auc": "metrics", "roc_curves": "metrics",
    "ARCHS": "models", "build_model": "models", "overlay_heatmap": "overlay", "STATUSES": "runs",
    "Registry": "runs", "RunError": "runs", "validate_name": "runs",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
