"""Vertebra centroids given by the user, in place of stage 1 (``analyze --centroids``).

Two formats are read:

* a Slicer point list (``.mrk.json``), each point named after its vertebra ("T12", "L1", …), in
  LPS or RAS — the ``centroids.mrk.json`` of an earlier analysis, corrected in Slicer, is one;
* a VerSe centroid list (``_ctd.json``, voxel coordinates × spacing of the image it belongs to),
  such as an analysis' ``centroids_ctd.json`` or the VerSe annotations.

Both give label → LPS position (mm). Nothing in the file is executed; names are looked up in the
VerSe label table.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from VertebralFractureLib.anatomy import cranio_caudal, is_vertebra_label, vertebra
from VertebralFractureLib.errors import InputError
from VertebralFractureLib.volume import Volume


def read_centroid_file(path: str | Path, reference: Volume) -> dict[int, np.ndarray]:
    """Label → LPS centroid (mm) from a ``.mrk.json`` point list or a VerSe ``_ctd.json``.

    Args:
        path: the file.
        reference: the CT the centroids belong to (needed for VerSe voxel coordinates, and to
            check that every point lies inside it).

    Raises:
        InputError: unreadable file, unknown or repeated vertebra name, non-finite coordinates, a
            point outside the image, or no point at all.
    """
    p = Path(path)
    try:
        if p.name.lower().endswith(".mrk.json"):
            out = read_markups_centroids(p)
        else:
            from VertebralFractureLib.io.verse import read_centroids

            out = read_centroids(p, reference)
    except ValueError as err:
        raise InputError(str(err)) from err
    if not out:
        raise InputError(f"{p.name}: no centroid in the file")
    shape = np.array(reference.shape_xyz)
    for label, lps in out.items():
        ijk = reference.lps_to_index(np.asarray(lps, dtype=float))
        if not (np.all(ijk >= -0.5) and np.all(ijk <= shape - 0.5)):
            what = vertebra(label).name if is_vertebra_label(label) else f"label {label}"
            raise InputError(f"{p.name}: the centroid of {what} "
                             f"({', '.join(f'{c:.1f}' for c in lps)} mm LPS) lies outside the image")
    check_plausible(out, p.name)
    return out


#: Two vertebra centroids closer than this (mm) are one vertebra named twice: even cervical
#: vertebrae, the smallest, are about 15 mm apart.
MIN_CENTROID_DISTANCE_MM = 8.0
#: A more caudal vertebra may lie at most this much (mm) above a more cranial one (scoliosis, tilt).
ORDER_TOLERANCE_MM = 5.0


def check_plausible(centroids: dict[int, np.ndarray], source: str) -> None:
    """Refuse a point list that cannot be one spine: two points closer than
    :data:`MIN_CENTROID_DISTANCE_MM`, or names out of cranio-caudal order (a caudal name above a
    cranial one, e.g. L1 placed above T12). Positions are LPS (mm), superior = +z.

    Raises:
        InputError: naming the points.
    """
    def name(label: int) -> str:
        return vertebra(label).name if is_vertebra_label(label) else f"label {label}"

    labels = list(centroids)
    pts = {k: np.asarray(centroids[k], dtype=float) for k in labels}
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            d = float(np.linalg.norm(pts[a] - pts[b]))
            if d < MIN_CENTROID_DISTANCE_MM:
                raise InputError(f"{source}: {name(a)} and {name(b)} are {d:.1f} mm apart — one vertebra "
                                 f"named twice? Centroids of neighbouring vertebrae are at least "
                                 f"{MIN_CENTROID_DISTANCE_MM:g} mm apart; move or delete one of the points")
    ordered = cranio_caudal(k for k in labels if is_vertebra_label(k))
    wrong = [(a, b) for a, b in zip(ordered, ordered[1:]) if pts[b][2] > pts[a][2] + ORDER_TOLERANCE_MM]
    if wrong and len(wrong) == len(ordered) - 1 and len(ordered) > 2:
        raise InputError(f"{source}: every vertebra lies above the one named before it ({name(ordered[0])} "
                         f"lowest, {name(ordered[-1])} highest): the names are upside down, or the image's "
                         "orientation is wrong; check the point names and the image header")
    if wrong:
        a, b = wrong[0]
        raise InputError(f"{source}: {name(b)} lies {pts[b][2] - pts[a][2]:.0f} mm above {name(a)}: names out "
                         f"of cranio-caudal order; rename the points so that {name(a)} is the higher one")


def read_markups_centroids(path: str | Path) -> dict[int, np.ndarray]:
    """Label → LPS centroid from a Slicer point list whose point labels are vertebra names.

    Points whose position is not "defined" (placed) are skipped.

    Raises:
        ValueError: unreadable file, unknown or repeated vertebra name, non-finite coordinates.
    """
    p = Path(path)
    expected = "a Slicer point list (.mrk.json, as saved by Slicer's Markups module) is expected"
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{p.name} is not a text file (an image or other binary data?): {expected}") from err
    except OSError as err:
        raise ValueError(f"cannot read {p.name}: {err.strerror or err}") from err
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{p.name} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}): "
                         f"{expected}") from err
    if not isinstance(doc, dict) or "markups" not in doc:
        raise ValueError(f"{p.name} holds JSON but no 'markups' list: {expected}")
    markups = doc["markups"]
    if not isinstance(markups, list):
        raise ValueError(f"{p.name}: 'markups' is not a list")
    out: dict[int, np.ndarray] = {}
    for markup in markups:
        system = str(markup.get("coordinateSystem", "LPS")).upper()
        if system not in ("LPS", "RAS"):
            raise ValueError(f"{p.name}: unknown coordinate system {system!r}")
        for k, point in enumerate(markup.get("controlPoints") or []):
            if point.get("positionStatus", "defined") != "defined":
                continue
            name = str(point.get("label", "")).strip()
            try:
                label = vertebra(name).label
            except (KeyError, ValueError) as err:
                raise ValueError(f"{p.name}: point {k + 1} is named {name!r}, not a vertebra (C1 … L6, T13)") from err
            try:
                xyz = np.array(point["position"], dtype=float)
            except (KeyError, TypeError, ValueError) as err:
                raise ValueError(f"{p.name}: point {name} has no position") from err
            if xyz.shape != (3,) or not np.all(np.isfinite(xyz)):
                raise ValueError(f"{p.name}: point {name} needs 3 finite coordinates, got {point.get('position')!r}")
            if system == "RAS":
                xyz = xyz * np.array([-1.0, -1.0, 1.0])
            if label in out:
                raise ValueError(f"{p.name}: {name} is given twice")
            out[label] = xyz
    return out
