"""Geometry of a stack of DICOM slices: ordering, duplicates, gaps, uneven spacing, gantry tilt.

Slices are placed by ``ImagePositionPatient`` (IPP, the LPS centre of the first pixel) and
``ImageOrientationPatient`` (IOP: the row direction ``r``, i.e. the direction of increasing column
index, then the column direction ``c``). The slice normal is ``n = r × c`` and a slice's place in
the stack is ``d = IPP · n`` — never ``InstanceNumber`` or the file name.

When the slices are not a regular grid (missing slices, uneven spacing, or a gantry tilt that makes
consecutive positions step off the normal) the stack is resampled onto an orthogonal grid with
axes ``(r, c, n)`` that keeps world positions: a voxel at LPS point ``w`` takes the value the
original slices have at ``w`` (linear interpolation along the normal between the two nearest
slices; bilinear in-plane when a tilt shifts the slices). This is what 3D Slicer's
acquisition-geometry regularization does; the grid is enlarged in-plane so that no tilted slice
is cut off.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from VertebralFractureLib.errors import InputError

#: Two slices closer than this along the normal (mm) are duplicates.
DUPLICATE_TOLERANCE_MM = 1e-2
#: A spacing differing from the nominal one by more than max(this, 1 %) is "non-uniform" (mm).
SPACING_TOLERANCE_MM = 1e-2
#: A step larger than this many nominal spacings is a gap (missing slices).
GAP_FACTOR = 1.5
#: Gaps missing more than this (mm) are refused: interpolating across them would invent most of
#: a vertebral body (about 25 mm tall), which would then be segmented and graded.
MAX_GAP_MM = 20.0
#: In-plane drift of the slice positions (pixels) above which the stack counts as tilted.
TILT_TOLERANCE_PX = 0.05


@dataclass(frozen=True)
class SliceFrame:
    """Orthonormal axes of the slices (LPS): ``row`` (+column index), ``col`` (+row index), ``normal``."""

    row: np.ndarray
    col: np.ndarray
    normal: np.ndarray

    @property
    def direction(self) -> np.ndarray:
        """The 3×3 ITK direction: columns ``row``, ``col``, ``normal``."""
        return np.column_stack([self.row, self.col, self.normal])


def slice_frame(orientation: Sequence[float]) -> SliceFrame:
    """The slice axes from ``ImageOrientationPatient`` (6 numbers), made exactly orthonormal.

    Raises:
        InputError: when the orientation is not two (nearly) perpendicular non-zero vectors.
    """
    iop = np.asarray(orientation, dtype=float).reshape(-1)
    if iop.size != 6 or not np.all(np.isfinite(iop)):
        raise InputError(f"ImageOrientationPatient must be 6 numbers, got {list(iop)}")
    r, c = iop[:3], iop[3:]
    nr, nc = np.linalg.norm(r), np.linalg.norm(c)
    if nr < 0.5 or nc < 0.5 or abs(np.dot(r, c)) / (nr * nc) > 1e-2:
        raise InputError(
            f"ImageOrientationPatient {list(np.round(iop, 6))} is not two perpendicular unit vectors"
        )
    r = r / nr
    c = c - np.dot(c, r) * r
    c = c / np.linalg.norm(c)
    return SliceFrame(r, c, np.cross(r, c))


def sort_and_deduplicate(
    positions: np.ndarray, normal: np.ndarray, priority: Sequence[float] | None = None
) -> tuple[np.ndarray, list[str]]:
    """Order slices along the normal and keep one slice per position.

    Args:
        positions: ``(N, 3)`` IPP of the slices (LPS mm).
        normal: the slice normal.
        priority: among duplicates the slice with the smallest value is kept (e.g. InstanceNumber);
            by default the first one given.

    Returns:
        Indices into ``positions`` of the kept slices in increasing ``IPP · normal``, and warnings.
    """
    positions = np.asarray(positions, dtype=float).reshape(-1, 3)
    d = positions @ normal
    prio = np.arange(len(d), dtype=float) if priority is None else np.asarray(priority, dtype=float)
    order = np.lexsort((np.arange(len(d)), prio, d))  # by d, then priority, then input order
    kept: list[int] = []
    dup_at: list[float] = []
    for i in order:
        if kept and d[i] - d[kept[-1]] < DUPLICATE_TOLERANCE_MM:
            dup_at.append(float(d[i]))
            continue
        kept.append(int(i))
    warnings = []
    if dup_at:
        where = ", ".join(f"{x:.2f}" for x in sorted(set(np.round(dup_at, 2)))[:5])
        more = " …" if len(set(np.round(dup_at, 2))) > 5 else ""
        warnings.append(
            f"duplicate slice positions: {len(dup_at)} slice(s) repeat a position already present "
            f"(at {where}{more} mm along the slice normal); kept one slice per position "
            f"({len(kept)} slices)"
        )
    return np.asarray(kept, dtype=int), warnings


@dataclass
class GridPlan:
    """Where a sorted slice stack goes: the output grid and how to sample the slices onto it.

    Attributes:
        origin: LPS position of voxel ``[0, 0, 0]`` of the output.
        direction: 3×3 direction (columns ``r``, ``c``, ``n``).
        spacing: output spacing ``(x, y, z)`` mm.
        size_xyz: output size.
        source_d: ``IPP · n`` of the source slices (increasing).
        target_d: ``IPP · n`` of the output slices.
        shifts: ``(N, 2)`` position (x, y) of each source slice's first pixel in output pixels.
        resample_z: the output slices are not the source slices (gaps, uneven spacing).
        tilted: the source slices are shifted in-plane against each other (gantry tilt).
        warnings: what was found, one message each.
    """

    origin: np.ndarray
    direction: np.ndarray
    spacing: tuple[float, float, float]
    size_xyz: tuple[int, int, int]
    source_d: np.ndarray
    target_d: np.ndarray
    shifts: np.ndarray
    resample_z: bool = False
    tilted: bool = False
    warnings: list[str] = field(default_factory=list)

    @property
    def needs_resampling(self) -> bool:
        """True when the output is not simply the source slices stacked."""
        return self.resample_z or self.tilted


def plan_grid(
    positions: np.ndarray, frame: SliceFrame, pixel_spacing_xy: tuple[float, float], size_xy: tuple[int, int]
) -> GridPlan:
    """Check the spacing and alignment of a sorted, duplicate-free stack and plan the output grid.

    Args:
        positions: ``(N, 3)`` IPP of the slices, sorted by increasing ``IPP · n``, N ≥ 2.
        frame: the slice axes.
        pixel_spacing_xy: in-plane spacing (x = along ``r``, y = along ``c``) in mm.
        size_xy: slice size (columns, rows).

    Returns:
        The plan; its warnings name each gap, uneven spacing and a tilt.

    Raises:
        InputError: for fewer than 2 slices, or a gap missing more than :data:`MAX_GAP_MM`.
    """
    p = np.asarray(positions, dtype=float).reshape(-1, 3)
    n_src = len(p)
    if n_src < 2:
        raise InputError("a single slice is a 2D image; a 3D series with at least 2 slices is needed")
    sx, sy = (float(v) for v in pixel_spacing_xy)
    cols, rows = (int(v) for v in size_xy)
    d = p @ frame.normal
    steps = np.diff(d)
    nominal = float(np.median(steps))
    is_gap = steps > GAP_FACTOR * nominal
    regular = steps[~is_gap]
    nominal = float(np.median(regular))
    tol = max(SPACING_TOLERANCE_MM, 0.01 * nominal)
    warnings: list[str] = []

    # --- gaps
    gap_idx = np.flatnonzero(is_gap)
    for k in gap_idx:
        if steps[k] - nominal > MAX_GAP_MM:
            raise InputError(
                f"missing slices: a {steps[k]:.1f} mm gap between the slices at {d[k]:.2f} and {d[k + 1]:.2f} mm "
                f"along the slice normal (slices {k + 1} and {k + 2} of {n_src}); more than {MAX_GAP_MM:.0f} mm "
                "is missing, too much to interpolate — export the complete series"
            )
    for k in gap_idx[:5]:
        missing = max(1, round(steps[k] / nominal) - 1)
        warnings.append(
            f"missing slices: a {steps[k]:.2f} mm gap between the slices at {d[k]:.2f} and {d[k + 1]:.2f} mm "
            f"along the slice normal (slices {k + 1} and {k + 2} of {n_src}; about {missing} slice(s) of "
            f"{nominal:.2f} mm missing); filled by linear interpolation"
        )
    if len(gap_idx) > 5:
        warnings.append(f"missing slices: {len(gap_idx) - 5} more gap(s) filled by linear interpolation")

    # --- uneven spacing (apart from gaps)
    uneven = bool(np.any(np.abs(regular - nominal) > tol))
    if uneven:
        warnings.append(
            f"non-uniform slice spacing: the distance between slices ranges from {regular.min():.3f} to "
            f"{regular.max():.3f} mm (nominal {nominal:.3f} mm); resampled to a uniform grid by linear "
            "interpolation along the slice normal"
        )
    resample_z = bool(uneven or len(gap_idx))
    length = float(d[-1] - d[0])
    if resample_z:
        nz = int(round(length / nominal)) + 1
    else:
        nz = n_src
    sz = length / (nz - 1)
    target_d = d[0] + sz * np.arange(nz)
    if not resample_z:
        target_d = d.copy()

    # --- in-plane drift of the positions (gantry tilt)
    rel = p - p[0]
    inplane = rel - np.outer(rel @ frame.normal, frame.normal)
    off = np.column_stack([inplane @ frame.row / sx, inplane @ frame.col / sy])  # pixels (x, y)
    tilted = bool(np.max(np.abs(off)) > TILT_TOLERANCE_PX)
    origin = p[0].copy()
    nx, ny = cols, rows
    shifts = np.zeros((n_src, 2))
    if tilted:
        lo = np.floor(off.min(axis=0) + 1e-6).astype(int)
        hi = np.ceil(off.max(axis=0) - 1e-6).astype(int)
        nx, ny = cols + int(hi[0] - lo[0]), rows + int(hi[1] - lo[1])
        origin = p[0] + lo[0] * sx * frame.row + lo[1] * sy * frame.col
        shifts = off - lo
        v = p[-1] - p[0]
        angle = float(np.degrees(np.arccos(np.clip(abs(v @ frame.normal) / np.linalg.norm(v), 0.0, 1.0))))
        drift = float(np.max(np.linalg.norm(inplane, axis=1)))
        warnings.append(
            f"gantry tilt of {angle:.2f}°: the slice positions step along a direction {angle:.2f}° away from "
            f"the slice normal (in-plane drift up to {drift:.1f} mm); resampled onto an orthogonal grid "
            f"that keeps world positions ({nx}×{ny}×{nz} voxels)"
        )
    return GridPlan(
        origin=origin, direction=frame.direction, spacing=(sx, sy, float(sz)), size_xyz=(nx, ny, nz),
        source_d=d, target_d=target_d, shifts=shifts, resample_z=resample_z, tilted=tilted, warnings=warnings,
    )


def resample_stack(stack: np.ndarray, plan: GridPlan, fill: float) -> np.ndarray:
    """Sample a sorted slice stack ``(N, rows, cols)`` onto the plan's grid; returns ``(nz, ny, nx)`` float32.

    Each output slice at ``d`` blends the two source slices around ``d`` linearly; with a tilt the
    source slices are first moved in-plane (bilinear) to where they lie in the output grid.
    Output voxels that no source slice covers get ``fill``.
    """
    from scipy.ndimage import affine_transform

    nx, ny, nz = plan.size_xyz
    d = plan.source_d
    cache: dict[int, np.ndarray] = {}

    def placed(k: int) -> np.ndarray:
        if k not in cache:
            src = np.asarray(stack[k], dtype=np.float32)
            if plan.tilted:
                tx, ty = plan.shifts[k]
                src = affine_transform(
                    src, np.ones(2), offset=(-ty, -tx), output_shape=(ny, nx), order=1, mode="constant", cval=fill
                )
            if len(cache) > 2:
                cache.pop(min(cache))
            cache[k] = src
        return cache[k]

    out = np.empty((nz, ny, nx), dtype=np.float32)
    for t, dt in enumerate(plan.target_d):
        k = int(np.clip(np.searchsorted(d, dt, side="right") - 1, 0, len(d) - 2))
        a = float(np.clip((dt - d[k]) / (d[k + 1] - d[k]), 0.0, 1.0))
        if a < 1e-6:
            out[t] = placed(k)
        elif a > 1 - 1e-6:
            out[t] = placed(k + 1)
        else:
            out[t] = (1 - a) * placed(k) + a * placed(k + 1)
    return out
