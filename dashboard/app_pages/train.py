"""Train: start one of the study's experiments and watch it live."""
import streamlit as st

from dashboard import cache, state
from dashboard.ui import monitor
from dashboard.ui.forms import log_targets, set_field_value, training_form
from engine.text import md_escape
from engine import PRESETS, ConfigError, RunError, from_preset
from engine.models import xrv
from engine.runs.jobs import ParentArchMismatch, capacity_text, submit

st.title("Train")
st.caption(f"Runs are separate processes recorded in the registry: they continue when this tab closes. "
           f"{capacity_text()[0].upper() + capacity_text()[1:]}; others wait in the queue.")

ROOT_FIELDS = {"nih": "NIH ChestX-ray14 root", "covid": "COVID-19 collection root"}
preset = st.selectbox("Experiment (preset)", list(PRESETS), key="train.preset",
                      help="Table 1: nih-*; Table 2: covid-*; section 5.3: combined15")
reg = cache.registry()
source = st.session_state.pop("train.prefilled_from", None)
if source:
    st.info(f"The form holds the settings of **{md_escape(source)}** (preset {md_escape(preset)}); change what you "
            "like and press Start training. The new run gets its own name.")
overrides, name, errors = training_form(preset, {"nih_root": st.session_state[state.NIH_ROOT],
                                                 "covid_root": st.session_state[state.COVID_ROOT]}, reg.list())


def _imagenet_missing(overrides: dict) -> str | None:
    cfg = from_preset(preset, overrides)
    if cfg.model.init != "imagenet":
        return None
    from engine.models.build import imagenet_weights_missing

    with st.spinner(f"Looking for the ImageNet weights of {cfg.model.arch}…"):
        missing = imagenet_weights_missing(cfg.model.arch, fetch=True)
    return missing and f"the ImageNet weights of {cfg.model.arch} are missing here: {missing}"


if errors:
    st.error("Not started:\n\n" + "\n".join(f"- {e}" for e in errors))
elif overrides is not None:  # the form's button is a guard.action: pressed and authorised
    from engine.data.roots import DataRootError

    try:
        missing = _imagenet_missing(overrides)
        if missing:
            st.error(f"Not started: {md_escape(missing)}.")
            st.button("Use init = scratch instead", key="train.use_scratch", on_click=set_field_value,
                      args=("init", "scratch"), help="the same preset, trained from scratch (then press Start again)")
        else:
            with st.spinner("Looking for torchxrayvision's weights…" if xrv.is_xrv(overrides.get("init")) else
                            "Checking the data and recording the run…"):
                run = submit(preset, overrides, name, reg, log_to=log_targets()[0])
            st.session_state[state.SELECTED_RUN] = run
            st.success(f"Run **{run}** submitted.")
    except xrv.XrvUnavailable as exc:
        st.error(f"Not started: {md_escape(exc)}.")
        st.button("Use init = scratch instead", key="train.use_scratch_xrv", on_click=set_field_value,
                  args=("init", "scratch"), help="the same preset, trained from scratch (then press Start again)")
    except DataRootError as exc:
        field = ROOT_FIELDS[exc.kind]
        st.error(f"Not started: **{field}** " + ("is empty: set it in the sidebar." if str(exc).startswith("no ")
                                                 else f"is not a folder here ({md_escape(exc)})."))
    except ParentArchMismatch as exc:
        st.error(f"Not started: {md_escape(exc)}")
        st.button(f"Use arch = {exc.arch} instead", key="train.use_parent_arch", on_click=set_field_value,
                  args=("arch", exc.arch), help="the architecture of the chosen run (then press Start again)")
    except (ConfigError, FileNotFoundError, ValueError, RunError) as exc:
        st.error(f"Not started: {md_escape(exc)}")

st.divider()
monitor.run_monitor()
