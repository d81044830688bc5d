"""The radiograph analysis on radiographs reconstructed from real CT, against the real labels.

Usage:
    python Utilities/radiograph_real_check.py OUT_DIR CT:MASK:GRADES|CT:ANNOTATION [...]

``GRADES`` is a VerSe ``genant_grades.json`` (the case's subject is taken from the CT's file name).
For each real CT a lateral radiograph is reconstructed with the default acquisition
(:class:`~VertebralFractureLib.synth.radiograph.RadiographParams`) and analysed as the
``radiograph`` command does. Checked against the truth:

* **detection**: a detection is named right when its centre falls inside the projected mask of the
  vertebra of the same name (VerSe mask), or within 10 mm of the annotated body centre of that name;
* **fractured or not** (the question of the issue: grade ≥ 2 called old or fresh, grade 0 called
  normal), twice: for the vertebrae the detector named right (the whole product), and for every
  lumbar vertebra of a VerSe mask cropped from its true body box (the box of its six Genant
  keypoints measured on the true mask: the classifiers alone). The chest CTs' vertebrae are normal
  (no fracture seen on sagittal reformats): none may be called fractured.

Old against fresh cannot be checked here: no real fracture has a known age.

``--slice-mm T`` reconstructs each radiograph from its CT with the slices first averaged to about T
mm (:func:`~VertebralFractureLib.synth.radiograph.thicker_slices`; the masks follow by nearest
neighbour): what the same anatomy gives from a thick-slice CT, as an abdominal CT is often read.

Writes ``real_check.json`` and ``real_check.png`` (each radiograph with its boxes and classes).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

#: An annotated body centre and a detection's centre agree within this distance (mm).
CENTRE_TOLERANCE_MM = 10.0


def _true_body_boxes(ct, mask, geo) -> dict[str, list[float]]:
    """Body boxes of the true vertebra masks: stage 3 alone (as ``grade``) gives the six keypoints."""
    from VertebralFractureLib.pipeline import AnalysisConfig, GivenSegmentation, analyze, grading_stage
    from VertebralFractureLib.synth.radiograph import body_boxes

    analysis = analyze(ct, AnalysisConfig(), stages=[GivenSegmentation(mask), grading_stage()])
    rows = [{"name": v.name, "keypoints_lps_mm": v.keypoints_lps_mm} for v in analysis.vertebrae
            if v.keypoints_lps_mm and v.complete]
    return body_boxes(rows, geo)


def fractured(cls: str | None) -> bool | None:
    return None if cls is None else cls != "normal"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("output", type=Path)
    ap.add_argument("items", nargs="+", help="CT:MASK:GRADES or CT:ANNOTATION")
    ap.add_argument("--slice-mm", type=float, default=None, metavar="T",
                    help="average each CT's slices to about T mm first (a thick-slice reconstruction)")
    args = ap.parse_args(argv)
    if args.slice_mm is not None and not args.slice_mm > 0:
        ap.error(f"--slice-mm must be positive, got {args.slice_mm}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from VertebralFractureLib.anatomy import vertebra
    from VertebralFractureLib.io.radiograph import Radiograph
    from VertebralFractureLib.io.radiograph_out import CLASS_COLORS
    from VertebralFractureLib.io.readers import read_image, read_labelmap
    from VertebralFractureLib.radiograph_analysis import analyze_radiograph, fracture_threshold, load_models
    from VertebralFractureLib.radiograph_classify import (
        CLASSES,
        crop_vertebra,
        decide,
        ensemble,
        probabilities,
    )
    from VertebralFractureLib.radiograph_detect import LEVELS
    from VertebralFractureLib.synth.radiograph import (
        RadiographParams,
        label_shadows,
        lateral_radiograph,
        thicker_slices,
    )
    from VertebralFractureLib.training.real import read_annotation

    cards, nets, _, _ = load_models("cpu")
    threshold = fracture_threshold(cards)  # the product's decision, as for the detected vertebrae
    params = RadiographParams()
    results, panels = [], []
    for item in args.items:
        ct_path, _, rest = item.partition(":")
        truth_path, _, grades_path = rest.partition(":")
        thin = read_image(ct_path).volume
        ct = thin if args.slice_mm is None else thicker_slices(thin, args.slice_mm)
        image, geo = lateral_radiograph(ct, params, np.random.default_rng(0))
        name = Path(ct_path).name.split(".")[0]
        subject = name.replace("_ct", "")
        analysis = analyze_radiograph(Radiograph(image, (geo.pixel_mm, geo.pixel_mm), "reconstruction", "DRR"),
                                      device="cpu", grad_cam=False)
        masks: dict[str, np.ndarray] = {}
        centres: dict[str, np.ndarray] = {}
        grades: dict[str, int | None] = {}
        true_rows = []
        if truth_path.endswith(".json"):
            for lab, t in read_annotation(truth_path)["vertebrae"].items():
                centres[vertebra(lab).name] = geo.to_pixels(np.asarray(t.centroid))
                grades[vertebra(lab).name] = 0  # annotated: no fracture seen
        else:
            mask = read_labelmap(truth_path, thin)
            if ct is not thin:
                mask = mask.resample_like(ct, "nearest", 0)
            shadows = label_shadows(mask, geo.pixel_mm, image.shape)
            masks = {vertebra(lab).name: m for lab, m in shadows.items()}
            table = json.loads(Path(grades_path).read_text())["grades"].get(subject, {}) if grades_path else {}
            grades = {vertebra(int(lab)).name: g for lab, g in table.items()}
            boxes = {n: b for n, b in _true_body_boxes(ct, mask, geo).items() if n in LEVELS}
            if boxes:
                crops = np.stack([crop_vertebra(image, b, pixel_mm=geo.pixel_mm)[0] for b in boxes.values()])
                probs = probabilities(nets, crops)
                ens = ensemble(probs)
                for k, (n, b) in enumerate(boxes.items()):
                    cls = CLASSES[int(decide(ens[k], threshold)[0])]
                    true_rows.append({"name": n, "grade": grades.get(n), "box_px": [round(v, 1) for v in b],
                                      "class": cls, "ensemble": {c: round(float(ens[k, j]), 3) for j, c in enumerate(CLASSES)},
                                      "per_network": {kind: CLASSES[int(np.argmax(p[k]))] for kind, p in probs.items()}})
        rows = []
        for v in analysis.vertebrae:
            x0, y0, x1, y1 = v.box_px
            c, r = (x0 + x1) / 2, (y0 + y1) / 2
            ri, ci = int(round(r)), int(round(c))
            if masks:
                here = sorted(n for n, m in masks.items() if 0 <= ri < m.shape[0] and 0 <= ci < m.shape[1] and m[ri, ci])
            else:
                dist = {n: float(np.hypot(*(np.array([c, r]) - p)) * geo.pixel_mm) for n, p in centres.items()}
                here = [n for n, d in dist.items() if d <= CENTRE_TOLERANCE_MM]
            rows.append({"name": v.name, "box_px": v.box_px, "detection_score": v.detection_score, "class": v.cls,
                         "status": v.status, "ensemble": v.ensemble, "named_right": v.name in here,
                         "truth_here": here, "grade_here": [grades.get(n) for n in here]})
        results.append({"case": name, "pixel_mm": geo.pixel_mm, "ct_slice_mm": round(ct.slice_mm, 2), "true_lumbar": {n: grades.get(n) for n in
                                                                                sorted(set(masks or centres) & set(LEVELS))},
                        "detections": rows, "true_boxes": true_rows,
                        "fresh_vcf_probability": analysis.fresh_vcf_probability,
                        "fresh_vcf_probability_vertebrae": analysis.fresh_vcf_probability_vertebrae})
        panels.append((f"{name} ({round(ct.slice_mm, 2):g} mm slices)", image, rows, true_rows, masks, centres))

    summary = _summary(results)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "real_check.json").write_text(json.dumps({"summary": summary, "cases": results}, indent=2) + "\n",
                                                 encoding="utf-8")
    fig, axes = plt.subplots(2, len(panels), figsize=(4.2 * len(panels), 12))
    axes = np.asarray(axes).reshape(2, -1)
    for j, (name, image, rows, true_rows, masks, centres) in enumerate(panels):
        for i, (title, boxes) in enumerate((("detected (product)", rows), ("true body boxes (classifiers)", true_rows))):
            ax = axes[i, j]
            ax.imshow(image, cmap="gray", vmin=0, vmax=1)
            for m in masks.values():
                ax.contour(m, levels=[0.5], colors="yellow", linewidths=0.4)
            for p in centres.values():
                ax.plot(*p, "y+", ms=8)
            for r in boxes:
                x0, y0, x1, y1 = r["box_px"]
                colour = CLASS_COLORS.get(r.get("class"), CLASS_COLORS[None])
                ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color=colour, lw=1.2))
                label = f"{r['name']} {r.get('class') or r.get('status')}"
                if "grade" in r:
                    label += f" (g{r['grade']})"
                elif not r["named_right"]:
                    label += " (misnamed)"
                ax.text(x0 - 4, (y0 + y1) / 2, label, color=colour, fontsize=6, ha="right", va="center",
                        bbox={"fc": "black", "alpha": 0.5, "lw": 0, "pad": 0.5})
            ax.set_title(f"{name}: {title}", fontsize=8)
            ax.axis("off")
    fig.suptitle("Radiographs reconstructed from real CT (VerSe, LIDC-IDRI, CRLM): white normal, ochre old, red fresh",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(args.output / "real_check.png", dpi=90)
    print(json.dumps(summary, indent=2))
    return 0


def _summary(results: list[dict]) -> dict:
    """Grade ≥ 2 called fractured and grade 0 called fractured: on the detected boxes named right, on
    the detected boxes whatever their name (the vertebra the box's centre lies on: a reader sees the
    box on that vertebra), and on the true boxes."""
    out = {}
    for key, rows_of in (("detected_named_right", lambda r: [(d["grade_here"][d["truth_here"].index(d["name"])], d["class"])
                                                              for d in r["detections"] if d["named_right"]]),
                         ("detected_any_name", lambda r: [(d["grade_here"][0], d["class"])
                                                          for d in r["detections"] if len(d["truth_here"]) == 1]),
                         ("true_boxes", lambda r: [(t["grade"], t["class"]) for t in r["true_boxes"]])):
        pairs = [p for r in results for p in rows_of(r) if p[0] is not None and p[1] is not None]
        severe = [c for g, c in pairs if g >= 2]
        normal = [c for g, c in pairs if g == 0]
        out[key] = {"grade2plus": len(severe), "grade2plus_called_fractured": sum(fractured(c) for c in severe),
                    "grade0": len(normal), "grade0_called_fractured": sum(fractured(c) for c in normal),
                    "grade1": sum(1 for g, _ in pairs if g == 1),
                    "grade1_called_fractured": sum(fractured(c) for g, c in pairs if g == 1)}
    detections = [d for r in results for d in r["detections"]]
    out["detections"] = len(detections)
    out["detections_named_right"] = sum(d["named_right"] for d in detections)
    out["chest_or_annotated_called_fractured"] = sum(
        1 for r in results if not r["true_boxes"] for d in r["detections"] if fractured(d["class"]))
    return out


if __name__ == "__main__":
    sys.exit(main())
