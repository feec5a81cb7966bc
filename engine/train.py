"""Training and evaluation (torchvision `references/classification/train.py` shape).

`fit(cfg, run, registry)` trains one run to the end or until cancelled: masked BCE-with-logits,
Adam, ReduceLROnPlateau on validation loss, best epoch by validation mean AUC, early stopping,
AMP + channels_last on CUDA, DistributedDataParallel under torchrun (nccl on GPUs, gloo on CPU).

Crash safety: `last.pt` is written atomically at every epoch end (after the epoch's metrics row),
every `checkpoint_minutes` within an epoch, and on SIGTERM; `--resume` continues from it, replaying
the same sample order and dropping metrics recorded after it, so no epoch is lost or counted twice.
"""
from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from . import signals
from .checkpoint import load_checkpoint, save_checkpoint
from .config import ExperimentConfig
from .data import XrayDataset, build_transform, collate
from .data.transforms import normalise_batch
from .devices import pick_device
from .experiment import build_datasets
from .metrics import auc_table, bootstrap_auc, mean_auc, per_class_auc
from .models import XrayNet, build_model
from .runs import Registry

log = logging.getLogger("engine.train")


# -- pieces ----------------------------------------------------------------------------------------
def masked_bce(logits: torch.Tensor, targets: torch.Tensor, pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean BCE-with-logits over the known (non-NaN) targets; (N, C) each."""
    known = ~torch.isnan(targets)
    loss = F.binary_cross_entropy_with_logits(logits.float(), torch.nan_to_num(targets, nan=0.0),
                                              pos_weight=pos_weight, reduction="none")
    return (loss * known).sum() / known.sum().clamp(min=1)


def sample_weights(targets: np.ndarray) -> np.ndarray:
    """Oversampling weights: an image weighs 1/frequency of its rarest positive class (negatives:
    1/frequency of all-negative images), so every class is drawn about equally often."""
    t = np.nan_to_num(targets, nan=0.0) > 0.5
    freq = t.sum(axis=0).astype(float)
    neg = ~t.any(axis=1)
    w = np.zeros(len(t))
    with np.errstate(divide="ignore"):
        inv = np.where(freq > 0, 1.0 / freq, 0.0)
    w[~neg] = (t[~neg] * inv).max(axis=1)
    if neg.any():
        w[neg] = 1.0 / neg.sum()
    return w / w.sum()


def epoch_order(n: int, *, seed: int, epoch: int, reshuffle: bool, weights: np.ndarray | None) -> np.ndarray:
    """The sample order of one epoch: a pure function of (seed, epoch), so a resumed run replays it."""
    g = torch.Generator().manual_seed(seed * 100_003 + (epoch if reshuffle else 0))
    if weights is not None:
        return torch.multinomial(torch.as_tensor(weights, dtype=torch.float64), n, replacement=True, generator=g).numpy()
    return torch.randperm(n, generator=g).numpy()


class ListSampler(torch.utils.data.Sampler):
    def __init__(self, indices: np.ndarray):
        self.indices = [int(i) for i in indices]

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


def make_loader(ds: XrayDataset, indices: np.ndarray | None, batch_size: int, workers: int, device, seed: int = 0):
    sampler = ListSampler(np.arange(len(ds)) if indices is None else indices)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers,
                                       collate_fn=collate, pin_memory=device.type == "cuda",
                                       generator=torch.Generator().manual_seed(seed),
                                       persistent_workers=False, prefetch_factor=4 if workers else None)


def autocast(device, enabled: bool):
    if device.type == "cuda" and enabled:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast(device.type, enabled=False)


@torch.no_grad()
def predict(model: XrayNet, ds: XrayDataset, *, batch_size: int, workers: int, device, amp: bool = True,
            channels_last: bool = False, progress: Callable[[int, int], None] | None = None) -> dict:
    """Probabilities for every readable image of ds: {"probs" (M, C), "targets" (M, C),
    "indices" (M,), "loss", "errors"}. Unreadable files are skipped and listed."""
    model.eval()
    probs, targets, indices, errors = [], [], [], []
    loss_sum, known = 0.0, 0
    loader = make_loader(ds, None, batch_size, workers, device)
    total = len(loader)
    for k, batch in enumerate(loader):
        errors += batch["errors"]
        if batch["images"] is None:
            continue
        x = normalise_batch(batch["images"].to(device, non_blocking=True))
        if channels_last and device.type == "cuda":
            x = x.to(memory_format=torch.channels_last)
        y = batch["targets"].to(device)
        with autocast(device, amp):
            logits = model(x)
        m = ~torch.isnan(y)
        loss_sum += float((F.binary_cross_entropy_with_logits(logits.float(), torch.nan_to_num(y), reduction="none") * m).sum())
        known += int(m.sum())
        probs.append(torch.sigmoid(logits.float()).cpu())
        targets.append(batch["targets"])
        indices.append(batch["indices"])
        if progress:
            progress(k + 1, total)
    C = len(ds.class_names)
    cat = lambda xs, shape: torch.cat(xs).numpy() if xs else np.zeros(shape, np.float32)  # noqa: E731
    return {"probs": cat(probs, (0, C)), "targets": cat(targets, (0, C)),
            "indices": cat(indices, (0,)).astype(int), "loss": loss_sum / max(known, 1), "errors": errors}


def save_predictions(ds: XrayDataset, pred: dict, path: Path) -> None:
    import pandas as pd

    rows = ds.frame.iloc[pred["indices"]]
    out = pd.DataFrame({"image": rows["image"].to_numpy(), "patient_id": rows["patient_id"].to_numpy(),
                        "dataset": rows["dataset"].to_numpy(), "split": rows["split"].to_numpy(),
                        "path": rows["path"].to_numpy()})
    for k, c in enumerate(ds.class_names):
        out[f"target_{c}"] = pred["targets"][:, k]
        out[f"prob_{c}"] = pred["probs"][:, k]
    tmp = path.with_suffix(".tmp")
    out.to_csv(tmp, index=False)
    os.replace(tmp, path)


def evaluate_split(model, ds: XrayDataset, cfg: ExperimentConfig, device, run_dir: Path, split: str,
                   n_boot: int | None = None) -> dict:
    """Predict a split, save `predictions_<split>.csv`, return AUCs with patient bootstrap CIs."""
    t = cfg.train
    eval_ds = ds.with_transform(build_transform(False, cfg.data.image_size, normalise=False))
    pred = predict(model, eval_ds, batch_size=max(t.batch_size, 32),
                   workers=cfg.data.num_workers, device=device, amp=t.amp, channels_last=t.channels_last)
    save_predictions(ds, pred, run_dir / f"predictions_{split}.csv")
    groups = ds.frame["patient_id"].to_numpy()[pred["indices"]]
    boot = bootstrap_auc(pred["targets"], pred["probs"], groups, n=t.bootstrap if n_boot is None else n_boot, seed=t.seed)
    return {"split": split, "images": int(len(pred["indices"])), "skipped": len(pred["errors"]),
            "loss": pred["loss"], "mean_auc": boot["mean"], "auc": auc_table(boot, ds.class_names)}


# -- distributed -----------------------------------------------------------------------------------
def dist_info() -> tuple[int, int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def init_distributed(device_pref: str):
    rank, world, local = dist_info()
    if world > 1 and not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and device_pref != "cpu"
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return rank, world, local


# -- the run ---------------------------------------------------------------------------------------
class _Stop:
    """Set by SIGTERM/SIGINT (engine.signals): the loop finishes its step, checkpoints and exits
    as cancelled. A signal that arrived before training started counts too."""

    @property
    def flag(self) -> bool:
        return bool(signals.STOP["flag"])

    @property
    def signal(self):
        return signals.STOP["signal"]

    def install(self):
        signals.install()


class Heartbeat(threading.Thread):
    def __init__(self, registry: Registry, run: str, every: float = 5.0):
        super().__init__(daemon=True)
        self.registry, self.run_name, self.every = registry, run, every
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.wait(self.every):
            try:
                self.registry.update(self.run_name, heartbeat=time.time())
            except Exception:  # the registry may be briefly locked; the next beat retries
                pass


def resolve_init(init: str, registry: Registry) -> str:
    """scratch / imagenet pass through; a run name becomes its best (or last) checkpoint path."""
    if init in ("scratch", "imagenet"):
        return init
    row = None
    try:
        row = registry.get(init)
    except Exception:
        row = None
    if row is not None:
        d = registry.run_dir(init)
        for f in ("best.pt", "last.pt"):
            if (d / f).is_file():
                return str(d / f)
        raise FileNotFoundError(f"init run {init!r} has no checkpoint yet (status {row['status']})")
    if Path(init).is_file():
        return str(Path(init).resolve())
    raise FileNotFoundError(f"init {init!r} is neither scratch, imagenet, an existing run nor a checkpoint file")


def _finalise_best(run_dir: Path, best_epoch: int | None) -> None:
    """Settle best-candidate.pt against what last.pt knows (see fit)."""
    cand = run_dir / "best-candidate.pt"
    if not cand.exists():
        return
    try:
        epoch = load_checkpoint(cand).get("epoch")
    except Exception:
        epoch = None
    if epoch is not None and best_epoch is not None and epoch == best_epoch:
        os.replace(cand, run_dir / "best.pt")
    else:
        cand.unlink(missing_ok=True)


def fit(cfg: ExperimentConfig, run: str, registry: Registry, *, resume: bool = False,
        on_progress: Callable[[dict], None] | None = None) -> str:
    """Train run `run` (its registry row exists) to a final status; returns that status."""
    rank, world, local = init_distributed(cfg.train.device)
    main = rank == 0
    t, o, d = cfg.train, cfg.optim, cfg.data
    if world > 1 and torch.cuda.is_available() and t.device != "cpu":
        device = torch.device(f"cuda:{local}")
    else:
        device = pick_device(t.device)
    run_dir = registry.run_dir(run)
    stop = _Stop()
    stop.install()
    beat = Heartbeat(registry, run) if main else None
    try:
        torch.manual_seed(t.seed + rank)
        datasets = build_datasets(cfg)
        # uint8 batches from the loader, normalised on the training device (normalise_batch)
        train_ds = datasets["train"].with_transform(build_transform(True, d.image_size, t.augment, normalise=False))
        val_ds = datasets["val"].with_transform(build_transform(False, d.image_size, normalise=False))
        classes = list(train_ds.class_names)
        ckpt = None
        if resume and (run_dir / "last.pt").is_file():
            ckpt = load_checkpoint(run_dir / "last.pt")
        model = build_model(cfg.model.arch, len(classes), "scratch" if ckpt else resolve_init(cfg.model.init, registry))
        if ckpt:
            model.load_state_dict(ckpt["model"])
        model.to(device)
        if device.type == "cuda" and t.channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.Adam(model.parameters(), lr=o.lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=o.plateau_factor,
                                                               patience=o.plateau_patience, min_lr=o.min_lr)
        use_scaler = device.type == "cuda" and t.amp and not torch.cuda.is_bf16_supported()
        scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        state = {"epoch": 0, "step": 0, "step_in_epoch": 0, "loss_sum": 0.0, "loss_n": 0, "skipped": 0,
                 "best_val_auc": -1.0, "best_epoch": None, "since_best": 0}
        if ckpt:
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            if ckpt.get("scaler"):
                scaler.load_state_dict(ckpt["scaler"])
            state.update({k: ckpt[k] for k in state if k in ckpt})
            if "torch_rng" in ckpt:
                torch.set_rng_state(ckpt["torch_rng"])
        if main:
            _finalise_best(run_dir, state["best_epoch"])
            registry.truncate_after(run, state["epoch"], state["step"])
            registry.update(run, status="running", pid=os.getpid(), started=time.time(), heartbeat=time.time(),
                            finished=None, error=None, device=_device_text(device, world),
                            data_fingerprint=datasets["train"].fingerprint() + "-" + datasets["test"].fingerprint(),
                            epochs_done=state["epoch"], step=state["step"])
            beat.start()
            _setup_log(run_dir)
            log.info("run %s: %s on %s, %d/%d/%d images (train/val/test), classes %s%s", run, cfg.model.arch,
                     _device_text(device, world), len(train_ds), len(val_ds), len(datasets["test"]), classes,
                     f", resumed at epoch {state['epoch']} step {state['step_in_epoch']}" if ckpt else "")
        net = model
        if world > 1:
            net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[local] if device.type == "cuda" else None)
        pos_weight = None
        if t.class_weighted_loss:
            tt = np.nan_to_num(train_ds.targets, nan=0.0)
            pos = tt.sum(0)
            pos_weight = torch.tensor(np.where(pos > 0, (len(tt) - pos) / np.maximum(pos, 1), 1.0), dtype=torch.float32, device=device)
        weights = sample_weights(train_ds.targets) if t.oversample else None
        steps_per_epoch = math.ceil(len(train_ds) / (t.batch_size * world))
        last_ckpt_time = time.time()

        def snapshot(extra_state: dict) -> dict:
            return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict() if use_scaler else {}, "config": cfg.to_dict(), "class_names": classes,
                    "arch": cfg.model.arch, "run": run, "torch_rng": torch.get_rng_state(), **extra_state}

        while state["epoch"] < t.epochs:
            epoch = state["epoch"]
            t_epoch = time.time()
            order = epoch_order(len(train_ds), seed=t.seed, epoch=epoch, reshuffle=t.reshuffle, weights=weights)
            pad = (-len(order)) % world
            order = np.concatenate([order, order[:pad]])[rank::world]
            start = state["step_in_epoch"] * t.batch_size
            loader = make_loader(train_ds, order[start:], t.batch_size, d.num_workers, device, seed=t.seed + epoch)
            net.train()
            pending: list = []
            last_flush = time.time()
            cancelled = False
            for batch in loader:
                stop_now = torch.tensor([1.0 if stop.flag else 0.0])
                if world > 1:
                    dist.all_reduce(stop_now)
                if stop_now.item() > 0:
                    cancelled = True
                    break
                state["skipped"] += len(batch["errors"])
                for e in batch["errors"]:
                    log.warning("skipped unreadable image: %s", e)
                if batch["images"] is None:
                    state["step_in_epoch"] += 1
                    continue
                x = normalise_batch(batch["images"].to(device, non_blocking=True))
                if device.type == "cuda" and t.channels_last:
                    x = x.to(memory_format=torch.channels_last)
                y = batch["targets"].to(device, non_blocking=True)
                with autocast(device, t.amp):
                    logits = net(x)
                loss = masked_bce(logits, y, pos_weight)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                lv = float(loss.detach())
                state["step"] += 1
                state["step_in_epoch"] += 1
                state["loss_sum"] += lv
                state["loss_n"] += 1
                if main:
                    pending.append((state["step"], epoch, lv, optimizer.param_groups[0]["lr"]))
                    now = time.time()
                    if now - last_flush > 2.0 or state["step_in_epoch"] == steps_per_epoch:
                        registry.log_steps(run, pending)
                        pending = []
                        last_flush = now
                        elapsed = now - t_epoch
                        done = max(state["step_in_epoch"] - start // t.batch_size, 1)
                        prog = {"phase": "train", "epoch": epoch + 1, "epochs": t.epochs, "step": state["step_in_epoch"],
                                "steps": steps_per_epoch, "eta_s": elapsed / done * (steps_per_epoch - state["step_in_epoch"])}
                        registry.update(run, progress=prog, step=state["step"])
                        if on_progress:
                            on_progress(prog)
                    if t.checkpoint_minutes and now - last_ckpt_time > 60 * t.checkpoint_minutes:
                        # metrics first: every step up to a checkpoint is in the registry, so a
                        # resume from it (which drops later rows) never leaves a gap
                        registry.log_steps(run, pending)
                        pending = []
                        save_checkpoint(snapshot(dict(state)), run_dir / "last.pt")
                        last_ckpt_time = now
            if main and pending:
                registry.log_steps(run, pending)
            if cancelled or stop.flag:
                if main:
                    save_checkpoint(snapshot(dict(state)), run_dir / "last.pt")
                    registry.update(run, status="cancelled", finished=time.time(), pid=None, progress=None,
                                    error=f"cancelled by signal {stop.signal}" if stop.signal else "cancelled")
                    log.info("cancelled at epoch %d step %d; last.pt written; resume with --resume %s",
                             epoch + 1, state["step_in_epoch"], run)
                return "cancelled"

            # -- end of epoch: validate, schedule, keep the best ----------------------------------
            train_loss = state["loss_sum"] / max(state["loss_n"], 1)
            result = torch.zeros(3)
            if main:
                registry.update(run, progress={"phase": "validate", "epoch": epoch + 1, "epochs": t.epochs,
                                               "step": steps_per_epoch, "steps": steps_per_epoch, "eta_s": None})
                pred = predict(model, val_ds, batch_size=max(t.batch_size, 32), workers=d.num_workers, device=device,
                               amp=t.amp, channels_last=t.channels_last)
                aucs = per_class_auc(pred["targets"], pred["probs"])
                val_mean = mean_auc(aucs)
                improved = np.isfinite(val_mean) and val_mean > state["best_val_auc"]
                result = torch.tensor([pred["loss"], val_mean if np.isfinite(val_mean) else -1.0, float(improved)])
            if world > 1:
                dist.broadcast(result, 0)
            val_loss, val_mean, improved = float(result[0]), float(result[1]), bool(result[2] > 0)
            scheduler.step(val_loss)
            lr = optimizer.param_groups[0]["lr"]
            state.update(epoch=epoch + 1, step_in_epoch=0, loss_sum=0.0, loss_n=0)
            if improved:
                state.update(best_val_auc=val_mean, best_epoch=epoch + 1, since_best=0)
            else:
                state["since_best"] += 1
            if main:
                if improved:  # 1. candidate  2. metrics row  3. last.pt  4. promote: consistent at every kill point
                    save_checkpoint(snapshot({**state, "epoch": epoch + 1}), run_dir / "best-candidate.pt")
                registry.log_epoch(run, epoch + 1, train_loss=train_loss, val_loss=val_loss, lr=lr,
                                   val_auc_mean=val_mean if val_mean >= 0 else None,
                                   val_auc={c: (None if not np.isfinite(a) else float(a)) for c, a in zip(classes, aucs)},
                                   seconds=time.time() - t_epoch, skipped_images=state["skipped"])
                save_checkpoint(snapshot(dict(state)), run_dir / "last.pt")
                last_ckpt_time = time.time()
                _finalise_best(run_dir, state["best_epoch"])
                registry.update(run, epochs_done=epoch + 1, best_epoch=state["best_epoch"],
                                best_val_auc=state["best_val_auc"] if state["best_val_auc"] >= 0 else None)
                log.info("epoch %d/%d: train loss %.4f, val loss %.4f, val mean AUC %.4f, lr %.2e%s", epoch + 1,
                         t.epochs, train_loss, val_loss, val_mean, lr, " (best)" if improved else "")
            state["skipped"] = 0
            if t.early_stopping and state["since_best"] >= t.early_stopping:
                if main:
                    log.info("early stopping: no better val mean AUC for %d epochs", state["since_best"])
                break

        # -- final evaluation of the best epoch on val and test -----------------------------------
        if main:
            registry.update(run, progress={"phase": "test", "epoch": state["epoch"], "epochs": t.epochs, "step": 0,
                                           "steps": 0, "eta_s": None})
            best = run_dir / "best.pt" if (run_dir / "best.pt").is_file() else run_dir / "last.pt"
            model.load_state_dict(load_checkpoint(best)["model"])
            report = {"best_epoch": state["best_epoch"], "checkpoint": best.name,
                      "val": evaluate_split(model, datasets["val"], cfg, device, run_dir, "val"),
                      "test": evaluate_split(model, datasets["test"], cfg, device, run_dir, "test")}
            _write_json(run_dir / "metrics.json", report)
            registry.update(run, status="succeeded", finished=time.time(), pid=None, progress=None,
                            test_auc=_finite(report["test"]["mean_auc"]))
            log.info("done: test mean AUC %.4f (best epoch %s)", report["test"]["mean_auc"], state["best_epoch"])
        if world > 1:
            dist.barrier()
        return "succeeded"
    except BaseException as exc:
        if main:
            status = "cancelled" if isinstance(exc, KeyboardInterrupt) else "failed"
            msg = f"{exc.__class__.__name__}: {exc}"
            log.error("run %s %s: %s", run, status, msg)
            try:
                registry.update(run, status=status, finished=time.time(), pid=None, progress=None, error=msg[:2000])
            except Exception:
                pass
        raise
    finally:
        if beat is not None:
            beat.stopped.set()
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _finite(x):
    return float(x) if x is not None and np.isfinite(x) else None


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=lambda v: None))
    os.replace(tmp, path)


def _device_text(device, world: int) -> str:
    if device.type == "cuda":
        return f"{world}x {torch.cuda.get_device_name(device)}"
    return f"cpu{'' if world == 1 else f' x{world} (gloo)'}"


def _setup_log(run_dir: Path) -> None:
    root = logging.getLogger("engine")
    target = str(run_dir / "train.log")
    if not any(isinstance(h, logging.FileHandler) and h.baseFilename == target for h in root.handlers):
        h = logging.FileHandler(target)
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        root.addHandler(h)
    root.setLevel(logging.INFO)


def evaluate_run(registry: Registry, run: str, splits=("val", "test"), n_boot: int | None = None) -> dict:
    """Re-evaluate a run's best checkpoint on the given splits (writes predictions and metrics.json)."""
    row = registry.get(run)
    if row is None:
        raise FileNotFoundError(f"no run named {run!r}")
    run_dir = registry.run_dir(run)
    best = run_dir / "best.pt" if (run_dir / "best.pt").is_file() else run_dir / "last.pt"
    ckpt = load_checkpoint(best)
    cfg = ExperimentConfig.from_dict(ckpt["config"])
    device = pick_device(cfg.train.device if cfg.train.device != "cuda" or torch.cuda.is_available() else "auto")
    datasets = build_datasets(cfg)
    model = build_model(cfg.model.arch, len(ckpt["class_names"]), "scratch")
    model.load_state_dict(ckpt["model"])
    model.to(device)
    out = {"run": run, "checkpoint": best.name, "best_epoch": ckpt.get("best_epoch")}
    for s in splits:
        out[s] = evaluate_split(model, datasets[s], cfg, device, run_dir, s, n_boot)
    path = run_dir / "metrics.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    old.update(out)
    _write_json(path, old)
    if "test" in out:
        registry.update(run, test_auc=_finite(out["test"]["mean_auc"]))
    return out
