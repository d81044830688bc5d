#!/usr/bin/env python3
"""Train all three stages in one go, each starting from the shipped weights: for a machine with a
GPU and many cores that is lent for a few minutes.

Steps (each printed with its wall time):

1. SynthSpine training and validation data, generated on all cores (skipped when ``--data`` names
   existing folders);
2. the three trainings at the same time (the GPU is shared; data preparation runs on the CPU
   cores), each ``vertebral-fracture train STAGE --init Resources/Models/<model>.pt`` with the whole
   training time, validated on the validation set;
3. the results collected flat in ``--out`` (seven files): ``<model>_best.pt``, ``<model>_log.csv``
   and ``train_all.json`` (commands, iterations reached, wall times, device, validation metrics,
   the end of each training's output).

Nothing is installed: back on the development machine each ``<model>_best.pt`` is evaluated on the
held-out test set and installed (``training/install.py``) only where it beats the shipped model,
with a line in its card's ledger.

Examples::

    # a GPU machine, 8 minutes in all
    python Utilities/train_all.py --out "$OUT" --minutes 8 --cases 240 --device cuda
    # the same on this CPU at a tiny budget (a check that the script works)
    python Utilities/train_all.py --out /tmp/ta --tiny
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: stage → (model file, iterations aimed at within the time budget on an H200); the three run at once,
#: each with the whole training time
STAGES = {
    "localize": ("localization", 6000),
    "segment": ("segmentation", 6000),
    "keypoints": ("keypoints", 4000),
}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "VertebralFractureLib", *args]


def _env(threads: int | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def _step(title: str) -> float:
    print(f"== {title}", flush=True)
    return time.monotonic()


def generate(out: Path, n: int, val_n: int, workers: int, tiny: bool) -> tuple[Path, Path]:
    """SynthSpine training and validation folders (VerSe layout) under ``out/data``."""
    data = out / "data"
    extra = ["--no-body", "--fov", "160", "--levels", "T11", "L3"] if tiny else ["--orientation", "random"]
    for name, count, seed in (("train", n, 7101), ("val", val_n, 7202)):
        folder = data / name
        if (folder / "rawdata").is_dir():
            continue
        subprocess.run(_cli("synth", "-o", str(folder), "--n", str(count), "--seed", str(seed),
                            "--workers", str(workers), "--spacing", "2", "2", "2", "--progress", "none", *extra),
                       check=True, env=_env(1))
    return data / "train", data / "val"


def train_all(train: list[Path], val: Path, out: Path, seconds: float, device: str, tiny: bool,
              threads: int) -> dict[str, dict]:
    """Start the three trainings together; wait for all; return what each reached."""
    runs = out / "runs"
    procs = {}
    for stage, (model, iterations) in STAGES.items():
        if tiny:
            iterations = 2
        init = REPO / "Resources" / "Models" / f"{model}.pt"
        cmd = _cli("train", stage, "--data", *map(str, train), "--val", str(val), "-o", str(runs / stage),
                   "--iterations", str(iterations), "--time-budget", f"{seconds:.0f}", "--device", device)
        if init.is_file():
            cmd += ["--init", str(init)]
        if stage == "keypoints":
            cmd += ["--workers", str(max(1, threads // 2))]
        if tiny:
            cmd += ["--batch-size", "1"]
        (runs / stage).mkdir(parents=True, exist_ok=True)
        log = open(runs / f"{stage}.log", "w")
        procs[stage] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env(threads)), log, cmd)
    result = {}
    for stage, (proc, log, cmd) in procs.items():
        code = proc.wait()
        log.close()
        model = STAGES[stage][0]
        run = runs / stage
        rows = list(csv.DictReader(open(run / "log.csv"))) if (run / "log.csv").exists() else []
        tail = (runs / f"{stage}.log").read_text(errors="replace").splitlines()[-15:]
        result[model] = {"command": " ".join(cmd[2:]), "exit": code, "iterations": int(rows[-1]["iteration"]) if rows else 0,
                         "last_validation": rows[-1] if rows else None, "output_tail": tail}
        if code == 0 and (run / "best.pt").exists():
            shutil.copy2(run / "best.pt", out / f"{model}_best.pt")
            shutil.copy2(run / "log.csv", out / f"{model}_log.csv")
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "train-all-out")),
                   help="folder for the weights, logs and train_all.json (default: $OUT)")
    p.add_argument("--minutes", type=float, default=8.0, help="the whole budget, generation included")
    p.add_argument("--cases", type=int, default=240, help="SynthSpine training cases to generate")
    p.add_argument("--val-cases", type=int, default=12)
    p.add_argument("--data", type=Path, nargs="+", default=None,
                   help="existing training folder(s) instead of generating (then --val is needed)")
    p.add_argument("--val", type=Path, default=None)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for generation")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--tiny", action="store_true",
                   help="a check on a CPU: 3 small cases, 2 iterations per stage")
    args = p.parse_args(argv)
    if args.data and not args.val:
        p.error("--data needs --val")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    summary: dict = {"python": platform.python_version(), "cores": os.cpu_count(), "minutes": args.minutes}
    try:
        import torch

        summary["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover
        summary["device"] = "unknown"
    t = _step("data")
    if args.data:
        train, val = list(args.data), args.val
    else:
        n, val_n = (3, 1) if args.tiny else (args.cases, args.val_cases)
        tr, val = generate(out, n, val_n, args.workers, args.tiny)
        train = [tr]
    summary["data_seconds"] = round(time.monotonic() - t, 1)
    left = args.minutes * 60 - (time.monotonic() - start) - 45  # validation at the end and copying
    if left < 30 and not args.tiny:
        print(f"only {left:.0f} s left for training after the data; give more --minutes", file=sys.stderr)
        return 1
    t = _step(f"training the three stages together, {max(left, 10):.0f} s")
    threads = max(1, (os.cpu_count() or 3) // 3)
    summary["models"] = train_all(train, val, out, max(left, 10.0), args.device, args.tiny, threads)
    summary["training_seconds"] = round(time.monotonic() - t, 1)
    summary["total_seconds"] = round(time.monotonic() - start, 1)
    (out / "train_all.json").write_text(json.dumps(summary, indent=2))
    if not args.tiny and not args.data:
        shutil.rmtree(out / "data", ignore_errors=True)
    shutil.rmtree(out / "runs", ignore_errors=True)  # the checkpoints stay behind; best.pt and the logs are kept
    for model, r in summary["models"].items():
        print(f"{model}: exit {r['exit']}, {r['iterations']} iterations, last validation {r['last_validation']}")
    print(f"done in {summary['total_seconds']:.0f} s; results in {out}")
    return 0 if all(r["exit"] == 0 for r in summary["models"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
