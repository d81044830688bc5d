"""The 3D picture of the spine (``spine3d.png``): fractured vertebrae red, normal ones white.

Offscreen VTK, no display needed (EGL on a Linux machine without a display): each vertebra of
the labelmap becomes a smoothed surface (flying edges on its own crop at the 0.5 level, thick
slices first upsampled and lightly blurred, then windowed-sinc smoothing as in Slicer) placed in
LPS world millimetres through the image's direction matrix, so oblique acquisitions render in
their true patient orientation. The
camera looks from the patient's left (lateral view), superior up, anterior on the left of the
picture. Without a labelmap, spheres mark the centroids and the caption says so.

Where OpenGL is not available at all, a flat lateral projection drawn with matplotlib
(:func:`.figures.lateral_projection_png`) is written instead (the caption says so too), so a report
never fails for want of a graphics driver.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from VertebralFractureLib.interrupts import deferred_signals
from VertebralFractureLib.picture import BACKGROUND, annotation, caption, vertebra_color

if TYPE_CHECKING:  # pragma: no cover
    from VertebralFractureLib.analysis import Analysis, VertebraResult
    from VertebralFractureLib.volume import Volume

#: Longest side (voxels) of one vertebra's crop before surface extraction; larger crops are
#: subsampled so very fine scans render in bounded time.
_MAX_CROP_VOXELS = 160
#: Thick slices are upsampled until no axis is more than this many times coarser than the finest.
_MAX_ANISOTROPY = 1.5
_SMOOTHING_ITERATIONS = 20
_SMOOTHING_PASSBAND = 0.01  # Slicer's default surface smoothing (factor 0.5)
#: Fraction of the picture's width the spine may take (the rest holds the labels).
_SPINE_WIDTH_FRACTION = 0.55


def render_spine_3d(analysis: Analysis, path: str | Path, size: tuple[int, int] = (800, 1000)) -> None:
    """Render the spine in a lateral 3D view and write a PNG.

    Args:
        analysis: the analysis; its ``labelmap`` gives the surfaces, its vertebrae the colours.
        path: the PNG file to write.
        size: picture width and height in pixels.

    Raises:
        ValueError: for a size below 16×16 pixels or a labelmap with negative values.
        OSError: when the file cannot be written.
    """
    w, h = (int(s) for s in size)
    if w < 16 or h < 16:
        raise ValueError(f"picture size must be at least 16x16 pixels, got {size}")
    # VTK's compiled modules are imported and the scene drawn with interrupts held back: a signal
    # landing inside a half-imported native module can crash the process; it is delivered after
    with deferred_signals():
        pixels = _render_vtk(analysis, (w, h))
    if pixels is None:
        from VertebralFractureLib.figures import lateral_projection_png

        Path(path).write_bytes(lateral_projection_png(analysis, (w, h)))
        return
    _write_png(pixels, Path(path))


# ---------------------------------------------------------------------------------------- VTK
def _render_vtk(analysis: Analysis, size: tuple[int, int]) -> np.ndarray | None:
    """RGB pixels (h, w, 3) of the VTK rendering, or None when OpenGL is not available."""
    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkRenderingCore import vtkRenderer, vtkWindowToImageFilter

    window = _offscreen_window()
    if window is None:
        return None
    window.SetSize(*size)
    window.SetMultiSamples(0)
    renderer = vtkRenderer()
    renderer.SetBackground(*BACKGROUND)
    window.AddRenderer(renderer)

    anchors = _add_vertebra_actors(analysis, renderer)
    _set_lateral_camera(renderer)
    window.Render()
    _add_labels(analysis, renderer, anchors, size)
    _add_caption(renderer, caption(analysis), size)
    window.Render()

    grab = vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.SetInputBufferTypeToRGB()
    grab.ReadFrontBufferOff()
    grab.Update()
    image = grab.GetOutput()
    dims = image.GetDimensions()
    pixels = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[1], dims[0], -1)[::-1, :, :3]
    window.Finalize()
    return np.ascontiguousarray(pixels)


def _offscreen_window() -> Any:
    """An offscreen render window that can draw, or None.

    Without a display on Linux the EGL window is used directly (skipping X11 probing).
    """
    import vtkmodules.vtkRenderingFreeType  # noqa: F401  (registers text rendering)
    import vtkmodules.vtkRenderingOpenGL2  # noqa: F401  (registers the OpenGL window factory)
    from vtkmodules.vtkRenderingCore import vtkRenderWindow

    candidates = []
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        candidates += [getattr(vtkmodules.vtkRenderingOpenGL2, name, None)
                       for name in ("vtkEGLRenderWindow", "vtkOSOpenGLRenderWindow")]
    candidates.append(vtkRenderWindow)
    for cls in candidates:
        if cls is None:
            continue
        window = cls()
        window.SetOffScreenRendering(1)
        supports = getattr(window, "SupportsOpenGL", None)
        if supports is None or supports():
            return window
    return None


def _add_vertebra_actors(analysis: Analysis, renderer: Any) -> dict[int, np.ndarray]:
    """Add one actor per vertebra; returns label → LPS anchor point (centre) for labels."""
    from vtkmodules.vtkFiltersSources import vtkSphereSource
    from vtkmodules.vtkRenderingCore import vtkActor, vtkPolyDataMapper

    by_label = {v.label: v for v in analysis.vertebrae}
    anchors: dict[int, np.ndarray] = {}
    labelmap = analysis.labelmap
    if labelmap is not None:
        for label, polydata, centre in _vertebra_surfaces(labelmap):
            anchors[label] = by_label[label].centroid_lps_mm if label in by_label else centre
            renderer.AddActor(_surface_actor(polydata, vertebra_color(by_label.get(label))))
        return {k: np.asarray(c, dtype=float) for k, c in anchors.items()}
    radius = _sphere_radius(analysis)
    for v in analysis.vertebrae:
        sphere = vtkSphereSource()
        sphere.SetCenter(*v.centroid_lps_mm)
        sphere.SetRadius(radius)
        sphere.SetThetaResolution(32)
        sphere.SetPhiResolution(24)
        mapper = vtkPolyDataMapper()
        mapper.SetInputConnection(sphere.GetOutputPort())
        actor = vtkActor()
        actor.SetMapper(mapper)
        _material(actor, vertebra_color(v))
        renderer.AddActor(actor)
        anchors[v.label] = np.asarray(v.centroid_lps_mm, dtype=float)
    return anchors


def _sphere_radius(analysis: Analysis) -> float:
    """12 mm, or less when centroids are closer than 30 mm (spheres must not merge)."""
    pts = np.array([v.centroid_lps_mm for v in analysis.vertebrae], dtype=float)
    if len(pts) < 2:
        return 12.0
    gaps = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    return float(np.clip(0.4 * gaps.min(), 2.0, 12.0))


def _vertebra_surfaces(labelmap: Volume):
    """Yield ``(label, vtkPolyData in LPS mm, centre LPS)`` per label of the labelmap."""
    from scipy import ndimage
    from vtkmodules.util.numpy_support import numpy_to_vtk
    from vtkmodules.vtkCommonDataModel import vtkImageData
    from vtkmodules.vtkCommonMath import vtkMatrix4x4
    from vtkmodules.vtkCommonTransforms import vtkTransform
    from vtkmodules.vtkFiltersCore import vtkFlyingEdges3D, vtkPolyDataNormals, vtkWindowedSincPolyDataFilter
    from vtkmodules.vtkFiltersGeneral import vtkTransformPolyDataFilter

    array = labelmap.array
    if array.dtype == bool:
        array = array.astype(np.uint8)
    spacing = np.asarray(labelmap.spacing, dtype=float)
    if array.dtype.kind == "i" and array.size and array.min() < 0:
        raise ValueError(f"a labelmap cannot hold negative labels (found {int(array.min())})")
    for index, sl in enumerate(ndimage.find_objects(array)):  # None for absent labels
        if sl is None:
            continue
        label = index + 1
        start = np.array([max(0, s.start - 1) for s in sl])  # z, y, x with a 1-voxel margin
        stop = np.array([min(n, s.stop + 1) for s, n in zip(sl, array.shape)])
        step = np.maximum(1, np.ceil((stop - start) / _MAX_CROP_VOXELS)).astype(int)
        crop = array[start[0]:stop[0]:step[0], start[1]:stop[1]:step[1], start[2]:stop[2]:step[2]]
        mask = np.pad((crop == label).astype(np.float32), 1)
        mask, voxel_zyx = _near_isotropic(mask, step * spacing[::-1])
        image = vtkImageData()
        image.SetDimensions(mask.shape[2], mask.shape[1], mask.shape[0])
        # axis-aligned physical mm (smoothing must see true distances); direction + origin come after
        image.SetSpacing(*(float(v) for v in voxel_zyx[::-1]))
        image.SetOrigin(*(float(v) for v in (start[::-1] - step[::-1]) * spacing))
        image.GetPointData().SetScalars(numpy_to_vtk(mask.ravel(), deep=True))
        surface = vtkFlyingEdges3D()
        surface.SetInputData(image)
        surface.SetValue(0, 0.5)
        surface.ComputeNormalsOff()
        smoother = vtkWindowedSincPolyDataFilter()
        smoother.SetInputConnection(surface.GetOutputPort())
        smoother.SetNumberOfIterations(_SMOOTHING_ITERATIONS)
        smoother.SetPassBand(_SMOOTHING_PASSBAND)
        smoother.NormalizeCoordinatesOn()
        smoother.BoundarySmoothingOff()
        smoother.NonManifoldSmoothingOn()
        matrix = vtkMatrix4x4()
        for i in range(3):  # LPS = origin + direction @ (spacing * index)
            for j in range(3):
                matrix.SetElement(i, j, float(labelmap.direction[i, j]))
            matrix.SetElement(i, 3, float(labelmap.origin[i]))
        transform = vtkTransform()
        transform.SetMatrix(matrix)
        to_world = vtkTransformPolyDataFilter()
        to_world.SetInputConnection(smoother.GetOutputPort())
        to_world.SetTransform(transform)
        normals = vtkPolyDataNormals()
        normals.SetInputConnection(to_world.GetOutputPort())
        normals.SplittingOff()
        normals.ConsistencyOn()
        normals.AutoOrientNormalsOn()
        normals.Update()
        centre_zyx = np.array([(s.start + s.stop - 1) / 2.0 for s in sl])
        yield label, normals.GetOutput(), labelmap.zyx_to_lps(centre_zyx)


def _near_isotropic(mask: np.ndarray, voxel_zyx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Upsample the coarse axes of a mask (thick slices) and blur a little, so the surface shows no terraces.

    Returns the mask and its new voxel size (z, y, x) in mm; corners stay where they were.
    """
    from scipy import ndimage

    target = max(float(voxel_zyx.min()), float(voxel_zyx.max()) / _MAX_ANISOTROPY)
    factors = np.maximum(1.0, voxel_zyx / target)
    if factors.max() < 1.5:
        return mask, voxel_zyx
    out = ndimage.zoom(mask, factors, order=1, prefilter=False)
    new_voxel = voxel_zyx * (np.array(mask.shape) - 1) / np.maximum(1, np.array(out.shape) - 1)
    # blur by a third of the coarsest voxel: the slice steps become slopes, the contour stays at 0.5
    out = ndimage.gaussian_filter(out, sigma=float(voxel_zyx.max()) / 3.0 / new_voxel, mode="constant")
    return out, new_voxel


def _surface_actor(polydata: Any, color: tuple[float, float, float]) -> Any:
    from vtkmodules.vtkRenderingCore import vtkActor, vtkPolyDataMapper

    mapper = vtkPolyDataMapper()
    mapper.SetInputData(polydata)
    mapper.ScalarVisibilityOff()
    actor = vtkActor()
    actor.SetMapper(mapper)
    _material(actor, color)
    return actor


def _material(actor: Any, color: tuple[float, float, float]) -> None:
    prop = actor.GetProperty()
    prop.SetColor(*color)
    prop.SetAmbient(0.25)
    prop.SetDiffuse(0.75)
    prop.SetSpecular(0.15)
    prop.SetSpecularPower(20)


def _set_lateral_camera(renderer: Any) -> None:
    """Camera on the patient's left (+x in LPS) looking right, superior (+z) up.

    The spine is placed in the right part of the picture, leaving a column on the left (the
    anterior side) for the labels and a strip at the bottom for the caption.
    """
    renderer.ResetCamera()
    camera = renderer.GetActiveCamera()
    bounds = renderer.ComputeVisiblePropBounds()
    if bounds[0] > bounds[1]:  # nothing to show
        lo, hi = np.full(3, -50.0), np.full(3, 50.0)
    else:
        lo, hi = np.array(bounds[0::2]), np.array(bounds[1::2])
    centre = (lo + hi) / 2.0
    radius = max(10.0, float(np.linalg.norm(hi - lo)) / 2.0)
    w, h = renderer.GetRenderWindow().GetSize()
    aspect = w / h
    # the caption's strip at the bottom and a small margin at the top stay free
    bottom = (2.6 * _caption_font((w, h)) + 0.015 * h) / h
    usable = 1.0 - bottom - 0.03
    # half visible height: the spine's height fits the usable band, its depth 55 % of the width
    scale = max((hi[2] - lo[2]) / (2.0 * usable), (hi[1] - lo[1]) * 1.05 / (2 * aspect * _SPINE_WIDTH_FRACTION), 10.0)
    visible_width = 2.0 * scale * aspect
    # screen right is +y (posterior): the spine's centre at 70 % of the width, in the usable band
    focal = centre - np.array([0.0, (0.70 - 0.5) * visible_width, (bottom + usable / 2 - 0.5) * 2.0 * scale])
    camera.SetFocalPoint(*focal)
    camera.SetPosition(*(focal + np.array([4.0 * radius, 0.0, 0.0])))
    camera.SetViewUp(0.0, 0.0, 1.0)
    camera.ParallelProjectionOn()
    camera.SetParallelScale(scale)
    renderer.ResetCameraClippingRange()


def _add_labels(analysis: Analysis, renderer: Any, anchors: dict[int, np.ndarray], size: tuple[int, int]) -> None:
    """Name (and grade) of each vertebra in a column on the left (anterior) side, at its height."""
    from vtkmodules.vtkRenderingCore import vtkTextActor

    w, h = size
    font = max(10, int(round(min(w, h) / 38)))
    placed: list[tuple[VertebraResult, float]] = []
    for v in analysis.vertebrae:
        anchor = anchors.get(v.label)
        if anchor is None:
            continue
        renderer.SetWorldPoint(*anchor, 1.0)
        renderer.WorldToDisplay()
        placed.append((v, renderer.GetDisplayPoint()[1]))
    for v, y in _spread(placed, 1.15 * font):
        text = vtkTextActor()
        text.SetInput(annotation(v))
        tp = text.GetTextProperty()
        fractured = v.status == "fractured"
        tp.SetFontSize(font if fractured else int(font * 0.85))
        tp.SetBold(fractured)
        tp.SetColor(*((1.0, 0.35, 0.35) if fractured else (0.85, 0.85, 0.85)))
        tp.SetJustificationToLeft()
        tp.SetVerticalJustificationToCentered()
        text.SetDisplayPosition(int(0.03 * w), int(round(y)))
        renderer.AddViewProp(text)


def _spread(items: list[tuple[Any, float]], gap: float) -> list[tuple[Any, float]]:
    """Move label heights (display y, up) apart so that neighbours are at least ``gap`` apart."""
    items = sorted(items, key=lambda it: -it[1])  # top first
    out: list[tuple[Any, float]] = []
    for item, y in items:
        if out and out[-1][1] - y < gap:
            y = out[-1][1] - gap
        out.append((item, y))
    return out


def _add_caption(renderer: Any, text: str, size: tuple[int, int]) -> None:
    from vtkmodules.vtkRenderingCore import vtkTextActor

    w, h = size
    actor = vtkTextActor()
    actor.SetInput(text)
    tp = actor.GetTextProperty()
    tp.SetFontSize(_caption_font(size))
    tp.SetColor(0.8, 0.8, 0.8)
    actor.SetDisplayPosition(int(0.02 * w), int(0.015 * h))
    renderer.AddViewProp(actor)


def _caption_font(size: tuple[int, int]) -> int:
    return max(9, int(round(min(size) / 55)))


def _write_png(pixels: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import image as mpimg

    try:
        mpimg.imsave(path, pixels, format="png")
    except OSError as err:
        raise OSError(f"could not write the picture '{path}': {err}") from err
