"""Lateral radiographs reconstructed from CT: SynthSpine cases with their L1–L5 body boxes beside
real CTs (with their vertebra masks' outlines where given), as one figure.

Usage:
    python Utilities/radiograph_figure.py OUT.png --synthetic VERSE_DIR [--cases 2] [--real CT[:MASK] ...]

For example, with the shared data and a SynthSpine folder::

    python Utilities/radiograph_figure.py docs/figures/radiographs_drr.png --synthetic data/test \\
        --real ../shared/data/real-labelled/sub-verse008_ct.nii.gz:../shared/data/real-labelled/sub-verse008_seg-vert_msk.nii.gz \\
               ../shared/data/real-ct/crlm-ct-1004_bodyfov.nii.gz
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("output", type=Path)
    ap.add_argument("--synthetic", type=Path, required=True, help="VerSe-layout SynthSpine folder")
    ap.add_argument("--cases", type=int, default=2, help="synthetic cases showing L1-L5 whole")
    ap.add_argument("--real", nargs="*", default=[], help="real CT, or CT:MASK")
    ap.add_argument("--seed", type=int, default=0, help="seed of the drawn acquisitions")
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from VertebralFractureLib.anatomy import vertebra
    from VertebralFractureLib.io.readers import read_image, read_labelmap
    from VertebralFractureLib.synth.radiograph import (
        body_boxes,
        draw_params,
        label_shadows,
        lateral_radiograph,
    )

    lumbar = {"L1", "L2", "L3", "L4", "L5"}
    panels = []
    for truth_path in sorted(args.synthetic.glob("derivatives/*/*_genant.json")):
        truth = json.loads(truth_path.read_text(encoding="utf-8"))
        if not lumbar <= {v["name"] for v in truth if v.get("complete")}:
            continue
        sub = truth_path.parent.name
        ct = read_image(args.synthetic / "rawdata" / sub / f"{sub}_ct.nii.gz").volume
        rng = np.random.default_rng(args.seed + len(panels))
        img, geo = lateral_radiograph(ct, draw_params(rng), rng)
        grades = {v["name"]: v.get("grade") for v in truth}
        panels.append((f"SynthSpine {sub}", img, body_boxes(truth, geo), grades, None))
        if len(panels) >= args.cases:
            break
    for item in args.real:
        ct_path, _, mask_path = item.partition(":")
        ct = read_image(ct_path).volume
        rng = np.random.default_rng(args.seed)
        img, geo = lateral_radiograph(ct, draw_params(rng), rng)
        outlines = None
        if mask_path:  # each vertebra's projected mask, on the same detector grid
            shadows = label_shadows(read_labelmap(mask_path, ct), geo.pixel_mm, img.shape)
            outlines = {vertebra(lab).name: m for lab, m in shadows.items()}
        panels.append((f"real {Path(ct_path).name.split('.')[0]}", img, {}, {}, outlines))
    if not panels:
        print("nothing to show", file=sys.stderr)
        return 1
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 7.5))
    for ax, (title, img, boxes, grades, outlines) in zip(np.atleast_1d(axes), panels):
        ax.imshow(img, cmap="gray", vmin=0, vmax=1)
        for name, (x0, y0, x1, y1) in boxes.items():
            colour = "red" if (grades.get(name) or 0) >= 1 else "lime"
            ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color=colour, lw=1))
            ax.text(x1 + 4, (y0 + y1) / 2, f"{name} g{grades.get(name)}", color=colour, fontsize=7, va="center")
        for name, m in (outlines or {}).items():
            ax.contour(m, levels=[0.5], colors="yellow", linewidths=0.6)
            r, c = np.nonzero(m)
            if len(r):
                ax.text(c.max() + 4, r.mean(), name, color="yellow", fontsize=7, va="center")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=90)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
