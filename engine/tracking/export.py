"""Export of runs made before or without logging: `python -m engine runs export RUN --to tensorboard DIR`
or `--to mlflow URI`. The tracker is given exactly what live logging gives it, replayed from the run's
record (its registry row, step and epoch history, and folder). Exporting twice does not duplicate: the
TensorBoard folder of the run is rewritten, the MLflow run is found by its `cxr.run` tag and updated."""
from __future__ import annotations

from ..runs.states import ACTIVE, RunError
from . import make_tracker, normalise
from .content import RunInfo, final_content, history


def export_run(reg, name: str, target: str) -> dict:
    """Replay run `name` into the tracker of `target` (tensorboard:DIR or mlflow:URI); returns what
    was written. A run still training is refused (its live logging, if any, is the place)."""
    (target,) = normalise([target])
    row = reg.require(name)
    if row.status in ACTIVE:
        raise RunError(f"run {name!r} is {row.status}: export it when it has ended (or log it live with --log-to)")
    steps, epochs = history(reg, name)
    final = final_content(reg, name) if row.status == "succeeded" else None
    tracker = make_tracker(target, name)
    try:
        tracker.begin(RunInfo.of(row), fresh=True)
        tracker.steps(steps)
        for record in epochs:
            tracker.epoch(record)
        tracker.finish(row.status, final)
    finally:
        tracker.close()
    return {"run": name, "target": target, "status": row.status, "steps": len(steps), "epochs": len(epochs),
            "cams": len(final.cams) if final else 0, **tracker.summary()}
