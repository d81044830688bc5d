#!/usr/bin/env python3
"""Where a training iteration's time goes on this machine, for stages 1 and 2: the network step alone
(a fixed batch on the device; on a GPU also with cudnn.benchmark and bf16 autocast), the batch
preparation in one process, and the batches that worker processes deliver.

    python Utilities/profile_training.py --device cuda --cases 24 [--work /tmp/prof] [--json OUT]

It generates CASES small SynthSpine cases (2 mm, and a third as many at 1.25 mm) in ``--work`` on all
cores. Read it beside ``train_all.py``'s iterations: when the workers deliver more batches a second
than the network steps, the device is the limit (run fewer trainings at once); when fewer, give the
run more workers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _synth(folder: Path, n: int, seed: int, cores: int, *options: str) -> None:
    if not (folder / "rawdata").is_dir():
        subprocess.run([sys.executable, "-m", "VertebralFractureLib", "synth", "-o", str(folder), "--n", str(n),
                        "--seed", str(seed), "--workers", str(cores), "--orientation", "random", "--progress", "none",
                        *options], check=True, env={**os.environ, "PYTHONPATH": str(REPO)})


def _step_seconds(net, x, y, loss_fn, n: int, device: str, grad_clip: float, amp: bool = False) -> float:
    """Seconds per training step (the training loops' :func:`optimisation_step`) on a fixed batch."""
    import torch

    from VertebralFractureLib.training.common import optimisation_step

    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    t0 = time.time()
    for i in range(n + 2):
        if i == 2:  # after two warm-up steps
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.time()
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(net(x), y)
        optimisation_step(net, opt, loss, grad_clip)
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.time() - t0) / n


def _delivered_per_s(make_batch, workers: int, n: int) -> float:
    from VertebralFractureLib.training.common import batch_stream

    stream = batch_stream(make_batch, np.random.default_rng(0), workers, seed=(0, workers))
    for _ in range(4 * workers + 2):  # past the batches prepared ahead
        next(stream)
    t0 = time.time()
    for _ in range(n):
        next(stream)
    rate = n / (time.time() - t0)
    stream.close()
    return rate


def _prepare_ms(make_batch, n: int) -> float:
    rng = np.random.default_rng(0)
    t0 = time.time()
    for _ in range(n):
        make_batch(rng)
    return 1000 * (time.time() - t0) / n


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--cases", type=int, default=24)
    p.add_argument("--work", type=Path, default=Path("/tmp/prof"))
    p.add_argument("--steps", type=int, default=20, help="timed network steps")
    p.add_argument("--workers", type=int, nargs="+", default=[3, 12], help="worker counts to try")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = p.parse_args(argv)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    import torch
    from monai.losses import DiceCELoss

    from VertebralFractureLib.localize import build_network
    from VertebralFractureLib.networks.unet import build_unet
    from VertebralFractureLib.training import localization as L
    from VertebralFractureLib.training import segmentation as S
    from VertebralFractureLib.training.common import fixed_shape_speedups

    cores = os.cpu_count() or 1
    _synth(args.work / "ct", args.cases, 9001, cores, "--spacing", "2", "2", "2")
    _synth(args.work / "seg", max(2, args.cases // 3), 9002, cores, "--spacing", "1.25", "1.25", "1.25", "--fov", "200")
    out: dict[str, float] = {}

    def say(key: str, value: float, text: str) -> None:
        out[key] = round(value, 4)
        print(text.format(value), flush=True)

    t = time.time()
    lcases = L.cache_cases(args.work / "ct", L.LocalizationTraining().spacing_mm, workers=cores)
    scases = S.cache_cases(args.work / "seg", S.SegmentationTraining().spacing_mm, workers=cores)
    say("caching_s", time.time() - t, "caching: {:.1f} s")
    rng = np.random.default_rng(0)

    def stage(n: int, net, loss_fn, cfg, make_batch, prepare_n: int, deliver_n: int) -> tuple:
        """One stage's batch preparation, network step and delivery by workers; returns the fixed batch."""
        b = cfg.batch_size
        say(f"stage{n}_prepare_ms", _prepare_ms(make_batch, prepare_n),
            f"stage {n}: a batch of {b} prepared in {{:.0f}} ms (one process)")
        x, y = (torch.from_numpy(a).to(args.device) for a in make_batch(rng))
        say(f"stage{n}_step_ms", 1000 * _step_seconds(net, x, y, loss_fn, args.steps, args.device, cfg.grad_clip),
            f"stage {n}: network step, batch {b}: {{:.0f}} ms")
        for w in args.workers:
            say(f"stage{n}_batches_per_s_{w}_workers", _delivered_per_s(make_batch, w, deliver_n * args.steps),
                f"stage {n}: {w} workers deliver {{:.1f}} batches of {b} a second")
        return x, y

    lcfg = L.LocalizationTraining(batch_size=8)
    net = build_network(lcfg.architecture()).to(args.device)
    loss = torch.nn.SmoothL1Loss(beta=1.0, reduction="sum")
    x, y = stage(1, net, loss, lcfg, lambda r: L.training_batch(lcases, lcfg, r), 3, 5)
    if args.device == "cuda":
        fixed_shape_speedups(args.device)
        say("stage1_step_benchmark_ms", 1000 * _step_seconds(net, x, y, loss, args.steps, args.device, lcfg.grad_clip),
            "stage 1: network step, batch 8, cudnn.benchmark: {:.0f} ms")
        say("stage1_step_bf16_ms", 1000 * _step_seconds(net, x, y, loss, args.steps, args.device, lcfg.grad_clip, amp=True),
            "stage 1: network step, batch 8, bf16 autocast: {:.0f} ms")

    scfg = S.SegmentationTraining(batch_size=4)
    stage(2, build_unet(scfg.architecture()).to(args.device), DiceCELoss(to_onehot_y=True, softmax=True, batch=True),
          scfg, lambda r: S.training_batch(scases, scfg, r), 2, 3)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
