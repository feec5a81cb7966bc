"""Self-organising maps (Kohonen 1990) through MiniSom, with the study's neighbourhood schedule.

The study (section 4.1) shrinks the Gaussian neighbourhood as
sigma_t = sigma_0 * exp(-t^2 log(4 sigma_0) / T^2): sigma_0 at t = 0, 1/4 at t = T.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def study_sigma(sigma0: float, t: float, T: float) -> float:
    """The study's neighbourhood radius at epoch t of T."""
    if T <= 0:
        return sigma0
    return sigma0 * math.exp(-(t ** 2) * math.log(4 * sigma0) / T ** 2)


@dataclass
class SomResult:
    winners: np.ndarray          # (N, 2) int grid cell of each sample
    umatrix: np.ndarray          # (X, Y) mean distance of each cell's weights to its neighbours
    weights: np.ndarray          # (X, Y, D)
    quantization_error: float
    topographic_error: float


def fit_som(data: np.ndarray, *, grid: tuple[int, int] = (12, 12), sigma0: float = 3.0, learning_rate: float = 0.5,
            epochs: int = 50, schedule: str = "study", seed: int = 0) -> SomResult:
    """Train a SOM on (N, D) data. schedule "study" uses study_sigma per epoch, "minisom" MiniSom's
    own asymptotic decay. Deterministic for a seed."""
    from minisom import MiniSom

    if schedule not in ("study", "minisom"):
        raise ValueError(f"unknown SOM schedule {schedule!r}; allowed: study, minisom")
    data = np.asarray(data, dtype=np.float64)
    if schedule == "study" and sigma0 <= 0.25:
        raise ValueError("sigma0 must be > 0.25 for the study's schedule (it decays to 1/4)")
    som = MiniSom(grid[0], grid[1], data.shape[1], sigma=sigma0, learning_rate=learning_rate, random_seed=seed,
                  neighborhood_function="gaussian")
    if schedule == "study":
        # MiniSom 2.3 accepts only its named decay functions in the constructor; its update step calls
        # this attribute with (sigma0, epoch, total epochs) when training with use_epochs=True
        som._sigma_decay_function = lambda sigma, t, max_iter: study_sigma(sigma, t, max_iter)
    som.pca_weights_init(data) if len(data) >= 2 and data.shape[1] >= 2 else som.random_weights_init(data)
    som.train(data, epochs, random_order=True, use_epochs=True)
    winners = np.array([som.winner(x) for x in data], dtype=int)
    return SomResult(winners=winners, umatrix=som.distance_map(), weights=som.get_weights().copy(),
                     quantization_error=float(som.quantization_error(data)),
                     topographic_error=float(som.topographic_error(data)) if len(data) > 1 else 0.0)


def fit_som_pca(data: np.ndarray, *, dims: int = 50, seed: int = 0, **kwargs) -> SomResult:
    """`fit_som` on the first `dims` principal components (4-6x faster than on raw 1,024-d
    features at a similar quantisation error; bench/bench_landscape.py)."""
    from .embeddings import pca_reduce

    return fit_som(pca_reduce(data, dims, seed)[1], seed=seed, **kwargs)


def cell_label_distribution(winners: np.ndarray, labels, grid: tuple[int, int]) -> list[dict]:
    """Per occupied cell: {x, y, n, majority, shares: {label: fraction}}."""
    labels = np.asarray(labels)
    out = []
    for (x, y) in sorted({tuple(w) for w in winners}):
        m = (winners[:, 0] == x) & (winners[:, 1] == y)
        vals, counts = np.unique(labels[m], return_counts=True)
        shares = {str(v): float(c / m.sum()) for v, c in zip(vals, counts)}
        out.append({"x": int(x), "y": int(y), "n": int(m.sum()), "majority": str(vals[np.argmax(counts)]),
                    "shares": shares})
    return out
