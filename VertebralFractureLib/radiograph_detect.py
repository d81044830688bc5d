"""L1–L5 on a lateral radiograph: an anchor-free detector (seed 004's detection step).

Seed 004 finds L1–L5 with YOLOv5, which needs torchvision (it does not install with this torch
build). Here the detector is CenterNet-style on a MONAI 2D U-Net: for each of the five levels a
heatmap whose peak is the vertebral body's centre, and two maps giving the box's width and height
at that centre. The installed detector averages the outputs of several such networks trained apart
(:func:`build_network`, ``members`` on its card), each seeing the image and its mirror
(:func:`detect`). The image is first resampled to :data:`DET_MM` a pixel from its pixel spacing, so
a body has the same size in pixels whatever the detector.

Decoding: each level is one vertebra and each vertebra has one level. Every level's heatmap offers
its highest local maxima (:data:`CANDIDATES`, each with its peak as the detection score, 1 = the
training target's peak; none below the threshold). Of all the choices of at most one candidate per
level in which no two levels lie on the same body (boxes overlapping by :data:`SHARED_BODY_IOU` or
more) and the named levels are evenly spaced (:func:`evenly_spaced`), the one with the largest
summed score is kept. A level whose peak sits on a body that another level claims more strongly
(the L5 map's faint maximum on L4 when L5 is out of view) thus gives way to its next peak, or is
not reported; and a set of names that skips a body (L1 and L2 boxed one body too high, on a T13,
while L3–L5 sit right, leaving two bodies' distance between "L2" and "L3") gives way to the evenly
spaced one with the next largest score. (Demanding only that the levels lie in order, L1 above L5,
scored no better on the validation radiographs; a level out of order in a set of two is left to
:func:`out_of_order`.)
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

#: Levels detected, in the order of the network's heatmap channels.
LEVELS: tuple[str, ...] = ("L1", "L2", "L3", "L4", "L5")
#: Pixel size the detector works at (mm).
DET_MM = 2.0
#: Gaussian sigma of a centre's target heatmap (mm).
SIGMA_MM = 4.0
#: Box sizes are regressed in units of this many mm.
SIZE_UNIT_MM = 50.0
#: Image sides are padded to a multiple of this (the U-Net's four halvings).
DIVISOR = 16
#: U-Net widths: four halvings give a field of view of about 200 mm at 2 mm a pixel, enough to see
#: the sacrum or the last ribs that tell the levels apart.
CHANNELS: tuple[int, ...] = (16, 32, 64, 128, 128)
#: Registry name of the detector's weights.
MODEL_NAME = "radiograph-detector"
#: Detection threshold (heatmap peak) of a card that names none, and of a newly installed detector
#: until its threshold is chosen on validation (the installed card's is; docs/radiographs.md).
DEFAULT_THRESHOLD = 0.3
#: Local maxima of each level's heatmap considered by the decoding.
CANDIDATES = 3
#: Two levels' boxes overlapping this much (intersection over union) lie on the same body.
SHARED_BODY_IOU = 0.3
#: Named levels are evenly spaced when each gap between consecutive ones, per level step, lies
#: within this factor of the gaps' median (three levels or more). A skipped body doubles a gap; on
#: the 340 validation radiographs, 1.5 (halfway) scored mAP@0.5 0.894 against 0.879 without the
#: rule (1.33: 0.892, 1.75: 0.888, 2.0: 0.885).
SPACING_TOLERANCE = 1.5
#: Levels above L1 placed from the detected L1 and L2 (:func:`extend_upwards`), nearest first.
ABOVE: tuple[str, ...] = ("T12", "T11")
#: Each level up, the body and the step to the next are this share of the one below (on 120
#: validation radiographs, seed 911: 0.95 put 97 % of T12 and 86 % of T11 boxes at IoU ≥ 0.5 with
#: the true ones, T10 only 57 %; 0.90 and 1.0 did worse).
ABOVE_SHRINK = 0.95


def build_network(architecture: Mapping[str, Any] | None = None) -> Any:
    """The detector: MONAI's 2D U-Net, one channel in, a heatmap per level and two size maps out; with
    ``members`` > 1 in ``architecture``, that many such U-Nets whose outputs are averaged
    (:func:`average_outputs`)."""
    import torch
    from monai.networks.nets import UNet

    arch = dict(architecture or {})
    channels = tuple(arch.get("channels", CHANNELS))

    def unet() -> Any:
        return UNet(spatial_dims=2, in_channels=1, out_channels=len(LEVELS) + 2, channels=channels,
                    strides=(2,) * (len(channels) - 1), num_res_units=int(arch.get("num_res_units", 1)), norm="instance")

    members = int(arch.get("members", 1))
    if members < 1:
        raise ValueError(f"a detector has at least one member, the card says {members}")
    if members == 1:
        return unet()

    class Ensemble(torch.nn.Module):
        """Detectors trained apart whose outputs are averaged (:func:`average_outputs`)."""

        def __init__(self) -> None:
            super().__init__()
            self.members = torch.nn.ModuleList(unet() for _ in range(members))

        def forward(self, x: Any) -> Any:
            return average_outputs([m(x) for m in self.members])

    return Ensemble()


def average_outputs(outputs: Sequence[Any]) -> Any:
    """Several detectors' outputs (batch, levels + 2, rows, cols) as one: the heatmaps' probabilities
    averaged (returned as logits, as one network gives them), the sizes averaged."""
    import torch

    heat = torch.stack([torch.sigmoid(o[:, : len(LEVELS)]) for o in outputs]).mean(0).clamp(1e-6, 1 - 1e-6)
    size = torch.stack([o[:, len(LEVELS):] for o in outputs]).mean(0)
    return torch.cat([torch.logit(heat), size], 1)


def to_detector_grid(image: np.ndarray, pixel_mm: float | Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """``image`` (rows, cols; 0..1) resampled to :data:`DET_MM` and padded (with its edge values)
    to a multiple of :data:`DIVISOR`; returns it and the scale (row, col) from detector pixels to
    the image's pixels."""
    from scipy import ndimage

    sp = np.broadcast_to(np.asarray(pixel_mm, float), (2,))
    zoom = sp / DET_MM
    small = ndimage.zoom(np.asarray(image, np.float32), zoom, order=1, grid_mode=True, mode="nearest")
    pads = [(0, (-n) % DIVISOR) for n in small.shape]
    return np.pad(small, pads, mode="edge").astype(np.float32), 1.0 / zoom


def targets(shape: tuple[int, int], boxes: Mapping[str, Sequence[float]], scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Training targets on the detector grid for ``boxes`` (name → [x0, y0, x1, y1] in image pixels):
    heatmaps (levels, rows, cols) and size maps (2, rows, cols: width and height in
    :data:`SIZE_UNIT_MM`, set at the pixels within one of each centre) and a mask of those pixels
    (sizes[2])."""
    rows, cols = shape
    heat = np.zeros((len(LEVELS), rows, cols), np.float32)
    size = np.zeros((3, rows, cols), np.float32)  # width, height, mask
    rr, cc = np.mgrid[0:rows, 0:cols]
    s = SIGMA_MM / DET_MM
    for k, name in enumerate(LEVELS):
        if name not in boxes:
            continue
        x0, y0, x1, y1 = boxes[name]
        cy, cx = (y0 + y1) / 2 / scale[0], (x0 + x1) / 2 / scale[1]
        heat[k] = np.exp(-((rr - cy) ** 2 + (cc - cx) ** 2) / (2 * s * s))
        near = (np.abs(rr - cy) <= 1.0) & (np.abs(cc - cx) <= 1.0)  # the pixels the peak may fall on
        size[0][near] = (x1 - x0) * DET_MM / scale[1] / SIZE_UNIT_MM  # image pixels → mm
        size[1][near] = (y1 - y0) * DET_MM / scale[0] / SIZE_UNIT_MM
        size[2][near] = 1.0
    return heat, size


def decode(output: np.ndarray, scale: np.ndarray, shape: tuple[int, int],
           threshold: float = DEFAULT_THRESHOLD) -> list[dict[str, Any]]:
    """Boxes from the network's output (levels + 2, rows, cols) on the detector grid: one body per
    level and one level per body (module docstring); each box centred on its heatmap peak
    (sub-pixel by a parabola), with its size; in image pixels, clipped to the image of ``shape``
    (rows, cols)."""
    options = [[None, *_candidates(output, k, scale, shape, threshold)] for k in range(len(LEVELS))]
    best: tuple[Any, ...] = ()
    best_score = -1.0
    for choice in itertools.product(*options):
        chosen = [c for c in choice if c is not None]
        total = sum(c["detection_score"] for c in chosen)
        if total > best_score and _one_level_per_body(chosen) and evenly_spaced(
                [(k, c["box_px"]) for k, c in enumerate(choice) if c is not None]):
            best, best_score = choice, total
    return [{"name": name, "box_px": c["box_px"], "detection_score": c["detection_score"]}
            for name, c in zip(LEVELS, best) if c is not None]


def _candidates(output: np.ndarray, k: int, scale: np.ndarray, shape: tuple[int, int],
                threshold: float) -> list[dict[str, Any]]:
    """Level ``k``'s highest local maxima (at most :data:`CANDIDATES`, none below ``threshold``) as boxes.

    A box reaching beyond the image is clipped to it, and its score is multiplied by the share of
    the box left in view: the score is that of a whole body in view, which is what a true box is
    (a body the image cuts is none). On the 340 validation radiographs this raised mAP@0.5 from 0.924
    to 0.937 and left it where bodies shown only in part count neither way (0.950 → 0.949)."""
    from scipy import ndimage

    h = output[k]
    peaks = np.argwhere((h == ndimage.maximum_filter(h, size=3, mode="nearest")) & (h >= threshold))
    peaks = sorted(map(tuple, peaks), key=lambda rc: -float(h[rc]))[:CANDIDATES]
    out = []
    for r, c in peaks:
        dr = _parabola(h[max(r - 1, 0):r + 2, c]) if 0 < r < h.shape[0] - 1 else 0.0
        dc = _parabola(h[r, max(c - 1, 0):c + 2]) if 0 < c < h.shape[1] - 1 else 0.0
        w = max(float(output[len(LEVELS), r, c]), 0.0) * SIZE_UNIT_MM / DET_MM * scale[1]
        hh = max(float(output[len(LEVELS) + 1, r, c]), 0.0) * SIZE_UNIT_MM / DET_MM * scale[0]
        cy, cx = (r + dr) * scale[0], (c + dc) * scale[1]
        box = [max(0.0, cx - w / 2), max(0.0, cy - hh / 2), min(float(shape[1]), cx + w / 2),
               min(float(shape[0]), cy + hh / 2)]
        in_view = (box[2] - box[0]) * (box[3] - box[1]) / (w * hh) if w * hh > 0 else 1.0
        score = float(h[r, c]) * min(1.0, max(0.0, in_view))
        if score >= threshold:
            out.append({"box_px": [round(v, 2) for v in box], "detection_score": round(score, 4)})
    return out


def _one_level_per_body(chosen: Sequence[Mapping[str, Any]]) -> bool:
    """No two of the candidates lie on the same body."""
    return all(iou(a["box_px"], b["box_px"]) < SHARED_BODY_IOU for a, b in itertools.combinations(chosen, 2))


def evenly_spaced(named: Sequence[tuple[int, Sequence[float]]], tolerance: float = SPACING_TOLERANCE) -> bool:
    """Whether boxes named by level index (``(k, [x0, y0, x1, y1])``, in level order) lie one below
    the other with each gap between consecutive ones, per level step, within ``tolerance`` of the
    gaps' median. Fewer than three levels are not judged."""
    if len(named) < 3:
        return True
    gaps = [((b[1] + b[3]) - (a[1] + a[3])) / 2 / (j - i) for (i, a), (j, b) in zip(named, named[1:])]
    median = float(np.median(gaps))
    return median > 0 and all(g > 0 and median / tolerance <= g <= median * tolerance for g in gaps)


def _parabola(trio: np.ndarray) -> float:
    if len(trio) != 3:
        return 0.0
    a, b, c = (float(v) for v in trio)
    den = a - 2 * b + c
    return float(np.clip(0.5 * (a - c) / den, -0.5, 0.5)) if den < 0 else 0.0


def detect(net: Any, image: np.ndarray, pixel_mm: float | Sequence[float], threshold: float = DEFAULT_THRESHOLD,
           device: str = "cpu") -> list[dict[str, Any]]:
    """L1–L5 boxes on a radiograph (0..1, bone bright) with its pixel spacing (mm).

    The network sees the image and its mirror (the patient facing the other way, as in training);
    heatmaps and sizes are averaged. On the 340 validation radiographs this raised mAP@0.5 from
    0.894 to 0.907 (0.911 to 0.928 where bodies shown only in part count neither way)."""
    import torch

    grid, scale = to_detector_grid(image, pixel_mm)
    pair = np.stack([grid, np.ascontiguousarray(grid[:, ::-1])])[:, None]
    net.eval()
    with torch.inference_mode():
        y = net(torch.from_numpy(pair).to(device)).float().cpu().numpy()
    y[:, : len(LEVELS)] = 1.0 / (1.0 + np.exp(-y[:, : len(LEVELS)]))  # heatmap logits → 0..1
    return decode((y[0] + y[1][:, :, ::-1]) / 2, scale, image.shape, threshold)


def out_of_order(found: Sequence[Mapping[str, Any]]) -> set[str]:
    """The detected levels whose place contradicts the others: the fewest levels whose removal
    leaves L1 above L2 above … L5 (box centres from the top of the image down; the longest chain in
    order is kept, the higher-scoring one where two are as long). An "L5" boxed above L1 names no
    vertebra a reader could check."""
    ranked = sorted((d for d in found if d["name"] in LEVELS), key=lambda d: LEVELS.index(d["name"]))
    rows = [(d["box_px"][1] + d["box_px"][3]) / 2 for d in ranked]
    best: list[tuple[int, float, list[int]]] = []  # per detection: chain length, score, chain ending there
    for k, d in enumerate(ranked):
        options = [(n + 1, s + float(d["detection_score"]), [*chain, k])
                   for j, (n, s, chain) in enumerate(best) if rows[j] < rows[k]]
        best.append(max(options, default=(1, float(d["detection_score"]), [k]), key=lambda t: (t[0], t[1])))
    keep = set(max(best, key=lambda t: (t[0], t[1]))[2]) if best else set()
    return {d["name"] for k, d in enumerate(ranked) if k not in keep}


def extend_upwards(found: Sequence[Mapping[str, Any]], shape: tuple[int, int],
                   levels: Sequence[str] = ABOVE) -> list[dict[str, Any]]:
    """Boxes of the thoracic vertebrae above L1 (``levels``, nearest first), placed from the detected
    L1 and L2: each body one step further along the line from L2 to L1, the step and the box
    :data:`ABOVE_SHRINK` times the ones below. The detector names only L1–L5 (seed 004); a fresh
    fracture at the thoracolumbar junction (T11, T12, where most are) would otherwise go unseen.
    None without both L1 and L2; a box whose centre falls outside the image of ``shape`` (rows,
    cols) is left out, and so are the levels above it. Each box has ``detection_score`` None."""
    by = {d["name"]: np.asarray(d["box_px"], float) for d in found}
    if "L1" not in by or "L2" not in by:
        return []
    below, here = by["L2"], by["L1"]
    out = []
    for name in levels:
        step = (here[:2] + here[2:]) / 2 - (below[:2] + below[2:]) / 2
        centre = (here[:2] + here[2:]) / 2 + ABOVE_SHRINK * step
        half = ABOVE_SHRINK * (here[2:] - here[:2]) / 2
        if not (0 <= centre[0] < shape[1] and 0 <= centre[1] < shape[0]):
            break
        box = np.r_[centre - half, centre + half]
        clipped = [max(0.0, box[0]), max(0.0, box[1]), min(float(shape[1]), box[2]), min(float(shape[0]), box[3])]
        out.append({"name": name, "box_px": [round(float(v), 2) for v in clipped], "detection_score": None})
        below, here = here, box
    return out


# ---------------------------------------------------------------------------------------- metrics
def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two boxes [x0, y0, x1, y1]."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def covered(box: Sequence[float], region: Sequence[float]) -> float:
    """The share of ``box``'s area inside ``region`` (both [x0, y0, x1, y1])."""
    ix = max(0.0, min(box[2], region[2]) - max(box[0], region[0]))
    iy = max(0.0, min(box[3], region[3]) - max(box[1], region[1]))
    area = (box[2] - box[0]) * (box[3] - box[1])
    return ix * iy / area if area > 0 else 0.0


def average_precision(predictions: Sequence[Sequence[Mapping[str, Any]]], truths: Sequence[Mapping[str, Sequence[float]]],
                      level: str, iou_min: float = 0.5,
                      ignores: Sequence[Mapping[str, Sequence[float]]] | None = None) -> float | None:
    """AP of one level over images (VOC-style, all-point interpolation): each image's predictions
    (``name``, ``box_px``, ``detection_score``) against its true boxes (name → box). None where no
    image holds that level.

    ``ignores`` (per image, name → box) are vertebrae the image shows only in part, which the truth
    leaves out: a prediction of that level that misses the true box but lies at least ``iou_min``
    of its area within such a region counts neither as right nor as wrong (COCO's crowd regions)."""
    n_true = sum(level in t for t in truths)
    if n_true == 0:
        return None
    scored = []
    for k, (preds, truth) in enumerate(zip(predictions, truths)):
        region = ignores[k].get(level) if ignores is not None else None
        for p in preds:
            if p["name"] == level:
                hit = level in truth and iou(p["box_px"], truth[level]) >= iou_min
                if not hit and region is not None and covered(p["box_px"], region) >= iou_min:
                    continue
                scored.append((float(p["detection_score"]), hit))
    scored.sort(key=lambda t: -t[0])
    tp = np.cumsum([h for _, h in scored]) if scored else np.zeros(0)
    fp = np.cumsum([not h for _, h in scored]) if scored else np.zeros(0)
    recall = tp / n_true
    precision = tp / np.maximum(tp + fp, 1)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[1.0], precision, [0.0]])
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    idx = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


def mean_average_precision(predictions: Sequence[Sequence[Mapping[str, Any]]],
                           truths: Sequence[Mapping[str, Sequence[float]]], iou_min: float = 0.5,
                           ignores: Sequence[Mapping[str, Sequence[float]]] | None = None) -> dict[str, Any]:
    """mAP@``iou_min`` over L1–L5 (the seed's measure) and the AP of each level (``ignores``: as
    :func:`average_precision`)."""
    per = {lv: average_precision(predictions, truths, lv, iou_min, ignores) for lv in LEVELS}
    present = [v for v in per.values() if v is not None]
    return {"map": float(np.mean(present)) if present else None, "per_level": per}


__all__ = ["ABOVE", "ABOVE_SHRINK", "CANDIDATES", "DEFAULT_THRESHOLD", "DET_MM", "LEVELS", "MODEL_NAME",
           "SHARED_BODY_IOU", "SPACING_TOLERANCE", "average_outputs", "average_precision", "build_network",
           "covered", "decode", "detect", "evenly_spaced", "extend_upwards", "iou", "mean_average_precision",
           "out_of_order", "targets", "to_detector_grid"]
