"""Check hand-placed vertebral body centres against the cortex in the CT, and write them re-measured.

Usage:
    python Utilities/check_body_centres.py ANNOTATION CT [-o REVISED.json] [--figure PNG]

A body centre placed by eye on reformats can be several millimetres off its body. This script
measures each annotated body (``Resources/Annotations/*_bodies.json``) from the CT alone; no model
is involved. Starting at the annotated point, on axial profiles:

* **left–right**: along x, at the annotated level and 4 mm above and below, through the front half
  of the body (at the point and 3 and 6 mm anterior, away from the rib heads and pedicles): the
  outer edges of the body are where the profile first stays below :data:`SOFT_HU` for 2 mm; the
  centre is the median midpoint of these nine profiles;
* **front–back**: along y at that x and 6 mm to either side, the same three levels: from the
  anterior cortex to the spinal canal behind the body;
* both twice, each from the other's result. ``Z`` (along the spine) is kept as annotated.

A body whose width (15–70 mm) or depth (12–60 mm) falls outside a vertebral body's keeps its point,
and the table says so. Prints the annotated and measured centres and the shift; with ``-o`` writes
the annotation with the measured ``X`` and ``Y`` (never over the input), its ``how`` extended by the
method and the old values kept in each entry's ``annotated_xyz``; with ``--figure`` draws an axial
slice of each body with both points.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

#: Below this (HU) a profile has left the bone: fat, muscle, lung and the fluid of the spinal canal.
SOFT_HU = 100.0
#: A profile has left the body once it stays below :data:`SOFT_HU` this long (mm).
RUN_MM = 2.0
STEP_MM = 0.25
#: The profiles' levels about the annotated one (mm), and their offsets (mm) across the profile.
LEVELS_MM = (-4.0, 0.0, 4.0)
FRONT_MM = (0.0, -3.0, -6.0)  # y offsets of the left-right profiles: LPS y grows posterior
SIDES_MM = (-6.0, 0.0, 6.0)
#: A body's plausible width and depth (mm); outside them the measurement is not used.
WIDTH_MM = (15.0, 70.0)
DEPTH_MM = (12.0, 60.0)
HALF_MM = 45.0


def edges(profile: np.ndarray, start: int) -> tuple[int, int]:
    """The first and last sample of the bone run around ``start``: the run ends where the profile
    stays below :data:`SOFT_HU` for :data:`RUN_MM`."""
    soft = profile < SOFT_HU
    run = int(round(RUN_MM / STEP_MM))
    lo = start
    while lo > 0 and not soft[max(0, lo - run):lo].all():
        lo -= 1
    hi = start
    while hi < len(profile) - 1 and not soft[hi + 1:hi + 1 + run].all():
        hi += 1
    return lo, hi


def measure(ct: Any, point: np.ndarray) -> dict[str, Any]:
    """The body's centre around ``point`` (LPS mm) on axial profiles of ``ct`` (a :class:`Volume`;
    a float32 array is sampled as it is, any other is converted on each call), its width and depth
    (mm), and whether the measurement is usable."""
    from scipy import ndimage

    array = ct.array.astype(np.float32, copy=False)
    offsets = np.arange(-HALF_MM, HALF_MM + STEP_MM / 2, STEP_MM)
    centre = int(np.argmin(np.abs(offsets)))

    def midpoints(axis: int, at: np.ndarray, across: tuple[float, ...], across_axis: int) -> tuple[float, float]:
        mids, sizes = [], []
        for dz in LEVELS_MM:
            for d in across:
                pts = np.repeat(at[None], len(offsets), axis=0)
                pts[:, axis] += offsets
                pts[:, across_axis] += d
                pts[:, 2] += dz
                zyx = ct.lps_to_index(pts)[:, ::-1].T
                prof = ndimage.map_coordinates(array, zyx, order=1, mode="constant", cval=-1000.0)
                lo, hi = edges(prof, centre)
                mids.append((offsets[lo] + offsets[hi]) / 2.0)
                sizes.append(offsets[hi] - offsets[lo])
        return float(np.median(mids)), float(np.median(sizes))

    p = np.asarray(point, dtype=float).copy()
    width = depth = float("nan")
    for _ in range(2):
        dx, width = midpoints(0, p, FRONT_MM, 1)
        p[0] += dx
        dy, depth = midpoints(1, p, SIDES_MM, 0)
        p[1] += dy
    ok = WIDTH_MM[0] <= width <= WIDTH_MM[1] and DEPTH_MM[0] <= depth <= DEPTH_MM[1]
    return {"centre": p, "width_mm": width, "depth_mm": depth, "usable": bool(ok)}


def body_name(entry: dict[str, Any]) -> str:
    """An annotated body's name (``name``, or the one of its VerSe ``label``)."""
    from VertebralFractureLib.anatomy import name_of

    return str(entry.get("name") or name_of(int(entry["label"])))


def revise(doc: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, Any]:
    """The annotation with the usable measured X and Y (``results`` in the order of its bodies), the
    old point kept in ``annotated_xyz``."""
    out = json.loads(json.dumps(doc))
    moved = []
    for e, r in zip(out["vertebrae"], results):
        if not r["usable"]:
            continue
        e["annotated_xyz"] = [e["X"], e["Y"], e["Z"]]
        e["X"], e["Y"] = round(float(r["centre"][0]), 1), round(float(r["centre"][1]), 1)
        moved.append(body_name(e))
    out["how"] = (doc["how"] + f" X and Y re-measured on the CT (Utilities/check_body_centres.py) for "
                  f"{', '.join(moved) or 'no body'}: the midpoints of the body's outer edges on nine axial profiles "
                  f"each way (below {SOFT_HU:g} HU for {RUN_MM:g} mm ends the bone), the median; Z as placed. "
                  "The points placed by eye are kept in each entry's annotated_xyz.")
    return out


def figure(ct: Any, doc: dict[str, Any], results: list[dict[str, Any]], path: Path) -> None:
    """An axial slice through each body with the annotated (green) and measured (orange) centre."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy import ndimage

    bodies = doc["vertebrae"]
    cols = min(len(bodies), 7)
    rows = -(-len(bodies) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.8 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat[len(bodies):]:
        ax.axis("off")
    for ax, e, r in zip(axes.flat, bodies, results):
        c = r["centre"]
        xs = np.arange(c[0] - 35, c[0] + 35.01, 0.5)
        ys = np.arange(c[1] - 35, c[1] + 35.01, 0.5)
        gx, gy = np.meshgrid(xs, ys)
        pts = np.stack([gx.ravel(), gy.ravel(), np.full(gx.size, e["Z"])], axis=1)
        zyx = ct.lps_to_index(pts)[:, ::-1].T
        img = ndimage.map_coordinates(ct.array, zyx, order=1, cval=-1000.0).reshape(gx.shape)
        # radiological view: the patient's right (−x in LPS) on the left, anterior up
        ax.imshow(img, cmap="gray", vmin=-150, vmax=700, extent=[xs[0], xs[-1], ys[-1], ys[0]])
        ax.plot(e["X"], e["Y"], "+", color="#2ca02c", ms=14, mew=2, label="placed by eye")
        ax.plot(c[0], c[1], "x", color="#ff7f0e", ms=10, mew=2, label="measured")
        shift = np.hypot(c[0] - e["X"], c[1] - e["Y"])
        ax.set_title(f"{body_name(e)}  z {e['Z']:g} mm\nshift {shift:.1f} mm" + ("" if r["usable"] else " (not used)"),
                     fontsize=9)
        ax.tick_params(labelsize=6)
    for ax in axes[-1]:
        ax.set_xlabel("x (LPS mm, patient's left →)", fontsize=7)
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.suptitle(f"{doc['image']}: body centres placed by eye and measured from the cortex", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("annotation", type=Path)
    ap.add_argument("ct", type=Path)
    ap.add_argument("-o", "--output", type=Path, help="write the revised annotation here (not over the input)")
    ap.add_argument("--figure", type=Path, help="axial slices with both points (PNG)")
    args = ap.parse_args(argv)

    from VertebralFractureLib.io.readers import read_image

    doc = json.loads(args.annotation.read_text(encoding="utf-8"))
    if args.output is not None and args.output.resolve() == args.annotation.resolve():
        ap.error("the revised annotation must go to a new file, not over the input")
    ct = read_image(args.ct).volume
    ct = ct.with_array(np.asarray(ct.array, dtype=np.float32))  # once, not for every body and panel
    results = []
    print(f"{'body':5} {'placed (X, Y)':>16} {'measured (X, Y)':>16} {'shift':>6} {'width':>6} {'depth':>6}")
    for e in doc["vertebrae"]:
        r = measure(ct, np.array([e["X"], e["Y"], e["Z"]], dtype=float))
        results.append(r)
        c = r["centre"]
        print(f"{body_name(e):5} {e['X']:7.1f} {e['Y']:7.1f}  {c[0]:7.1f} {c[1]:7.1f}  "
              f"{np.hypot(c[0] - e['X'], c[1] - e['Y']):5.1f} {r['width_mm']:6.1f} {r['depth_mm']:6.1f}"
              + ("" if r["usable"] else "  not used: not a body's size"))
    if args.output is not None:
        args.output.write_text(json.dumps(revise(doc, results), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    if args.figure is not None:
        figure(ct, doc, results, args.figure)
    return 0


if __name__ == "__main__":
    sys.exit(main())
