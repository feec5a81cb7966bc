"""Diagnose: one chest X-ray through a run's model: class probabilities and the CAM heatmap."""
import pandas as pd
import streamlit as st

from dashboard import cache, state
from dashboard.ui.pickers import pick_run, runs_with_checkpoint
from engine import CheckpointError, best_checkpoint, overlay_heatmap
from engine.text import human_bytes, md_escape
from engine.data.images import COLOUR_LIMIT, ImageReadError, read_xray
from engine.constants import CAM_METHODS
from engine.explain.gallery import coarse_grid_note
from engine.explain.overlay import COLORMAPS

st.title("Diagnose")
st.caption("Research use only: not a medical device.")
reg = cache.registry()
names = runs_with_checkpoint(reg)
if not names:
    st.info("No trained model yet: train a run first (Train page or `python -m engine train`).")
    st.stop()
run = pick_run(names, "diagnose.run", "Model (run)", reg=reg)

limit_mb = st.get_option("server.maxUploadSize")
source = st.radio("Image", ["Upload", "From a dataset"], horizontal=True, key="diagnose.source")
gray, label, picked_path = None, None, None
if source == "Upload":
    up = st.file_uploader(f"PNG, JPEG or DICOM chest X-ray (up to {limit_mb} MB)",
                          type=["png", "jpg", "jpeg", "dcm", "dicom"],
                          key="diagnose.upload")
    if up is not None:
        data = up.getvalue()
        if len(data) > limit_mb * 1024 * 1024:
            st.error(f"{up.name} is {human_bytes(len(data))}, over the {limit_mb} MB limit.")
        else:
            try:
                gray, (w0, h0), score = cache.decoded_upload(data, up.name)
                label = up.name + (f" (shown at {gray.shape[1]}×{gray.shape[0]} of {w0}×{h0} px)"
                                   if (w0, h0) != gray.shape[::-1] else "")
            except ImageReadError as exc:
                st.error(f"{md_escape(up.name)}: {md_escape(exc.reason)}.")
            else:
                if score > COLOUR_LIMIT:
                    st.warning(f"{up.name} is a colour image; chest X-rays are grayscale. The model's output on it "
                               "is meaningless.")
else:
    imgs = cache.dataset_images(st.session_state[state.NIH_ROOT], st.session_state[state.COVID_ROOT])
    if imgs.empty:
        st.info("Set a data root in the sidebar to pick images from a dataset.")
    else:
        pick = st.selectbox("Dataset image", imgs.index, key="diagnose.pick",
                            format_func=lambda i: f"{imgs.at[i, 'dataset']} · {imgs.at[i, 'image']} · {imgs.at[i, 'findings']}")
        try:
            gray, label = read_xray(imgs.at[pick, "path"]), f"{imgs.at[pick, 'image']} ({imgs.at[pick, 'findings']})"
            picked_path = imgs.at[pick, "path"]
        except ImageReadError as exc:
            st.error(str(exc))

def _own_film(run: str, gray, path) -> None:
    """Say so when the film is one of the run's own train, val or test images (issue 37, N6): a file
    picked from a dataset at once, an upload by its pixels on request (the first check of a run
    hashes its images; cached after that)."""
    import hashlib
    import json

    from engine.data.membership import by_path, by_pixels, caveat

    frame = cache.run_images(json.dumps(reg.require(run).config, sort_keys=True))
    if isinstance(frame, str):
        st.caption(f"Whether this film is one of {md_escape(run)}'s own images cannot be checked here: "
                   f"{md_escape(frame)}")
        return
    if path is not None:
        match = by_path(frame, path)
    else:
        key = f"diagnose.own.{run}.{hashlib.sha1(gray.tobytes()).hexdigest()[:16]}"
        if key not in st.session_state:
            if not st.button(f"Is this one of {run}'s own films?", key="diagnose.check_own",
                             help=f"compares it with the run's {len(frame):,} train, validation and test images by "
                                  "perceptual hash and pixels (the first check reads them all; cached after that)"):
                return
            with st.spinner(f"Comparing with {len(frame):,} images…"):
                st.session_state[key] = by_pixels(frame, gray) or {}
        match = st.session_state[key] or None
        if not match:
            st.caption(f"Not one of {md_escape(run)}'s {len(frame):,} train, validation or test images.")
    note = caveat(match, run)
    if note:
        st.warning(md_escape(note), icon=":material/history:")


if gray is not None:
    try:
        model = cache.loaded_model(best_checkpoint(reg.run_dir(run)))
    except (CheckpointError, FileNotFoundError) as exc:
        st.error(f"Cannot load the model of {run}: {exc}")
        st.stop()
    _own_film(run, gray, picked_path)
    probs, _ = model.predict(gray, classes=[])
    table = pd.DataFrame({"class": model.class_names, "probability": probs}).sort_values("probability", ascending=False)
    left, right = st.columns([2, 3])
    with left:
        st.markdown(f"**{md_escape(label)}** · {gray.shape[1]}×{gray.shape[0]} px")
        cache.chart("probability_chart", table)
    with right:
        c1, c2, c3, c4 = st.columns(4)
        cls = c1.selectbox("CAM for class", list(table["class"]), key="diagnose.class")
        method = c2.selectbox("Method", CAM_METHODS, key="diagnose.method",
                              help="cam: the study's CAM (one forward pass)")
        cmap = c3.selectbox("Colormap", list(COLORMAPS), key="diagnose.cmap")
        alpha = c4.slider("Opacity", 0.0, 1.0, 0.45, 0.05, key="diagnose.alpha")
        if coarse_grid_note(model.image_size):
            st.warning(coarse_grid_note(model.image_size))
        k = model.class_names.index(cls)
        _, maps = model.predict(gray, method=method, classes=[k])
        a, b = st.columns(2)
        a.image(gray, caption="original", width="stretch", clamp=True)
        b.image(overlay_heatmap(gray, maps[0], alpha=alpha, colormap=cmap),
                caption=f"{method} · {cls} · p={probs[k]:.3f}",
                width="stretch")
