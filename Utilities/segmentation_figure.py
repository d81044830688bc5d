"""Sagittal and axial overlays of the stage-2 segmentation on CTs, for checking it by eye.

Usage:
    python Utilities/segmentation_figure.py OUT.png CT [CT ...] [--titles T ...] [--centroids F ...]

Runs the installed stages (localization and segmentation; ``VF_MODELS_DIR`` picks another models
folder) on each CT — or, with ``--centroids`` (one file per CT, ``-`` for none), segments around
given centroids (a ``.mrk.json`` point list or VerSe ``_ctd.json``) instead of localizing —,
resamples CT and labelmap onto an LPS-aligned 1 mm grid and shows, per CT, a sagittal slice that
follows the centroids' left–right position from level to level (a spine curving sideways stays in
the slice) and axial slices through a cranial and a caudal vertebra: each vertebra's outline in
white (normal) or red (fractured) with its name.
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
    ap.add_argument("--centroids", nargs="*", default=None, help="a centroid file per CT, '-' to localize")
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from VertebralFractureLib.anatomy import name_of
    from VertebralFractureLib.io.centroids import read_centroid_file
    from VertebralFractureLib.io.readers import read_image
    from VertebralFractureLib.pipeline import AnalysisConfig, analyze, default_stages, given_centroid_stages
    from VertebralFractureLib.preprocess import to_model_grid

    fig, axes = plt.subplots(3, len(args.cts), figsize=(5.5 * len(args.cts), 16), facecolor="black", squeeze=False,
                             gridspec_kw={"height_ratios": [3, 2, 2]})
    for k, path in enumerate(args.cts):
        ct = read_image(path).volume
        given = args.centroids[k] if args.centroids and k < len(args.centroids) else "-"
        stages = default_stages()[:2] if given == "-" else given_centroid_stages(read_centroid_file(given, ct))[:2]
        result = analyze(ct, AnalysisConfig(device="cpu"), stages=stages)
        grid = to_model_grid(ct, 1.0)
        lab = result.labelmap.resample_like(grid, interpolation="nearest", default_value=0).array
        fractured = {v.label for v in result.vertebrae if v.status == "fractured"}
        cents = {v.label: np.asarray(v.centroid_lps_mm) for v in result.vertebrae}
        title = args.titles[k] if args.titles and k < len(args.titles) else path.name
        # per axial row z, the left-right column: the centroids' x interpolated over their z
        nz = grid.shape_xyz[2]
        if cents:
            order = sorted(cents.values(), key=lambda c: c[2])
            z_mm = grid.origin[2] + np.arange(nz)
            x_mm = np.interp(z_mm, [c[2] for c in order], [c[0] for c in order])
        else:
            x_mm = np.full(nz, grid.index_to_lps(np.array(grid.shape_xyz) / 2)[0])
        xi = np.clip(np.round(x_mm - grid.origin[0]).astype(int), 0, grid.shape_xyz[0] - 1)
        rows = np.arange(nz)
        sag_img, sag_lab = grid.array[rows, :, xi], lab[rows, :, xi]
        ax = axes[0, k]
        extent = [grid.origin[1] - 0.5, grid.origin[1] + grid.shape_xyz[1] - 0.5,
                  grid.origin[2] - 0.5, grid.origin[2] + grid.shape_xyz[2] - 0.5]
        ax.imshow(sag_img, cmap="gray", vmin=-300, vmax=1200, origin="lower", extent=extent)
        _outlines(ax, sag_lab, fractured, extent)
        for label, c in cents.items():
            ax.plot(c[1], c[2], "+", color="#40c0ff", ms=6)
            ax.text(c[1] - 45, c[2], name_of(label), color="#ff5050" if label in fractured else "white",
                    fontsize=8, va="center")
        ax.set_title(f"{title}: sagittal (anterior left)", color="white", fontsize=9)
        ax.set_axis_off()
        ordered = sorted(cents)
        picks = [ordered[len(ordered) // 4], ordered[(3 * len(ordered)) // 4]] if cents else []
        for row, label in zip((1, 2), picks or [None, None]):
            ax = axes[row, k]
            if label is not None:
                zi = int(np.clip(round(grid.lps_to_index(cents[label])[2]), 0, nz - 1))
                extent_ax = [grid.origin[0] - 0.5, grid.origin[0] + grid.shape_xyz[0] - 0.5,
                             grid.origin[1] + grid.shape_xyz[1] - 0.5, grid.origin[1] - 0.5]
                ax.imshow(grid.array[zi], cmap="gray", vmin=-300, vmax=1200, extent=extent_ax)
                _outlines(ax, lab[zi], fractured, extent_ax, flip_rows=True)
                ax.plot(cents[label][0], cents[label][1], "+", color="#40c0ff", ms=6)
                ax.set_title(f"axial through {name_of(label)} (anterior up, patient left right)", color="white", fontsize=9)
            ax.set_axis_off()
        print(f"{path.name}: " + ", ".join(
            f"{v.name} ({v.status}, p={v.fracture_probability:.2f})" if v.fracture_probability is not None
            else f"{v.name} (not segmented)" for v in result.vertebrae))
    fig.suptitle("Stage-2 segmentation (white: normal, red: fractured; +: centroid)", color="white", fontsize=10)
    fig.tight_layout()
    fig.savefig(args.output, dpi=100, facecolor="black")
    return 0


def _outlines(ax, labels2d: np.ndarray, fractured: set[int], extent: list[float], flip_rows: bool = False) -> None:
    """Each label's outline on an image drawn with ``extent``."""
    h, w = labels2d.shape
    xs = np.linspace(extent[0] + 0.5, extent[1] - 0.5, w)
    ys = np.linspace(extent[2] + 0.5, extent[3] - 0.5, h) if not flip_rows else np.linspace(extent[3] + 0.5, extent[2] - 0.5, h)
    for label in np.unique(labels2d):
        if label == 0:
            continue
        ax.contour(xs, ys, (labels2d == label).astype(float), [0.5], linewidths=1.0,
                   colors="#ff4040" if int(label) in fractured else "#ffffff")


if __name__ == "__main__":
    sys.exit(main())
