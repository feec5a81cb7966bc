"""The pathology landscape: features, t-SNE, neighbours and the numbers behind "before vs after".

Features are a run's pooled final-layer features (the latent space the study maps in figure 7b/c);
the baseline is raw pixels (grayscale, downsampled). t-SNE is openTSNE after PCA to 50 dimensions
(Policar et al., openTSNE, JSS 2024), which can also place new points into an existing map.
Pure numpy/scikit-learn here; extraction reads images through the data layer.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from ..constants import COVID_LABEL, NO_FINDING


def display_label(row) -> str:
    """One label per image for colouring: COVID-19 / the collection's other findings; NIH's single
    finding, "No Finding", or the first finding of a multi-label image."""
    if row["dataset"] == "covid":
        return COVID_LABEL if row["label_group"] == COVID_LABEL else "Other pneumonia (COVID set)"
    first = str(row["findings"]).split("|")[0]
    return NO_FINDING if first == NO_FINDING else first


def select_images(nih, covid, *, split: str | None = None, per_label: int = 80, seed: int = 0) -> pd.DataFrame:
    """NIH + COVID images (labelled only), at most `per_label` per display label, seeded.
    Returns a frame with path, image, dataset, source, split, patient_id, findings, label."""
    frames = []
    for ds in (nih, covid):
        if ds is None:
            continue
        f = ds.frame.copy()
        if "label_group" not in f:
            f["label_group"] = ""
        if "source" not in f:  # where an image comes from: the COVID-19 collection's web host, else the dataset
            f["source"] = f["dataset"]
        frames.append(f[["path", "image", "dataset", "source", "split", "patient_id", "findings", "label_group"]])
    frame = pd.concat(frames, ignore_index=True)
    frame = frame[frame["label_group"] != "unlabelled"]
    if split:
        frame = frame[frame["split"] == split]
    frame["label"] = frame.apply(display_label, axis=1)
    rng = np.random.default_rng(seed)
    keep = []
    for _, g in frame.groupby("label", sort=True):
        idx = g.index.to_numpy()
        keep.extend(rng.permutation(idx)[:per_label])
    return frame.loc[sorted(keep)].reset_index(drop=True)


def pixel_features(grays: Sequence[np.ndarray], size: int = 32) -> np.ndarray:
    """Raw-pixel baseline: each image resized to size x size, flattened, in [0, 1]: (N, size^2) float32."""
    from ..data.images import resize_gray

    return np.stack([resize_gray(g, size).astype(np.float32).ravel() / 255.0 for g in grays]) if len(grays) else \
        np.zeros((0, size * size), np.float32)


@torch.no_grad()
def extract_features(loaded, grays: Sequence[np.ndarray], batch_size: int = 32,
                     progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Pooled final-layer features of a LoadedModel for grayscale images: (N, K) float32."""
    out = []
    for i in range(0, len(grays), batch_size):
        x = torch.cat([loaded.tensor(g) for g in grays[i:i + batch_size]])
        out.append(loaded.model.pooled_features(x).float().cpu().numpy())
        if progress:
            progress(min(i + batch_size, len(grays)), len(grays))
    return np.concatenate(out) if out else np.zeros((0, loaded.model.num_features), np.float32)


def pca_reduce(x: np.ndarray, n: int = 50, seed: int = 0):
    """(PCA model, reduced (N, min(n, N, D)))."""
    from sklearn.decomposition import PCA

    k = max(1, min(n, x.shape[0], x.shape[1]))
    pca = PCA(n_components=k, random_state=seed)
    return pca, pca.fit_transform(x).astype(np.float32)


class TsneMap:
    """PCA(50) + openTSNE. `coords` (N, 2); `place(new)` embeds new points without recomputing.

    The schedule is 125 early-exaggeration + 250 normal iterations instead of openTSNE's 250 + 500:
    with its automatic learning rate (N / exaggeration, Belkina et al. 2019) the optimisation has
    converged by then. Measured on 300-5,000 points: KL divergence within 2 %, trustworthiness
    within 0.001 of the long schedule, in half the time (bench/bench_landscape.py)."""

    def __init__(self, x: np.ndarray, *, perplexity: float = 30.0, seed: int = 0, n_jobs: int = 1,
                 early_exaggeration_iter: int = 125, n_iter: int = 250):
        from openTSNE import TSNE

        if len(x) < 5:
            raise ValueError(f"t-SNE needs at least 5 points, got {len(x)}")
        perplexity = float(min(perplexity, (len(x) - 1) / 3))
        self.pca, reduced = pca_reduce(np.asarray(x, np.float32), 50, seed)
        self.embedding = TSNE(perplexity=perplexity, random_state=seed, n_jobs=n_jobs,
                              early_exaggeration_iter=early_exaggeration_iter, n_iter=n_iter).fit(reduced)
        self.kl_divergence = float(self.embedding.kl_divergence)
        self.coords = np.asarray(self.embedding, dtype=np.float32)

    def place(self, x_new: np.ndarray) -> np.ndarray:
        return np.asarray(self.embedding.transform(self.pca.transform(np.asarray(x_new, np.float32))), dtype=np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def nearest_neighbours(x: np.ndarray, queries: np.ndarray, k: int, candidates: np.ndarray | None = None,
                       block_bytes: int = 64 * 2**20) -> tuple[np.ndarray, np.ndarray]:
    """Cosine k-NN. x (N, D); queries: row indices; candidates: boolean mask of allowed neighbours
    (default all); a query never returns itself. Returns (indices (Q, k), similarities (Q, k)),
    most similar first, ties to the lower index (as a stable full sort would give).

    Queries are taken in blocks whose similarity rows fit in `block_bytes`, and each block keeps
    only its top k (argpartition), so memory is O(Q k + block), never Q x N."""
    u = _unit(np.asarray(x, np.float64))
    queries = np.asarray(queries, dtype=int)
    allowed = np.ones(len(x), bool) if candidates is None else np.asarray(candidates, bool)
    k = min(k, int(allowed.sum()))
    out_idx = np.zeros((len(queries), k), dtype=int)
    out_sim = np.zeros((len(queries), k), dtype=np.float64)
    if k <= 0 or not len(queries):
        return out_idx, out_sim
    block = max(1, block_bytes // (8 * max(len(x), 1)))
    for s in range(0, len(queries), block):
        q = queries[s:s + block]
        sims = u[q] @ u.T
        sims[:, ~allowed] = -np.inf
        sims[np.arange(len(q)), q] = -np.inf
        idx = _top_k(sims, k)
        out_idx[s:s + len(q)] = idx
        out_sim[s:s + len(q)] = np.take_along_axis(sims, idx, axis=1)
    return out_idx, out_sim


def _top_k(sims: np.ndarray, k: int) -> np.ndarray:
    """Indices of each row's k largest values, ordered by (value descending, index ascending)."""
    n = sims.shape[1]
    if k < n:
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        kth = np.take_along_axis(sims, part, axis=1).min(axis=1, keepdims=True)
        above = sims > kth
        tied = sims == kth
        take = above | tied
        over = take.sum(axis=1) > k  # the kth value is shared: keep the lowest indices among the tied
        if over.any():
            need = k - above[over].sum(axis=1, keepdims=True)
            take[over] = above[over] | (tied[over] & (np.cumsum(tied[over], axis=1) <= need))
        rows, cols = np.nonzero(take)
        idx = cols.reshape(len(sims), k)
    else:
        idx = np.broadcast_to(np.arange(n), sims.shape).copy()
    vals = np.take_along_axis(sims, idx, axis=1)
    order = np.lexsort((idx, -vals), axis=1)
    return np.take_along_axis(idx, order, axis=1)


def neighbour_shares(labels: np.ndarray, query_label: str, x: np.ndarray, k: int = 10) -> pd.DataFrame:
    """For every image of `query_label`, its k nearest images of *other* labels; per label, the share
    of those neighbours. Columns: label, share, count."""
    labels = np.asarray(labels)
    q = np.flatnonzero(labels == query_label)
    if len(q) == 0:
        return pd.DataFrame(columns=["label", "share", "count"])
    idx, _ = nearest_neighbours(x, q, k, candidates=labels != query_label)
    vals, counts = np.unique(labels[idx.ravel()], return_counts=True)
    df = pd.DataFrame({"label": vals, "count": counts})
    df["share"] = df["count"] / df["count"].sum()
    return df.sort_values("share", ascending=False).reset_index(drop=True)


def centroid_distances(x: np.ndarray, labels: np.ndarray, query_label: str) -> pd.DataFrame:
    """Cosine distance between the query label's centroid and every other label's centroid
    (features standardised first so no dimension dominates)."""
    labels = np.asarray(labels)
    z = (x - x.mean(0)) / np.maximum(x.std(0), 1e-8)
    cents = {lab: z[labels == lab].mean(0) for lab in np.unique(labels)}
    if query_label not in cents:
        return pd.DataFrame(columns=["label", "distance"])
    qc = _unit(cents[query_label][None])[0]
    rows = [{"label": lab, "distance": float(1 - _unit(c[None])[0] @ qc)} for lab,
            c in cents.items() if lab != query_label]
    return pd.DataFrame(rows).sort_values("distance").reset_index(drop=True)


def neighbourhood(spaces: dict[str, np.ndarray], labels, query_label: str, k: int = 10) -> tuple[pd.DataFrame,
                                                                                                 pd.DataFrame]:
    """`neighbour_shares` and `centroid_distances` of `query_label` in each named space (e.g.
    pixels and features), side by side: two frames with a `space` column."""
    shares = pd.concat([neighbour_shares(labels, query_label, x, k).assign(space=s) for s, x in spaces.items()],
                       ignore_index=True)
    cents = pd.concat([centroid_distances(x, labels, query_label).assign(space=s) for s, x in spaces.items()],
                      ignore_index=True)
    return shares, cents


def knn_purity(x: np.ndarray, labels, k: int = 10) -> float:
    """Mean share of each point's k nearest neighbours (cosine, self excluded) with its own label."""
    labels = np.asarray(labels)
    idx, _ = nearest_neighbours(x, np.arange(len(x)), k)
    return float((labels[idx] == labels[:, None]).mean())


SILHOUETTE_SAMPLE = 5000  # the silhouette is O(n^2): above this many points it scores a seeded sample


def silhouette(x: np.ndarray, labels, seed: int = 0) -> float | None:
    """Silhouette (cosine) of a labelling; None when fewer than 2 labels."""
    from sklearn.metrics import silhouette_score

    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2 or len(labels) < 3:
        return None
    return float(silhouette_score(x, labels, metric="cosine", sample_size=min(len(x), SILHOUETTE_SAMPLE),
                                  random_state=seed))


def landscape_numbers(x: np.ndarray, labels, datasets, k: int = 10) -> dict:
    """kNN label purity, silhouette by label and by dataset: the study's "before vs after" claim in numbers."""
    return {"knn_purity": knn_purity(x, labels, k), "silhouette_label": silhouette(x, labels),
            "silhouette_dataset": silhouette(x, datasets), "points": len(x),
            "silhouette_sample": min(len(x), SILHOUETTE_SAMPLE) if len(x) > SILHOUETTE_SAMPLE else None}
