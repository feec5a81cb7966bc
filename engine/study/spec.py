"""A study scale: a plain JSON file of the study's experiments (presets plus overrides), their
parents and the comparisons the study makes. `pack` and `full` ship in scales/; a user can copy
one, edit it and pass its path. Every file is validated like a config, errors naming the file."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..config import PRESETS, ConfigError, from_preset
from ..runs.compare import IMAGE_SETS

SCALES_DIR = Path(__file__).resolve().parent / "scales"
SCALES = ("pack", "full")
# settings that say where data and hardware are, not what the experiment is
LOCAL_FIELDS = ("nih_root", "covid_root", "cache_dir", "num_workers", "device", "init", "checkpoint_minutes")


class SpecError(ValueError):
    """An invalid study file: names the file and what is wrong."""


@dataclass
class Experiment:
    key: str
    table: str
    label: str
    preset: str
    overrides: dict = field(default_factory=dict)
    init_from: list[str] = field(default_factory=list)  # parents in order of preference
    published: dict | None = None                       # {"class", "value", "source"}


@dataclass
class StudySpec:
    scale: str
    description: str
    common: dict
    experiments: list[Experiment]
    comparisons: list[dict]
    path: Path

    def experiment(self, key: str) -> Experiment:
        return next(e for e in self.experiments if e.key == key)

    def overrides(self, exp: Experiment) -> dict:
        return {**self.common, **exp.overrides}


def load_spec(scale: str) -> StudySpec:
    """`pack`, `full`, or the path of a study JSON file."""
    path = SCALES_DIR / f"{scale}.json" if scale in SCALES else Path(scale)
    if not path.is_file():
        raise SpecError(f"no study scale {scale!r}: use {' or '.join(SCALES)}, or the path of a study JSON file")
    try:
        raw = json.loads(path.read_text())
        exps = [Experiment(**e) for e in raw["experiments"]]
        spec = StudySpec(raw["scale"], raw.get("description", ""), raw.get("common", {}), exps,
                         raw.get("comparisons", []), path)
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise SpecError(f"{path}: not a study file ({exc.__class__.__name__}: {exc})") from exc
    _validate(spec)
    return spec


def _validate(spec: StudySpec) -> None:
    seen: list[str] = []
    for e in spec.experiments:
        where = f"{spec.path}: experiment {e.key!r}"
        if e.key in seen:
            raise SpecError(f"{where} appears twice")
        if e.preset not in PRESETS:
            raise SpecError(f"{where}: unknown preset {e.preset!r}; presets: {', '.join(PRESETS)}")
        for parent in e.init_from:
            if parent not in seen:
                raise SpecError(f"{where}: parent {parent!r} must be an experiment listed before it")
        try:
            from_preset(e.preset, {**spec.overrides(e), **({"init": "scratch"} if e.init_from else {})})
        except ConfigError as exc:
            raise SpecError(f"{where}: {exc}") from exc
        seen.append(e.key)
    for c in spec.comparisons:
        for side in ("a", "b"):
            if c.get(side) not in seen:
                raise SpecError(f"{spec.path}: comparison {c.get('what', c)!r} names unknown experiment {c.get(side)!r}")
        if c.get("images", "same") not in IMAGE_SETS:
            raise SpecError(f"{spec.path}: comparison {c.get('what', c)!r}: images must be one of "
                            f"{', '.join(IMAGE_SETS)}, not {c.get('images')!r}")


def planned_config(spec: StudySpec, exp: Experiment, init: str | None = None) -> dict:
    """The experiment's config (flat) as this scale sets it, data roots left to the caller."""
    over = spec.overrides(exp)
    if init is not None or exp.init_from:
        over = {**over, "init": init or "scratch"}
    return from_preset(exp.preset, over).flat()


def changes_from_full(spec: StudySpec) -> list[str]:
    """Every setting this scale changes from the study's (full) settings, experiment by experiment."""
    full = load_spec("full")
    full_keys = {e.key for e in full.experiments}
    lines = []
    for e in spec.experiments:
        if e.key not in full_keys:
            lines.append(f"{e.key}: added at this scale ({e.label})")
            continue
        mine, theirs = planned_config(spec, e), planned_config(full, full.experiment(e.key))
        diff = [f"{k} {theirs[k]} -> {mine[k]}" for k in mine if mine[k] != theirs[k] and k not in LOCAL_FIELDS]
        if e.init_from != full.experiment(e.key).init_from:
            diff.append(f"parent {' or '.join(full.experiment(e.key).init_from)} -> first of {', '.join(e.init_from)}")
        if diff:
            lines.append(f"{e.key}: " + ", ".join(diff))
    return lines
