"""Render the nodes the Slicer module creates, headless: the picture of the result in the README.

The scene is built exactly as in Slicer, by ``VertebralFractureLib.slicer_scene.add_analysis_to_scene``
on real Slicer MRML (``slicer-core``); the picture shows its segmentation's closed surfaces in
their segment colours (fractured red, normal white), seen from the patient's left like Slicer's
3D view with the "L" button, with the centroid labels. No Slicer application is needed.

Usage (repository root)::

    python Utilities/render_slicer_scene.py RESULTS_DIR -o docs/images/slicer-result.png
    python Utilities/render_slicer_scene.py --truth Resources/SampleData/synthspine-demo -o …
    python Utilities/render_slicer_scene.py --synth-seed 3 -o …

``RESULTS_DIR`` is an output folder of ``vertebral-fracture analyze`` (``analysis.json`` and
``vertebrae.nii.gz``). ``--truth STEM`` shows a SynthSpine case's ground truth instead
(``STEM_seg-vert_msk.nii.gz``, ``STEM_ctd.json``, ``STEM_genant.json``): the scene the module
builds for a perfect analysis of that case; ``--synth-seed`` generates such a case first.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

BACKGROUND_TOP = (0.46, 0.48, 0.64)  # Slicer's 3D view gradient
BACKGROUND_BOTTOM = (0.76, 0.76, 0.86)


def headless_scene():
    """A Slicer MRML scene with the module logics the bridge needs, kept alive on the returned object."""
    import slicer

    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    logics = []
    for name, cls in [("Colors", slicer.vtkSlicerColorLogic), ("Markups", slicer.vtkSlicerMarkupsLogic),
                      ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic),
                      ("Tables", slicer.vtkSlicerTablesLogic),
                      ("SubjectHierarchy", slicer.vtkSlicerSubjectHierarchyModuleLogic)]:
        logic = cls()
        if hasattr(logic, "SetMRMLApplicationLogic"):
            logic.SetMRMLApplicationLogic(app_logic)
        logic.SetMRMLScene(scene)
        app_logic.SetModuleLogic(name, logic)
        logics.append(logic)
    scene.keep_alive = (app_logic, logics)  # type: ignore[attr-defined]
    return scene


def offscreen_window():
    """An offscreen VTK render window (EGL or OSMesa when there is no display on Linux)."""
    import os
    import sys

    import vtk

    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        for name in ("vtkEGLRenderWindow", "vtkOSOpenGLRenderWindow"):
            cls = getattr(vtk, name, None)
            if cls is not None:
                window = cls()
                window.SetOffScreenRendering(1)
                return window
    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    return window


def analysis_from_truth(labelmap, centroids_lps: dict, entries: list[dict]):
    """An :class:`Analysis` holding a SynthSpine case's truth (``_genant.json`` entries)."""
    from VertebralFractureLib.analysis import Analysis, GenantResult, VertebraResult

    vertebrae = []
    for e in entries:
        label = int(e["label"])
        grade = e.get("grade")
        genant = None if grade is None else GenantResult(float(e.get("ratio") or 1.0), int(grade), e.get("type"))
        vertebrae.append(VertebraResult(
            label=label, centroid_lps_mm=tuple(centroids_lps[label]), complete=bool(e.get("complete", True)),
            status="fractured" if (grade or 0) > 0 else "normal", keypoints_lps_mm=e.get("keypoints_lps_mm"),
            heights_mm=e.get("heights_mm"), genant=genant, keypoint_method="ground truth"))
    return Analysis(vertebrae=vertebrae, input_geometry=labelmap.geometry_dict(), labelmap=labelmap,
                    input_description="SynthSpine ground truth")


def load_truth(stem: Path):
    """The ground truth of a SynthSpine case stored as ``STEM_seg-vert_msk.nii.gz`` + ``_ctd.json`` + ``_genant.json``."""
    import json

    from VertebralFractureLib.io.readers import read_labelmap
    from VertebralFractureLib.io.verse import read_centroids

    labelmap = read_labelmap(f"{stem}_seg-vert_msk.nii.gz")
    centroids = read_centroids(f"{stem}_ctd.json", labelmap)
    entries = json.loads(Path(f"{stem}_genant.json").read_text(encoding="utf-8"))
    return analysis_from_truth(labelmap, centroids, entries)


def synth_truth(seed: int):
    """Generate a SynthSpine case and return its ground truth as an analysis."""
    from VertebralFractureLib.synth.generator import generate_case

    case = generate_case(seed)
    return analysis_from_truth(case.labelmap, case.centroids_lps, case.truth)


def render(analysis, output: Path, size: tuple[int, int] = (700, 900)) -> None:
    """Build the module's scene for an analysis and write a PNG of its 3D view."""
    import vtk

    from VertebralFractureLib import slicer_scene

    scene = headless_scene()
    if analysis.labelmap is None:
        raise SystemExit("the analysis has no labelmap: nothing to show in 3D")
    reference = slicer_scene.add_volume_node(scene, analysis.labelmap.with_array(
        np.zeros(analysis.labelmap.array.shape, np.int16)), "CT")
    nodes = slicer_scene.add_analysis_to_scene(scene, analysis, reference, height_lines=False)
    seg = scene.GetNodeByID(nodes.segmentation)
    segmentation = seg.GetSegmentation()

    window = offscreen_window()
    window.SetSize(*size)
    renderer = vtk.vtkRenderer()
    renderer.GradientBackgroundOn()
    renderer.SetBackground(*BACKGROUND_BOTTOM)
    renderer.SetBackground2(*BACKGROUND_TOP)
    window.AddRenderer(renderer)
    overlay = vtk.vtkRenderer()  # labels on top of the surfaces, as Slicer draws markup labels
    overlay.SetLayer(1)
    overlay.InteractiveOff()
    overlay.SetActiveCamera(renderer.GetActiveCamera())
    window.SetNumberOfLayers(2)
    window.AddRenderer(overlay)
    lights = vtk.vtkLightKit()  # key, fill, back and head lights, as Slicer's 3D view
    lights.AddLightsToRenderer(renderer)
    for i in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(i)
        segment = segmentation.GetSegment(segment_id)
        poly = vtk.vtkPolyData()
        seg.GetClosedSurfaceRepresentation(segment_id, poly)
        normals = vtk.vtkPolyDataNormals()
        normals.SetInputData(poly)
        normals.AutoOrientNormalsOn()  # outward, whatever the image's handedness
        normals.SplittingOff()
        mapper = vtk.vtkPolyDataMapper()
        mapper.SetInputConnection(normals.GetOutputPort())
        mapper.ScalarVisibilityOff()  # the surface carries its label value as an array: colour by segment
        actor = vtk.vtkActor()
        actor.SetMapper(mapper)
        actor.GetProperty().SetColor(*segment.GetColor())
        actor.GetProperty().SetSpecular(0.2)
        renderer.AddActor(actor)

    centroids = scene.GetNodeByID(nodes.centroids)
    for i in range(centroids.GetNumberOfControlPoints()):
        name = centroids.GetNthControlPointLabel(i)
        v = analysis.vertebra(name)
        text = name if v.status != "fractured" or v.genant is None else f"{name}  Genant {v.genant.grade}"
        position = np.array(centroids.GetNthControlPointPosition(i)) + [0.0, 45.0, 0.0]  # in front (anterior)
        label = vtk.vtkBillboardTextActor3D()
        label.SetInput(text)
        label.SetPosition(*position)
        label.GetTextProperty().SetFontSize(20)
        label.GetTextProperty().SetColor(*((0.9, 0.1, 0.1) if v.status == "fractured" else (1.0, 1.0, 1.0)))
        label.GetTextProperty().SetShadow(True)
        overlay.AddActor(label)

    camera = renderer.GetActiveCamera()
    camera.SetFocalPoint(0.0, 0.0, 0.0)
    camera.SetPosition(-1.0, 0.0, 0.0)  # from the patient's left (RAS −x): anterior on the left
    camera.SetViewUp(0.0, 0.0, 1.0)
    renderer.ResetCamera()
    camera.Zoom(1.15)
    window.Render()

    grab = vtk.vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.ReadFrontBufferOff()
    grab.Update()
    writer = vtk.vtkPNGWriter()
    writer.SetFileName(str(output))
    writer.SetInputConnection(grab.GetOutputPort())
    output.parent.mkdir(parents=True, exist_ok=True)
    writer.Write()
    window.Finalize()


def main() -> None:
    from VertebralFractureLib import slicer_scene

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("results", type=Path, nargs="?", help="folder with analysis.json and vertebrae.nii.gz")
    source.add_argument("--truth", type=Path, help="stem of a SynthSpine case's truth files")
    source.add_argument("--synth-seed", type=int, help="generate a SynthSpine case and show its truth")
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/images/slicer-result.png"))
    args = parser.parse_args()
    if args.truth is not None:
        analysis = load_truth(args.truth)
    elif args.synth_seed is not None:
        analysis = synth_truth(args.synth_seed)
    else:
        analysis = slicer_scene.load_analysis(args.results)
    render(analysis, args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
