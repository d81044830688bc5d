"""Mid-sagittal keypoints and Genant grades of every vertebra of a vertebra labelmap, as one figure.

Usage:
    python Utilities/grading_figure.py SEG.nii.gz OUT.png [--ct CT.nii.gz] [--columns 4] [--keypoints auto]

Without a CT the mask itself is shown (bone grey on black), which is how the real whole-spine
masks of the shared data (no CT) are checked by eye.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("segmentation", type=Path)
    ap.add_argument("output", type=Path)
    ap.add_argument("--ct", type=Path, default=None)
    ap.add_argument("--columns", type=int, default=4)
    ap.add_argument("--keypoints", default="auto", choices=["auto", "learned", "geometric"])
    args = ap.parse_args(argv)

    from PIL import Image

    from VertebralFractureLib.figures import render_sagittal
    from VertebralFractureLib.io.readers import read_image, read_labelmap
    from VertebralFractureLib.pipeline import AnalysisConfig, GivenSegmentation, analyze, grading_stage

    if args.ct is not None:
        ct = read_image(args.ct).volume
        seg = read_labelmap(args.segmentation, reference=ct)
    else:
        seg = read_labelmap(args.segmentation)
        ct = seg.with_array(np.where(seg.array > 0, 400, -200).astype(np.int16))
    result = analyze(ct, AnalysisConfig(keypoints=args.keypoints), stages=[GivenSegmentation(seg), grading_stage()])
    tiles = []
    for v in result.vertebrae:
        if v.keypoints_lps_mm is None:
            print(f"{v.name}: not graded ({'; '.join(v.notes) or 'cut by the field of view'})")
            continue
        h = v.heights_mm
        print(f"{v.name}: Ha {h['anterior']:.1f}  Hm {h['middle']:.1f}  Hp {h['posterior']:.1f} mm  "
              f"grade {v.genant.grade} {v.genant.type or ''}  seed G {v.genant.seed_ratio:.2f}  keypoints {v.keypoint_method}")
        tiles.append(Image.open(io.BytesIO(render_sagittal(result, v.label))))
    if not tiles:
        print("no vertebra graded", file=sys.stderr)
        return 1
    w, h = tiles[0].size
    cols = min(args.columns, len(tiles))
    rows = (len(tiles) + cols - 1) // cols
    sheet = Image.new("RGB", (w * cols, h * rows))
    for k, tile in enumerate(tiles):
        sheet.paste(tile, ((k % cols) * w, (k // cols) * h))
    sheet.save(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
