"""Implicit shape primitives evaluated on sub-boxes of a working grid (vectorised numpy).

The working grid is axis-aligned in the *anatomical* frame (x left, y posterior, z superior, mm).
Every shape is evaluated only inside its own bounding box, so the cost of a part is proportional to
its size, not to the field of view. Shapes return boolean masks over a :class:`Box`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

F32 = np.float32


@dataclass(frozen=True)
class Grid:
    """An axis-aligned voxel grid in the anatomical frame.

    Attributes:
        origin: position (mm) of voxel ``[0, 0, 0]``'s centre, ``(x, y, z)``.
        spacing: voxel size (mm), ``(x, y, z)``.
        shape: array shape ``(nz, ny, nx)``.
    """

    origin: tuple[float, float, float]
    spacing: tuple[float, float, float]
    shape: tuple[int, int, int]

    def box(self, lo: Sequence[float], hi: Sequence[float], margin: float = 1.0) -> Box | None:
        """The sub-box covering the mm range ``lo``..``hi`` (x, y, z) plus ``margin``, or None if empty."""
        o, s = np.asarray(self.origin), np.asarray(self.spacing)
        i0 = np.floor((np.asarray(lo, float) - margin - o) / s).astype(int)
        i1 = np.ceil((np.asarray(hi, float) + margin - o) / s).astype(int) + 1
        n = np.array(self.shape[::-1])
        i0, i1 = np.clip(i0, 0, n), np.clip(i1, 0, n)
        if np.any(i1 <= i0):
            return None
        return Box(self, (int(i0[2]), int(i1[2])), (int(i0[1]), int(i1[1])), (int(i0[0]), int(i1[0])))

    def box_of_points(self, points: np.ndarray, margin: float = 1.0) -> Box | None:
        """The sub-box covering a cloud of points (N, 3) in mm."""
        points = np.asarray(points, float).reshape(-1, 3)
        return self.box(points.min(0), points.max(0), margin)

    def axis(self, k: int) -> np.ndarray:
        """Voxel-centre coordinates (mm) along axis ``k`` (0 = x, 1 = y, 2 = z)."""
        n = self.shape[2 - k]
        return (self.origin[k] + self.spacing[k] * np.arange(n)).astype(F32)


@dataclass(frozen=True)
class Box:
    """A sub-box of a :class:`Grid` (index ranges along z, y, x)."""

    grid: Grid
    z: tuple[int, int]
    y: tuple[int, int]
    x: tuple[int, int]

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return slice(*self.z), slice(*self.y), slice(*self.x)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.z[1] - self.z[0], self.y[1] - self.y[0], self.x[1] - self.x[0])

    def coords(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable mm coordinates ``(x (1,1,nx), y (1,ny,1), z (nz,1,1))``."""
        g = self.grid
        x = g.axis(0)[self.x[0]:self.x[1]][None, None, :]
        y = g.axis(1)[self.y[0]:self.y[1]][None, :, None]
        z = g.axis(2)[self.z[0]:self.z[1]][:, None, None]
        return x, y, z

    def local(self, centre: np.ndarray, rot: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Coordinates in a local frame: ``(u, v, w) = rot.T @ (p - centre)``, full arrays of the box shape."""
        x, y, z = self.coords()
        dx, dy, dz = x - F32(centre[0]), y - F32(centre[1]), z - F32(centre[2])
        r = rot.astype(F32)
        u = dx * r[0, 0] + dy * r[1, 0] + dz * r[2, 0]
        v = dx * r[0, 1] + dy * r[1, 1] + dz * r[2, 1]
        w = dx * r[0, 2] + dy * r[1, 2] + dz * r[2, 2]
        return u, v, w


def rotation(axis: str, angle_rad: float) -> np.ndarray:
    """Right-handed rotation matrix about the x, y or z axis."""
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    if axis == "z":
        return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    raise ValueError(f"axis must be 'x', 'y' or 'z', got {axis!r}")


# ---------------------------------------------------------------------------------------- primitives
def ellipsoid(u: np.ndarray, v: np.ndarray, w: np.ndarray, c: Sequence[float], r: Sequence[float]) -> np.ndarray:
    """Normalised ellipsoid function (≤ 1 inside) in local coordinates."""
    return ((u - F32(c[0])) / F32(r[0])) ** 2 + ((v - F32(c[1])) / F32(r[1])) ** 2 + ((w - F32(c[2])) / F32(r[2])) ** 2


def capsule(
    u: np.ndarray, v: np.ndarray, w: np.ndarray, p0: Sequence[float], p1: Sequence[float],
    r_a: tuple[float, float], r_b: tuple[float, float], up: Sequence[float] = (0.0, 0.0, 1.0),
) -> np.ndarray:
    """Normalised function (≤ 1 inside) of a tapered elliptic capsule along the segment p0→p1.

    Args:
        u, v, w: local coordinates.
        p0, p1: end points (local mm).
        r_a: radii at p0 along the ``up`` direction (projected perpendicular to the axis) and across.
        r_b: the same radii at p1 (linearly interpolated along the segment).
        up: the direction of the first radius.
    """
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    d = p1 - p0
    length = float(np.linalg.norm(d))
    d = d / max(length, 1e-6)
    e1 = np.asarray(up, float) - d * (np.asarray(up, float) @ d)
    if np.linalg.norm(e1) < 1e-6:
        e1 = np.array([1.0, 0.0, 0.0]) - d * d[0]
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(d, e1)
    du, dv, dw = u - F32(p0[0]), v - F32(p0[1]), w - F32(p0[2])
    t = np.clip((du * F32(d[0]) + dv * F32(d[1]) + dw * F32(d[2])) / F32(max(length, 1e-6)), 0, 1)
    tl = t * F32(length)
    du -= tl * F32(d[0])
    dv -= tl * F32(d[1])
    dw -= tl * F32(d[2])
    a = F32(r_a[0]) + t * F32(r_b[0] - r_a[0])
    b = F32(r_a[1]) + t * F32(r_b[1] - r_a[1])
    o1 = (du * F32(e1[0]) + dv * F32(e1[1]) + dw * F32(e1[2])) / a
    o2 = (du * F32(e2[0]) + dv * F32(e2[1]) + dw * F32(e2[2])) / b
    return o1 * o1 + o2 * o2


def capsule_box_points(p0: Sequence[float], p1: Sequence[float], r: float) -> np.ndarray:
    """Corner points (local mm) of a box that surely contains a capsule of largest radius ``r``."""
    p = np.stack([np.asarray(p0, float), np.asarray(p1, float)])
    lo, hi = p.min(0) - r, p.max(0) + r
    return corners(lo, hi)


def corners(lo: Sequence[float], hi: Sequence[float]) -> np.ndarray:
    """The 8 corners of an axis-aligned box (local mm)."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    return np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])


def smooth_noise_2d(rng: np.random.Generator, n_terms: int, wavelength: tuple[float, float]) -> list[tuple]:
    """Random 2D cosine terms ``(amplitude, kx, ky, phase)`` for a smooth bump field (unit RMS)."""
    terms = []
    for _ in range(n_terms):
        lam = rng.uniform(*wavelength)
        ang = rng.uniform(0, np.pi)
        k = 2 * np.pi / lam
        terms.append((np.sqrt(2.0 / n_terms), k * np.cos(ang), k * np.sin(ang), rng.uniform(0, 2 * np.pi)))
    return terms


def eval_noise_2d(terms: list[tuple], a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Evaluate :func:`smooth_noise_2d` terms at coordinates ``a``, ``b`` (arrays or floats)."""
    out = np.zeros(np.broadcast_shapes(np.shape(a), np.shape(b)), dtype=F32)
    for amp, ka, kb, ph in terms:
        out = out + F32(amp) * np.cos(F32(ka) * a + F32(kb) * b + F32(ph))
    return out if out.ndim else float(out)
