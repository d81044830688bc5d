"""Stage-2 Dice on real single-vertebra CT crops with true masks (``../shared/data/vertebra-crops``).

Usage:
    python Utilities/real_crop_dice.py [CROPS_DIR] [--weights RUN/best.pt]

The crop is segmented from its true centroid (a crop holds one vertebra, too little for stage 1);
the vertebra's voxels are compared with the true mask in the crop's own geometry. Uses the
installed ``segmentation`` model, or a training run's weights with ``--weights``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

#: crop → (CT file, mask file, mask labels that make up the vertebra, VerSe label)
CROPS = {
    "verse004_L2": ("verse004_L2_ct.nii.gz", "verse004_L2_msk.nii.gz", (1, 2, 3, 4), 21),
    "sub-ct_label-22": ("sub-ct_label-22_ct.nii.gz", "sub-ct_seg-vert_label-22_msk.nii.gz", (22,), 22),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("crops", type=Path, nargs="?", default=Path(__file__).resolve().parents[1].parent / "shared" / "data" / "vertebra-crops")
    ap.add_argument("--weights", type=Path, default=None)
    args = ap.parse_args(argv)

    from scipy import ndimage

    from VertebralFractureLib.io.readers import read_image, read_labelmap
    from VertebralFractureLib.segment import segment
    from VertebralFractureLib.training.commands import network
    from VertebralFractureLib.training.metrics import segmentation_metrics

    model = network("segmentation", args.weights)
    for name, (ct_file, mask_file, parts, label) in CROPS.items():
        ct = read_image(args.crops / ct_file).volume
        truth = np.isin(read_labelmap(args.crops / mask_file, ct).array, parts)
        centroid = ct.zyx_to_lps(np.array(ndimage.center_of_mass(truth)))
        labelmap, probs, _ = segment(ct, {label: centroid}, model=model)
        m = segmentation_metrics(labelmap.array == label, truth, tuple(ct.spacing[::-1]))
        print(f"{name}: Dice {m['dice']:.3f}, precision {m['precision']:.3f}, recall {m['recall']:.3f}, "
              f"ASSD {m['assd_mm']:.2f} mm, MSSD {m['mssd_mm']:.2f} mm, fracture probability "
              f"{probs.get(label, float('nan')):.2f}, spacing {tuple(round(s, 2) for s in ct.spacing)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
