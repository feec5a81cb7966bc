"""Datasets, splits, transforms, image reading, the preprocessed cache and downloads."""
from .cache import CacheSet, ImageCache, build_cache, cache_folder
from .combined import Combined15, balanced_selection
from .covid import COVID19Collection, covid_status
from .dataset import XrayDataset, collate
from .images import ImageReadError, decode_xray, read_xray, resize_gray, to_rgb
from .nih import NIHChestXray14
from .splits import patient_overlap, split_by_patient
from .transforms import ClassificationPresetEval, ClassificationPresetTrain, build_transform

__all__ = [
    "CacheSet", "ImageCache", "build_cache", "cache_folder", "Combined15", "balanced_selection",
    "COVID19Collection", "covid_status", "XrayDataset", "collate", "ImageReadError", "decode_xray",
    "read_xray", "resize_gray", "to_rgb", "NIHChestXray14", "patient_overlap", "split_by_patient",
    "ClassificationPresetEval", "ClassificationPresetTrain", "build_transform",
]
