"""The input gate: is this image a CT the analysis can work on? Checked before any stage runs.

The readers (:mod:`VertebralFractureLib.io`) answer "is this file what it says it is" — format,
completeness, a declared size the file can hold. This module answers "can a spine analysis use it",
and refuses with a reason instead of letting a stage fail deep inside (an "internal error"),
allocate hundreds of GiB, or grade noise:

* **finite values** — NaN or infinite voxels are refused, not masked: replacing them would
  invent tissue, and an export that writes NaN has usually lost more than those voxels;
* **geometry** — spacing between :data:`MIN_SPACING_MM` and :data:`MAX_SPACING_MM` on every axis,
  at least :data:`MIN_VOXELS_PER_AXIS` voxels and :data:`MIN_EXTENT_MM` along every axis (room for
  one vertebra), at most :data:`MAX_VOXELS` voxels and :data:`MAX_EXTENT_MM` along any axis (the
  stages resample to about 1 mm: a 50 mm-spaced image would ask for hundreds of GiB);
* **Hounsfield units** — not one constant value; some voxels below water (:data:`LOW_HU`: fat is
  about -100 HU, air -1000 HU) and some of bone (at least :data:`BONE_HU`). An MR or PET image, or
  a CT stored without its rescale intercept (air at 0, water at 1000), has no negative values and
  is refused. Air itself is not demanded: a CT cropped tightly around the spine holds none, and
  fat alone already places the values on the Hounsfield scale.

The command line calls :func:`check_ct` on every CT it reads and :func:`check_geometry` on a
segmentation graded without a CT. Library users call them the same way; the readers do not, so
that masks, labelmaps and training data are still read as they are.
"""

from __future__ import annotations

import numpy as np

from VertebralFractureLib.errors import InputError
from VertebralFractureLib.volume import Volume

#: Smallest and largest voxel spacing accepted on any axis (mm).
MIN_SPACING_MM, MAX_SPACING_MM = 0.1, 10.0
#: Fewest voxels along any axis.
MIN_VOXELS_PER_AXIS = 4
#: Smallest field of view along any axis (mm): a lumbar vertebral body is about 25 mm high.
MIN_EXTENT_MM = 20.0
#: Largest field of view along any axis (mm): more than a whole-body CT of a tall adult.
MAX_EXTENT_MM = 2000.0
#: Most voxels accepted (a 512×512×3000 whole-body CT has 0.8 billion).
MAX_VOXELS = 1_500_000_000
#: Below this (water), a voxel is fat or air (HU).
LOW_HU = 0.0
#: From this up, a voxel is bone (or contrast, metal) (HU).
BONE_HU = 200.0
#: Share of voxels that must be below water and bone, with at least :data:`MIN_TISSUE_VOXELS` voxels each.
MIN_TISSUE_FRACTION = 1e-4
MIN_TISSUE_VOXELS = 27
#: Voxels looked at for the value checks of a large image (an even subsample).
_SAMPLE = 4_000_000


def check_geometry(volume: Volume, name: str) -> None:
    """Refuse a grid no analysis can use: spacing, size and field of view (see the module text).

    Args:
        volume: the image (or labelmap).
        name: how to name it in messages (a file name, never patient data).

    Raises:
        InputError: naming the bad value and the accepted range.
    """
    spacing = np.asarray(volume.spacing, dtype=float)
    axes = "xyz"
    for axis, s in zip(axes, spacing):
        if not np.isfinite(s) or s <= 0:
            raise InputError(f"'{name}' has a voxel spacing of {s:g} mm along {axis}; a positive spacing is needed")
        if not MIN_SPACING_MM <= s <= MAX_SPACING_MM:
            raise InputError(
                f"'{name}' has a voxel spacing of {s:g} mm along {axis}, outside the {MIN_SPACING_MM:g}–"
                f"{MAX_SPACING_MM:g} mm of a clinical CT (is the header's unit or spacing wrong?)"
            )
    size = volume.shape_xyz
    extent = spacing * np.asarray(size, dtype=float)
    for axis, n, e in zip(axes, size, extent):
        if n < MIN_VOXELS_PER_AXIS or e < MIN_EXTENT_MM:
            raise InputError(
                f"'{name}' is too small to hold a vertebra: {n} voxel(s), {e:.1f} mm along {axis} "
                f"(size {'×'.join(map(str, size))}); at least {MIN_VOXELS_PER_AXIS} voxels and "
                f"{MIN_EXTENT_MM:g} mm along every axis are needed"
            )
        if e > MAX_EXTENT_MM:
            raise InputError(
                f"'{name}' spans {e:.0f} mm along {axis} ({n} voxels of {e / n:g} mm), more than the "
                f"{MAX_EXTENT_MM:g} mm of any human body; is the spacing right?"
            )
    voxels = int(np.prod(size, dtype=np.int64))
    if voxels > MAX_VOXELS:
        raise InputError(
            f"'{name}' has {voxels:,} voxels (size {'×'.join(map(str, size))}), more than the "
            f"{MAX_VOXELS:,} supported; crop or resample it first"
        )


def check_values(volume: Volume, name: str) -> None:
    """Refuse values that are not a CT in Hounsfield units (see the module text).

    Raises:
        InputError: for NaN/infinite voxels, a constant image, nothing below water or no bone.
    """
    array = volume.array
    if array.size == 0:
        raise InputError(f"'{name}' holds no voxels")
    if array.dtype.kind == "f":
        finite = np.isfinite(array)
        bad = int(array.size - np.count_nonzero(finite))
        if bad:
            raise InputError(nonfinite_message(name, bad, array.size))
    lo, hi = float(array.min()), float(array.max())
    if lo == hi:
        raise InputError(f"'{name}' is a constant image (every voxel is {lo:g}); there is nothing to analyse")
    flat = array.reshape(-1)
    sample = flat[:: max(1, flat.size // _SAMPLE)]
    need = max(MIN_TISSUE_VOXELS, MIN_TISSUE_FRACTION * sample.size)
    low = int(np.count_nonzero(sample < LOW_HU))
    bone = int(np.count_nonzero(sample >= BONE_HU))
    if low < need:
        labels = array.dtype.kind in "iu" and lo >= 0 and hi <= 255
        guess = "a segmentation or mask given as the CT?" if labels else \
            "an MR or PET image, or a CT stored without its rescale intercept?"
        raise InputError(
            f"'{name}' does not look like a CT in Hounsfield units: its values run from {lo:g} to {hi:g} with "
            f"{'none' if low == 0 else 'almost none'} below {LOW_HU:g} (fat is about -100 HU, air -1000 HU) "
            f"— {guess}"
        )
    if bone < need:
        raise InputError(
            f"'{name}' shows no bone: {'no' if bone == 0 else 'almost no'} voxel reaches {BONE_HU:g} HU (values "
            f"{lo:g} to {hi:g}); a CT of the spine is needed"
        )


def nonfinite_message(name: str, bad: int, total: int) -> str:
    """The refusal of an image with ``bad`` NaN or infinite voxels out of ``total``."""
    return (f"'{name}' has {bad:,} voxel(s) ({100.0 * bad / max(total, 1):.2g} %) that are NaN or infinite; "
            "a CT needs a finite value in every voxel (they are refused, not filled in)")


def check_ct(volume: Volume, name: str) -> None:
    """The whole gate for a CT: :func:`check_geometry`, then :func:`check_values`.

    Args:
        volume: the CT as read.
        name: how to name it in messages (a file or folder name, never patient data).

    Raises:
        InputError: with the reason.
    """
    check_geometry(volume, name)
    check_values(volume, name)
