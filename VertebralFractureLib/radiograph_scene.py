"""A radiograph analysis in a 3D Slicer scene: the image, the L1–L5 boxes as closed curves coloured
by class, the Grad-CAM maps as coloured overlays and a table (real MRML; no Slicer GUI needed).

The files are those of :mod:`VertebralFractureLib.io.radiograph_out`. Loading the same result
folder again updates the nodes of the previous load in place (found by their attributes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROLE_ATTRIBUTE = "VertebralFracture.Radiograph.Role"
KEY_ATTRIBUTE = "VertebralFracture.Radiograph.Key"
#: The table's attribute holding the analysis' warnings (set on a radiograph's table only).
WARNINGS_ATTRIBUTE = "VertebralFracture.Radiograph.Warnings"
#: Colour table of the Grad-CAM overlays.
CAM_COLOR_NODE = "vtkMRMLColorTableNodeRainbow"
#: Table columns: name, kind.
TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("Vertebra", "str"), ("Class", "str"), ("Status", "str"), ("P(normal)", "float"), ("P(old)", "float"),
    ("P(fresh)", "float"), ("Detection", "float"), ("Box (mm)", "str"),
)


@dataclass
class RadiographNodes:
    """IDs of the nodes showing a radiograph analysis."""

    image: str | None = None
    grad_cam: str | None = None
    fresh_cam: str | None = None
    table: str | None = None
    boxes: list[str] = field(default_factory=list)


def _find(scene: Any, key: str) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for k in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(k)
        if node.GetAttribute(KEY_ATTRIBUTE) == key and node.GetAttribute(ROLE_ATTRIBUTE):
            found.setdefault(node.GetAttribute(ROLE_ATTRIBUTE), []).append(node)
    return found


def _node(scene: Any, found: dict[str, list[Any]], role: str, class_name: str, name: str, key: str) -> Any:
    nodes = found.get(role) or []
    node = nodes.pop(0) if nodes else scene.AddNewNodeByClass(class_name, name)
    node.SetName(name)
    node.SetAttribute(ROLE_ATTRIBUTE, role)
    node.SetAttribute(KEY_ATTRIBUTE, key)
    return node


def _read_plane(path: Path) -> Any:
    """A one-slice volume written with the result (the CT reader refuses single slices)."""
    import SimpleITK as sitk

    from VertebralFractureLib.volume import Volume

    return Volume.from_sitk(sitk.ReadImage(str(path)))


def add_radiograph_to_scene(scene: Any, folder: str | Path, name_prefix: str | None = None) -> RadiographNodes:
    """Show the radiograph result in ``folder`` (written by ``vertebral-fracture radiograph``)."""
    from VertebralFractureLib.io.radiograph_out import (
        BOXES_DIR,
        CAM_NRRD,
        CLASS_COLORS,
        FRESH_CAM_NRRD,
        IMAGE_NRRD,
        RESULT_JSON,
        box_corners_lps,
        vertebra_label,
    )
    from VertebralFractureLib.slicer_scene import (
        ACCURACY_ATTRIBUTE,
        NAMING_ATTRIBUTE,
        remove_node,
        set_volume_data,
    )
    from VertebralFractureLib.volume import lps_to_ras

    folder = Path(folder)
    data = json.loads((folder / RESULT_JSON).read_text(encoding="utf-8"))
    prefix = name_prefix or folder.name
    key = str(folder.resolve())
    found = _find(scene, key)
    out = RadiographNodes()

    image = _node(scene, found, "image", "vtkMRMLScalarVolumeNode", f"{prefix} radiograph", key)
    set_volume_data(image, _read_plane(folder / IMAGE_NRRD))
    if image.GetDisplayNode() is None:
        image.CreateDefaultDisplayNodes()
    image.GetDisplayNode().SetAutoWindowLevel(True)
    out.image = image.GetID()

    for role, file, title in (("grad-cam", CAM_NRRD, "Grad-CAM (vertebrae)"),
                              ("fresh-cam", FRESH_CAM_NRRD, "Grad-CAM (fresh VCF)")):
        if not (folder / file).exists():
            for node in found.get(role, []):
                remove_node(scene, node)
            continue
        cam = _node(scene, found, role, "vtkMRMLScalarVolumeNode", f"{prefix} {title}", key)
        set_volume_data(cam, _read_plane(folder / file))
        if cam.GetDisplayNode() is None:
            cam.CreateDefaultDisplayNodes()
        display = cam.GetDisplayNode()
        color = scene.GetNodeByID(CAM_COLOR_NODE)
        if color is not None:
            display.SetAndObserveColorNodeID(color.GetID())
        display.SetAutoWindowLevel(False)
        display.SetWindowLevelMinMax(0.0, 1.0)
        display.SetApplyThreshold(True)
        display.SetLowerThreshold(0.05)
        if role == "grad-cam":
            out.grad_cam = cam.GetID()
        else:
            out.fresh_cam = cam.GetID()

    spacing = tuple(data["input"]["pixel_spacing_mm"])
    for v in data["vertebrae"]:
        curve = _node(scene, found, "box", "vtkMRMLMarkupsClosedCurveNode", f"{prefix} {vertebra_label(v)}", key)
        curve.RemoveAllControlPoints()
        for corner in box_corners_lps(v["box_px"], spacing):
            curve.AddControlPoint(*lps_to_ras(np.asarray(corner)))
        curve.SetCurveTypeToLinear()
        curve.SetLocked(True)
        if curve.GetDisplayNode() is None:
            curve.CreateDefaultDisplayNodes()
        d = curve.GetDisplayNode()
        color = CLASS_COLORS.get(v["class"], CLASS_COLORS[None])
        d.SetColor(*color)
        d.SetSelectedColor(*color)
        d.SetPointLabelsVisibility(False)
        curve.SetDescription(f"{v['name']}: {v['class'] or v['status']} (VertebralFracture, lateral radiograph; "
                             f"{BOXES_DIR}/{v['name']}.mrk.json)")
        out.boxes.append(curve.GetID())
    for node in found.get("box", []):  # boxes of vertebrae no longer found
        remove_node(scene, node)

    table = _node(scene, found, "table", "vtkMRMLTableNode", f"{prefix} radiograph vertebrae", key)
    fill_radiograph_table(table, data)
    table.SetAttribute("VertebralFracture.Radiograph.FreshVCF", f"{data['fresh_vcf_probability']:.4f}")
    fresh_v = data.get("fresh_vcf_probability_vertebrae")
    table.SetAttribute("VertebralFracture.Radiograph.FreshVCFVertebrae", "" if fresh_v is None else f"{fresh_v:.4f}")
    table.SetAttribute(WARNINGS_ATTRIBUTE, " | ".join(data.get("warnings", [])))
    accuracy = [w for w in data.get("warnings", []) if "synthetic radiographs" in w]
    table.SetAttribute(ACCURACY_ATTRIBUTE, accuracy[0] if accuracy else "")  # shown above the module's table
    naming = [w for w in data.get("warnings", []) if "not anchored" in w]
    table.SetAttribute(NAMING_ATTRIBUTE, naming[0] if naming else "")  # so is the names' caveat
    out.table = table.GetID()
    return out


def fill_radiograph_table(table: Any, data: dict[str, Any]) -> None:
    """A row per vertebra: name, class, status, the ensemble's probabilities, detection score, box."""
    import vtk

    nan = float("nan")
    was = table.StartModify()
    table.SetLocked(False)
    table.RemoveAllColumns()
    rows = []
    for v in data["vertebrae"]:
        e = v.get("ensemble") or {}
        rows.append([v["name"], v["class"] or "", v["status"], float(e.get("normal", nan)), float(e.get("old", nan)),
                     float(e.get("fresh", nan)),
                     nan if v["detection_score"] is None else float(v["detection_score"]),
                     " ".join(f"{c:.1f}" for c in v["box_mm"])])
    for k, (name, kind) in enumerate(TABLE_COLUMNS):
        array = vtk.vtkStringArray() if kind == "str" else vtk.vtkDoubleArray()
        array.SetName(name)
        array.SetNumberOfValues(len(rows))
        for r, row in enumerate(rows):
            array.SetValue(r, row[k])
        table.AddColumn(array)
    table.SetLocked(True)
    table.Modified()
    table.EndModify(was)


__all__ = ["CAM_COLOR_NODE", "KEY_ATTRIBUTE", "ROLE_ATTRIBUTE", "TABLE_COLUMNS", "WARNINGS_ATTRIBUTE", "RadiographNodes",
           "add_radiograph_to_scene", "fill_radiograph_table"]
