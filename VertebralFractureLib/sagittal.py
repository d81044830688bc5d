"""A vertebra's mid-sagittal plane: its frame from the spine's curve and the mask's symmetry, and resampling.

The plane passes through the vertebra's centroid. Its superior axis follows the local spine axis
(the line between the neighbouring centroids), not the image's z axis, so curved spines and
tilted patients are measured on the right plane. Its anterior axis starts from the patient's
anterior direction and is turned about the superior axis to the vertebra's left–right mirror
symmetry (patients lie rotated; scoliotic vertebrae are rotated about the spine axis).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from VertebralFractureLib.volume import Volume

#: Patient superior and anterior in LPS.
SUPERIOR = np.array([0.0, 0.0, 1.0])
ANTERIOR = np.array([0.0, -1.0, 0.0])
#: The body's centre must lie this far (mm) behind the vertebra's centroid to overrule the file's
#: anterior direction (the body is the vertebra's front part in every spine).
BODY_BEHIND_MM = 3.0


def unit(vec: np.ndarray, default: np.ndarray | None = None) -> np.ndarray | None:
    """``vec`` normalised, or ``default`` when it has (almost) no length."""
    n = float(np.linalg.norm(vec))
    if n < 1e-6:
        return None if default is None else np.array(default, dtype=float)
    return np.asarray(vec, dtype=float) / n


def spine_axis(centroid: np.ndarray, cranial: np.ndarray | None, caudal: np.ndarray | None) -> np.ndarray:
    """Unit superior direction of the spine at a vertebra from its neighbours' centroids (LPS)."""
    top = centroid if cranial is None else np.asarray(cranial, dtype=float)
    bottom = centroid if caudal is None else np.asarray(caudal, dtype=float)
    axis = unit(top - bottom)
    if axis is None or axis[2] < 0.3:  # no neighbours, or implausible (more horizontal than 72°)
        return SUPERIOR.copy()
    return axis


def local_spine_axis(label: int, centroids: dict[int, np.ndarray]) -> np.ndarray:
    """:func:`spine_axis` of vertebra ``label`` from the centroids (label → LPS) of the vertebrae present."""
    from VertebralFractureLib.anatomy import neighbours

    above, below = neighbours(label, centroids)
    pts = {k: np.asarray(p, dtype=float) for k, p in centroids.items()}
    return spine_axis(pts[label], pts.get(above), pts.get(below))


def orthogonal_anterior(sup: np.ndarray, anterior: np.ndarray = ANTERIOR) -> np.ndarray:
    """``anterior`` made orthogonal to ``sup``."""
    a = unit(anterior - np.dot(anterior, sup) * sup)
    if a is None:
        raise ValueError("the spine axis is parallel to the anterior direction; cannot build a sagittal plane")
    return a


def symmetry_anterior(
    mask: Volume, label: int, centre: np.ndarray, sup: np.ndarray, max_angle_deg: float = 25.0,
    pixel_mm: float = 1.0, half_mm: float = 60.0,
) -> tuple[np.ndarray, float, bool]:
    """Anterior direction turned about ``sup`` to the vertebra's mirror-symmetry plane.

    The vertebra's voxels are projected onto the plane perpendicular to ``sup``. When the vertebral
    body lies *behind* the centroid in the file's patient frame (:func:`body_offset_mm`), the file's
    orientation contradicts the anatomy and the anatomy wins. The projection is mirrored about lines through
    ``centre`` at angles within ±``max_angle_deg`` of that anterior direction, and the angle with
    the best overlap (IoU) wins.

    Returns:
        (anterior unit vector, IoU of the best mirror image — 1.0 is perfectly symmetric,
        whether the anatomy overruled the file's anterior direction).
    """
    from scipy import ndimage

    a0 = orthogonal_anterior(sup)
    l0 = np.cross(sup, a0)
    zyx = np.argwhere(mask.array == label)
    if len(zyx) < 20:
        return a0, 0.0, False
    pts = mask.zyx_to_lps(zyx) - centre
    u, w = pts @ a0, pts @ l0
    n = int(2 * half_mm / pixel_mm) + 1
    img = np.zeros((n, n), dtype=np.float32)
    iu = np.clip(np.round((u + half_mm) / pixel_mm).astype(int), 0, n - 1)
    iw = np.clip(np.round((w + half_mm) / pixel_mm).astype(int), 0, n - 1)
    img[iu, iw] = 1.0
    img = ndimage.binary_closing(img > 0, iterations=2).astype(np.float32)
    flipped = False
    if body_offset_mm(mask, label, centre, sup, a0) < -BODY_BEHIND_MM:
        # the body lies behind the centroid in the file's frame: its anterior is backwards
        a0, l0, img, flipped = -a0, -l0, img[::-1, ::-1].copy(), True
    grid_u, grid_w = np.meshgrid(np.arange(n) * pixel_mm - half_mm, np.arange(n) * pixel_mm - half_mm, indexing="ij")

    def score(theta: float) -> float:
        c, s = np.cos(2 * theta), np.sin(2 * theta)  # reflection about the line at angle theta
        ru = c * grid_u + s * grid_w
        rw = s * grid_u - c * grid_w
        coords = np.stack([(ru + half_mm) / pixel_mm, (rw + half_mm) / pixel_mm])
        mirrored = ndimage.map_coordinates(img, coords, order=1, mode="constant", cval=0.0, prefilter=False) > 0.5
        inter = np.logical_and(mirrored, img > 0).sum()
        union = np.logical_or(mirrored, img > 0).sum()
        return float(inter / union) if union else 0.0

    limit = np.deg2rad(max_angle_deg)
    angles = np.linspace(-limit, limit, int(2 * max_angle_deg / 2.5) + 1)
    scores = [score(t) for t in angles]
    best = float(angles[int(np.argmax(scores))])
    fine = np.linspace(best - np.deg2rad(2.5), best + np.deg2rad(2.5), 11)
    fine_scores = [score(t) for t in fine]
    theta = float(fine[int(np.argmax(fine_scores))])
    anterior = np.cos(theta) * a0 + np.sin(theta) * l0
    return anterior / np.linalg.norm(anterior), float(max(fine_scores)), flipped


def body_offset_mm(mask: Volume, label: int, centre: np.ndarray, sup: np.ndarray, ant: np.ndarray,
                   half_mm: float = 50.0, pixel_mm: float = 0.5) -> float:
    """How far in front of ``centre`` (along ``ant``, mm) the vertebral body lies.

    In cross-sections perpendicular to the spine axis near the centroid the body is a solid disc
    30–50 mm wide — whatever its height, so a crushed body too — while pedicles, laminae and
    processes are thin; the deepest point of the distance transform over these sections is
    therefore in the body. (Neither the centroid, which the posterior elements pull backwards, nor
    the spinal canal seen along a tilted spine axis, where it overlaps the body, is a reliable guide.)
    """
    from scipy import ndimage

    left = np.cross(sup, ant)
    binary = mask.with_array((mask.array == label).astype(np.float32))
    best, offset = -1.0, 0.0
    for dz in (-6.0, -3.0, 0.0, 3.0, 6.0):
        # rows along ``ant`` (u), columns along −left
        section = sample_plane(binary, centre + dz * sup, ant, left, half_mm=half_mm, pixel_mm=pixel_mm) > 0.5
        if not section.any():
            continue
        depth = ndimage.distance_transform_edt(section)
        k = int(np.argmax(depth))
        if depth.flat[k] > best:
            best, offset = float(depth.flat[k]), float(np.unravel_index(k, depth.shape)[0]) * pixel_mm - half_mm
    return offset


def sample_plane(
    volume: Volume, centre: np.ndarray, sup: np.ndarray, ant: np.ndarray, *, half_mm: float = 40.0,
    pixel_mm: float = 0.5, order: int = 1, fill: float = 0.0,
) -> np.ndarray:
    """Resample ``volume`` on the plane ``centre + s·ant + t·sup``.

    Returns:
        An ``(n, n)`` array, row = ``t`` from −half to +half (inferior → superior), column = ``x``
        from −half to +half with ``s = −x`` (anterior on the left, the radiological convention).
    """
    from scipy import ndimage

    n = int(round(2 * half_mm / pixel_mm)) + 1
    coords = np.linspace(-half_mm, half_mm, n)
    t, x = np.meshgrid(coords, coords, indexing="ij")
    lps = centre + (-x)[..., None] * ant + t[..., None] * sup
    ijk = volume.lps_to_index(lps.reshape(-1, 3))  # (x, y, z) continuous index
    zyx = ijk[:, ::-1].T
    array = volume.array
    if order > 0 or array.dtype == bool:
        array = array.astype(np.float32, copy=False)
    values = ndimage.map_coordinates(array, zyx, order=order, mode="constant", cval=fill, prefilter=False)
    return values.reshape(n, n)


def plane_to_lps(centre: np.ndarray, sup: np.ndarray, ant: np.ndarray, s: Sequence[float], t: Sequence[float]) -> np.ndarray:
    """LPS points of plane coordinates ``s`` (anterior, mm) and ``t`` (superior, mm)."""
    s_arr, t_arr = np.asarray(s, dtype=float), np.asarray(t, dtype=float)
    return centre + s_arr[..., None] * ant + t_arr[..., None] * sup
