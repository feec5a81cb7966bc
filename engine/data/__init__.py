"""Data: datasets (NIH ChestX-ray14, COVID-19 collection, the 15-class mix), splits, transforms,
image reading, the preprocessed cache, downloads, data roots and the task's datasets of a config."""
from .._lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, globals(), {
    "CacheSet": "cache", "ImageCache": "cache", "build_cache": "cache", "cache_folder": "cache",
    "Combined15": "combined", "balanced_selection": "combined",
    "COVID19Collection": "covid", "covid_status": "covid",
    "XrayDataset": "dataset", "collate": "dataset",
    "ImageReadError": "images", "decode_xray": "images", "read_xray": "images", "resize_gray": "images",
    "to_rgb": "images", "NIHChestXray14": "nih", "patient_overlap": "splits", "split_by_patient": "splits",
    "ClassificationPresetEval": "transforms", "ClassificationPresetTrain": "transforms",
    "build_transform": "transforms", "normalise_batch": "transforms",
    "DataRootError": "roots", "resolve_root": "roots", "task_roots": "roots",
    "build_datasets": "tasks", "needed_roots": "tasks", "cap_split": "tasks",
})
