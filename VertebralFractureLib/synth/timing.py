"""Timing of SynthSpine: ``python -m VertebralFractureLib.synth.timing [--repeat N]``.

Generates 17-vertebra cases (T1–L5) at 1 mm isotropic with a spine (250 mm) and a body (400 mm)
field of view, and a random default case, and prints the seconds per stage (in memory, without
writing files; writing a compressed NIfTI adds about 1–3 s per case).
"""

from __future__ import annotations

import argparse
import os
import time

from VertebralFractureLib.synth.config import SynthConfig
from VertebralFractureLib.synth.generator import generate_case

CASES = {
    "T1-L5, 1 mm, 250 mm FOV": SynthConfig(levels=("T1", "L5"), spacing=(1.0, 1.0, 1.0), fov=250.0, p_cut=0.0),
    "T1-L5, 1 mm, 400 mm FOV": SynthConfig(levels=("T1", "L5"), spacing=(1.0, 1.0, 1.0), fov=400.0, p_cut=0.0),
    "T1-L5, 0.8 x 0.8 x 2 mm, 400 mm FOV": SynthConfig(levels=("T1", "L5"), spacing=(0.8, 0.8, 2.0), fov=400.0,
                                                       p_cut=0.0),
}


def main() -> None:  # pragma: no cover - a measurement script
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}, threads: {args.threads}")
    for name, cfg in CASES.items():
        for r in range(args.repeat):
            t0 = time.perf_counter()
            case = generate_case(100 + r, cfg, threads=args.threads)
            dt = time.perf_counter() - t0
            size = "x".join(str(n) for n in case.ct.shape_xyz)
            print(f"{name}: {dt:5.1f} s  output {size}  working grid {case.meta['working_grid']['shape']}  "
                  f"stages {case.meta['timings_s']}")


if __name__ == "__main__":  # pragma: no cover
    main()
