"""Issue 3 benchmarks.

throughput: img/s of a training step at 224 px, end to end (cache -> augmentation -> DataLoader
workers -> model) vs the same model on synthetic tensors already in memory; target ratio >= 0.9.
learning: covid-scratch vs covid-from-nih (init from an NIH run trained on the pack's NIH images)
at a CPU-feasible size; prints test AUCs with patient-bootstrap 95% intervals. No threshold.

Usage: python bench/bench_train.py [throughput|learning|all] [--size 128] [--epochs 8]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import torch
from common import DATA_PACK

from engine.data import ImageCache, NIHChestXray14, build_cache, build_transform, cache_folder
from engine.devices import pick_device
from engine.models import build_model
from engine.data.transforms import normalise_batch
from engine.training import make_loader, masked_bce


def _steps(model, batches, device, opt) -> float:
    t0 = time.perf_counter()
    n = 0
    for x, y in batches:
        x, y = normalise_batch(x.to(device)), y.to(device)  # as the trainer: uint8 in, normalised on the device
        loss = masked_bce(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        n += len(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def throughput(steps: int, workers: int, batch: int = 16, size: int = 224) -> None:
    device = pick_device("auto")
    with tempfile.TemporaryDirectory() as tmp:
        nih = NIHChestXray14(DATA_PACK / "nih")
        build_cache(nih.frame["path"], cache_folder(tmp, "nih", 256), size=256)
        nih.attach_cache(ImageCache(cache_folder(tmp, "nih", 256)))
        ds = nih.with_transform(build_transform(True, size, normalise=False))  # the trainer's pipeline
        for arch in ("densenet121", "resnet50"):
            model = build_model(arch, 14, "scratch").to(device).train()
            opt = torch.optim.Adam(model.parameters(), lr=1e-4)
            synth = [(torch.randn(batch, 3, size, size),
                      torch.randint(0, 2, (batch, 14)).float()) for _ in range(steps)]
            _steps(model, synth[:1], device, opt)  # warm-up
            t_syn = _steps(model, synth, device, opt)
            loader = make_loader(ds, torch.randperm(len(ds))[: batch * (steps + 1)].numpy(), batch, workers, device)

            def real(loader=loader, model=model, opt=opt):
                it = iter(loader)
                first = next(it)
                _steps(model, [(first["images"], first["targets"])], device, opt)  # workers warm, as in a long epoch
                return _steps(model, ((b["images"], b["targets"]) for b in it), device, opt)

            t_real = real()
            print(f"{arch} @ {size}px batch {batch} on {device}: synthetic {t_syn:.1f} img/s, end to end "
                  f"{t_real:.1f} img/s ({workers} workers) -> RATIO {t_real / t_syn:.2f} (target >= 0.9)")


def learning(size: int, epochs: int, nih_epochs: int) -> None:
    from engine.cli import main
    from engine.runs import Registry

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CXR_CHECKPOINTS"] = tmp + "/ck"
        os.environ["CXR_CACHE_DIR"] = tmp + "/cache"
        main(["prepare", "--nih-root", str(DATA_PACK / "nih"), "--covid-root", str(DATA_PACK / "covid"),
              "--size", str(max(size, 64)), "--json"])
        common = ["--image-size", str(size), "--load-size", str(max(size, 64)), "--bootstrap", "1000", "--num-workers",
                  "2"]
        t0 = time.time()
        main(["train", "--preset", "nih-densenet121-imagenet", "--init", "scratch", "--nih-root",
              str(DATA_PACK / "nih"),
              "--epochs", str(nih_epochs), "--name", "nih", "--json", *common])
        print(f"NIH pretraining ({nih_epochs} epochs, {size}px, pack images): {time.time() - t0:.0f}s")
        for preset, extra in (("covid-scratch", []), ("covid-from-nih", ["--init", "nih"])):
            t0 = time.time()
            main(["train", "--preset", preset, "--covid-root", str(DATA_PACK / "covid"), "--epochs", str(epochs),
                  "--name", preset, "--json", *common, *extra])
            m = json.loads((Registry().run_dir(preset) / "metrics.json").read_text())
            row = {r["class"]: r for r in m["test"]["auc"]}["COVID-19"]
            print(f"{preset}: test AUC {row['auc']:.3f} [95% CI {row['low']:.3f}, {row['high']:.3f}] on "
                  f"{m['test']['images']} images, best epoch {m['best_epoch']}, {time.time() - t0:.0f}s")
        nih_m = json.loads((Registry().run_dir("nih") / "metrics.json").read_text())
        print(f"(the NIH run itself: test mean AUC {nih_m['test']['mean_auc']:.3f} on {nih_m['test']['images']} images)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("what", nargs="?", default="all", choices=["throughput", "learning", "all"])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--nih-epochs", type=int, default=5)
    a = ap.parse_args()
    if a.what in ("throughput", "all"):
        throughput(a.steps, a.workers)
    if a.what in ("learning", "all"):
        learning(a.size, a.epochs, a.nih_epochs)
