"""The training form, built from the presets and the config dataclasses; returns engine objects."""
from __future__ import annotations

from dataclasses import fields

import streamlit as st

from engine.config import PRESET_NOTES, PRESETS, SECTIONS, TASKS, ConfigError, coerce, from_preset
from engine.constants import ARCHS, AUGMENTATIONS

CHOICES = {"arch": ARCHS, "augment": AUGMENTATIONS, "device": ("auto", "cpu", "cuda"), "task": TASKS}
MAIN_FIELDS = ("nih_root", "covid_root", "init", "arch", "epochs", "batch_size", "image_size", "lr", "weight_decay",
               "plateau_patience", "augment", "oversample", "max_images_per_split", "early_stopping", "seed", "device")
HIDDEN = ("task",)  # fixed by the preset
HELP = {
    "init": "scratch, imagenet, the name of a finished run, or a checkpoint path",
    "max_images_per_split": "cap per split for quick runs (0 = all images)",
    "image_size": "network input side in pixels (the study: 224)",
    "nih_root": "folder with Data_Entry_2017*.csv and images",
    "covid_root": "folder with metadata.csv and images/",
}


def _defaults(preset: str) -> dict:
    cfg = {}
    for section, values in PRESETS[preset].items():
        cfg.update(values)
    out = {}
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            out[f.name] = cfg.get(f.name, getattr(cls(), f.name))
    return out


def _key(name: str) -> str:
    return f"train.f.{name}"


def apply_preset(preset: str, roots: dict[str, str]) -> None:
    """Put a preset's defaults into the form's widgets (called when the preset changes)."""
    defaults = _defaults(preset)
    defaults.update({k: v for k, v in roots.items() if v})
    for name, value in defaults.items():
        if name in CHOICES:
            value = value if value in CHOICES[name] else CHOICES[name][0]
        elif not isinstance(value, bool):
            value = "" if value is None else str(value)
        st.session_state[_key(name)] = value
    st.session_state["train.form_preset"] = preset


def _widget(name: str, default):
    """The widget of one config field; its value lives in session state (set by apply_preset)."""
    label, key = name.replace("_", " "), _key(name)
    if isinstance(default, bool):
        return st.checkbox(label, key=key, help=HELP.get(name))
    if name in CHOICES:
        return st.selectbox(label, list(CHOICES[name]), key=key, help=HELP.get(name))
    return st.text_input(label, key=key, help=HELP.get(name))


def training_form(preset: str, roots: dict[str, str]) -> tuple[dict | None, str | None, list[str]]:
    """Draw the form; on submit return (overrides, run name, errors). Nothing is launched here."""
    defaults = _defaults(preset)
    if st.session_state.get("train.form_preset") != preset:
        apply_preset(preset, roots)
    if PRESET_NOTES.get(preset):
        st.info(f"**{preset}** {PRESET_NOTES[preset]}.")
    with st.form("train.form"):
        st.text_input("run name (optional)", key="train.name", placeholder="default: preset + timestamp")
        values = {}
        cols = st.columns(4)
        for i, name in enumerate(MAIN_FIELDS):
            with cols[i % 4]:
                values[name] = _widget(name, defaults[name])
        with st.expander("All settings"):
            cols = st.columns(4)
            rest = [n for n in defaults if n not in MAIN_FIELDS and n not in HIDDEN]
            for i, name in enumerate(rest):
                with cols[i % 4]:
                    values[name] = _widget(name, defaults[name])
        submitted = st.form_submit_button("Start training", type="primary")
    if not submitted:
        return None, None, []
    errors, overrides = [], {}
    for name, raw in values.items():
        if isinstance(raw, str) and raw.strip() == "" and name not in ("nih_root", "covid_root", "cache_dir", "init"):
            errors.append(f"**{name}**: a value is required")
            continue
        try:
            overrides[name] = coerce(name, raw)
        except ConfigError as exc:
            errors.append(f"**{name}**: {exc}")
    if not errors:
        try:
            from_preset(preset, overrides)
        except ConfigError as exc:
            errors.append(f"**{exc.field}**: {exc}")
    name = (st.session_state.get("train.name") or "").strip() or None
    return overrides, name, errors
