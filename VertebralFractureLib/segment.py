"""Stage 2: per-vertebra segmentation into background / normal / fractured (seeds/002 §2.3).

1. The CT goes once onto the model's LPS-aligned grid (:mod:`.preprocess`).
2. Around each stage-1 centroid a cube of ``patch_size`` voxels is cut so that the vertebra sits in
   its centre; the crops go through the 3-class U-Net in batches.
3. Per crop, only the connected foreground component at the centre is kept (a neighbour that the
   network half-segmented, or a stray blob, is dropped).
4. Assembly in the **input geometry**: each crop's foreground probability is interpolated
   (trilinear) onto the input voxels it covers; a voxel goes to the vertebra with the highest
   probability (ties to the nearer centroid) when that probability is ≥ 0.5, so every voxel belongs
   to at most one vertebra and boundaries are as smooth as the input's resolution allows.
5. ``fracture_probability`` = mean of P(fractured) / P(vertebra) over the vertebra's voxels,
   averaged over test-time variants of the crop: the crop itself, its left–right mirror image
   (the training augmentation's flip) and, where those two leave the call open, crops moved by a
   few millimetres anteriorly and posteriorly (:data:`SHIFTS_MM`), because a network whose call
   changes when the centroid moves by 3 mm is not sure. The mask is the mean of the crop and its
   mirror image;
   ``fracture_probability_spread`` is the range of the probability over the variants.
   ``status`` is "fractured" when the mean reaches ``AnalysisConfig.fracture_threshold`` (stage 3
   then checks the call against the measured heights). The fracture map is per vertebra: every
   voxel of a fractured vertebra is 2, of a normal one 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from VertebralFractureLib.volume import Volume

#: Crops per forward pass.
BATCH = 4
#: A stage-1 centroid moves to the centre of its vertebra's outline when that is at most this far (mm).
MAX_RECENTRE_MM = 20.0
#: Foreground probability at which a voxel belongs to a vertebra.
FOREGROUND = 0.5


@dataclass
class VertebraSegmentation:
    """One vertebra's crop result on the model grid."""

    label: int
    origin_lps: np.ndarray  # LPS position of crop voxel (0, 0, 0)
    foreground: np.ndarray  # P(normal) + P(fractured), (z, y, x), zero outside the kept component
    fractured: np.ndarray  # P(fractured), (z, y, x)
    variant_probabilities: tuple[float, ...] = ()  # fracture probability of each test-time variant


#: Test-time centroid shifts (LPS mm) besides the centroid itself: 3 mm anterior and posterior.
SHIFTS_MM: tuple[tuple[float, float, float], ...] = ((0.0, -3.0, 0.0), (0.0, 3.0, 0.0))


#: Width (σ, mm) of the centre heatmap given to two-channel networks.
CENTRE_SIGMA_MM = 10.0


def centre_channel(patch_size: tuple[int, int, int], spacing_mm: float, sigma_mm: float = CENTRE_SIGMA_MM) -> np.ndarray:
    """A Gaussian (peak 1) at the centre of a crop, the second input of two-channel networks."""
    axes = [(np.arange(n) - (n - 1) / 2.0) * spacing_mm for n in patch_size]
    g = [np.exp(-(a**2) / (2 * sigma_mm**2)) for a in axes]
    return (g[0][:, None, None] * g[1][None, :, None] * g[2][None, None, :]).astype(np.float32)


def crop_at(array: np.ndarray, centre_zyx: np.ndarray, size: tuple[int, int, int], fill: float) -> tuple[np.ndarray, np.ndarray]:
    """A ``size`` cube of ``array`` centred at ``centre_zyx`` (padded with ``fill``); returns it and its start index."""
    start = np.round(np.asarray(centre_zyx, dtype=float) - (np.asarray(size) - 1) / 2.0).astype(int)
    out = np.full(size, fill, dtype=np.float32)
    src = tuple(slice(max(0, s), min(n, s + k)) for s, k, n in zip(start, size, array.shape))
    dst = tuple(slice(sl.start - s, sl.stop - s) for sl, s in zip(src, start))
    if all(sl.stop > sl.start for sl in src):
        out[dst] = array[src]
    return out, start


def central_component(mask: np.ndarray) -> np.ndarray:
    """The connected component of ``mask`` closest to the crop centre (empty if ``mask`` is)."""
    from scipy import ndimage

    lab, n = ndimage.label(mask)
    if n <= 1:
        return mask.astype(bool)
    centre = (np.array(mask.shape) - 1) // 2
    if lab[tuple(centre)]:
        return lab == lab[tuple(centre)]
    # the component of the mask voxel nearest to the centre
    voxels = np.argwhere(lab)
    nearest = voxels[int(np.argmin(((voxels - centre) ** 2).sum(axis=1)))]
    return lab == lab[tuple(nearest)]


def fracture_ratio(fractured: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """P(fractured) / P(vertebra) per voxel, in [0, 1]: a vertebra's fracture probability is its mean."""
    return np.clip(fractured / np.maximum(foreground, 1e-6), 0.0, 1.0)


def fracture_map_of(labelmap: Volume, vertebrae: dict[int, Any]) -> Volume:
    """The per-vertebra fracture map of a labelmap: 2 where the vertebra is fractured, else 1, 0 outside."""
    lut = np.zeros(256, dtype=np.uint8)
    for label, v in vertebrae.items():
        if label < 256:
            lut[label] = 2 if v.status == "fractured" else 1
    return labelmap.with_array(lut[np.asarray(labelmap.array)])


def _crop_probability(foreground: np.ndarray, fractured: np.ndarray) -> float | None:
    """Mean P(fractured) / P(vertebra) over the central vertebra of one crop (None when empty)."""
    keep = central_component(foreground >= FOREGROUND)
    if not keep.any():
        return None
    return float(fracture_ratio(fractured[keep], foreground[keep]).mean())


def segment_crops(net: Any, grid: Volume, image: np.ndarray, centroids_lps: dict[int, np.ndarray],
                  patch_size: tuple[int, int, int], device: str = "cpu",
                  progress: Any = None, tta: bool = True, outputs: dict[tuple, np.ndarray] | None = None,
                  store: bool = False) -> list[VertebraSegmentation]:
    """Run the U-Net on one crop per centroid of a normalised model-grid ``image``.

    With ``tta`` each crop also goes through mirrored (left–right); the mask is the mean of the two.
    Where the call could change — the two disagree by more than :data:`SETTLED_SPREAD` or their mean
    lies within :data:`SETTLED_MARGIN` of 0.5 —, crops at the :data:`SHIFTS_MM` offsets are run too.
    Every variant's fracture probability is kept in ``variant_probabilities``.

    ``outputs``: the network's output for crops already run in this analysis (the same image and
    grid), by grid spacing and crop start. A crop found there is taken from it (and removed) instead
    of being run again; with ``store``, this call's crops (unmirrored, unshifted) are left there for
    a later one — stage 1's outline check for stage 2's first look.
    """
    labels = list(centroids_lps)
    fill = float(image.min())
    extra = centre_channel(patch_size, float(grid.spacing[0])) if getattr(net, "in_channels", 1) == 2 else None

    def crop(label: int, shift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        centre = grid.lps_to_index(np.asarray(centroids_lps[label], dtype=float) + shift)[::-1]
        return crop_at(image, centre, patch_size, fill)

    # pass 1: each crop (and its mirror image)
    jobs: list[tuple[int, int, np.ndarray]] = []  # (vertebra index, variant, crop)
    starts, known = [], {}
    spacing = float(grid.spacing[0])
    for i, label in enumerate(labels):
        c, start = crop(label, np.zeros(3))
        starts.append(start)
        key = (spacing, *start.tolist())
        if outputs is not None and not store and key in outputs:
            known[(i, 0)] = outputs.pop(key)
        else:
            jobs.append((i, 0, c))
        if tta:
            jobs.append((i, 1, c[:, :, ::-1]))
    probs = {**known, **_run(net, jobs, extra, device, progress, labels)}
    if outputs is not None and store:
        outputs.update({(spacing, *starts[i].tolist()): probs[(i, 0)] for i in range(len(labels))})
    if tta:  # the mirror image's probabilities back in the crop's orientation
        probs.update({(i, 1): probs[(i, 1)][:, :, :, ::-1] for i in range(len(labels))})

    def variant_probabilities(keys: Any) -> dict[tuple[int, int], float | None]:
        return {key: _crop_probability(probs[key][1] + probs[key][2], probs[key][2]) for key in keys}

    variant_p = variant_probabilities(probs) if tta else {}
    # pass 2: the shifted crops, only where the first two leave the call open
    if tta:
        open_calls = []
        for i in range(len(labels)):
            pair = [v for v in (variant_p[(i, 0)], variant_p[(i, 1)]) if v is not None]
            if pair and (max(pair) - min(pair) > SETTLED_SPREAD or abs(float(np.mean(pair)) - 0.5) < SETTLED_MARGIN):
                open_calls.append(i)
        shift_jobs = [(i, 2 + k, crop(labels[i], np.asarray(sh, dtype=float))[0])
                      for i in open_calls for k, sh in enumerate(SHIFTS_MM)]
        shifted = _run(net, shift_jobs, extra, device, None, labels)
        probs.update(shifted)
        variant_p.update(variant_probabilities(shifted))
    from scipy import ndimage

    out: list[VertebraSegmentation] = []
    for i, (label, start) in enumerate(zip(labels, starts)):
        p = probs[(i, 0)]
        variants = []
        if tta:
            variants = [variant_p[(i, k)] for k in range(2 + len(SHIFTS_MM)) if (i, k) in variant_p]
            p = 0.5 * (p + probs[(i, 1)])
        fg = p[1] + p[2]
        keep = central_component(fg >= FOREGROUND)
        near = ndimage.binary_dilation(keep, iterations=2)  # keep the soft edge for interpolation
        out.append(VertebraSegmentation(label, grid.zyx_to_lps(start.astype(float)),
                                        np.where(near, fg, 0.0).astype(np.float32),
                                        np.where(near, p[2], 0.0).astype(np.float32),
                                        tuple(v for v in variants if v is not None)))
    return out


#: Test-time variants: the shifted crops are skipped where the crop and its mirror image agree within
#: this (fracture probability) …
SETTLED_SPREAD = 0.15
#: … and their mean is at least this far from 0.5 (the shifts rarely move such a call across it).
SETTLED_MARGIN = 0.3


def _run(net: Any, jobs: list[tuple[int, int, np.ndarray]], extra: np.ndarray | None, device: str,
         progress: Any, labels: list[int]) -> dict[tuple[int, int], np.ndarray]:
    """Softmax probabilities (3, z, y, x) of each (vertebra index, variant) crop, :data:`BATCH` crops a pass."""
    import torch

    out: dict[tuple[int, int], np.ndarray] = {}
    for b in range(0, len(jobs), BATCH):
        chunk = jobs[b: b + BATCH]
        crops = [np.stack([c, extra]) if extra is not None else c[None] for _, _, c in chunk]
        with torch.inference_mode():
            logits = net(torch.from_numpy(np.ascontiguousarray(np.stack(crops))).to(device))
            probs = torch.softmax(logits.float(), dim=1).cpu().numpy()
        for (i, k, _), q in zip(chunk, probs):
            out[(i, k)] = q
        if progress is not None:
            done = chunk[-1][0] + 1
            progress(min(1.0, done / len(labels)), ", ".join(str(labels[i]) for i in sorted({j[0] for j in chunk})))
    return out


def assemble(segs: list[VertebraSegmentation], reference: Volume, spacing_mm: float,
             centroids_lps: dict[int, np.ndarray]) -> tuple[np.ndarray, dict[int, float]]:
    """Paste the crops' foreground into ``reference``'s geometry; returns the labelmap (z, y, x, uint8)
    and the fracture probability of each vertebra over its assembled voxels."""
    from scipy import ndimage

    shape = reference.array.shape
    best = np.zeros(shape, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.uint8)
    ratios: list[tuple[int, tuple[slice, ...], np.ndarray]] = []  # P(fractured) / P(vertebra) per crop
    # input voxel (i, j, k) → LPS → crop voxel (z, y, x) of an LPS-aligned crop
    for seg in segs:
        if not seg.foreground.any():
            continue
        nz = np.argwhere(seg.foreground > 0)
        lo_c, hi_c = nz.min(axis=0) - 1, nz.max(axis=0) + 1  # crop zyx bounding box
        corners_zyx = np.array([[z, y, x] for z in (lo_c[0], hi_c[0]) for y in (lo_c[1], hi_c[1]) for x in (lo_c[2], hi_c[2])], float)
        corners_lps = seg.origin_lps + corners_zyx[:, ::-1] * spacing_mm
        ijk = reference.lps_to_index(corners_lps)  # (8, 3) x, y, z index
        lo = np.maximum(np.floor(ijk.min(axis=0)).astype(int), 0)
        hi = np.minimum(np.ceil(ijk.max(axis=0)).astype(int) + 1, np.array(reference.shape_xyz))
        if np.any(hi <= lo):
            continue
        gi, gj, gk = np.meshgrid(*(np.arange(a, b) for a, b in zip(lo, hi)), indexing="ij")
        pts = np.stack([gi.ravel(), gj.ravel(), gk.ravel()], axis=1)
        lps = reference.index_to_lps(pts)
        crop_xyz = (lps - seg.origin_lps) / spacing_mm
        coords = crop_xyz[:, ::-1].T  # z, y, x
        fg = ndimage.map_coordinates(seg.foreground, coords, order=1, cval=0.0)
        fr = ndimage.map_coordinates(seg.fractured, coords, order=1, cval=0.0)
        dist = np.linalg.norm(lps - np.asarray(centroids_lps[seg.label]), axis=1)
        score = fg - 1e-4 * dist  # ties go to the nearer centroid
        # as (k, j, i) = (z, y, x) arrays of the reference
        sl = (slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0]))
        score_zyx = score.reshape(gi.shape).transpose(2, 1, 0)
        fg_zyx = fg.reshape(gi.shape).transpose(2, 1, 0)
        win = (score_zyx > best[sl]) & (fg_zyx >= FOREGROUND)
        best[sl] = np.where(win, score_zyx, best[sl])
        labels[sl] = np.where(win, seg.label, labels[sl])
        ratios.append((seg.label, sl, fracture_ratio(fr, fg).reshape(gi.shape).transpose(2, 1, 0)))
    probs: dict[int, float] = {}
    for label, sl, ratio in ratios:  # over the voxels the vertebra kept after all crops were pasted
        mine = labels[sl] == label
        if mine.any():
            probs[label] = float(ratio[mine].mean())
    return labels, probs


def model_input(volume: Volume, spacing_mm: float,
                inputs: dict[float, tuple[Volume, np.ndarray]] | None = None) -> tuple[Volume, np.ndarray]:
    """``volume`` on the network's LPS-aligned grid at ``spacing_mm``, and that grid normalised as the
    network's input. With ``inputs`` (a dict kept for one analysis of one image, e.g. the pipeline
    context's ``model_inputs``) each spacing is resampled once and then reused."""
    from VertebralFractureLib import preprocess

    key = float(spacing_mm)
    if inputs is not None and key in inputs:
        return inputs[key]
    grid = preprocess.to_model_grid(volume, key)
    made = (grid, preprocess.normalize(grid.array))
    if inputs is not None:
        inputs[key] = made
    return made


def segment(volume: Volume, centroids_lps: dict[int, np.ndarray], device: str = "cpu",
            model: tuple[Any, Any] | None = None, progress: Any = None,
            tta: bool = True, inputs: dict[float, tuple[Volume, np.ndarray]] | None = None,
            outputs: dict[tuple, np.ndarray] | None = None) -> tuple[Volume, dict[int, float], dict[int, float]]:
    """Vertebra labelmap (input geometry, VerSe labels), per-vertebra fracture probability and its
    spread over the test-time variants (0 without ``tta``).

    Args:
        volume: CT in HU, any geometry.
        centroids_lps: label → centroid (LPS mm), e.g. from stage 1.
        device: torch device string.
        model: ``(card, network)`` instead of the installed ``segmentation`` model.
        progress: ``progress(fraction, message)``.
        tta: average the fracture probability over mirrored and shifted crops (:func:`segment_crops`).
        inputs: the CT on the model grids, kept for one analysis (:func:`model_input`).
        outputs: the network's output for crops already run in this analysis (:func:`segment_crops`).
    """
    from VertebralFractureLib import models
    from VertebralFractureLib.networks.unet import build_unet

    card, net = model if model is not None else models.load_network("segmentation", build_unet, cached=True)
    net.eval().to(device)
    spacing = float(card.spacing_mm[0])
    grid, image = model_input(volume, spacing, inputs)
    segs = segment_crops(net, grid, image, centroids_lps, tuple(card.patch_size), device, progress, tta=tta,
                         outputs=outputs)
    labels, probs = assemble(segs, volume, spacing, centroids_lps)
    spread: dict[int, float] = {}
    for seg in segs:
        if seg.label in probs and seg.variant_probabilities:
            # the assembled probability and the variants' own, averaged; spread = their range
            values = [probs[seg.label], *seg.variant_probabilities]
            probs[seg.label] = float(np.mean(values))
            spread[seg.label] = float(max(values) - min(values))
    return volume.with_array(labels), probs, spread


@dataclass(frozen=True)
class ChainOutlines:
    """Stage 2's first impression of a stage-1 chain: one crop per member, no test-time variants.

    ``shared``: for each pair of consecutive members, the share of the smaller of their two
    outlines (each crop's central component) that the other covers — near 0 for two vertebrae,
    about 0.5 or more when both crops outline the same one. ``centres``: each outline's centre of
    mass (LPS mm; NaN where the crop outlined nothing).
    """

    shared: np.ndarray
    centres: np.ndarray


def chain_outlines(volume: Volume, positions_lps: np.ndarray, device: str = "cpu",
                   model: tuple[Any, Any] | None = None,
                   inputs: dict[float, tuple[Volume, np.ndarray]] | None = None,
                   outputs: dict[tuple, np.ndarray] | None = None) -> ChainOutlines:
    """Outline a crop around each of ``positions_lps`` (n, 3; a chain, cranial → caudal) and measure
    how much consecutive outlines share (:class:`ChainOutlines`); stage 1 uses it to count a vertebra
    outlined twice once (:func:`.localize.merge_same_outlines`). ``inputs``: see :func:`model_input`;
    ``outputs``: the network's output for each crop is left there for stage 2's first look
    (:func:`segment_crops`)."""
    from VertebralFractureLib import models
    from VertebralFractureLib.networks.unet import build_unet

    card, net = model if model is not None else models.load_network("segmentation", build_unet, cached=True)
    net.eval().to(device)
    grid, image = model_input(volume, float(card.spacing_mm[0]), inputs)
    positions = np.asarray(positions_lps, dtype=float).reshape(-1, 3)
    segs = segment_crops(net, grid, image, {k: p for k, p in enumerate(positions)}, tuple(card.patch_size),
                         device, tta=False, outputs=outputs, store=outputs is not None)
    outlines = []
    centres = np.full((len(segs), 3), np.nan)
    for k, seg in enumerate(segs):
        keep = central_component(seg.foreground >= FOREGROUND)
        start = np.round(grid.lps_to_index(seg.origin_lps)[::-1]).astype(int)
        outlines.append((start, keep))
        if keep.any():
            centres[k] = grid.zyx_to_lps(start + np.argwhere(keep).mean(axis=0))
    shared = np.array([_shared(outlines[k], outlines[k + 1]) for k in range(len(outlines) - 1)])
    return ChainOutlines(shared, centres)


def _shared(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> float:
    """The share of the smaller of two crop masks (start index, mask on one grid) that both cover."""
    (start_a, mask_a), (start_b, mask_b) = a, b
    smaller = min(int(mask_a.sum()), int(mask_b.sum()))
    lo = np.maximum(start_a, start_b)
    hi = np.minimum(start_a + np.array(mask_a.shape), start_b + np.array(mask_b.shape))
    if smaller == 0 or np.any(hi <= lo):
        return 0.0
    part_a = mask_a[tuple(slice(lo_k - s, hi_k - s) for lo_k, hi_k, s in zip(lo, hi, start_a))]
    part_b = mask_b[tuple(slice(lo_k - s, hi_k - s) for lo_k, hi_k, s in zip(lo, hi, start_b))]
    return float((part_a & part_b).sum()) / smaller


def grow_outlines(labels: np.ndarray, volume: Volume, card: Any,
                  centroids_lps: dict[int, np.ndarray] | None = None) -> np.ndarray:
    """:func:`.bone_growth.grow_into_bone` with the settings of the card's ``postprocess.bone_growth``
    (``hu``, ``max_mm``; the module's defaults where the card has none), around the centres the
    outlines were drawn around."""
    from VertebralFractureLib import bone_growth

    settings = dict(getattr(card, "postprocess", {}) or {}).get("bone_growth", {}) or {}
    return bone_growth.grow_into_bone(labels, np.asarray(volume.array), tuple(float(s) for s in volume.spacing[::-1]),
                                      volume.zyx_to_lps, hu_threshold=float(settings.get("hu", bone_growth.HU)),
                                      max_mm=float(settings.get("max_mm", bone_growth.MAX_MM)),
                                      centroids_lps=centroids_lps)


def run_stage(context: Any) -> None:
    """Pipeline stage 2: fill ``context.labelmap`` (the network's outlines around the given or stage-1
    centres, which stage 3 and the second opinions measure, as they were validated),
    ``context.completed_labelmap`` (the segmentation written out: with stage 1's centres a second
    look around those outlines' centres — ``refine_centroids`` —, completed into the bone they touch,
    :func:`grow_outlines`), ``context.fracture_map`` and each vertebra's ``fracture_probability``
    and ``status`` (from the first look, with its test-time variants)."""
    from VertebralFractureLib.models import require, select_device

    cents = {lab: np.asarray(v.centroid_lps_mm) for lab, v in context.vertebrae.items()}
    if not cents:
        context.warnings.append("segmentation skipped: no vertebra was found")
        return
    device = select_device(context.config.device)
    labelmap, probs, spread = segment(context.image, cents, device=device,
                                      progress=lambda f, m: context.report("segment", 0.1 + 0.6 * f, m),
                                      tta=context.config.test_time_augmentation, inputs=context.model_inputs,
                                      outputs=context.crop_outputs)
    context.crop_outputs.clear()  # what stage 1's outline check left is used or no longer needed
    outline, around = labelmap, cents
    if context.config.refine_centroids and getattr(context, "centroids_from_stage1", False):
        # a second look, without test-time variants, around the centres of the first outlines
        around = outline_centres(labelmap, cents)
        second, _, _ = segment(context.image, around, device=device, tta=False, inputs=context.model_inputs,
                               progress=lambda f, m: context.report("segment", 0.7 + 0.2 * f, "second look: " + m))
        outline = labelmap.with_array(same_vertebrae(np.asarray(second.array), np.asarray(labelmap.array)))
    if context.config.bone_growth:
        context.report("segment", 0.92, "completing the outlines into the bone")
        outline = outline.with_array(grow_outlines(np.asarray(outline.array), context.image,
                                                   require("segmentation"), around))
    if outline is not labelmap:
        context.completed_labelmap = outline
    context.report("segment", 0.95, "fracture map")
    for label, v in context.vertebrae.items():
        p = probs.get(label)
        if p is None:
            v.mark_not_assessable("stage 2 drew no outline around its centre (no voxel above the foreground "
                                  "probability): nothing to measure or judge there")
            continue
        v.fracture_probability = p
        v.fracture_probability_spread = spread.get(label)
        v.status = "fractured" if p >= context.config.fracture_threshold else "normal"
    context.labelmap = labelmap
    context.masks_from_stage2 = True
    context.fracture_map = fracture_map_of(labelmap, context.vertebrae)
    context.model_inputs.clear()  # the later stages work on the CT itself


def same_vertebrae(second: np.ndarray, first: np.ndarray) -> np.ndarray:
    """The second look's label map holding the first look's vertebrae: a vertebra the second look
    lost keeps its first outline (where the second left the voxels free); one the first look did not
    outline is dropped (it has no call)."""
    labels = np.unique(first[first > 0])
    out = np.where(np.isin(second, labels), second, 0).astype(second.dtype)
    for lab in np.setdiff1d(labels, np.unique(out)):
        out[(first == lab) & (out == 0)] = lab
    return out


def outline_centres(labelmap: Volume, centroids_lps: dict[int, np.ndarray],
                    max_mm: float = MAX_RECENTRE_MM) -> dict[int, np.ndarray]:
    """Each centroid moved to the centre of mass of its outline in ``labelmap`` where that is at most
    ``max_mm`` away (the others, and those without an outline, as they were)."""
    from VertebralFractureLib.slices import mask_centres

    out = {lab: np.asarray(c, float) for lab, c in centroids_lps.items()}
    for lab, new in mask_centres(labelmap, out).items():
        if np.linalg.norm(new - out[lab]) <= max_mm:
            out[lab] = np.asarray(new, float)
    return out


def recentre(vertebrae: dict[int, Any], labelmap: Volume, max_mm: float = MAX_RECENTRE_MM) -> None:
    """Move each centroid to the centre of mass of its vertebra's outline (the VerSe centroid), when
    that is at most ``max_mm`` away. Stage 1's heatmap peaks sit 8–17 mm behind the body centres on
    real CT (docs/localization.md); the outline, from a network trained with real crops, places the
    vertebra better. The pipeline does this for stage 1's centroids once every stage has run (stages
    2 and 3 work from stage 1's, as they were validated); centroids the user gave are never moved."""
    moved = outline_centres(labelmap, {lab: np.asarray(v.centroid_lps_mm, float) for lab, v in vertebrae.items()}, max_mm)
    for lab, v in vertebrae.items():
        v.centroid_lps_mm = tuple(float(x) for x in moved[lab])
