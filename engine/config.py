"""Experiment configuration: validated dataclasses with the study's defaults, and the presets.

Field names are unique across the four sections, so every field is also a command-line flag
(`--image-size 64`, `--lr 1e-3`). A preset fills defaults; flags override (timm's two-stage parse).
The study's settings (section 5.1): DenseNet-121 lr 1e-4, weight decay 5e-5, plateau patience 5;
ResNet-50 lr 1e-3, weight decay 1e-5, patience 1; batch 16; 224 px; Adam (0.9, 0.999).
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields

from .constants import ARCHS, AUGMENTATIONS, DEFAULT_CACHE_SIZE, DEFAULT_IMAGE_SIZE

MANIFEST_FORMATS = ("csv", "chexpert", "mimic", "padchest", "rsna")  # the lab's manifest, then engine.data.public's
UNCERTAIN = ("ignore", "zeros", "ones")  # Irvin et al.'s policies for CheXpert's uncertain (-1) labels
TASKS = ("nih", "covid", "combined15", "pneumonia", "manifest")  # manifest: your own collection
HOLDOUT_TASKS = ("covid", "pneumonia")  # tasks on the COVID-19 collection alone, whose origins can be held out
SOURCE_TASKS = (*HOLDOUT_TASKS, "manifest")  # every task one of whose sources can be held out (a manifest's `source`)
DEVICES = ("auto", "cpu", "cuda")


class ConfigError(ValueError):
    """An invalid setting: names the field, the value and what is allowed."""

    def __init__(self, field_name: str, value, allowed: str):
        self.field = field_name
        super().__init__(f"invalid {field_name}={value!r}: {allowed}")


@dataclass
class DataConfig:
    task: str = "nih"                    # nih (14 labels), covid (COVID-19 vs not), combined15 (section 5.3),
                                         # pneumonia (COVID-19, other viral, bacterial, fungal, no finding)
    nih_root: str = ""                   # default: $CXR_NIH_ROOT
    covid_root: str = ""                 # default: $CXR_COVID_ROOT
    image_size: int = DEFAULT_IMAGE_SIZE  # network input side (study: 224)
    load_size: int = DEFAULT_CACHE_SIZE  # side images are decoded/cached at before augmentation
    val_fraction: float = 0.26           # NIH: share of train_val_list used for validation (57/20/23 overall)
    split_seed: int = 0                  # patient-wise split seed (kept separate from the training seed)
    min_per_class: int = 200             # combined15: at least this many images per class where available
    max_images_per_split: int = 0        # cap per split for quick runs (0 = no cap)
    cache_dir: str = ""                  # default: $CXR_CACHE_DIR or ~/.cache/cxrlab; used when a cache exists
    num_workers: int = 2                 # DataLoader worker processes
    dedupe: bool = True                  # COVID-19 collection: the same film under two patient ids stays in one split
    holdout_source: str = ""             # covid/pneumonia: test on this origin's images only, train on the others
    train_fraction: float = 1.0          # share of the training split's patients kept (learning curves)
    manifest: str = ""                   # task manifest: the CSV of your own collection (engine.data.labelled),
                                         # or a public dataset's folder (manifest_format)
    manifest_format: str = "csv"         # csv (the lab's manifest) | chexpert | mimic | padchest | rsna (that layout)
    uncertain: str = "ignore"            # CheXpert / MIMIC labels coded -1: ignore (not scored) | zeros | ones


@dataclass
class ModelConfig:
    arch: str = "densenet121"            # resnet50_own | resnet50 | densenet121 | tiny (tests, smoke runs)
    init: str = "imagenet"               # scratch | imagenet | <run name> | <checkpoint path>


@dataclass
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 5e-5
    beta1: float = 0.9
    beta2: float = 0.999
    plateau_factor: float = 0.1          # ReduceLROnPlateau on validation loss
    plateau_patience: int = 5
    min_lr: float = 1e-7


@dataclass
class TrainConfig:
    epochs: int = 100
    batch_size: int = 16
    augment: str = "study"               # study (flip, rotation +-20, jitter, affine) | flip | none
    reshuffle: bool = True               # new order every epoch (the study found it curbs overfitting)
    oversample: bool = False             # weighted sampler: rare classes drawn as often as common ones
    class_weighted_loss: bool = False    # BCE pos_weight = negatives / positives per class
    early_stopping: int = 0              # stop after this many epochs without a better val mean AUC (0 = off)
    seed: int = 0                        # training seed: init, order, augmentation
    device: str = "auto"                 # auto | cpu | cuda
    amp: bool = True                     # mixed precision on CUDA (ignored on CPU)
    channels_last: bool = True           # on CUDA
    checkpoint_minutes: float = 10.0     # also write last.pt mid-epoch this often (0 = epoch ends only)
    bootstrap: int = 1000                # bootstrap resamples (by patient) for AUC confidence intervals
    keep_last: bool = False              # keep last.pt (optimizer state, ~2x the weights) after success, to
                                         # train further with --resume RUN --epochs N; else it is dropped


# added after dedupe; absent from older records
LATER_DATA_FIELDS = ("holdout_source", "train_fraction", "manifest", "manifest_format", "uncertain")
SECTIONS = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig, "train": TrainConfig}


@dataclass
class ExperimentConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "ExperimentConfig":
        cfg = cls()
        if set(d.get("data", {})) == {f.name for f in fields(DataConfig)} - {"dedupe", *LATER_DATA_FIELDS}:
            cfg.data.dedupe = False  # a whole config recorded before duplicates were kept together: its own split
        for section, sub in d.items():
            if section not in SECTIONS:
                raise ConfigError("section", section, f"allowed: {', '.join(SECTIONS)}")
            for k, v in sub.items():
                set_field(cfg, k, v)
        return cfg

    def flat(self) -> dict:
        return {f.name: getattr(getattr(self, s), f.name) for s, c in SECTIONS.items() for f in fields(c)}

    def validate(self) -> "ExperimentConfig":
        """Raise the first problem (ConfigError naming the field); see `problems` for all of them."""
        found = self.problems()
        if found:
            raise found[0]
        return self

    def problems(self) -> list[ConfigError]:
        """Every invalid setting at once (a form reports them all, not one per submit)."""
        d, m, o, t = self.data, self.model, self.optim, self.train
        checks = [
            lambda: _choice("task", d.task, TASKS), lambda: _choice("arch", m.arch, ARCHS),
            lambda: _choice("augment", t.augment, AUGMENTATIONS),
            lambda: _choice("manifest_format", d.manifest_format, MANIFEST_FORMATS),
            lambda: _choice("uncertain", d.uncertain, UNCERTAIN),
            lambda: _device(t.device),
            lambda: _range("image_size", d.image_size, 32, 1024), lambda: _range("load_size", d.load_size, 32, 2048),
            lambda: _range("val_fraction", d.val_fraction, 0.0, 0.9),
            lambda: _range("train_fraction", d.train_fraction, 0.01, 1.0), lambda: _holdout(d),
            lambda: _range("min_per_class", d.min_per_class, 1, 100_000),
            lambda: _range("max_images_per_split", d.max_images_per_split, 0, 10_000_000),
            lambda: _range("num_workers", d.num_workers, 0, 64), lambda: _range("lr", o.lr, 1e-8, 1.0),
            lambda: _range("weight_decay", o.weight_decay, 0.0, 1.0), lambda: _range("beta1", o.beta1, 0.0, 0.999999),
            lambda: _range("beta2", o.beta2, 0.0, 0.999999999),
            lambda: _range("plateau_factor", o.plateau_factor, 1e-4, 0.9999),
            lambda: _range("plateau_patience", o.plateau_patience, 0, 1000), lambda: _range("min_lr", o.min_lr, 0.0, 1.0),
            lambda: _range("epochs", t.epochs, 1, 10_000), lambda: _range("batch_size", t.batch_size, 1, 4096),
            lambda: _range("early_stopping", t.early_stopping, 0, 10_000),
            lambda: _range("checkpoint_minutes", t.checkpoint_minutes, 0.0, 10_000.0),
            lambda: _range("bootstrap", t.bootstrap, 0, 100_000),
            lambda: _range("seed", t.seed, 0, 2**31 - 1), lambda: _range("split_seed", d.split_seed, 0, 2**31 - 1),
        ]
        found = []
        for check in checks:
            try:
                check()
            except ConfigError as exc:
                found.append(exc)
        if not any(e.field in ("image_size", "load_size") for e in found) and d.load_size < d.image_size:
            found.append(ConfigError("load_size", d.load_size, f"must be >= image_size ({d.image_size})"))
        if not m.init:
            found.append(ConfigError("init", m.init, "scratch, imagenet, a run name or a checkpoint path"))
        if d.task == "manifest" and not d.manifest:
            found.append(ConfigError("manifest", d.manifest, "task manifest needs the CSV of your collection (--manifest)"))
        if d.manifest_format != "csv" and d.task != "manifest":
            found.append(ConfigError("manifest_format", d.manifest_format,
                                     f"only task manifest reads a dataset's layout, not task {d.task}"))
        if d.manifest and d.task != "manifest":
            found.append(ConfigError("manifest", d.manifest, f"only task manifest reads a manifest, not task {d.task}"))
        return found


def _choice(name, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(name, value, f"allowed: {', '.join(allowed)}")


def _device(value) -> None:
    if not isinstance(value, str) or not re.fullmatch(r"auto|cpu|cuda(:\d{1,2})?", value):
        raise ConfigError("device", value, "allowed: auto, cpu, cuda or cuda:N")


def _range(name, value, lo, hi, exclusive_low=False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or not lo <= value <= hi:
        raise ConfigError(name, value, f"must be a number between {lo} and {hi}")


def field_types() -> dict[str, tuple[str, type]]:
    """field name -> (section, python type), for flags and form widgets."""
    out = {}
    for s, c in SECTIONS.items():
        hints = {f.name: type(getattr(c(), f.name)) for f in fields(c)}
        for name, typ in hints.items():
            out[name] = (s, typ)
    return out


def coerce(name: str, value):
    """Turn a string (flag, form) into the field's type; ConfigError names the field."""
    types = field_types()
    if name not in types:
        raise ConfigError("field", name, f"unknown setting; known: {', '.join(sorted(types))}")
    typ = types[name][1]
    if isinstance(value, typ) and not (typ is int and isinstance(value, bool)):
        return value
    text = str(value).strip()
    try:
        if typ is bool:
            low = text.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if typ is int:
            f = float(text)
            if not f.is_integer():
                raise ValueError
            return int(f)
        if typ is float:
            return float(text)
        return text
    except ValueError:
        raise ConfigError(name, value, f"expected {'true/false' if typ is bool else typ.__name__}") from None


def _holdout(d: DataConfig) -> None:
    if d.holdout_source and d.task not in SOURCE_TASKS:
        raise ConfigError("holdout_source", d.holdout_source, f"only the {', '.join(SOURCE_TASKS)} tasks hold out "
                          f"a source (an origin of the COVID-19 collection, a manifest's source), not task {d.task}")


def set_field(cfg: ExperimentConfig, name: str, value) -> None:
    section, _ = field_types().get(name, (None, None))
    if section is None:
        raise ConfigError("field", name, f"unknown setting; known: {', '.join(sorted(field_types()))}")
    setattr(getattr(cfg, section), name, coerce(name, value))


def _preset(task: str, arch: str, init: str, **over) -> dict:
    d = {"data": {"task": task}, "model": {"arch": arch, "init": init}, "optim": {}, "train": {}}
    if arch.startswith("resnet50"):  # the study's ResNet settings
        d["optim"].update(lr=1e-3, weight_decay=1e-5, plateau_patience=1)
    for k, v in over.items():
        d[field_types()[k][0]][k] = v
    return d


PRESETS: dict[str, dict] = {
    # Table 1: ChestX-ray14, 14 labels
    "nih-resnet50-scratch": _preset("nih", "resnet50_own", "scratch"),
    "nih-resnet50-imagenet": _preset("nih", "resnet50", "imagenet"),
    "nih-densenet121-imagenet": _preset("nih", "densenet121", "imagenet"),
    # Table 2: COVID-19 vs not, DenseNet-121, 100 epochs, oversampling, best val AUC epoch
    "covid-from-nih": _preset("covid", "densenet121", "", epochs=100, oversample=True),
    "covid-from-imagenet": _preset("covid", "densenet121", "imagenet", epochs=100, oversample=True),
    "covid-scratch": _preset("covid", "densenet121", "scratch", epochs=100, oversample=True),
    # The study's future work: the COVID-19 collection's finding hierarchy (viral vs bacterial pneumonia)
    "pneumonia-from-nih": _preset("pneumonia", "densenet121", "", epochs=100, oversample=True),
    "pneumonia-scratch": _preset("pneumonia", "densenet121", "scratch", epochs=100, oversample=True),
    # Section 5.3: 14 NIH labels + COVID-19, balanced >= 200 per class, from the NIH model
    "combined15": _preset("combined15", "densenet121", "", epochs=100, min_per_class=200),
    # Your own collection (a manifest CSV, its own classes): transfer with --init RUN, xrv:NAME or imagenet
    "manifest": _preset("manifest", "densenet121", "scratch", epochs=100, oversample=True),
}
PRESET_NOTES = {  # what `init` must name (the form shows it; the CLI's error adds the flag)
    "covid-from-nih": "starts from a ChestX-ray14 run (init), whose architecture it takes; on the command line "
                      "--init also takes a checkpoint file's path",
    "pneumonia-from-nih": "starts from a ChestX-ray14 run (init), whose architecture it takes; on the command line "
                          "--init also takes a checkpoint file's path",
    "combined15": "starts from a ChestX-ray14 run (init), whose architecture it takes; imagenet works too",
}


def from_preset(name: str, overrides: dict | None = None, *, validate: bool = True) -> ExperimentConfig:
    """A preset with overrides applied. validate=False leaves range checks to the caller (a form
    lists every problem at once with `problems()`); types are always checked."""
    if name not in PRESETS:
        raise ConfigError("preset", name, f"allowed: {', '.join(PRESETS)}")
    cfg = ExperimentConfig.from_dict(json.loads(json.dumps(PRESETS[name])))
    for k, v in (overrides or {}).items():
        set_field(cfg, k, v)
    if not validate:
        return cfg
    if not cfg.model.init:
        raise ConfigError("init", "", f"preset {name} needs --init RUN: it {PRESET_NOTES.get(name, 'has no default')}")
    return cfg.validate()
