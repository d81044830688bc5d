"""Geometric Genant keypoints from a vertebra mask on its mid-sagittal plane.

The fallback of stage 3 (seeds/002 §2.3.3 uses a 2D M-SCN; this measures the mask directly):

1. frame: superior = local spine axis (neighbouring centroids), anterior = patient anterior turned
   to the vertebra's mirror-symmetry plane (:mod:`.sagittal`);
2. resample the binary mask on that plane (0.25 mm) and keep the vertebral body: the most anterior
   large connected region (the spinal canal separates it from the posterior elements there);
3. in three columns — anterior and posterior (inset by ``max(2 mm, 7 %`` of the body depth) from
   the walls measured at mid-height, as a reader places the points inside the corners) and middle — the
   superior and inferior endplate points are the body's top and bottom, taken as the median over
   a 1 mm wide band so one stray voxel does not move them.

Returns the six keypoints in LPS with a quality note; heights and grades follow in :mod:`.genant`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from VertebralFractureLib.analysis import KEYPOINT_NAMES
from VertebralFractureLib.sagittal import orthogonal_anterior, plane_to_lps, sample_plane, symmetry_anterior
from VertebralFractureLib.volume import Volume

PIXEL_MM = 0.25
HALF_FIELD_MM = 45.0
MIN_INSET_MM = 2.0
INSET_FRACTION = 0.07
BAND_MM = 1.0


@dataclass
class KeypointResult:
    """Keypoints of one vertebra and how they were found."""

    keypoints_lps_mm: dict[str, tuple[float, float, float]]
    superior: np.ndarray
    anterior: np.ndarray
    body_depth_mm: float
    symmetry_iou: float
    notes: list[str] = field(default_factory=list)


def body_profile(plane_mask: np.ndarray) -> np.ndarray:
    """The vertebral body's region in a sagittal mask slice (rows inferior → superior, anterior left).

    Raises:
        ValueError: when the slice holds no vertebra.
    """
    from scipy import ndimage

    mask = plane_mask > 0.5
    if not mask.any():
        raise ValueError("the vertebra's mid-sagittal slice is empty")
    mask = ndimage.binary_fill_holes(ndimage.binary_closing(mask, iterations=2))
    lab, n = ndimage.label(mask)
    sizes = ndimage.sum_labels(mask, lab, np.arange(1, n + 1))
    big = [k + 1 for k in range(n) if sizes[k] >= 0.25 * sizes.max()]
    # anterior is on the left (small column index): the body is the big region furthest left
    cols = np.arange(mask.shape[1])[None, :]
    mean_col = {k: float((cols * (lab == k)).sum() / max(1, (lab == k).sum())) for k in big}
    return lab == min(big, key=lambda k: mean_col[k])


def measure_columns(body: np.ndarray, pixel_mm: float, half_mm: float) -> tuple[dict[str, tuple[float, float]], float]:
    """Plane coordinates ``(s, t)`` (anterior, superior mm) of the six keypoints of a body region.

    The anterior and posterior walls are taken at mid-height (the middle 40 % of the body's rows),
    so osteophytes and bevelled endplate rims do not move the measuring columns.
    """
    rows_any = np.nonzero(body.any(axis=1))[0]
    r0, r1 = rows_any.min(), rows_any.max()
    mid = body[int(r0 + 0.3 * (r1 - r0)): int(r0 + 0.7 * (r1 - r0)) + 1]
    mid = mid[mid.any(axis=1)] if mid.any() else body[body.any(axis=1)]
    # per row the first and last body pixel; the median over the rows, so a pedicle stub or an
    # osteophyte on a few rows does not move the wall (anterior on the left)
    firsts = np.argmax(mid, axis=1)
    lasts = mid.shape[1] - 1 - np.argmax(mid[:, ::-1], axis=1)
    x_front, x_back = float(np.median(firsts)), float(np.median(lasts))
    depth = (x_back - x_front + 1) * pixel_mm
    inset = max(MIN_INSET_MM, INSET_FRACTION * depth) / pixel_mm
    centres = {"A": x_front + inset, "M": (x_front + x_back) / 2.0, "P": x_back - inset}
    band = max(1, int(round(BAND_MM / pixel_mm / 2)))
    rows = np.arange(body.shape[0])
    out: dict[str, tuple[float, float]] = {}
    for key, c in centres.items():
        tops, bottoms = [], []
        for col in range(int(round(c)) - band, int(round(c)) + band + 1):
            filled = rows[body[:, col]] if 0 <= col < body.shape[1] else []
            if len(filled):
                tops.append(filled.max() + 0.5)  # the pixel's upper edge
                bottoms.append(filled.min() - 0.5)
        if not tops:
            raise ValueError(f"no body pixels in the {key} column")
        s = half_mm - c * pixel_mm  # column x → s = −x
        out[f"{key}_sup"] = (s, float(np.median(tops)) * pixel_mm - half_mm)
        out[f"{key}_inf"] = (s, float(np.median(bottoms)) * pixel_mm - half_mm)
    return out, float(depth)


def geometric_keypoints(
    mask: Volume, label: int, centroid_lps: np.ndarray, superior: np.ndarray, use_symmetry: bool = True
) -> KeypointResult:
    """Six keypoints of vertebra ``label`` in a labelmap, measured on its mid-sagittal plane.

    Args:
        mask: labelmap (VerSe labels) in any geometry.
        label: the vertebra to measure.
        centroid_lps: its centroid (LPS mm).
        superior: the local spine axis (unit, LPS), e.g. :func:`.sagittal.spine_axis`.
        use_symmetry: turn the plane to the vertebra's mirror symmetry (else the patient's axes).

    Raises:
        ValueError: when the vertebra has no body on its mid-sagittal plane.
    """
    centre = np.asarray(centroid_lps, dtype=float)
    sup = np.asarray(superior, dtype=float) / np.linalg.norm(superior)
    notes: list[str] = []
    if use_symmetry:
        ant, iou, flipped = symmetry_anterior(mask, label, centre, sup)
        if flipped:
            notes.append("the image orientation puts the spinal canal in front of the body: anterior taken from the anatomy")
        if iou < 0.5:
            notes.append(f"low left-right symmetry (IoU {iou:.2f}): plane may be off")
    else:
        ant, iou = orthogonal_anterior(sup), float("nan")
    # the centroid of a symmetric vertebra lies on its symmetry plane: use it as is
    binary = mask.with_array((mask.array == label).astype(np.float32))
    plane = sample_plane(binary, centre, sup, ant, half_mm=HALF_FIELD_MM, pixel_mm=PIXEL_MM, order=1)
    body = body_profile(plane)
    plane_pts, depth = measure_columns(body, PIXEL_MM, HALF_FIELD_MM)
    kp = {k: tuple(float(x) for x in plane_to_lps(centre, sup, ant, *plane_pts[k])) for k in KEYPOINT_NAMES}
    rows = np.nonzero(body.any(axis=1))[0]
    if rows.min() == 0 or rows.max() == body.shape[0] - 1 or body[:, 0].any() or body[:, -1].any():
        notes.append("vertebral body reaches the edge of the measuring field")
    return KeypointResult(kp, sup, ant, depth, iou, notes)
