"""Variants of an annotated real CT, to check that the analysis holds when the scan is taken differently.

Usage:
    python Utilities/real_variants.py OUT_DIR CT:ANNOTATION|CT:MASK:GRADES [...]

For each CT, with its ``*_bodies.json`` annotation (LPS mm) or its VerSe vertebra mask and
``genant_grades.json``, it writes into ``OUT_DIR``:

* ``-slices2.5`` and ``-slices5``: thicker axial slices (the CT smoothed along its index axis closest
  to head-foot by a Gaussian of the new thickness's FWHM and resampled to it), where the CT's
  slices are thinner;
* ``-noise40``: Gaussian noise of 40 HU added (a lower dose);
* ``-flipped-storage``: the same voxels stored with the first two index axes reversed (as an
  LPS-ordered file is stored RAS-ordered); every voxel keeps its place in the patient.

Each variant gets a copy of the annotation naming its image, or its own mask (resampled by nearest
neighbour, flipped alike) as subject ``<subject>-<variant>`` with that subject's grades in
``OUT_DIR/genant_grades.json``, so that ``vertebral-fracture evaluate real OUT_DIR`` scores them all.
The inputs are only read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

#: Slice thicknesses (mm) of the thick-slice variants.
THICK_MM = (2.5, 5.0)
#: Standard deviation (HU) of the added noise.
NOISE_HU = 40.0
#: Air, for resampling outside the image.
AIR_HU = -1024


def variants(image, mask=None) -> dict[str, tuple[object, object]]:
    """The variants of one SimpleITK image (module docstring), each with its mask (None without one)."""
    import SimpleITK as sitk

    out = {}
    sp = list(image.GetSpacing())
    # the slices are across the index axis that runs closest to the patient's head-foot axis
    axis = int(np.argmax(np.abs(np.asarray(image.GetDirection()).reshape(3, 3)[2])))
    for thick in THICK_MM:
        if sp[axis] >= thick:
            continue
        size, spacing, sigma = list(image.GetSize()), list(sp), [0.01] * 3
        size[axis], spacing[axis], sigma[axis] = int(size[axis] * sp[axis] / thick), thick, thick / 2.355
        smooth = sitk.SmoothingRecursiveGaussian(image, sigma)
        new = sitk.Resample(smooth, size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(), spacing,
                            image.GetDirection(), AIR_HU, image.GetPixelID())
        labels = None if mask is None else sitk.Resample(mask, size, sitk.Transform(), sitk.sitkNearestNeighbor,
                                                         image.GetOrigin(), spacing, image.GetDirection(), 0,
                                                         mask.GetPixelID())
        out[f"slices{thick:g}"] = (new, labels)
    arr = sitk.GetArrayFromImage(image).astype(np.float32)
    noisy = sitk.GetImageFromArray(np.clip(arr + np.random.default_rng(0).normal(0, NOISE_HU, arr.shape),
                                           -32768, 32767).astype(np.int16))
    noisy.CopyInformation(image)
    out["noise40"] = (noisy, mask)
    flip = [True, True, False]  # origin and direction follow: the same anatomy
    out["flipped-storage"] = (sitk.Flip(image, flip), None if mask is None else sitk.Flip(mask, flip))
    return out


def main(argv: list[str] | None = None) -> int:
    import SimpleITK as sitk

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("output", type=Path)
    ap.add_argument("items", nargs="+", help="CT:ANNOTATION or CT:MASK:GRADES")
    args = ap.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    inputs = {Path(p).resolve() for item in args.items for p in item.split(":")}
    grades_out = args.output / "genant_grades.json"
    table = json.loads(grades_out.read_text(encoding="utf-8")) if grades_out.exists() else {"grades": {}}
    for item in args.items:
        parts = item.split(":")
        if len(parts) not in (2, 3):
            ap.error(f"{item}: expected CT:ANNOTATION or CT:MASK:GRADES")
        image = sitk.ReadImage(parts[0])
        mask = sitk.ReadImage(parts[1]) if len(parts) == 3 else None
        stem = Path(parts[0]).name.split(".")[0]
        subject = stem[: -len("_ct")] if stem.endswith("_ct") else stem
        source = json.loads(Path(parts[-1]).read_text(encoding="utf-8"))  # the annotation, or the grade table
        for name, (variant, labels) in variants(image, mask).items():
            if mask is None:
                target = args.output / f"{stem}-{name}.nii.gz"
                doc = {**source, "image": target.name}
                written = [(target, variant), (args.output / f"{stem}-{name}_bodies.json", doc)]
            else:
                target = args.output / f"{subject}-{name}_ct.nii.gz"
                written = [(target, variant), (args.output / f"{subject}-{name}_seg-vert_msk.nii.gz", labels)]
                table["grades"][f"{subject}-{name}"] = source["grades"].get(subject, {})
            for path, content in written:
                if path.resolve() in inputs:
                    ap.error(f"{path} would overwrite an input")
                if isinstance(content, dict):
                    path.write_text(json.dumps(content, indent=1) + "\n", encoding="utf-8")
                else:
                    sitk.WriteImage(content, str(path))
            print(f"wrote {target.name} (spacing {', '.join(f'{v:g}' for v in variant.GetSpacing())} mm)")
    if table["grades"]:
        table["note"] = "Genant grades of the variants, copied from their source subjects"
        grades_out.write_text(json.dumps(table, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
