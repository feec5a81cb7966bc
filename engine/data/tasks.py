"""From a config to data: the task's roots, its train/val/test datasets and their caches."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import HOLDOUT_TASKS, ExperimentConfig
from ..constants import DEFAULT_CACHE_SIZE, SPLITS, default_cache_dir
from .cache import CacheSet, ImageCache, cache_folder
from .combined import Combined15
from .covid import COVID19Collection
from .dataset import XrayDataset
from .labelled import LabelledCollection
from .manifest import ManifestError
from .nih import NIHChestXray14
from .public import PublicDatasetError, public_manifest
from .roots import resolve_root, task_roots


def open_manifest(cfg: ExperimentConfig) -> LabelledCollection:
    """Task manifest's collection, read and checked (a bad manifest raises ManifestError in one line)."""
    d = cfg.data
    source = d.manifest
    if d.manifest_format != "csv":  # a public dataset's folder in its own layout, read into a manifest once
        try:
            source = public_manifest(d.manifest, d.manifest_format, policy=d.uncertain, cache_dir=d.cache_dir or None)
        except PublicDatasetError as exc:
            raise ManifestError(str(exc)) from None
    try:
        return LabelledCollection(source, seed=d.split_seed, dedupe=d.dedupe, load_size=d.load_size,
                                  holdout_source=d.holdout_source)
    except ManifestError as exc:
        if source == d.manifest:
            raise
        raise ManifestError(str(exc).replace(str(source), f"the {d.manifest_format} folder {d.manifest} "
                                                           f"(read into {source})")) from None


def check_holdout(cfg: ExperimentConfig) -> None:
    """A held-out origin the collection does not have is refused before a run is recorded, in one line
    that lists the origins it has (ValueError)."""
    if cfg.data.holdout_source and cfg.data.task in HOLDOUT_TASKS and cfg.data.covid_root:
        open_collection("covid", cfg.data.covid_root, cfg.data, dedupe=False)


def check_manifest(cfg: ExperimentConfig) -> LabelledCollection:
    """Before a run is recorded: the manifest as an absolute path, read whole and checked."""
    from .roots import expand

    cfg.data.manifest = str(expand(cfg.data.manifest).absolute())
    return open_manifest(cfg)


def needed_roots(cfg: ExperimentConfig) -> dict[str, Path]:
    """Check (before any run is created) that the task's data roots exist; returns them resolved."""
    return {kind: resolve_root(kind, getattr(cfg.data, f"{kind}_root")) for kind in task_roots(cfg.data.task)}


def _caches(cfg: ExperimentConfig, names) -> CacheSet | None:
    base = Path(cfg.data.cache_dir) if cfg.data.cache_dir else default_cache_dir()
    caches = [ImageCache(cache_folder(base, n, cfg.data.load_size)) for n in names
              if ImageCache.exists(cache_folder(base, n, cfg.data.load_size))]
    return CacheSet(caches) if caches else None


def label_groups(ds: XrayDataset) -> np.ndarray:
    """Each image's label group: its first positive class, or -1 for none (what caps and training
    fractions draw round)."""
    t = np.nan_to_num(ds.targets, nan=0.0)
    return np.where(t.any(axis=1), t.argmax(axis=1), -1)


def cap_split(ds: XrayDataset, n: int, seed: int) -> XrayDataset:
    """At most n images, drawn round-robin over label groups (first positive class, or none) so
    that rare classes survive the cap. Seeded; the order of the kept rows is the dataset's."""
    if n <= 0 or len(ds) <= n:
        return ds
    groups = label_groups(ds)
    rng = np.random.default_rng(seed)
    pools = [list(rng.permutation(np.flatnonzero(groups == g))) for g in np.unique(groups)]
    pools.sort(key=len)
    chosen: list[int] = []
    while len(chosen) < n:
        progressed = False
        for pool in pools:
            if pool and len(chosen) < n:
                chosen.append(int(pool.pop()))
                progressed = True
        if not progressed:
            break
    return ds.select(np.sort(np.array(chosen)))


def fraction_of_patients(ds: XrayDataset, fraction: float, seed: int) -> XrayDataset:
    """The training split for a learning curve: `fraction` of its patients (at least one per label
    group), drawn per label group (first positive class, or none) so every class keeps its share.
    Seeded; the nested draws of one seed grow with the fraction (25 % is inside 50 %)."""
    if fraction >= 1.0:
        return ds
    groups = label_groups(ds)
    patients = ds.frame["patient_id"].to_numpy()
    first = {}
    for p, g in zip(patients, groups):
        first.setdefault(p, g)  # a patient's group: that of their first image
    rng = np.random.default_rng(seed)
    keep: set = set()
    for g in sorted(set(first.values())):
        members = sorted(p for p, pg in first.items() if pg == g)
        order = rng.permutation(len(members))
        keep.update(members[i] for i in order[:max(1, round(fraction * len(members)))])
    return ds.select(ds.frame["patient_id"].isin(keep).to_numpy())  # hashed: np.isin on strings is n x kept


def data_fingerprint(datasets: dict[str, XrayDataset]) -> str:
    """What a run records of its data: the train and test splits' fingerprints (names, splits, labels)."""
    return datasets["train"].fingerprint() + "-" + datasets["test"].fingerprint()


COLLECTIONS = ("nih", "covid")


def open_collection(kind: str, root, data=None, *, load_size: int | None = None, labelled_only: bool = True,
                    dedupe: bool | None = None) -> XrayDataset:
    """A collection by kind: the one place the product opens ChestX-ray14 or the COVID-19 collection.

    data: a run's DataConfig, whose split seed, validation fraction, cache size and duplicate rule
    then apply (training, the audit's other collection); without it the datasets' defaults do
    (summaries, the landscape). labelled_only: COVID-19 collection rows without a finding are left
    out. dedupe=False keeps every image where it is (an external collection is scored whole)."""
    if kind not in COLLECTIONS:
        raise ValueError(f"unknown collection {kind!r}; allowed: {', '.join(COLLECTIONS)}")
    kw = {"load_size": load_size or (data.load_size if data is not None else DEFAULT_CACHE_SIZE)}
    if data is not None:
        kw["seed"] = data.split_seed
        if kind == "covid" and data.task in HOLDOUT_TASKS:  # the task's own collection: its labels and held-out origin
            kw["labels"] = "pneumonia" if data.task == "pneumonia" else "covid"
            kw["holdout_source"] = data.holdout_source
    if kind == "nih":
        if data is not None:
            kw["val_fraction"] = data.val_fraction
        return NIHChestXray14(root, **kw)
    dedupe = (data.dedupe if data is not None else True) if dedupe is None else dedupe
    return COVID19Collection(root, include_unlabelled=not labelled_only, dedupe=dedupe, **kw)


def build_datasets(cfg: ExperimentConfig) -> dict[str, XrayDataset]:
    """{"train", "val", "test"} datasets of the config's task (no transforms attached)."""
    roots = needed_roots(cfg)
    d = cfg.data
    nih = covid = None
    if "nih" in roots:
        nih = open_collection("nih", roots["nih"], d)
    if "covid" in roots:
        covid = open_collection("covid", roots["covid"], d)
    if d.task == "manifest":
        full, names = open_manifest(cfg), []
    elif d.task == "nih":
        full, names = nih, ["nih"]
    elif d.task in HOLDOUT_TASKS:
        full, names = covid, ["covid"]
    else:
        full, names = Combined15(nih, covid, min_per_class=d.min_per_class, seed=d.split_seed), ["nih", "covid"]
    cache = _caches(cfg, names) if names else None
    if cache is not None:
        full.attach_cache(cache)
    out = {}
    for k, s in enumerate(SPLITS):
        part = cap_split(full.split(s), d.max_images_per_split, d.split_seed + k)
        if len(part) == 0:
            raise ValueError(f"the {s} split of task {d.task} is empty: check the data roots "
                             f"({', '.join(str(r) for r in roots.values())})")
        out[s] = part
    out["train"] = fraction_of_patients(out["train"], d.train_fraction, d.split_seed)
    return out
