"""Stage 2's outlines completed into the bone they touch: the posterior elements.

On real CT the network outlines a vertebra's body well but marks only a quarter to a half of its
posterior elements (pedicles, laminae, processes are solid cortical bone on real scans, a
shell-and-marrow on SynthSpine; ``docs/segmentation.md``). What it misses is bone that touches what
it found. So each vertebra's outline is grown into the bone around it:

* **Bone** is CT ≥ ``hu`` (lightly smoothed, so noise does not cut thin laminae).
* **Competitive growth**: all vertebrae grow at once, one voxel step at a time (in millimetres, so
  thick slices are crossed at their own pace), and a bone voxel goes to the vertebra that reaches it
  first — the bone between two vertebrae is split where their fronts meet (a geodesic Voronoi
  partition), at most ``max_mm`` from the network's outline.
* **Where a vertebra may grow**, in its own frame (``vertebra_parts.vertebra_frame``: ``u`` left,
  ``v`` posterior, ``w`` along the spine, from the centres the outlines were drawn around): behind
  the plane 5 mm in front of its centre (``POSTERIOR_FROM_MM``; the body's posterior wall lies just
  behind the centre, and the aorta, enhanced or calcified, and osteophytes in front), within
  ``LATERAL_FACTOR`` × the distance between neighbouring centres of the axis (transverse processes,
  not ribs), not above the midpoint to the cranial neighbour by more than ``CRANIAL_MARGIN_MM``
  (superior articular processes), and not below the midpoint to the caudal one by more than
  ``CAUDAL_MARGIN_MM`` plus ``CAUDAL_SLOPE`` × how far behind the centre the voxel lies (spinous
  processes slope caudally). A vertebra at the end of the chain uses its one neighbour's distance
  on both sides and stops at the midpoint on its open side, so L5 does not take the sacrum nor the
  last vertebra in the chain the one beyond it.
  The limits were measured on the real vertebra masks in ``../shared/data`` (VerSe, HealthiVert-GAN
  and TPTBox masks, T9–L5; ``docs/segmentation.md``).
* **Marrow** enclosed by a vertebra's bone is filled (3D holes only: the canal stays open).
* **Not cervical**: C1–C7 keep the network's outline (``CERVICAL_LABELS``).
* **Not along ribs**: a vertebra whose growth meets bone beyond its lateral limit (more than
  ``RIB_OVERFLOW_MM3``) has a rib joined to it — a costovertebral joint bridged by partial volume
  or drawn without a gap — and keeps the network's outline: the growth would follow the rib.

The network's own fracture probability is left as it was; only the outline grows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

#: Bone threshold (HU) of the growth; the segmentation card's ``postprocess.bone_growth`` overrides.
HU = 150.0
#: Longest growth path (mm) from the network's outline.
MAX_MM = 40.0
#: Half-width (× neighbour distance) of the band around the spine's axis a vertebra may grow into.
LATERAL_FACTOR = 1.6
#: Hard cap on that half-width (mm).
LATERAL_CAP_MM = 55.0
#: Growth allowed above the midpoint to the cranial neighbour (mm).
CRANIAL_MARGIN_MM = 10.0
#: Growth allowed below the midpoint to the caudal neighbour (mm), plus the slope term.
CAUDAL_MARGIN_MM = 10.0
#: Extra caudal allowance per mm behind the vertebra's centre beyond ``SLOPE_FROM_MM``.
CAUDAL_SLOPE = 0.4
#: Depth (mm behind the centre) from which the caudal allowance grows.
SLOPE_FROM_MM = 10.0
#: Gaussian σ (mm) of the smoothing before the bone threshold.
SMOOTH_MM = 0.5
#: Distance (mm) to the neighbours assumed for a vertebra that has none.
LONE_SPACING_MM = 30.0
#: A vertebra grows only behind this plane (mm along its posterior axis from its centre): the body's
#: posterior wall lies 0.5–8 mm behind the whole-vertebra centre in the real masks, its front
#: 26–34 mm in front (the aorta lies beyond it).
POSTERIOR_FROM_MM = -5.0
#: Bone (mm³) a vertebra's growth may meet beyond its lateral limit before it counts as a rib leaving
#: the vertebra: the transverse processes end inside the limit (0.9–1.6 × the neighbour distance in
#: the real masks, against 1.6), a rib runs on through it.
RIB_OVERFLOW_MM3 = 20.0
#: C1–C7 keep the network's outline: their transverse processes ring the vertebral arteries, no real
#: cervical mask exists here to measure the growth, and on SynthSpine it lowered their Dice.
CERVICAL_LABELS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7)

_OFFSETS = ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1))


def _frames(centroids: Mapping[int, np.ndarray]) -> dict[int, tuple[np.ndarray, float, float, bool, bool]]:
    """Each label's frame (rows u, v, w; LPS), its distances to the cranial and caudal neighbour (the
    other one's where a neighbour is missing; ``nan`` for a lone vertebra) and whether each exists."""
    from VertebralFractureLib.anatomy import is_vertebra_label, neighbours, vertebra
    from VertebralFractureLib.vertebra_parts import vertebra_frame

    out = {}
    for k, c in centroids.items():
        up = down = None
        if is_vertebra_label(k):  # the next vertebra in anatomical order (T13, L6), if it is the adjacent one
            above, below = neighbours(k, [j for j in centroids if is_vertebra_label(j)])
            up = centroids[above] if above is not None and vertebra(k).order - vertebra(above).order == 1 else None
            down = centroids[below] if below is not None and vertebra(below).order - vertebra(k).order == 1 else None
        d_up = float(np.linalg.norm(np.asarray(up) - c)) if up is not None else np.nan
        d_down = float(np.linalg.norm(np.asarray(down) - c)) if down is not None else np.nan
        d_up = d_down if np.isnan(d_up) else d_up
        d_down = d_up if np.isnan(d_down) else d_down
        out[k] = (vertebra_frame(dict(centroids), k), d_up, d_down, up is not None, down is not None)
    return out


def _allowed(local: np.ndarray, d_up: float, d_down: float, has_up: bool = True,
             has_down: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Whether local (u, v, w) points (n, 3) lie where their vertebra may grow, and whether they lie
    beyond its lateral limit only (bone leaving the spine sideways: a rib). Towards a side with no
    labelled neighbour the vertebra stops at the midpoint: what lies beyond is more likely the next
    vertebra's (or the sacrum's) than its own."""
    u, v, w = local[:, 0], local[:, 1], local[:, 2]
    d = 0.5 * (d_up + d_down)
    ok = v >= POSTERIOR_FROM_MM
    ok &= w <= 0.5 * d_up + (CRANIAL_MARGIN_MM if has_up else 0.0)
    below = CAUDAL_MARGIN_MM + CAUDAL_SLOPE * np.maximum(v - SLOPE_FROM_MM, 0.0) if has_down else 0.0
    ok &= w >= -(0.5 * d_down + below)
    inside = np.abs(u) <= min(LATERAL_FACTOR * d, LATERAL_CAP_MM)
    return ok & inside, ok & ~inside


def grow_into_bone(labels: np.ndarray, hu: np.ndarray, spacing_zyx: tuple[float, float, float],
                   zyx_to_lps, hu_threshold: float = HU, max_mm: float = MAX_MM,
                   centroids_lps: Mapping[int, np.ndarray] | None = None,
                   kept: Iterable[int] | None = None) -> np.ndarray:
    """Grow each labelled vertebra of ``labels`` (z, y, x) into the bone of ``hu`` around it.

    Args:
        labels: the network's label map (VerSe labels, 0 background) on the CT's grid.
        hu: the CT in HU, same shape.
        spacing_zyx: voxel size (mm) along z, y, x of the arrays.
        zyx_to_lps: maps (n, 3) z, y, x voxel positions to LPS mm (``Volume.zyx_to_lps``).
        hu_threshold: bone threshold (HU).
        max_mm: longest growth path (mm).
        centroids_lps: the centres the outlines were drawn around (stage 1's or given, LPS mm):
            each vertebra's frame and origin; the outlines' own centres of mass where missing (an
            outline that strays into a neighbour or the aorta moves its centre of mass, not these).
        kept: the labels whose growth may be kept (None: all but the cervical ones,
            :data:`CERVICAL_LABELS`); the others grow too, so that the
            bone between two vertebrae is split fairly, but keep only their network outline. A
            vertebra whose growth reaches more than :data:`RIB_OVERFLOW_MM3` of bone beyond its
            lateral limit has a rib attached and keeps only its network outline too.

    Returns:
        A new label map; every voxel labelled before keeps its label.
    """
    from scipy import ndimage

    labels = np.asarray(labels)
    present = [int(k) for k in np.unique(labels) if k]
    if not present:
        return labels.copy()
    sp = np.asarray(spacing_zyx, float)
    reach = np.ceil(max_mm / sp).astype(int)
    nz = np.argwhere(labels > 0)
    lo = np.maximum(nz.min(0) - reach, 0)
    hi = np.minimum(nz.max(0) + reach + 1, labels.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    lab = labels[box].copy()
    sub = np.asarray(hu[box], np.float32)
    if SMOOTH_MM > 0:
        sub = ndimage.gaussian_filter(sub, SMOOTH_MM / sp)
    free = (sub >= hu_threshold) & (lab == 0)
    del sub

    # each vertebra's frame and growth limits, looked up by label
    given = dict(centroids_lps or {})
    centroids = {k: np.asarray(given[k], float) if k in given else
                 np.asarray(zyx_to_lps(np.argwhere(labels == k).mean(0)[None]), float)[0] for k in present}
    frames = _frames(centroids)
    table = np.zeros(max(present) + 1, int)
    table[np.array(present)] = np.arange(len(present))
    rot = np.stack([frames[k][0] for k in present])  # (n, 3, 3)
    origin = np.stack([centroids[k] for k in present])
    d_up = np.nan_to_num(np.array([frames[k][1] for k in present]), nan=LONE_SPACING_MM)
    d_down = np.nan_to_num(np.array([frames[k][2] for k in present]), nan=LONE_SPACING_MM)
    has_up = [frames[k][3] for k in present]
    has_down = [frames[k][4] for k in present]
    lps_lo = np.asarray(zyx_to_lps(lo.astype(float)[None]), float)[0]
    axes_lps = np.stack([np.asarray(zyx_to_lps((lo + np.eye(3)[i])[None]), float)[0] - lps_lo for i in range(3)])

    shape = np.array(lab.shape)
    strides = np.array([shape[1] * shape[2], shape[2], 1])
    flat_lab = lab.ravel()  # a view: writing it writes lab
    flat_free = free.ravel()
    touching = ndimage.binary_dilation(free, ndimage.generate_binary_structure(3, 1)) & (lab > 0)
    front = np.flatnonzero(touching)
    overflow = np.zeros(len(present), int)  # bone voxels each vertebra reached beyond its lateral limit
    step = float(sp.min())
    due = np.zeros(3)  # growth (mm) since each axis last took a voxel step
    travelled = 0.0
    steps = 0
    while travelled < max_mm - 1e-6 and front.size:
        travelled += step
        steps += 1
        due += step
        moving = [ax for ax in range(3) if due[ax] + 1e-6 >= sp[ax]]
        due[moving] = 0.0
        grown = []
        for off in _OFFSETS:
            ax = int(np.flatnonzero(off)[0])
            if ax not in moving:
                continue
            sign = off[ax]
            coord = (front // strides[ax]) % shape[ax]
            src = front[(coord + sign >= 0) & (coord + sign < shape[ax])]
            dst = src + sign * strides[ax]
            take = flat_free[dst]
            src, dst = src[take], dst[take]
            if not dst.size:
                continue
            dst, first = np.unique(dst, return_index=True)
            k = flat_lab[src[first]]
            r = table[k]
            zyx = np.stack(np.unravel_index(dst, lab.shape), axis=1).astype(float)
            local = np.einsum("nij,nj->ni", rot[r], lps_lo + zyx @ axes_lps - origin[r])
            keep = np.zeros(dst.size, bool)
            for j in np.unique(r):
                m = r == j
                keep[m], sideways = _allowed(local[m], d_up[j], d_down[j], has_up[j], has_down[j])
                overflow[j] += int(sideways.sum())
            flat_lab[dst[keep]] = k[keep]
            flat_free[dst] = False  # a voxel outside its first claimant's region is not bone to grow on
            grown.append(dst[keep])
        if grown:
            front = np.concatenate([front, *grown])
        if steps % 4 == 0:  # drop fronts with no free neighbour left
            still = np.zeros(front.size, bool)
            for off in _OFFSETS:
                ax = int(np.flatnonzero(off)[0])
                coord = (front // strides[ax]) % shape[ax]
                inside = (coord + off[ax] >= 0) & (coord + off[ax] < shape[ax])
                nb = np.where(inside, front + off[ax] * strides[ax], front)
                still |= inside & flat_free[nb]
            front = front[still]
    # growth undone where a rib leaves the vertebra sideways, and for labels not kept
    ribbed = [k for k, n in zip(present, overflow) if n * float(np.prod(sp)) > RIB_OVERFLOW_MM3]
    undone = set(ribbed) | (set(present) - set(kept if kept is not None else
                                               [k for k in present if k not in CERVICAL_LABELS]))
    for k in set(present) - undone:  # marrow enclosed by the vertebra's bone
        m = lab == k
        idx = np.argwhere(m)
        bb = tuple(slice(a, b + 1) for a, b in zip(idx.min(0), idx.max(0)))
        filled = ndimage.binary_fill_holes(m[bb]) & (lab[bb] == 0)
        lab[bb][filled] = k
    if undone:
        lab[(lab != labels[box]) & np.isin(lab, list(undone))] = 0
    out = labels.copy()
    out[box] = lab
    return out
