"""Derive SynthSpine's data-driven priors from the real annotations (run once, by hand).

``python -m VertebralFractureLib.synth.derive_priors DATA_DIR`` prints, per vertebral level,
the statistics stored in :mod:`VertebralFractureLib.synth.priors` (the numbers, never the data):

* VerSe'19/'20 centroid lists (``annotations/verse-centroids/*.csv``, 193 spines, mm): the
  inter-centroid distance to the next level and the signed sagittal angle between consecutive
  centroid segments (positive = lordotic), and the sagittal tilt of each level in the (supine) scanner
  frame (positive = top towards anterior). The CSV columns are labels 1–25 and, in the 2020 file,
  a 26th column for T13 (VerSe label 28); the third coordinate points superior, the second
  posterior (checked against cervical/lumbar lordosis and thoracic kyphosis).
* neuro-ml 6-point annotations (``annotations/neuro-ml-anchor-free-genant``, 100 chest CTs, 2
  experts, voxel coordinates ``(row, column, slice)`` with the sagittal column constant per
  vertebra): the scale-free ratios Ha/Hp, Hm/Hp and Hp/ICD (ICD = half the distance between the
  neighbours' keypoint centres, same voxel units, so the unknown spacing cancels).
* The whole-spine masks (``masks/sub-sample001``, vertebral-body sub-regions 49/50): body width,
  depth and height relative to the local inter-centroid distance.
* The real CTs (``real-ct``): HU percentiles of threshold-based bone, soft tissue, fat and air.

Medians and robust spreads (1.4826 × MAD) are printed, so fractured vertebrae in the annotations do
not drag the normal-shape priors.
"""

from __future__ import annotations

import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

_NAMES = [f"C{i}" for i in range(1, 8)] + [f"T{i}" for i in range(1, 13)] + [f"L{i}" for i in range(1, 7)]
_ORDER = list(range(19)) + [25] + list(range(19, 25))  # column order cranial→caudal (T13 after T12)
_COLUMN_NAMES = _NAMES + ["T13"]


def _robust(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=float)
    med = float(np.median(a))
    return {"n": int(a.size), "median": round(med, 4), "spread": round(float(1.4826 * np.median(np.abs(a - med))), 4)}


def verse_centroid_stats(folder: Path) -> dict[str, dict]:
    """Inter-centroid distances (to the next level) and segmental sagittal angles per level."""
    icd: dict[str, list[float]] = defaultdict(list)
    angle: dict[str, list[float]] = defaultdict(list)
    tilt: dict[str, list[float]] = defaultdict(list)
    for path in sorted(folder.glob("*.csv")):
        with path.open() as fh:
            for row in csv.reader(fh):
                a = np.array([float(v) for v in row[1:]]).reshape(-1, 3)
                if a.shape[0] < 26:
                    a = np.vstack([a, np.full((26 - a.shape[0], 3), np.nan)])
                seq = [(_COLUMN_NAMES[i], a[i]) for i in _ORDER if not np.isnan(a[i, 0])]
                for (n1, p1), (_n2, p2) in zip(seq, seq[1:]):
                    icd[n1].append(float(np.linalg.norm(p2 - p1)))
                for (_n0, p0), (n1, p1), (_n2, p2) in zip(seq, seq[1:], seq[2:]):
                    s1, s2 = p1 - p0, p2 - p1
                    t1, t2 = np.arctan2(s1[1], -s1[2]), np.arctan2(s2[1], -s2[2])
                    angle[n1].append(float(np.degrees(t2 - t1)))
                    up = p0 - p2
                    tilt[n1].append(float(np.degrees(np.arctan2(-up[1], up[2]))))
    return {"icd_to_next_mm": {k: _robust(v) for k, v in icd.items()},
            "segmental_lordosis_deg": {k: _robust(v) for k, v in angle.items()},
            "supine_tilt_deg": {k: _robust(v) for k, v in tilt.items()}}


def neuroml_shape_stats(folder: Path) -> dict[str, dict]:
    """Ha/Hp, Hm/Hp and Hp/ICD per level from 6-point annotations (scale-free)."""
    levels = ["C3", "C4", "C5", "C6", "C7"] + [f"Th{i}" for i in range(1, 13)] + ["L1", "L2", "L3", "L4"]
    out: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(folder.glob("*.json")):
        doc = json.loads(path.read_text())
        for verts in doc["Annotation"].values():
            found = {}
            for v in verts:
                s = np.asarray(v["segments"], dtype=float)  # (A, M, P) x (sup, inf) x (row, col, slice)
                if s.shape != (3, 2, 3) or v["type"] not in levels:
                    continue
                h = np.linalg.norm((s[:, 0] - s[:, 1])[:, [0, 2]], axis=1)
                found[v["type"]] = (s.reshape(-1, 3).mean(0), h)
            for name, (_c, h) in found.items():
                i = levels.index(name)
                key = name.replace("Th", "T")
                out[key]["Ha/Hp"].append(h[0] / h[2])
                out[key]["Hm/Hp"].append(h[1] / h[2])
                if 0 < i < len(levels) - 1 and levels[i - 1] in found and levels[i + 1] in found:
                    d = (found[levels[i + 1]][0] - found[levels[i - 1]][0])[[0, 2]]
                    out[key]["Hp/ICD"].append(h[2] / (np.linalg.norm(d) / 2))
    return {k: {m: _robust(v) for m, v in d.items()} for k, d in out.items()}


def mask_body_stats(folder: Path) -> dict[str, dict]:
    """Vertebral-body width, depth, height relative to the local inter-centroid distance."""
    import SimpleITK as sitk

    vert_path, sub_path = folder / "sub-sample001_seg-vert_msk.nii.gz", folder / "sub-sample001_seg-subreg_msk.nii.gz"
    if not (vert_path.exists() and sub_path.exists()):
        return {}
    img = sitk.ReadImage(str(vert_path))
    vert, sub = sitk.GetArrayFromImage(img), sitk.GetArrayFromImage(sitk.ReadImage(str(sub_path)))
    direction = np.asarray(img.GetDirection()).reshape(3, 3)
    spacing, origin = np.asarray(img.GetSpacing()), np.asarray(img.GetOrigin())

    def points(mask: np.ndarray) -> np.ndarray:
        return (np.argwhere(mask)[:, ::-1] * spacing) @ direction.T + origin

    labels = [int(v) for v in np.unique(vert) if v]
    body = {lab: points((vert == lab) & ((sub == 49) | (sub == 50))) for lab in labels}
    centre = {lab: p.mean(0) for lab, p in body.items()}
    out = {}
    for i in range(1, len(labels) - 1):
        lab = labels[i]
        up, down = centre[labels[i - 1]], centre[labels[i + 1]]
        icd = float(np.linalg.norm(up - down) / 2)
        w = (up - down) / np.linalg.norm(up - down)
        x = np.array([1.0, 0, 0]) - w * w[0]
        x /= np.linalg.norm(x)
        y = np.cross(w, x)
        loc = (body[lab] - centre[lab]) @ np.stack([x, y, w], 1)
        ext = np.percentile(loc, 99.5, 0) - np.percentile(loc, 0.5, 0)
        out[_NAMES[lab - 1]] = {"icd_mm": round(icd, 2), "W/ICD": round(float(ext[0] / icd), 3),
                                "D/ICD": round(float(ext[1] / icd), 3), "H/ICD": round(float(ext[2] / icd), 3)}
    return out


def real_ct_hu_stats(folder: Path) -> dict[str, dict]:
    """HU percentiles of threshold regions (bone > 200, soft 0..100, fat -150..-50, air < -950) per CT."""
    import SimpleITK as sitk

    out = {}
    for path in sorted(folder.glob("*.nii.gz")):
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float32)
        regions = {"bone": a > 200, "soft": (a > 0) & (a < 100), "fat": (a > -150) & (a < -50), "air": a < -950}
        out[path.name.split("_")[0]] = {
            k: {"fraction": round(float(m.mean()), 4),
                "p5_50_95": [round(float(np.percentile(a[m], q)), 1) for q in (5, 50, 95)]}
            for k, m in regions.items() if m.any()}
    return out


def derive(data: Path) -> dict:
    """All statistics as one JSON-ready dictionary."""
    ann = data / "annotations"
    return {
        "verse_centroids": verse_centroid_stats(ann / "verse-centroids"),
        "neuroml_shape": neuroml_shape_stats(ann / "neuro-ml-anchor-free-genant" / "annotation"),
        "mask_body": mask_body_stats(data / "masks"),
        "real_ct_hu": real_ct_hu_stats(data / "real-ct"),
    }


if __name__ == "__main__":  # pragma: no cover - a one-off analysis script
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[3] / "shared" / "data"
    print(json.dumps(derive(root), indent=1))
