"""The training form, built from the presets and the config dataclasses; returns engine objects."""
from __future__ import annotations

from dataclasses import fields

import streamlit as st

from engine.config import (HOLDOUT_TASKS, MANIFEST_FORMATS, PRESET_NOTES, PRESETS, SECTIONS, TASKS, UNCERTAIN,
                           ConfigError, coerce, from_preset)
from dashboard import cache, guard, state
from engine.text import md_escape
from engine.constants import ARCHS, AUGMENTATIONS
from engine.models import xrv
from engine.runs.states import RunStatus

CHOICES = {"arch": ARCHS, "augment": AUGMENTATIONS, "device": ("auto", "cpu", "cuda"), "task": TASKS,
           "manifest_format": MANIFEST_FORMATS, "uncertain": UNCERTAIN}
MAIN_FIELDS = ("nih_root", "covid_root", "init", "arch", "epochs", "batch_size", "image_size", "lr", "weight_decay",
               "plateau_patience", "augment", "oversample", "max_images_per_split", "early_stopping", "seed", "device",
               "keep_last")
HIDDEN = ("task",)  # fixed by the preset
OPTIONAL_TEXT = ("nih_root", "covid_root", "cache_dir", "init", "holdout_source", "manifest")  # empty: the default
LABELS = {"keep_last": "keep last.pt (to train further)"}
HELP = {
    "init": "scratch, imagenet, torchxrayvision's chest X-ray DenseNet-121s (xrv: all datasets, nih, chex, mimic, "
            "pc, rsna; a DenseNet-121 run, its weights fetched once), or a ChestX-ray14 run (one still training works "
            "too: the new run waits for it)",
    "max_images_per_split": "cap per split for quick runs (0 = all images)",
    "image_size": "network input side in pixels (the study: 224)",
    "nih_root": "folder with Data_Entry_2017*.csv and images",
    "manifest": "your collection's CSV: path, one column per class (1/0) or one label column, and optionally "
                "patient_id, sex, age, view, source, split (docs: Your own data); or a public dataset's folder "
                "in its own layout, with its format picked beside",
    "manifest_format": "csv: the lab's manifest; chexpert (CheXpert-v1.0[-small] folder), mimic (MIMIC-CXR-JPG), "
                       "padchest, rsna (RSNA Pneumonia): that dataset's folder as published, trained on its own "
                       "findings (docs: Your own data)",
    "uncertain": "CheXpert and MIMIC-CXR labels coded -1 (uncertain): ignore (not scored), zeros or ones",
    "covid_root": "folder with metadata.csv and images/",
    "holdout_source": "COVID-19 collection tasks: an origin (web host of the url column, e.g. radiopaedia.org) to test "
                      "on alone while training on the others (its patients and their linked films go to the test "
                      "split); your collection: a value of the manifest's source column; none: the usual patient "
                      "split",
    "train_fraction": "share of the training patients kept, drawn per class (learning curves; 1 = all)",
    "keep_last": "keep the optimizer state (last.pt, about 3x the weights) after the run succeeds, to train it "
                 "further later; otherwise only best.pt (the weights) is kept",
}


def _defaults(preset: str) -> dict:
    cfg = {}
    for values in PRESETS[preset].values():
        cfg.update(values)
    out = {}
    for cls in SECTIONS.values():
        for f in fields(cls):
            out[f.name] = cfg.get(f.name, getattr(cls(), f.name))
    return out


def _key(name: str) -> str:
    return f"train.f.{name}"


def apply_preset(preset: str, roots: dict[str, str]) -> None:
    """Put a preset's defaults into the form's widgets (called when the preset changes); a run name
    typed for the previous preset is cleared, since it named that experiment."""
    if st.session_state.get("train.form_preset") not in (None, preset):
        st.session_state["train.name"] = ""
    defaults = _defaults(preset)
    defaults.update({k: v for k, v in roots.items() if v})
    for name, value in defaults.items():
        if name in CHOICES:
            value = value if value in CHOICES[name] else CHOICES[name][0]
        elif not isinstance(value, bool):
            value = "" if value is None else str(value)
        st.session_state[_key(name)] = value
    st.session_state["train.form_preset"] = preset


CHOOSE_PARENT = ""  # the init option of a transfer preset before a ChestX-ray14 run is chosen
NO_HOLDOUT = ""  # the held-out origin picker's "none"


def init_options(runs: list[dict]) -> dict[str, str]:
    """init value -> label: scratch, imagenet, then ChestX-ray14 runs that finished, run or wait (a
    run still training can be a parent: the new run waits for it in the queue), with their architecture
    (the new run takes it)."""
    out = {CHOOSE_PARENT: "(choose a ChestX-ray14 run)", "scratch": "scratch", "imagenet": "imagenet",
           **{xrv.PREFIX + n: f"torchxrayvision · {n.removeprefix('densenet121-res224-')}" for n in xrv.NAMES}}
    for r in runs:
        if r.config.get("data", {}).get("task") == "nih" and r.status in ("succeeded", "running", RunStatus.QUEUED):
            auc = f" · AUC {r.best_val_auc:.2f}" if r.best_val_auc is not None else ""
            arch = r.config.get("model", {}).get("arch")
            out[r.name] = f"{r.name} · {r.status}" + (f" · {arch}" if arch else "") + auc  # short: the box is narrow
    return out


FIELD_PX = 160  # each field's width: the form's fields wrap to the page's width, none cut (issue 37, N11)
WIDE = {"nih_root", "covid_root", "manifest", "init", "holdout_source"}  # paths and run names: twice as wide


def _widget(name: str, default, inits: dict[str, str], origins: dict[str, str] | None = None):
    """The widget of one config field; its value lives in session state (set by apply_preset)."""
    label, key = LABELS.get(name, name.replace("_", " ")), _key(name)
    width = 2 * FIELD_PX + 16 if name in WIDE else FIELD_PX
    if isinstance(default, bool):
        return st.checkbox(label, key=key, help=HELP.get(name), width="content")
    if name == "init":
        if st.session_state.get(key) not in inits:  # a run deleted, or a value typed elsewhere
            st.session_state[key] = CHOOSE_PARENT if CHOOSE_PARENT in inits else "scratch"
        return st.selectbox(label, list(inits), key=key, format_func=inits.get, help=HELP.get(name), width=width)
    if name in CHOICES:
        return st.selectbox(label, list(CHOICES[name]), key=key, help=HELP.get(name), width=width)
    if name == "holdout_source" and origins:
        options = {NO_HOLDOUT: "(none: the usual patient split)", **origins}
        value = st.session_state.get(key)
        if value is None:
            st.session_state[key] = NO_HOLDOUT
        elif value not in options:  # a run trained on another copy of the collection: kept, and said
            options[value] = f"{value} (not in this collection)"
        return st.selectbox(label, list(options), key=key, format_func=options.get, help=HELP.get(name), width=width)
    return st.text_input(label, key=key, help=HELP.get(name), width=width)


def prefill_from_run(row) -> None:
    """"Train again with these settings": the Train page opens on the run's preset with every field of
    its recorded config (a button's callback, run before the Train page draws its form). The run name is
    left empty, so the new run gets its own."""
    preset = row.preset if row.preset in PRESETS else next(
        (p for p in PRESETS if PRESETS[p]["data"]["task"] == row.config.get("data",
                                                                            {}).get("task")), next(iter(PRESETS)))
    apply_preset(preset, {})
    for section in SECTIONS:
        for name, value in (row.config.get(section) or {}).items():
            if _key(name) not in st.session_state:
                continue  # a setting the form does not show (a field of an older version)
            if isinstance(value, bool):
                st.session_state[_key(name)] = value
            elif name in CHOICES:
                st.session_state[_key(name)] = value if value in CHOICES[name] else CHOICES[name][0]
            else:
                st.session_state[_key(name)] = "" if value is None else str(value)
    st.session_state["train.preset"] = preset
    st.session_state["train.form_preset"] = preset
    st.session_state["train.name"] = ""
    st.session_state["train.prefilled_from"] = row.name
    for name, key in (("nih_root", state.NIH_ROOT), ("covid_root", state.COVID_ROOT)):
        st.session_state[f"train.roots_seen.{name}"] = st.session_state.get(key)  # the run's roots, not the sidebar's


def set_field_value(name: str, value) -> None:
    """A button's callback: put a value into one of the form's fields before the form is drawn."""
    st.session_state[_key(name)] = value


def _sync_roots(roots: dict[str, str]) -> None:
    """The sidebar's roots are the source of truth: a change there reaches an open form."""
    for name, value in roots.items():
        seen = f"train.roots_seen.{name}"
        if value and st.session_state.get(seen) != value:
            st.session_state[_key(name)] = value
        st.session_state[seen] = value


LOG_TO, LOG_ALWAYS = "train.log_to", "train.log_always"


def _log_to_fields() -> None:
    """Trackers for the run: TensorBoard folders and MLflow URIs, and whether every new run logs there."""
    from engine import tracking

    saved = tracking.always()
    c1 = c2 = st.container(horizontal=True, vertical_alignment="bottom")
    c1.text_input("log to (optional)", key=LOG_TO, width=2 * FIELD_PX + 16, placeholder="tensorboard:runs/tb  mlflow:http://127.0.0.1:5000",
                  help="TensorBoard folders and MLflow tracking URIs, separated by spaces: the run's curves, AUCs, "
                       "CAMs, settings and predictions go there live (docs/trackers.md)"
                       + (f". Every run already logs to: {', '.join(saved)}" if saved else ""))
    c2.checkbox("for every new run", key=LOG_ALWAYS, help="save these as the setting log_to: every run started "
                "from here, the CLI and the queue logs there too (empty and ticked: clears it)")


def log_targets() -> tuple[list[str], str | None]:
    """The form's trackers, validated (and saved as the setting when asked): (targets, error)."""
    import re

    from engine import tracking

    text = (st.session_state.get(LOG_TO) or "").strip()
    try:
        targets = tracking.normalise(t for t in re.split(r"[\s,]+", text) if t)
        if st.session_state.get(LOG_ALWAYS):
            tracking.save_always(targets)
    except (tracking.TrackingError, OSError) as exc:
        return [], f"**log to**: {md_escape(exc)}"
    return targets, None


def training_form(preset: str, roots: dict[str, str], runs: list[dict]) -> tuple[dict | None, str | None, list[str]]:
    """Draw the form; on submit return (overrides, run name, errors: every invalid field at once).
    Nothing is launched here."""
    defaults = _defaults(preset)
    inits = init_options(runs)
    if st.session_state.get("train.form_preset") != preset:
        apply_preset(preset, roots)
    _sync_roots(roots)
    if PRESET_NOTES.get(preset):
        st.info(f"**{preset}** {PRESET_NOTES[preset]}.")
    origins = (cache.covid_origins(str(st.session_state.get(_key("covid_root")) or roots.get("covid_root") or ""))
               if PRESETS[preset]["data"]["task"] in HOLDOUT_TASKS else {})
    with st.form("train.form", enter_to_submit=False):  # only the Start button starts a run, never Enter
        st.text_input("run name (optional)", key="train.name", placeholder="default: preset + timestamp")
        values = {}
        own = PRESETS[preset]["data"]["task"] == "manifest"  # your own collection: its manifest comes first
        main = (("manifest", "manifest_format") if own else ()) + MAIN_FIELDS
        with st.container(horizontal=True, vertical_alignment="bottom"):  # wraps as the page narrows
            for name in main:
                values[name] = _widget(name, defaults[name], inits, origins)
        with st.expander("All settings"):
            rest = [n for n in defaults if n not in main and n not in HIDDEN and n not in ("manifest", "manifest_format")]
            with st.container(horizontal=True, vertical_alignment="bottom"):
                for name in rest:
                    values[name] = _widget(name, defaults[name], inits, origins)
        _log_to_fields()
        submitted = guard.action("Start training", form=True, type="primary")
    if not submitted:
        return None, None, []
    errors, overrides = [], {}
    for name, raw in values.items():
        if isinstance(raw, str) and raw.strip() == "" and name not in OPTIONAL_TEXT:
            errors.append(f"**{name}**: a value is required")
            continue
        try:
            overrides[name] = coerce(name, raw)
        except ConfigError as exc:
            errors.append(f"**{name}**: {md_escape(exc)}")
    if overrides.get("init") == CHOOSE_PARENT:
        errors.append("**init**: choose the ChestX-ray14 run to start from (or scratch / imagenet)")
        overrides.pop("init")
    try:  # every range problem of the fields that parsed, all at once
        # an unchosen init is reported above
        cfg = from_preset(preset, {"init": "scratch", **overrides}, validate=False)
        errors += [f"**{e.field}**: {md_escape(e)}" for e in cfg.problems() if f"**{e.field}**" not in " ".join(errors)]
    except ConfigError as exc:
        errors.append(f"**{exc.field}**: {md_escape(exc)}")
    _, log_error = log_targets()
    if log_error:
        errors.append(log_error)
    name = (st.session_state.get("train.name") or "").strip() or None
    return overrides, name, errors
