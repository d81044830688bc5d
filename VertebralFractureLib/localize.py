"""Stage 1: vertebra localization and naming with the M-SCN (seeds/002 §2.2).

1. The CT goes onto the model's LPS-aligned grid (:mod:`.preprocess`).
2. The 3D M-SCN predicts one heatmap per vertebra label, over overlapping windows merged by
   Gaussian-weighted averaging (MONAI's sliding-window inferer).
3. Vertebrae are found label-free, as the peaks of the sum of all channels, refined to sub-voxel
   precision by a Gaussian (log-parabola) fit through the peak and its neighbours on each axis.
4. Anatomical consistency (:func:`detect_and_name`): the peaks form one chain from cranial to
   caudal with plausible steps (isolated false detections drop out, one missed vertebra between
   two is allowed), and the chain is named as a whole — strictly increasing labels that best fit
   every label's heatmap and the expected spacing per level, so a vertebra whose own channel is
   weak is still found and named, duplicates cannot occur, and a missed vertebra leaves a gap in
   the names. ``localization_score`` is the named label's heatmap value (1.0 = the training
   target's peak).
   In the pipeline, stage 2's network then outlines each member of the chain: consecutive members
   whose outlines are one vertebra (several peaks on a vertebra cut by the end of the scan, or a
   vertebra placed where one was found, as on real CT) count once (:func:`merge_same_outlines`).
   The chain is then named from anchors, as a reader names a spine (:mod:`.anchors`:
   the first and last rib-bearing vertebrae, the vertebra above the sacrum, C2 below the skull
   base, measured in the CT): names that contradict an anchor cost its confidence, with 11 or 13
   rib pairs, 4 or 6 lumbar vertebrae as cheaper variants, and the network's evidence decides what
   the anchors leave open. Each vertebra gets ``naming`` {anchor, confidence}; with no anchor in
   view the names are marked unanchored.
5. A vertebra whose centroid lies closer than about half a body height to the cranial or caudal
   end of the field of view is flagged ``complete: false``.

The centroid is the VerSe one — the centre of mass of the whole vertebra, body and posterior
elements — which lies in the posterior part of the body or at its posterior wall (8–12 mm behind
the body's own centre on the real sub-sample001 masks).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import numpy as np

from VertebralFractureLib.anatomy import VERTEBRAE, cranio_caudal, vertebra
from VertebralFractureLib.volume import Volume

#: Output channel → VerSe label, cranial to caudal (C1 … T12, T13, L1 … L6).
CHANNEL_LABELS: tuple[int, ...] = tuple(cranio_caudal(VERTEBRAE))
#: Minimum summed heatmap peak of a detection (the training target's peak is 1.0); the model card's
#: ``postprocess.threshold``, chosen on the validation set, takes precedence.
DEFAULT_THRESHOLD = 0.2
#: A centroid closer than this to the cranial/caudal end of the field of view: vertebra cut.
EDGE_MM = 10.0


@dataclass(frozen=True)
class Candidate:
    """A found vertebra: its label, centroid (LPS mm) and score.

    ``naming`` (when anchors were looked for): ``{"anchor": "first rib" | "last rib" | "sacrum" | "C2"
    | None, "confidence": 0–1}`` — the landmark its name was counted from, or None.
    """

    label: int
    position_lps: np.ndarray
    score: float
    naming: dict[str, Any] | None = None
    #: Not detected: placed between its two detected neighbours, where the chain's spacing shows a
    #: vertebra was missed (:func:`fill_gaps`).
    interpolated: bool = False
    #: Not detected: placed one step above the chain's cranial end, where the field of view cuts a
    #: vertebra the network did not find (:func:`extend_cranially`).
    extrapolated: bool = False


#: Detection: local maxima of the summed heatmaps at least this far apart (mm).
MIN_SEPARATION_MM = 10.0
#: Detection chain: largest distance between consecutive detections (mm; a missed vertebra between two).
MAX_GAP_MM = 80.0
#: Detection chain: largest angle (degrees) of a step between consecutive detections to the body axis.
MAX_STEP_ANGLE_DEG = 60.0
#: A step of the chain this many times the median of the neighbouring steps hides missed vertebrae
#: (adjacent steps differ by < 20 % along a normal spine, VerSe medians per level) …
GAP_RATIO = 1.6
#: … of which at most this many are placed between the two neighbours (:func:`fill_gaps`).
MAX_FILLED = 2
#: A step of the chain shorter than this share of the median of the neighbouring steps joins two
#: detections of one vertebra (the network split its peak, e.g. on thick slices): they are merged
#: (:func:`merge_duplicates`). A crushed vertebra shortens its steps to ~0.8 of its neighbours'.
DUPLICATE_RATIO = 0.55
#: Two consecutive members of the chain whose stage-2 outlines share at least this much of the smaller
#: one are one vertebra (:func:`merge_same_outlines`). Two distinct vertebrae shared at most 0.39
#: (99th percentile 0.07–0.12) over 537 consecutive pairs of 52 SynthSpine validation cases (seeds 202
#: and 141); see docs/localization.md.
SAME_OUTLINE_SHARE = 0.4
#: A vertebra cut by the cranial end of the field of view is placed one step above the chain
#: (:func:`extend_cranially`) when bone fills at least this share of a ball of :data:`BONE_BALL_MM`
#: there, relative to the median of the chain's detections …
BONE_SHARE = 0.5
#: … and at least this share absolutely (HU > :data:`BONE_HU`).
BONE_MIN = 0.2
BONE_BALL_MM = 12.0
BONE_HU = 150.0
#: Naming: cost of each (non-variant) label skipped between consecutive detections.
SKIP_COST = 0.2
#: Naming: weight of |log(observed / expected distance)| of each step (expected: VerSe medians per level).
SPACING_WEIGHT = 0.5
#: Variants that a normal spine does not have: skipping them costs nothing.
VARIANT_LABELS = frozenset({25, 28})  # L6, T13
#: Successors allowed as variants when naming with anchors (Payer et al. 2020; VERIDAH, Möller et al.
#: 2026): T11 → L1 (11 thoracic vertebrae) is one step, not a skipped T12. T12 → T13 → L1 and L5 → L6
#: come from :data:`VARIANT_LABELS`.
VARIANT_STEPS = frozenset({(18, 20)})
#: Naming with anchors: cost of each variant (a T13 or L6 name, a T11 → L1 step), so that normal anatomy
#: wins where the anchors leave the choice open; an anchor's variant cost (~0.3) outweighs it.
VARIANT_COST = 0.05
#: Naming with anchors: the network's label evidence of the whole chain counts as much as this share of
#: one fully confident anchor (the network has no global reference: its names can all be shifted).
NETWORK_SHARE = 0.2
#: Naming with anchors: the subject's size, as a factor on the VerSe median spacings, is chosen among
#: these (a small or tall subject's spacings would otherwise pull the names a level against an anchor),
#: each costing :data:`SIZE_COST` × |log factor|.
SIZE_FACTORS = (0.8, 0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.15, 1.2)
SIZE_COST = 0.5
#: Naming: confidence of names that no anchor fixes (counted from the network's appearance only).
UNANCHORED_CONFIDENCE = 0.2
#: Naming: an anchor's confidence decays by this factor per vertebra counted away from it …
COUNT_DECAY = 0.97
#: … and by this factor per vertebra missed in between (a skipped label).
GAP_DECAY = 0.8


def _subvoxel(h: np.ndarray, zyx: np.ndarray) -> np.ndarray:
    """Sub-voxel peak position: a Gaussian (log-parabola) fit through the peak and its neighbours per axis."""
    sub = zyx.astype(float)
    peak = float(h[tuple(zyx)])
    for a in range(3):
        if 0 < zyx[a] < h.shape[a] - 1:
            lo, hi = zyx.copy(), zyx.copy()
            lo[a] -= 1
            hi[a] += 1
            vals = np.log(np.maximum([h[tuple(lo)], peak, h[tuple(hi)]], 1e-6))
            denom = vals[0] - 2 * vals[1] + vals[2]
            if denom < -1e-9:
                sub[a] += float(np.clip(0.5 * (vals[0] - vals[2]) / denom, -0.5, 0.5))
    return sub


def step_costs(dist_mm: float, labels: tuple[int, ...] = CHANNEL_LABELS, variants: bool = False,
               scale: float = 1.0) -> np.ndarray:
    """(C, C) cost of naming two consecutive detections ``dist_mm`` apart with channels a then b.

    :data:`SKIP_COST` per non-variant label skipped between a and b, plus :data:`SPACING_WEIGHT` ×
    |log(dist / expected)|, expected = the median spacing of a plus that of every non-variant
    level between (VerSe'19/'20 medians, :mod:`.synth.priors`, times the subject's ``scale``);
    infinite where b ≤ a. With ``variants``, the steps of :data:`VARIANT_STEPS` are single steps
    (costing :data:`VARIANT_COST`).
    """
    expected, skipped = _step_tables(labels, variants)
    with np.errstate(invalid="ignore"):
        cost = SKIP_COST * skipped + SPACING_WEIGHT * np.abs(np.log(dist_mm / (scale * expected)))
    if variants:
        for a, b in VARIANT_STEPS:
            if a in labels and b in labels:
                cost[labels.index(a), labels.index(b)] += VARIANT_COST
    return np.where(np.isfinite(expected), cost, np.inf)


@lru_cache(maxsize=8)
def _step_tables(labels: tuple[int, ...], variants: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Expected distance (mm; NaN where b ≤ a) and number of skipped non-variant labels, (C, C) each."""
    from VertebralFractureLib.synth.priors import LEVELS

    icd = np.array([LEVELS[vertebra(lab).name].icd for lab in labels])
    counted = np.array([lab not in VARIANT_LABELS for lab in labels])
    n = len(labels)
    expected, skipped = np.full((n, n), np.nan), np.zeros((n, n))
    for a in range(n):
        for b in range(a + 1, n):
            between = counted[a + 1: b]
            expected[a, b] = icd[a] + float(icd[a + 1: b][between].sum())
            skipped[a, b] = float(between.sum())
            if variants and (labels[a], labels[b]) in VARIANT_STEPS:
                expected[a, b], skipped[a, b] = icd[a], 0.0
    return expected, skipped


def _peaks(total: np.ndarray, threshold: float, spacing: np.ndarray, kept: list[np.ndarray]) -> list[np.ndarray]:
    """Local maxima of ``total`` ≥ ``threshold``, strongest first, at least :data:`MIN_SEPARATION_MM`
    from each other and from the voxels already ``kept`` (non-maximum suppression)."""
    from scipy import ndimage

    local = (total == ndimage.maximum_filter(total, size=3, mode="constant")) & (total >= threshold)
    peaks = np.argwhere(local)
    peaks = peaks[np.argsort(-total[tuple(peaks.T)])]
    new: list[np.ndarray] = []
    for p in peaks:
        if all(np.linalg.norm((p - q) * spacing) >= MIN_SEPARATION_MM for q in kept + new):
            new.append(p)
    return new


def detect_and_name(heatmaps: np.ndarray, grid: Volume, threshold: float = DEFAULT_THRESHOLD,
                    labels: tuple[int, ...] = CHANNEL_LABELS, anchors: Any = None, fill: bool = True,
                    second: np.ndarray | None = None, outlines: Any = None) -> list[Candidate]:
    """Vertebrae found in the heatmaps (C, z, y, x), named as one consistent chain.

    1. Detection is label-free: local maxima of the sum of all channels (a vertebra whose own
       channel is weak because the network hesitates between two names is still found), at least
       :data:`MIN_SEPARATION_MM` apart, with a summed peak ≥ ``threshold``.
    2. The detections form a chain from cranial to caudal: the subset with the highest total peak
       whose consecutive members go caudally, lie 10–80 mm apart (one missed vertebra between two
       is allowed) and step along the body axis (≤ 60° off it) — dynamic programming.
    3. Naming (:func:`name_chain`): the chain gets strictly increasing labels maximising the sum of
       each label's heatmap at its detection, minus :data:`SKIP_COST` per label skipped and
       :data:`SPACING_WEIGHT` × |log(observed / expected distance)| per step (expected from the
       VerSe medians per level), again by dynamic programming. T13 and L6 are skipped for free,
       and named only where their channel wins.

    Between 2 and 3, where the chain's spacing shows that vertebrae were missed (a step
    :data:`GAP_RATIO` times its neighbours'), they are placed between their neighbours
    (:func:`fill_gaps`; ``interpolated`` True, unless ``fill`` is False), so that they are counted in
    the names, segmented and graded like the others.

    ``anchors``: naming anchors (:class:`~.anchors.Anchor`, each naming a chain index), an
    :class:`~.anchors.AnchorReport`, or a callable that takes the chain's centroids (n, 3, LPS mm,
    cranial → caudal) and returns either — e.g. ``lambda p: find_anchors(ct, p)``. With anchors,
    names that contradict an anchor cost its confidence (:func:`name_chain`), detections that lie in
    the sacrum are dropped, and each result carries ``naming``; without (None), naming is unchanged
    and ``naming`` is None.

    ``second``: the heatmaps of a second look at the image (the left–right mirror image's, mirrored
    back: :func:`heatmaps`). Its peaks that lie farther than :data:`MIN_SEPARATION_MM` from every peak
    of the first look join the detections, each with its own look's position and evidence; a
    vertebra the first look found is never moved.

    ``outlines``: a callable that takes the chain's centroids and returns stage 2's outlines of them
    (:func:`.segment.chain_outlines`). Consecutive members that outline the same vertebra are one
    (:func:`merge_same_outlines`): after gaps are filled, so that a vertebra placed where one was
    already found goes too; before the chain is named. A vertebra placed above the chain, where the
    view cuts it, is left out of it (a crop of a cut vertebra may outline its neighbour).

    ``score`` of each result is its label's heatmap value at the detection (1.0 = the training
    target's peak).
    """
    if heatmaps.ndim != 4 or heatmaps.shape[0] != len(labels):
        raise ValueError(f"heatmaps must be (C={len(labels)}, z, y, x), got {heatmaps.shape}")
    if second is not None and second.shape != heatmaps.shape:
        raise ValueError(f"the second look's heatmaps {second.shape} differ from the first's {heatmaps.shape}")
    looks = [np.maximum(heatmaps, 0.0)] + ([] if second is None else [np.maximum(second, 0.0)])
    totals = [h.sum(axis=0) for h in looks]
    spacing = np.array(grid.spacing[::-1])
    kept: list[np.ndarray] = []
    source: list[int] = []  # the look each detection comes from
    for k, total in enumerate(totals):
        new_peaks = _peaks(total, threshold, spacing, kept)
        kept += new_peaks
        source += [k] * len(new_peaks)
    if not kept:
        return []
    pos = np.array([grid.zyx_to_lps(_subvoxel(totals[k], p)) for p, k in zip(kept, source)])
    peak_val = np.array([min(float(totals[k][tuple(p)]), 1.5) for p, k in zip(kept, source)])
    # 2. the chain of detections, cranial (high LPS z) to caudal
    order = np.argsort(-pos[:, 2])
    pos, peak_val = pos[order], peak_val[order]
    kept, source = [kept[i] for i in order], [source[i] for i in order]
    n = len(kept)
    best, prev = peak_val.copy(), np.full(n, -1)
    cos_max = np.cos(np.radians(MAX_STEP_ANGLE_DEG))
    for j in range(n):
        for i in range(j):
            d = pos[i] - pos[j]
            dist = float(np.linalg.norm(d))
            if d[2] <= 0 or not (MIN_SEPARATION_MM <= dist <= MAX_GAP_MM) or d[2] / dist < cos_max:
                continue
            if best[i] + peak_val[j] > best[j]:
                best[j], prev[j] = best[i] + peak_val[j], i
    j, chain = int(np.argmax(best)), []
    while j >= 0:
        chain.append(j)
        j = int(prev[j])
    chain = chain[::-1]
    while len(chain) > len(labels):  # more detections than labels: drop the weakest
        chain.remove(min(chain, key=lambda i: peak_val[i]))
    cpos, cvox = pos[chain], [(kept[i], source[i]) for i in chain]
    cpos, cvox = merge_duplicates(cpos, cvox, peak_val[chain])
    placed = np.zeros(len(cpos), bool)
    if fill:  # vertebrae the network missed inside the chain, placed between their neighbours
        cpos, placed = fill_gaps(cpos)
        it = iter(cvox)
        shape = np.array(totals[0].shape) - 1
        cvox = [(np.clip(np.round(grid.lps_to_index(p)[::-1]).astype(int), 0, shape), 0) if f else next(it)
                for p, f in zip(cpos, placed)]
        if len(cpos) > len(labels):  # cannot all be vertebrae: keep the detections only
            cpos, cvox, placed = cpos[~placed], [v for v, f in zip(cvox, placed) if not f], placed[~placed]
    above = np.zeros(len(cpos), bool)
    if fill:  # a vertebra cut by the top of the field of view, which the network rarely finds
        seen_by = [look for _, look in cvox]
        cpos, vox, above = extend_cranially(cpos, [v for v, _ in cvox], grid, len(labels))
        cvox = list(zip(vox, [0] * int(above.sum()) + seen_by))
        placed = np.concatenate([[False] * int(above.sum()), placed])
    below = int(np.asarray(above, bool).sum())  # placed above, where the view cuts it: its crop may outline a neighbour
    if outlines is not None and len(cpos) - below >= 2:  # one vertebra outlined twice: found twice, or placed beside itself
        keep = merge_same_outlines(cpos[below:], outlines(cpos[below:]), detected=~np.asarray(placed, bool)[below:])
        keep = list(range(below)) + [below + k for k in keep]
        cpos, cvox, placed, above = cpos[keep], [cvox[k] for k in keep], placed[keep], above[keep]
    found, anchor_list = None, None
    if anchors is not None:
        found = anchors(cpos) if callable(anchors) else anchors
        anchor_list = list(getattr(found, "anchors", found) or [])
        evidence = getattr(found, "vertebrae", None)
        if evidence is not None and len(evidence) == len(cpos):  # detections in the sacrum are not vertebrae
            keep = [k for k, e in enumerate(evidence) if not e.in_sacrum]
            new = {old: k for k, old in enumerate(keep)}
            cpos, cvox, placed, above = cpos[keep], [cvox[k] for k in keep], placed[keep], above[keep]
            anchor_list = [replace(a, index=new[a.index]) for a in anchor_list if a.index in new]
    if len(cpos) == 0:
        return []
    # 3. naming: evidence of each channel near each detection (3×3×3 neighbourhood maximum)
    n_c = len(labels)
    ev = np.zeros((len(cpos), n_c))
    for k, (v, look) in enumerate(cvox):
        sl = tuple(slice(max(0, c - 1), c + 2) for c in v)
        ev[k] = looks[look][(slice(None),) + sl].reshape(n_c, -1).max(axis=1)
    names, naming, notes = name_chain(ev, cpos, labels, anchor_list)
    if notes and hasattr(found, "conflicts"):
        found.conflicts.extend(notes)
    return [Candidate(labels[c], cpos[k], float(ev[k, c]), None if naming is None else naming[k],
                      bool(placed[k] and not above[k]), bool(above[k]))
            for k, c in enumerate(names)]


def merge_duplicates(positions: np.ndarray, voxels: list, peaks: np.ndarray) -> tuple[np.ndarray, list]:
    """Merge pairs of consecutive chain detections that are one vertebra found twice.

    A step shorter than :data:`DUPLICATE_RATIO` × the median of its neighbouring steps (chains of
    four or more detections) cannot join two vertebrae. The shortest such step is merged first, into
    the peak-weighted mean position (the network's two peaks straddle the centre) with the voxel of
    the stronger peak for the naming evidence; repeated until none is left.

    Args:
        positions: (n, 3) LPS mm, cranial → caudal.
        voxels: the grid index (z, y, x) of each detection.
        peaks: the summed heatmap peak of each detection.

    Returns:
        The positions and voxels after merging.
    """
    from VertebralFractureLib.anchors import chain_steps

    pos = np.asarray(positions, float).reshape(-1, 3).copy()
    vox, peak = list(voxels), np.asarray(peaks, float).copy()
    while len(pos) >= 4:
        steps, medians = chain_steps(pos)
        ratio = np.where(medians > 0, steps / np.where(medians > 0, medians, 1.0), np.inf)
        k = int(np.argmin(ratio))
        if not ratio[k] < DUPLICATE_RATIO:
            break
        w = peak[k:k + 2] / max(float(peak[k:k + 2].sum()), 1e-9)
        strong = k + int(peak[k + 1] > peak[k])
        pos[k] = w[0] * pos[k] + w[1] * pos[k + 1]
        vox[k], peak[k] = vox[strong], peak[k:k + 2].max()
        pos, peak = np.delete(pos, k + 1, axis=0), np.delete(peak, k + 1)
        del vox[k + 1]
    return pos, vox


def merge_same_outlines(positions: np.ndarray, outlines: Any, min_shared: float = SAME_OUTLINE_SHARE,
                        detected: np.ndarray | None = None) -> list[int]:
    """The chain indices to keep when consecutive members outline the same vertebra.

    On real CT the network sometimes finds one vertebra two or three times — several peaks on a
    vertebra cut by the end of the scan — at steps too long for :func:`merge_duplicates`; their
    short steps can then make a normal step look like a missed vertebra, and one is placed in the
    disc (:func:`fill_gaps`). Stage 2 settles it: consecutive members whose outlines
    (:class:`.segment.ChainOutlines`) share at least ``min_shared`` of the smaller one form a group.
    Of each group a detected member is kept rather than a placed one, and of those the one nearest
    to its own outline's centre.

    Args:
        positions: (n, 3) LPS mm, cranial → caudal.
        outlines: the chain's :class:`.segment.ChainOutlines`.
        min_shared: see :data:`SAME_OUTLINE_SHARE`.
        detected: (n,) bool, False for members placed rather than detected (default: all detected).

    Returns:
        The indices kept, in chain order.
    """
    pos = np.asarray(positions, float).reshape(-1, 3)
    shared = np.asarray(outlines.shared, float)
    if len(shared) != max(0, len(pos) - 1):
        raise ValueError(f"{len(shared)} shares for a chain of {len(pos)} members")
    found = np.ones(len(pos), bool) if detected is None else np.asarray(detected, bool)
    off = np.linalg.norm(np.asarray(outlines.centres, float) - pos, axis=1)
    off = np.where(np.isfinite(off), off, np.inf)
    keep, group = [], [0]
    for k in range(1, len(pos) + 1):
        if k < len(pos) and shared[k - 1] >= min_shared:
            group.append(k)
            continue
        keep.append(min(group, key=lambda i: (not found[i], off[i])))
        group = [k]
    return keep


def bone_share(grid: Volume, position_lps: np.ndarray, radius_mm: float = BONE_BALL_MM) -> float | None:
    """Share of the voxels within ``radius_mm`` of a point that are bone (HU > :data:`BONE_HU`) in the
    model grid (CT in HU); None when the ball lies outside the grid."""
    a = np.asarray(grid.array)
    centre = np.asarray(grid.lps_to_index(position_lps), float)[::-1]  # z, y, x
    sp = np.array(grid.spacing[::-1], float)
    r = np.ceil(radius_mm / sp).astype(int)
    lo = np.maximum(np.floor(centre).astype(int) - r, 0)
    hi = np.minimum(np.ceil(centre).astype(int) + r + 1, a.shape)
    if np.any(hi <= lo):
        return None
    zz, yy, xx = np.meshgrid(*[np.arange(a0, a1) for a0, a1 in zip(lo, hi)], indexing="ij")
    d2 = sum(((g - c) * s) ** 2 for g, c, s in zip((zz, yy, xx), centre, sp))
    ball = d2 <= radius_mm ** 2
    if not ball.any():
        return None
    return float((a[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]][ball] > BONE_HU).mean())


def extend_cranially(positions: np.ndarray, voxels: list, grid: Volume,
                     max_len: int) -> tuple[np.ndarray, list, np.ndarray]:
    """Place a vertebra one step above the chain where the top of the field of view cuts it.

    The network rarely finds a vertebra that the field of view cuts (the top of a chest CT through
    C7 or T1). Its place is one step (the chain's top step) above the first detection; it is placed
    there when that point lies inside the image, within one step of the cranial end (so the vertebra
    is cut: a whole one in view would have been found), and bone fills as much of a ball around it
    as around the detections (:data:`BONE_SHARE`, :data:`BONE_MIN`). Only the cranial end: below a
    spine-only crop the sacrum looks like a vertebra.

    Returns:
        The positions, voxels and a flag per position (True = placed here).
    """
    pos = np.asarray(positions, float).reshape(-1, 3)
    flags = np.zeros(len(pos), bool)
    if len(pos) < 2 or len(pos) >= max_len or getattr(grid, "array", None) is None:
        return pos, list(voxels), flags
    new = pos[0] + (pos[0] - pos[1])
    zyx = np.asarray(grid.lps_to_index(new), float)[::-1]
    shape = np.array(grid.array.shape)
    if np.any(zyx < -0.5) or np.any(zyx > shape - 0.5):
        return pos, list(voxels), flags
    top = max(float(grid.zyx_to_lps(np.array(corner) * (shape - 1))[2]) for corner in np.ndindex(2, 2, 2))
    step = float(np.linalg.norm(pos[0] - pos[1]))
    if top - new[2] > step:
        return pos, list(voxels), flags
    shares = [bone_share(grid, p) for p in pos]
    ref = float(np.median([b for b in shares if b is not None])) if any(b is not None for b in shares) else 0.0
    here = bone_share(grid, new)
    if here is None or here < max(BONE_MIN, BONE_SHARE * ref):
        return pos, list(voxels), flags
    vox = np.clip(np.round(zyx).astype(int), 0, shape - 1)
    return np.vstack([new, pos]), [vox] + list(voxels), np.concatenate([[True], flags])


def fill_gaps(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Place the vertebrae a chain (n, 3, LPS mm, cranial → caudal) evidently missed.

    Where a step is :data:`GAP_RATIO` times the median of its neighbouring steps (up to three on
    each side), ``round(step / median) − 1`` vertebrae (at most :data:`MAX_FILLED`) are placed at
    equal intervals between the two neighbours — as a reader counting down the spine does. Chains of
    fewer than four detections are left as they are (no reliable local spacing).

    Returns:
        The positions with the placed ones inserted, and a flag per position (True = placed).
    """
    from VertebralFractureLib.anchors import chain_steps

    pos = np.asarray(positions, float).reshape(-1, 3)
    flags = np.zeros(len(pos), bool)
    if len(pos) < 4:
        return pos, flags
    steps, medians = chain_steps(pos)
    out, out_flags = [pos[0]], [False]
    for k, (step, median) in enumerate(zip(steps, medians)):
        if median > 0 and step >= GAP_RATIO * median:
            missed = min(MAX_FILLED, int(round(step / median)) - 1)
            for m in range(1, missed + 1):
                out.append(pos[k] + (pos[k + 1] - pos[k]) * m / (missed + 1))
                out_flags.append(True)
        out.append(pos[k + 1])
        out_flags.append(False)
    return np.array(out), np.array(out_flags)


def _decode(unary: np.ndarray, dists: list[float], labels: tuple[int, ...], variants: bool,
            scale: float) -> tuple[float, list[int], float]:
    """Viterbi: the strictly increasing channels maximising ``unary`` minus the step costs; returns the
    objective, the channels and ``scale``."""
    n, n_c = unary.shape
    score = unary[0].copy()
    back = np.zeros((n, n_c), dtype=int)
    for k in range(1, n):
        total_ab = score[:, None] - step_costs(dists[k - 1], labels, variants, scale)  # channel a (rows) to b
        back[k] = np.argmax(total_ab, axis=0)
        score = total_ab[back[k], np.arange(n_c)] + unary[k]
    c = int(np.argmax(score))
    best = float(score[c])
    names = [c]
    for k in range(n - 1, 0, -1):
        c = int(back[k, c])
        names.append(c)
    return best, names[::-1], scale


def name_chain(evidence: np.ndarray, positions: np.ndarray, labels: tuple[int, ...] = CHANNEL_LABELS,
               anchors: list[Any] | None = None) -> tuple[list[int], list[dict[str, Any]] | None, list[str]]:
    """Name a cranio-caudal chain of vertebrae: strictly increasing labels, by dynamic programming.

    Args:
        evidence: (n, C) the network's evidence for each label (channel) at each vertebra.
        positions: (n, 3) the centroids (LPS mm), cranial to caudal.
        labels: the VerSe label of each channel.
        anchors: None (names from the network alone: unchanged behaviour), or landmarks that fix
            names (objects with ``kind``, ``index`` into the chain, ``confidence`` and
            ``cost(label)``, as :class:`~.anchors.Anchor`).

    Without anchors the objective is the summed evidence minus the step costs (:func:`step_costs`).
    With anchors it is, as a reader names a spine: the anchors first — each name that contradicts an
    anchor costs ``confidence × cost(label)`` (1 for a wrong name, less for a common variant such as
    11 or 13 rib pairs) —, the spacing and skip costs of each step for the subject's size that fits
    best (:data:`SIZE_FACTORS`), with the variant successors of :data:`VARIANT_STEPS` (each variant
    costing :data:`VARIANT_COST`), and the network's evidence
    scaled so that the whole chain's counts as :data:`NETWORK_SHARE` of one confident anchor (it
    decides only what the anchors leave open). An empty list of anchors (none in view) names as
    without anchors, except that no vertebra is named T13 or L6 (a reader shows those variants by
    counting ribs or from the sacrum; without either the usual anatomy is assumed), and marks every
    name unanchored.

    Returns:
        The channel index of each vertebra; with anchors, per vertebra ``{"anchor": kind or None,
        "confidence"}`` — the anchor its name agrees with (confidence decaying with the levels counted
        from it, :data:`COUNT_DECAY`, :data:`GAP_DECAY`; several agreeing anchors combine) or None and
        :data:`UNANCHORED_CONFIDENCE`; and notes on anchors the names had to contradict. An anchor met
        only as a variant (e.g. the last rib on a vertebra named T11) lowers the confidence by its cost.
    """
    n, n_c = evidence.shape
    looked = anchors is not None
    anchors = [a for a in anchors or [] if 0 <= a.index < n]
    anchored = any(getattr(a, "names", True) for a in anchors)  # none in view: the network's names, unanchored
    if anchored:
        net_w = NETWORK_SHARE / max(1.0, float(evidence.max(axis=1).sum()))
        unary = net_w * evidence.astype(float)
        unary[:, [lab in VARIANT_LABELS for lab in labels]] -= VARIANT_COST
        for a in anchors:
            unary[a.index] -= a.confidence * np.array([a.cost(lab) for lab in labels])
    else:
        unary = evidence.astype(float)
        if looked:  # none in view: a T13 or an L6 shows only when ribs or the sacrum are counted
            unary[:, [lab in VARIANT_LABELS for lab in labels]] = -np.inf
    dists = [float(np.linalg.norm(positions[k - 1] - positions[k])) for k in range(1, n)]
    if anchored:
        best = max((_decode(unary, dists, labels, True, f) for f in SIZE_FACTORS),
                   key=lambda r: r[0] - SIZE_COST * abs(np.log(r[2])))
        names = best[1]
    else:
        names = _decode(unary, dists, labels, False, 1.0)[1]
    if not looked:
        return names, None, []
    _, skipped = _step_tables(labels, True)
    gaps = np.concatenate([[0.0], np.cumsum([skipped[names[k - 1], names[k]] for k in range(1, n)])])
    notes: list[str] = []
    support: list[list[tuple[float, float, str]]] = [[] for _ in range(n)]
    for a in anchors:
        if not getattr(a, "names", True):  # a constraint on a neighbour, not what named it
            continue
        cost = a.cost(labels[names[a.index]])
        if cost >= 1.0:
            notes.append(f"the {a.kind} anchor ({a.detail or 'seen'}) says {a.expected_name}, but the names "
                         f"follow the other evidence and call that vertebra {vertebra(labels[names[a.index]]).name}")
            continue
        for k in range(n):
            eff = a.confidence * COUNT_DECAY ** abs(k - a.index) * GAP_DECAY ** abs(gaps[k] - gaps[a.index])
            support[k].append((eff, cost, a.kind))
    naming = []
    for k in range(n):
        if not support[k]:
            naming.append({"anchor": None, "confidence": UNANCHORED_CONFIDENCE})
            continue
        # anchors agree: their confidences combine; one met only as a variant lowers the result
        combined = 1.0 - float(np.prod([1.0 - e for e, _, _ in support[k]]))
        conf = combined * (1.0 - max(c for _, c, _ in support[k]))
        naming.append({"anchor": max(support[k], key=lambda t: t[0] * (1.0 - t[1]))[2],
                       "confidence": round(min(0.99, conf), 3)})
    return names, naming, notes


def is_complete(position_lps: np.ndarray, volume: Volume, edge_mm: float = EDGE_MM) -> bool:
    """False when the point lies within ``edge_mm`` of the field of view's cranial or caudal end."""
    nx, ny, nz = volume.shape_xyz
    ijk = volume.lps_to_index(position_lps)
    axis = int(np.argmax(np.abs(volume.direction[2, :])))  # index axis closest to superior
    n = (nx, ny, nz)[axis]
    dist_lo = (ijk[axis] + 0.5) * volume.spacing[axis]
    dist_hi = (n - 0.5 - ijk[axis]) * volume.spacing[axis]
    inside = all(-0.5 <= ijk[k] <= (nx, ny, nz)[k] - 0.5 for k in range(3))
    return bool(inside and min(dist_lo, dist_hi) >= edge_mm)


def predict_heatmaps(net: Any, image: np.ndarray, patch_size: tuple[int, int, int], device: str = "cpu",
                     overlap: float = 0.25) -> np.ndarray:
    """Heatmaps (C, z, y, x) of a normalised image (z, y, x) with overlapping windows."""
    import torch
    from monai.inferers import sliding_window_inference

    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None].to(device)
    roi = tuple(min(p, s) if s % net.divisor == 0 else p for p, s in zip(patch_size, image.shape))
    roi = tuple(max(net.divisor, (r // net.divisor) * net.divisor) for r in roi)
    with torch.inference_mode():
        y = sliding_window_inference(x, roi, sw_batch_size=1, predictor=net, overlap=overlap, mode="gaussian",
                                     padding_mode="constant", cval=float(image.min()))
    return y[0].float().cpu().numpy()


def heatmaps_on_grid(net: Any, image: np.ndarray, patch_size: tuple[int, int, int], device: str = "cpu") -> np.ndarray:
    """Heatmaps (C, z, y, x) of a normalised model-grid image of any size.

    An axis shorter than the training patch is padded to the patch's length with the image in the
    middle (a spine-only crop ~100 mm wide then sits in a whole patch, as in training, not in the
    corner of a smaller input); any other axis at its end to the network's divisor. The heatmaps are
    cropped back to the image.
    """
    from VertebralFractureLib.preprocess import pad_to_multiple

    fill = float(image.min())
    before = [max(0, (p - s) // 2) for p, s in zip(patch_size, image.shape)]
    after = [max(0, p - s - b) for p, s, b in zip(patch_size, image.shape, before)]
    centred = np.pad(image, list(zip(before, after)), constant_values=fill)
    padded, _ = pad_to_multiple(centred, net.divisor, fill)
    heat = predict_heatmaps(net, padded, patch_size, device)
    return heat[:, before[0]: before[0] + image.shape[0], before[1]: before[1] + image.shape[1],
                before[2]: before[2] + image.shape[2]]


def build_network(card_architecture: dict[str, Any]) -> Any:
    """The M-SCN described by a model card's ``architecture``."""
    from VertebralFractureLib.networks.mscn import MSCN

    kwargs = {k: v for k, v in card_architecture.items() if k != "type"}
    kwargs.setdefault("out_channels", len(CHANNEL_LABELS))
    return MSCN(dims=3, **kwargs)


def heatmaps(volume: Volume, card: Any, net: Any, device: str = "cpu",
             mirror: bool = False) -> tuple[np.ndarray, Volume]:
    """The network's heatmaps (C, z, y, x) of a CT in HU and the model grid they lie on.

    With ``mirror``, the mean of the image's and its left–right mirror image's heatmaps (mirrored
    back; the network was trained with left–right flips). Measured and not used by the pipeline:
    on the real development cases it found every vertebra but moved two centroids of sub-verse008
    13–18 mm and left fewer vertebrae graded (``docs/localization.md``); the pipeline takes the
    mirror image as a second look instead (:func:`two_looks`).
    """
    heat, mirrored, grid = two_looks(volume, card, net, device, second=mirror)
    if mirrored is not None:
        heat = 0.5 * (heat + mirrored)
    return heat, grid


def two_looks(volume: Volume, card: Any, net: Any, device: str = "cpu",
              second: bool = True) -> tuple[np.ndarray, np.ndarray | None, Volume]:
    """The heatmaps of a CT and, with ``second``, of its left–right mirror image (mirrored back), and
    the model grid they lie on — the two looks of :func:`detect_and_name`."""
    from VertebralFractureLib import preprocess

    net.eval().to(device)
    grid = preprocess.to_model_grid(volume, card.spacing_mm)
    image = preprocess.normalize(grid.array)
    heat = heatmaps_on_grid(net, image, tuple(card.patch_size), device)
    mirrored = None
    if second:  # x is the model grid's left–right axis
        mirrored = np.ascontiguousarray(
            heatmaps_on_grid(net, np.ascontiguousarray(image[:, :, ::-1]), tuple(card.patch_size), device)[..., ::-1])
    return heat, mirrored, grid


def card_threshold(card: Any) -> float:
    """The detection threshold of a model card (chosen on the validation set), else the default."""
    return float(card.postprocess.get("threshold", DEFAULT_THRESHOLD))


def localize(volume: Volume, device: str = "cpu", threshold: float | None = None,
             model: tuple[Any, Any] | None = None, anchors: Any = None, second_look: bool = True,
             outlines: Any = None) -> list[Candidate]:
    """Centroids and names of the vertebrae in a CT (cranial → caudal).

    The network looks twice: at the CT and at its left–right mirror image (:func:`two_looks`); a
    vertebra only the second look finds joins the chain (:func:`detect_and_name`), and the first
    look's positions stay as they are.

    Args:
        volume: CT in HU, any geometry.
        device: torch device string.
        threshold: minimum summed heatmap peak of a detection (default: the model card's
            ``postprocess.threshold``, chosen on the validation set, else :data:`DEFAULT_THRESHOLD`).
        model: ``(card, network)`` to use instead of the installed ``localization`` model.
        anchors: naming anchors or a callable computing them from the chain (see :func:`detect_and_name`).
        second_look: look at the mirror image too (False: the CT only, half the time).
        outlines: a callable giving stage 2's outlines of the chain, to count a vertebra outlined twice
            once (see :func:`detect_and_name`).
    """
    from VertebralFractureLib import models

    card, net = model if model is not None else models.load_network("localization", build_network, cached=True)
    heat, mirrored, grid = two_looks(volume, card, net, device, second=second_look)
    return detect_and_name(heat, grid, card_threshold(card) if threshold is None else threshold, anchors=anchors,
                           second=mirrored, outlines=outlines)


#: The warning when no anchor fixes the names.
UNANCHORED_WARNING = ("vertebra names are not anchored: no first or last rib, sacrum or skull base was recognised "
                      "in the field of view, so the levels are counted from the network's appearance alone and may "
                      "be off by one or more levels")


#: The warning when stage 2's outlines showed members of stage 1's chain to be one vertebra.
MERGED_WARNING = ("stage 1 counted {what} too many (peaks on one vertebra, or one placed where one was found); "
                  "stage 2's outlines showed it, and each vertebra is counted once: check the count, above all "
                  "where the scan cuts a vertebra")


def run_stage(context: Any) -> None:
    """Pipeline stage 1: fill ``context.vertebrae`` with centroids, names, scores, completeness and
    ``naming`` (the anchor each name was counted from, :mod:`.anchors`). Where stage 2's model is
    installed, its outlines count a vertebra outlined twice once (:func:`.segment.chain_outlines`)."""
    from VertebralFractureLib import models
    from VertebralFractureLib.analysis import VertebraResult
    from VertebralFractureLib.anchors import find_anchors
    from VertebralFractureLib.models import select_device
    from VertebralFractureLib.segment import chain_outlines

    context.report("localize", 0.05, "heatmaps")
    reports = []

    def anchors_of(positions: np.ndarray) -> Any:
        context.report("localize", 0.8, "naming anchors (ribs, sacrum, skull base)")
        reports.append(find_anchors(context.image, positions))
        return reports[-1]

    device = select_device(context.config.device)
    outlines, drawn = None, []
    if models.model_status("segmentation") == "ok":  # stage 2's outlines tell a vertebra outlined twice
        def outlines(positions: np.ndarray) -> Any:
            context.report("localize", 0.7, "outlines of the detections")
            drawn.append(chain_outlines(context.image, positions, device=device, inputs=context.model_inputs,
                                        outputs=context.crop_outputs))
            return drawn[-1]

    found = localize(context.image, device=device, anchors=anchors_of, outlines=outlines)
    merged = sum(int(np.sum(np.asarray(o.shared) >= SAME_OUTLINE_SHARE)) for o in drawn)
    if merged:
        context.warnings.append(MERGED_WARNING.format(what="one vertebra" if merged == 1 else f"{merged} vertebrae"))
    context.centroids_from_stage1 = True
    for c in found:
        complete = is_complete(c.position_lps, context.image) and not c.extrapolated
        res = VertebraResult(label=c.label, centroid_lps_mm=tuple(c.position_lps), localization_score=c.score,
                             complete=complete, naming=c.naming)
        if not complete and not c.extrapolated:
            res.notes.append("near the end of the field of view: probably cut, not graded")
        if c.interpolated:
            res.notes.append("not detected: placed between its neighbours, where their spacing shows a "
                             "vertebra was missed (check its position)")
        if c.extrapolated:  # cut by the field of view by construction: located and named, never graded
            res.notes.append("not detected: placed one step above the highest vertebra found, where the top of "
                             "the field of view cuts a vertebra (check its position); not graded")
        context.vertebrae[c.label] = res
    if not found:
        context.warnings.append("no vertebra found")
        return
    if all(c.naming is None or c.naming["anchor"] is None for c in found):
        context.warnings.append(UNANCHORED_WARNING)
    for note in reports[-1].conflicts if reports else []:  # anchors the names had to contradict
        context.warnings.append("naming: " + note)
