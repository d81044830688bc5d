"""Put an :class:`~VertebralFractureLib.analysis.Analysis` into a 3D Slicer MRML scene.

This is the only library module that imports ``slicer`` (lazily, inside functions) and it uses MRML
classes and module logics only, never ``qt``, ``ctk`` or the Slicer application, so it runs both
inside Slicer (with ``slicer.mrmlScene``) and headless with the ``slicer-core`` package (with a
scene the caller created and whose module logics it keeps alive).

What :func:`add_analysis_to_scene` builds, for the volume that was analysed:

* a segmentation node (reference geometry = the input volume) with one segment per vertebra, named
  "L1", label value = VerSe label, SNOMED CT terminology, red when fractured, bone white when
  normal, ochre when not assessable, and a closed-surface representation so that it shows in 3D;
* point lists of the vertebral body centroids ("L1", movable, so that a reader can correct them)
  and of the Genant keypoints ("L1 A_sup");
* optionally the three height lines of each graded vertebra ("L1 Ha", "L1 Hm", "L1 Hp") in a folder;
* a table node with a row per vertebra (what anchored its name, status and why it is not
  assessable, probability, heights, ratio, Genant grade and type, and the radiomics classifier's
  probability when it ran), carrying the analysis' accuracy statement and naming caveat as node
  attributes (:data:`ACCURACY_ATTRIBUTE`, :data:`NAMING_ATTRIBUTE`).

Correcting the centroids: :func:`shift_point_list_names` renames every point one level up or down
(:func:`shift_vertebra_names`), and :func:`write_point_list_centroids` writes the point list as the
centroid file of ``analyze --centroids`` (:func:`write_centroid_file`); the results of that run
replace the nodes' content in place.

Coordinates: the analysis is in LPS millimetres (ITK/DICOM), Slicer nodes in RAS; the conversion
negates x and y. Node positions are set in the input volume's local frame and the output nodes are
placed under the input volume's parent transform, so the results stay on the image when the image
is transformed.

Every node carries the attributes :data:`ROLE_ATTRIBUTE` and :data:`INPUT_ATTRIBUTE` (and a node
reference to the input volume), so that analysing the same volume again updates this module's own
nodes in place instead of adding duplicates.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from VertebralFractureLib import anatomy
from VertebralFractureLib.analysis import HEIGHT_NAMES, Analysis, VertebraResult
from VertebralFractureLib.anatomy import vertebra
from VertebralFractureLib.io.output import ANALYSIS_JSON, FRACTURE_NII, VERTEBRAE_NII
from VertebralFractureLib.io.slicer_files import (
    centroid_points,
    keypoint_points,
    segment_color,
    terminology_entry,
    write_markups_json,
)
from VertebralFractureLib.volume import Volume, lps_to_ras

logger = logging.getLogger(__name__)

#: Node attribute naming the part of an analysis a node holds (one of :data:`ROLES`).
ROLE_ATTRIBUTE = "VertebralFracture.Role"
#: Node attribute holding the ID of the analysed volume node ("" when there was none).
INPUT_ATTRIBUTE = "VertebralFracture.InputVolumeID"
#: Node attribute holding the name prefix of the analysis (identifies results without an input node).
PREFIX_ATTRIBUTE = "VertebralFracture.NamePrefix"
#: Node attribute holding where the analysis files are (the CLI output folder), when known.
SOURCE_ATTRIBUTE = "VertebralFracture.Source"
#: Node reference role from every output node to the analysed volume (kept valid by MRML on ID changes).
INPUT_REFERENCE_ROLE = "VertebralFractureInputVolume"
#: Table node attribute: the analysis' statement of the models' accuracy (see :func:`accuracy_note`).
ACCURACY_ATTRIBUTE = "VertebralFracture.Accuracy"
#: Table node attribute: which level names are not anchored to a landmark (see :func:`naming_note`).
NAMING_ATTRIBUTE = "VertebralFracture.Naming"

ROLE_SEGMENTATION = "segmentation"
ROLE_CENTROIDS = "centroids"
ROLE_KEYPOINTS = "keypoints"
ROLE_HEIGHT_LINE = "height-line"
ROLE_HEIGHT_LINES_FOLDER = "height-lines"
ROLE_TABLE = "table"
ROLES: tuple[str, ...] = (ROLE_SEGMENTATION, ROLE_CENTROIDS, ROLE_KEYPOINTS, ROLE_HEIGHT_LINE, ROLE_TABLE)

#: Short height names used for the height lines: anterior, middle, posterior.
HEIGHT_LINE_NAMES: dict[str, str] = {"anterior": "Ha", "middle": "Hm", "posterior": "Hp"}
_HEIGHT_KEYPOINTS: dict[str, tuple[str, str]] = {
    "anterior": ("A_sup", "A_inf"), "middle": ("M_sup", "M_inf"), "posterior": ("P_sup", "P_inf"),
}

#: Colours of the point lists (RGB 0..1): centroids light blue, keypoints yellow (as in the .mrk.json files).
CENTROIDS_COLOR: tuple[float, float, float] = (0.2, 0.8, 1.0)
KEYPOINTS_COLOR: tuple[float, float, float] = (1.0, 0.85, 0.2)
#: Colour of the height lines of a normal vertebra (green); the others take their vertebra's colour.
NORMAL_LINE_COLOR: tuple[float, float, float] = (0.3, 0.85, 0.3)
#: Colour of a vertebra that is not assessable (muted ochre: neither the fracture red nor bone white).
NOT_ASSESSABLE_COLOR: tuple[float, float, float] = anatomy.NOT_ASSESSABLE_COLOR
#: Status of a vertebra without a call (``VertebraResult.status``).
NOT_ASSESSABLE = "not assessable"
#: Table text of a vertebra whose level name no landmark fixed (``naming.anchor`` None).
NOT_ANCHORED = "not anchored"
#: Warnings of an analysis that state the models' accuracy start with this.
ACCURACY_PREFIX = "accuracy:"

#: Table columns: (name, kind, unit, description); kind is "str", "int" or "float".
TABLE_COLUMNS: tuple[tuple[str, str, str, str], ...] = (
    ("Vertebra", "str", "", "Vertebra name (C1–C7, T1–T13, L1–L6)"),
    ("Name anchor", "str", "",
     "What fixed the level name: C2, first rib, last rib, sacrum, or given (centroids placed by the reader); "
     "'not anchored': counted from the vertebrae's appearance alone, may be off by one or more levels"),
    ("Name confidence", "float", "", "Confidence of the level name (0–1)"),
    ("Label", "int", "", "VerSe label value (also the segment's label value)"),
    ("Complete", "str", "", "'yes', or 'cut' when the field of view cuts the vertebra (then not graded)"),
    ("Status", "str", "",
     "normal / fractured / not assessable (no call, no grade); empty when the fracture stage did not run"),
    ("Status reason", "str", "", "Why a vertebra is not assessable"),
    ("Fracture probability", "float", "", "Mean fractured-class probability inside the vertebra"),
    ("Anterior height", "float", "mm", "Ha: distance between the anterior keypoints"),
    ("Middle height", "float", "mm", "Hm: distance between the middle keypoints"),
    ("Posterior height", "float", "mm", "Hp: distance between the posterior keypoints"),
    ("Height ratio", "float", "", "Genant: reduced height / reference height (1 = no reduction)"),
    ("Genant grade", "str", "", "0 normal, 1 mild (20–25 %), 2 moderate (25–40 %), 3 severe (> 40 %)"),
    ("Genant type", "str", "", "wedge / biconcave / crush (empty for grade 0)"),
    ("G min/max", "float", "", "Seed score G = min(Ha, Hm, Hp) / max(Ha, Hm, Hp)"),
    ("Radiomics fracture probability", "float", "",
     "P(fractured) of the radiomics classifier (seed 001; empty when not run)"),
    ("Slice fracture probability", "float", "",
     "P(fractured) of the slice classifier on the mid-sagittal and mid-axial slices (seed 000; empty when not run)"),
)


@dataclass
class SceneNodes:
    """IDs of the nodes :func:`add_analysis_to_scene` created or updated.

    Attributes:
        segmentation: the segmentation node, or None when the analysis has no labelmap.
        centroids: the centroid point list.
        keypoints: the keypoint point list, or None when no vertebra has keypoints.
        height_lines: the line nodes of the heights (three per graded vertebra).
        height_lines_folder: subject hierarchy item of the folder holding the height lines (0 if none).
        table: the results table.
    """

    segmentation: str | None = None
    centroids: str | None = None
    keypoints: str | None = None
    height_lines: list[str] = field(default_factory=list)
    height_lines_folder: int = 0
    table: str | None = None

    def node_ids(self) -> list[str]:
        """Every node ID, in a stable order."""
        ids = [self.segmentation, self.centroids, self.keypoints, *self.height_lines, self.table]
        return [i for i in ids if i]


# ---------------------------------------------------------------------------------------- geometry
def ijk_to_ras_matrix(volume: Volume) -> np.ndarray:
    """The 4×4 IJK→RAS matrix of a volume (Slicer's convention for volume nodes)."""
    a = volume.affine_lps.copy()
    a[0, :] *= -1.0
    a[1, :] *= -1.0
    return a


def _vtk_matrix(array: np.ndarray) -> Any:
    import vtk

    m = vtk.vtkMatrix4x4()
    for i in range(4):
        for j in range(4):
            m.SetElement(i, j, float(array[i, j]))
    return m


def _numpy_matrix(matrix: Any) -> np.ndarray:
    return np.array([[matrix.GetElement(i, j) for j in range(4)] for i in range(4)], dtype=float)


def add_volume_node(scene: Any, volume: Volume, name: str, labelmap: bool = False) -> Any:
    """Add a scalar (or labelmap) volume node holding ``volume`` with its exact geometry.

    Args:
        scene: the MRML scene.
        volume: the image (array z, y, x; LPS geometry).
        name: the node name.
        labelmap: create a ``vtkMRMLLabelMapVolumeNode`` instead of a scalar volume.

    Returns:
        The new node (with default display nodes).
    """
    class_name = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    node = scene.AddNewNodeByClass(class_name, name)
    set_volume_data(node, volume)
    node.CreateDefaultDisplayNodes()
    return node


def set_volume_data(node: Any, volume: Volume) -> None:
    """Put ``volume`` (array and exact geometry) into an existing volume node, in place."""
    import vtk
    from vtk.util import numpy_support

    array = np.ascontiguousarray(volume.array)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    image = vtk.vtkImageData()
    image.SetDimensions(*volume.shape_xyz)
    scalars = numpy_support.numpy_to_vtk(array.reshape(-1), deep=True)
    image.GetPointData().SetScalars(scalars)
    node.SetIJKToRASMatrix(_vtk_matrix(ijk_to_ras_matrix(volume)))
    node.SetAndObserveImageData(image)


def volume_from_node(volume_node: Any, copy_array: bool = True) -> Volume:
    """The :class:`Volume` (LPS geometry) of a volume node.

    Args:
        volume_node: a ``vtkMRMLScalarVolumeNode`` (or labelmap) with image data.
        copy_array: copy the voxels; when False the array is a read-only broadcast of zeros of the
            right shape (enough to compare or reuse the geometry without the memory).

    Raises:
        ValueError: when the node has no image data or is not a scalar 3D image.
    """
    from vtk.util import numpy_support

    image = volume_node.GetImageData() if volume_node is not None else None
    if image is None:
        raise ValueError(f"volume node {getattr(volume_node, 'GetName', lambda: None)()!r} has no image data")
    if image.GetNumberOfScalarComponents() != 1:
        raise ValueError(f"volume node {volume_node.GetName()!r} is not a scalar image "
                         f"({image.GetNumberOfScalarComponents()} components)")
    nx, ny, nz = image.GetDimensions()
    import vtk

    m = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(m)
    a = _numpy_matrix(m)
    a[0, :] *= -1.0  # RAS → LPS
    a[1, :] *= -1.0
    spacing = np.linalg.norm(a[:3, :3], axis=0)
    direction = a[:3, :3] / spacing[None, :]
    if copy_array:
        array = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(nz, ny, nx).copy()
    else:
        array = np.broadcast_to(np.zeros((), dtype=np.uint8), (nz, ny, nx))
    return Volume(array, tuple(spacing), tuple(a[:3, 3]), direction)


# ---------------------------------------------------------------------------------------- finding own nodes
def _analysis_key(reference_volume_node: Any, name_prefix: str | None) -> tuple[str, str]:
    volume_id = reference_volume_node.GetID() if reference_volume_node is not None else ""
    if name_prefix is None:
        name_prefix = reference_volume_node.GetName() if reference_volume_node is not None else "VertebralFracture"
    return volume_id, name_prefix


def _belongs(node: Any, volume_id: str, prefix: str) -> bool:
    if node.GetAttribute(ROLE_ATTRIBUTE) is None:
        return False
    if volume_id:
        ref = node.GetNodeReferenceID(INPUT_REFERENCE_ROLE)
        return (ref or node.GetAttribute(INPUT_ATTRIBUTE)) == volume_id
    return not node.GetAttribute(INPUT_ATTRIBUTE) and node.GetAttribute(PREFIX_ATTRIBUTE) == prefix


def find_analysis_nodes(
    scene: Any, reference_volume_node: Any = None, name_prefix: str | None = None
) -> dict[str, list[Any]]:
    """This module's nodes that hold results for a volume (or, without a volume, for a name prefix).

    Returns:
        role → nodes (roles without nodes are absent); see :data:`ROLES`.
    """
    volume_id, prefix = _analysis_key(reference_volume_node, name_prefix)
    found: dict[str, list[Any]] = {}
    nodes = scene.GetNodes()
    for i in range(nodes.GetNumberOfItems()):
        node = nodes.GetItemAsObject(i)
        if _belongs(node, volume_id, prefix):
            found.setdefault(node.GetAttribute(ROLE_ATTRIBUTE), []).append(node)
    return found


def remove_analysis_nodes(scene: Any, reference_volume_node: Any = None, name_prefix: str | None = None) -> int:
    """Remove this module's result nodes (and the height-lines folder) of a volume; returns the count."""
    found = find_analysis_nodes(scene, reference_volume_node, name_prefix)
    count = 0
    for nodes in found.values():
        for node in nodes:
            remove_node(scene, node)
            count += 1
    folder = _find_height_lines_folder(scene, reference_volume_node, name_prefix)
    if folder:
        _sh(scene).RemoveItem(folder, False, False)
    return count


def remove_node(scene: Any, node: Any) -> None:
    """Remove a node with its display and storage nodes (``RemoveNode`` alone leaves them behind)."""
    helpers = []
    if node.IsA("vtkMRMLDisplayableNode"):
        helpers += [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
    if node.IsA("vtkMRMLStorableNode"):
        helpers += [node.GetNthStorageNode(i) for i in range(node.GetNumberOfStorageNodes())]
    scene.RemoveNode(node)
    for helper in helpers:
        if helper is not None and helper.GetScene() is scene:
            scene.RemoveNode(helper)


def _tag(node: Any, role: str, volume_node: Any, volume_id: str, prefix: str, source: str | None) -> None:
    node.SetAttribute(ROLE_ATTRIBUTE, role)
    node.SetAttribute(INPUT_ATTRIBUTE, volume_id)
    node.SetAttribute(PREFIX_ATTRIBUTE, prefix)
    if source is not None:
        node.SetAttribute(SOURCE_ATTRIBUTE, str(source))
    if volume_node is not None:
        node.SetNodeReferenceID(INPUT_REFERENCE_ROLE, volume_id)


def _reuse_or_add(scene: Any, found: dict[str, list[Any]], role: str, class_name: str, name: str) -> Any:
    """The first existing node of the role (extra duplicates are removed), else a new node."""
    existing = [n for n in found.get(role, []) if n.IsA(class_name)]
    for extra in existing[1:]:
        remove_node(scene, extra)
    for wrong_class in [n for n in found.get(role, []) if not n.IsA(class_name)]:
        remove_node(scene, wrong_class)
    node = existing[0] if existing else scene.AddNewNodeByClass(class_name, name)
    node.SetName(name)
    return node


# ---------------------------------------------------------------------------------------- subject hierarchy
def _sh(scene: Any) -> Any:
    import slicer

    return slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)


def _output_parent_item(scene: Any, reference_volume_node: Any) -> int:
    """The input's study when it is in one, else the input's own parent, else the scene."""
    import slicer

    sh = _sh(scene)
    if reference_volume_node is None:
        return sh.GetSceneItemID()
    item = sh.GetItemByDataNode(reference_volume_node)
    if not item:
        return sh.GetSceneItemID()
    study = sh.GetItemAncestorAtLevel(item, slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMLevelStudy())
    if study:
        return study
    parent = sh.GetItemParent(item)
    return parent or sh.GetSceneItemID()


def _place(scene: Any, node: Any, parent_item: int) -> None:
    sh = _sh(scene)
    item = sh.GetItemByDataNode(node)
    if not item:
        item = sh.CreateItem(parent_item, node)
    else:
        sh.SetItemParent(item, parent_item)


def _find_height_lines_folder(scene: Any, reference_volume_node: Any, name_prefix: str | None) -> int:
    volume_id, prefix = _analysis_key(reference_volume_node, name_prefix)
    sh = _sh(scene)
    from vtk import vtkIdList

    items = vtkIdList()
    sh.GetItemChildren(sh.GetSceneItemID(), items, True)
    for i in range(items.GetNumberOfIds()):
        item = items.GetId(i)
        if (sh.GetItemAttribute(item, ROLE_ATTRIBUTE) == ROLE_HEIGHT_LINES_FOLDER
                and sh.GetItemAttribute(item, INPUT_ATTRIBUTE) == volume_id
                and (volume_id or sh.GetItemAttribute(item, PREFIX_ATTRIBUTE) == prefix)):
            return item
    return 0


# ---------------------------------------------------------------------------------------- the scene
def add_analysis_to_scene(
    scene: Any,
    analysis: Analysis,
    reference_volume_node: Any = None,
    name_prefix: str | None = None,
    *,
    height_lines: bool = True,
    closed_surface: bool = True,
    source: str | None = None,
) -> SceneNodes:
    """Show an analysis in a scene: segmentation, centroid and keypoint markups, height lines, table.

    Running it again for the same input volume (or, without one, the same ``name_prefix``) updates
    the nodes of the previous run in place: node counts stay the same.

    Args:
        scene: the MRML scene (``slicer.mrmlScene`` in Slicer).
        analysis: the results; its ``labelmap`` (VerSe labels, input geometry) becomes the
            segmentation, when present.
        reference_volume_node: the analysed volume node: reference geometry of the segmentation,
            parent transform and subject-hierarchy placement of the outputs. Optional.
        name_prefix: first word of the output node names; default: the volume's name.
        height_lines: add the anterior/middle/posterior height lines of each graded vertebra.
        closed_surface: create the closed-surface representation so the segments show in 3D
            (needs the Segmentations module logic alive).
        source: where the analysis files are (stored as a node attribute, e.g. for export).

    Returns:
        The IDs of the nodes holding the results.

    Raises:
        ValueError: when the analysis's labelmap holds a label that is not one of its vertebrae's.
    """
    volume_id, prefix = _analysis_key(reference_volume_node, name_prefix)
    found = find_analysis_nodes(scene, reference_volume_node, name_prefix)
    parent_item = _output_parent_item(scene, reference_volume_node)
    transform_id = reference_volume_node.GetTransformNodeID() if reference_volume_node is not None else None
    out = SceneNodes()

    def finish(node: Any, role: str) -> None:
        _tag(node, role, reference_volume_node, volume_id, prefix, source)
        if node.IsA("vtkMRMLTransformableNode"):
            node.SetAndObserveTransformNodeID(transform_id)
        _place(scene, node, parent_item)

    # segmentation
    if analysis.labelmap is not None:
        seg = _reuse_or_add(scene, found, ROLE_SEGMENTATION, "vtkMRMLSegmentationNode", f"{prefix} vertebrae")
        _fill_segmentation(scene, seg, analysis, reference_volume_node, closed_surface)
        finish(seg, ROLE_SEGMENTATION)
        out.segmentation = seg.GetID()
    else:
        for node in found.get(ROLE_SEGMENTATION, []):
            remove_node(scene, node)

    # centroids
    centroids = _reuse_or_add(scene, found, ROLE_CENTROIDS, "vtkMRMLMarkupsFiducialNode", f"{prefix} centroids")
    _fill_points(centroids, centroid_points(analysis), CENTROIDS_COLOR,
                 "Vertebral body centroids (VertebralFracture); move or rename points to correct them",
                 glyph_scale=2.0, locked=False)
    finish(centroids, ROLE_CENTROIDS)
    out.centroids = centroids.GetID()

    # keypoints
    kp = keypoint_points(analysis)
    if kp:
        keypoints = _reuse_or_add(scene, found, ROLE_KEYPOINTS, "vtkMRMLMarkupsFiducialNode", f"{prefix} keypoints")
        _fill_points(keypoints, kp, KEYPOINTS_COLOR,
                     "Genant endplate keypoints on each vertebra's mid-sagittal plane (VertebralFracture)",
                     glyph_scale=1.0, labels_visible=False)
        finish(keypoints, ROLE_KEYPOINTS)
        out.keypoints = keypoints.GetID()
    else:
        for node in found.get(ROLE_KEYPOINTS, []):
            remove_node(scene, node)

    # height lines (recreated: their number follows the graded vertebrae)
    for node in found.get(ROLE_HEIGHT_LINE, []):
        remove_node(scene, node)
    folder = _find_height_lines_folder(scene, reference_volume_node, name_prefix)
    graded = [v for v in analysis.vertebrae if v.keypoints_lps_mm is not None]
    if height_lines and graded:
        sh = _sh(scene)
        if not folder:
            folder = sh.CreateFolderItem(parent_item, f"{prefix} Genant heights")
            sh.SetItemAttribute(folder, ROLE_ATTRIBUTE, ROLE_HEIGHT_LINES_FOLDER)
            sh.SetItemAttribute(folder, INPUT_ATTRIBUTE, volume_id)
            sh.SetItemAttribute(folder, PREFIX_ATTRIBUTE, prefix)
        else:
            sh.SetItemParent(folder, parent_item)
            sh.SetItemName(folder, f"{prefix} Genant heights")
        for v in graded:
            for height in HEIGHT_NAMES:
                line = _add_height_line(scene, v, height)
                _tag(line, ROLE_HEIGHT_LINE, reference_volume_node, volume_id, prefix, source)
                line.SetAndObserveTransformNodeID(transform_id)
                _place(scene, line, folder)
                out.height_lines.append(line.GetID())
        out.height_lines_folder = folder
    elif folder:
        _sh(scene).RemoveItem(folder, False, False)

    # table
    table = _reuse_or_add(scene, found, ROLE_TABLE, "vtkMRMLTableNode", f"{prefix} vertebral fractures")
    fill_table(table, analysis)
    table.SetAttribute(ACCURACY_ATTRIBUTE, accuracy_note(analysis.warnings) or "")
    table.SetAttribute(NAMING_ATTRIBUTE, naming_note(analysis) or "")
    finish(table, ROLE_TABLE)
    out.table = table.GetID()
    return out


def vertebra_color(v: VertebraResult | None) -> tuple[float, float, float]:
    """Display colour of a vertebra: red when fractured, ochre when not assessable, else bone white."""
    return segment_color(v)


def _fill_segmentation(scene: Any, seg: Any, analysis: Analysis, reference_volume_node: Any, closed_surface: bool) -> None:
    import slicer

    labelmap = analysis.labelmap
    if labelmap is None:  # pragma: no cover - checked by the caller
        raise ValueError("the analysis has no labelmap")
    results = {v.label: v for v in analysis.vertebrae}
    present = [int(x) for x in np.unique(labelmap.array) if x != 0]
    unknown = sorted(set(present) - set(results))
    if unknown:
        raise ValueError(f"the labelmap holds labels {unknown} that are not vertebrae of the analysis "
                         f"({sorted(results)})")
    segmentation = seg.GetSegmentation()
    segmentation.RemoveAllSegments()
    if reference_volume_node is not None:
        seg.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume_node)
    temp = add_volume_node(scene, labelmap, "__VertebralFracture_labelmap", labelmap=True)
    try:
        if reference_volume_node is None:
            seg.SetReferenceImageGeometryParameterFromVolumeNode(temp)
        if present and not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(temp, seg):
            raise RuntimeError("Slicer could not import the vertebra labelmap into a segmentation")
    finally:
        remove_node(scene, temp)
    by_label = {}
    for i in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(i)
        by_label[segmentation.GetSegment(segment_id).GetLabelValue()] = segment_id
    tag_name = slicer.vtkSegment.GetTerminologyEntryTagName()
    index = 0
    for v in analysis.vertebrae:  # cranial → caudal
        segment_id = by_label.get(v.label)
        if segment_id is None:
            continue
        segment = segmentation.GetSegment(segment_id)
        segment.SetName(v.name)
        segment.SetNameAutoGenerated(False)
        segment.SetColor(*vertebra_color(v))
        segment.SetColorAutoGenerated(False)
        segment.SetLabelValue(v.label)
        segment.SetTag(tag_name, terminology_entry(v.label))
        segment.SetTag("VertebralFracture.Status", v.status or "")
        segment.SetTag("VertebralFracture.GenantGrade", "" if v.genant is None else str(int(v.genant.grade)))
        segmentation.SetSegmentIndex(segment_id, index)
        index += 1
    seg.CreateDefaultDisplayNodes()
    display = seg.GetDisplayNode()
    display.SetVisibility(True)
    display.SetVisibility3D(True)
    display.SetOpacity2DFill(0.35)
    if closed_surface and segmentation.GetNumberOfSegments():
        if not seg.CreateClosedSurfaceRepresentation():
            logger.warning("closed-surface representation could not be created (is the Segmentations logic alive?)")


def _fill_points(
    node: Any,
    points: Sequence[tuple],
    color: tuple[float, float, float],
    description: str,
    glyph_scale: float,
    labels_visible: bool = True,
    locked: bool = True,
) -> None:
    import vtk

    was_modifying = node.StartModify()
    node.RemoveAllControlPoints()
    for item in points:
        label, lps = item[0], item[1]
        ras = lps_to_ras(lps)
        index = node.AddControlPoint(vtk.vtkVector3d(*ras), str(label))
        if len(item) > 2 and item[2]:
            node.SetNthControlPointDescription(index, str(item[2]))
    node.SetDescription(description)
    node.SetLocked(locked)
    node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    display.SetSelectedColor(*color)
    display.SetColor(*color)
    display.SetGlyphScale(glyph_scale)
    display.SetTextScale(2.5 if labels_visible else 0.0)
    display.SetPointLabelsVisibility(labels_visible)
    node.EndModify(was_modifying)


def _add_height_line(scene: Any, v: VertebraResult, height: str) -> Any:
    import vtk

    if v.keypoints_lps_mm is None:  # pragma: no cover - filtered by the caller
        raise ValueError(f"{v.name} has no keypoints")
    sup, inf = _HEIGHT_KEYPOINTS[height]
    line = scene.AddNewNodeByClass("vtkMRMLMarkupsLineNode", f"{v.name} {HEIGHT_LINE_NAMES[height]}")
    line.AddControlPoint(vtk.vtkVector3d(*lps_to_ras(v.keypoints_lps_mm[sup])), f"{v.name} {sup}")
    line.AddControlPoint(vtk.vtkVector3d(*lps_to_ras(v.keypoints_lps_mm[inf])), f"{v.name} {inf}")
    line.SetDescription(f"{v.name} {height} height (Genant)")
    line.SetLocked(True)
    line.CreateDefaultDisplayNodes()
    display = line.GetDisplayNode()
    color = NORMAL_LINE_COLOR if v.status not in ("fractured", NOT_ASSESSABLE) else vertebra_color(v)
    display.SetSelectedColor(*color)
    display.SetColor(*color)
    display.SetPropertiesLabelVisibility(False)
    display.SetPointLabelsVisibility(False)
    display.SetGlyphScale(1.0)
    return line


def table_rows(analysis: Analysis) -> list[list[Any]]:
    """The table's rows (values in :data:`TABLE_COLUMNS` order; NaN / "" for missing values)."""
    nan = float("nan")
    rows = []
    for v in analysis.vertebrae:
        h = v.heights_mm or {}
        g = v.genant
        naming = getattr(v, "naming", None)
        anchor = "" if not naming else (naming.get("anchor") or NOT_ANCHORED)
        confidence = naming.get("confidence") if naming else None
        rows.append([
            v.name,
            anchor,
            nan if confidence is None else float(confidence),
            int(v.label),
            "yes" if v.complete else "cut",
            v.status or "",
            (getattr(v, "status_reason", None) or "") if v.status == NOT_ASSESSABLE else "",
            nan if v.fracture_probability is None else float(v.fracture_probability),
            float(h.get("anterior", nan)),
            float(h.get("middle", nan)),
            float(h.get("posterior", nan)),
            nan if g is None else float(g.ratio),
            "" if g is None else str(int(g.grade)),
            "" if g is None or g.type is None else g.type,
            nan if g is None or g.seed_ratio is None else float(g.seed_ratio),
            nan if v.radiomics_fracture_probability is None else float(v.radiomics_fracture_probability),
            nan if getattr(v, "slice_fracture_probability", None) is None else float(v.slice_fracture_probability),
        ])
    return rows


def fill_table(table: Any, analysis: Analysis) -> None:
    """(Re)fill a ``vtkMRMLTableNode`` with a row per vertebra, cranial to caudal."""
    import vtk

    was_modifying = table.StartModify()
    table.SetLocked(False)
    table.RemoveAllColumns()
    rows = table_rows(analysis)
    for k, (name, kind, unit, description) in enumerate(TABLE_COLUMNS):
        array = {"str": vtk.vtkStringArray, "int": vtk.vtkIntArray, "float": vtk.vtkDoubleArray}[kind]()
        array.SetName(name)
        array.SetNumberOfValues(len(rows))
        for r, row in enumerate(rows):
            array.SetValue(r, row[k])
        table.AddColumn(array)
        if unit:
            table.SetColumnUnitLabel(name, unit)
        table.SetColumnDescription(name, description)
    if hasattr(table, "SetUseColumnTitleAsColumnHeader"):  # Slicer ≥ 5.7
        for name, *_ in TABLE_COLUMNS:
            table.SetColumnTitle(name, name)
        table.SetUseColumnTitleAsColumnHeader(True)
    else:  # pragma: no cover - older Slicer
        table.SetUseColumnNameAsColumnHeader(True)
    table.SetLocked(True)
    table.Modified()
    table.EndModify(was_modifying)


# ---------------------------------------------------------------------------------------- notes for the reader
def accuracy_note(warnings: Sequence[str]) -> str | None:
    """The analysis' statement of the models' accuracy, as plain sentences for the panel.

    The analysis states it in its warnings, in lines starting with ``"accuracy:"``.

    Returns:
        Those lines without the prefix, each a sentence (capitalised, ending with a full stop),
        joined by a space; None when there is none.
    """
    sentences = []
    for warning in warnings:
        text = str(warning).strip()
        if not text.lower().startswith(ACCURACY_PREFIX):
            continue
        text = text[len(ACCURACY_PREFIX):].strip()
        if text:
            sentences.append(text[0].upper() + text[1:] + ("" if text.endswith((".", "!", "?")) else "."))
    return " ".join(sentences) or None


def other_warnings(warnings: Sequence[str]) -> list[str]:
    """The warnings that are not accuracy statements (those go to :func:`accuracy_note`)."""
    return [str(w) for w in warnings if not str(w).strip().lower().startswith(ACCURACY_PREFIX)]


def naming_note(analysis: Analysis) -> str | None:
    """A sentence naming the vertebrae whose level name no landmark fixed, or None when all are anchored.

    Vertebrae without naming information (an older analysis, or a given segmentation) are not counted.
    """
    positions = [k for k, v in enumerate(analysis.vertebrae)
                 if getattr(v, "naming", None) is not None and v.naming.get("anchor") is None]
    if not positions:
        return None
    loose = [analysis.vertebrae[k].name for k in positions]
    if len(loose) == 1:
        which = loose[0]
    elif positions == list(range(positions[0], positions[-1] + 1)):  # a run of neighbours
        which = f"{loose[0]}–{loose[-1]}"
    else:
        which = ", ".join(loose)
    names, verb = ("name", "is") if len(loose) == 1 else ("names", "are")
    return (f"The level {names} of {which} {verb} not anchored to a landmark (C2, first or last rib, sacrum) "
            f"and may be off by one or more levels.")


# ---------------------------------------------------------------------------------------- correcting the centroids
def vertebra_levels(include_t13: bool = False) -> list[str]:
    """The vertebra names from cranial to caudal: C1–C7, T1–T12, T13 when asked for, L1–L6."""
    names = [v.name for v in sorted(anatomy.VERTEBRAE.values(), key=lambda v: v.order)]
    return names if include_t13 else [n for n in names if n != "T13"]


def _canonical_name(name: str, what: str) -> str:
    try:
        return vertebra(str(name)).name
    except KeyError as err:
        raise ValueError(f"{what} is named {name!r}, not after a vertebra (C1–C7, T1–T13, L1–L6): "
                         "rename or delete it") from err


def shift_vertebra_names(names: Sequence[str], step: int) -> list[str]:
    """Rename every vertebra one level up (``step`` -1, cranial: L1 → T12) or down (+1, caudal: L1 → L2).

    The levels are C1–C7, T1–T12, L1–L6, with T13 between T12 and L1 only when one of ``names`` is
    T13 (a thirteenth thoracic vertebra stays in the count; without it T12 and L1 are neighbours).
    L6, a sixth lumbar vertebra, is the last level.

    Args:
        names: vertebra names ("L1"; case and surrounding spaces do not matter).
        step: -1 (one level up) or +1 (one level down).

    Returns:
        The new names, in the order of ``names``.

    Raises:
        ValueError: for a step other than ±1, a name that is not a vertebra, or a shift past the end of
            the spine (C1 up, L6 down).
    """
    if step not in (-1, 1) or isinstance(step, bool):
        raise ValueError(f"names move one level at a time: step must be -1 (up) or +1 (down), got {step!r}")
    canonical = [_canonical_name(n, f"point {k + 1}") for k, n in enumerate(names)]
    levels = vertebra_levels(include_t13="T13" in canonical)
    out = []
    for name in canonical:
        k = levels.index(name) + step
        if k < 0:
            raise ValueError(f"{name} is the first vertebra: the names cannot move one level up")
        if k >= len(levels):
            raise ValueError(f"{name} is the last vertebra named here (a sixth lumbar vertebra): "
                             "the names cannot move one level down")
        out.append(levels[k])
    return out


def write_centroid_file(path: str | Path, points: Sequence[tuple[str, Sequence[float]]]) -> Path:
    """Write vertebra centroids as the point list ``analyze --centroids`` reads (``.mrk.json``, LPS mm).

    Args:
        path: the file to write; its name must end with ``.mrk.json``.
        points: ``(vertebra name, (x, y, z) LPS mm)`` per vertebra.

    Returns:
        The file written.

    Raises:
        ValueError: no point, a point not named after a vertebra, a vertebra named twice, or
            coordinates that are not 3 finite numbers, or a path not ending with ``.mrk.json``.
    """
    p = Path(path)
    if not p.name.lower().endswith(".mrk.json"):
        raise ValueError(f"a centroid point list is a .mrk.json file, got {p.name!r}")
    if not points:
        raise ValueError("the point list has no placed point: there is no centroid to segment around")
    rows: list[tuple[str, tuple[float, float, float]]] = []
    seen: dict[str, int] = {}
    for k, (name, position) in enumerate(points):
        label = _canonical_name(name, f"point {k + 1}")
        xyz = np.asarray(position, dtype=float)
        if xyz.shape != (3,) or not np.all(np.isfinite(xyz)):
            raise ValueError(f"point {k + 1} ({label}) needs 3 finite coordinates, got {position!r}")
        if label in seen:
            raise ValueError(f"{label} is named twice (points {seen[label] + 1} and {k + 1}): "
                             "each vertebra needs exactly one centroid")
        seen[label] = k
        rows.append((label, (float(xyz[0]), float(xyz[1]), float(xyz[2]))))
    rows.sort(key=lambda row: vertebra(row[0]).order)
    write_markups_json(p, rows, "Vertebra centroids", description="Vertebral body centroids (LPS mm), corrected",
                       color=CENTROIDS_COLOR)
    return p


def point_list_centroids(markups_node: Any, reference_volume_node: Any = None) -> list[tuple[str, tuple[float, float, float]]]:
    """``(label, LPS position)`` of every placed point of a point list, in the analysed volume's frame.

    Positions are given in the volume's own (untransformed) frame, the frame of the volume file the
    analysis reads, whatever transforms the volume and the point list are under. Points that are not
    placed (``PositionDefined``) are skipped; labels are returned as they are.

    Args:
        markups_node: a ``vtkMRMLMarkupsFiducialNode`` (e.g. the centroids of an analysis).
        reference_volume_node: the analysed volume; default: the node's :data:`INPUT_REFERENCE_ROLE`
            reference; without either, world coordinates.
    """
    import vtk

    if reference_volume_node is None:
        reference_volume_node = markups_node.GetNodeReference(INPUT_REFERENCE_ROLE)
    same_frame = reference_volume_node is not None and (
        reference_volume_node.GetTransformNodeID() == markups_node.GetTransformNodeID())
    from_world = None
    volume_transform = reference_volume_node.GetParentTransformNode() if reference_volume_node is not None else None
    if not same_frame and volume_transform is not None:
        from_world = vtk.vtkGeneralTransform()
        volume_transform.GetTransformFromWorld(from_world)
    defined = markups_node.PositionDefined
    out = []
    for i in range(markups_node.GetNumberOfControlPoints()):
        if markups_node.GetNthControlPointPositionStatus(i) != defined:
            continue
        if same_frame:
            ras = list(markups_node.GetNthControlPointPosition(i))
        else:
            ras = list(markups_node.GetNthControlPointPositionWorld(i))
            if from_world is not None:
                ras = list(from_world.TransformPoint(ras))
        lps = (-float(ras[0]), -float(ras[1]), float(ras[2]))
        out.append((markups_node.GetNthControlPointLabel(i), lps))
    return out


def write_point_list_centroids(markups_node: Any, path: str | Path, reference_volume_node: Any = None) -> Path:
    """Write a point list (points named after vertebrae) as the centroid file of ``analyze --centroids``.

    See :func:`point_list_centroids` for the frame and :func:`write_centroid_file` for the checks.

    Raises:
        ValueError: as :func:`write_centroid_file`, naming the point list.
    """
    points = point_list_centroids(markups_node, reference_volume_node)
    try:
        return write_centroid_file(path, points)
    except ValueError as err:
        raise ValueError(f"{markups_node.GetName()}: {err}") from err


def shift_point_list_names(markups_node: Any, step: int) -> list[str]:
    """Rename every point of a point list one level up (-1) or down (+1); see :func:`shift_vertebra_names`.

    Nothing changes when the shift is refused.

    Returns:
        The new labels, in point order.

    Raises:
        ValueError: as :func:`shift_vertebra_names`, naming the point list.
    """
    count = markups_node.GetNumberOfControlPoints()
    labels = [markups_node.GetNthControlPointLabel(i) for i in range(count)]
    try:
        shifted = shift_vertebra_names(labels, step)
    except ValueError as err:
        raise ValueError(f"{markups_node.GetName()}: {err}") from err
    was_modifying = markups_node.StartModify()
    for i, label in enumerate(shifted):
        markups_node.SetNthControlPointLabel(i, label)
    markups_node.EndModify(was_modifying)
    return shifted


# ---------------------------------------------------------------------------------------- reading results
#: Contract files (ARCHITECTURE §3) the scene is built from.
ANALYSIS_FILE = ANALYSIS_JSON
LABELMAP_FILE = VERTEBRAE_NII
FRACTURE_FILE = FRACTURE_NII


def load_analysis(folder: str | Path, reference: Volume | None = None) -> Analysis:
    """Read an ``analyze``/``grade`` output folder back: ``analysis.json`` plus the labelmaps.

    Args:
        folder: the output folder.
        reference: the analysed image's geometry (e.g. :func:`volume_from_node` with
            ``copy_array=False``); when given, the labelmaps must lie on its grid (within the
            reader's tolerance) and adopt its exact geometry.

    Raises:
        InputError: when ``analysis.json`` is missing or a labelmap does not fit ``reference``.
        ValueError: when ``analysis.json`` has an unsupported schema.
    """
    from VertebralFractureLib.errors import InputError
    from VertebralFractureLib.io.readers import read_labelmap

    root = Path(folder)
    path = root / ANALYSIS_FILE
    if not path.is_file():
        raise InputError(f"no {ANALYSIS_FILE} in '{root}': not an analysis output folder")
    analysis = Analysis.from_json(path)
    if (root / LABELMAP_FILE).is_file():
        analysis.labelmap = read_labelmap(root / LABELMAP_FILE, reference=reference)
    if (root / FRACTURE_FILE).is_file():
        analysis.fracture_map = read_labelmap(root / FRACTURE_FILE, reference=reference)
    return analysis


# ---------------------------------------------------------------------------------------- saving, batches
#: File name of a saved scene inside its folder.
SCENE_FILE = "scene.mrml"


def save_scene(scene: Any, folder: str | Path) -> Path:
    """Write ``scene`` as Slicer does: every storable node's data through its (default) storage node
    into ``folder``, then ``scene.mrml`` referencing them. Colour tables are Slicer's own and are not
    written. Returns the ``.mrml`` path.

    Raises:
        OSError: ``folder`` exists and is not empty, or a node's data could not be written.
    """
    out = Path(folder)
    if out.exists() and any(out.iterdir()):
        raise OSError(f"{out} is not empty; a scene is saved into a new folder")
    out.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    for i in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(i)
        if not node.IsA("vtkMRMLStorableNode") or node.IsA("vtkMRMLColorNode") or not node.GetSaveWithScene():
            continue
        storage = node.GetStorageNode()
        if storage is None and node.AddDefaultStorageNode():
            storage = node.GetStorageNode()
        if storage is None:
            continue
        stem = re.sub(r"[^A-Za-z0-9 ._-]+", "_", node.GetName() or node.GetID()).strip() or node.GetID()
        name, k = stem, 1
        while name.lower() in used:
            k += 1
            name = f"{stem} {k}"
        used.add(name.lower())
        target = out / f"{name}.{storage.GetDefaultWriteFileExtension()}"
        storage.SetFileName(str(target))
        if not storage.WriteData(node):
            raise OSError(f"Slicer could not write {node.GetName()!r} to {target}")
    scene.SetRootDirectory(str(out))
    scene.SetURL(str(out / SCENE_FILE))
    if not scene.Commit():
        raise OSError(f"Slicer could not write {out / SCENE_FILE}")
    return out / SCENE_FILE


def scenes_from_batch(batch_folder: str | Path, scenes_folder: str | Path, new_scene: Any) -> dict[str, Path]:
    """A saved Slicer scene per study that a ``vertebral-fracture batch`` run finished: the input CT
    and its results as the module shows them (segmentation, point lists, height lines, table).

    Args:
        batch_folder: the batch's output folder (``batch.csv`` and one result folder per study).
        scenes_folder: where ``<study>/scene.mrml`` and its data go (existing scenes are kept).
        new_scene: called once per study; returns an empty MRML scene whose module logics are alive
            (in Slicer: clear ``slicer.mrmlScene`` and return it).

    Returns:
        Study → the ``.mrml`` written (studies not done, or whose scene exists, are left out).
    """
    from VertebralFractureLib.batch import read_state
    from VertebralFractureLib.io.readers import read_image

    root, out = Path(batch_folder), Path(scenes_folder)
    written = {}
    for study, row in read_state(root).items():
        target = out / study
        if row.get("state") not in ("done", "skipped") or (target / SCENE_FILE).exists():
            continue
        scene = new_scene()
        image = read_image(row["input"]).volume
        volume_node = add_volume_node(scene, image, study)
        analysis = load_analysis(Path(row.get("output") or root / study), reference=image)
        add_analysis_to_scene(scene, analysis, volume_node, source=str(root / study))
        written[study] = save_scene(scene, target)
    return written


# ---------------------------------------------------------------------------------------- segmentation → labelmap
_NAME_PATTERN = re.compile(r"(?<![A-Za-z0-9])([CTL])\s*-?\s*(\d{1,2})(?!\d)", re.IGNORECASE)
_SNOMED_TO_LABEL: dict[str, int] = {}


def vertebra_label_of_segment(name: str, terminology: str | None = None) -> int | None:
    """The VerSe label a segment stands for, from its name ("L1", "vertebrae L1", "L1 vertebra")
    or, failing that, from the SNOMED CT code of its terminology entry; None if neither tells."""
    from VertebralFractureLib.anatomy import VERTEBRAE

    for match in _NAME_PATTERN.finditer(name or ""):
        try:
            return vertebra(f"{match.group(1).upper()}{int(match.group(2))}").label
        except KeyError:
            continue
    if terminology:
        if not _SNOMED_TO_LABEL:
            generic = {"122495006", "122496007"}  # "thoracic/lumbar vertebra": not one level
            _SNOMED_TO_LABEL.update({v.snomed_code: v.label for v in VERTEBRAE.values() if v.snomed_code not in generic})
        for code in re.findall(r"\^(\d+)\^", terminology):
            if code in _SNOMED_TO_LABEL:
                return _SNOMED_TO_LABEL[code]
    return None


def segmentation_to_labelmap(
    scene: Any, segmentation_node: Any, reference_volume_node: Any
) -> tuple[Volume, list[str]]:
    """A VerSe labelmap, on the reference volume's grid, of a segmentation with vertebra segments.

    Segments are matched to vertebrae by name or terminology (see :func:`vertebra_label_of_segment`);
    the others are skipped and named in the returned list.

    Raises:
        ValueError: when no segment is a vertebra, or two segments claim the same vertebra.
    """
    import slicer
    import vtk

    segmentation = segmentation_node.GetSegmentation()
    tag_name = slicer.vtkSegment.GetTerminologyEntryTagName()
    ids, labels, skipped = [], [], []
    for i in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(i)
        segment = segmentation.GetSegment(segment_id)
        tag = vtk.mutable("")
        label = vertebra_label_of_segment(segment.GetName(), str(tag) if segment.GetTag(tag_name, tag) else None)
        if label is None:
            skipped.append(segment.GetName())
            continue
        if label in labels:
            raise ValueError(f"two segments stand for {vertebra(label).name}: "
                             f"{segmentation.GetSegment(ids[labels.index(label)]).GetName()!r} and {segment.GetName()!r}")
        ids.append(segment_id)
        labels.append(label)
    if not ids:
        raise ValueError(f"segmentation {segmentation_node.GetName()!r} has no vertebra segment (names like "
                         f"'L1' or 'vertebrae L1'); segments: {skipped}")
    temp = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__VertebralFracture_export")
    try:
        if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
                segmentation_node, ids, temp, reference_volume_node):
            raise RuntimeError(f"Slicer could not export segmentation {segmentation_node.GetName()!r} to a labelmap")
        exported = volume_from_node(temp)
    finally:
        remove_node(scene, temp)
    lut = np.zeros(max(256, len(ids) + 1), dtype=np.uint8)
    for k, label in enumerate(labels):
        lut[k + 1] = label
    reference = volume_from_node(reference_volume_node, copy_array=False)
    return reference.with_array(lut[exported.array.astype(np.int64)]), skipped


__all__ = [
    "ACCURACY_ATTRIBUTE", "INPUT_ATTRIBUTE", "SCENE_FILE", "INPUT_REFERENCE_ROLE", "NAMING_ATTRIBUTE", "NOT_ASSESSABLE_COLOR",
    "PREFIX_ATTRIBUTE", "ROLES", "ROLE_ATTRIBUTE", "SOURCE_ATTRIBUTE", "TABLE_COLUMNS", "SceneNodes",
    "accuracy_note", "add_analysis_to_scene", "add_volume_node", "fill_table", "find_analysis_nodes",
    "ijk_to_ras_matrix", "load_analysis", "remove_node", "set_volume_data", "naming_note", "other_warnings", "point_list_centroids",
    "remove_analysis_nodes", "save_scene", "scenes_from_batch", "segmentation_to_labelmap", "shift_point_list_names", "shift_vertebra_names",
    "table_rows", "vertebra_color", "vertebra_label_of_segment", "vertebra_levels", "volume_from_node",
    "write_centroid_file", "write_point_list_centroids",
]
