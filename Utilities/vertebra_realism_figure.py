"""Real vertebrae beside SynthSpine vertebrae of the same level, sagittal and axial, as one figure.

Usage:
    python Utilities/vertebra_realism_figure.py OUT.png CT MASK LABEL [CT MASK LABEL ...] [--seed 7]

With ``--templates MASKS``, a third pair of columns shows the same synthetic vertebra with real
posterior elements (``synth --templates``).

Each real vertebra is given by its CT, its vertebra mask and the mask's label (VerSe numbering:
20 = L1), or ``NAME:all`` for a mask of one vertebra in parts (every non-zero label, named NAME).
For example, with the shared data::

    python Utilities/vertebra_realism_figure.py docs/figures/synth_realism_vertebrae.png \\
        ../shared/data/vertebra-crops/verse004_L2_ct.nii.gz ../shared/data/vertebra-crops/verse004_L2_msk.nii.gz L2:all \\
        ../shared/data/real-labelled/sub-verse008_ct.nii.gz ../shared/data/real-labelled/sub-verse008_seg-vert_msk.nii.gz 21
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("output", type=Path)
    ap.add_argument("items", nargs="+", help="CT MASK LABEL, repeated")
    ap.add_argument("--seed", type=int, default=7, help="seed of the first synthetic case")
    ap.add_argument("--templates", nargs="+", default=(), metavar="MASKS",
                    help="real vertebra masks for SynthSpine's posterior elements: a third pair of columns")
    args = ap.parse_args(argv)
    if len(args.items) % 3:
        ap.error("give CT MASK LABEL triples")

    from VertebralFractureLib.anatomy import vertebra
    from VertebralFractureLib.io.readers import read_image, read_labelmap
    from VertebralFractureLib.synth.realism import vertebra_figure

    real = []
    for k in range(0, len(args.items), 3):
        ct_path, mask_path, which = Path(args.items[k]), Path(args.items[k + 1]), args.items[k + 2]
        ct = read_image(ct_path).volume
        mask = read_labelmap(mask_path, ct)
        if which.endswith(":all"):
            label = vertebra(which[:-4]).label
            mask = mask.with_array(((mask.array > 0) * label).astype("uint8"))
        else:
            label = int(which)
        real.append((ct_path.name.split("_ct")[0], ct, mask, label))
    print(f"wrote {vertebra_figure(real, args.output, seed=args.seed, templates=tuple(map(str, args.templates)))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
