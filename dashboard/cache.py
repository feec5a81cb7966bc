"""Every st.cache_* of the dashboard lives here: the bridge from Streamlit to the engine.

Models are cached as resources keyed by checkpoint path and modification time, so a newer best.pt
is picked up without a restart. Files read per run are keyed by path and mtime the same way.
"""
from __future__ import annotations

import base64
import io
import json
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from engine import figures
from engine.data.images import ImageReadError, decode_upload, read_xray, resize_gray
from engine.data.summary import summarize_covid, summarize_nih
from engine.data.tasks import open_collection
from engine.explain.gallery import gallery_maps, top_k
from engine.landscape.som import fit_som_pca
from engine.runs.folder import METRICS, RunDir
from engine.runs.predictions import Predictions
from engine.runs.predictions import read as read_predictions
from engine.runs.registry import Registry, observe

if TYPE_CHECKING:  # the model stack (torchvision) loads on the first page that needs a model
    from engine.explain.inference import LoadedModel


try:  # Streamlit converts Altair charts under this lock: Altair's theme and data transformer are process-wide
    from streamlit.elements.vega_charts import _altair_globals_lock as _ALTAIR_LOCK
except ImportError:  # pragma: no cover - another Streamlit layout
    _ALTAIR_LOCK = threading.Lock()


@st.cache_data(max_entries=256, show_spinner=False)
def chart_spec(builder: str, *args) -> dict:
    """The Vega-Lite spec of `engine.figures.<builder>(*args)`, built and validated once for the
    same data and shared by every session. Building and validating Altair specs was most of a page's
    time, and Streamlit converts Altair charts one at a time process-wide, so ten sessions queued
    behind each other (issue 14: Results 0.47 s alone, 4.5 s with ten)."""
    chart = getattr(figures, builder)(*args)
    with _ALTAIR_LOCK:
        return figures.spec_of(chart)


def chart(builder: str, *args, container=None, name: str | None = None, title: str | None = None,
          caption: str | None = None) -> None:
    """Draw a chart of engine.figures from its cached spec, as wide as its column, with PNG and SVG
    downloads (`name`: the files' stem and the widgets' key; give one when a page draws a builder twice;
    `title` and `caption`: what the paper figure says above its plot)."""
    draw_spec(chart_spec(builder, *args), name or builder, container, title=title, caption=caption)


def draw_spec(spec: dict, name: str, container=None, *, title: str | None = None, caption: str | None = None) -> None:
    """Draw a Vega-Lite spec with its "Figure" downloads (PNG, SVG), on the screen's dark theme or for a
    paper (white, serif, with the title and the caption); a figure is rendered only when its button is
    pressed, never on a rerun."""
    where = container or st
    where.vega_lite_chart(spec=spec, width="stretch")
    stem = re.sub(r"[^\w.-]+", "_", name).strip("_") or "figure"
    with where.popover("Figure", icon=":material/download:", type="tertiary", key=f"figure.{name}"):
        theme = st.radio("theme", figures.THEMES, key=f"figure.{name}.theme", horizontal=True,
                         captions=["dark, as drawn here", "white, serif, with a title and caption"],
                         label_visibility="collapsed")
        paper = {"title": title or name.replace("_", " "), "caption": caption} if theme == "paper" else {}
        for fmt in figures.FORMATS:
            st.download_button(fmt.upper(),
                               lambda fmt=fmt, theme=theme, paper=paper: figures.export(spec, fmt, theme=theme, **paper),
                               f"{stem}{'-paper' if paper else ''}.{fmt}", figures.MIME[fmt],
                               key=f"figure.{name}.{fmt}", on_click="ignore")


def registry() -> Registry:
    """The run registry ($CXR_CHECKPOINTS or ./checkpoints); cheap, so not cached."""
    return Registry()


@st.cache_data(show_spinner="Reading dataset metadata…", max_entries=8)
def data_summary(nih_root: str, covid_root: str) -> dict:
    """Per-dataset counts; errors come back as {"error": message} so pages can show them."""
    out = {}
    for name, root, fn in (("nih", nih_root, summarize_nih), ("covid", covid_root, summarize_covid)):
        if not root:
            continue
        try:
            out[name] = fn(root)
        except (FileNotFoundError, ValueError) as exc:
            out[name] = {"error": str(exc)}
    return out


def mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


@st.cache_resource(show_spinner="Loading model…", max_entries=4)
def _model(path: str, modified: float) -> LoadedModel:
    from engine.explain.inference import LoadedModel

    return LoadedModel(path)


def loaded_model(path: Path) -> LoadedModel:
    return _model(str(path), mtime(path))


@st.cache_data(show_spinner="Listing the run's own images…", max_entries=4)
def run_images(config_json: str):
    """The run's train/val/test images (engine.data.membership.run_frames); a string when its data is
    not readable here (why)."""
    from engine import ExperimentConfig
    from engine.data.membership import run_frames

    try:
        return run_frames(ExperimentConfig.from_dict(json.loads(config_json)))
    except (OSError, ValueError) as exc:  # roots moved, unset or unreadable
        return str(exc)


@st.cache_data(max_entries=64)
def _json(path: str, modified: float) -> dict:
    return json.loads(Path(path).read_text())


def run_metrics(run_dir: Path) -> dict | None:
    p = RunDir(run_dir).metrics_path
    return _json(str(p), mtime(p)) if p.is_file() else None


@st.cache_data(max_entries=32)
def _predictions(path: str, modified: float) -> Predictions:
    return read_predictions(path)


def predictions(run_dir: Path, split: str) -> Predictions | None:
    p = RunDir(run_dir).predictions(split)
    return _predictions(str(p), mtime(p)) if p.is_file() else None


@st.cache_data(show_spinner="Listing dataset images…", max_entries=4)
def dataset_images(nih_root: str, covid_root: str, limit: int = 400) -> pd.DataFrame:
    """A sample of images (path, label text, dataset) to pick from on the Diagnose page."""
    frames = []
    for root, kind in ((nih_root, "nih"), (covid_root, "covid")):
        if not root:
            continue
        try:
            ds = open_collection(kind, root, labelled_only=False)
        except (FileNotFoundError, ValueError):
            continue
        f = ds.frame[["image", "path", "findings", "dataset", "split"]].head(limit)
        frames.append(f)
    columns = ["image", "path", "findings", "dataset", "split"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


@st.cache_data(show_spinner="Computing activation maps…", max_entries=16)
def _gallery(checkpoint: str, modified: float, split: str, class_name: str, method: str, k: int, scale: str):
    run_dir = Path(checkpoint).parent
    rows = top_k(predictions(run_dir, split), class_name, k)
    return gallery_maps(_model(checkpoint, modified), rows, class_name, method=method, scale=scale)


def gallery(checkpoint: str, split: str, class_name: str, method: str, k: int, scale: str = "class"):
    """Gallery originals and maps, cached per run checkpoint (path + mtime), split, class, method, k, scale."""
    return _gallery(checkpoint, mtime(Path(checkpoint)), split, class_name, method, k, scale)


@st.cache_data(max_entries=4)
def boxes(root: str, fmt: str = "nih") -> pd.DataFrame:
    """Radiologists' boxes (1024-px coordinates) of a ChestX-ray14 root or an RSNA Pneumonia folder,
    `image` as the file's name; empty when the root has none."""
    from engine.explain.localize import read_boxes

    try:
        found = read_boxes(root, fmt)[0] if root else None
    except (OSError, ValueError):
        found = None
    if found is None:
        return pd.DataFrame(columns=["image", "label", "x", "y", "w", "h"])
    return found.assign(image=found["image"].map(lambda i: Path(i).name))


@st.cache_resource(show_spinner="Loading the landscape from the run folder…", max_entries=4)
def landscape(run: str, checkpoint_mtime: float, nih_root: str, covid_root: str, per_label: int, seed: int):
    """A landscape already built (see landscape_ready); building one is the page's explicit step."""
    from engine.landscape.store import load_landscape

    reg = registry()
    return load_landscape(reg.run_dir(run), reg.require(run).config, nih_root=nih_root or None,
                          covid_root=covid_root or None,
                          per_label=per_label, seed=seed)


def landscape_ready(run: str, nih_root: str, covid_root: str, per_label: int, seed: int) -> bool:
    from engine.landscape.store import landscape_ready as ready

    reg = registry()
    return ready(reg.run_dir(run), reg.require(run).config, nih_root=nih_root or None, covid_root=covid_root or None,
                 per_label=per_label, seed=seed)


def build_landscape(run: str, nih_root: str, covid_root: str, per_label: int, seed: int, progress, on_stage) -> None:
    from engine.landscape.store import load_landscape

    reg = registry()
    load_landscape(reg.run_dir(run), reg.require(run).config, nih_root=nih_root or None,
                   covid_root=covid_root or None, per_label=per_label, seed=seed, progress=progress, on_stage=on_stage)


@st.cache_data(show_spinner="Computing t-SNE (PCA to 50 dimensions, then openTSNE)…", max_entries=16)
def tsne_coords(key: str, space: str, perplexity: float, seed: int, _x) -> "np.ndarray":
    from engine.landscape.embeddings import TsneMap

    return TsneMap(_x, perplexity=perplexity, seed=seed).coords


@st.cache_data(show_spinner="Training the self-organising map…", max_entries=16)
def som_result(key: str, space: str, grid: int, epochs: int, seed: int, _x):
    return fit_som_pca(_x, grid=(grid, grid), epochs=epochs, seed=seed)


@st.cache_data(max_entries=16, show_spinner=False)
def covid_neighbourhood(key: str, k: int, _spaces: dict, _labels, label: str):
    """Shares of each pathology among COVID-19's k nearest neighbours and centroid distances, per space."""
    from engine.landscape.embeddings import neighbourhood

    return neighbourhood(_spaces, _labels, label, k)


@st.cache_data(max_entries=64, show_spinner=False)
def nearest_images(key: str, space: str, pick: int, k: int, _x, _labels, label: str):
    """The k images nearest image `pick` that are not `label`: (indices, similarities)."""
    from engine.landscape.embeddings import nearest_neighbours

    return nearest_neighbours(_x, np.array([pick]), k, candidates=_labels != label)


@st.cache_data(max_entries=16)
def landscape_numbers(key: str, space: str, k: int, _x, _labels, _datasets) -> dict:
    from engine.landscape.embeddings import landscape_numbers as numbers

    return numbers(_x, _labels, _datasets, k)


@st.cache_data(show_spinner="Making thumbnails…", max_entries=8)
def thumbnails(key: str, paths: tuple, size: int = 48) -> list:
    """PNG data URIs (for chart tooltips and neighbour lists); an unreadable file gives ""."""


    out = []
    for p in paths:
        try:
            buf = io.BytesIO()
            Image.fromarray(resize_gray(read_xray(p), size)).save(buf, format="PNG")
            out.append("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode())
        except ImageReadError:
            out.append("")
    return out


@st.cache_data(max_entries=4, show_spinner="Reading the COVID-19 collection's origins…")
def covid_origins(covid_root: str) -> dict[str, str]:
    """origin -> "host · N images, P COVID-19" for the Train form's held-out origin picker, largest
    first; {} when the collection cannot be read (the form then takes the origin as text)."""
    from engine.data.covid import COVID19Collection, origins
    from engine.data.roots import resolve_root

    try:
        root = resolve_root("covid", covid_root, required=False)
        if root is None:
            return {}
        table = origins(COVID19Collection(root, include_unlabelled=False, dedupe=False))
    except (OSError, ValueError):  # a missing root, an unreadable metadata.csv, a bad setting
        return {}
    return {str(o): f"{o} · {int(r['images'])} images, {int(r['COVID-19'])} COVID-19" for o, r in table.iterrows()
            if o != "unknown"}


@st.cache_data(max_entries=8, show_spinner="Reading the study file and the COVID-19 collection's origins…")
def study_spec(scale: str, covid_root: str = ""):
    """The study at `scale`, its rows held out of the COVID-19 collection at `covid_root` (one per
    origin with enough images), and the settings it changes from the study's."""
    from engine.study.spec import changes_from_full, load_spec

    spec = load_spec(scale, covid_root or None)
    return spec, changes_from_full(spec)


@st.cache_data(max_entries=16, show_spinner="Computing the paired statistics…")
def _study_results(scale: str, covid_root: str, prefix: str, key: tuple) -> dict:
    from engine.study.graph import status
    from engine.study.results import study_results as results

    spec, _ = study_spec(scale, covid_root)
    reg = registry()
    return results(spec, status(spec, prefix, reg), reg, n_boot=1000)


def study_results(scale: str, covid_root: str, prefix: str) -> dict:
    """The study's tables and comparisons, recomputed when one of its runs changes state."""
    reg = registry()
    key = tuple((r.name, r.status, r.finished, r.depends_on) for r in observe(reg)
                if r.name.startswith(prefix + "-"))
    return _study_results(scale, covid_root, prefix, key)


@st.cache_data(max_entries=16, show_spinner=False)
def _collection_only(run: str, modified: float) -> dict | None:
    from engine.study.results import collection_only

    return collection_only(registry(), run, n_boot=1000)


def collection_only(run: str) -> dict | None:
    """A 15-class run's COVID-19 AUC on the collection's test images alone, with its interval."""
    return _collection_only(run, mtime(registry().folder(run).predictions("test")))


@st.cache_data(show_spinner="Computing subgroups and operating points (once per predictions file)…", max_entries=16)
def _trust(val_path: str, test_path: str, key: tuple, n_boot: int) -> dict:
    from engine.trust.report import stored_trust_tables

    return stored_trust_tables(val_path or None, test_path, n_boot=n_boot)


ROC_POINTS = 400  # per curve on screen (see RocCurve.records)


def roc_chart(pred_path: Path, container=None, name: str | None = None, title: str | None = None,
              caption: str | None = None) -> int:
    """Draw the ROC chart of a predictions CSV (one curve per class, thinned for drawing); returns
    its number of images. The spec is built once per file version and keyed by the file, so a
    rerun neither re-reads the table nor hashes the curves. Says so when no class can be drawn."""
    spec, n_images = _roc_spec(str(pred_path), mtime(pred_path))
    if spec is None:
        (container or st).caption("no class has both positives and negatives in this split")
    else:
        draw_spec(spec, name or f"roc_{Path(pred_path).stem}", container, title=title, caption=caption)
    return n_images


@st.cache_data(show_spinner=False, max_entries=32)
def _roc_spec(path: str, key: float) -> tuple[dict | None, int]:
    from engine.metrics import roc_curves  # scikit-learn: kept off the first page's imports

    preds = read_predictions(path)
    curves = roc_curves(preds.targets, preds.probs, list(preds.classes))
    recs = pd.DataFrame([{**r, "label": f"{c.class_name} ({c.auc:.3f})"}
                         for c in curves for r in c.records(ROC_POINTS)])
    return (None if recs.empty else chart_spec("roc_chart", recs)), len(preds)


def paired_comparison(run_a: str, run_b: str, cls: str | None, split: str, common: bool) -> dict:
    """`compare RUN_A RUN_B` (DeLong + paired patient bootstrap), computed once per pair of prediction
    files (keyed by their modification times, so a re-evaluated run is compared afresh)."""
    reg = registry()
    key = tuple(mtime(reg.folder(r).predictions(split)) for r in (run_a, run_b))
    return _paired(run_a, run_b, cls, split, common, key)


@st.cache_data(show_spinner="Comparing the two runs on the same images (2,000 paired bootstrap resamples)…",
               max_entries=64)
def _paired(run_a: str, run_b: str, cls: str | None, split: str, common: bool, key: tuple) -> dict:
    from engine.evaluation.compare import compare_runs

    return compare_runs(registry(), run_a, run_b, cls, split=split, images="common" if common else "same")


def trust_tables(val_path: Path | None, test_path: Path, n_boot: int = 200) -> dict:
    """Subgroups and operating points of a predictions CSV (thresholds from the validation CSV)."""
    key = (mtime(test_path), mtime(val_path) if val_path else 0.0)
    return _trust(str(val_path) if val_path and val_path.is_file() else "", str(test_path), key, n_boot)


def externals(run_dir: Path) -> dict[str, dict]:
    """{name: metrics} of a run's external evaluations."""
    folder = RunDir(run_dir)
    out = {}
    for name in folder.externals():
        p = folder.external_dir(name) / METRICS
        out[name] = _json(str(p), mtime(p))
    return out


def audit(run_dir: Path) -> dict:
    p = RunDir(run_dir).audit_path
    try:
        return _json(str(p), mtime(p)) if p.is_file() else {}
    except ValueError:
        return {}


@st.cache_data(show_spinner="Decoding the upload…", max_entries=8)
def decoded_upload(data: bytes, name: str):
    """One decode per uploaded file (not one per slider move): (gray at most 1024 px, original size,
    colour score); ImageReadError propagates."""
    return decode_upload(data, name)
