"""The pathology landscape (the study's section 5.4): features and pixels of a run's images
(cached per run), t-SNE, self-organising maps, neighbours, purity and silhouettes."""
from .._lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, globals(), {
    "Landscape": "store", "load_landscape": "store",
    "TsneMap": "embeddings", "extract_features": "embeddings", "pixel_features": "embeddings",
    "select_images": "embeddings", "nearest_neighbours": "embeddings", "neighbourhood": "embeddings",
    "landscape_numbers": "embeddings", "pca_reduce": "embeddings",
    "fit_som": "som", "fit_som_pca": "som", "cell_label_distribution": "som", "study_sigma": "som",
})
