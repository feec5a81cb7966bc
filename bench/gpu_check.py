"""The full-scale path, checked where a GPU exists (issue 11). On a CUDA machine, in a few minutes:

1. DenseNet-121 and ResNet-50 training throughput at 224 px with mixed precision and channels_last,
   end to end (image cache -> augmentation -> DataLoader workers, pinned memory -> on-device
   normalisation -> model) vs synthetic tensors already on the GPU: img/s and their RATIO, at
   batch 16 (the study's), 64, 128 and 256, eager and with torch.compile (`--compile default
   reduce-overhead`: reduce-overhead captures CUDA graphs, for batch 16 where kernel launches bound
   the step); evaluation img/s at each batch; the issue-20 targets checked (end to end >= 0.9 of
   synthetic; ResNet-50 >= 2,600 img/s at batch 256, timm's A100 figure; DenseNet-121 >= 1,200);
2. one short run through the real code path (`python -m engine train`: AMP, GradScaler where fp16,
   pinned memory, on-device normalisation, checkpoints, final evaluation);
3. a DistributedDataParallel run with nccl over every GPU (needs 2 or more; skipped with a reason).

Reads the shared data pack ($CXR_DATA_PACK); without it writes 256 synthetic 512-px PNGs in the NIH
layout so the loader path is still the real one. Without CUDA it says so and exits 0.

Usage: python bench/gpu_check.py [--steps 30] [--workers 8] [--batch 16 64 128 256] [--compile eager default]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import DATA_PACK, REPO


def nih_root(tmp: Path) -> Path:
    if (DATA_PACK / "nih" / "Data_Entry_2017_v2020.csv").is_file():
        return DATA_PACK / "nih"
    import numpy as np
    from PIL import Image

    root = tmp / "nih"
    (root / "images").mkdir(parents=True)
    lines = ["Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
             "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"]
    rng = np.random.default_rng(0)
    labels = ["No Finding", "Effusion", "Atelectasis|Mass", "Cardiomegaly", "Infiltration"]
    names = []
    for i in range(256):
        name = f"{i:08d}_000.png"
        Image.fromarray((rng.random((512, 512)) * 255).astype("uint8")).save(root / "images" / name)
        lines.append(f"{name},{labels[i % 5]},0,{i},50,M,PA,1024,1024,0.14,0.14")
        names.append(name)
    (root / "Data_Entry_2017_v2020.csv").write_text("\n".join(lines) + "\n")
    (root / "test_list.txt").write_text("\n".join(names[-48:]))
    (root / "train_val_list.txt").write_text("\n".join(names[:-48]))
    return root


def _steps(model, batches, device, opt, scaler) -> float:
    from engine.data.transforms import normalise_batch
    from engine.training import masked_bce

    torch.cuda.synchronize()
    t0, n = time.perf_counter(), 0
    for x, y in batches:
        x = normalise_batch(x.to(device, non_blocking=True)).to(memory_format=torch.channels_last)
        y = y.to(device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16):
            loss = masked_bce(model(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        n += len(x)
    torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


TARGETS = {"resnet50": 2600, "densenet121": 1200}  # img/s at batch 256 (issue 20)


def throughput(root: Path, cache: Path, steps: int, workers: int, batch: int = 16, compile_mode: str = "eager") -> None:
    """Training img/s at one batch size: synthetic tensors on the GPU vs the real loader path."""
    from engine.data import ImageCache, NIHChestXray14, build_cache, build_transform, cache_folder
    from engine.models import build_model
    from engine.training import make_loader

    device = torch.device("cuda")
    nih = NIHChestXray14(root)
    build_cache(nih.frame["path"], cache_folder(cache, "nih", 256), size=256)
    nih.attach_cache(ImageCache(cache_folder(cache, "nih", 256)))
    ds = nih.with_transform(build_transform(True, 224, normalise=False))
    for arch in ("densenet121", "resnet50"):
        model = build_model(arch, 14, "scratch").to(device).to(memory_format=torch.channels_last).train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)  # as the engine builds it
        if compile_mode != "eager":
            model = torch.compile(model, mode=None if compile_mode == "default" else compile_mode)
        scaler = torch.amp.GradScaler("cuda", enabled=not torch.cuda.is_bf16_supported())
        synth = [(torch.randint(0, 256, (batch, 1, 224, 224), dtype=torch.uint8, device=device),
                  torch.randint(0, 2, (batch, 14), device=device).float()) for _ in range(steps)]
        _steps(model, synth[:3], device, opt, scaler)  # warm-up (cudnn autotune; compilation)
        t_syn = _steps(model, synth, device, opt, scaler)
        order = torch.randint(0, len(ds), (batch * (steps + 3),)).numpy()
        loader = make_loader(ds, order, batch, workers, device)
        it = iter(loader)
        _steps(model, [(b["images"], b["targets"]) for b in (next(it), next(it), next(it))], device, opt, scaler)
        t_real = _steps(model, ((b["images"], b["targets"]) for b in it), device, opt, scaler)
        target = TARGETS[arch] if batch == 256 else None
        verdict = "" if target is None else (f"; target {target} img/s " + ("met" if t_real >= target else "NOT met"))
        print(f"{arch} @ 224 px, batch {batch}, {compile_mode}, AMP + channels_last on {torch.cuda.get_device_name()}: "
              f"synthetic {t_syn:.0f} img/s, end to end {t_real:.0f} img/s ({workers} workers) -> RATIO "
              f"{t_real / t_syn:.2f} (target >= 0.9){verdict}; inference {inference(model, synth):.0f} img/s; "
              f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB", flush=True)
        torch.cuda.reset_peak_memory_stats()


@torch.no_grad()
def inference(model, batches) -> float:
    """Evaluation img/s (what `evaluate` and the final test pass do), on tensors already on the GPU."""
    from engine.data.transforms import normalise_batch

    model.eval()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    run = lambda xs: [model(normalise_batch(x).to(memory_format=torch.channels_last)) for x, _ in xs]  # noqa: E731
    with torch.autocast("cuda", dtype=dtype):
        run(batches[:3])
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        run(batches)
        torch.cuda.synchronize()
    model.train()
    return sum(len(x) for x, _ in batches) / (time.perf_counter() - t0)


def short_run(root: Path, tmp: Path, workers: int) -> None:
    env = {**os.environ, "CXR_CHECKPOINTS": str(tmp / "checkpoints"), "CXR_CACHE_DIR": str(tmp / "cache")}
    cmd = [sys.executable, "-m", "engine", "train", "--preset", "nih-densenet121-imagenet", "--init", "scratch",
           "--nih-root", str(root), "--epochs", "1", "--max-images-per-split", "256", "--num-workers", str(workers),
           "--bootstrap", "100", "--name", "gpu-check", "--json"]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    print(f"full code path (engine train, 1 epoch, AMP, pinned memory, on-device normalisation): exit "
          f"{out.returncode} in {time.perf_counter() - t0:.0f} s; {out.stdout.strip()[-300:] or out.stderr[-800:]}",
          flush=True)


def ddp_run(root: Path, tmp: Path) -> None:
    n = torch.cuda.device_count()
    if n < 2:
        print(f"DistributedDataParallel with nccl: skipped ({n} GPU; nccl needs one GPU per process)")
        return
    env = {**os.environ, "CXR_CHECKPOINTS": str(tmp / "checkpoints"), "CXR_CACHE_DIR": str(tmp / "cache")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n), "-m", "engine",
           "train", "--preset", "nih-densenet121-imagenet", "--init", "scratch", "--nih-root", str(root),
           "--epochs", "1", "--max-images-per-split", "256", "--bootstrap", "100", "--name", "gpu-ddp", "--json"]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    print(f"DistributedDataParallel, nccl, {n} GPUs: exit {out.returncode} in {time.perf_counter() - t0:.0f} s; "
          f"{out.stdout.strip()[-300:] or out.stderr[-800:]}", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--batch", type=int, nargs="+", default=[16, 64, 128, 256],
                   help="batch sizes to time (the study's is 16; a GPU is fuller at 64 and more)")
    p.add_argument("--compile", nargs="+", default=["eager", "default"],
                   choices=["eager", "default", "reduce-overhead", "max-autotune"],
                   help="torch.compile modes to time (reduce-overhead = CUDA graphs)")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device here: the GPU check needs one (it runs on a machine with a GPU); nothing to do")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = nih_root(tmp)
        print(f"data: {root}; torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s)")
        for mode in args.compile:
            for batch in args.batch:
                try:
                    throughput(root, tmp / "cache", args.steps, args.workers, batch, mode)
                except Exception as exc:  # a compile mode this torch or GPU lacks: said, the rest still run
                    print(f"batch {batch}, {mode}: failed ({exc.__class__.__name__}: {str(exc)[:300]})", flush=True)
        short_run(root, tmp, args.workers)
        ddp_run(root, tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
