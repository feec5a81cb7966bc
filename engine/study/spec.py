"""A study scale: a plain JSON file of the study's experiments (presets plus overrides), their
parents and the comparisons the study makes. `pack` and `full` ship in scales/; a user can copy
one, edit it and pass its path. Every file is validated like a config, errors naming the file."""
from __future__ import annotations

import hashlib

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..config import PRESETS, SOURCE_TASKS, ConfigError, from_preset
from ..evaluation.compare import IMAGE_SETS
from .names import SCALES, SCALES_DIR

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
    repeats: bool = True                                # False: run in repeat 0 only (its split is fixed by design)
    base: str | None = None                             # learning-curve and held-out-origin rows: the row they vary


@dataclass
class StudySpec:
    scale: str
    description: str
    common: dict
    experiments: list[Experiment]
    comparisons: list[dict]
    path: Path
    learning_curve: dict | None = None        # {"fractions": [...], "experiments": [...]}
    leave_one_source_out: dict | None = None  # {"experiment", "min_images", "min_per_label"}
    notes: list[str] = field(default_factory=list)  # what the expansion could not do, in words
    covid_root: str | None = None             # the collection whose origins were held out
    cost: dict | None = None                  # {"first_repeat_minutes", "further_repeat_minutes", "measured"}

    def experiment(self, key: str) -> Experiment:
        return next(e for e in self.experiments if e.key == key)

    def overrides(self, exp: Experiment) -> dict:
        return {**self.common, **exp.overrides}


MAX_BYTES = 1_000_000  # a study file is a page of JSON; anything far larger is not one
# the shape of a study file: field -> (type, required); nested lists name their items' shape
TOP = {"scale": (str, True), "description": (str, False), "common": (dict, False), "experiments": (list, True),
       "comparisons": (list, False), "learning_curve": (dict, False), "leave_one_source_out": (dict, False),
       "cost": (dict, False)}
COST = {"first_repeat_minutes": ((int, float), True), "further_repeat_minutes": ((int, float), True),
        "measured": (str, True), "cores": (int, False), "running": (int, False)}  # the basis: cores, runs at once
CURVE = {"fractions": (list, True), "experiments": (list, True)}
MAX_CURVE_ITEMS = 50  # a learning curve of more points than this is a typo, not a study
LOSO = {"experiment": (str, True), "min_images": (int, False), "min_per_label": (int, False)}
EXPERIMENT = {"key": (str, True), "table": (str, True), "label": (str, True), "preset": (str, True),
              "overrides": (dict, False), "init_from": (list, False), "published": ((dict, type(None)), False),
              "repeats": (bool, False)}
COMPARISON = {"a": (str, True), "b": (str, True), "what": (str, True), "images": (str, False), "class": (str, False)}
PUBLISHED = {"class": (str, False), "value": ((int, float), True), "source": (str, False)}


def _check(obj, shape: dict, where: str) -> None:
    """Refuse a value that is not a JSON object of `shape`: unknown fields, missing ones, wrong types."""
    if not isinstance(obj, dict):
        raise SpecError(f"{where} must be a JSON object, not {type(obj).__name__}")
    unknown = sorted(set(obj) - set(shape))
    if unknown:
        raise SpecError(f"{where}: unknown field {unknown[0]!r}; allowed: {', '.join(shape)}")
    for name, (kind, required) in shape.items():
        if name not in obj:
            if required:
                raise SpecError(f"{where}: field {name!r} is missing")
            continue
        value = obj[name]
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            names = " or ".join(k.__name__.replace("NoneType",
                                                   "null") for k in (kind if isinstance(kind, tuple) else (kind,)))
            raise SpecError(f"{where}: field {name!r} must be {names}, not {type(value).__name__} {str(value)[:40]}")


def _check_file(raw, path: Path) -> None:
    _check(raw, TOP, str(path))
    for k, v in raw.get("common", {}).items():
        if isinstance(v, (dict, list)):
            raise SpecError(f"{path}: common setting {k!r} must be a number, text or true/false")
    for i, e in enumerate(raw["experiments"]):
        where = f"{path}: experiment {i + 1}" + (f" ({e['key']!r})" if isinstance(e, dict) and isinstance(e.get("key"),
                                                                                                          str) else "")
        _check(e, EXPERIMENT, where)
        for k, v in e.get("overrides", {}).items():
            if isinstance(v, (dict, list)):
                raise SpecError(f"{where}: override {k!r} must be a number, text or true/false")
        if not all(isinstance(p, str) for p in e.get("init_from", [])):
            raise SpecError(f"{where}: field 'init_from' must list experiment keys (text)")
        if e.get("published") is not None:
            _check(e["published"], PUBLISHED, f"{where}, field 'published'")
    for i, c in enumerate(raw.get("comparisons", [])):
        _check(c, COMPARISON, f"{path}: comparison {i + 1}")
    if "learning_curve" in raw:
        _check(raw["learning_curve"], CURVE, f"{path}: learning_curve")
        if not all(isinstance(f, (int, float)) and not isinstance(f, bool) and 0 < f < 1
                   for f in raw["learning_curve"]["fractions"]):
            raise SpecError(f"{path}: learning_curve: fractions must be numbers between 0 and 1 (1 is the row itself)")
        if not all(isinstance(k, str) for k in raw["learning_curve"]["experiments"]):
            raise SpecError(f"{path}: learning_curve: experiments must list experiment keys (text)")
        for field in ("fractions", "experiments"):
            values = raw["learning_curve"][field]
            if len(values) > MAX_CURVE_ITEMS:
                raise SpecError(f"{path}: learning_curve: {len(values)} {field}; at most {MAX_CURVE_ITEMS}")
            if len(set(values)) < len(values):
                raise SpecError(f"{path}: learning_curve: {field} lists a value twice")
        keys = {}
        for f in raw["learning_curve"]["fractions"]:
            other = keys.setdefault(fraction_key("", f), f)
            if other != f:
                raise SpecError(f"{path}: learning_curve: fractions {other} and {f} give one run name "
                                f"({fraction_key('', f).lstrip('-')}); keep them at least 1 % apart")
    if "leave_one_source_out" in raw:
        _check(raw["leave_one_source_out"], LOSO, f"{path}: leave_one_source_out")
        for field in ("min_images", "min_per_label"):
            value = raw["leave_one_source_out"].get(field)
            if value is not None and value < 1:
                raise SpecError(f"{path}: leave_one_source_out: {field} must be 1 or more, not {value}")
    if "cost" in raw:
        _check(raw["cost"], COST, f"{path}: cost")
        for field in ("cores", "running"):
            value = raw["cost"].get(field)
            if value is not None and (isinstance(value, bool) or value < 1):
                raise SpecError(f"{path}: cost: {field} must be a whole number of 1 or more, not {value!r}")


def fraction_key(key: str, fraction: float) -> str:
    return f"{key}-f{round(fraction * 100)}"


def origin_key(key: str, origin: str, unique: bool = False) -> str:
    """The held-out origin's row key: its first 24 letters and digits; `unique` adds a short hash of the
    whole origin (used only for origins whose 24-character keys collide, so other keys stay as they were)."""
    slug = "".join(ch if ch.isalnum() else "-" for ch in origin.lower()).strip("-")[:24]
    tail = f"-{hashlib.sha256(origin.encode()).hexdigest()[:6]}" if unique else ""
    return f"{key}-out-{slug or 'unknown'}{tail}"


def origin_keys(key: str, origins: list[str]) -> dict[str, str]:
    """Each origin's row key, unique: origins whose short keys collide get a hash suffix each."""
    short = [origin_key(key, o) for o in origins]
    return {o: origin_key(key, o, unique=short.count(k) > 1) for o, k in zip(origins, short)}


def _curve_rows(spec: "StudySpec") -> list[Experiment]:
    lc = spec.learning_curve or {}
    out = []
    for key in lc.get("experiments", []):
        if key not in {e.key for e in spec.experiments}:
            raise SpecError(f"{spec.path}: learning_curve names unknown experiment {key!r}")
        e = spec.experiment(key)
        for f in sorted(lc["fractions"]):
            out.append(Experiment(fraction_key(key, f), "Learning curve",
                                  f"{e.label}: {f:.0%} of the training patients",
                                  e.preset, {**e.overrides, "train_fraction": f}, list(e.init_from), None, True, key))
    return out


def _origin_rows(spec: "StudySpec", covid_root) -> list[Experiment]:
    """One row per origin of the COVID-19 collection with enough images of both labels: trained without
    it, tested on it. Needs the collection (its metadata): without it, none, and a note says why."""
    lo = spec.leave_one_source_out
    if not lo:
        return []
    key = lo["experiment"]
    if key not in {e.key for e in spec.experiments}:
        raise SpecError(f"{spec.path}: leave_one_source_out names unknown experiment {key!r}")
    e = spec.experiment(key)
    task = PRESETS[e.preset]["data"]["task"]
    if task not in SOURCE_TASKS:
        raise SpecError(f"{spec.path}: leave_one_source_out: experiment {key!r} is task {task}; sources can be held "
                        f"out of {', '.join(SOURCE_TASKS)} only")
    from ..data.covid import COVID19Collection, eligible_origins
    from ..data.roots import resolve_root

    min_images, min_per_label = lo.get("min_images", 30), lo.get("min_per_label", 5)
    if task == "manifest":
        found, _ = _manifest_sources(spec, e, min_images, min_per_label)
        if found is None:
            return []
        keys = origin_keys(key, list(found))
        return [Experiment(keys[o], "Leave one source out", f"{e.label}: trained without {o}, tested on it",
                           e.preset, {**e.overrides, "holdout_source": o}, list(e.init_from), None, False, key)
                for o in found]
    try:
        root = resolve_root("covid", str(covid_root or ""), required=False)
        if root is None:
            spec.notes.append("leave one source out: no COVID-19 root is configured, so its origins are not known yet")
            return []
        found = eligible_origins(COVID19Collection(root, include_unlabelled=False, dedupe=False), min_images,
                                 min_per_label)
    except (OSError, ValueError) as exc:
        spec.notes.append(f"leave one source out: the COVID-19 collection could not be read ({exc})")
        return []
    if not found:
        spec.notes.append(f"leave one source out: no origin of {root} has {min_images} images with {min_per_label} of "
                          "each label")
    keys = origin_keys(key, list(found))
    return [Experiment(keys[o], "Leave one source out", f"{e.label}: trained without {o}, tested on it",
                       e.preset, {**e.overrides, "holdout_source": o}, list(e.init_from), None, False, key)
            for o in found]


def _manifest_sources(spec: "StudySpec", e: "Experiment", min_images: int, min_per_label: int):
    """The sources of the experiment's manifest (its `source` column) a held-out test can be made of: at
    least `min_images` labelled images, and `min_per_label` positives and negatives of one class at
    least; (sources, manifest) or (None, None) with a note when the manifest cannot be read."""
    import numpy as np

    from ..data.covid import origins
    from ..data.labelled import LabelledCollection

    path = spec.overrides(e).get("manifest")
    if not path:
        raise SpecError(f"{spec.path}: experiment {e.key!r} is task manifest but names no manifest (overrides: "
                        "\"manifest\": \"/path/to/manifest.csv\")")
    try:
        ds = LabelledCollection(path, dedupe=False)
    except (OSError, ValueError) as exc:
        spec.notes.append(f"leave one source out: the manifest could not be read ({exc})")
        return None, None
    table = origins(ds)
    ok = table["images"] >= min_images
    ok &= np.column_stack([(table[c] >= min_per_label) & (table["images"] - table[c] >= min_per_label)
                           for c in ds.class_names]).any(axis=1)
    found = [str(x) for x in table.index[ok] if str(x) not in ("", "unknown")]
    if not found:
        spec.notes.append(f"leave one source out: no source of {path} has {min_images} images with {min_per_label} "
                          "positives and negatives of a class")
    return found, path


def load_spec(scale: str, covid_root=None) -> StudySpec:
    """`pack`, `full`, or the path of a study JSON file; SpecError naming the file and the field.
    Learning-curve rows are added after the experiments; held-out-origin rows after them, one per
    eligible origin of the COVID-19 collection at `covid_root` (default: the configured root)."""
    path = SCALES_DIR / f"{scale}.json" if scale in SCALES else Path(scale)
    if not path.is_file():
        raise SpecError(f"no study scale {scale!r}: use {' or '.join(SCALES)}, or the path of a study JSON file")
    if path.stat().st_size > MAX_BYTES:
        raise SpecError(f"{path}: {path.stat().st_size:,} bytes is too large for a study file (at most {MAX_BYTES:,})")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise SpecError(f"{path}: not a study file (JSON nested too deep)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: not a study file ({exc.__class__.__name__}: {exc})") from exc
    _check_file(raw, path)
    exps = [Experiment(**e) for e in raw["experiments"]]
    spec = StudySpec(raw["scale"], raw.get("description", ""), raw.get("common", {}), exps,
                     raw.get("comparisons", []), path, raw.get("learning_curve"), raw.get("leave_one_source_out"))
    _validate(spec)
    spec.experiments += _curve_rows(spec)
    spec.experiments += _origin_rows(spec, covid_root)
    spec.covid_root = None if covid_root is None else str(covid_root)
    spec.cost = raw.get("cost")
    return spec


def _minutes(m: float) -> str:
    m = round(m)
    return f"{m} min" if m < 60 else f"{m // 60} h {m % 60:02d} min"


def cost_text(spec: StudySpec, repeats: int = 1, here: dict | None = None) -> str | None:
    """What `repeats` repeats of this scale cost where its cost was measured (the file's "cost": the
    first repeat, with the rows that run once, and each further one), in words; None if not measured.

    here: this machine ({"cores", "running" (CXR_MAX_RUNNING), "gpus"}, engine.runs.launch.machine()).
    Where the file names its basis ("cores", "running"), the estimate follows the set-up (issue 37, N9):
    on a CPU the work is the same however many runs share the cores, so it scales with the cores alone;
    with a GPU here nothing measured applies, and it says so instead of quoting CPU minutes as if they did."""
    c = spec.cost
    if not c:
        return None
    n = max(1, repeats)
    total = c["first_repeat_minutes"] + (n - 1) * c["further_repeat_minutes"]
    each = f"; each further repeat {_minutes(c['further_repeat_minutes'])}" if repeats > 1 else ""
    text = (f"{n} repeat{'s' if n > 1 else ''}: about {_minutes(total)} (the first "
            f"{_minutes(c['first_repeat_minutes'])}{each}; measured {c['measured']})")
    if not here:
        return text
    if here.get("gpus"):
        return (text + f". Runs here train on {here['gpus']} GPU(s), where this study's time has not been "
                       f"measured: the CPU minutes above do not apply")
    cores, base_cores = here.get("cores"), c.get("cores")
    if cores and base_cores and cores != base_cores:
        text += (f". This machine has {cores} cores, not {base_cores}: about {_minutes(total * base_cores / cores)} "
                 f"here, if the work spreads over them")
    running, base_running = here.get("running"), c.get("running")
    if running and base_running and running != base_running:
        text += (f". It runs {running} run(s) at a time (CXR_MAX_RUNNING), the measurement ran {base_running}: on a "
                 f"CPU the same work shares the same cores, so the total barely changes")
    return text


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
        if any(not spec.experiment(c[side]).repeats for side in ("a", "b")):
            raise SpecError(f"{spec.path}: comparison {c.get('what', c)!r} names an experiment that runs once "
                            "(repeats: false); compare experiments every repeat runs")
        if c.get("images", "same") not in IMAGE_SETS:
            raise SpecError(f"{spec.path}: comparison {c.get('what', c)!r}: images must be one of "
                            f"{', '.join(IMAGE_SETS)}, not {c.get('images')!r}")


def planned_config(spec: StudySpec, exp: Experiment, init: str | None = None, repeat: int = 0) -> dict:
    """The experiment's config (flat) as this scale sets it in repeat `repeat`, data roots left to the caller."""
    over = {**spec.overrides(exp), **repeat_overrides(spec, exp, repeat)}
    if init is not None or exp.init_from:
        over = {**over, "init": init or "scratch"}
    return from_preset(exp.preset, over).flat()


def repeat_overrides(spec: StudySpec, exp: Experiment, repeat: int) -> dict:
    """What repeat `repeat` changes (none for repeat 0): the training seed (initialisation, order,
    augmentation) and the split seed, which redraws the COVID-19 collection's patient split and
    ChestX-ray14's train/validation split; ChestX-ray14's official test list stays fixed."""
    if repeat == 0:
        return {}
    base = from_preset(exp.preset, {**spec.overrides(exp), **({"init": "scratch"} if exp.init_from else {})})
    return {"seed": base.train.seed + repeat, "split_seed": base.data.split_seed + repeat}


def changes_from_full(spec: StudySpec) -> list[str]:
    """Every setting this scale changes from the study's (full) settings, experiment by experiment."""
    full = load_spec("full", spec.covid_root)
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
