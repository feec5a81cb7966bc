"""Subcommands of a run's life: train (submit and work in this shell), queue, worker, cancel, resume."""
from __future__ import annotations

import argparse
import sys
import traceback

from ..config import DEVICES, MANIFEST_FORMATS, PRESETS, TASKS, UNCERTAIN, field_types, from_preset
from ..constants import ARCHS, AUGMENTATIONS
from ..runs import jobs
from ..runs.jobs import cancel, resume, submit, wait, work
from ..training.callbacks import Callback
from .common import CLIError, emit, fmt, registry


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_log_to(p) -> None:
    p.add_argument("--log-to", action="append", default=[], metavar="TARGET",
                   help="also log the run live to tensorboard:DIR or mlflow:URI (repeatable; the saved setting "
                        "log_to adds targets for every run; docs/trackers.md)")


def add_config_flags(p) -> None:
    """One flag per config field: switches for true/false fields (--oversample / --no-oversample),
    the allowed values listed for choice fields."""

    choices = {"arch": ARCHS, "augment": AUGMENTATIONS, "task": TASKS, "device": DEVICES,
               "manifest_format": MANIFEST_FORMATS, "uncertain": UNCERTAIN}
    g = p.add_argument_group("config overrides (any field of the preset)")
    for name, (section, typ) in field_types().items():
        if typ is bool:
            g.add_argument(_flag(name), dest=f"cfg_{name}", default=None, action=argparse.BooleanOptionalAction,
                           help=f"{section}.{name}")
        elif name in choices:
            g.add_argument(_flag(name), dest=f"cfg_{name}", default=None, metavar="{" + ",".join(choices[name]) + "}",
                           help=f"{section}.{name}" + (" (or cuda:N)" if name == "device" else ""))
        else:
            g.add_argument(_flag(name), dest=f"cfg_{name}", default=None, metavar=typ.__name__.upper(),
                           help=f"{section}.{name} ({typ.__name__})")


def overrides_from(args) -> dict:
    return {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_") and v is not None}


class ProgressBars(Callback):
    """One tqdm bar per phase of each epoch, on stderr."""

    def __init__(self):
        self.bar, self.key = None, None

    def on_progress(self, p: dict) -> None:
        from tqdm import tqdm

        key = (p["phase"], p["epoch"])
        desc = f"{p['phase']} {p['epoch']}/{p['epochs']}"
        if key != self.key:
            self.close()
            self.key = key
            if p["steps"] and p["step"] >= p["steps"]:  # a phase that finished before its first report
                tqdm.write(f"{desc}: {p['steps']}/{p['steps']} steps", file=sys.stderr)
                return
            self.bar = tqdm(total=p["steps"], desc=desc, unit="step", file=sys.stderr, dynamic_ncols=True,
                            initial=p["step"])
        if self.bar is None:
            return
        self.bar.total = p["steps"]
        if p["steps"] and p["step"] >= p["steps"]:
            self.bar.n = p["step"]  # close() draws the finished bar once
            self.close()
        else:
            self.bar.update(p["step"] - self.bar.n)

    def on_end(self, status: str, summary: dict) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _device_preference(args, over: dict, reg) -> str:
    if "device" in over:
        return over["device"]
    if args.resume:
        return reg.require(args.resume).config.get("train", {}).get("device", "auto")
    return from_preset(args.preset, over).train.device


def cmd_train(args) -> int:
    from ..training.distributed import dist_info, init_distributed

    reg = registry()
    over = overrides_from(args)
    rank, world, _ = dist_info()
    if not args.resume and not args.preset and over.get("task") == "manifest":
        args.preset = "manifest"  # your own collection: --task manifest --manifest CSV
    if not args.resume and not args.preset:
        raise CLIError("pass --preset NAME (or --resume RUN); presets: " + ", ".join(PRESETS))
    name = None
    if rank == 0:  # submitted and claimed by this shell in one step: the same life as a queued run
        if args.resume:
            jobs.resume(args.resume, reg, overrides=over, claim=True, log_to=args.log_to)
            name = args.resume
        else:
            name = jobs.submit(args.preset, over, args.name, reg, claim=True, log_to=args.log_to)
    if world > 1:
        import torch.distributed as dist

        init_distributed(_device_preference(args, over, reg))
        box = [name]
        dist.broadcast_object_list(box, 0)
        name = box[0]
    if rank == 0 and not args.json:
        if not args.resume:
            _arch_note(reg, name, args.preset, over)
        print(f"run {name}: logs in {reg.folder(name).train_log}", file=sys.stderr)
    bars = None if args.json or rank != 0 else ProgressBars()
    try:
        status = jobs.work(name, reg, progress=bars)
    except (OSError, ValueError, RuntimeError) as exc:  # disk full, unreadable root, missing weights, ...
        raise CLIError(f"run {name} failed: {exc.__class__.__name__}: {exc}; the registry says why "
                       f"(python -m engine runs show {name})") from exc
    finally:
        if bars:
            bars.close()
    if rank == 0:
        row = reg.require(name)
        emit({"name": name, "status": status, "best_epoch": row.best_epoch, "best_val_auc": row.best_val_auc,
              "test_auc": row.test_auc}, args.json,
             lambda o: print(f"run {o['name']} {o['status']}: best epoch {o['best_epoch']}, val mean AUC "
                             f"{fmt(o['best_val_auc'])}, test mean AUC {fmt(o['test_auc'])}"))
    return 0 if status == "succeeded" else 3


def _arch_note(reg, name: str, preset: str, over: dict) -> None:
    """Say so when a run trains another architecture than its preset's because it took its init run's."""
    from ..config import from_preset

    if "arch" in over:
        return
    arch, usual = reg.require(name).config["model"]["arch"], from_preset(preset, {}, validate=False).model.arch
    if arch != usual:
        print(f"run {name}: arch {arch}, the architecture of its init run (the preset's is {usual})", file=sys.stderr)


def cmd_queue(args) -> int:
    over = overrides_from(args)
    name = submit(args.preset, over, args.name, log_to=args.log_to)
    reg = registry()
    if not args.json:
        _arch_note(reg, name, args.preset, over)
    row = reg.require(name)
    emit({"name": name, "status": row.status}, args.json, lambda o: print(f"run {o['name']}: {o['status']}"))
    return 0


def cmd_worker(args) -> int:
    """The trainer process the scheduler starts; its output is the run's process.log."""
    try:
        from ..runs.cluster import worker_registry  # relayed through the Ray head on a cluster node
        return 0 if work(args.run, worker_registry()) == "succeeded" else 3
    except BaseException:  # recorded in the registry by work(); the traceback stays in process.log
        traceback.print_exc()
        return 3


def cmd_keeper(args) -> int:
    """The queue keeper (started by the queue itself): watches while runs are queued, then ends."""
    from ..runs.liveness import keep_queue
    print(f"queue keeper: {keep_queue(registry())}")
    return 0


def cmd_cancel(args) -> int:
    reg = registry()
    what = cancel(args.run, reg)
    print(f"{args.run}: {what}" + (" (finishing its step, then writing last.pt)" if what == "stopping" else ""),
          flush=True)
    if what == "stopping" and args.wait > 0:
        row = wait(args.run, reg, timeout=args.wait)
        print(f"{args.run}: {row.status}" + (f" ({row.error})" if row.error else ""))
        if row.status == "running":
            print(f"still running after {args.wait:.0f} s; it stops at the end of its current step", file=sys.stderr)
    return 0


def cmd_resume(args) -> int:
    reg = registry()
    resume(args.run, reg, overrides=overrides_from(args), log_to=args.log_to)
    print(f"{args.run}: {reg.require(args.run).status}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("train", help="train a preset in this shell (or --resume a run)")
    p.add_argument("--preset", choices=list(PRESETS), help="the study's experiment to run")
    p.add_argument("--name", help="run name (letters, digits, . _ -); default: preset + timestamp")
    p.add_argument("--resume", metavar="RUN", help="continue RUN from its last checkpoint")
    p.add_argument("--json", action="store_true", help="print the final run summary as JSON")
    add_log_to(p)
    add_config_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("worker", help="(internal) train a run the scheduler claimed; started by the queue")
    p.add_argument("run")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("keeper", help="(internal) watch the queue while runs wait: a trainer killed without a word "
                                      "is settled and the next run started (CXR_QUEUE_POLL_S; started by the queue)")
    p.set_defaults(func=cmd_keeper)

    p = sub.add_parser("queue", help="queue a run (started when capacity allows) instead of training in this shell")
    p.add_argument("--preset", choices=list(PRESETS), required=True)
    p.add_argument("--name")
    p.add_argument("--json", action="store_true")
    p.add_argument("--executor", choices=["local", "ray"],
                   help="who starts queued runs: this machine's queue (default) or a Ray cluster at RAY_ADDRESS "
                        "(the same as CXR_EXECUTOR; docs/cluster.md)")
    add_log_to(p)
    add_config_flags(p)
    p.set_defaults(func=cmd_queue)

    p = sub.add_parser("cancel", help="cancel a queued or running run (graceful: the step finishes, last.pt is kept)")
    p.add_argument("run")
    p.add_argument("--wait", type=float, default=120.0, metavar="S",
                   help="wait up to S seconds for a running run to stop and print its final state (0: do not wait)")
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("resume", help="queue a cancelled, interrupted or failed run again (continues from last.pt)")
    p.add_argument("run")
    p.add_argument("--executor", choices=["local", "ray"],
                   help="who starts queued runs: this machine's queue (default) or a Ray cluster at RAY_ADDRESS "
                        "(the same as CXR_EXECUTOR; docs/cluster.md)")
    add_log_to(p)
    add_config_flags(p)
    p.set_defaults(func=cmd_resume)
