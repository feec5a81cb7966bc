"""The study's 15-class task (section 5.3): the 14 ChestX-ray14 labels + COVID-19, balanced.

NIH images are COVID-19 negative (ChestX-ray14 predates the pandemic); COVID collection images have
unknown NIH labels (NaN, masked out of the loss). Sampling is balanced: per split, classes are
visited rarest first and random positives are added until each class has at least
`min_per_class` images where the data allows (the study used >= 200), plus as many "No Finding"
NIH images as negatives.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..constants import COMBINED15_LABELS, NIH_LABELS, SPLITS
from .covid import COVID19Collection
from .dataset import XrayDataset
from .nih import NIHChestXray14


def balanced_selection(targets: np.ndarray, min_per_class: int, seed: int, negatives: int | None = None) -> np.ndarray:
    """Indices of a balanced subset of a (N, C) target matrix (NaN = unknown).

    Classes are filled rarest first; a chosen image counts for every class it is positive for, so
    frequent co-occurring classes need fewer extra picks. Rows with no positive (all 0) are
    negatives: `negatives` of them (default `min_per_class`) are added. Sorted, no duplicates.
    """
    rng = np.random.default_rng(seed)
    pos = np.nan_to_num(targets, nan=0.0) > 0.5
    chosen = np.zeros(len(targets), dtype=bool)
    for c in np.argsort(pos.sum(axis=0), kind="stable"):
        have = int((pos[:, c] & chosen).sum())
        need = min_per_class - have
        if need <= 0:
            continue
        pool = np.flatnonzero(pos[:, c] & ~chosen)
        chosen[rng.permutation(pool)[:need]] = True
    neg_pool = np.flatnonzero(~pos.any(axis=1) & ~np.isnan(targets).all(axis=1) & ~chosen)
    n_neg = min_per_class if negatives is None else negatives
    chosen[rng.permutation(neg_pool)[:n_neg]] = True
    return np.flatnonzero(chosen)


class Combined15(XrayDataset):
    """NIH + COVID-19 collection with 15 targets in `COMBINED15_LABELS` order, balanced per split.

    min_per_class applies to the training split; val and test get `eval_per_class` (default:
    the same) so their AUCs have enough positives. Unlabelled ("todo") COVID images are dropped.
    """

    name = "combined15"

    def __init__(self, nih: NIHChestXray14, covid: COVID19Collection, *, min_per_class: int = 200,
                 eval_per_class: int | None = None, seed: int = 0, transform=None, load_size=None, cache=None):
        covid = covid.select(covid.frame["label_group"].to_numpy() != "unlabelled")
        k = len(NIH_LABELS)
        t_nih = np.concatenate([nih.targets, np.zeros((len(nih), 1), np.float32)], axis=1)
        t_cov = np.full((len(covid), k + 1), np.nan, np.float32)
        t_cov[:, k] = covid.targets[:, 0]
        # A non-COVID image from the collection is a COVID-19 negative; its NIH labels stay unknown.
        frame = pd.concat([nih.frame, covid.frame], ignore_index=True)
        targets = np.concatenate([t_nih, t_cov])
        keep = []
        for i, split in enumerate(SPLITS):
            rows = np.flatnonzero(frame["split"].to_numpy() == split)
            n = min_per_class if split == "train" else (eval_per_class or min_per_class)
            keep.append(rows[balanced_selection(targets[rows], n, seed + i)])
        keep = np.concatenate(keep)
        skipped = {f"nih.{a}": b for a, b in nih.skipped.items()} | {f"covid.{a}": b for a, b in covid.skipped.items()}
        super().__init__(frame.iloc[keep], targets[keep], COMBINED15_LABELS, transform=transform,
                         load_size=load_size or nih.load_size, cache=cache, skipped=skipped)
