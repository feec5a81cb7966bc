"""The live run monitor: status, progress, curves and log tail, refreshed by a fragment."""
from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from dashboard import guard, cache, state
from engine.text import md_escape
from engine import RunError, figures
from engine.runs.details import fmt_eta, parent_state, progress_text
from engine.runs.jobs import cancel, capacity, capacity_text, resume, schedule
from engine.runs.record import RunRecord
from engine.runs.registry import observe
from engine.runs.states import ACTIVE, RunStatus

REFRESH_S = 2.0
IDLE_REFRESH_S = 15.0  # nothing queued or running
PICKER = "train.monitor_run"
STATUS_ICON = {RunStatus.QUEUED: ":material/schedule:", "running": ":material/directions_run:",
               "succeeded": ":material/check_circle:",
               "failed": ":material/error:", "cancelled": ":material/stop_circle:", "interrupted": ":material/warning:"}


def run_monitor() -> None:
    """The run picker and the live view, refreshed together so the statuses in the list stay current:
    every 2 s while a run is queued or running, every 15 s otherwise (each refresh redraws the picker,
    which closes its list if it is open; nothing changes fast when nothing runs)."""
    busy = any(r.status in ACTIVE for r in cache.registry().list())
    (_live_fast if busy else _live_slow)()


def _live() -> None:
    reg = cache.registry()  # a poll only reads: the queue advances where runs are submitted and end
    runs = observe(reg)  # liveness only (a trainer that died without a word reads as interrupted)
    if not runs:
        st.info("No runs yet: choose an experiment above and press **Start training**.")
        return
    names = [r.name for r in runs]
    by_name = {r.name: r for r in runs}
    current = st.session_state.get(state.SELECTED_RUN)
    if current in by_name and st.session_state.get(PICKER) != current:
        st.session_state[PICKER] = current  # follow the run just started, or the one picked on another page
    elif st.session_state.get(PICKER) not in by_name:  # nothing picked yet: the run training, not the newest queued
        st.session_state[PICKER] = next((r.name for r in runs if r.status == RunStatus.RUNNING), names[0])
    # plain names: a status in the option text goes stale in the browser (the widget keeps the label
    # it was drawn with); the status is shown, always current, right below
    picked = st.selectbox("Run", names, key=PICKER, on_change=_keep_pick)
    st.session_state[state.SELECTED_RUN] = picked
    _show(reg, by_name[picked])


@st.fragment(run_every=REFRESH_S)
def _live_fast() -> None:
    _live()


@st.fragment(run_every=IDLE_REFRESH_S)
def _live_slow() -> None:
    _live()


def _keep_pick() -> None:
    """The user's pick becomes the selected run before the rerun, so the follow rule above does not
    put the picker back on the previous run (the picker snapped back, issue 23 N1)."""
    st.session_state[state.SELECTED_RUN] = st.session_state[PICKER]


def _show(reg, row: RunRecord) -> None:
    name = row.name
    cfg = row.config
    c1, c2, c3, c4 = st.columns([2, 1, 1, 1])
    c1.markdown(f"### {STATUS_ICON.get(row.status, '')} {name}")
    c1.caption(f"{row.preset} · {cfg['model']['arch']} · init {cfg['model']['init']} · "
               f"{cfg['data']['image_size']} px · device {row.device or '—'}")
    c2.metric("status", row.status)
    c3.metric("best val AUC", "—" if row.best_val_auc is None else f"{row.best_val_auc:.3f}")
    c4.metric("test AUC", "—" if row.test_auc is None else f"{row.test_auc:.3f}")
    if row.error and row.status != "succeeded":
        st.warning(md_escape(row.error.splitlines()[0]))  # the reason; the log has the rest
    _trackers(reg, name)
    b1, b2, _ = st.columns([1, 1, 4])
    if row.status in ACTIVE:
        if guard.action("Cancel", key=f"cancel.{name}", where=b1,
                        help="graceful: the trainer writes a checkpoint first"):
            try:
                st.toast(f"{name}: {cancel(name, reg, by='the dashboard (Train page)')}")
            except RunError as exc:
                st.error(str(exc))
    if row.status in ("cancelled", "interrupted", "failed"):
        if guard.action("Resume", key=f"resume.{name}", where=b2, help="continue from the last checkpoint"):
            try:
                resume(name, reg)
                st.toast(f"{name} queued to resume")
            except RunError as exc:
                st.error(str(exc))
    prog = row.progress
    epochs_total = cfg["train"]["epochs"]
    if row.status == "running" and prog:
        frac, text = progress_text(prog)
        if prog.get("eta_s") is not None:
            text += f", epoch ETA {fmt_eta(prog['eta_s'])}"
        if prog.get("run_eta_s") is not None:
            text += f", run ETA {fmt_eta(prog['run_eta_s'])} (training; then validation and the final test)"
        st.progress(min(max(frac, 0.0), 1.0), text=text)
    elif row.status == RunStatus.QUEUED:
        _queued(reg, row)
    else:
        st.progress(min(row.epochs_done / max(epochs_total, 1), 1.0), text=f"{row.epochs_done}/{epochs_total} epochs")
    steps = pd.DataFrame(reg.steps(name), columns=["step", "epoch", "train_loss", "lr", "time"])
    epochs = pd.DataFrame(reg.epochs(name), columns=["epoch", "train_loss", "val_loss", "lr", "val_auc_mean", "val_auc",
                                                     "seconds", "skipped_images", "time"])
    spe = figures.train_steps_per_epoch(prog, steps)  # x is the training epoch in every phase
    l, r = st.columns(2)
    with l:
        st.markdown("**Loss**")
        cache.chart("loss_chart", steps, epochs[["epoch", "train_loss", "val_loss"]], spe, name=f"{row.name}_loss")
    with r:
        st.markdown("**Validation AUC per class**")
        if epochs.empty:
            st.caption("appears after the first epoch")
        else:
            cache.chart("auc_chart", figures.epoch_aucs(epochs), name=f"{row.name}_val_auc")
    with st.expander("Log (the traceback of a failed run is here)" if row.status == "failed" else "Log"):
        st.code(reg.folder(name).log_tail() or "(no log yet)", language="log", wrap_lines=True)
    st.caption(f"updated {time.strftime('%H:%M:%S')}")


def _trackers(reg, name: str) -> None:
    """Where the run also logs (TensorBoard, MLflow), and any tracker that failed: the run went on."""
    from engine import tracking

    data = tracking.read(reg.folder(name))
    if not data.get("targets"):
        return
    failed = data.get("failed", {})
    ok = [t for t in data["targets"] if t not in failed]
    if ok:
        st.caption("Also logged to " + ", ".join(f"`{md_escape(t)}`" for t in ok))
    for target, reason in failed.items():
        st.warning(f"Tracker `{md_escape(target)}` stopped ({md_escape(reason)}). The run goes on without it; "
                   f"`python -m engine runs export {name} --to ...` sends the run there once it has ended.",
                   icon=":material/cloud_off:")


def _queued(reg, row) -> None:
    """A queued run: its place in the queue, and a way to start it if nothing else runs."""
    runs = reg.list()
    ahead = [r for r in runs if r.status == RunStatus.QUEUED and (r.created, r.name) < (row.created, row.name)]
    running = [r.name for r in runs if r.status == "running"]
    waiting = parent_state(reg, row)
    if waiting:  # a run queued behind its parent (a transfer run, the study's children)
        st.progress(0.0, text=("waiting: " if waiting[0] == "waiting" else "blocked: ") + waiting[1])
        return
    st.progress(0.0, text=f"waiting in the queue: {len(ahead)} queued ahead, {len(running)} running "
                          f"({capacity_text()})" + (f": {', '.join(running)}" if running else ""))
    if len(running) < capacity() and guard.action("Start queued runs", key=f"schedule.{row.name}",
                                                  help="start the oldest queued runs now"):
        started = schedule(reg)
        st.toast(f"started: {', '.join(started)}" if started else "nothing started")
