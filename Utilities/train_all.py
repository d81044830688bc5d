#!/usr/bin/env python3
"""Train the CT stages in one go on a machine with a GPU and many cores that is lent for a few minutes.

Steps (each printed with its wall time):

1. SynthSpine data generated on all cores, one kind per use (skipped when ``--data`` names existing
   folders): ``ct`` (2 mm, random orientations: stage 1), ``seg`` (1.25 mm, 200 mm field of view, real
   posterior elements with ``--templates``: stage 2) and ``kp`` (160 mm field of view, drawn spacing:
   stage-3 keypoints), each with a fixed validation set (stage 1 the seed-202 set of its card, stage
   2 the seed-505 set);
2. the cases brought onto the stage-1 and stage-2 model grids on all cores (cached);
3. the chosen runs (``--runs``) at the same time: the GPU is shared, the training samples are prepared
   ahead by worker processes on the CPU cores (``train … --workers``); every run gets the whole
   training time and its learning rate decays over it (``train … --time-budget``);
4. the results collected flat in ``--out``: ``<run>_best.pt`` per run and ``train_all.json`` (commands,
   iterations reached, wall times, device, the validation log, the end of each run's output) — few
   files, as a lent machine gives back only a handful.

Nothing is installed: back on the development machine each ``<run>_best.pt`` is evaluated on the
held-out test set and installed (``training/install.py``) only where it beats the shipped model, with a
line in its card's ledger.

Examples::

    # a GPU machine, 8 minutes in all
    python Utilities/train_all.py --out "$OUT" --minutes 8 --device cuda --runs localize segment \\
        --init segment=weights/segmentation-synthetic.pt --templates masks/*.nii.gz
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

#: run → stage, model file, data kind, start ("shipped" weights or scratch), training options, share
#: of the CPU cores preparing its samples (stage 2's crops cost the most)
RUNS = {
    "localize": {"stage": "localize", "model": "localization", "data": "ct", "init": "shipped",
                 "options": ["--batch-size", "8", "--lr", "1e-3", "--validate-every", "1000"], "cores": 0.2},
    "localize-scratch": {"stage": "localize", "model": "localization", "data": "ct", "init": None,
                         "options": ["--batch-size", "8", "--lr", "2e-3", "--validate-every", "1000"], "cores": 0.2},
    "segment": {"stage": "segment", "model": "segmentation", "data": "seg", "init": "shipped",
                "options": ["--batch-size", "4", "--lr", "1e-3", "--validate-every", "500"], "cores": 0.5},
    "keypoints": {"stage": "keypoints", "model": "keypoints", "data": "kp", "init": "shipped",
                  "options": ["--validate-every", "500"], "cores": 0.25},
}
DEFAULT_RUNS = ("localize", "segment", "keypoints")

#: data kind → synth options, training seed, validation seed and size
DATA = {
    "ct": (["--spacing", "2", "2", "2", "--orientation", "random"], 7101, 202, 12),
    "seg": (["--spacing", "1.25", "1.25", "1.25", "--fov", "200", "--orientation", "random"], 7301, 505, 10),
    "kp": (["--fov", "160", "--orientation", "random"], 7501, 7502, 10),
}
TINY = ["--no-body", "--fov", "160", "--levels", "T11", "L3", "--spacing", "2", "2", "2"]
#: iterations when the time budget decides (each run stops when its time is spent)
ENOUGH = 1_000_000


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


def generate(out: Path, kinds: set[str], cases: dict[str, int], workers: int, tiny: bool,
             templates: list[Path]) -> dict[str, tuple[Path, Path]]:
    """SynthSpine training and validation folders (VerSe layout) under ``out/data``, per data kind."""
    folders = {}
    for kind in sorted(kinds):
        options, seed, val_seed, val_n = DATA[kind]
        if tiny:
            options = TINY
        if kind in ("seg", "kp") and templates and not tiny:
            options = [*options, "--templates", *map(str, templates)]
        pair = []
        for name, count, s in ((f"{kind}-train", 3 if tiny else cases[kind], seed),
                               (f"{kind}-val", 1 if tiny else val_n, val_seed)):
            folder = out / "data" / name
            if not (folder / "rawdata").is_dir():
                subprocess.run(_cli("synth", "-o", str(folder), "--n", str(count), "--seed", str(s),
                                    "--workers", str(workers), "--progress", "none", *options),
                               check=True, env=_env(1))
            pair.append(folder)
        folders[kind] = (pair[0], pair[1])
    return folders


def cache_all(data: dict[str, tuple[list[Path], Path]], workers: int) -> None:
    """Bring every stage-1 and stage-2 case onto its model grid once, on all cores, before the runs
    start (each run would otherwise do it with its own few workers)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from VertebralFractureLib.training import localization, segmentation

    for kind, (train, val) in data.items():
        for folder in [*train, val]:
            if kind == "ct":
                localization.cache_cases(folder, localization.LocalizationTraining().spacing_mm, workers=workers)
            elif kind == "seg":
                segmentation.cache_cases(folder, segmentation.SegmentationTraining().spacing_mm, workers=workers)


def _log_rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(open(path))) if path.exists() else []


def train_runs(runs: list[str], data: dict[str, tuple[list[Path], Path]], out: Path, seconds: float, device: str,
               tiny: bool, cores: int, inits: dict[str, Path]) -> dict[str, dict]:
    """Start the runs together; wait for all; return what each reached and copy its best weights."""
    folder = out / "runs"
    procs = {}
    for run in runs:
        spec = RUNS[run]
        train, val = data[spec["data"]]
        init = inits.get(run) or (REPO / "Resources" / "Models" / f"{spec['model']}.pt"
                                  if spec["init"] == "shipped" else None)
        workers = 1 if tiny else max(1, int(spec["cores"] * cores))
        cmd = _cli("train", spec["stage"], "--data", *map(str, train), "--val", str(val), "-o", str(folder / run),
                   "--iterations", "2" if tiny else str(ENOUGH), "--time-budget", f"{seconds:.0f}",
                   "--device", device, "--workers", str(workers), *spec["options"])
        if tiny:
            cmd += ["--batch-size", "1", "--validate-every", "1"]
        if init is not None and Path(init).is_file():
            cmd += ["--init", str(init)]
        (folder / run).mkdir(parents=True, exist_ok=True)
        log = open(folder / f"{run}.log", "w")
        procs[run] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env(2)), log, cmd)
    result = {}
    for run, (proc, log, cmd) in procs.items():
        code = proc.wait()
        log.close()
        rows = _log_rows(folder / run / "log.csv")
        tail = (folder / f"{run}.log").read_text(errors="replace").splitlines()[-15:]
        result[run] = {"model": RUNS[run]["model"], "command": " ".join(cmd[2:]), "exit": code,
                       "iterations": int(rows[-1]["iteration"]) if rows else 0, "log": rows, "output_tail": tail}
        if code == 0 and (folder / run / "best.pt").exists():
            shutil.copy2(folder / run / "best.pt", out / f"{run}_best.pt")
    return result


def _inits(pairs: list[str]) -> dict[str, Path]:
    inits = {}
    for pair in pairs:
        run, sep, path = pair.partition("=")
        if not sep or run not in RUNS:
            raise SystemExit(f"--init takes RUN=WEIGHTS with RUN one of {', '.join(RUNS)}; got {pair!r}")
        if not Path(path).is_file():
            raise SystemExit(f"--init {run}: no file {path}")
        inits[run] = Path(path).resolve()
    return inits


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "train-all-out")),
                   help="folder for the weights and train_all.json (default: $OUT)")
    p.add_argument("--minutes", type=float, default=8.0, help="the whole budget, generation included")
    p.add_argument("--runs", nargs="+", default=list(DEFAULT_RUNS), choices=list(RUNS),
                   help=f"the trainings to run together (default: {' '.join(DEFAULT_RUNS)})")
    p.add_argument("--init", nargs="+", default=[], metavar="RUN=WEIGHTS",
                   help="start a run from these weights instead of its default (shipped or scratch)")
    p.add_argument("--cases", type=int, default=600, help="SynthSpine cases for stage 1 (2 mm)")
    p.add_argument("--seg-cases", type=int, default=240, help="SynthSpine cases for stage 2 (1.25 mm)")
    p.add_argument("--kp-cases", type=int, default=160, help="SynthSpine cases for the keypoints")
    p.add_argument("--templates", type=Path, nargs="+", default=[],
                   help="real vertebra masks whose posterior elements stage-2 and keypoint cases wear "
                        "(synth --templates)")
    p.add_argument("--data", type=Path, nargs="+", default=None,
                   help="existing training folder(s) for every run instead of generating (then --val is needed)")
    p.add_argument("--val", type=Path, default=None)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="CPU cores: processes for generation, shared out among the runs' sample workers")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--tiny", action="store_true",
                   help="a check on a CPU: 3 small cases, 2 iterations per run")
    args = p.parse_args(argv)
    if args.data and not args.val:
        p.error("--data needs --val")
    inits = _inits(args.init)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    summary: dict = {"python": platform.python_version(), "cores": os.cpu_count(), "minutes": args.minutes,
                     "runs": args.runs}
    try:
        import torch

        summary["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        summary["torch"] = torch.__version__
    except ImportError:  # pragma: no cover
        summary["device"] = "unknown"
    t = _step("data")
    kinds = {RUNS[r]["data"] for r in args.runs}
    if args.data:
        data = {k: (list(args.data), args.val) for k in kinds}
    else:
        made = generate(out, kinds, {"ct": args.cases, "seg": args.seg_cases, "kp": args.kp_cases},
                        args.workers, args.tiny, args.templates)
        data = {k: ([tr], val) for k, (tr, val) in made.items()}
    summary["data"] = {k: [str(x) for x in tr] + [str(val)] for k, (tr, val) in data.items()}
    summary["generation_seconds"] = round(time.monotonic() - t, 1)
    cache_all(data, args.workers)
    summary["data_seconds"] = round(time.monotonic() - t, 1)  # generation and caching
    left = args.minutes * 60 - (time.monotonic() - start) - 60  # caching, the last validation, copying
    if left < 30 and not args.tiny:
        print(f"only {left:.0f} s left for training after the data; give more --minutes", file=sys.stderr)
        return 1
    t = _step(f"training {', '.join(args.runs)} together, {max(left, 10):.0f} s")
    summary["models"] = train_runs(args.runs, data, out, max(left, 10.0), args.device, args.tiny, args.workers, inits)
    summary["training_seconds"] = round(time.monotonic() - t, 1)
    summary["total_seconds"] = round(time.monotonic() - start, 1)
    (out / "train_all.json").write_text(json.dumps(summary, indent=2))
    if not args.tiny and not args.data:
        shutil.rmtree(out / "data", ignore_errors=True)
    shutil.rmtree(out / "runs", ignore_errors=True)  # the checkpoints stay behind; best.pt and the logs are kept
    for run, r in summary["models"].items():
        last = r["log"][-1] if r["log"] else None
        print(f"{run}: exit {r['exit']}, {r['iterations']} iterations, last validation {last}")
    print(f"done in {summary['total_seconds']:.0f} s; results in {out}")
    return 0 if all(r["exit"] == 0 for r in summary["models"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
