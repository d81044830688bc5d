"""Genant keypoints of a vertebra on its mid-sagittal plane: learned (2D M-SCN) or measured on the mask.

Both start from the same view (:func:`sagittal_view`):

1. frame: superior = local spine axis (neighbouring centroids), anterior = patient anterior turned
   to the vertebra's mirror-symmetry plane (:mod:`.sagittal`);
2. resample the binary mask on that plane (0.25 mm) and keep the vertebral body: the most anterior
   large connected region (the spinal canal separates it from the posterior elements there).

Learned (seeds/002 §2.3.3, :func:`learned_keypoints`): the 2D M-SCN regresses one heatmap per
keypoint from the mask on three parallel sagittal planes (:class:`KeypointInput`) centred on the
body; each keypoint is its heatmap's sub-pixel peak, and the lowest of the six peaks is the
network's confidence.

Geometric (the fallback, :func:`geometric_keypoints`): in three columns — anterior and posterior
(inset by ``max(2 mm, 7 %`` of the body depth) from the walls measured at mid-height, as a reader
places the points inside the corners) and middle — the superior and inferior endplate points are the
body's top and bottom, taken as the median over a 1 mm wide band so one stray voxel does not move them.

Both return the six keypoints in LPS with quality notes; heights and grades follow in :mod:`.genant`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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


@dataclass
class SagittalView:
    """A vertebra's mid-sagittal frame, its binary mask volume, and the mask on that plane
    (0.25 mm pixels, :data:`PIXEL_MM`)."""

    centre: np.ndarray
    superior: np.ndarray
    anterior: np.ndarray
    symmetry_iou: float
    binary: Volume
    plane: np.ndarray
    body: np.ndarray
    notes: list[str] = field(default_factory=list)

    def body_centre_lps(self) -> np.ndarray:
        """The centre of the body's bounding box on the plane, in LPS mm."""
        rows = np.nonzero(self.body.any(axis=1))[0]
        cols = np.nonzero(self.body.any(axis=0))[0]
        t = (rows.min() + rows.max()) / 2.0 * PIXEL_MM - HALF_FIELD_MM
        s = HALF_FIELD_MM - (cols.min() + cols.max()) / 2.0 * PIXEL_MM
        return plane_to_lps(self.centre, self.superior, self.anterior, s, t)


def sagittal_view(
    mask: Volume, label: int, centroid_lps: np.ndarray, superior: np.ndarray, use_symmetry: bool = True
) -> SagittalView:
    """The mid-sagittal plane of vertebra ``label`` and its body there.

    Args:
        mask: labelmap (VerSe labels) in any geometry.
        label: the vertebra.
        centroid_lps: its centroid (LPS mm); the plane passes through it.
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
    rows = np.nonzero(body.any(axis=1))[0]
    if rows.min() == 0 or rows.max() == body.shape[0] - 1 or body[:, 0].any() or body[:, -1].any():
        notes.append("vertebral body reaches the edge of the measuring field")
    return SagittalView(centre, sup, ant, iou, binary, plane, body, notes)


def geometric_keypoints(
    mask: Volume, label: int, centroid_lps: np.ndarray, superior: np.ndarray, use_symmetry: bool = True,
    view: SagittalView | None = None,
) -> KeypointResult:
    """Six keypoints of vertebra ``label`` in a labelmap, measured on its mid-sagittal plane.

    Args:
        mask: labelmap (VerSe labels) in any geometry.
        label: the vertebra to measure.
        centroid_lps: its centroid (LPS mm).
        superior: the local spine axis (unit, LPS), e.g. :func:`.sagittal.spine_axis`.
        use_symmetry: turn the plane to the vertebra's mirror symmetry (else the patient's axes).
        view: the :func:`sagittal_view` when already computed.

    Raises:
        ValueError: when the vertebra has no body on its mid-sagittal plane.
    """
    if view is None:
        view = sagittal_view(mask, label, centroid_lps, superior, use_symmetry)
    plane_pts, depth = measure_columns(view.body, PIXEL_MM, HALF_FIELD_MM)
    kp = {k: tuple(float(x) for x in plane_to_lps(view.centre, view.superior, view.anterior, *plane_pts[k]))
          for k in KEYPOINT_NAMES}
    return KeypointResult(kp, view.superior, view.anterior, depth, view.symmetry_iou, list(view.notes))


# ---------------------------------------------------------------- learned keypoints (2D M-SCN)

@dataclass(frozen=True)
class KeypointInput:
    """The keypoint network's input: the vertebra's mask on parallel sagittal planes.

    ``size`` × ``size`` pixels of ``pixel_mm``, centred on the body (:meth:`SagittalView.body_centre_lps`),
    one channel per plane at ``lateral_offsets_mm`` to the left of the mid-sagittal plane. Besides
    the mid-sagittal plane of the seed, the parallel planes show the endplates' staircase where
    thick slices cut them elsewhere, which pins the endplate between slices.
    """

    size: int = 128
    pixel_mm: float = 0.625
    lateral_offsets_mm: tuple[float, ...] = (-4.0, 0.0, 4.0)

    @property
    def half_mm(self) -> float:
        return (self.size - 1) * self.pixel_mm / 2.0

    @classmethod
    def from_card(cls, card: Any) -> KeypointInput:
        arch = card.architecture
        return cls(size=int(card.patch_size[0]), pixel_mm=float(card.spacing_mm[0]),
                   lateral_offsets_mm=tuple(float(x) for x in arch.get("input_planes_mm", (0.0,))))

    def st_to_pixels(self, st: np.ndarray) -> np.ndarray:
        """Plane coordinates ``(…, 2)`` (s anterior, t superior; mm) → pixel ``(row, col)``."""
        st = np.asarray(st, dtype=float)
        return np.stack([(st[..., 1] + self.half_mm) / self.pixel_mm, (self.half_mm - st[..., 0]) / self.pixel_mm], -1)

    def pixels_to_st(self, rc: np.ndarray) -> np.ndarray:
        """Pixel ``(…, 2)`` (row, col) → plane coordinates ``(s, t)`` in mm."""
        rc = np.asarray(rc, dtype=float)
        return np.stack([self.half_mm - rc[..., 1] * self.pixel_mm, rc[..., 0] * self.pixel_mm - self.half_mm], -1)


def plane_stack(binary: Volume, centre: np.ndarray, sup: np.ndarray, ant: np.ndarray, spec: KeypointInput) -> np.ndarray:
    """``(channels, size, size)`` float32 stack of a binary mask volume on the planes of ``spec``
    (linear interpolation: a partial-volume edge is a ramp, not a staircase)."""
    left = np.cross(sup, ant)
    return np.stack([
        sample_plane(binary, centre + off * left, sup, ant, half_mm=spec.half_mm, pixel_mm=spec.pixel_mm, order=1)
        for off in spec.lateral_offsets_mm
    ]).astype(np.float32)


def heatmap_peaks(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per channel the sub-pixel peak ``(row, col)`` and its value.

    The peak is the maximum, refined along each axis by the parabola through the logarithms of the
    maximum and its two neighbours (exact for a Gaussian peak); where a neighbour is not positive,
    the maximum pixel stays.
    """
    h = np.asarray(heatmaps, dtype=np.float64)
    c, n_r, n_c = h.shape
    rc = np.zeros((c, 2))
    peaks = np.zeros(c)
    for k in range(c):
        r, q = np.unravel_index(int(np.argmax(h[k])), (n_r, n_c))
        peaks[k] = h[k, r, q]
        rc[k] = (r, q)
        for axis, (i, n) in enumerate(((r, n_r), (q, n_c))):
            if not 0 < i < n - 1:
                continue
            trio = h[k, i - 1:i + 2, q] if axis == 0 else h[k, r, i - 1:i + 2]
            if np.all(trio > 1e-9):
                lm, l0, lp = np.log(trio)
                den = lm - 2 * l0 + lp
                if den < 0:
                    rc[k, axis] = i + float(np.clip(0.5 * (lm - lp) / den, -0.5, 0.5))
    return rc, peaks


def build_keypoint_network(card_architecture: dict[str, Any]) -> Any:
    """The 2D M-SCN described by a keypoint model card's ``architecture``."""
    from VertebralFractureLib.networks.mscn import MSCN

    kwargs = {k: v for k, v in card_architecture.items() if k not in ("type", "input_planes_mm")}
    kwargs.setdefault("out_channels", len(KEYPOINT_NAMES))  # one heatmap per keypoint, in this order
    kwargs.setdefault("in_channels", len(card_architecture.get("input_planes_mm", (0.0,))))
    return MSCN(dims=2, **kwargs)


def predict_heatmaps(net: Any, stacks: np.ndarray, device: str = "cpu") -> np.ndarray:
    """Heatmaps ``(B, 6, size, size)`` of input stacks ``(B, channels, size, size)``."""
    import torch

    net.eval()
    with torch.inference_mode():
        return net(torch.from_numpy(np.ascontiguousarray(stacks, dtype=np.float32)).to(device)).float().cpu().numpy()


def learned_keypoints(view: SagittalView, model: tuple[Any, Any], device: str = "cpu") -> tuple[KeypointResult, float]:
    """Six keypoints from the 2D M-SCN on the vertebra's sagittal planes.

    Args:
        view: the vertebra's :func:`sagittal_view` (frame, mask and body).
        model: ``(card, network)`` of the keypoint model.

    Returns:
        The keypoints, and the confidence: the lowest of the six heatmap peaks (about 1 where the
        network is sure; compare with the card's ``postprocess.min_peak``).
    """
    card, net = model
    spec = KeypointInput.from_card(card)
    centre = view.body_centre_lps()
    stack = plane_stack(view.binary, centre, view.superior, view.anterior, spec)
    heat = predict_heatmaps(net, stack[None], device)[0]
    rc, peaks = heatmap_peaks(heat)
    st = spec.pixels_to_st(rc)
    kp = {name: tuple(float(x) for x in plane_to_lps(centre, view.superior, view.anterior, *st[k]))
          for k, name in enumerate(KEYPOINT_NAMES)}
    cols = np.nonzero(view.body.any(axis=0))[0]
    depth = float((cols.max() - cols.min() + 1) * PIXEL_MM)
    return KeypointResult(kp, view.superior, view.anterior, depth, view.symmetry_iou, list(view.notes)), float(peaks.min())
