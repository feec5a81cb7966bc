"""A run bundle: one zip with everything a reader needs to check a run without the lab.

Inside: README.txt (what each file is), run.json (the registry row: settings, status, code version,
data fingerprint), metrics.json, the predictions of each split, the external evaluations, the audit,
the training log, the figures (ROC per split and per external collection, loss and validation AUC
curves) as SVG and PNG, and the weights (best.pt) only when asked for. Written to a temporary file
beside the target and renamed, so a kill leaves either the old bundle or the new one.

Personal data (issue 37, N14): a bundle holds no absolute path. Image paths in the predictions are
relative to their collection's root (the `path` column is dropped: `image` is that relative path), and
every folder of this machine in a text file (the data roots, the cache, the checkpoints, the home
folder) is written as a placeholder (`<covid_root>`, `<checkpoints>`, ...). The README lists the
personal fields the predictions carry (patient ids, sex, age). `deidentify=True` replaces patient ids
with salted hashes (a random salt per bundle, not kept) and drops sex and age.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import tempfile
import time
import zipfile
from pathlib import Path

import pandas as pd

from .. import figures
from ..metrics import roc_curves
from .card import build_card, markdown
from ..text import human_bytes
from .folder import AUDIT, EXTERNAL_PREDICTIONS, METRICS, check_out
from .predictions import read_if_present
from .registry import Registry

ROC_POINTS = 400  # per curve, as on the Results page
SPLITS = ("val", "test")
PERSONAL = ("patient_id", "sex", "age")  # what the predictions say about a person
TEXT = (".json", ".log", ".md", ".txt", ".csv")


class _Scrub:
    """This machine's folders out of a bundle's files; patients hashed when de-identifying."""

    def __init__(self, reg: Registry, row, deidentify: bool):
        data = row.config.get("data", {})
        places = {"checkpoints": reg.root, "home": Path.home()}
        for key in ("nih_root", "covid_root", "cache_dir"):
            if data.get(key):
                places[key] = data[key]
        if data.get("manifest"):
            places["manifest_folder"] = Path(data["manifest"]).parent
        self.places = sorted(((str(Path(v).expanduser().resolve()), f"<{k}>") for k, v in places.items()
                              if str(v).strip()), key=lambda kv: -len(kv[0]))
        self.deidentify, self.salt = deidentify, secrets.token_bytes(16)
        self.personal: set[str] = set()

    def add(self, where, label: str) -> None:
        self.places = sorted([*self.places, (str(Path(where).resolve()), f"<{label}>")], key=lambda kv: -len(kv[0]))

    def text(self, text: str) -> str:
        for path, label in self.places:
            if path not in ("/", ""):
                text = text.replace(path, label)
        return text

    def table(self, data: bytes) -> bytes:
        frame = pd.read_csv(io.BytesIO(data), dtype={"patient_id": str, "image": str})
        frame = frame.drop(columns=[c for c in ("path",) if c in frame])
        if self.deidentify:
            if "patient_id" in frame:
                frame["patient_id"] = frame["patient_id"].map(
                    lambda v: hashlib.sha256(self.salt + str(v).encode()).hexdigest()[:16])
            frame = frame.drop(columns=[c for c in ("sex", "age") if c in frame])
        self.personal |= {c for c in PERSONAL if c in frame and frame[c].notna().any()}
        from .tables import csv_text
        return self.text(csv_text(frame)).encode()

    def member(self, arc: str, src: Path | bytes) -> Path | bytes:
        if not arc.endswith(TEXT):
            return src
        data = src.read_bytes() if isinstance(src, Path) else src
        if arc.endswith(".csv") and "predictions" in arc:
            return self.table(data)
        return self.text(data.decode("utf-8", errors="replace")).encode()


def roc_figure(preds) -> dict | None:
    if not len(preds):
        return None
    curves = roc_curves(preds.targets, preds.probs, list(preds.classes))
    recs = pd.DataFrame([{**r, "label": f"{c.class_name} ({c.auc:.3f})"}
                         for c in curves for r in c.records(ROC_POINTS)])
    return None if recs.empty else figures.spec_of(figures.roc_chart(recs))


def _paper_text(stem: str, name: str, metrics: dict, config: dict, folder) -> tuple[str, str]:
    """The title and caption a bundle's paper figure carries (what n, which interval, which run)."""
    if stem.startswith("roc_external_"):
        ext = stem[len("roc_external_"):]
        try:
            m = json.loads((folder.external_dir(ext) / METRICS).read_text())
        except (OSError, ValueError):
            m = {}
        return f"ROC curves on {ext} (external)", figures.roc_caption(name, f"external {ext}", m, config)
    if stem.startswith("roc_"):
        split = stem[len("roc_"):]
        return f"ROC curves, {split} split", figures.roc_caption(name, split, metrics.get(split) or {}, config)
    if stem == "loss":
        return "Loss", f"Run {name}: BCE loss per training step (smoothed line) and per epoch (training, validation)."
    return "Validation AUC per epoch", f"Run {name}: validation AUC per class and their mean, per epoch."


def curve_figures(reg: Registry, name: str) -> dict[str, dict]:
    steps = pd.DataFrame(reg.steps(name), columns=["step", "epoch", "train_loss", "lr", "time"])
    epochs = pd.DataFrame(reg.epochs(name), columns=["epoch", "train_loss", "val_loss", "lr", "val_auc_mean", "val_auc",
                                                     "seconds", "skipped_images", "time"])
    spe = int(steps.groupby("epoch").size().max()) if not steps.empty else None
    out = {}
    if not (steps.empty and epochs.empty):
        out["loss"] = figures.spec_of(figures.loss_chart(steps, epochs, spe))
    if not epochs.empty:
        out["val_auc"] = figures.spec_of(figures.auc_chart(figures.epoch_aucs(epochs)))
    return out


def contents(reg: Registry, name: str, *, weights: bool = False, deidentify: bool = False,
             scrub: "_Scrub | None" = None) -> list[tuple[str, Path | bytes, str]]:
    """(name in the zip, file or bytes, what it is) for every member of `name`'s bundle, with this
    machine's folders replaced by placeholders (and patients hashed with deidentify)."""
    row = reg.require(name)
    folder = reg.folder(name)
    scrub = scrub or _Scrub(reg, row, deidentify)
    for ext in folder.externals():
        try:
            scrub.add(json.loads((folder.external_dir(ext) / METRICS).read_text()).get("root", ""), f"external_{ext}")
        except (OSError, ValueError):
            pass
    members: list[tuple[str, Path | bytes, str]] = [
        ("run.json", json.dumps(row.as_dict(), indent=1, sort_keys=True, default=str).encode(),
         "the registry row: settings (config), status, code version, data fingerprint, best epoch, scores")]
    if (folder.path / METRICS).is_file():
        members.append((METRICS, folder.path / METRICS, "per-class AUCs with 95 % patient-bootstrap intervals, "
                                                               "per split"))
    if folder.train_log.is_file():
        members.append(("train.log", folder.train_log, "the training log"))
    figs: dict[str, dict] = {}
    for split in SPLITS:
        p = folder.predictions(split)
        if p.is_file():
            members.append((f"predictions_{split}.csv", p, f"one row per {split} image: labels and probabilities"))
            spec = roc_figure(read_if_present(p))
            if spec:
                figs[f"roc_{split}"] = spec
    for ext in folder.externals():
        base = folder.external_dir(ext)
        for f in sorted(base.iterdir()):
            if f.is_file() and not f.name.startswith("."):
                members.append((f"external/{ext}/{f.name}", f, f"external evaluation on {ext}"))
        spec = roc_figure(read_if_present(base / EXTERNAL_PREDICTIONS))
        if spec:
            figs[f"roc_external_{ext}"] = spec
    audit = folder.path / AUDIT
    if audit.is_file():
        members.append((AUDIT, audit, "the shortcut audit: its verdict and evidence"))
    card = build_card(reg, name)  # subgroups: computed once per predictions file, then kept beside it
    members.append(("model-card.md", markdown(card).encode(), "the model card (Mitchell et al. 2019) with the CLAIM "
                                                              "items the records fill"))
    members.append(("model-card.json", json.dumps(card, indent=1, default=str).encode(), "the model card as JSON"))
    figs.update(curve_figures(reg, name))
    metrics = folder.read_metrics()
    for stem, spec in figs.items():
        title, caption = _paper_text(stem, name, metrics, row.config or {}, folder)
        for fmt in figures.FORMATS:
            members.append((f"figures/{stem}.{fmt}", figures.export(spec, fmt), f"figure: {stem.replace('_', ' ')}"))
            members.append((f"figures/paper/{stem}.{fmt}", figures.export(spec, fmt, theme="paper", title=title,
                                                                          caption=caption),
                            f"figure for a paper (white, serif, title and caption): {stem.replace('_', ' ')}"))
    if weights:
        best = folder.best
        if not best.is_file():
            raise FileNotFoundError(f"{name} has no best.pt to bundle (it has not finished an epoch)")
        members.append(("best.pt", best, "the weights (torch.load(..., weights_only=True)); its saved settings keep "
                                          "this machine's folders"))
    return [(arc, scrub.member(arc, src), what) for arc, src, what in members]


def _readme(name: str, members, weights: bool, scrub: "_Scrub | None" = None) -> bytes:
    lines = [f"Run bundle of {name}, written {time.strftime('%Y-%m-%d %H:%M:%S')} by the chest X-ray "
             "transfer-learning lab.", "", "Files:"]
    lines += [f"  {arc}: {what}" for arc, _, what in members]
    if scrub is not None:
        lines += ["", "Personal data:"]
        if scrub.deidentify:
            lines += ["  de-identified: patient ids are salted hashes (the salt is not kept), sex and age removed."]
        if scrub.personal:
            lines += [f"  the predictions carry {', '.join(sorted(scrub.personal))} of each image's patient; share "
                      "this bundle only where that is allowed (python -m engine runs bundle RUN --deidentify hashes "
                      "patient ids and drops sex and age)." if not scrub.deidentify else
                      f"  the predictions still carry: {', '.join(sorted(scrub.personal))} (hashed)."]
        else:
            lines += ["  none: no patient id, sex or age is in this bundle."]
        lines += ["  No absolute path: image paths are relative to their collection's root, and this machine's "
                  "folders are written as placeholders (" + ", ".join(label for _, label in scrub.places) + ")."]
    if not weights:
        lines += ["", "The weights are not included; `python -m engine runs bundle RUN --weights` adds best.pt."]
    lines += ["", "Research software, not a medical device: these numbers describe this run's data only."]
    return ("\n".join(lines) + "\n").encode()


def _zip(target, name: str, members, weights: bool, scrub: "_Scrub | None" = None) -> None:
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("README.txt", _readme(name, members, weights, scrub))
        for arc, src, _ in members:
            if isinstance(src, Path):
                z.write(src, arc)
            else:
                z.writestr(arc, src)


def write_bundle(reg: Registry, name: str, out: Path | None = None, *, weights: bool = False,
                 force: bool = False, deidentify: bool = False) -> Path:
    """Write `name`'s bundle to `out` (a .zip path or a folder; default checkpoints/<run>/<run>-bundle.zip)
    atomically; returns the path."""
    scrub = _Scrub(reg, reg.require(name), deidentify)
    members = contents(reg, name, weights=weights, scrub=scrub)
    given = out is not None
    out = Path(out) if out else reg.folder(name).path / f"{name}-bundle.zip"
    if out.is_dir():
        out = out / f"{name}-bundle.zip"
    if given:  # a path the user named: an existing file there is replaced only with force
        check_out(out, folder=False, force=force)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    os.close(fd)
    try:
        _zip(tmp, name, members, weights, scrub)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def bundle_bytes(reg: Registry, name: str, *, weights: bool = False, deidentify: bool = False) -> bytes:
    """The bundle as bytes (for a download), built in memory."""
    buf = io.BytesIO()
    scrub = _Scrub(reg, reg.require(name), deidentify)
    _zip(buf, name, contents(reg, name, weights=weights, scrub=scrub), weights, scrub)
    return buf.getvalue()


def describe(path: Path) -> str:
    with zipfile.ZipFile(path) as z:
        n = len(z.namelist())
    return f"{path} ({n} files, {human_bytes(path.stat().st_size)})"
