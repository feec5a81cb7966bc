"""A run in MLflow, through MlflowClient (no global active run, so the dashboard can export while
another export or a trainer logs elsewhere).

- experiment: $MLFLOW_EXPERIMENT_NAME, else "cxr-lab";
- the MLflow run is found by its tag `cxr.run` (the lab's run name): a resume, or an export of a run
  logged before, updates that run instead of making another; metric points already there are not
  logged again, params already there are kept;
- params: the flattened settings; tags: task, init, architecture, preset, code version, data fingerprint;
- metrics: `train_loss`, `lr` by step; `val_loss`, `val_auc_mean`, `val_auc/<class>`, `train_loss_epoch`
  by epoch; at the end `test_auc_mean`, `test_auc/<class>` with their bounds, the same for val;
- artifacts at the end: metrics.json, the predictions, the model card, the figures as SVG (figures/),
  and the ONNX export as an MLflow model (model/, written by mlflow.onnx) when the run was exported.
"""
from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from pathlib import Path

from .content import RunInfo, epoch_scalars, final_scalars

log = logging.getLogger("engine.tracking")
EXPERIMENT = "cxr-lab"
RUN_TAG = "cxr.run"
BATCH = 900          # MLflow takes at most 1000 metrics per log_batch
FLUSH_S = 15.0       # live step metrics are sent at most this often (and at every epoch end)
STATUS = {"succeeded": "FINISHED", "cancelled": "KILLED", "failed": "FAILED", "interrupted": "KILLED"}


def quiet_mlflow_http() -> None:
    """An MLflow server that is down must cost the run seconds, not minutes of retries (MLflow's
    defaults: 7 retries with backoff, 120 s timeout). MLflow's own usage telemetry stays off: the lab
    sends nothing anywhere it was not told to. Explicit settings in the environment win."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


def metric_key(name: str) -> str:
    """MLflow allows letters, digits and _ - . space : / in a key; anything else becomes _."""
    return re.sub(r"[^\w\-. :/]", "_", name)


def _now_ms() -> int:
    return int(time.time() * 1000)


class MlflowTracker:
    def __init__(self, uri: str, run: str):
        quiet_mlflow_http()
        if uri.startswith("file:"):  # named by the user: MLflow 3 keeps its file store only on request
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as exc:
            raise RuntimeError("MLflow logging needs the mlflow package: pip install -r requirements.txt") from exc
        self.uri, self.run = uri, run
        self.client = MlflowClient(tracking_uri=uri)
        self.run_id: str | None = None
        self.info: RunInfo | None = None
        self.existing = False
        self._seen: dict[str, set[int]] = {}
        self._pending: list = []
        self._last_flush = time.time()
        self.counts = {"params": 0, "metrics": 0, "artifacts": 0}

    @property
    def where(self) -> str:
        return f"{self.uri} (run {self.run_id})" if self.run_id else self.uri

    # -- the run --------------------------------------------------------------------------------
    def _experiment(self) -> str:
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT
        exp = self.client.get_experiment_by_name(name)
        return exp.experiment_id if exp is not None else self.client.create_experiment(name)

    def begin(self, info: RunInfo, fresh: bool = False) -> None:
        """Find the MLflow run tagged with this run's name, or create it; log settings and tags."""
        from mlflow.entities import Param, RunTag

        self.info = info
        exp = self._experiment()
        name = info.name.replace("'", "")
        found = self.client.search_runs([exp], filter_string=f"tags.`{RUN_TAG}` = '{name}'", max_results=1)
        if found:
            run = found[0]
            self.run_id, self.existing = run.info.run_id, True
            have = dict(run.data.params)
            if run.info.status != "RUNNING":
                self.client.update_run(self.run_id, status="RUNNING")
        else:
            run = self.client.create_run(exp, run_name=info.name, tags={RUN_TAG: info.name},
                                         start_time=int(info.started * 1000) if info.started else None)
            self.run_id, have = run.info.run_id, {}
        params = [Param(k, v[:6000]) for k, v in info.params().items() if k not in have]
        tags = [RunTag(k, v) for k, v in info.tags().items()]
        for i in range(0, max(len(params), 1), 100):
            self.client.log_batch(self.run_id, params=params[i:i + 100], tags=tags if i == 0 else [],
                                  synchronous=True)
        self.counts["params"] = len(have) + len(params)

    def _known_steps(self, key: str) -> set[int]:
        if key not in self._seen:
            self._seen[key] = ({m.step for m in self.client.get_metric_history(self.run_id, key)}
                               if self.existing else set())
        return self._seen[key]

    def _metric(self, key: str, value: float, step: int, ts: int | None = None) -> None:
        from mlflow.entities import Metric

        key = metric_key(key)
        seen = self._known_steps(key)
        if step in seen:  # logged live, or by an earlier export: not again
            return
        seen.add(step)
        self._pending.append(Metric(key, float(value), ts or _now_ms(), int(step)))
        if len(self._pending) >= BATCH:
            self.flush()

    def flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:BATCH], self._pending[BATCH:]
            self.client.log_batch(self.run_id, metrics=batch, synchronous=True)
            self.counts["metrics"] += len(batch)
        self._last_flush = time.time()

    # -- the history ----------------------------------------------------------------------------
    def steps(self, rows) -> None:
        for row in rows:  # (step, epoch, loss, lr[, time]): an export keeps when each step was taken
            step, loss, lr = row[0], row[2], row[3]
            ts = int(row[4] * 1000) if len(row) > 4 and row[4] else None
            self._metric("train_loss", loss, step, ts)
            self._metric("lr", lr, step, ts)
        if time.time() - self._last_flush > FLUSH_S:
            self.flush()

    def epoch(self, record: dict) -> None:
        ts = int(record["time"] * 1000) if record.get("time") else None
        for k, v in epoch_scalars(record).items():
            self._metric(k, v, int(record["epoch"]), ts)
        self.flush()

    # -- the end --------------------------------------------------------------------------------
    def finish(self, status: str, final) -> None:
        if final is not None:
            for k, v in final_scalars(final.metrics).items():
                self._metric(k, v, 0)
        self.flush()
        if final is not None:
            self._artifacts(final)
        self.client.set_tag(self.run_id, "cxr.status", status)
        end = int(self.info.finished * 1000) if self.info and self.info.finished else None
        self.client.set_terminated(self.run_id, status=STATUS.get(status, "FINISHED"), end_time=end)

    def _artifacts(self, final) -> None:
        from ..figures import export

        for _name, path in final.files:
            self.client.log_artifact(self.run_id, str(path), artifact_path="run")
            self.counts["artifacts"] += 1
        with tempfile.TemporaryDirectory(prefix="cxr-mlflow-") as tmp:
            figs = Path(tmp) / "figures"
            figs.mkdir()
            for name, spec in final.figures.items():
                (figs / f"{name}.svg").write_bytes(export(spec, "svg"))
            if final.figures:
                self.client.log_artifacts(self.run_id, str(figs), artifact_path="figures")
                self.counts["artifacts"] += len(final.figures)
            if final.onnx is not None:
                import mlflow.onnx
                import onnx

                model_dir = Path(tmp) / "model"
                mlflow.onnx.save_model(onnx.load(str(final.onnx)), str(model_dir), save_as_external_data=False)
                self.client.log_artifacts(self.run_id, str(model_dir), artifact_path="model")
                self.counts["artifacts"] += 1

    def close(self) -> None:
        if self._pending and self.run_id:
            try:
                self.flush()
            except Exception as exc:  # closing never raises; what was lost is said
                log.warning("MLflow: %d metric points not sent (%s)", len(self._pending), str(exc)[:200])
                self._pending = []

    def summary(self) -> dict:
        return {"mlflow": self.uri, "run_id": self.run_id, "updated": self.existing, **self.counts}
