"""Train: start one of the study's experiments and watch it live."""
import streamlit as st

from dashboard import cache, state
from dashboard.ui import monitor
from dashboard.ui.forms import training_form
from engine import PRESETS, ConfigError, RunError
from engine.runs.jobs import capacity, submit

st.title("Train")
st.caption(f"Runs are separate processes recorded in the registry: they continue when this tab closes. "
           f"At most {capacity()} run(s) at a time; others wait in the queue.")

preset = st.selectbox("Experiment (preset)", list(PRESETS), key="train.preset",
                      help="Table 1: nih-*; Table 2: covid-*; section 5.3: combined15")
overrides, name, errors = training_form(preset, {"nih_root": st.session_state[state.NIH_ROOT],
                                                 "covid_root": st.session_state[state.COVID_ROOT]})
if errors:
    for e in errors:
        st.error(e)
elif overrides is not None:
    try:
        run = submit(preset, overrides, name, cache.registry())
    except (ConfigError, FileNotFoundError, ValueError, RunError) as exc:
        st.error(f"Not started: {exc}")
    else:
        st.session_state[state.SELECTED_RUN] = run
        st.success(f"Run **{run}** submitted.")

st.divider()
monitor.run_monitor()
