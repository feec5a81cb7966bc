"""Training (torchvision references' shape): `fit` over `train_one_epoch` and `validate`.

Masked BCE-with-logits, Adam, ReduceLROnPlateau on validation loss, best epoch by validation mean
AUC, early stopping, AMP + channels_last on CUDA, DistributedDataParallel under torchrun. The loop
knows nothing of the registry: it writes files through its RunDir and reports through callbacks.

Crash safety: last.pt is written atomically at every epoch end (after the epoch's record), every
`checkpoint_minutes` within an epoch (after the steps it holds are reported) and on a stop request;
a resume continues from it and replays the same sample order, so no step is lost or counted twice.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, fields
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F

from ..config import ExperimentConfig
from ..data.tasks import build_datasets, data_fingerprint
from ..data.transforms import build_transform
from ..faults import fault_point
from ..metrics import mean_auc, per_class_auc
from ..models.build import build_model
from ..models.checkpoint import load_checkpoint
from ..runs.folder import RunDir
from ..runs.states import RunError
from .callbacks import Callback, Callbacks, CheckpointSaver
from .distributed import (
    any_rank,
    barrier,
    device_text,
    dist_info,
    from_rank0,
    init_distributed,
    shut_down,
    training_device,
)
from .evaluation import autocast, evaluate_split, predict, to_device_batch
from .sampling import epoch_order, make_loader, rank_share, sample_weights
from .signals import StopRequest

log = logging.getLogger("engine.training")
FLUSH_S = 2.0  # report steps and progress at most this often


def masked_bce(logits: torch.Tensor, targets: torch.Tensor, pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean BCE-with-logits over the known (non-NaN) targets; (N, C) each."""
    known = ~torch.isnan(targets)
    loss = F.binary_cross_entropy_with_logits(logits.float(), torch.nan_to_num(targets, nan=0.0),
                                              pos_weight=pos_weight, reduction="none")
    return (loss * known).sum() / known.sum().clamp(min=1)


@dataclass
class TrainState:
    """Where the loop stands; saved flat inside every checkpoint."""
    epoch: int = 0                 # epochs completed
    step: int = 0                  # optimizer steps, all epochs
    step_in_epoch: int = 0         # batches of the current epoch consumed (skipped ones included)
    loss_sum: float = 0.0
    loss_n: int = 0
    skipped: int = 0               # unreadable images this epoch
    best_val_auc: float = -1.0
    best_epoch: int | None = None
    since_best: int = 0


@dataclass
class Session:
    """Everything one run trains with (built once by `start_session`)."""
    cfg: ExperimentConfig
    run_dir: RunDir
    callbacks: Callbacks
    stop: StopRequest
    rank: int
    world: int
    device: torch.device
    datasets: dict
    train_ds: object
    val_ds: object
    classes: list
    model: torch.nn.Module
    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler
    pos_weight: torch.Tensor | None
    weights: np.ndarray | None
    last_checkpoint_time: float = 0.0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @cached_property
    def saver(self) -> CheckpointSaver:
        return CheckpointSaver(self.run_dir, self.callbacks)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train_ds) / (self.cfg.train.batch_size * self.world))

    def checkpoint(self, state: TrainState) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
                "config": self.cfg.to_dict(), "class_names": self.classes, "arch": self.cfg.model.arch,
                "run": self.run_dir.name, "torch_rng": torch.get_rng_state(), **asdict(state)}


def _optimisation(model, cfg: ExperimentConfig, device):
    o = cfg.optim
    optimizer = torch.optim.Adam(model.parameters(), lr=o.lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=o.plateau_factor,
                                                           patience=o.plateau_patience, min_lr=o.min_lr)
    use_scaler = device.type == "cuda" and cfg.train.amp and not torch.cuda.is_bf16_supported()
    return optimizer, scheduler, torch.amp.GradScaler("cuda", enabled=use_scaler)


def _pos_weight(train_ds, device) -> torch.Tensor:
    t = np.nan_to_num(train_ds.targets, nan=0.0)
    pos = t.sum(0)
    return torch.tensor(np.where(pos > 0, (len(t) - pos) / np.maximum(pos, 1), 1.0), dtype=torch.float32, device=device)


def _check_own(ckpt: dict, run_dir: RunDir, cfg: ExperimentConfig) -> None:
    """Resume only from this run's own checkpoint: same run name, task, architecture and classes."""
    rec = ckpt.get("config", {})
    found = {"run": ckpt.get("run"), "task": rec.get("data", {}).get("task"), "arch": rec.get("model", {}).get("arch")}
    want = {"run": run_dir.name, "task": cfg.data.task, "arch": cfg.model.arch}
    bad = [f"{k} {found[k]!r} (this run: {want[k]!r})" for k in want if found[k] is not None and found[k] != want[k]]
    if bad:
        raise RunError(f"{run_dir.last} belongs to another run: {', '.join(bad)}; it is not resumed from")


def start_session(cfg: ExperimentConfig, run_dir: RunDir, callbacks, stop: StopRequest, resume: bool):
    """Data, model and optimiser, restored from last.pt when resuming: (Session, TrainState)."""
    t, d = cfg.train, cfg.data
    fault_point("startup")
    rank, world, local = init_distributed(t.device)
    device = training_device(t.device, world, local)
    torch.manual_seed(t.seed + rank)
    datasets = build_datasets(cfg)
    train_ds = datasets["train"].with_transform(build_transform(True, d.image_size, t.augment, normalise=False))
    val_ds = datasets["val"].with_transform(build_transform(False, d.image_size, normalise=False))
    classes = list(train_ds.class_names)
    ckpt = run_dir.load_last() if resume else None
    if ckpt is not None:
        _check_own(ckpt, run_dir, cfg)
    model = build_model(cfg.model.arch, len(classes), "scratch" if ckpt else cfg.model.init)
    if ckpt:
        model.load_state_dict(ckpt["model"])
    model.to(device)
    if device.type == "cuda" and t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer, scheduler, scaler = _optimisation(model, cfg, device)
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[local] if device.type == "cuda" else None)
    s = Session(cfg, run_dir, callbacks, stop, rank, world, device, datasets,
                train_ds, val_ds, classes, model, net, optimizer, scheduler, scaler,
                _pos_weight(train_ds, device) if t.class_weighted_loss else None,
                sample_weights(train_ds.targets) if t.oversample else None, time.time())
    state = _restore(s, ckpt) if ckpt else TrainState()
    if s.main:
        for name in run_dir.clean_temporaries():
            log.warning("removed %s, a temporary file left by a killed trainer", name)
        run_dir.settle_best(state.best_epoch)
        s.callbacks.on_start({"device": device_text(device, world), "resumed": ckpt is not None,
                              "data_fingerprint": data_fingerprint(datasets),
                              "epoch": state.epoch, "step": state.step, "classes": classes,
                              "images": {k: len(v) for k, v in datasets.items()}})
        log.info("run %s: %s on %s, %d/%d/%d images (train/val/test), classes %s%s", run_dir.name, cfg.model.arch,
                 device_text(device, world), len(train_ds), len(val_ds), len(datasets["test"]), classes,
                 f", resumed in epoch {state.epoch + 1}/{cfg.train.epochs} after step {state.step_in_epoch}"
                 if ckpt else "")
    return s, state


def _restore(s: Session, ckpt: dict) -> TrainState:
    s.optimizer.load_state_dict(ckpt["optimizer"])
    s.scheduler.load_state_dict(ckpt["scheduler"])
    if ckpt.get("scaler"):
        s.scaler.load_state_dict(ckpt["scaler"])
    if "torch_rng" in ckpt:
        torch.set_rng_state(ckpt["torch_rng"])
    return TrainState(**{f.name: ckpt[f.name] for f in fields(TrainState) if f.name in ckpt})


def train_step(s: Session, batch: dict, state: TrainState) -> float | None:
    """One optimiser step on a batch; None when every image of the batch was unreadable."""
    state.step_in_epoch += 1
    state.skipped += len(batch["errors"])
    for e in batch["errors"]:
        log.warning("skipped unreadable image: %s", e)
    if batch["images"] is None:
        return None
    x, y = to_device_batch(batch, s.device, s.cfg.train.channels_last)
    with autocast(s.device, s.cfg.train.amp):
        logits = s.net(x)
    loss = masked_bce(logits, y, s.pos_weight)
    s.optimizer.zero_grad(set_to_none=True)
    s.scaler.scale(loss).backward()
    s.scaler.step(s.optimizer)
    s.scaler.update()
    value = float(loss.detach())
    state.step += 1
    state.loss_sum += value
    state.loss_n += 1
    return value


def _train_progress(s: Session, state: TrainState, started: float, first_step: int) -> dict:
    spe, epochs = s.steps_per_epoch, s.cfg.train.epochs
    per_step = (time.time() - started) / max(state.step_in_epoch - first_step, 1)
    left = spe - state.step_in_epoch
    return {"phase": "train", "epoch": state.epoch + 1, "epochs": epochs, "step": state.step_in_epoch, "steps": spe,
            "eta_s": per_step * left, "run_eta_s": per_step * (left + spe * (epochs - state.epoch - 1))}


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def train_one_epoch(s: Session, state: TrainState) -> bool:
    """Train the rest of the current epoch; False if a stop was requested (last.pt then written)."""
    t = s.cfg.train
    order = epoch_order(len(s.train_ds), seed=t.seed, epoch=state.epoch, reshuffle=t.reshuffle, weights=s.weights)
    first = state.step_in_epoch
    s.train_ds.augment_seed = epoch_seed(t.seed, state.epoch)  # per image and epoch: reproducible on resume
    loader = make_loader(s.train_ds, rank_share(order, s.rank, s.world)[first * t.batch_size:], t.batch_size,
                         s.cfg.data.num_workers, s.device, seed=t.seed + state.epoch)
    s.net.train()
    started = last_report = time.time()
    pending: list = []
    for batch in loader:
        if any_rank(s.stop.requested, s.world):
            break
        loss = train_step(s, batch, state)
        fault_point("step", s.stop, state.step)
        if not s.main:
            continue
        if loss is not None:
            pending.append((state.step, state.epoch, loss, s.optimizer.param_groups[0]["lr"]))
        now = time.time()
        if now - last_report > FLUSH_S or state.step_in_epoch == s.steps_per_epoch:
            if pending:
                s.callbacks.on_steps(pending)
            pending, last_report = [], now
            s.callbacks.on_progress(_train_progress(s, state, started, first))
        if t.checkpoint_minutes and now - s.last_checkpoint_time > 60 * t.checkpoint_minutes:
            if pending:
                s.callbacks.on_steps(pending)  # the steps a checkpoint holds are reported first
            pending = []
            s.saver.save_last(s.checkpoint(state))
            s.last_checkpoint_time = now
    if s.main and pending:
        s.callbacks.on_steps(pending)
    if any_rank(s.stop.requested, s.world):
        return False
    if state.loss_n == 0:  # nothing was learnt: a run must not "succeed" on unreadable data
        raise ValueError(f"epoch {state.epoch + 1}: no readable image in the train split ({state.skipped} unreadable "
                         f"of {len(s.train_ds)}); check the data root")
    return True


def validate(s: Session, state: TrainState) -> dict:
    """Validation loss, mean AUC and per-class AUCs (computed on rank 0, shared with every rank)."""
    t = s.cfg.train
    result, aucs = torch.tensor([0.0, -1.0]), np.full(len(s.classes), np.nan)
    if s.main:
        def progress(k, n):
            s.callbacks.on_progress({"phase": "validate", "epoch": state.epoch + 1, "epochs": t.epochs, "step": k,
                                     "steps": n, "eta_s": None})
            fault_point("validate", s.stop, state.epoch + 1 if k == 1 else 0)  # a pause: at epoch N's first batch

        pred = predict(s.model, s.val_ds, batch_size=max(t.batch_size, 32), workers=s.cfg.data.num_workers,
                       device=s.device, amp=t.amp, channels_last=t.channels_last, progress=progress)
        if len(pred["indices"]) == 0:
            raise ValueError(f"no readable image in the validation split ({len(pred['errors'])} unreadable); "
                             "check the data root")
        aucs = per_class_auc(pred["targets"], pred["probs"])
        val_mean = mean_auc(aucs)
        result = torch.tensor([pred["loss"], val_mean if np.isfinite(val_mean) else -1.0])
    result = from_rank0(result, s.world)
    return {"val_loss": float(result[0]), "val_mean": float(result[1]), "aucs": aucs}


def end_epoch(s: Session, state: TrainState, val: dict, started: float) -> None:
    """Schedule the learning rate, keep the best, and hand the writes to the CheckpointSaver (which
    owns their order)."""
    train_loss = state.loss_sum / state.loss_n
    s.scheduler.step(val["val_loss"])
    lr = s.optimizer.param_groups[0]["lr"]
    improved = val["val_mean"] >= 0 and val["val_mean"] > state.best_val_auc
    state.epoch, state.step_in_epoch, state.loss_sum, state.loss_n = state.epoch + 1, 0, 0.0, 0
    if improved:
        state.best_val_auc, state.best_epoch, state.since_best = val["val_mean"], state.epoch, 0
    else:
        state.since_best += 1
    if s.main:
        s.saver.epoch_end(s.checkpoint(state), {
            "epoch": state.epoch, "train_loss": train_loss, "val_loss": val["val_loss"], "lr": lr,
            "val_auc_mean": val["val_mean"] if val["val_mean"] >= 0 else None,
            "val_auc": {c: (float(a) if np.isfinite(a) else None) for c, a in zip(s.classes, val["aucs"])},
            "seconds": time.time() - started, "skipped_images": state.skipped, "best_epoch": state.best_epoch,
            "best_val_auc": state.best_val_auc if state.best_val_auc >= 0 else None}, improved)
        s.last_checkpoint_time = time.time()
        log.info("epoch %d/%d: train loss %.4f, val loss %.4f, val mean AUC %.4f, lr %.2e%s", state.epoch,
                 s.cfg.train.epochs, train_loss, val["val_loss"], val["val_mean"], lr, " (best)" if improved else "")
    state.skipped = 0


def final_test(s: Session, state: TrainState) -> dict:
    """Evaluate the best checkpoint on val and test: predictions CSVs and metrics.json."""
    best = s.run_dir.best_checkpoint()
    s.model.load_state_dict(load_checkpoint(best)["model"])
    report = {"best_epoch": state.best_epoch, "checkpoint": best.name,
              "train_images": len(s.datasets["train"])}  # the corrected resampled t-test of study repeats needs it
    for split in ("val", "test"):
        def progress(k, n, split=split):
            if s.stop.requested:  # a cancel is honoured here too: resuming redoes only this evaluation
                raise _StopInFinal
            s.callbacks.on_progress({"phase": f"final {split}", "epoch": state.epoch, "epochs": s.cfg.train.epochs,
                                     "step": k, "steps": n, "eta_s": None})
            fault_point("final")

        report[split], frame = evaluate_split(s.model, s.datasets[split], s.cfg, s.device, split, progress=progress)
        if report[split]["images"] == 0:
            raise ValueError(f"no readable image in the {split} split ({report[split]['skipped']} unreadable)")
        s.run_dir.write_predictions(split, frame)
    s.run_dir.write_metrics(report)
    log.info("done: test mean AUC %.4f (best epoch %s)", report["test"]["mean_auc"], state.best_epoch)
    return report


class _StopInFinal(Exception):
    """A stop requested during the final evaluation (raised from its progress callback)."""


def _cancelled(s: Session, state: TrainState, final: bool = False) -> str:
    if s.main:
        s.saver.save_last(s.checkpoint(state))
        by = s.run_dir.take_cancel_request()
        reason = f"cancelled from {by}" if by else s.stop.describe()
        where = ("during the final evaluation (every epoch trained; resuming redoes only the evaluation)" if final
                 else f"in epoch {state.epoch + 1}/{s.cfg.train.epochs} after step {state.step_in_epoch}")
        log.info("%s %s; last.pt written; continue with: python -m engine train --resume %s", reason, where,
                 s.run_dir.name)
        s.callbacks.on_end("cancelled", {"reason": f"{reason} {where}", "epoch": state.epoch, "step": state.step})
    return "cancelled"


def fit(cfg: ExperimentConfig, run_dir: RunDir, *, callbacks: list[Callback] = (), resume: bool = False,
        stop: StopRequest | None = None) -> str:
    """Train to the end, or until `stop` is requested: "succeeded" or "cancelled". A failure, start-up
    included, goes to the callbacks' on_exception and is re-raised. `cfg.model.init` is scratch,
    imagenet or a checkpoint path; resume continues from last.pt."""
    listeners = Callbacks(callbacks if dist_info()[0] == 0 else ())
    try:
        s, state = start_session(cfg, run_dir, listeners, stop or StopRequest(), resume)
    except BaseException as exc:
        listeners.on_exception(exc)
        raise
    try:
        while state.epoch < cfg.train.epochs:
            started = time.time()
            if not train_one_epoch(s, state):
                return _cancelled(s, state)
            end_epoch(s, state, validate(s, state), started)
            if cfg.train.early_stopping and state.since_best >= cfg.train.early_stopping:
                log.info("early stopping: no better val mean AUC for %d epochs", state.since_best)
                break
        outcome = "succeeded"
        if s.main:
            try:
                s.callbacks.on_end("succeeded", final_test(s, state))
            except _StopInFinal:
                outcome = _cancelled(s, state, final=True)
        barrier(s.world)
        return outcome
    except BaseException as exc:
        s.callbacks.on_exception(exc)
        raise
    finally:
        shut_down(s.world)
