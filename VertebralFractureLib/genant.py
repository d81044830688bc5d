"""Genant semi-quantitative grading from vertebral body heights (ARCHITECTURE §4).

Genant HK et al., "Vertebral fracture assessment using a semiquantitative technique",
J Bone Miner Res 1993. Heights on the mid-sagittal plane: anterior ``Ha``, middle ``Hm``,
posterior ``Hp``. Height reduction is measured against the same vertebra's reference height:

* wedge:     ``1 - Ha / Hp``
* biconcave: ``1 - Hm / Hp``
* crush:     ``1 - Hp / Hp_ref`` where ``Hp_ref`` is the mean posterior height of the neighbours

The largest reduction gives the grade (< 20 % → 0, 20–25 % → 1, 25–40 % → 2, > 40 % → 3) and the
type. A taller anterior than posterior height (normal lordotic L4/L5 shape) is no reduction.

The seed paper's score ``G = min(Ha, Hm, Hp) / max(Ha, Hm, Hp)`` (classes: G < 0.74
moderate-severe, 0.74 ≤ G < 0.8 mild, else normal) is reported beside the standard grade.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from VertebralFractureLib.analysis import HEIGHT_NAMES, KEYPOINT_NAMES, GenantResult

#: Upper bounds of the height reduction for grades 0, 1, 2 (above the last: grade 3).
GRADE_THRESHOLDS: tuple[float, float, float] = (0.20, 0.25, 0.40)
#: The seed's G thresholds: below 0.74 moderate-severe, below 0.80 mild.
SEED_THRESHOLDS: tuple[float, float] = (0.74, 0.80)

#: Vertebrae without a Genant grade: the atlas has no body and the axis carries the dens, so their
#: heights mean something else (they are not used as crush references either).
NOT_GRADED: frozenset[int] = frozenset({1, 2})
#: Above this slice spacing (mm, along the patient's superior axis) grades come with a warning: on
#: SynthSpine, exact-grade agreement fell from 0.97 (≤ 1.25 mm) to 0.73 (> 2.5 mm), docs/grading.md.
THICK_SLICE_MM = 2.5


def grade_from_reduction(reduction: float) -> int:
    """Genant grade 0–3 of a fractional height reduction (0.3 = 30 % lower)."""
    if not np.isfinite(reduction):
        raise ValueError(f"height reduction must be finite, got {reduction}")
    if reduction < GRADE_THRESHOLDS[0]:
        return 0
    if reduction < GRADE_THRESHOLDS[1]:
        return 1
    if reduction <= GRADE_THRESHOLDS[2]:
        return 2
    return 3


def seed_class(g: float) -> str:
    """The seed paper's class of ``G = min/max``."""
    if g < SEED_THRESHOLDS[0]:
        return "moderate-severe"
    if g < SEED_THRESHOLDS[1]:
        return "mild"
    return "normal"


def heights_from_keypoints(keypoints: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """Anterior, middle and posterior heights (mm): distances between the keypoint pairs."""
    missing = set(KEYPOINT_NAMES) - set(keypoints)
    if missing:
        raise ValueError(f"missing keypoints {sorted(missing)}")
    out = {}
    for h, p in zip(HEIGHT_NAMES, ("A", "M", "P")):
        a = np.asarray(keypoints[f"{p}_sup"], dtype=float)
        b = np.asarray(keypoints[f"{p}_inf"], dtype=float)
        out[h] = float(np.linalg.norm(a - b))
    return out


def grade(
    heights: Mapping[str, float], neighbour_posterior_mm: Sequence[float] | None = None
) -> GenantResult:
    """Grade one vertebra from its heights.

    Args:
        heights: ``{"anterior": Ha, "middle": Hm, "posterior": Hp}`` in mm, all > 0.
        neighbour_posterior_mm: posterior heights of the adjacent (ungraded-as-crushed) vertebrae,
            for the crush comparison; without them crush cannot be assessed.

    Returns:
        The :class:`GenantResult` (``ratio`` = 1 − largest reduction).

    Raises:
        ValueError: for missing or non-positive heights.
    """
    try:
        ha, hm, hp = (float(heights[k]) for k in HEIGHT_NAMES)
    except KeyError as err:
        raise ValueError(f"heights need {HEIGHT_NAMES}, got {sorted(heights)}") from err
    if min(ha, hm, hp) <= 0 or not np.all(np.isfinite([ha, hm, hp])):
        raise ValueError(f"heights must be positive, got Ha={ha}, Hm={hm}, Hp={hp}")
    reductions = {"wedge": 1.0 - ha / hp, "biconcave": 1.0 - hm / hp}
    refs = [float(x) for x in (neighbour_posterior_mm or []) if x is not None and x > 0]
    if refs:
        reductions["crush"] = 1.0 - hp / float(np.mean(refs))
    kind = max(reductions, key=lambda k: reductions[k])
    reduction = max(0.0, reductions[kind])
    g = grade_from_reduction(reduction)
    seed_g = min(ha, hm, hp) / max(ha, hm, hp)
    return GenantResult(
        ratio=1.0 - reduction,
        grade=g,
        type=kind if g > 0 else None,
        seed_ratio=seed_g,
        seed_class=seed_class(seed_g),
    )


#: Default confidence (lowest of the six heatmap peaks) below which the learned keypoints give way
#: to the geometric ones, when the model card names none.
DEFAULT_MIN_PEAK = 0.3


def select_keypoint_model(context: Any, given: tuple[Any, Any] | None = None) -> tuple[Any, Any] | None:
    """The keypoint network stage 3 uses: ``given``, else the installed ``keypoints`` model, or None
    (geometric keypoints) — by ``context.config.keypoints``.

    Raises:
        ModelNotAvailableError: when ``keypoints="learned"`` and the model is missing or damaged.
    """
    from VertebralFractureLib import models
    from VertebralFractureLib.keypoints import build_keypoint_network

    method = context.config.keypoints
    if method == "geometric":
        return None
    if given is not None:
        return given
    status = models.model_status("keypoints")
    if status != "ok" and method == "auto":
        if status == "corrupt":
            context.warnings.append("the keypoint model file fails its sha256 check: geometric keypoints used")
        return None
    card, net = models.load_network("keypoints", build_keypoint_network, cached=True)  # raises when missing/corrupt
    context.models["keypoints"] = {"version": card.version, "sha256": card.sha256}
    return card, net.to(models.select_device(context.config.device))


def run_stage(context: Any, keypoint_model: tuple[Any, Any] | None = None) -> None:
    """Pipeline stage 3: keypoints, heights and Genant grade for every complete vertebra.

    Keypoints come from the 2D M-SCN on each vertebra's sagittal mask planes
    (:func:`.keypoints.learned_keypoints`) where its model is installed and the network is
    confident (lowest heatmap peak ≥ the card's ``postprocess.min_peak``), else they are measured
    on the mid-sagittal mask slice (:func:`.keypoints.geometric_keypoints`); ``keypoint_method``
    says which. Vertebrae cut by the field of view are not graded. Then every graded vertebra is
    checked against the image and its neighbours and the call is made (:func:`.assess.assess`): a
    vertebra failing a check is "not assessable" with the reason and loses its grade. When no
    fracture classifier has set a vertebra's probability, the status follows the grade.

    Args:
        context: the :class:`~VertebralFractureLib.pipeline.Context` (needs ``labelmap``).
        keypoint_model: ``(card, network)`` to use instead of the installed keypoint model.
    """
    from scipy import ndimage

    from VertebralFractureLib.anatomy import neighbours
    from VertebralFractureLib.keypoints import geometric_keypoints, learned_keypoints, sagittal_view
    from VertebralFractureLib.models import select_device
    from VertebralFractureLib.sagittal import local_spine_axis

    if context.labelmap is None:
        if not context.vertebrae:  # nothing was found: stage 2 said so, nothing to grade
            return
        raise ValueError("grading needs a vertebra labelmap (run segmentation or give one)")
    results = context.vertebrae
    centroids = {lab: np.asarray(v.centroid_lps_mm) for lab, v in results.items()}
    for lab in NOT_GRADED & set(results):
        results[lab].notes.append("not graded: Genant grading does not apply to the atlas and axis (C1, C2)")
    todo = [lab for lab, v in results.items() if v.complete and lab not in NOT_GRADED]
    model = select_keypoint_model(context, keypoint_model) if todo else None
    device = select_device(context.config.device)
    min_peak = float(model[0].postprocess.get("min_peak", DEFAULT_MIN_PEAK)) if model is not None else None
    lab_vol = context.labelmap
    slice_mm = lab_vol.slice_mm
    if todo and slice_mm > THICK_SLICE_MM:
        context.warnings.append(
            f"{slice_mm:.1f} mm slices: vertebral heights are uncertain by about a millimetre or more, "
            "so grade-1 (mild) results in particular may be wrong; prefer thin-slice reconstructions")
    boxes = ndimage.find_objects(context.labelmap.array)
    for k, lab in enumerate(todo):
        v = results[lab]
        context.report("grade", k / max(1, len(todo)), f"keypoints {v.name}")
        axis = local_spine_axis(lab, centroids)
        box = boxes[lab - 1] if lab <= len(boxes) else None
        try:
            if box is None:
                raise ValueError("no voxels in the labelmap")
            crop = context.labelmap.crop(tuple(slice(max(0, s.start - 1), s.stop + 1) for s in box))
            view = sagittal_view(crop, lab, centroids[lab], axis)
            kp, method = None, "geometric"
            if model is not None:
                learned, confidence = learned_keypoints(view, model, device)
                if confidence < min_peak:
                    v.notes.append(f"keypoint network not confident (lowest peak {confidence:.2f} < {min_peak:.2f}): "
                                   "keypoints measured on the mask")
                elif min(heights_from_keypoints(learned.keypoints_lps_mm).values()) < 1.0:
                    v.notes.append("keypoint network not confident (a height under 1 mm): keypoints measured on the mask")
                else:
                    kp, method = learned, "learned"
            if kp is None:
                kp = geometric_keypoints(crop, lab, centroids[lab], axis, view=view)
        except ValueError as err:
            v.notes.append(f"not graded: {err}")
            context.warnings.append(f"{v.name}: not graded ({err})")
            continue
        v.keypoints_lps_mm = kp.keypoints_lps_mm
        v.keypoint_method = method
        v.heights_mm = heights_from_keypoints(kp.keypoints_lps_mm)
        v.notes.extend(kp.notes)
    for lab in todo:
        v = results[lab]
        if v.heights_mm is None:
            continue
        refs = [results[n].heights_mm["posterior"] for n in neighbours(lab, results)
                if n is not None and results[n].heights_mm is not None]
        v.genant = grade(v.heights_mm, refs)
    from VertebralFractureLib.assess import assess

    context.report("grade", 0.95, "checking masks and keypoints against the image")
    assess(context)
