"""Evaluation metrics of the stages, as the VerSe challenge and seeds/002 report them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def localization_metrics(predictions: Sequence[dict[int, np.ndarray]], truths: Sequence[dict[int, np.ndarray]],
                         radii_mm: Sequence[float] = (4.0, 10.0, 20.0)) -> dict[str, float]:
    """Identification rate, localization distance and error rates over cases.

    VerSe identification (Sekuboyina et al. 2021): a true vertebra is identified when a predicted
    centroid carries its label, lies within 20 mm of it, and is closer to it than to any other
    true centroid of the case. ``mean_distance_mm`` is over true vertebrae that have a prediction
    with their label. ``error_rate_r{r}`` is the share of true vertebrae whose same-label
    prediction is missing or farther than ``r`` mm (the seed's Table 4).

    Args:
        predictions: per case, label → predicted centroid (mm).
        truths: per case, label → true centroid (mm).
    """
    if len(predictions) != len(truths):
        raise ValueError(f"{len(predictions)} predictions for {len(truths)} cases")
    total = identified = 0
    dists: list[float] = []
    errors = {r: 0 for r in radii_mm}
    false_positives = 0
    for pred, truth in zip(predictions, truths):
        labels = sorted(truth)
        t_arr = np.array([truth[k] for k in labels]) if labels else np.zeros((0, 3))
        for label in labels:
            total += 1
            p = pred.get(label)
            if p is None:
                for r in radii_mm:
                    errors[r] += 1
                continue
            d = float(np.linalg.norm(np.asarray(p) - truth[label]))
            dists.append(d)
            for r in radii_mm:
                errors[r] += d > r
            nearest = labels[int(np.argmin(np.linalg.norm(t_arr - np.asarray(p), axis=1)))]
            identified += d <= 20.0 and nearest == label
        false_positives += len(set(pred) - set(truth))
    out = {
        "cases": float(len(truths)),
        "vertebrae": float(total),
        "id_rate": identified / total if total else float("nan"),
        "mean_distance_mm": float(np.mean(dists)) if dists else float("nan"),
        "median_distance_mm": float(np.median(dists)) if dists else float("nan"),
        "false_positive_labels": float(false_positives),
    }
    for r in radii_mm:
        out[f"error_rate_r{r:g}"] = errors[r] / total if total else float("nan")
    return out


def roc_auc(truth: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann–Whitney, ties count half); NaN when a class is absent."""
    truth = np.asarray(truth, dtype=bool)
    score = np.asarray(score, dtype=float)
    pos, neg = score[truth], score[~truth]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def segmentation_metrics(pred: np.ndarray, ref: np.ndarray, spacing_zyx: Sequence[float]) -> dict[str, float]:
    """One vertebra's overlap and surface metrics (seeds/002 Table 5).

    DSC, precision, recall, ASSD (average symmetric surface distance, mm) and MSSD (maximum
    symmetric surface distance = Hausdorff distance, mm) between two boolean masks of one grid.
    Surface distances are NaN when either mask is empty.
    """
    from scipy import ndimage

    pred = np.asarray(pred, dtype=bool)
    ref = np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise ValueError(f"masks differ in shape: {pred.shape} vs {ref.shape}")
    tp = float(np.sum(pred & ref))
    npred, nref = float(pred.sum()), float(ref.sum())
    out = {
        "dice": 2 * tp / (npred + nref) if npred + nref else float("nan"),
        "precision": tp / npred if npred else float("nan"),
        "recall": tp / nref if nref else float("nan"),
        "assd_mm": float("nan"),
        "mssd_mm": float("nan"),
    }
    if not npred or not nref:
        return out
    both = pred | ref
    box = tuple(slice(max(0, s.start - 2), s.stop + 2) for s in ndimage.find_objects(both.astype(np.uint8))[0])
    p, r = pred[box], ref[box]
    sp, sr = p & ~ndimage.binary_erosion(p), r & ~ndimage.binary_erosion(r)
    d_to_r = ndimage.distance_transform_edt(~sr, sampling=spacing_zyx)[sp]
    d_to_p = ndimage.distance_transform_edt(~sp, sampling=spacing_zyx)[sr]
    out["assd_mm"] = float((d_to_r.sum() + d_to_p.sum()) / (len(d_to_r) + len(d_to_p)))
    out["mssd_mm"] = float(max(d_to_r.max(), d_to_p.max()))
    return out


def quadratic_kappa(truth: np.ndarray, pred: np.ndarray, k: int = 4) -> float | None:
    """Cohen's quadratically weighted κ of two gradings 0 … k−1 (None when undefined)."""
    obs = np.zeros((k, k))
    for a, b in zip(truth, pred):
        obs[int(a), int(b)] += 1
    n = obs.sum()
    if n == 0:
        return None
    exp = np.outer(obs.sum(1), obs.sum(0)) / n
    w = (np.subtract.outer(np.arange(k), np.arange(k)) ** 2) / (k - 1) ** 2
    den = (w * exp).sum()
    return None if den == 0 else float(1.0 - (w * obs).sum() / den)
