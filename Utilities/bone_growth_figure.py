"""The manual mask, stage 2's outline and the outline completed into the bone, side by side.

Usage:
    python Utilities/bone_growth_figure.py OUT.png CT MASK [CT MASK ...] [--titles T ...] [--axial NAME ...]

For each CT with its VerSe-style vertebra mask: stage 2 (the installed model; ``VF_MODELS_DIR``
picks another folder, e.g. a model that never saw the subject) segments around the mask's centres
of mass; the figure shows, per case, a sagittal slice that follows the spine (anterior left) and an
axial slice through one vertebra (``--axial``, default the middle one), each as the manual mask, the
network's outline and the completed outline (``VertebralFractureLib.bone_growth``), with each
vertebra's Dice against the mask in the titles.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("output", type=Path)
    ap.add_argument("pairs", type=Path, nargs="+", help="CT MASK [CT MASK ...]")
    ap.add_argument("--titles", nargs="*", default=None)
    ap.add_argument("--axial", nargs="*", default=None, help="per case, the vertebra (e.g. L3) of the axial slice")
    args = ap.parse_args(argv)
    if len(args.pairs) % 2:
        ap.error("give a mask for every CT")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from VertebralFractureLib import models, segment
    from VertebralFractureLib.anatomy import name_of, vertebra
    from VertebralFractureLib.io.readers import read_image, read_labelmap
    from VertebralFractureLib.networks.unet import build_unet
    from VertebralFractureLib.preprocess import to_model_grid
    from VertebralFractureLib.slices import mask_centres
    from VertebralFractureLib.training.real import dice_by_label

    card, net = models.load_network("segmentation", build_unet)
    net.eval()
    cases = list(zip(args.pairs[0::2], args.pairs[1::2]))
    fig, axes = plt.subplots(2 * len(cases), 3, figsize=(15, 9.5 * len(cases)), facecolor="black", squeeze=False,
                             gridspec_kw={"height_ratios": [3, 2] * len(cases)})
    cmap = plt.get_cmap("tab10")
    for k, (ct_path, mask_path) in enumerate(cases):
        ct = read_image(ct_path).volume
        true = read_labelmap(mask_path, ct)
        ta = np.asarray(true.array)
        labels = [int(x) for x in np.unique(ta) if x]
        cents = mask_centres(true, labels)
        network, _, _ = segment.segment(ct, cents, model=(card, net), tta=False)
        completed = segment.grow_outlines(np.asarray(network.array), ct, card, cents)
        maps = {"manual mask": ta, "network's outline": np.asarray(network.array), "completed outline": completed}
        dice = {name: np.mean([d["dice"] for d in dice_by_label(m, ta, labels).values()]) for name, m in maps.items()}
        grid = to_model_grid(ct, 1.0)
        img = grid.array
        on_grid = {name: ct.with_array(m).resample_like(grid, interpolation="nearest", default_value=0).array
                   for name, m in maps.items()}
        nz = grid.shape_xyz[2]
        order = sorted(cents.values(), key=lambda c: c[2])
        z_mm = grid.origin[2] + np.arange(nz)
        xi = np.clip(np.round(np.interp(z_mm, [c[2] for c in order], [c[0] for c in order]) - grid.origin[0]).astype(int),
                     0, grid.shape_xyz[0] - 1)
        rows = np.arange(nz)
        pick = args.axial[k] if args.axial and k < len(args.axial) else name_of(labels[len(labels) // 2])
        lab_ax = vertebra(pick).label if pick in [name_of(x) for x in labels] else labels[len(labels) // 2]
        zi = int(np.clip(round(grid.lps_to_index(cents[lab_ax])[2]), 0, nz - 1))
        title = args.titles[k] if args.titles and k < len(args.titles) else ct_path.name
        for col, (name, m) in enumerate(on_grid.items()):
            for row, (image, lab2d, origin) in enumerate(((img[rows, :, xi], m[rows, :, xi], "lower"),
                                                          (img[zi], m[zi], "upper"))):
                ax = axes[2 * k + row, col]
                ax.imshow(image, cmap="gray", vmin=-300, vmax=1200, origin=origin)
                colours = np.zeros((*lab2d.shape, 4))
                for lab in labels:
                    colours[lab2d == lab] = (*cmap(lab % 10)[:3], 0.45)
                ax.imshow(colours, origin=origin)
                ax.set_axis_off()
                where = "sagittal, anterior left" if row == 0 else f"axial through {name_of(lab_ax)}, anterior up"
                ax.set_title(f"{title}: {name} ({where})" + (f"\nmean Dice {dice[name]:.3f}" if col else ""),
                             color="white", fontsize=9)
        print(f"{ct_path.name}: " + ", ".join(f"{n} {d:.3f}" for n, d in dice.items()))
    fig.tight_layout()
    fig.savefig(args.output, dpi=80, facecolor="black")
    return 0


if __name__ == "__main__":
    sys.exit(main())
