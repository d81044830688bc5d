"""``vertebral-fracture train …``, ``evaluate …`` and ``bench``: the developer commands."""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("stage", choices=["localize"], help="which model to train")
    p.add_argument("--data", required=True, type=Path, help="VerSe-layout training folder (e.g. SynthSpine output)")
    p.add_argument("--val", type=Path, default=None, help="VerSe-layout validation folder (fixed, never trained on)")
    p.add_argument("-o", "--output", required=True, type=Path, help="run folder (checkpoints, log.csv); resumes if present")
    p.add_argument("--config", default="fast", choices=["fast", "seed"], help="named training settings")
    p.add_argument("--iterations", type=int, default=None)
    p.add_argument("--time-budget", type=float, default=None, help="stop after this many seconds (then save)")
    p.add_argument("--variant", default=None, choices=["ln+gn", "ln", "gn", "scn"], help="ablation: network variant")
    p.add_argument("--no-attention", action="store_true")
    p.add_argument("--no-residual", action="store_true")
    p.add_argument("--no-multiple-filtering", action="store_true")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--install", action="store_true", help="install the best weights into Resources/Models")


def cmd_train(args: argparse.Namespace, progress: Any) -> int:
    from VertebralFractureLib.models import select_device
    from VertebralFractureLib.training.localization import LocalizationTraining, train_localization

    overrides: dict[str, Any] = {}
    if args.iterations:
        overrides["iterations"] = args.iterations
    if args.variant:
        overrides["variant"] = args.variant
    if args.no_attention:
        overrides["attention"] = False
    if args.no_residual:
        overrides["residual"] = False
    if args.no_multiple_filtering:
        overrides["multiple_filtering"] = False
    cfg = LocalizationTraining.named(args.config, **overrides)
    device = select_device(args.device)
    print(f"training stage-1 localization on {device} ({cfg.iterations} iterations, config {args.config})", file=sys.stderr)
    best = train_localization(args.data, args.output, cfg, val_root=args.val, device=device,
                              log=lambda m: print(m, file=sys.stderr), time_budget_s=args.time_budget)
    if args.install:
        from VertebralFractureLib.training.install import install_model

        card = {"version": time.strftime("%Y%m%d"), "architecture": cfg.architecture(),
                "spacing_mm": [cfg.spacing_mm] * 3, "patch_size": list(cfg.patch_size),
                "classes": [int(x) for x in _channel_labels()], "sigma_mm": cfg.sigma_mm,
                "training_data": f"SynthSpine VerSe-layout folder {args.data.name} ({device}, config {args.config})",
                "metrics": {}}
        target = install_model("localization", best, card)
        print(f"installed {target}", file=sys.stderr)
    return 0


def _channel_labels() -> tuple[int, ...]:
    from VertebralFractureLib.localize import CHANNEL_LABELS

    return CHANNEL_LABELS


def add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("stage", choices=["localize"], help="which stage to evaluate")
    p.add_argument("--data", required=True, type=Path, help="held-out VerSe-layout folder with true centroids")
    p.add_argument("--weights", type=Path, default=None, help="a state_dict to evaluate instead of the installed model")
    p.add_argument("--output", type=Path, default=None, help="write the metrics and per-case results as JSON")
    p.add_argument("--threshold", type=float, nargs="*", default=None,
                   help="heatmap peak threshold(s) to evaluate (default: the model card's)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])


def cmd_evaluate(args: argparse.Namespace, progress: Any) -> int:
    import torch

    from VertebralFractureLib import models
    from VertebralFractureLib.io.readers import read_image
    from VertebralFractureLib.io.verse import list_cases, read_centroids
    from VertebralFractureLib.localize import build_network, localize
    from VertebralFractureLib.models import select_device
    from VertebralFractureLib.training.metrics import localization_metrics

    device = select_device(args.device)
    card = models.require("localization")
    net = build_network(card.architecture)
    state = torch.load(args.weights, map_location="cpu", weights_only=True) if args.weights \
        else models.load_state_dict("localization")[1]
    net.load_state_dict(state)
    thresholds = args.threshold or [None]
    preds: dict[Any, list] = {t: [] for t in thresholds}
    truths, per_case = [], []
    cases = list_cases(args.data)
    for k, case in enumerate(cases):
        ct = read_image(case.ct).volume
        truth = read_centroids(case.centroids, ct)
        truths.append(truth)
        for t in thresholds:
            t0 = time.perf_counter()
            found = localize(ct, device=device, model=(card, net), threshold=t)
            pred = {c.label: c.position_lps for c in found}
            preds[t].append(pred)
            per_case.append({"case": case.subject, "threshold": t, "seconds": round(time.perf_counter() - t0, 2),
                             "found": [int(c.label) for c in found], "truth": sorted(int(x) for x in truth),
                             **localization_metrics([pred], [truth])})
        progress("evaluate", (k + 1) / len(cases), case.subject)
    metrics = {str(t): localization_metrics(preds[t], truths) for t in thresholds}
    progress.close()
    print(json.dumps(metrics if len(thresholds) > 1 else metrics[str(thresholds[0])], indent=2))
    if args.output:
        args.output.write_text(json.dumps({"metrics": metrics, "cases": per_case}, indent=2))
    return 0


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", type=Path, help="CT to time (volume file or DICOM folder)")
    p.add_argument("--stages", default="localize", choices=["localize", "all"], help="what to time")
    p.add_argument("--repeat", type=int, default=3, help="timed runs after one warm-up")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])


def cmd_bench(args: argparse.Namespace, progress: Any) -> int:
    """Wall time per stage (median of ``--repeat`` runs after a warm-up) and peak memory."""
    import platform

    import torch

    from VertebralFractureLib.io.readers import read_image
    from VertebralFractureLib.localize import localize
    from VertebralFractureLib.models import select_device
    from VertebralFractureLib.pipeline import AnalysisConfig, analyze

    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    t0 = time.perf_counter()
    image = read_image(args.input).volume
    read_s = time.perf_counter() - t0
    times = []
    for _ in range(args.repeat + 1):
        t0 = time.perf_counter()
        if args.stages == "localize":
            found = localize(image, device=device)
            n = len(found)
        else:
            n = len(analyze(image, AnalysisConfig(device=args.device)).vertebrae)
        times.append(time.perf_counter() - t0)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report = {
        "input": args.input.name, "extent_mm": [round(x) for x in image.extent_mm()], "stages": args.stages,
        "device": device, "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "read_s": round(read_s, 2), "warmup_s": round(times[0], 2), "median_s": round(float(np.median(times[1:])), 2),
        "runs_s": [round(t, 2) for t in times[1:]], "vertebrae": n, "peak_rss_mb": round(peak_mb),
    }
    print(json.dumps(report, indent=2))
    return 0
