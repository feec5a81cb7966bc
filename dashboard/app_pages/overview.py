"""Overview: datasets found and the compute device."""
import pandas as pd
import streamlit as st

from dashboard import cache, state
from engine.devices import describe_device

st.title("Chest X-ray transfer-learning lab")
st.caption("Reproducing *Transfer learning for COVID-19 detection* (ChestX-ray14 → COVID-19) with real data.")

st.subheader("Compute")
st.write(describe_device())

st.subheader("Datasets")
nih_root, covid_root = st.session_state[state.NIH_ROOT], st.session_state[state.COVID_ROOT]
if not nih_root and not covid_root:
    st.info("Set the data roots in the sidebar (or the CXR_NIH_ROOT / CXR_COVID_ROOT environment variables).")
else:
    summary = cache.data_summary(nih_root, covid_root)
    cols = st.columns(2)
    for col, (name, title) in zip(cols, (("nih", "NIH ChestX-ray14"), ("covid", "COVID-19 collection"))):
        with col:
            st.markdown(f"**{title}**")
            s = summary.get(name)
            if s is None:
                st.caption("not configured")
            elif "error" in s:
                st.error(s["error"])
            else:
                a, b, c = st.columns(3)
                a.metric("images present", f"{s['present']:,}")
                b.metric("missing files", f"{s['missing']:,}")
                c.metric("patients in 2 splits", s["patient_overlap"])
                st.dataframe(pd.DataFrame({"label": list(s["labels"]), "images": list(s["labels"].values())}),
                             hide_index=True, width="stretch")
                st.dataframe(pd.DataFrame(s["splits"]).T.rename_axis("split").reset_index(), hide_index=True,
                             width="stretch")
