"""A vertebra's body told apart from its posterior elements in a vertebra mask, by geometry.

For one label of a VerSe-style mask: the vertebra's frame — ``w`` along the spine (towards the
cranial neighbour's centroid), ``v`` posterior, ``u`` to the patient's left —, the mask resampled into
it at 1 mm (smoothed, so 2–3 mm slices give no steps), and the body's front and posterior wall: along
the mid-sagittal line (|u| ≤ :data:`MIDLINE_MM`), in the middle half of the vertebra's height, the
first run of bone from the front is the body and its end the posterior wall (the canal follows).
Everything behind the posterior wall — pedicles, laminae, facets, processes — is posterior elements.

Used by SynthSpine's real posterior elements (:mod:`.synth.templates`) and by ``evaluate real``
to measure the body's Dice where a mask has no sub-region labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Grid spacing (mm) of the vertebra's local frame.
STEP_MM = 1.0
#: Half-width (mm) of the mid-sagittal slab in which the body's run of bone is measured.
MIDLINE_MM = 3.0
#: Plausible mid-sagittal body depths (mm): outside, the split is not trusted.
DEPTH_RANGE_MM = (12.0, 60.0)


@dataclass
class LocalVertebra:
    """One vertebra resampled into its own frame, with its body's front and posterior wall."""

    frame: np.ndarray  # rows u (left), v (posterior), w (cranial), LPS
    origin: np.ndarray  # LPS mm of the frame's origin (the vertebra's centroid)
    axes: list[np.ndarray]  # local u, v, w coordinates (mm) of the grid
    mask: np.ndarray  # (w, v, u) bool, the vertebra on the grid
    front: float  # v (mm) of the body's anterior wall, mid-sagittal
    back: float  # v (mm) of the body's posterior wall, mid-sagittal

    def local(self, lps: np.ndarray) -> np.ndarray:
        """LPS mm (..., 3) to local (u, v, w) mm."""
        return (np.asarray(lps, float) - self.origin) @ self.frame.T


def vertebra_frame(centroids: dict[int, np.ndarray], label: int) -> np.ndarray:
    """Rows u (left), v (posterior), w (cranial) of a vertebra's frame, from its neighbours' centroids
    (LPS mm; the image's superior axis where it has none)."""
    c = centroids[label]
    up, down = centroids.get(label - 1), centroids.get(label + 1)
    if up is not None and down is not None:
        w = up - down
    elif up is not None:
        w = up - c
    elif down is not None:
        w = c - down
    else:
        w = np.array([0.0, 0.0, 1.0])
    w = w / np.linalg.norm(w)
    if w[2] < 0:
        w = -w
    v = np.array([0.0, 1.0, 0.0]) - w[1] * w
    v /= np.linalg.norm(v)
    return np.stack([np.cross(v, w), v, w])


def _largest_component(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    lab, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = ndimage.sum_labels(mask, lab, index=np.arange(1, n + 1))
    return lab == 1 + int(np.argmax(sizes))


def _first_run(line: np.ndarray) -> tuple[int, int] | None:
    """Start and end (exclusive) of the first run of True in a 1-D array."""
    idx = np.flatnonzero(line)
    if len(idx) == 0:
        return None
    gaps = np.flatnonzero(np.diff(idx) > 1)
    return int(idx[0]), (int(idx[gaps[0]]) if len(gaps) else int(idx[-1])) + 1


def local_vertebra(labelmap, label: int, centroids: dict[int, np.ndarray]) -> LocalVertebra | None:
    """One label of a label map (:class:`~VertebralFractureLib.volume.Volume`) in its own frame, or None
    when it is too small or its body cannot be told from its posterior elements."""
    from scipy import ndimage

    arr = np.asarray(labelmap.array)
    zyx = np.argwhere(arr == label)
    if len(zyx) < 200:
        return None
    c = np.asarray(centroids[label], float)
    frame = vertebra_frame(centroids, label)
    local = (labelmap.zyx_to_lps(zyx) - c) @ frame.T
    lo, hi = np.floor(local.min(0)) - 4, np.ceil(local.max(0)) + 4
    axes = [np.arange(lo[k], hi[k] + STEP_MM / 2, STEP_MM) for k in range(3)]
    ww, vv, uu = np.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
    lps = c + uu[..., None] * frame[0] + vv[..., None] * frame[1] + ww[..., None] * frame[2]
    ijk = labelmap.lps_to_index(lps.reshape(-1, 3))
    src = (arr == label).astype(np.float32)
    sampled = ndimage.map_coordinates(src, [ijk[:, 2], ijk[:, 1], ijk[:, 0]], order=1, mode="constant", cval=0.0)
    mask = _largest_component(ndimage.gaussian_filter(sampled.reshape(uu.shape), 0.6 / STEP_MM) >= 0.5)
    slab = mask[:, :, np.abs(axes[0]) <= MIDLINE_MM].any(axis=2)  # (w, v)
    rows = np.flatnonzero(slab.any(axis=1))
    if len(rows) < 8:
        return None
    mid = rows[len(rows) // 4: len(rows) - len(rows) // 4]
    runs = [r for r in (_first_run(slab[k]) for k in mid) if r is not None]
    if len(runs) < 3:
        return None
    front = float(np.median([axes[1][a] for a, _ in runs]))
    back = float(np.median([axes[1][b - 1] for _, b in runs])) + STEP_MM / 2
    if not DEPTH_RANGE_MM[0] <= back - front <= DEPTH_RANGE_MM[1]:
        return None
    return LocalVertebra(frame, c, axes, mask, front, back)


def body_mask(labelmap, labels: list[int] | None = None) -> tuple[np.ndarray, list[int]]:
    """The vertebral bodies of a label map: each label's voxels in front of its posterior wall.

    Returns:
        A boolean array on the label map's grid, and the labels whose body could be told apart
        (the others are left out of the array).
    """
    arr = np.asarray(labelmap.array)
    present = [int(k) for k in np.unique(arr) if k]
    centroids = {k: labelmap.zyx_to_lps(np.argwhere(arr == k).mean(0)) for k in present}
    out = np.zeros(arr.shape, bool)
    done = []
    for k in (present if labels is None else [k for k in labels if k in centroids]):
        lv = local_vertebra(labelmap, k, centroids)
        if lv is None:
            continue
        zyx = np.argwhere(arr == k)
        v = lv.local(labelmap.zyx_to_lps(zyx))[:, 1]
        inside = zyx[v < lv.back]
        out[tuple(inside.T)] = True
        done.append(k)
    return out, done
