"""Your data: add a collection (a labelled manifest, or CheXpert, MIMIC-CXR, PadChest or RSNA Pneumonia
in their own layouts), see what it holds, and start a transfer run on it in one step."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard import cache, guard
from dashboard.ui import tables
from engine.data.collections import KINDS, CollectionError, forget, remember, remembered, summary
from engine.text import md_escape

st.title("Your data")
st.caption("Collections beside the two roots: a manifest of your own images (docs/own-data.md) to train on, or a "
           "public dataset in its published layout to score runs on. Remembered for every tab and the CLI's "
           "settings, as the roots are.")

KIND_TEXT = {"manifest": "a manifest of your own (train and transfer)", "chexpert": "CheXpert (score runs)",
             "mimic": "MIMIC-CXR-JPG (score runs)", "padchest": "PadChest (score runs)",
             "rsna": "RSNA Pneumonia (score runs)"}

with st.expander("Add a collection", expanded=not remembered()):
    with st.form("data.add", enter_to_submit=False):
        c1, c2 = st.columns(2)
        name = c1.text_input("Name", key="data.add_name", placeholder="hospital-b")
        kind = c2.selectbox("Kind", KINDS, format_func=KIND_TEXT.get, key="data.add_kind")
        path = st.text_input("Manifest CSV, or the dataset's folder", key="data.add_path",
                             placeholder="/data/hospital-b/manifest.csv")
        add = guard.action("Add", form=True, type="primary")
    if add:
        try:
            entry = remember(name, kind, path)
            st.session_state["data.picked"] = entry["name"]
            st.toast(f"Added {entry['name']}")
        except (CollectionError, OSError) as exc:
            st.error(f"Not added: {exc}")

items = remembered()
if not items:
    st.info("No collection yet: add one above.")
    st.stop()
names = [c["name"] for c in items]
picked = st.selectbox("Collection", names, key="data.picked",
                      index=names.index(st.session_state["data.picked"]) if st.session_state.get("data.picked") in names
                      else 0)
col = next(c for c in items if c["name"] == picked)
st.caption(f"{KIND_TEXT[col['kind']]} · `{md_escape(col['path'])}`")


@st.cache_data(show_spinner="Reading the collection…", max_entries=8)
def _summary(kind: str, path: str, stamp: float) -> dict:
    return summary(kind, path)


try:
    stamp = Path(col["path"]).stat().st_mtime
    info = _summary(col["kind"], col["path"], stamp)
except (OSError, ValueError) as exc:  # a moved folder, a manifest refused: said, the page goes on
    st.error(f"{picked} cannot be read: {exc}")
    info = None
if info:
    m1, m2, m3 = st.columns(3)
    m1.metric("images", f"{info['images']:,}")
    m2.metric("patients", f"{info['patients']:,}")
    m3.metric("classes", len(info["classes"]))
    st.markdown("**Images, patients and positives per split**")
    tables.show(pd.DataFrame(info["per_split"]))
    a, b = st.columns(2)
    with a:
        st.markdown("**Sources**")
        tables.show(pd.DataFrame(info["sources"]))
    with b:
        dup = info["duplicates"]
        st.markdown("**Duplicate films** (perceptual hash)")
        st.write(f"{dup['pairs']} pairs found, {dup['pairs_across_splits_before']} across splits before, "
                 f"{dup['images_moved']} images moved to keep copies together" if dup else
                 "not checked (a given split, or a public dataset scored whole)")
        if info["skipped"]:
            st.caption("Left out: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in info["skipped"].items()))
    if info["thumbnails"]:
        uris = cache.thumbnails(col["path"], tuple(info["thumbnails"]), 128)
        for box, uri, p in zip(st.columns(len(uris)), uris, info["thumbnails"]):
            if uri:
                box.image(uri, caption=Path(p).name[:24])
            else:  # an unreadable image: its name only
                box.caption(Path(p).name[:24])

    if info["trainable"]:
        st.subheader("Transfer a model to it")
        from engine.runs.jobs import submit
        reg = cache.registry()
        starts = [r.name for r in reg.list() if r.status == "succeeded"] + ["xrv:densenet121-res224-all", "imagenet",
                                                                              "scratch"]
        with st.form("data.transfer", enter_to_submit=False):
            t1, t2, t3 = st.columns(3)
            init = t1.selectbox("Start from", starts, key="data.init",
                                help="a finished run (a ChestX-ray14 run: its backbone, a new head for these classes), "
                                     "a torchxrayvision model, ImageNet or scratch")
            epochs = t2.number_input("epochs", 1, 500, 10, key="data.epochs")
            size = t3.number_input("image size", 32, 1024, 224, step=32, key="data.size")
            run_name = st.text_input("run name (optional)", key="data.run_name")
            go = guard.action("Start the transfer run", form=True, type="primary")
        if go:
            try:
                name = submit("manifest", {"manifest": col["path"], "init": init, "epochs": int(epochs),
                                           "image_size": int(size)}, run_name.strip() or None, reg)
                st.success(f"Run {name} submitted: follow it on **Train**.")
            except (ValueError, OSError) as exc:
                st.error(f"Not started: {exc}")
    else:
        st.caption(f"Score a run on it: Results → External collections, or `python -m engine evaluate RUN --on "
                   f"{col['path']} --format {col['kind']}`.")
    if guard.action(f"Forget {picked}", key="data.forget", help="removes it from the list; no file is touched"):
        forget(picked)
        st.rerun()
