"""Lateral radiographs reconstructed from CT (digitally reconstructed radiographs, DRR).

Seeds 003 and 004 read lateral spine radiographs. Their training data here are radiographs
computed from CT with exact labels (SynthSpine cases), and the real CTs in ``../shared/data`` give
radiographs of real anatomy with known grades. A DRR follows the physics of a projection
radiograph, simplified to a parallel beam (the source–detector distance of a lateral lumbar
radiograph, about 1 m, magnifies the spine by a few per cent and changes little else):

1. **Attenuation.** HU → linear attenuation μ = μ_water · (1 + HU / 1000) (:data:`MU_WATER`, an
   effective energy near 60 keV); air and anything below it attenuate nothing. Above water, HU are
   multiplied by ``bone_gain``: a radiograph's beam (70–90 kVp, no CT filtration) is softer than
   the CT's, and calcium's photoelectric absorption makes bone stand out more than its HU say.
2. **Line integrals** through the patient from left to right (the LPS x axis): the log of the
   primary beam's attenuation, on a detector grid of ``pixel_mm``.
3. **The detector**: the primary intensity exp(−∫μ), plus scatter (a wide blur of the primary,
   ``scatter_fraction`` of it), blurred by the focal spot, counted as Poisson photons
   (``photons`` per pixel unattenuated: the exposure), log-transformed so that bone is bright.
4. **Presentation**: dynamic-range compression (a share of the large-scale signal taken out, as
   radiography workstations do, so that the lumbar spine behind a thick abdomen shows), collimation (outside the collimated rectangle nothing is exposed: white), the
   anti-scatter grid's faint lines, and a display window from the image's own percentiles.

The source CT's slice thickness shows in its radiograph: a CT of 5 mm slices gives endplates and
fracture lines 5 mm soft from top to bottom, unlike any radiograph. :func:`draw_params` draws a
share of radiographs (:data:`THICK_SHARE`) from the CT with its slices averaged to 3–7 mm
(:func:`thicker_slices`, ``source_slice_mm``), so that training data can show what a thick-slice CT
(the usual abdominal CT) makes of a spine; docs/radiographs.md measures the models on such
radiographs.

Orientation, as a lateral radiograph is hung: rows cranial → caudal, columns anterior →
posterior (the patient faces left); ``geometry`` maps pixels back to LPS (y, z).

Boxes (:func:`body_boxes`): each vertebral body's bounding box from its six Genant keypoints
(anterior, middle and posterior points of both endplates), projected like the image: the box a
reader draws around a body on the radiograph (seed 004's L1–L5 boxes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from VertebralFractureLib.volume import Volume

#: Linear attenuation of water at an effective energy near 60 keV (1/mm).
MU_WATER = 0.0206
#: HU of air, used outside the CT.
AIR_HU = -1000.0
#: Line integral above which a ray crossed the patient (about 5 cm of water).
BODY_INTEGRAL = 1.0


@dataclass(frozen=True)
class RadiographParams:
    """The drawn acquisition of one radiograph."""

    pixel_mm: float = 0.4
    #: Attenuation above water relative to the CT's (a softer beam: see the module docstring).
    bone_gain: float = 2.0
    #: Focal-spot (and detector) blur, Gaussian sigma in mm.
    blur_mm: float = 0.3
    #: Scatter reaching the detector, as a fraction of the primary, and its spread (mm).
    scatter_fraction: float = 0.3
    scatter_sigma_mm: float = 25.0
    #: Unattenuated photons per pixel (exposure): fewer means noisier.
    photons: float = 2.0e4
    #: Collimated rectangle as fractions of the image (top, bottom, anterior, posterior margins).
    collimation: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    #: Anti-scatter grid: lines per mm across the columns, and their contrast (0: none).
    grid_lines_per_mm: float = 0.0
    grid_contrast: float = 0.0
    #: Dynamic-range compression, as a radiography workstation applies it: this share of the
    #: large-scale signal (Gaussian of ``compression_sigma_mm``) is taken out, so that a thin thorax
    #: and a thick abdomen both show their bones.
    compression: float = 0.75
    compression_sigma_mm: float = 25.0
    #: Display window: the percentiles of the patient's pixels mapped to 0 and 1.
    window_percentiles: tuple[float, float] = (1.0, 99.5)
    #: The source CT's slices averaged to this thickness first (mm; :func:`thicker_slices`), as a
    #: CT reconstructed with thicker slices; 0 keeps the CT as it is.
    source_slice_mm: float = 0.0


#: Share of drawn radiographs made from the source CT with thicker slices (:func:`draw_params`).
THICK_SHARE = 0.35
#: Range of those slice thicknesses (mm): abdominal and chest CTs are often read at 3–5 mm.
THICK_RANGE_MM = (3.0, 7.0)


def draw_params(rng: np.random.Generator, thick_share: float = THICK_SHARE) -> RadiographParams:
    """A random acquisition within the range of lateral spine radiographs; for ``thick_share`` of
    them the source CT's slices are first thickened (``source_slice_mm``)."""
    if not 0.0 <= thick_share <= 1.0:
        raise ValueError(f"thick_share must lie in [0, 1], got {thick_share}")
    margins = tuple(float(m) for m in rng.uniform(0.0, 0.08, 4) * (rng.random(4) < 0.5))
    grid = rng.random() < 0.6
    return RadiographParams(
        pixel_mm=float(rng.uniform(0.3, 0.5)),
        bone_gain=float(rng.uniform(1.5, 2.5)),
        blur_mm=float(rng.uniform(0.15, 0.6)),
        scatter_fraction=float(rng.uniform(0.1, 0.6)),
        scatter_sigma_mm=float(rng.uniform(15.0, 40.0)),
        photons=float(10 ** rng.uniform(3.5, 4.7)),
        collimation=margins,  # type: ignore[arg-type]
        grid_lines_per_mm=float(rng.uniform(3.0, 8.0)) if grid else 0.0,
        grid_contrast=float(rng.uniform(0.005, 0.02)) if grid else 0.0,
        compression=float(rng.uniform(0.6, 0.9)),
        compression_sigma_mm=float(rng.uniform(15.0, 40.0)),
        window_percentiles=(float(rng.uniform(0.2, 3.0)), float(rng.uniform(98.5, 99.9))),
        # drawn last, so the draws above stay those of datasets written before it existed
        source_slice_mm=float(rng.uniform(*THICK_RANGE_MM)) if rng.random() < thick_share else 0.0,
    )


@dataclass(frozen=True)
class RadiographGeometry:
    """Where the pixels of a lateral radiograph lie: row r and column c are at LPS
    z = ``z0_mm`` − r · ``pixel_mm`` and y = ``y0_mm`` + c · ``pixel_mm``."""

    pixel_mm: float
    y0_mm: float
    z0_mm: float
    shape: tuple[int, int]

    def to_pixels(self, lps: np.ndarray) -> np.ndarray:
        """LPS points (..., 3) → (column, row) pixel coordinates (..., 2)."""
        p = np.asarray(lps, float)
        return np.stack([(p[..., 1] - self.y0_mm) / self.pixel_mm, (self.z0_mm - p[..., 2]) / self.pixel_mm], -1)


def line_integrals(ct: Volume, pixel_mm: float = 0.4, sample_mm: float = 1.0,
                   bone_gain: float = 1.0) -> tuple[np.ndarray, RadiographGeometry]:
    """∫μ dx from the patient's right to left through ``ct`` (HU), on a lateral detector grid of
    ``pixel_mm`` (rows cranial → caudal, columns anterior → posterior).

    A CT stored along the patient's axes is summed at its own voxels; an oblique one is first
    resampled onto an LPS-aligned grid every ``sample_mm`` (or its own spacing, if coarser). The
    projection is then interpolated to ``pixel_mm``: finer sampling than the CT's adds no detail,
    and a whole-spine CT at 0.4 mm would be hundreds of millions of samples.
    """
    from scipy import ndimage

    from VertebralFractureLib.preprocess import aligned_grid

    if pixel_mm <= 0 or sample_mm <= 0:
        raise ValueError(f"pixel and sample sizes must be positive, got {pixel_mm} and {sample_mm}")
    direction = np.asarray(ct.direction, float)
    if np.allclose(np.abs(direction), np.eye(3)):  # stored along x, y, z (any signs): no resampling
        hu = np.asarray(ct.array, np.float32)
        signs = np.sign(np.diag(direction))
        hu = hu[tuple(slice(None, None, -1) if sg < 0 else slice(None) for sg in signs[::-1])]  # LPS-increasing
        sx, sy, sz = (float(v) for v in ct.spacing)
        nx, ny, nz = ct.shape_xyz
        corners = ct.index_to_lps(np.array([[i, j, k] for i in (0, nx - 1) for j in (0, ny - 1) for k in (0, nz - 1)]))
        lo, hi = corners.min(axis=0), corners.max(axis=0)
        along, (step_z, step_y) = sx, (sz, sy)
        y_first, z_last = lo[1], hi[2]
    else:  # oblique: onto an LPS-aligned grid first
        step = max(float(sample_mm), float(min(ct.spacing)))
        grid = aligned_grid(ct, step)
        hu = np.asarray(ct.resample_like(grid, "linear", AIR_HU).array, np.float32)
        along, step_z, step_y = step, step, step
        y_first, z_last = grid.origin[1], grid.origin[2] + (grid.array.shape[0] - 1) * step
    mu = MU_WATER * np.clip(1.0 + np.where(hu > 0, bone_gain, 1.0) * hu / 1000.0, 0.0, None)
    proj = mu.sum(axis=2, dtype=np.float64) * along  # (z, y): z grows cranially
    zoom = (step_z / pixel_mm, step_y / pixel_mm)
    image = ndimage.zoom(proj[::-1], zoom, order=1, grid_mode=True, mode="nearest")  # first row the most cranial
    # pixel centres: the outer edges of the first and last samples stay where they were
    y0 = float(y_first - step_y / 2 + pixel_mm / 2)
    z0 = float(z_last + step_z / 2 - pixel_mm / 2)
    return np.ascontiguousarray(image, np.float32), RadiographGeometry(pixel_mm, y0, z0, image.shape)


def expose(integrals: np.ndarray, params: RadiographParams, rng: np.random.Generator) -> np.ndarray:
    """Detector, noise and presentation (module docstring, steps 3 and 4): a radiograph in 0..1,
    bone bright, from the line integrals at ``params.pixel_mm``."""
    from scipy import ndimage

    px = params.pixel_mm
    primary = np.exp(-np.asarray(integrals, np.float64))
    scatter = params.scatter_fraction * _wide_blur(primary, params.scatter_sigma_mm / px)
    signal = ndimage.gaussian_filter(primary + scatter, params.blur_mm / px, mode="nearest")
    counts = rng.poisson(np.clip(signal, 0.0, None) * params.photons) + 1.0  # + 1: no log of zero
    image = -np.log(counts / (params.photons * (1.0 + params.scatter_fraction)))
    if params.compression > 0:
        image = image - params.compression * _wide_blur(image, params.compression_sigma_mm / px)
    if params.grid_contrast > 0 and params.grid_lines_per_mm > 0:
        cols = np.arange(image.shape[1]) * px
        image = image + params.grid_contrast * np.sin(2 * np.pi * params.grid_lines_per_mm * cols)[None, :]
    body = np.asarray(integrals) > BODY_INTEGRAL  # the window is set on the patient, not on the air around
    lo, hi = np.percentile(image[body] if body.sum() > 100 else image, params.window_percentiles)
    out = np.clip((image - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    top, bottom, ant, post = params.collimation
    rows, cols = out.shape
    collimated = np.zeros_like(out, bool)
    collimated[: int(top * rows)] = True
    collimated[rows - int(bottom * rows):] = True
    collimated[:, : int(ant * cols)] = True
    collimated[:, cols - int(post * cols):] = True
    out[collimated] = 1.0  # unexposed: white
    return out.astype(np.float32)


def _wide_blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """A Gaussian blur of ``sigma_px``; a wide one is computed on a smaller copy (the result is smooth
    anyway) and interpolated back."""
    from scipy import ndimage

    factor = int(sigma_px // 4)
    if factor < 2:
        return ndimage.gaussian_filter(image, sigma_px, mode="nearest")
    small = ndimage.zoom(image, 1.0 / factor, order=1, grid_mode=True, mode="nearest")
    small = ndimage.gaussian_filter(small, sigma_px / factor, mode="nearest")
    back = ndimage.zoom(small, np.asarray(image.shape) / np.asarray(small.shape), order=1, grid_mode=True, mode="nearest")
    return back[: image.shape[0], : image.shape[1]]


def lateral_radiograph(ct: Volume, params: RadiographParams | None = None,
                       rng: np.random.Generator | None = None) -> tuple[np.ndarray, RadiographGeometry]:
    """A lateral radiograph (0..1, bone bright) of a CT in HU and its geometry."""
    params = params or RadiographParams()
    rng = rng or np.random.default_rng(0)
    if params.source_slice_mm > 0:
        ct = thicker_slices(ct, params.source_slice_mm)
    integrals, geometry = line_integrals(ct, params.pixel_mm, bone_gain=params.bone_gain)
    return expose(integrals, params, rng), geometry


def thicker_slices(ct: Volume, slice_mm: float) -> Volume:
    """``ct`` as a CT of about ``slice_mm`` slices: along the index axis closest to superior (the
    slices), each run of n = round(``slice_mm`` / spacing) slices is averaged into one slice of n
    times the spacing, centred on the run (a thick reconstruction's partial-volume averaging). A CT
    whose slices are already that thick or thicker is returned as it is."""
    if not slice_mm > 0:
        raise ValueError(f"slice thickness must be positive, got {slice_mm}")
    axis = int(np.argmax(np.abs(ct.direction[2, :])))  # index axis (x, y, z) of the slices
    n = int(round(slice_mm / ct.spacing[axis]))
    arr = np.asarray(ct.array)
    along = 2 - axis  # the array is (z, y, x)
    m = arr.shape[along] // n
    if n <= 1 or m < 1:
        return ct
    kept = arr[(slice(None),) * along + (slice(0, m * n),)].astype(np.float32)  # whole runs only
    shape = list(kept.shape)
    shape[along:along + 1] = [m, n]
    thick = kept.reshape(shape).mean(axis=along + 1)
    spacing = list(ct.spacing)
    spacing[axis] *= n
    first = np.zeros(3)
    first[axis] = (n - 1) / 2.0  # the first thick slice's centre, in the thin slices' index
    origin = ct.index_to_lps(first)
    return Volume(thick, tuple(spacing), tuple(float(v) for v in np.ravel(origin)), ct.direction.copy())


def label_shadows(labelmap: Volume, pixel_mm: float, shape: tuple[int, int]) -> dict[int, np.ndarray]:
    """Where each label of a labelmap (in its CT's geometry) lies on that CT's lateral radiograph of
    ``pixel_mm`` and ``shape``: the pixels whose ray crosses the label (a real vertebra mask's
    outline on a reconstructed radiograph)."""
    arr = np.asarray(labelmap.array)
    out = {}
    for lab in (int(v) for v in np.unique(arr) if v):
        binary = labelmap.with_array(np.where(arr == lab, 1000.0, AIR_HU).astype(np.float32))
        proj, _ = line_integrals(binary, pixel_mm)
        out[lab] = proj[: shape[0], : shape[1]] > 0.02  # about half a millimetre of the label on the ray
    return out


def body_boxes(vertebrae: Sequence[Mapping[str, Any]], geometry: RadiographGeometry,
               names: Sequence[str] | None = ("L1", "L2", "L3", "L4", "L5")) -> dict[str, list[float]]:
    """The pixel box [x0, y0, x1, y1] (columns, rows) of each vertebral body from its six keypoints
    (``keypoints_lps_mm`` of SynthSpine's truth or of ``analysis.json``), for the vertebrae named
    in ``names`` (all with keypoints if None); vertebrae without keypoints are left out."""
    out: dict[str, list[float]] = {}
    for v in vertebrae:
        kp = v.get("keypoints_lps_mm")
        name = v.get("name")
        if not kp or (names is not None and name not in names):
            continue
        cr = geometry.to_pixels(np.array(list(kp.values()), float))
        out[str(name)] = [float(cr[:, 0].min()), float(cr[:, 1].min()), float(cr[:, 0].max()), float(cr[:, 1].max())]
    return out


__all__ = ["AIR_HU", "BODY_INTEGRAL", "MU_WATER", "RadiographGeometry", "RadiographParams", "body_boxes", "draw_params",
           "expose", "label_shadows", "lateral_radiograph", "line_integrals", "thicker_slices"]
