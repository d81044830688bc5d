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
5. A vertebra whose centroid lies closer than about half a body height to the cranial or caudal
   end of the field of view is flagged ``complete: false``.

The centroid is the VerSe one — the centre of mass of the whole vertebra, body and posterior
elements — which lies in the posterior part of the body or at its posterior wall (8–12 mm behind
the body's own centre on the real sub-sample001 masks).
"""

from __future__ import annotations

from dataclasses import dataclass
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
    """A found vertebra: its label, centroid (LPS mm) and score."""

    label: int
    position_lps: np.ndarray
    score: float


#: Detection: local maxima of the summed heatmaps at least this far apart (mm).
MIN_SEPARATION_MM = 10.0
#: Detection chain: largest distance between consecutive detections (mm; a missed vertebra between two).
MAX_GAP_MM = 80.0
#: Detection chain: largest angle (degrees) of a step between consecutive detections to the body axis.
MAX_STEP_ANGLE_DEG = 60.0
#: Naming: cost of each (non-variant) label skipped between consecutive detections.
SKIP_COST = 0.2
#: Naming: weight of |log(observed / expected distance)| of each step (expected: VerSe medians per level).
SPACING_WEIGHT = 0.5
#: Variants that a normal spine does not have: skipping them costs nothing.
VARIANT_LABELS = frozenset({25, 28})  # L6, T13


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


def step_costs(dist_mm: float, labels: tuple[int, ...] = CHANNEL_LABELS) -> np.ndarray:
    """(C, C) cost of naming two consecutive detections ``dist_mm`` apart with channels a then b.

    :data:`SKIP_COST` per non-variant label skipped between a and b, plus :data:`SPACING_WEIGHT` ×
    |log(dist / expected)|, expected = the median spacing of a plus that of every non-variant
    level between (VerSe'19/'20 medians, :mod:`.synth.priors`); infinite where b ≤ a.
    """
    expected, skipped = _step_tables(labels)
    with np.errstate(invalid="ignore"):
        cost = SKIP_COST * skipped + SPACING_WEIGHT * np.abs(np.log(dist_mm / expected))
    return np.where(np.isfinite(expected), cost, np.inf)


@lru_cache(maxsize=4)
def _step_tables(labels: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
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
    return expected, skipped


def detect_and_name(heatmaps: np.ndarray, grid: Volume, threshold: float = DEFAULT_THRESHOLD,
                    labels: tuple[int, ...] = CHANNEL_LABELS) -> list[Candidate]:
    """Vertebrae found in the heatmaps (C, z, y, x), named as one consistent chain.

    1. Detection is label-free: local maxima of the sum of all channels (a vertebra whose own
       channel is weak because the network hesitates between two names is still found), at least
       :data:`MIN_SEPARATION_MM` apart, with a summed peak ≥ ``threshold``.
    2. The detections form a chain from cranial to caudal: the subset with the highest total peak
       whose consecutive members go caudally, lie 10–80 mm apart (one missed vertebra between two
       is allowed) and step along the body axis (≤ 60° off it) — dynamic programming.
    3. Naming: the chain gets strictly increasing labels maximising the sum of each label's
       heatmap at its detection, minus :data:`SKIP_COST` per label skipped and
       :data:`SPACING_WEIGHT` × |log(observed / expected distance)| per step (expected from the
       VerSe medians per level), again by dynamic programming. T13 and L6 are skipped for free,
       and named only where their channel wins.

    ``score`` of each result is its label's heatmap value at the detection (1.0 = the training
    target's peak).
    """
    from scipy import ndimage

    if heatmaps.ndim != 4 or heatmaps.shape[0] != len(labels):
        raise ValueError(f"heatmaps must be (C={len(labels)}, z, y, x), got {heatmaps.shape}")
    heat = np.maximum(heatmaps, 0.0)
    total = heat.sum(axis=0)
    local = (total == ndimage.maximum_filter(total, size=3, mode="constant")) & (total >= threshold)
    peaks = np.argwhere(local)
    if len(peaks) == 0:
        return []
    peaks = peaks[np.argsort(-total[tuple(peaks.T)])]
    spacing = np.array(grid.spacing[::-1])
    kept: list[np.ndarray] = []
    for p in peaks:  # non-maximum suppression at MIN_SEPARATION_MM
        if all(np.linalg.norm((p - q) * spacing) >= MIN_SEPARATION_MM for q in kept):
            kept.append(p)
    pos = np.array([grid.zyx_to_lps(_subvoxel(total, p)) for p in kept])
    peak_val = np.array([min(float(total[tuple(p)]), 1.5) for p in kept])
    # 2. the chain of detections, cranial (high LPS z) to caudal
    order = np.argsort(-pos[:, 2])
    pos, peak_val, kept = pos[order], peak_val[order], [kept[i] for i in order]
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
    # 3. naming: evidence of each channel near each detection (3×3×3 neighbourhood maximum)
    n_c = len(labels)
    ev = np.zeros((len(chain), n_c))
    for k, i in enumerate(chain):
        sl = tuple(slice(max(0, c - 1), c + 2) for c in kept[i])
        ev[k] = heat[(slice(None),) + sl].reshape(n_c, -1).max(axis=1)
    score = ev[0].copy()
    back = np.zeros((len(chain), n_c), dtype=int)
    for k in range(1, len(chain)):
        dist = float(np.linalg.norm(pos[chain[k - 1]] - pos[chain[k]]))
        total_ab = score[:, None] - step_costs(dist, labels)  # from channel a (rows) to b (columns)
        back[k] = np.argmax(total_ab, axis=0)
        score = total_ab[back[k], np.arange(n_c)] + ev[k]
    c = int(np.argmax(score))
    names = [c]
    for k in range(len(chain) - 1, 0, -1):
        c = int(back[k, c])
        names.append(c)
    names = names[::-1]
    return [Candidate(labels[c], pos[i], float(ev[k, c])) for k, (i, c) in enumerate(zip(chain, names))]


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
    """Heatmaps (C, z, y, x) of a normalised model-grid image of any size (padded for the network, then cropped)."""
    from VertebralFractureLib.preprocess import pad_to_multiple

    padded, _ = pad_to_multiple(image, net.divisor, float(image.min()))
    heat = predict_heatmaps(net, padded, patch_size, device)
    return heat[:, : image.shape[0], : image.shape[1], : image.shape[2]]


def build_network(card_architecture: dict[str, Any]) -> Any:
    """The M-SCN described by a model card's ``architecture``."""
    from VertebralFractureLib.networks.mscn import MSCN

    kwargs = {k: v for k, v in card_architecture.items() if k != "type"}
    kwargs.setdefault("out_channels", len(CHANNEL_LABELS))
    return MSCN(dims=3, **kwargs)


def heatmaps(volume: Volume, card: Any, net: Any, device: str = "cpu") -> tuple[np.ndarray, Volume]:
    """The network's heatmaps (C, z, y, x) of a CT in HU and the model grid they lie on."""
    from VertebralFractureLib import preprocess

    net.eval().to(device)
    grid = preprocess.to_model_grid(volume, card.spacing_mm)
    return heatmaps_on_grid(net, preprocess.normalize(grid.array), tuple(card.patch_size), device), grid


def card_threshold(card: Any) -> float:
    """The detection threshold of a model card (chosen on the validation set), else the default."""
    return float(card.postprocess.get("threshold", DEFAULT_THRESHOLD))


def localize(volume: Volume, device: str = "cpu", threshold: float | None = None,
             model: tuple[Any, Any] | None = None) -> list[Candidate]:
    """Centroids and names of the vertebrae in a CT (cranial → caudal).

    Args:
        volume: CT in HU, any geometry.
        device: torch device string.
        threshold: minimum summed heatmap peak of a detection (default: the model card's
            ``postprocess.threshold``, chosen on the validation set, else :data:`DEFAULT_THRESHOLD`).
        model: ``(card, network)`` to use instead of the installed ``localization`` model.
    """
    from VertebralFractureLib import models

    card, net = model if model is not None else models.load_network("localization", build_network)
    heat, grid = heatmaps(volume, card, net, device)
    return detect_and_name(heat, grid, card_threshold(card) if threshold is None else threshold)


def run_stage(context: Any) -> None:
    """Pipeline stage 1: fill ``context.vertebrae`` with centroids, names, scores, completeness."""
    from VertebralFractureLib.analysis import VertebraResult
    from VertebralFractureLib.models import select_device

    context.report("localize", 0.05, "heatmaps")
    found = localize(context.image, device=select_device(context.config.device))
    for c in found:
        complete = is_complete(c.position_lps, context.image)
        res = VertebraResult(label=c.label, centroid_lps_mm=tuple(c.position_lps), localization_score=c.score,
                             complete=complete)
        if not complete:
            res.notes.append("near the end of the field of view: probably cut, not graded")
        context.vertebrae[c.label] = res
    if not found:
        context.warnings.append("no vertebra found")
