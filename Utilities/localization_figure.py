"""Sagittal overlays of stage-1 centroids on CTs, for checking localization by eye.

Usage:
    python Utilities/localization_figure.py OUT.png CT [CT ...] [--weights RUN/best.pt] [--threshold T]

Each CT is resampled onto an LPS-aligned 1 mm grid; the panel shows a 5 mm thick sagittal slab
(mean) through the median left-right position of the found centroids (bone window), with every
centroid, its name and its score. ``--weights`` uses a stage-1 state_dict instead of the installed
model (architecture and spacing from its run folder's ``config.json``) and ``--threshold`` a
detection threshold instead of the model card's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("output", type=Path)
    ap.add_argument("cts", type=Path, nargs="+")
    ap.add_argument("--titles", nargs="*", default=None)
    ap.add_argument("--weights", type=Path, default=None, help="stage-1 state_dict instead of the installed model")
    ap.add_argument("--threshold", type=float, default=None, help="detection threshold instead of the model card's")
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from VertebralFractureLib.io.readers import read_image
    from VertebralFractureLib.localize import is_complete, localize
    from VertebralFractureLib.preprocess import to_model_grid
    from VertebralFractureLib.training.commands import network

    model = network("localization", args.weights)

    fig, axes = plt.subplots(1, len(args.cts), figsize=(5.5 * len(args.cts), 9), facecolor="black", squeeze=False)
    for k, path in enumerate(args.cts):
        ct = read_image(path).volume
        found = localize(ct, model=model, threshold=args.threshold)
        grid = to_model_grid(ct, 1.0)
        ax = axes[0, k]
        if found:
            x_mm = float(np.median([c.position_lps[0] for c in found]))
        else:
            x_mm = float(grid.index_to_lps(np.array(grid.shape_xyz) / 2)[0])
        xi = int(round(grid.lps_to_index([x_mm, 0, 0])[0]))
        slab = grid.array[:, :, max(0, xi - 2): xi + 3].mean(axis=2)  # (z, y)
        extent = [grid.origin[1] - 0.5, grid.origin[1] + slab.shape[1] - 0.5,
                  grid.origin[2] - 0.5, grid.origin[2] + slab.shape[0] - 0.5]
        # anterior (−y in LPS) on the left, superior up
        ax.imshow(slab, cmap="gray", vmin=-300, vmax=1200, origin="lower", extent=extent, aspect="equal")
        for c in found:
            color = "#40ff60" if is_complete(c.position_lps, ct) else "#ffb000"
            ax.plot(c.position_lps[1], c.position_lps[2], "o", ms=5, color=color)
            ax.text(c.position_lps[1] + 6, c.position_lps[2], f"{c.name if hasattr(c, 'name') else _name(c.label)}"
                    f" {c.score:.2f}", color=color, fontsize=8, va="center")
        title = args.titles[k] if args.titles and k < len(args.titles) else path.name
        ax.set_title(title, color="white", fontsize=9)
        ax.set_axis_off()
        print(f"{path.name}: " + ", ".join(f"{_name(c.label)} ({c.score:.2f})" for c in found))
    fig.suptitle("Stage-1 centroids (green: complete, orange: near the field-of-view edge); "
                 "sagittal 5 mm slab, anterior left", color="white", fontsize=10)
    fig.tight_layout()
    fig.savefig(args.output, dpi=110, facecolor="black")
    return 0


def _name(label: int) -> str:
    from VertebralFractureLib.anatomy import name_of

    return name_of(label)


if __name__ == "__main__":
    sys.exit(main())
