"""Stage 1: vertebra localization and naming with the M-SCN (seeds/002 §2.2).

1. The CT goes onto the model's LPS-aligned grid (:mod:`.preprocess`).
2. The 3D M-SCN predicts one heatmap per vertebra label, over overlapping windows merged by
   Gaussian-weighted averaging (MONAI's sliding-window inferer).
3. Each channel's peak is a candidate centroid, refined to sub-voxel precision by a Gaussian
   (log-parabola) fit through the peak and its neighbours on each axis; ``localization_score`` is the peak value (1.0 = the training target's peak).
4. Anatomical consistency: among the candidates above threshold, the chain of labels with the
   highest total score is kept whose centroids go from cranial to caudal in label order with
   plausible distances (:func:`consistent_chain`) — duplicates, swapped or isolated false
   detections drop out, and gaps (missing vertebrae) are allowed.
5. A vertebra whose centroid lies closer than about half a body height to the cranial or caudal
   end of the field of view is flagged ``complete: false``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from VertebralFractureLib.anatomy import VERTEBRAE, cranio_caudal, vertebra
from VertebralFractureLib.volume import Volume

#: Output channel → VerSe label, cranial to caudal (C1 … T12, T13, L1 … L6).
CHANNEL_LABELS: tuple[int, ...] = tuple(cranio_caudal(VERTEBRAE))
#: Minimum heatmap peak for a candidate (the training target's peak is 1.0).
DEFAULT_THRESHOLD = 0.25
#: Plausible centroid distance between adjacent vertebrae (mm), per label step.
STEP_RANGE_MM: tuple[float, float] = (8.0, 48.0)
#: A centroid closer than this to the cranial/caudal end of the field of view: vertebra cut.
EDGE_MM = 10.0


@dataclass(frozen=True)
class Candidate:
    """One channel's peak."""

    label: int
    position_lps: np.ndarray
    score: float


def peak_candidates(heatmaps: np.ndarray, grid: Volume, threshold: float = DEFAULT_THRESHOLD,
                    labels: tuple[int, ...] = CHANNEL_LABELS) -> list[Candidate]:
    """Per-channel peaks of ``heatmaps`` (C, z, y, x) on ``grid`` above ``threshold``."""
    if heatmaps.ndim != 4 or heatmaps.shape[0] != len(labels):
        raise ValueError(f"heatmaps must be (C={len(labels)}, z, y, x), got {heatmaps.shape}")
    out = []
    shape = np.array(heatmaps.shape[1:])
    for c, label in enumerate(labels):
        h = heatmaps[c]
        flat = int(np.argmax(h))
        peak = float(h.flat[flat])
        if peak < threshold:
            continue
        zyx = np.array(np.unravel_index(flat, h.shape))
        sub = zyx.astype(float)
        for a in range(3):  # Gaussian peak fit along each axis: exact for a Gaussian-shaped peak
            if 0 < zyx[a] < shape[a] - 1:
                lo, hi = zyx.copy(), zyx.copy()
                lo[a] -= 1
                hi[a] += 1
                vals = np.log(np.maximum([h[tuple(lo)], peak, h[tuple(hi)]], 1e-6))
                denom = vals[0] - 2 * vals[1] + vals[2]
                if denom < -1e-9:
                    sub[a] += float(np.clip(0.5 * (vals[0] - vals[2]) / denom, -0.5, 0.5))
        out.append(Candidate(label, grid.zyx_to_lps(sub), peak))
    return out


def consistent_chain(candidates: list[Candidate], step_range_mm: tuple[float, float] = STEP_RANGE_MM) -> list[Candidate]:
    """The highest-scoring anatomically consistent subset of candidates.

    Consistent: in label order (cranial → caudal), each next centroid lies inferior to the previous
    one, at a distance within ``step_range_mm`` × the number of label steps between them (gaps for
    missing detections allowed), and no two labels share a position (< 8 mm apart). Solved exactly
    by dynamic programming over the label order (a longest-path problem on a DAG).
    """
    cands = sorted(candidates, key=lambda c: vertebra(c.label).order)
    n = len(cands)
    if n == 0:
        return []
    best = [c.score for c in cands]
    prev = [-1] * n
    order = [vertebra(c.label).order for c in cands]
    for j in range(n):
        for i in range(j):
            steps = order[j] - order[i]
            d = cands[j].position_lps - cands[i].position_lps
            dist = float(np.linalg.norm(d))
            if steps <= 0 or d[2] >= 0:  # must go caudally (LPS z decreases)
                continue
            if not (step_range_mm[0] <= dist <= step_range_mm[1] * steps):
                continue
            if best[i] + cands[j].score > best[j]:
                best[j], prev[j] = best[i] + cands[j].score, i
    j = int(np.argmax(best))
    chain = []
    while j >= 0:
        chain.append(cands[j])
        j = prev[j]
    return chain[::-1]


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


def localize(volume: Volume, device: str = "cpu", threshold: float | None = None,
             model: tuple[Any, Any] | None = None) -> list[Candidate]:
    """Centroids and names of the vertebrae in a CT (cranial → caudal).

    Args:
        volume: CT in HU, any geometry.
        device: torch device string.
        threshold: minimum heatmap peak (default: the model card's ``postprocess.threshold``, chosen
            on the validation set, else :data:`DEFAULT_THRESHOLD`).
        model: ``(card, network)`` to use instead of the installed ``localization`` model.
    """
    from VertebralFractureLib import models, preprocess

    card, net = model if model is not None else models.load_network("localization", build_network)
    net.eval().to(device)
    grid = preprocess.to_model_grid(volume, card.spacing_mm)
    heat = heatmaps_on_grid(net, preprocess.normalize(grid.array), tuple(card.patch_size), device)
    if threshold is None:
        threshold = float(card.postprocess.get("threshold", DEFAULT_THRESHOLD))
    return consistent_chain(peak_candidates(heat, grid, threshold))


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
