"""Preprocessing shared by training and inference (one place, so both see the same input).

* The CT is resampled onto an **LPS-aligned grid** (identity direction) at the model's spacing,
  covering the input's whole field of view, so a network always sees axial slices with the
  patient's left along +x, posterior along +y and superior along +z, whatever the file's
  orientation (sagittal reconstructions, flipped axes, oblique series).
* Before down-sampling, a Gaussian anti-aliasing filter (σ = 0.4 × the spacing ratio, in voxels;
  the seed's "Gaussian filter") removes detail the coarse grid cannot hold.
* Intensities: HU clipped to [−1000, 1500] and divided by 1000. The seed normalises each image by
  its own mean and variance (Eq. 19); a fixed scale is used here instead because the mean and
  variance of a CT depend on its field of view (a 150 mm spine reconstruction versus a 500 mm
  body), which would shift bone intensities between scans.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from VertebralFractureLib.volume import Volume

HU_RANGE: tuple[float, float] = (-1000.0, 1500.0)
HU_SCALE = 1000.0
AIR_HU = -1024.0


def aligned_grid(volume: Volume, spacing_mm: float | Sequence[float], margin_mm: float = 0.0) -> Volume:
    """An empty LPS-aligned grid at ``spacing_mm`` covering ``volume``'s field of view."""
    spacing = np.broadcast_to(np.asarray(spacing_mm, dtype=float), (3,))
    nx, ny, nz = volume.shape_xyz
    corners = np.array([[i, j, k] for i in (-0.5, nx - 0.5) for j in (-0.5, ny - 0.5) for k in (-0.5, nz - 0.5)])
    world = volume.index_to_lps(corners)
    lo, hi = world.min(axis=0) - margin_mm, world.max(axis=0) + margin_mm
    size = np.maximum(1, np.ceil((hi - lo) / spacing).astype(int))
    origin = lo + spacing / 2
    return Volume(np.zeros(size[::-1], dtype=np.uint8), tuple(spacing), tuple(origin), np.eye(3))


def to_model_grid(volume: Volume, spacing_mm: float | Sequence[float], fill: float = AIR_HU,
                  interpolation: str = "linear") -> Volume:
    """Anti-alias and resample ``volume`` onto the LPS-aligned grid at ``spacing_mm`` (float32)."""
    import SimpleITK as sitk

    grid = aligned_grid(volume, spacing_mm)
    image = volume.to_sitk()
    if interpolation == "linear":
        image = sitk.Cast(image, sitk.sitkFloat32)
        ratio = np.asarray(grid.spacing) / np.asarray(volume.spacing)
        sigma_mm = [0.4 * r * s if r > 1.2 else 0.0 for r, s in zip(ratio, volume.spacing)]
        if any(s > 0 for s in sigma_mm):
            image = sitk.SmoothingRecursiveGaussian(image, [max(s, 1e-3) for s in sigma_mm])
    out = volume.__class__.from_sitk(image).resample_like(grid, interpolation=interpolation, default_value=fill)
    return out if interpolation != "linear" else out.with_array(out.array.astype(np.float32, copy=False))


def normalize(hu: np.ndarray) -> np.ndarray:
    """HU → network input: clipped to :data:`HU_RANGE`, divided by :data:`HU_SCALE` (float32)."""
    return (np.clip(hu, *HU_RANGE) / HU_SCALE).astype(np.float32)


def pad_to_multiple(array: np.ndarray, multiple: int, value: float) -> tuple[np.ndarray, tuple[int, ...]]:
    """Pad the last three axes at their end to multiples of ``multiple``; returns the array and the pads."""
    pads = [(-s) % multiple for s in array.shape[-3:]]
    width = [(0, 0)] * (array.ndim - 3) + [(0, p) for p in pads]
    return np.pad(array, width, constant_values=value), tuple(pads)
