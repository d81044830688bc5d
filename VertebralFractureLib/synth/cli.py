"""``vertebral-fracture synth``: generate SynthSpine datasets, the demo sample, or the realism report.

Human-readable lines go to stderr (stdout stays free for the JSON-lines progress reporter).

Wired into the top-level CLI as a sub-command: :func:`add_arguments` fills its parser and
:func:`run` executes it. Examples::

    vertebral-fracture synth --n 20 --seed 1 -o DIR
    vertebral-fracture synth --n 2 --levels T11 L2 --spacing 1.5 1.5 2 --fov 140 -o DIR
    vertebral-fracture synth --sample -o Resources/SampleData
    vertebral-fracture synth --compare-real ../shared/data/real-ct -o docs/figures
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from VertebralFractureLib.errors import InputError, OutputExistsError

#: ``progress(stage, fraction, message)``, as the top-level CLI's progress reporter takes it.
ProgressFn = Callable[[str, float, str], None]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``synth`` options to ``parser``."""
    parser.add_argument("-o", "--output", required=True, type=Path,
                        help="output folder (VerSe layout: rawdata/ and derivatives/), or the report folder")
    parser.add_argument("--n", type=int, default=20, help="number of cases (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed; case i uses an independent stream (default 0)")
    parser.add_argument("--workers", type=int, default=1, help="processes generating cases in parallel (default 1)")
    parser.add_argument("--levels", nargs=2, metavar=("FIRST", "LAST"),
                        help="fixed level range, e.g. T10 L4 (default: a random contiguous range)")
    parser.add_argument("--spacing", nargs=3, type=float, metavar=("X", "Y", "Z"),
                        help="fixed output spacing in mm (default: drawn, 0.5–1.0 in-plane, 0.6–5 mm slices)")
    parser.add_argument("--fov", type=float, help="fixed in-plane field of view in mm (default: drawn, 150–500)")
    parser.add_argument("--orientation", default="LPS",
                        help="axis codes of the written images (LPS, RAS, LPI, ...) or 'random' (default LPS)")
    parser.add_argument("--no-body", action="store_true",
                        help="spine in homogeneous soft tissue, no body/organs (fast, for tests)")
    parser.add_argument("--no-fractures", action="store_true", help="only normal vertebrae")
    parser.add_argument("--old-fractures", type=float, default=0.0, metavar="P",
                        help="share of random fractures drawn old (remodelled: thin sclerotic rim, smooth endplate) "
                             "rather than fresh (condensation band); written as fracture_age (default 0: all fresh)")
    parser.add_argument("--templates", nargs="+", type=Path, metavar="MASKS",
                        help="real vertebra masks (files or folders of *seg-vert*_msk.nii.gz, VerSe labels) whose "
                             "posterior elements replace the procedural ones at the levels they cover")
    parser.add_argument("--random-appearance", type=float, default=0.0, metavar="P",
                        help="share of cases whose tissue intensities and textures are randomised beyond "
                             "realistic CT (domain randomisation; default 0)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    parser.add_argument("--sample", action="store_true",
                        help="write the demo sample (synthspine-demo_*) into the output folder instead of a dataset")
    parser.add_argument("--compare-real", type=Path, metavar="REALDIR",
                        help="realism report: compare synthetic cases with the real CTs in REALDIR "
                             "(figures, realism.json and realism.md in the output folder)")
    parser.add_argument("--synthetic", type=Path, metavar="DIR",
                        help="with --compare-real: also summarise an existing synthetic dataset (VerSe layout)")


def _config(args: argparse.Namespace):
    from VertebralFractureLib.synth.config import SynthConfig

    kw: dict[str, Any] = {}
    if args.levels:
        kw["levels"] = tuple(s.upper() for s in args.levels)
    if args.spacing:
        kw["spacing"] = tuple(args.spacing)
    if args.fov:
        kw["fov"] = float(args.fov)
    if args.orientation:
        kw["orientation"] = args.orientation.upper() if args.orientation != "random" else "random"
    if args.no_body:
        kw["body"] = False
    if args.no_fractures:
        kw["p_fractured_case"] = 0.0
    if getattr(args, "old_fractures", 0.0):
        kw["p_old_fracture"] = float(args.old_fractures)
    if getattr(args, "random_appearance", 0.0):
        kw["p_random_appearance"] = float(args.random_appearance)
    if getattr(args, "templates", None):
        from VertebralFractureLib.synth.templates import load_bank, mask_files

        missing = [str(p) for p in args.templates if not Path(p).exists()]
        if missing:
            raise InputError(f"--templates: not found: {', '.join(missing)}")
        if not mask_files(tuple(str(p) for p in args.templates)):
            raise InputError("--templates: no vertebra masks (*seg-vert*_msk.nii.gz) found there")
        kw["templates"] = tuple(str(Path(p).resolve()) for p in args.templates)
        try:
            bank = load_bank(kw["templates"])
        except ValueError as err:
            raise InputError(f"--templates: {err}") from err
        if not bank:
            raise InputError("--templates: no usable vertebra in the masks (each cut by its field of view, too "
                             "coarse, or its body not told from its posterior elements)")
    try:
        return SynthConfig(**kw)
    except ValueError as err:
        raise InputError(str(err)) from err


def run(args: argparse.Namespace, progress: ProgressFn | None = None) -> int:
    """Execute ``synth``; returns the exit code (0 on success).

    Args:
        args: parsed options (see :func:`add_arguments`).
        progress: optional ``progress(stage, fraction, message)`` callback, called after each case.

    Raises:
        InputError: for invalid options.
        OutputExistsError: when the output folder is not empty and ``--overwrite`` is not given.
    """
    out: Path = args.output
    if args.compare_real is not None:
        from VertebralFractureLib.synth.realism import compare_real

        if not Path(args.compare_real).is_dir():
            raise InputError(f"--compare-real expects a folder of real CT volumes, got {args.compare_real}")
        report = compare_real(args.compare_real, out, synthetic_dir=args.synthetic, seed=args.seed)
        print(f"realism report written to {out} ({', '.join(sorted(report['files']))})", file=sys.stderr)
        return 0
    if args.n < 1:
        raise InputError(f"--n must be at least 1, got {args.n}")
    if args.workers < 1:
        raise InputError(f"--workers must be at least 1, got {args.workers}")
    if out.exists() and any(out.iterdir()) and not args.overwrite and not args.sample:
        raise OutputExistsError(f"{out} is not empty; use --overwrite to write into it")
    config = _config(args)
    if args.sample:
        from VertebralFractureLib.synth.sample import make_sample

        paths = make_sample(out)
        print(f"demo sample written: {', '.join(p.name for p in paths.values())}", file=sys.stderr)
        return 0

    from VertebralFractureLib.synth.generator import generate_dataset

    t0 = time.perf_counter()

    def report(done: int, total: int, meta: dict[str, Any]) -> None:
        frac = ", ".join(meta.get("fractured", [])) or "none"
        line = (f"{meta['subject']}: {meta['vertebrae'][0]}–{meta['vertebrae'][-1]} "
                f"({len(meta['vertebrae'])} vertebrae), spacing {_fmt(meta['spacing_mm'])} mm, "
                f"fractured: {frac}, {meta['timings_s']['total']:.1f} s")
        print(f"[{done}/{total}] {line}", file=sys.stderr, flush=True)
        if progress is not None:
            progress("synth", done / total, line)

    metas = generate_dataset(out, args.n, seed=args.seed, workers=args.workers, config=config, progress=report)
    n_frac = sum(len(m["fractured"]) for m in metas)
    n_vert = sum(len(m["vertebrae"]) for m in metas)
    print(f"{len(metas)} cases, {n_vert} vertebrae ({n_frac} fractured) written to {out} "
          f"in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


def _fmt(values: list[float]) -> str:
    return "×".join(f"{v:g}" for v in values)
