"""Variants of an annotated real CT, to check that the analysis holds when the scan is taken differently.

Usage:
    python Utilities/real_variants.py OUT_DIR CT:ANNOTATION|CT:MASK:GRADES [...] [--only VARIANT ...]

For each CT, with its ``*_bodies.json`` annotation (LPS mm) or its VerSe vertebra mask and
``genant_grades.json``, it writes into ``OUT_DIR``:

* ``-slices2.5`` and ``-slices5``: thicker axial slices (the CT smoothed along its index axis closest
  to head-foot by a Gaussian of the new thickness's FWHM and resampled to it), where the CT's
  slices are thinner;
* ``-noise40``: Gaussian noise of 40 HU added (a lower dose);
* ``-flipped-storage``: the same voxels stored with the first two index axes reversed (as an
  LPS-ordered file is stored RAS-ordered); every voxel keeps its place in the patient;
* ``-sharp``: a sharp (bone or lung) reconstruction kernel, emulated by unsharp masking: the CT
  plus :data:`SHARP_GAIN` times its difference from a Gaussian blur of :data:`SHARP_SIGMA_MM` (edges
  overshoot, noise and trabeculae stand out);
* ``-tilt10``: the patient turned by :data:`TILT_DEG` degrees about the left–right axis through the
  image centre (a gantry tilt, a patient lying obliquely), on the same grid; what turns out of the
  field of view is lost, the mask and the annotated points turn alike.

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
#: Unsharp masking of the sharp-kernel variant: Gaussian σ (mm) and gain.
SHARP_SIGMA_MM = 1.0
SHARP_GAIN = 1.0
#: Rotation (degrees) of the tilted variant, about the patient's left–right axis.
TILT_DEG = 10.0
#: The tilted variant's name.
TILT_NAME = f"tilt{TILT_DEG:g}"
#: The variants' names (the thick-slice ones only where the CT's slices are thinner).
NAMES = tuple(f"slices{t:g}" for t in THICK_MM) + ("noise40", "flipped-storage", "sharp", TILT_NAME)
#: Air, for resampling outside the image.
AIR_HU = -1024


def variants(image, mask=None, only=None) -> dict[str, tuple[object, object]]:
    """The variants of one SimpleITK image (module docstring), each with its mask (None without one);
    ``only``: the names of the variants to make (default: all).

    The anatomy keeps its place in the patient in every variant but the tilted one; where a point of
    the original lies in that one, :func:`point_map` says."""
    import SimpleITK as sitk

    def wanted(name: str) -> bool:
        return not only or name in only

    out = {}
    sp = list(image.GetSpacing())
    # the slices are across the index axis that runs closest to the patient's head-foot axis
    axis = int(np.argmax(np.abs(np.asarray(image.GetDirection()).reshape(3, 3)[2])))
    for thick in THICK_MM:
        if sp[axis] >= thick or not wanted(f"slices{thick:g}"):
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

    def as_image(values: np.ndarray):
        new = sitk.GetImageFromArray(np.clip(values, -32768, 32767).astype(np.int16))
        new.CopyInformation(image)
        return new

    if wanted("noise40"):
        out["noise40"] = (as_image(arr + np.random.default_rng(0).normal(0, NOISE_HU, arr.shape)), mask)
    if wanted("flipped-storage"):
        flip = [True, True, False]  # origin and direction follow: the same anatomy
        out["flipped-storage"] = (sitk.Flip(image, flip), None if mask is None else sitk.Flip(mask, flip))
    if wanted("sharp"):
        blurred = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(sitk.Cast(image, sitk.sitkFloat32),
                                                                         SHARP_SIGMA_MM))
        out["sharp"] = (as_image(arr + SHARP_GAIN * (arr - blurred)), mask)
    if wanted(TILT_NAME):
        tilt = tilt_transform(image)
        out[TILT_NAME] = (sitk.Resample(image, image, tilt, sitk.sitkLinear, AIR_HU),
                          None if mask is None else sitk.Resample(mask, mask, tilt, sitk.sitkNearestNeighbor, 0))
    return out


def tilt_transform(image):
    """The tilted variant's resampling transform: output point → the original's point (LPS mm)."""
    import SimpleITK as sitk

    size = np.asarray(image.GetSize())
    centre = image.TransformContinuousIndexToPhysicalPoint([float(v) for v in (size - 1) / 2.0])
    return sitk.Euler3DTransform(centre, float(np.radians(TILT_DEG)), 0.0, 0.0)  # about LPS x (left-right)


def point_map(image, variant: str):
    """A function taking a point of ``image`` (LPS mm) to where its variant ``variant`` shows it."""
    inverse = tilt_transform(image).GetInverse() if variant == TILT_NAME else None

    def moved(point) -> tuple[float, float, float]:
        p = [float(v) for v in point]
        return tuple(float(v) for v in (inverse.TransformPoint(p) if inverse is not None else p))

    return moved


def moved_point(image, variant: str, point: tuple[float, float, float]) -> tuple[float, float, float]:
    """Where a point of ``image`` (LPS mm) lies in its variant ``variant``."""
    return point_map(image, variant)(point)


def moved_entry(moved, entry: dict) -> dict:
    """An annotation entry with its centre (and the point placed by eye, ``annotated_xyz``) taken
    through ``moved`` (:func:`point_map`)."""
    out = {**entry, **dict(zip("XYZ", moved((entry["X"], entry["Y"], entry["Z"]))))}
    if "annotated_xyz" in entry:
        out["annotated_xyz"] = list(moved(entry["annotated_xyz"]))
    return out


def main(argv: list[str] | None = None) -> int:
    import SimpleITK as sitk

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("output", type=Path)
    ap.add_argument("items", nargs="+", help="CT:ANNOTATION or CT:MASK:GRADES")
    ap.add_argument("--only", nargs="+", metavar="VARIANT",
                    help="write only these variants (e.g. sharp tilt10; default: all)")
    args = ap.parse_args(argv)
    unknown = sorted(set(args.only or ()) - set(NAMES))
    if unknown:
        ap.error(f"unknown variant(s) {', '.join(unknown)}; the variants are {', '.join(NAMES)}")
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
        for name, (variant, labels) in variants(image, mask, args.only).items():
            if mask is None:
                target = args.output / f"{stem}-{name}.nii.gz"
                moved = point_map(image, name)
                doc = {**source, "image": target.name, "vertebrae": [moved_entry(moved, v) for v in source["vertebrae"]]}
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
