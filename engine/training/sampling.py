"""What a training epoch reads, in which order: oversampling weights, the epoch's sample order
(a pure function of seed and epoch, so a resumed run replays it) and the DataLoader."""
from __future__ import annotations

import numpy as np
import torch

from ..data.dataset import XrayDataset, collate
from .signals import ignore_stop_signals


def sample_weights(targets: np.ndarray) -> np.ndarray:
    """Oversampling weights: an image weighs 1/frequency of its rarest positive class (negatives:
    1/frequency of all-negative images), so every class is drawn about equally often."""
    t = np.nan_to_num(targets, nan=0.0) > 0.5
    freq = t.sum(axis=0).astype(float)
    neg = ~t.any(axis=1)
    w = np.zeros(len(t))
    with np.errstate(divide="ignore"):
        inv = np.where(freq > 0, 1.0 / freq, 0.0)
    w[~neg] = (t[~neg] * inv).max(axis=1)
    if neg.any():
        w[neg] = 1.0 / neg.sum()
    return w / w.sum()


def epoch_order(n: int, *, seed: int, epoch: int, reshuffle: bool, weights: np.ndarray | None) -> np.ndarray:
    """The sample order of one epoch: a pure function of (seed, epoch), so a resumed run replays it."""
    g = torch.Generator().manual_seed(seed * 100_003 + (epoch if reshuffle else 0))
    if weights is not None:
        return torch.multinomial(torch.as_tensor(weights, dtype=torch.float64), n, replacement=True,
                                 generator=g).numpy()
    return torch.randperm(n, generator=g).numpy()


def rank_share(order: np.ndarray, rank: int, world: int) -> np.ndarray:
    """This rank's part of an epoch order (padded so every rank takes the same number of steps)."""
    pad = (-len(order)) % world
    return np.concatenate([order, order[:pad]])[rank::world]


class ListSampler(torch.utils.data.Sampler):
    def __init__(self, indices: np.ndarray):
        self.indices = [int(i) for i in indices]

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


def make_loader(ds: XrayDataset, indices: np.ndarray | None, batch_size: int, workers: int, device, seed: int = 0):
    """Batches of `ds` in the given order (all rows when None). Workers ignore stop signals: a
    cancel is the trainer's business, and the loader shuts its workers down."""
    sampler = ListSampler(np.arange(len(ds)) if indices is None else indices)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers,
                                       collate_fn=collate, pin_memory=device.type == "cuda",
                                       generator=torch.Generator().manual_seed(seed),
                                       worker_init_fn=ignore_stop_signals if workers else None,
                                       persistent_workers=False, prefetch_factor=4 if workers else None)
