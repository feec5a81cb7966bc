"""Chest X-ray transfer-learning lab engine. Stages, one subpackage each:

    data/       datasets, splits, transforms, image reading, cache, downloads, data roots
    models/     DenseNet/ResNet adapters, the own ResNet-50, ImageNet weights, checkpoints
    training/   fit over train_one_epoch / validate, callbacks, stop requests, evaluation, DDP
    runs/       registry, run folder, allowed state changes, reporter, jobs (submit/schedule/cancel)
    explain/    single-image inference, CAM and grad-cam maps, overlays, galleries, localisation
    landscape/  features and pixels of a run's images, t-SNE, SOM, neighbours
    cli/        `python -m engine ...`

plus config, constants, metrics, devices and published numbers. This module is the public surface
the dashboard uses; names load lazily (PEP 562) so nothing heavy (torch) is imported before it is
needed. Nothing in the engine imports Streamlit.
"""
from ._lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, globals(), {
    "PRESETS": "config", "PRESET_NOTES": "config", "ConfigError": "config", "ExperimentConfig": "config",
    "field_types": "config", "from_preset": "config",
    "COMBINED15_LABELS": "constants", "COVID_LABEL": "constants", "NIH_LABELS": "constants",
    "CAM_METHODS": "constants", "CAM_SCALES": "constants",
    "describe_device": "devices", "pick_device": "devices",
    "auc_table": "metrics", "bootstrap_auc": "metrics", "per_class_auc": "metrics", "roc_curves": "metrics",
    "CheckpointError": "models", "load_checkpoint": "models", "save_checkpoint": "models", "ARCHS": "models",
    "build_model": "models",
    "LoadedModel": "explain", "activation_maps": "explain", "class_activation_maps": "explain",
    "scale_maps": "explain", "overlay_heatmap": "explain",
    "Registry": "runs", "RunDir": "runs", "RunError": "runs", "STATUSES": "runs", "best_checkpoint": "runs",
    "validate_name": "runs",
})
