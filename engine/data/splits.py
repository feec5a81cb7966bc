"""Patient-wise splits: no patient's images in two splits. Pure functions on arrays.

Randomness comes from an explicit seed (numpy Generator), never from global RNG state.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def split_by_patient(patient_ids: Sequence, fractions: dict[str, float], seed: int,
                     strata: Sequence | None = None) -> np.ndarray:
    """Assign every image to a split so that all images of a patient share it.

    patient_ids: (N,) one id per image. fractions: split name -> share of images (sums to 1).
    strata: optional (N,) label per image; patients are stratified by their first image's label so
    that each split gets about the same share of every stratum. Returns (N,) array of split names.
    Within a stratum, patients are shuffled with `seed` and dealt to the split furthest below its
    image target, so the shares come out close even when patients have many images.
    """
    pids = np.asarray(patient_ids).astype(str)
    names = list(fractions)
    shares = np.array([fractions[n] for n in names], dtype=float)
    if np.any(shares < 0) or not np.isclose(shares.sum(), 1.0):
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {fractions}")
    out = np.empty(len(pids), dtype=object)
    if len(pids) == 0:
        return out.astype(str)
    uniq, inverse = np.unique(pids, return_inverse=True)
    counts = np.bincount(inverse, minlength=len(uniq))
    if strata is None:
        pat_stratum = np.zeros(len(uniq), dtype=object)
    else:
        strata = np.asarray(strata).astype(str)
        pat_stratum = np.empty(len(uniq), dtype=object)
        _, first = np.unique(inverse, return_index=True)  # each patient's first image
        pat_stratum[:] = strata[first]
    rng = np.random.default_rng(seed)
    assignment = np.empty(len(uniq), dtype=object)
    for stratum in sorted(set(pat_stratum.tolist()), key=str):
        members = np.flatnonzero(pat_stratum == stratum)
        members = members[rng.permutation(len(members))]
        total = counts[members].sum()
        # plain floats (a patient at a time; numpy per step would dominate on 30k patients)
        targets = (shares * total).tolist()
        scale = [max(t, 1e-9) for t in targets]
        open_splits = [k for k in range(len(names)) if shares[k] != 0]
        filled = [0.0] * len(names)
        member_counts = counts[members].tolist()
        for p, n in zip(members.tolist(), member_counts):
            # the split with the largest remaining deficit relative to its target takes the patient
            # (the first such split on a tie)
            k = max(open_splits, key=lambda j: ((targets[j] - filled[j]) / scale[j], -j))
            assignment[p] = names[k]
            filled[k] += n
    out = assignment[inverse]
    return out.astype(str)


def patient_overlap(patient_ids: Sequence, splits: Sequence) -> int:
    """Number of patients whose images fall in more than one split (0 for a clean split)."""
    pids = np.asarray(patient_ids).astype(str)
    sp = np.asarray(splits).astype(str)
    seen: dict[str, str] = {}
    bad: set[str] = set()
    for p, s in zip(pids, sp):
        if seen.setdefault(p, s) != s:
            bad.add(p)
    return len(bad)


def hold_out(frame, usable: np.ndarray, source: str, what: str) -> tuple[np.ndarray, dict]:
    """Internal-external validation: `source`'s images (with every image of their patients, or of their
    linked-patient group, so no film or person is on both sides) become the test split; the other
    sources' test images join training and their validation split stays. `frame` has `source`, `split`,
    `patient_id` (and `cluster_id` where films were linked). Returns (splits, {"source", "images",
    "from_other_origins"}); ValueError naming `what` and its sources when `source` has no usable image."""
    import pandas as pd

    out = (frame["source"] == source).to_numpy()
    if not (out & usable).any():
        have = frame.loc[usable, "source"].value_counts()
        raise ValueError(f"no labelled image of {what} comes from origin {source!r}; origins: "
                         + ", ".join(f"{k} ({v})" for k, v in have.head(12).items()))
    unit = frame["cluster_id"] if "cluster_id" in frame else frame["patient_id"]
    held = pd.Series(unit).isin(set(unit[out & usable])).to_numpy()  # hashed (np.isin on strings loops)
    split = frame["split"].to_numpy()
    info = {"source": source, "images": int((held & usable).sum()), "from_other_origins": int((held & usable & ~out).sum())}
    return np.where(held, "test", np.where(split == "test", "train", split)), info
