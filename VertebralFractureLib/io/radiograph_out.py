"""Writing a radiograph analysis (:mod:`VertebralFractureLib.radiograph_analysis`).

Files, in a folder created whole or not at all (:func:`.output.write_folder`):

* ``radiograph.json`` — the result: ``vertebrae`` (name, ``box_px``, ``box_mm``,
  ``detection_score``, ``probabilities`` per network, ``ensemble``, ``class``, ``status``),
  ``fresh_vcf_probability`` of the image (seed 003's network) and
  ``fresh_vcf_probability_vertebrae`` (the largest ensemble P(fresh) of the assessed vertebrae, None
  when none was assessed), with the models' versions and the warnings;
* ``report.png`` and ``report.html`` — the image with the boxes and classes, the vertebrae's
  Grad-CAM overlay and seed 003's Grad-CAM overlay, and the table;
* for 3D Slicer: ``radiograph.nrrd`` (the image as a one-slice volume, shown in the sagittal view,
  pixel spacing kept), ``gradcam.nrrd`` and ``fresh_gradcam.nrrd`` (same geometry, 0..1), and one
  closed curve per vertebra (``boxes/L1.mrk.json`` …) in the same coordinates.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from VertebralFractureLib.volume import Volume

RESULT_JSON = "radiograph.json"
REPORT_PNG = "report.png"
REPORT_HTML = "report.html"
IMAGE_NRRD = "radiograph.nrrd"
CAM_NRRD = "gradcam.nrrd"
FRESH_CAM_NRRD = "fresh_gradcam.nrrd"
BOXES_DIR = "boxes"
#: Display colour of each class (RGB 0..1): normal bone white, old ochre, fresh red; grey when not assessable.
CLASS_COLORS = {"normal": (0.95, 0.95, 0.9), "old": (0.95, 0.65, 0.1), "fresh": (0.9, 0.1, 0.1), None: (0.6, 0.6, 0.6)}
#: Index axes of the image in LPS: columns run posterior, rows inferior, the slice axis right — a
#: lateral radiograph shows in Slicer's sagittal view.
DIRECTION = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def fresh_summary(data: dict[str, Any]) -> str:
    """Both fresh-VCF scores of ``radiograph.json`` in words: from the vertebrae, and seed 003's."""
    v = data.get("fresh_vcf_probability_vertebrae")
    part = f"p = {v:.2f} from the vertebrae" if v is not None else "no vertebra assessed"
    return (f"fresh vertebral compression fracture in the image: {part}; "
            f"whole-image network (seed 003) p = {data['fresh_vcf_probability']:.2f}")


def image_volume(array: np.ndarray, pixel_spacing_mm: tuple[float, float]) -> Volume:
    """A 2D image (rows, columns) as a one-slice :class:`Volume` with the radiograph's geometry."""
    sy, sx = pixel_spacing_mm
    return Volume(np.asarray(array)[None], spacing=(float(sx), float(sy), 1.0), origin=(0.0, 0.0, 0.0),
                  direction=DIRECTION.copy())


def box_corners_lps(box_px: list[float], pixel_spacing_mm: tuple[float, float]) -> list[tuple[float, float, float]]:
    """The four corners of a box (x0, y0, x1, y1 in pixels, pixel-centre coordinates) in LPS mm."""
    vol = image_volume(np.zeros((1, 1), np.float32), pixel_spacing_mm)
    x0, y0, x1, y1 = box_px
    return [tuple(float(c) for c in vol.index_to_lps((x, y, 0.0))) for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))]


def write_box_curve(path: Path, name: str, corners: list[tuple[float, float, float]], color: tuple[float, float, float],
                    description: str) -> None:
    """A Slicer closed curve (``.mrk.json``, markups schema v1.0.3, LPS mm) through ``corners``."""
    from VertebralFractureLib.io.slicer_files import MARKUPS_SCHEMA

    points = [{"id": str(k + 1), "label": f"{name}-{k + 1}", "description": "", "associatedNodeID": "",
               "position": [round(c, 4) for c in p], "orientation": [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0],
               "selected": True, "locked": True, "visibility": True, "positionStatus": "defined"}
              for k, p in enumerate(corners)]
    markup = {"type": "ClosedCurve", "name": name, "description": description, "coordinateSystem": "LPS",
              "coordinateUnits": "mm", "locked": True, "fixedNumberOfControlPoints": True, "labelFormat": "%N-%d",
              "lastUsedControlPointNumber": len(points), "controlPoints": points, "measurements": [],
              "curveType": "Linear", "numberOfPointsPerInterpolatingSegment": 1,
              "display": {"visibility": True, "opacity": 1.0, "color": list(color), "selectedColor": list(color),
                          "activeColor": [0.4, 1.0, 0.0], "propertiesLabelVisibility": True,
                          "pointLabelsVisibility": False, "textScale": 3.0, "glyphType": "Sphere3D",
                          "glyphScale": 0.5, "glyphSize": 1.0, "useGlyphScale": True, "sliceProjection": False,
                          "lineThickness": 0.4}}
    path.write_text(json.dumps({"@schema": MARKUPS_SCHEMA, "markups": [markup]}, indent=1) + "\n", encoding="utf-8")


def vertebra_label(v: dict[str, Any]) -> str:
    """``L2 fresh 0.81`` — name, class and the ensemble's probability of it (or the status; with the
    fresh probability for a vertebra placed above L1, which is scored but not called)."""
    if v.get("class") is None:
        fresh = (v.get("ensemble") or {}).get("fresh")
        scored = f" (fresh {fresh:.2f})" if v.get("status") == "placed" and fresh is not None else ""
        return f"{v['name']} {v.get('status', '')}{scored}".strip()
    return f"{v['name']} {v['class']} {v['ensemble'][v['class']]:.2f}"


def report_figure(result: Any, path: Path) -> None:
    """``report.png``: boxes and classes; the vertebrae's Grad-CAM; seed 003's Grad-CAM."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    img = result.radiograph.image
    sy, sx = result.radiograph.pixel_spacing_mm
    data = result.to_json()
    placed = [v["name"] for v in data["vertebrae"] if v["detection_score"] is None]
    first = "L1-L5" + (f" (dashed: {', '.join(placed)} placed from L1 and L2)" if placed else "")
    panels = [(f"{first}: ensemble class", None), ("vertebrae: Grad-CAM (ensemble)", result.cam),
              (f"whole image: fresh VCF p = {data['fresh_vcf_probability']:.2f}, Grad-CAM", result.fresh_cam)]
    height_mm, width_mm = img.shape[0] * sy, img.shape[1] * sx
    extent = (0, width_mm, height_mm, 0)
    # the first two panels zoom onto the vertebrae found (40 mm around them); the third shows the whole image
    boxes = np.array([v["box_mm"] for v in data["vertebrae"]]) if data["vertebrae"] else None
    if boxes is not None:
        x0, y0 = max(0.0, boxes[:, 0].min() - 40), max(0.0, boxes[:, 1].min() - 40)
        x1, y1 = min(width_mm, boxes[:, 2].max() + 40), min(height_mm, boxes[:, 3].max() + 40)
    else:
        x0, y0, x1, y1 = 0.0, 0.0, width_mm, height_mm
    views = [(x0, x1, y1, y0)] * 2 + [(0.0, width_mm, height_mm, 0.0)]
    tallest = max((v[2] - v[3]) / max(v[1] - v[0], 1e-6) for v in views)
    fig, axes = plt.subplots(1, 3, figsize=(13, min(12.0, 13 / 3 * tallest + 1.4)))
    for ax, (title, cam), view in zip(axes, panels, views):
        ax.imshow(img, cmap="gray", extent=extent, vmin=0, vmax=1)
        if cam is not None:
            ax.imshow(np.ma.masked_less(cam, 0.05), cmap="jet", alpha=0.45, extent=extent, vmin=0, vmax=1)
        for v in data["vertebrae"]:
            x0, y0, x1, y1 = v["box_mm"]
            color = CLASS_COLORS.get(v["class"], CLASS_COLORS[None])
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=1.2, ec=color,
                                   ls="-" if v["detection_score"] is not None else "--"))
            if cam is None:
                ax.text(x1 + 2, (y0 + y1) / 2, vertebra_label(v), color=color, fontsize=8, va="center",
                        bbox={"fc": "black", "alpha": 0.5, "lw": 0, "pad": 1})
        ax.set_xlim(view[0], view[1])
        ax.set_ylim(view[2], view[3])
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("mm")
    fig.suptitle("Lateral radiograph (research software, not for diagnosis; models trained on synthetic radiographs)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def report_html(result: Any, png: Path) -> str:
    """``report.html``: the figure, the table of vertebrae and the warnings."""
    data = result.to_json()
    members = data["ensemble_members"]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in
                   ["vertebra", "class", "status", "detection", *(f"{m} (n/o/f)" for m in members), "ensemble (n/o/f)"])
    rows = []
    for v in data["vertebrae"]:
        probs = [" / ".join(f"{v['probabilities'][m][c]:.2f}" for c in data["classes"]) if m in v["probabilities"]
                 else "-" for m in members]
        ens = " / ".join(f"{v['ensemble'][c]:.2f}" for c in data["classes"]) if v["ensemble"] else "-"
        cells = [v["name"], v["class"] or "-", v["status"] + (f" ({v['reason']})" if v.get("reason") else ""),
                 v["located"] if v["detection_score"] is None else f"{v['detection_score']:.2f}",
                 *probs, ens]
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    picture = base64.b64encode(png.read_bytes()).decode("ascii")
    warn = "".join(f"<li>{html.escape(w)}</li>" for w in data["warnings"])
    fresh = fresh_summary(data)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Lateral radiograph</title>"
            "<style>body{font-family:sans-serif;margin:1em}td,th{border:1px solid #ccc;padding:2px 6px}"
            "table{border-collapse:collapse}</style></head><body>"
            "<h1>Lateral radiograph: L1-L5</h1><p><b>Research software, not for diagnosis.</b></p>"
            f"<p>{html.escape(fresh[:1].upper() + fresh[1:])}</p>"
            f"<img alt='radiograph with boxes and Grad-CAM' style='max-width:100%' src='data:image/png;base64,{picture}'>"
            f"<table><tr>{head}</tr>{''.join(rows)}</table><h2>Warnings</h2><ul>{warn}</ul></body></html>\n")


def write_radiograph_outputs(result: Any, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Write every file of a radiograph analysis (module docstring) into the new folder ``out_dir``."""
    from VertebralFractureLib.io.output import write_folder
    from VertebralFractureLib.io.readers import write_volume

    def fill(folder: Path) -> None:
        data = result.to_json()
        (folder / RESULT_JSON).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        report_figure(result, folder / REPORT_PNG)
        (folder / REPORT_HTML).write_text(report_html(result, folder / REPORT_PNG), encoding="utf-8")
        spacing = result.radiograph.pixel_spacing_mm
        write_volume(image_volume(result.radiograph.image, spacing), folder / IMAGE_NRRD)
        for name, cam in ((CAM_NRRD, result.cam), (FRESH_CAM_NRRD, result.fresh_cam)):
            if cam is not None:
                write_volume(image_volume(cam.astype(np.float32), spacing), folder / name)
        boxes = folder / BOXES_DIR
        boxes.mkdir()
        for v in data["vertebrae"]:
            write_box_curve(boxes / f"{v['name']}.mrk.json", vertebra_label(v), box_corners_lps(v["box_px"], spacing),
                            CLASS_COLORS.get(v["class"], CLASS_COLORS[None]),
                            f"{v['name']}: {v['class'] or v['status']} (VertebralFracture, lateral radiograph)")

    return write_folder(out_dir, fill, overwrite)


__all__ = ["BOXES_DIR", "CAM_NRRD", "CLASS_COLORS", "FRESH_CAM_NRRD", "IMAGE_NRRD", "REPORT_HTML", "REPORT_PNG",
           "RESULT_JSON", "box_corners_lps", "image_volume", "report_figure", "report_html", "vertebra_label",
           "write_box_curve", "write_radiograph_outputs"]
