"""The checks a careful reader makes before a vertebra gets a fracture call or a Genant grade.

Stage 2 and stage 3 each see only part of the evidence: the U-Net's fracture probability is an
impression of the crop, the keypoints are measured on a mask that may cover half the body. Before
anything is called, each graded vertebra is checked:

0. **The body is whole in the image** — no endplate keypoint lies within
   :attr:`AssessmentLimits.edge_voxels` voxels of the image's faces. A vertebra whose centroid is
   far enough from the end of the scan to count as complete can still have an endplate cut off
   there; its heights would then be the image's, not the vertebra's (a wedge where the scan ends).
1. **The bone is there** — the median HU inside the vertebra's mask is that of bone
   (:attr:`AssessmentLimits.min_mask_hu`), not soft tissue or an empty image.
2. **The body outline is recognised** — on a stage-2 mask, the learned keypoint network must be
   confident (:mod:`.keypoints`); where it is not, the mask does not look like a vertebral body
   (on real CT: a mask that misses half the body), and keypoints measured on it would grade the
   mask, not the vertebra. A mask the user gave (``grade``) or ``--keypoints geometric`` is
   measured as it is.
3. **The mask is plausible beside its neighbours** — body depth (anterior to posterior column) and
   mask volume within a range of the median of up to three levels on each side (levels change gradually along the spine;
   a mask covering half the body does not; a fracture lowers heights, not the depth).

A vertebra failing a check gets ``status: "not assessable"`` with the reason and no grade.

The call (:func:`decide`) combines stage 2's probability (averaged over test-time variants) with the
morphometry: **fractured** needs both a height reduction (Genant grade ≥ 1) and the network's
fracture probability at the threshold; a moderate or severe height reduction (grade ≥ 2) that the
network does not see is **not assessable** (the two disagree, a reader should look), and a
fracture impression without height loss stays **normal** with a note. See docs/assessment.md for
how the limits were chosen and what they do on real and synthetic CT.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from VertebralFractureLib.volume import Volume


@dataclass(frozen=True)
class AssessmentLimits:
    """Tolerances of the checks (see docs/assessment.md).

    Attributes:
        edge_voxels: an endplate keypoint this close to a face of the image (voxels along that
            axis; a cut mask's keypoints land 1–1.5 voxels inside) means the body is cut there.
        min_mask_hu: lowest median HU inside a vertebra's mask (bone; soft tissue is 20–60 HU).
        require_confident_keypoints: on stage-2 masks, a vertebra whose keypoints had to be
            measured on the mask (the keypoint network not confident) is not assessable.
        depth_ratio: accepted body depth relative to the neighbours' median.
        volume_ratio: accepted mask volume relative to the neighbours' median.
    """

    edge_voxels: float = 2.0
    min_mask_hu: float = 100.0
    require_confident_keypoints: bool = True
    depth_ratio: tuple[float, float] = (0.7, 1.4)
    volume_ratio: tuple[float, float] = (0.45, 2.2)


#: Levels on each side whose median a vertebra's depth and volume are compared with.
NEIGHBOUR_LEVELS = 3
#: Body depth between the anterior and posterior measuring columns relative to the level's whole
#: body depth (VerSe statistics, :data:`~.synth.priors.LEVELS`): median 0.82 over 76 vertebrae of 8
#: SynthSpine validation cases (per case 0.74–0.90; the real development scans named right 0.79–0.89).
COLUMN_DEPTH_SHARE = 0.82
#: Unanchored names are called implausible when the assessed bodies' median depth, relative to the
#: names' expected depth × :data:`COLUMN_DEPTH_SHARE`, lies outside this range (a subject's size
#: varies by ±15 %; adjacent levels by 3–5 %, so only names several levels off are caught).
NAME_DEPTH_RANGE = (0.7, 1.4)


def body_depth_mm(kp: Mapping[str, Sequence[float]]) -> float:
    """Distance between the anterior and posterior measuring columns (mm)."""
    p = {k: np.asarray(v, dtype=float) for k, v in kp.items()}
    return float(np.linalg.norm(0.5 * (p["A_sup"] + p["A_inf"]) - 0.5 * (p["P_sup"] + p["P_inf"])))


def edge_check(keypoints: Mapping[str, Sequence[float]], grid: Volume, limits: AssessmentLimits) -> list[str]:
    """Check 0 for one vertebra: its six endplate keypoints lie inside the image, away from its faces."""
    ijk = np.asarray(grid.lps_to_index(np.array([keypoints[k] for k in sorted(keypoints)], dtype=float)))
    size = np.asarray(grid.shape_xyz, dtype=float)
    # distance (voxels) of each keypoint to the lower and upper face along each index axis
    gap = np.minimum(ijk + 0.5, size - 0.5 - ijk)
    if float(gap.min()) >= limits.edge_voxels:
        return []
    k, axis = np.unravel_index(int(np.argmin(gap)), gap.shape)
    mm = float(gap[k, axis]) * float(grid.spacing[axis])
    where = f"lies {mm:.1f} mm from the edge of the image" if mm > 0 else "lies outside the image"
    return [f"cut by the field of view: an endplate {where}, so the body may continue outside it"]


def bone_check(image: Volume, labelmap: Volume, label: int, limits: AssessmentLimits) -> list[str]:
    """Check 1 for one vertebra: the median HU inside its mask is that of bone."""
    values = np.asarray(image.array)[np.asarray(labelmap.array) == label]
    median_hu = float(np.median(values)) if values.size else float("nan")
    if values.size and median_hu >= limits.min_mask_hu:
        return []
    return [f"the mask does not lie on bone (median {median_hu:.0f} HU < {limits.min_mask_hu:.0f})"]


def neighbour_checks(values: Mapping[int, float], label: int, neighbours: Sequence[int | None],
                     bounds: tuple[float, float], what: str, unit: str) -> list[str]:
    """Check 3 for one measurement: the vertebra's value against the median of its neighbours'."""
    refs = [values[n] for n in neighbours if n is not None and n in values]
    if not refs or label not in values:
        return []
    ref = float(np.median(refs))
    ratio = values[label] / ref if ref > 0 else float("inf")
    if bounds[0] <= ratio <= bounds[1]:
        return []
    return [f"{what} {values[label]:.0f} {unit} against {ref:.0f} {unit} for the neighbours (×{ratio:.2f})"]


def naming_size_check(vertebrae: Mapping[int, Any], min_vertebrae: int = 3) -> str | None:
    """Whether unanchored names fit the body sizes: a warning when they do not (None when they do, or
    when the names are anchored or fewer than ``min_vertebrae`` bodies were assessed).

    The depth between the measuring columns of every assessed vertebra is compared with the depth
    its name leads one to expect (VerSe statistics); a median ratio outside :data:`NAME_DEPTH_RANGE`
    means the names are several levels off (a lumbar spine named as an upper thoracic one). The
    levels whose expected depths fit best are named in the warning.
    """
    from VertebralFractureLib.anatomy import cranio_caudal, name_of
    from VertebralFractureLib.synth.priors import LEVELS

    labels = [lab for lab in cranio_caudal(vertebrae)
              if vertebrae[lab].keypoints_lps_mm is not None and vertebrae[lab].status in ("normal", "fractured")
              and name_of(lab) in LEVELS]
    if len(labels) < min_vertebrae or any(vertebrae[lab].naming is None or vertebrae[lab].naming.get("anchor")
                                          for lab in labels):  # names given, from masks, or anchored
        return None
    depths = np.array([body_depth_mm(vertebrae[lab].keypoints_lps_mm) for lab in labels])
    names = [name_of(lab) for lab in labels]

    def ratio_to(levels: list[str]) -> float:  # median measured / expected depth
        return float(np.median(depths / np.array([LEVELS[n].depth * COLUMN_DEPTH_SHARE for n in levels])))

    ratio = ratio_to(names)
    if NAME_DEPTH_RANGE[0] <= ratio <= NAME_DEPTH_RANGE[1]:
        return None
    order = [n for n in LEVELS if n not in ("T13", "L6")]
    runs = [order[k:k + len(names)] for k in range(len(order) - len(names) + 1)]
    best = min(runs, key=lambda run: abs(np.log(ratio_to(run))))  # the run of levels whose depths fit best
    return (f"vertebra names do not fit the body sizes: {names[0]}–{names[-1]} measure a median "
            f"{ratio:.2f} × the depth expected at those levels, like {best[0]}–{best[-1]}; the names are not "
            "anchored and are probably several levels off — check them or place the centroids yourself")


def decide(grade: int, probability: float | None, threshold: float) -> tuple[str, str | None, str | None]:
    """The call from the Genant grade and stage 2's fracture probability.

    Returns:
        ``(status, reason_if_not_assessable, note)``.
    """
    if probability is None:  # no fracture classifier ran: the heights decide
        return ("fractured" if grade >= 1 else "normal"), None, "status from the Genant grade (no fracture classifier run)"
    if grade >= 1 and probability >= threshold:
        return "fractured", None, None
    if grade >= 2:
        return ("not assessable",
                f"the heights show a grade-{grade} reduction but the image does not look fractured "
                f"(probability {probability:.2f} < {threshold:.2f}): a reader should look", None)
    if grade == 1:
        return "normal", None, f"mild height reduction (grade 1) without a fracture appearance (probability {probability:.2f})"
    if probability >= threshold:
        return "normal", None, (f"the network suspects a fracture (probability {probability:.2f}) but the heights "
                                "are normal (Genant grade 0)")
    return "normal", None, None


def assess(context: Any, limits: AssessmentLimits | None = None, threshold: float | None = None) -> None:
    """Run the checks on every graded vertebra of ``context`` and make the call.

    Args:
        context: the pipeline context after stage 3 (vertebrae with heights and grades).
        limits: tolerances; default :class:`AssessmentLimits`.
        threshold: fracture-probability threshold; default ``context.config.fracture_threshold``.
    """
    from scipy import ndimage

    from VertebralFractureLib.anatomy import cranio_caudal

    limits = limits or AssessmentLimits()
    threshold = context.config.fracture_threshold if threshold is None else threshold
    results = context.vertebrae
    graded = {lab: v for lab, v in results.items() if v.genant is not None and v.keypoints_lps_mm is not None}
    for lab, v in results.items():  # a call needs the heights: appearance alone is not enough
        if lab not in graded and v.status == "fractured":
            why = "cut by the field of view" if not v.complete else "its heights could not be measured"
            v.mark_not_assessable(f"the image suggests a fracture (probability {v.fracture_probability:.2f}) but "
                                  f"the vertebra is not graded ({why}): a reader should look")
    if not graded:
        _update_fracture_map(context)
        return
    image, labelmap = context.image, context.labelmap
    has_ct = image is not None and bool(np.any(np.asarray(image.array) != 0))  # all zero: no CT given (grade -s)
    depths = {lab: body_depth_mm(v.keypoints_lps_mm) for lab, v in graded.items()}
    labels = list(results)
    counts = ndimage.sum_labels(np.ones(labelmap.array.shape, np.int64), labelmap.array, labels)
    voxel_ml = float(np.prod(labelmap.spacing)) / 1000.0
    volumes = {lab: float(n) * voxel_ml for lab, n in zip(labels, counts)
               if results[lab].complete and n > 0}
    # keypoints measured on a stage-2 mask because the network did not recognise the body
    check_outline = (limits.require_confident_keypoints and context.config.keypoints == "auto"
                     and getattr(context, "masks_from_stage2", False))
    order = cranio_caudal(results)
    for lab, v in graded.items():
        # up to three levels on each side: one bad neighbour does not condemn a good vertebra
        k = order.index(lab)
        near = [n for n in order[max(0, k - NEIGHBOUR_LEVELS): k + NEIGHBOUR_LEVELS + 1] if n != lab]
        reasons = edge_check(v.keypoints_lps_mm, labelmap, limits)
        if reasons:  # cut by the field of view after all
            v.complete = False
        if has_ct:
            reasons += bone_check(image, labelmap, lab, limits)
        if check_outline and v.keypoint_method == "geometric":
            reasons.append("the keypoint network does not recognise a vertebral body in the mask "
                           "(probably incomplete): heights measured on it would be the mask's, not the vertebra's")
        reasons += neighbour_checks(depths, lab, near, limits.depth_ratio, "body depth", "mm")
        reasons += neighbour_checks(volumes, lab, near, limits.volume_ratio, "mask volume", "ml")
        if reasons:
            v.mark_not_assessable("; ".join(reasons))
            continue
        status, reason, note = decide(v.genant.grade, v.fracture_probability, threshold)
        if status == "not assessable":
            v.mark_not_assessable(reason)
        else:
            v.status = status
        if note:
            v.notes.append(note)
    if not has_ct:
        context.warnings.append("no CT given: the masks could not be checked against the bone in the image")
    sizes = naming_size_check(results)
    if sizes:
        context.warnings.append(sizes)
    _update_fracture_map(context)


def _update_fracture_map(context: Any) -> None:
    """The fracture map after the calls changed (a vertebra no longer fractured is 1)."""
    if context.fracture_map is not None:
        from VertebralFractureLib.segment import fracture_map_of

        context.fracture_map = fracture_map_of(context.labelmap, context.vertebrae)
