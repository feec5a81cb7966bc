"""The predictions table, read and written in one place.

A run's `predictions_<split>.csv` and an external evaluation's `predictions.csv` have one row per
scored image: who it is (image, patient_id, dataset, split, path, and sex/age/view/source where the
collection records them), then a `target_<class>` and a `prob_<class>` column per class, in the
model's class order. A target is 1, 0, or empty (not labelled for that class).

Everything else in the product asks this module for class names, targets and probabilities as
arrays: nothing outside it knows how the columns are spelled.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .tables import write_csv

TARGET, PROB = "target_", "prob_"
INFO_COLUMNS = ("image", "patient_id", "dataset", "split", "path")  # always written
OPTIONAL_INFO = ("sex", "age", "view", "source", "cluster_id")  # written where the collection records them


def resampling_units(frame: pd.DataFrame) -> np.ndarray:
    """The one rule for the resampling unit of every bootstrap, DeLong test and subgroup: an image's group
    of linked patients (`cluster_id`) where its collection records one, else its patient. A mixed table
    (the 15-class task: ChestX-ray14 rows have no cluster_id) falls back per row, never to one "nan" unit."""
    if "patient_id" not in frame:
        return np.arange(len(frame)).astype(str)
    patients = frame["patient_id"].astype(str).to_numpy(dtype=object)
    if "cluster_id" not in frame:
        return patients.astype(str)
    c = frame["cluster_id"]
    missing = c.isna().to_numpy() | c.astype(str).isin(["", "nan", "None"]).to_numpy()
    return np.where(missing, patients, c.astype(str).to_numpy(dtype=object)).astype(str)


class PredictionsError(ValueError):
    """A predictions table that cannot be read as one (names the file and what is missing)."""


@dataclass(frozen=True)
class Predictions:
    """A predictions table: `info` (one row per image, no class columns), `classes`, and the
    (images, classes) `targets` (NaN where unlabelled) and `probs`."""
    info: pd.DataFrame
    classes: tuple[str, ...]
    targets: np.ndarray
    probs: np.ndarray
    _index: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        n, c = len(self.info), len(self.classes)
        if self.targets.shape != (n, c) or self.probs.shape != (n, c):
            raise PredictionsError(f"targets {self.targets.shape} and probs {self.probs.shape} must both be ({n}, {c})")
        self._index.update({name: k for k, name in enumerate(self.classes)})

    # -- building ---------------------------------------------------------------------------------
    @classmethod
    def build(cls, info: pd.DataFrame, classes: Sequence[str], targets, probs) -> "Predictions":
        return cls(info.reset_index(drop=True), tuple(classes), np.asarray(targets, float).reshape(len(info), -1),
                   np.asarray(probs, float).reshape(len(info), -1))

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> "Predictions":
        """Parse a table with target_/prob_ columns (a class without its target column counts as unlabelled)."""
        classes = [c[len(PROB):] for c in frame.columns if c.startswith(PROB)]
        probs = frame[[PROB + c for c in classes]].to_numpy(float) if classes else np.zeros((len(frame), 0))
        targets = np.column_stack([frame[TARGET + c].to_numpy(float) if TARGET + c in frame else
                                   np.full(len(frame), np.nan) for c in classes]) if classes else probs.copy()
        info = frame[[c for c in frame.columns if not c.startswith((PROB, TARGET))]]
        return cls.build(info, classes, targets, probs)

    @classmethod
    def empty(cls) -> "Predictions":
        return cls.build(pd.DataFrame(columns=list(INFO_COLUMNS)), (), np.zeros((0, 0)), np.zeros((0, 0)))

    # -- reading ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.info)

    def has(self, class_name: str) -> bool:
        return class_name in self._index

    def _k(self, class_name: str) -> int:
        if class_name not in self._index:
            raise PredictionsError(f"class {class_name!r} is not in these predictions "
                                   f"(they score {', '.join(self.classes) or 'no class'})")
        return self._index[class_name]

    def target(self, class_name: str) -> np.ndarray:
        return self.targets[:, self._k(class_name)]

    def prob(self, class_name: str) -> np.ndarray:
        return self.probs[:, self._k(class_name)]

    def columns(self, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(targets, probs) of these classes, (images, len(classes)) each."""
        ks = [self._k(c) for c in classes]
        return self.targets[:, ks], self.probs[:, ks]

    def labelled(self, class_name: str) -> np.ndarray:
        """Rows whose target for this class is known."""
        return ~np.isnan(self.target(class_name))

    @property
    def patient_ids(self) -> np.ndarray:
        return self.info["patient_id"].to_numpy() if "patient_id" in self.info else np.arange(len(self)).astype(str)

    @property
    def clusters(self) -> np.ndarray:
        """The bootstrap's resampling unit of each row: its patient, or the group of patients linked by
        a shared film (`cluster_id`, engine.data.duplicates.linked_clusters) where the collection has one."""
        return resampling_units(self.info)

    @property
    def images(self) -> np.ndarray:
        return self.info["image"].to_numpy()

    def column(self, name: str, default="") -> pd.Series:
        """An information column (sex, age, view, source ...), `default` where the table has none."""
        return self.info[name] if name in self.info else pd.Series([default] * len(self), index=self.info.index)

    def rows(self, which) -> "Predictions":
        """The rows picked by a boolean mask or positional indices, in that order."""
        which = np.asarray(which)
        idx = np.flatnonzero(which) if which.dtype == bool else which.astype(int)
        return Predictions.build(self.info.iloc[idx], self.classes, self.targets[idx], self.probs[idx])

    def top(self, class_name: str, k: int, labelled_only: bool = False) -> "Predictions":
        """The k rows with the highest probability of class_name (ties in table order)."""
        order = np.argsort(-self.prob(class_name), kind="stable")
        if labelled_only:
            order = order[self.labelled(class_name)[order]]
        return self.rows(order[:k])

    # -- writing ----------------------------------------------------------------------------------
    def frame(self) -> pd.DataFrame:
        """The table as written: information columns, then target_/prob_ per class."""
        out = self.info.reset_index(drop=True).copy()
        for k, c in enumerate(self.classes):
            out[TARGET + c] = self.targets[:, k]
            out[PROB + c] = self.probs[:, k]
        return out

    def write(self, path) -> Path:
        """Atomically, spreadsheet formulas in text cells neutralised (engine.runs.tables)."""
        return write_csv(self.frame(), path)


def read(path) -> Predictions:
    """The predictions table at path; PredictionsError naming the file when it is not one."""
    try:
        frame = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise PredictionsError(f"cannot read the predictions table {path}: {exc}") from exc
    preds = Predictions.from_frame(frame)
    if not preds.classes:
        raise PredictionsError(f"{path} has no {PROB}<class> columns: not a predictions table")
    return preds


def read_if_present(path) -> Predictions:
    """The table at path, or an empty one when there is no such file (a run without val predictions)."""
    return read(path) if path and Path(path).is_file() else Predictions.empty()
