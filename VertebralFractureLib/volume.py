"""The :class:`Volume`: a voxel array with its exact LPS geometry.

Conventions (the ITK/DICOM ones):

* ``array`` is indexed ``[z, y, x]`` (slowest to fastest), as ``SimpleITK.GetArrayFromImage`` returns.
* ``spacing``, ``origin`` and the index passed to :meth:`Volume.index_to_lps` are in ``(x, y, z)`` order.
* ``direction`` is a 3×3 matrix whose *columns* are the directions of the x, y, z index axes in
  LPS (left, posterior, superior) patient coordinates; so ``p = origin + direction @ (spacing * ijk)``.

Slicer works in RAS: ``ras = (-l, -p, s)``. Use :func:`lps_to_ras` at the boundary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import SimpleITK as sitk

_ORTHO_TOL = 1e-3


def lps_to_ras(points: np.ndarray | Sequence[float]) -> np.ndarray:
    """Flip the first two axes of LPS points (…, 3) to RAS (the flip is its own inverse)."""
    out = np.array(points, dtype=float, copy=True)
    out[..., 0] *= -1.0
    out[..., 1] *= -1.0
    return out


ras_to_lps = lps_to_ras


@dataclass
class Volume:
    """A 3D image with LPS geometry.

    Args:
        array: voxel values, shape ``(z, y, x)``.
        spacing: voxel size in mm, ``(x, y, z)``.
        origin: LPS position (mm) of the centre of voxel ``[0, 0, 0]``.
        direction: 3×3 direction cosines, columns = index axes in LPS.

    Raises:
        ValueError: for a non-3D array, non-positive spacing or a non-orthonormal direction.
    """

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array)
        if self.array.ndim != 3:
            raise ValueError(f"Volume needs a 3D array (z, y, x), got shape {self.array.shape}")
        self.spacing = tuple(float(s) for s in self.spacing)  # type: ignore[assignment]
        self.origin = tuple(float(o) for o in self.origin)  # type: ignore[assignment]
        if len(self.spacing) != 3 or min(self.spacing) <= 0 or not np.all(np.isfinite(self.spacing)):
            raise ValueError(f"spacing must be 3 positive numbers (x, y, z) in mm, got {self.spacing}")
        if len(self.origin) != 3 or not np.all(np.isfinite(self.origin)):
            raise ValueError(f"origin must be 3 finite numbers (x, y, z) in mm, got {self.origin}")
        d = np.asarray(self.direction, dtype=float).reshape(3, 3)
        if not np.allclose(d.T @ d, np.eye(3), atol=_ORTHO_TOL):
            raise ValueError(f"direction must be an orthonormal 3x3 matrix, got {d.tolist()}")
        self.direction = d

    # ------------------------------------------------------------------ geometry
    @property
    def shape_xyz(self) -> tuple[int, int, int]:
        """Size along the x, y, z index axes."""
        z, y, x = self.array.shape
        return (x, y, z)

    @property
    def slice_mm(self) -> float:
        """Spacing along the index axis closest to superior (an axial scan's slice spacing)."""
        return float(self.spacing[int(np.argmax(np.abs(self.direction[2, :])))])

    @property
    def affine_lps(self) -> np.ndarray:
        """4×4 matrix mapping homogeneous (x, y, z) indices to LPS mm."""
        a = np.eye(4)
        a[:3, :3] = self.direction * np.asarray(self.spacing)[None, :]
        a[:3, 3] = self.origin
        return a

    def index_to_lps(self, ijk: np.ndarray | Sequence[float]) -> np.ndarray:
        """Continuous (x, y, z) indices, shape (..., 3), to LPS mm."""
        ijk = np.asarray(ijk, dtype=float)
        a = self.affine_lps
        return ijk @ a[:3, :3].T + a[:3, 3]

    def lps_to_index(self, lps: np.ndarray | Sequence[float]) -> np.ndarray:
        """LPS mm, shape (..., 3), to continuous (x, y, z) indices."""
        lps = np.asarray(lps, dtype=float)
        a = self.affine_lps
        return (lps - a[:3, 3]) @ np.linalg.inv(a[:3, :3]).T

    def zyx_to_lps(self, zyx: np.ndarray | Sequence[float]) -> np.ndarray:
        """Array indices in ``[z, y, x]`` order (as numpy gives them) to LPS mm."""
        zyx = np.asarray(zyx, dtype=float)
        return self.index_to_lps(zyx[..., ::-1])

    def extent_mm(self) -> tuple[float, float, float]:
        """Physical size of the field of view along x, y, z (mm)."""
        return tuple(float(n * s) for n, s in zip(self.shape_xyz, self.spacing))  # type: ignore[return-value]

    def same_geometry(self, other: Volume, tol: float = 1e-4) -> bool:
        """True when both volumes share shape, spacing, origin and direction (within ``tol``)."""
        return (
            self.array.shape == other.array.shape
            and np.allclose(self.spacing, other.spacing, atol=tol)
            and np.allclose(self.origin, other.origin, atol=tol)
            and np.allclose(self.direction, other.direction, atol=tol)
        )

    def with_array(self, array: np.ndarray) -> Volume:
        """A new volume with the same geometry and another array of the same shape."""
        if array.shape != self.array.shape:
            raise ValueError(f"array shape {array.shape} differs from the volume's {self.array.shape}")
        return Volume(array, self.spacing, self.origin, self.direction.copy())

    def crop(self, zyx: tuple[slice, slice, slice]) -> Volume:
        """The sub-volume ``array[zyx]`` (a view) with its origin moved so every voxel keeps its position."""
        starts = [s.indices(n)[0] for s, n in zip(zyx, self.array.shape)]
        origin = self.zyx_to_lps(np.asarray(starts, dtype=float))
        return Volume(self.array[zyx], self.spacing, tuple(origin), self.direction.copy())

    def geometry_dict(self) -> dict[str, Any]:
        """JSON-ready description of the geometry (used in ``analysis.json``)."""
        return {
            "size_xyz": list(self.shape_xyz),
            "spacing_mm": list(self.spacing),
            "origin_lps_mm": list(self.origin),
            "direction": self.direction.reshape(-1).tolist(),
        }

    # ------------------------------------------------------------------ SimpleITK
    @classmethod
    def from_sitk(cls, image: sitk.Image) -> Volume:
        """Build a volume from a 3D SimpleITK image (geometry copied exactly)."""
        import SimpleITK as sitk

        if image.GetDimension() != 3:
            raise ValueError(f"expected a 3D image, got {image.GetDimension()}D")
        if image.GetNumberOfComponentsPerPixel() != 1:
            raise ValueError("expected a scalar image, got a multi-component (e.g. RGB) image")
        return cls(
            sitk.GetArrayFromImage(image),
            image.GetSpacing(),
            image.GetOrigin(),
            np.asarray(image.GetDirection(), dtype=float).reshape(3, 3),
        )

    def to_sitk(self) -> sitk.Image:
        """The volume as a SimpleITK image with the same geometry."""
        import SimpleITK as sitk

        image = sitk.GetImageFromArray(np.ascontiguousarray(self.array))
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(tuple(self.direction.reshape(-1)))
        return image

    # ------------------------------------------------------------------ resampling
    def resample_like(
        self, reference: Volume, interpolation: str = "linear", default_value: float = 0.0
    ) -> Volume:
        """Resample onto another volume's grid.

        Args:
            reference: the grid to resample onto.
            interpolation: ``"linear"``, ``"nearest"`` (for labelmaps) or ``"bspline"``.
            default_value: value outside this volume's field of view (e.g. -1024 for CT).
        """
        import SimpleITK as sitk

        interp = _interpolator(interpolation)
        out = sitk.Resample(
            self.to_sitk(), reference.to_sitk(), sitk.Transform(), interp, float(default_value)
        )
        return Volume.from_sitk(out)

    def resample_to_spacing(
        self,
        spacing: Sequence[float] | float,
        interpolation: str = "linear",
        default_value: float = 0.0,
    ) -> Volume:
        """Resample to a new spacing, same direction and physical extent.

        Args:
            spacing: new spacing in mm, one number or ``(x, y, z)``.
            interpolation: ``"linear"``, ``"nearest"`` or ``"bspline"``.
            default_value: value for voxels outside the original field of view.
        """
        import SimpleITK as sitk

        new_spacing = np.broadcast_to(np.asarray(spacing, dtype=float), (3,))
        if np.any(new_spacing <= 0):
            raise ValueError(f"spacing must be positive, got {spacing}")
        old_extent = np.asarray(self.shape_xyz) * np.asarray(self.spacing)
        new_size = np.maximum(1, np.round(old_extent / new_spacing)).astype(int)
        # keep the field-of-view corner fixed: the first voxel's edge stays where it was
        shift = (new_spacing - np.asarray(self.spacing)) / 2.0
        new_origin = np.asarray(self.origin) + self.direction @ shift
        ref = sitk.Image([int(n) for n in new_size], sitk.sitkUInt8)
        ref.SetSpacing(tuple(new_spacing))
        ref.SetOrigin(tuple(new_origin))
        ref.SetDirection(tuple(self.direction.reshape(-1)))
        out = sitk.Resample(self.to_sitk(), ref, sitk.Transform(), _interpolator(interpolation), float(default_value))
        return Volume.from_sitk(out)


def _interpolator(name: str) -> int:
    import SimpleITK as sitk

    table = {
        "linear": sitk.sitkLinear,
        "nearest": sitk.sitkNearestNeighbor,
        "bspline": sitk.sitkBSpline,
        "label": sitk.sitkLabelGaussian,
    }
    try:
        return table[name]
    except KeyError as err:
        raise ValueError(f"interpolation must be one of {sorted(table)}, got {name!r}") from err
