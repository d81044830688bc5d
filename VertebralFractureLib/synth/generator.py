"""SynthSpine cases: anatomy → label maps → CT, with exact ground truth, and the VerSe-layout writer.

One case is a pure function of ``(seed, config)``:

1. :func:`~VertebralFractureLib.synth.spine.plan_spine` draws the spine (levels, sizes, curve,
   fractures solved to their Genant grade).
2. The acquisition is drawn: field of view (150 mm spine reconstruction … 500 mm body), pixel
   spacing, slice thickness, patient rotation and offset, where the field of view cuts the spine.
3. Tissue and vertebra label maps are painted on a fine working grid in the patient's anatomical
   frame (body, organs, ribs, pelvis, canal, discs, vertebrae).
4. HU, textures and the point-spread function are applied there; the image is resampled to the
   scanner's output grid (which carries the patient rotation) and CT noise is added.
5. The truth is read back from the output: VerSe labels (nearest-neighbour from the working grid),
   centroids (centre of mass of each label), completeness (a label touching the field of view's
   border is cut), keypoints and heights (analytic, on the endplates), Genant grade from those
   heights with :func:`VertebralFractureLib.genant.grade`, and the fracture map (grade > 0).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from VertebralFractureLib import genant
from VertebralFractureLib.analysis import KEYPOINT_NAMES
from VertebralFractureLib.anatomy import cranio_caudal, name_of
from VertebralFractureLib.slices import mask_centres
from VertebralFractureLib.synth import appearance as ap
from VertebralFractureLib.synth import body as bd
from VertebralFractureLib.synth import organs, skeleton
from VertebralFractureLib.synth.config import SynthConfig
from VertebralFractureLib.synth.shapes import Grid, rotation
from VertebralFractureLib.synth.spine import SpinePlan, Vertebra, plan_spine
from VertebralFractureLib.synth.tissues import Canvas, Tissue
from VertebralFractureLib.synth.vertebra import body_bounds, paint_canal, paint_disc, paint_vertebra
from VertebralFractureLib.volume import Volume

_DEG = np.pi / 180.0


@dataclass
class Acquisition:
    """The drawn scanner geometry of one case."""

    spacing: tuple[float, float, float]
    fov: float
    z_range: tuple[float, float]  # world z of the first and last slice centres
    centre_xy: tuple[float, float]  # world x, y of the field-of-view centre
    rotation_deg: tuple[float, float, float]
    circle: bool
    orientation: str


@dataclass
class SynthCase:
    """One generated case.

    Attributes:
        ct: the CT (int16 HU) in the output geometry.
        labelmap: VerSe vertebra labels (uint8), same geometry.
        fracture_map: 0 background, 1 normal vertebra, 2 fractured vertebra, same geometry.
        truth: per visible vertebra (cranial → caudal), the ``_genant.json`` objects.
        centroids_lps: VerSe label → centroid (LPS mm), centre of mass of the label in ``labelmap``.
        meta: generation details (seed, acquisition, subject, planned fractures, drawn numbering
            variants (``variants``: rib pairs, T13/L6, lumbosacral transitional vertebra), timings).
    """

    ct: Volume
    labelmap: Volume
    fracture_map: Volume
    truth: list[dict[str, Any]]
    centroids_lps: dict[int, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)


# ============================================================================ acquisition
def _draw_acquisition(rng: np.random.Generator, config: SynthConfig, plan: SpinePlan, pose: np.ndarray,
                      t: np.ndarray, outline_centre: tuple[float, float]) -> Acquisition:
    lo, hi = config.fov_mm
    if config.fov is not None:
        fov = float(config.fov)
    elif rng.random() < 0.4:
        fov = float(rng.uniform(lo, max(lo, min(hi, 260.0))))
    else:
        fov = float(rng.uniform(min(hi, max(lo, 300.0)), hi))
    if config.spacing is not None:
        spacing = tuple(float(s) for s in config.spacing)
    else:
        sxy = float(np.clip(fov / 512.0 * rng.uniform(0.95, 1.1), *config.spacing_xy_mm))
        choices, weights = config.slice_mm
        w = np.asarray(weights, float)
        sz = float(rng.choice(np.asarray(choices, float), p=w / w.sum()))
        spacing = (sxy, sxy, sz)
    rng_verts = plan.in_range()
    top, bottom = rng_verts[0], rng_verts[-1]

    def world(p: np.ndarray) -> np.ndarray:
        return pose @ p + t

    def z_ext(v: Vertebra, up: bool) -> float:
        lo_b, hi_b = body_bounds(v)
        h = hi_b[2] if up else lo_b[2]
        return float(world(v.centre + v.rot @ np.array([0.0, 0.0, h]))[2])

    if rng.random() < config.p_cut:
        ztop = float(world(top.centre)[2] + rng.uniform(-0.25, 0.3) * top.hp)
    else:
        ztop = z_ext(top, True) + float(rng.uniform(2.0, 25.0))
    if rng.random() < config.p_cut:
        zbot = float(world(bottom.centre)[2] + rng.uniform(-0.3, 0.25) * bottom.hp)
    else:
        zbot = z_ext(bottom, False) - float(rng.uniform(2.0, 25.0))
    mid = 0.5 * (world(top.centre) + world(bottom.centre))
    if fov < 270:  # a spine reconstruction: centred on the vertebrae (bodies and posterior elements)
        pts = np.array([world(v.centre + v.rot @ np.array([0.0, d, 0.0])) for v in rng_verts for d in (0.0, 45.0)])
        box_c = 0.5 * (pts.min(0) + pts.max(0))
        off = rng.uniform(-config.offset_mm, config.offset_mm, 2) * min(1.0, (fov - 120) / 150)
        centre = (float(box_c[0] + off[0]), float(box_c[1] + off[1]))
    else:
        oc = world(np.array([outline_centre[0], outline_centre[1], mid[2]]))
        off = rng.uniform(-config.offset_mm, config.offset_mm, 2) * 0.5
        centre = (float(oc[0] + off[0]), float(oc[1] + off[1]))
    orientation = config.orientation if config.orientation != "random" else str(rng.choice(config.orientations))
    return Acquisition(spacing=spacing, fov=fov, z_range=(zbot, ztop), centre_xy=centre, rotation_deg=(0, 0, 0),
                       circle=bool(fov >= 300 and rng.random() < 0.5), orientation=orientation)


def _pose(rng: np.random.Generator, config: SynthConfig) -> tuple[np.ndarray, tuple[float, float, float]]:
    ang = tuple(float(np.clip(rng.normal(0, m / 2), -m, m)) if m > 0 else 0.0 for m in config.rotation_deg)
    r = rotation("z", ang[2] * _DEG) @ rotation("y", ang[1] * _DEG) @ rotation("x", ang[0] * _DEG)
    return r, ang


def _output_volume(acq: Acquisition, dtype: Any = np.int16) -> Volume:
    sx, sy, sz = acq.spacing
    n = max(8, int(round(acq.fov / sx)))
    nz = max(2, int(round((acq.z_range[1] - acq.z_range[0]) / sz)) + 1)
    origin = (acq.centre_xy[0] - (n - 1) * sx / 2, acq.centre_xy[1] - (n - 1) * sy / 2, acq.z_range[0])
    return Volume(np.zeros((nz, n, n), dtype), (sx, sy, sz), origin, np.eye(3))


def _working_grid(out: Volume, pose: np.ndarray, t: np.ndarray, margin: float) -> tuple[Grid, int]:
    """The anatomical-frame grid covering the output volume (plus margin), and the z oversampling."""
    sx, sy, sz = out.spacing
    f = max(1, int(np.ceil(sz / 1.25 - 1e-6)))  # thick slices: model the slice profile on ≤ 1.25 mm sub-slices
    wz = sz / f
    nx, ny, nz = out.shape_xyz
    idx = np.array([[i, j, k] for i in (-0.5, nx - 0.5) for j in (-0.5, ny - 0.5) for k in (-0.5, nz - 0.5)])
    corners_w = out.index_to_lps(idx)
    anat = (corners_w - t) @ pose  # pose.T @ (p - t) for each row
    lo, hi = anat.min(0) - margin, anat.max(0) + margin
    spacing = (sx, sy, wz)
    shape = tuple(int(np.ceil((hi[k] - lo[k]) / spacing[k])) + 1 for k in (2, 1, 0))
    return Grid(tuple(float(v) for v in lo), spacing, shape), f


# ============================================================================ painting
def _paint(canvas: Canvas, plan: SpinePlan, subject: bd.Subject, config: SynthConfig,
           rng: np.random.Generator, threads: int = 1) -> bd.Outline:
    g = canvas.grid
    ref = bd.SpineRef.from_plan(plan)
    outline = bd.body_outline(ref, subject, g.axis(2).astype(float), rng)
    if config.body:
        bd.paint_outline(canvas, outline, threads)
        bd.paint_muscles(canvas, ref, outline, subject)
        organs.paint_thorax(canvas, ref, outline, subject, rng, threads)
        organs.paint_abdomen(canvas, ref, outline, subject, rng)
        organs.paint_neck(canvas, ref, outline, subject)
        organs.paint_vessels(canvas, ref, outline, subject, rng)
        skeleton.paint_ribs(canvas, outline, plan, subject)
        skeleton.paint_sternum_clavicles(canvas, ref, outline, subject)
        skeleton.paint_pelvis(canvas, ref, plan, subject)
    else:
        canvas.tissue[...] = int(Tissue.MUSCLE)
        skeleton.paint_pelvis(canvas, ref, plan, subject)
    zmin, zmax = g.origin[2] - 60, g.origin[2] + g.spacing[2] * g.shape[0] + 60
    near = [i for i, v in enumerate(plan.vertebrae) if zmin < v.centre[2] < zmax]
    for i in near:
        v = plan.vertebrae[i]
        paint_canal(canvas, v, reach=0.5 * max(v.hp, 10.0) + 8.0 * v.scale)
    for k, thickness in plan.discs:
        if k in near or k + 1 in near:
            a, b = plan.vertebrae[k], plan.vertebrae[k + 1]
            paint_disc(canvas, a, b, thickness, degeneration=float(np.clip((plan.age - 40) / 50, 0, 1)))
    for i in near:
        paint_vertebra(canvas, plan.vertebrae[i])
    return outline


# ============================================================================ the case
def generate_case(seed: int, config: SynthConfig | None = None, threads: int = 2) -> SynthCase:
    """Generate one synthetic spine CT with its ground truth.

    Args:
        seed: the case's seed (the same seed and config give identical arrays).
        config: the ranges; defaults to :class:`SynthConfig()`.
        threads: threads for the slab-wise image stages (results do not depend on it).

    Returns:
        The :class:`SynthCase`.
    """
    config = config or SynthConfig()
    t0 = time.perf_counter()
    randomised = False
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5E5E]))
    plan = plan_spine(rng, config)
    if config.templates:  # real posterior elements, from their own random stream
        from VertebralFractureLib.synth.templates import assign

        assign(plan, config.templates, seed)
    subject = bd.Subject(scale=plan.scale, fat=float(np.exp(rng.normal(-0.15, 0.45))),
                         breadth=float(rng.normal(1.0, 0.06)), contrast=bool(rng.random() < config.p_contrast),
                         age=plan.age, lung_inflation=float(rng.uniform(0.8, 1.2)), offset_x=float(rng.normal(0, 4)))
    pose, angles = _pose(rng, config)
    # patient position: the sacrum is at the anatomical origin; put the body on the scanner axis
    t = np.array([rng.normal(0, 5), rng.normal(0, 5), 0.0])
    ref = bd.SpineRef.from_plan(plan)
    mid_z = float(np.mean([v.centre[2] for v in plan.in_range()]))
    o = bd.body_outline(ref, subject, np.array([mid_z]), rng)
    acq = _draw_acquisition(rng, config, plan, pose, t, (float(o.cx[0]), float(o.cy[0])))
    acq.rotation_deg = angles
    out = _output_volume(acq)
    psf = ap.draw_appearance(rng, plan.osteoporotic, subject.contrast, plan.age, config.noise_hu)
    if config.p_random_appearance > 0:  # its own random stream: the rest of the case is unchanged
        arng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xA99E]))
        if arng.random() < config.p_random_appearance:
            psf = ap.randomise(psf, arng)
            randomised = True
    sigma_z = max(0.0, out.spacing[2] / 2.355)
    margin = 3.0 * max(psf.psf_mm, sigma_z) + 2.0
    grid, _ = _working_grid(out, pose, t, margin)
    t1 = time.perf_counter()

    canvas = Canvas.empty(grid)
    _paint(canvas, plan, subject, config, rng, threads)
    t2 = time.perf_counter()

    tex = ap.Textures.make(rng, grid.spacing, plan.osteoporotic)
    hu = ap.render_hu(canvas.tissue, psf, tex, grid.spacing, threads=threads)
    canvas.cavity = None
    hu = ap.blur_z(hu, sigma_z / grid.spacing[2] if sigma_z > grid.spacing[2] * 0.6 else 0.0, threads=threads)
    t3 = time.perf_counter()

    ct_arr, lab_arr = _resample_to_output(hu, canvas.instance, grid, pose, t, out, psf.air)
    del hu
    if config.body:
        table = pose @ np.array([ref.at(mid_z, "x"), o.table_y, mid_z]) + t
        bd.paint_table(ct_arr, out.spacing, out.origin, float(table[1]), float(table[0]),
                       float(psf.mean[Tissue.TABLE]), psf.air)
    ap.ct_noise_add(rng, ct_arr, psf.noise_sd, threads=threads)
    if acq.circle:
        _apply_circle(ct_arr, lab_arr, out)
    ct_arr = np.clip(np.rint(ct_arr), -1024, 3071).astype(np.int16)
    t4 = time.perf_counter()

    ct = out.with_array(ct_arr)
    labelmap = out.with_array(lab_arr)
    truth, centroids = _truth(plan, labelmap, pose, t)
    frac = np.zeros(256, np.uint8)
    for e in truth:
        frac[e["label"]] = 2 if (e["grade"] or 0) > 0 else 1
    fracture_map = out.with_array(frac[lab_arr])
    ct, labelmap, fracture_map = (reorient(v, acq.orientation) for v in (ct, labelmap, fracture_map))
    t5 = time.perf_counter()
    meta = {
        "seed": int(seed),
        "levels": list(plan.range_names),
        "spacing_mm": list(ct.spacing),
        "fov_mm": round(acq.fov, 1),
        "rotation_deg": [round(a, 2) for a in angles],
        "orientation": acq.orientation,
        "noise_hu": round(psf.noise_sd, 1),
        "psf_mm": round(psf.psf_mm, 2),
        "contrast": subject.contrast,
        "osteoporotic": plan.osteoporotic,
        "trabecular_hu": round(float(psf.mean[Tissue.TRABECULAR]), 1),
        "age": round(plan.age, 1),
        "fractures_planned": {v.name: [v.fracture.grade, v.fracture.type] for v in plan.vertebrae if v.fracture},
        "variants": _variant_meta(plan, pose, t),
        "random_appearance": randomised,
        "templates": {v.name: v.template.template.source for v in plan.vertebrae if v.template is not None},
        "working_grid": {"shape": list(grid.shape), "spacing": list(grid.spacing)},
        "timings_s": {"plan": round(t1 - t0, 3), "paint": round(t2 - t1, 3), "render": round(t3 - t2, 3),
                      "resample_noise": round(t4 - t3, 3), "truth": round(t5 - t4, 3), "total": round(t5 - t0, 3)},
    }
    return SynthCase(ct, labelmap, fracture_map, truth, centroids, meta)


def _variant_meta(plan: SpinePlan, pose: np.ndarray, t: np.ndarray) -> dict[str, Any]:
    """The drawn numeric and transitional variants; LSTV contact points in LPS mm (output frame)."""
    facts = plan.variant_facts()
    if plan.lstv is not None:
        facts["lstv"]["contact_lps_mm"] = {side: [round(float(c), 2) for c in pose @ p + t]
                                           for side, p in plan.lstv.contacts.items()}
    return facts


def _resample_to_output(hu: np.ndarray, instance: np.ndarray, grid: Grid, pose: np.ndarray, t: np.ndarray,
                        out: Volume, air: float) -> tuple[np.ndarray, np.ndarray]:
    """Resample the working-grid HU (linear) and labels (nearest) onto the output grid."""
    import SimpleITK as sitk

    origin = pose @ np.asarray(grid.origin) + t
    ref = sitk.Image([int(n) for n in out.shape_xyz], sitk.sitkUInt8)
    ref.SetSpacing(out.spacing)
    ref.SetOrigin(out.origin)
    ref.SetDirection(tuple(out.direction.reshape(-1)))

    def img(a: np.ndarray) -> sitk.Image:
        im = sitk.GetImageFromArray(a)
        im.SetSpacing(grid.spacing)
        im.SetOrigin(tuple(float(v) for v in origin))
        im.SetDirection(tuple(pose.reshape(-1)))
        return im

    ct = sitk.GetArrayFromImage(sitk.Resample(img(hu), ref, sitk.Transform(), sitk.sitkLinear, float(air),
                                              sitk.sitkFloat32))
    lab = sitk.GetArrayFromImage(sitk.Resample(img(instance), ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0.0,
                                               sitk.sitkUInt8))
    return ct.astype(np.float32, copy=False), lab


def _apply_circle(ct: np.ndarray, lab: np.ndarray, out: Volume) -> None:
    """Outside the circular reconstruction area the scanner writes -1024 (only if no vertebra is there)."""
    nz, ny, nx = ct.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    r = (min(nx, ny) - 1) / 2
    outside = (yy - (ny - 1) / 2) ** 2 + (xx - (nx - 1) / 2) ** 2 > r * r
    if lab[:, outside].any():
        return
    ct[:, outside] = -1024


def reorient(vol: Volume, codes: str) -> Volume:
    """The same image stored with other axis codes (e.g. ``"RAS"``, ``"PIR"``): exact permutation/flips."""
    want = {"L": (0, 1), "R": (0, -1), "P": (1, 1), "A": (1, -1), "S": (2, 1), "I": (2, -1)}
    if codes == "LPS" and np.allclose(vol.direction, np.eye(3)):
        return vol
    cur_axes = [int(np.argmax(np.abs(vol.direction[:, k]))) for k in range(3)]
    cur_sign = [float(np.sign(vol.direction[cur_axes[k], k])) for k in range(3)]
    arr = vol.array  # (z, y, x) = index axes (2, 1, 0)
    perm_xyz = []
    flips = []
    for c in codes:
        axis, sign = want[c]
        k = cur_axes.index(axis)
        perm_xyz.append(k)
        flips.append(sign != cur_sign[k])
    # new index axis j = old index axis perm_xyz[j]
    arr_xyz = np.transpose(arr, (2, 1, 0))
    new_xyz = np.transpose(arr_xyz, perm_xyz)
    new_dir = np.zeros((3, 3))
    old_shape = vol.shape_xyz
    origin_idx = np.zeros(3)
    for j, (k, flip) in enumerate(zip(perm_xyz, flips)):
        col = vol.direction[:, k].copy()
        if flip:
            new_xyz = np.flip(new_xyz, axis=j)
            col = -col
            origin_idx[k] = old_shape[k] - 1
        new_dir[:, j] = col
    origin = vol.index_to_lps(origin_idx)
    spacing = tuple(vol.spacing[k] for k in perm_xyz)
    return Volume(np.ascontiguousarray(np.transpose(new_xyz, (2, 1, 0))), spacing, tuple(origin), new_dir)


# ============================================================================ truth
def label_centroids(labelmap: Volume) -> dict[int, np.ndarray]:
    """Centre of mass (LPS mm) of every non-zero label of a labelmap (:func:`..slices.mask_centres`)."""
    return mask_centres(labelmap)


def _touching_border(arr: np.ndarray) -> set[int]:
    faces = [arr[0], arr[-1], arr[:, 0], arr[:, -1], arr[:, :, 0], arr[:, :, -1]]
    out: set[int] = set()
    for f in faces:
        out |= {int(v) for v in np.unique(f) if v}
    return out


def _truth(plan: SpinePlan, labelmap: Volume, pose: np.ndarray, t: np.ndarray) -> tuple[list[dict], dict]:
    centroids = label_centroids(labelmap)
    visible = set(centroids)
    cut = _touching_border(labelmap.array)
    by_label = {v.label: (i, v) for i, v in enumerate(plan.vertebrae)}
    entries = []
    for label in cranio_caudal(visible):
        i, v = by_label[label]
        entry: dict[str, Any] = {"label": int(label), "name": name_of(label), "complete": label not in cut}
        if not v.gradable:
            entry.update(grade=None, type=None, ratio=None, heights_mm=None, keypoints_lps_mm=None)
            entries.append(entry)
            continue
        kp_local = v.keypoints_local()
        kp = {k: pose @ (v.centre + v.rot @ kp_local[k]) + t for k in KEYPOINT_NAMES}
        heights = genant.heights_from_keypoints(kp)
        nb = []
        for j in (i - 1, i + 1):
            if 0 <= j < len(plan.vertebrae):
                w = plan.vertebrae[j]
                if w.gradable and w.label in visible:
                    nb.append(w.heights()["posterior"])
        g = genant.grade(heights, nb)
        entry.update(grade=int(g.grade), type=g.type, ratio=round(float(g.ratio), 4),
                     fracture_age=v.fracture.age if v.fracture is not None else None,
                     heights_mm={k: round(float(h), 3) for k, h in heights.items()},
                     keypoints_lps_mm={k: [round(float(c), 3) for c in kp[k]] for k in KEYPOINT_NAMES})
        entries.append(entry)
    return entries, centroids


# ============================================================================ writing
def write_verse_case(case: SynthCase, root: str | Path, subject: str) -> dict[str, Path]:
    """Write one case in the VerSe layout under ``root``.

    Files: ``rawdata/SUB/SUB_ct.nii.gz`` and in ``derivatives/SUB/``: ``SUB_seg-vert_msk.nii.gz``,
    ``SUB_seg-vb_ctd.json``, ``SUB_fracture_msk.nii.gz``, ``SUB_genant.json``.

    Returns:
        The written paths by role.
    """
    import json

    from VertebralFractureLib.io.verse import VerseCase, write_centroids

    vc = VerseCase(Path(root), subject)
    for p in (vc.ct, vc.vertebra_mask):
        p.parent.mkdir(parents=True, exist_ok=True)
    _write_volume(case.ct, vc.ct)
    _write_volume(case.labelmap, vc.vertebra_mask)
    _write_volume(case.fracture_map, vc.fracture_mask)
    write_centroids(vc.centroids, case.centroids_lps, case.labelmap)
    vc.genant.write_text(json.dumps(case.truth, indent=1) + "\n", encoding="utf-8")
    return {"ct": vc.ct, "vertebra_mask": vc.vertebra_mask, "fracture_mask": vc.fracture_mask,
            "centroids": vc.centroids, "genant": vc.genant}


def _write_volume(vol: Volume, path: Path) -> None:
    try:
        from VertebralFractureLib.io.readers import write_volume  # type: ignore[attr-defined]
    except ImportError:
        write_volume = None
    if write_volume is not None:
        write_volume(vol, path)
        return
    import SimpleITK as sitk

    sitk.WriteImage(vol.to_sitk(), str(path), useCompression=True)


def subject_name(index: int) -> str:
    """``sub-synth0000`` … for dataset index ``index``."""
    return f"sub-synth{index:04d}"


def case_seed(seed: int, index: int) -> int:
    """The case seed of dataset ``seed``, case ``index`` (independent streams per case)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, np.uint32)[0])


def _one(args: tuple[int, int, SynthConfig, str, int]) -> dict[str, Any]:
    seed, index, config, root, threads = args
    case = generate_case(case_seed(seed, index), config, threads=threads)
    t0 = time.perf_counter()
    write_verse_case(case, root, subject_name(index))
    meta = dict(case.meta)
    meta["timings_s"] = dict(meta["timings_s"], write=round(time.perf_counter() - t0, 3))
    meta["subject"] = subject_name(index)
    meta["vertebrae"] = [e["name"] for e in case.truth]
    meta["fractured"] = [e["name"] for e in case.truth if (e["grade"] or 0) > 0]
    return meta


def generate_dataset(root: str | Path, n: int, seed: int = 0, workers: int = 1, config: SynthConfig | None = None,
                     progress: Callable[[int, int, dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Generate ``n`` cases in the VerSe layout under ``root`` (``sub-synth0000`` …).

    Args:
        root: output folder (created).
        n: number of cases.
        seed: dataset seed; case ``i`` uses :func:`case_seed` ``(seed, i)``, so any subset can be
            regenerated identically.
        workers: processes to use (1 = in this process).
        config: the ranges.
        progress: called as ``progress(done, n, meta)`` after each case.

    Returns:
        Per-case metadata (also written to ``root/synthspine.json``).
    """
    import json

    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    config = config or SynthConfig()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    import os

    threads = max(1, (os.cpu_count() or 1) // workers)
    jobs = [(seed, i, config, str(root), threads) for i in range(n)]
    metas: list[dict[str, Any]] = [{} for _ in range(n)]
    if workers == 1:
        for k, job in enumerate(jobs):
            metas[k] = _one(job)
            if progress:
                progress(k + 1, n, metas[k])
    else:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        with ctx.Pool(workers) as pool:
            for k, meta in enumerate(pool.imap(_one, jobs)):
                metas[k] = meta
                if progress:
                    progress(k + 1, n, meta)
    summary = {"generator": "SynthSpine", "seed": seed, "n": n, "cases": metas}
    (root / "synthspine.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return metas
