"""The L1–L5 radiograph detector on radiographs reconstructed from real CT, against the real labels.

Usage:
    python Utilities/radiograph_real_check.py OUT_DIR CT:MASK|CT:ANNOTATION [...] [--weights RUN/best.pt]

For each real CT a lateral radiograph is reconstructed with the default acquisition
(:class:`~VertebralFractureLib.synth.radiograph.RadiographParams`), the detector is run, and each
detection is checked against the truth:

* a VerSe vertebra mask: the detection's centre must fall inside the projected mask of the vertebra
  of the same name (named right), or of any vertebra (found);
* an ``evaluate real`` annotation (``*_bodies.json``, annotated body centres): the centre must lie
  within 10 mm of the projected body centre of that name.

Writes ``real_check.json`` and ``real_check.png`` (each radiograph with its detections).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

#: An annotated body centre and a detection's centre agree within this distance (mm).
CENTRE_TOLERANCE_MM = 10.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("output", type=Path)
    ap.add_argument("items", nargs="+", help="CT:MASK or CT:ANNOTATION")
    ap.add_argument("--weights", type=Path, default=None, help="detector weights (default: the installed model)")
    ap.add_argument("--threshold", type=float, default=None)
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from VertebralFractureLib import models
    from VertebralFractureLib.anatomy import vertebra
    from VertebralFractureLib.io.readers import read_image, read_labelmap
    from VertebralFractureLib.radiograph_detect import DEFAULT_THRESHOLD, build_network, detect
    from VertebralFractureLib.synth.radiograph import RadiographParams, label_shadows, lateral_radiograph
    from VertebralFractureLib.training.real import read_annotation

    if args.weights is not None:
        net = build_network()
        net.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
        threshold = DEFAULT_THRESHOLD
    else:
        card, net = models.load_network("radiograph-detector", build_network)
        threshold = float(card.postprocess.get("threshold", DEFAULT_THRESHOLD))
    if args.threshold is not None:
        threshold = args.threshold
    params = RadiographParams()
    results, panels = [], []
    for item in args.items:
        ct_path, _, truth_path = item.partition(":")
        ct = read_image(ct_path).volume
        image, geo = lateral_radiograph(ct, params, np.random.default_rng(0))
        found = detect(net, image, geo.pixel_mm, threshold=threshold)
        name = Path(ct_path).name.split(".")[0]
        rows = []
        masks: dict[str, np.ndarray] = {}
        centres: dict[str, np.ndarray] = {}
        if truth_path.endswith(".json"):
            for lab, t in read_annotation(truth_path)["vertebrae"].items():
                centres[vertebra(lab).name] = geo.to_pixels(np.asarray(t.centroid))
        else:
            shadows = label_shadows(read_labelmap(truth_path, ct), geo.pixel_mm, image.shape)
            masks = {vertebra(lab).name: m for lab, m in shadows.items()}
        for d in found:
            x0, y0, x1, y1 = d["box_px"]
            c, r = (x0 + x1) / 2, (y0 + y1) / 2
            ri, ci = int(round(r)), int(round(c))
            if masks:
                inside = {n for n, m in masks.items() if 0 <= ri < m.shape[0] and 0 <= ci < m.shape[1] and m[ri, ci]}
                rows.append({**d, "named_right": d["name"] in inside, "found": bool(inside), "truth_here": sorted(inside)})
            else:
                dist = {n: float(np.hypot(*(np.array([c, r]) - p)) * geo.pixel_mm) for n, p in centres.items()}
                near = min(dist, key=dist.get) if dist else None
                rows.append({**d, "named_right": dist.get(d["name"], np.inf) <= CENTRE_TOLERANCE_MM,
                             "found": near is not None and dist[near] <= CENTRE_TOLERANCE_MM,
                             "truth_here": [near] if near is not None and dist[near] <= CENTRE_TOLERANCE_MM else []})
        truth_lumbar = sorted(n for n in (masks or centres) if n in ("L1", "L2", "L3", "L4", "L5"))
        results.append({"case": name, "true_lumbar_levels": truth_lumbar, "detections": rows,
                        "named_right": sum(r["named_right"] for r in rows), "detected": len(rows)})
        panels.append((name, image, rows, masks, centres))
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "real_check.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 7))
    for ax, (name, image, rows, masks, centres) in zip(np.atleast_1d(axes), panels):
        ax.imshow(image, cmap="gray", vmin=0, vmax=1)
        for m in masks.values():
            ax.contour(m, levels=[0.5], colors="yellow", linewidths=0.5)
        for p in centres.values():
            ax.plot(*p, "y+", ms=8)
        for r in rows:
            x0, y0, x1, y1 = r["box_px"]
            colour = "lime" if r["named_right"] else "red"
            ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color=colour, lw=1.2))
            ax.text(x0 - 4, (y0 + y1) / 2, f"{r['name']} {r['detection_score']:.2f}", color=colour, fontsize=7,
                    ha="right", va="center")
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(args.output / "real_check.png", dpi=90)
    for r in results:
        print(f"{r['case']}: {r['named_right']} of {r['detected']} detections named right; "
              f"true lumbar levels {', '.join(r['true_lumbar_levels']) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
