"""Issue 6 benchmarks, on 5,000 points of 1,024 dimensions (a 15-cluster mixture with low-rank
structure, the shape of pooled CNN features):
- PCA(50) + openTSNE (the engine's 125+250-iteration schedule) vs scikit-learn TSNE with default
  settings: time ratio (target >= 2x) and trustworthiness (sklearn.manifold.trustworthiness, k=10)
  within 0.01. openTSNE's own 250+500 schedule is printed beside it, KL divergence included, to show
  the shorter schedule has converged.
- SOM on PCA-reduced vs raw features: time, and quantisation error measured in the raw space.
Usage: python bench/bench_landscape.py [--n 5000]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from common import REPO  # noqa: F401  (puts the repo on sys.path)
from sklearn.manifold import TSNE, trustworthiness

from engine.landscape.embeddings import TsneMap, pca_reduce
from engine.landscape.som import fit_som


def data(n: int, d: int = 1024, k: int = 15, rank: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(rank, d))
    centres = rng.normal(size=(k, rank)) * 3
    z = centres[rng.integers(0, k, n)] + rng.normal(size=(n, rank))
    x = np.maximum(z @ basis + rng.normal(scale=0.5, size=(n, d)), 0)  # post-ReLU, like pooled features
    return x.astype(np.float32)


def main(n: int) -> None:
    x = data(n)
    t0 = time.perf_counter()
    short = TsneMap(x, seed=0, n_jobs=2)
    ours = short.coords
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    long = TsneMap(x, seed=0, n_jobs=2, early_exaggeration_iter=250, n_iter=500)
    t_long = time.perf_counter() - t0
    print(f"openTSNE schedule 125+250 iterations: {t_ours:.1f}s, KL {short.kl_divergence:.3f}, trustworthiness "
          f"{trustworthiness(x, ours, n_neighbors=10):.4f}; openTSNE's default 250+500: {t_long:.1f}s, "
          f"KL {long.kl_divergence:.3f}, trustworthiness {trustworthiness(x, long.coords, n_neighbors=10):.4f}")
    t0 = time.perf_counter()
    ref = TSNE(random_state=0, n_jobs=2).fit_transform(x)
    t_ref = time.perf_counter() - t0
    tw_ours, tw_ref = trustworthiness(x, ours, n_neighbors=10), trustworthiness(x, ref, n_neighbors=10)
    print(f"t-SNE of {n} x {x.shape[1]}: PCA50+openTSNE {t_ours:.1f}s (trustworthiness {tw_ours:.4f}), "
          f"sklearn TSNE {t_ref:.1f}s ({tw_ref:.4f})")
    print(f"RATIO time sklearn/ours = {t_ref / t_ours:.1f}x (target >= 2x); trustworthiness difference "
          f"{tw_ours - tw_ref:+.4f} (target within 0.01)")

    sub = x[:2000]
    pca, red = pca_reduce(sub, 50, 0)
    t0 = time.perf_counter()
    s_red = fit_som(red, grid=(12, 12), epochs=20, seed=0)
    t_red = time.perf_counter() - t0
    t0 = time.perf_counter()
    s_raw = fit_som(sub, grid=(12, 12), epochs=20, seed=0)
    t_raw = time.perf_counter() - t0
    w_back = pca.inverse_transform(s_red.weights.reshape(-1, red.shape[1]))
    qe_red = float(np.mean(np.min(((sub[:, None, :] - w_back[None]) ** 2).sum(-1), axis=1) ** 0.5))
    print(f"SOM 12x12, 20 epochs, 2000 points: on PCA-50 {t_red:.1f}s (QE in raw space {qe_red:.3f}), "
          f"on raw 1024-d {t_raw:.1f}s (QE {s_raw.quantization_error:.3f}) -> time ratio {t_raw / t_red:.1f}x")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5000)
    main(ap.parse_args().n)
