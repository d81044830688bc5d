"""The checks before a call (:mod:`VertebralFractureLib.assess`): known answers on small cases."""

from __future__ import annotations

import numpy as np
import pytest

from VertebralFractureLib.analysis import VertebraResult
from VertebralFractureLib.assess import AssessmentLimits, assess, bone_check, decide, neighbour_checks
from VertebralFractureLib.genant import grade
from VertebralFractureLib.pipeline import AnalysisConfig, Context
from VertebralFractureLib.volume import Volume


@pytest.mark.parametrize(
    ("grade_", "p", "status", "reason", "note"),
    [
        (2, 0.9, "fractured", False, False),
        (1, 0.6, "fractured", False, False),
        (3, 0.1, "not assessable", True, False),  # heights say fractured, the image does not
        (1, 0.2, "normal", False, True),  # mild height loss without a fracture appearance
        (0, 0.8, "normal", False, True),  # a fracture impression without height loss
        (0, 0.1, "normal", False, False),
    ],
)
def test_decide_combines_probability_and_morphometry(grade_, p, status, reason, note):
    got_status, got_reason, got_note = decide(grade_, p, 0.5)
    assert got_status == status
    assert (got_reason is not None) == reason
    assert (got_note is not None) == note


def test_decide_without_a_classifier_follows_the_grade():
    assert decide(2, None, 0.5)[0] == "fractured"
    assert decide(0, None, 0.5)[0] == "normal"


def test_neighbour_check_flags_only_outliers():
    depths = {19: 30.0, 20: 15.0, 21: 31.0, 22: 32.0}
    assert neighbour_checks(depths, 21, [20, 22], (0.7, 1.4), "body depth", "mm") == []  # median 23.5
    (msg,) = neighbour_checks(depths, 20, [19, 21], (0.7, 1.4), "body depth", "mm")
    assert "15 mm" in msg and "×0.49" in msg
    assert neighbour_checks(depths, 20, [], (0.7, 1.4), "body depth", "mm") == []  # nothing to compare with


def test_bone_check_refuses_a_mask_on_soft_tissue():
    ct = np.full((10, 10, 10), 40, np.int16)
    ct[:, :5] = 300
    lab = np.zeros(ct.shape, np.uint8)
    lab[2:8, 1:4, 2:8] = 20  # on bone
    lab[2:8, 6:9, 2:8] = 21  # on soft tissue
    image, labels = Volume(ct), Volume(lab)
    limits = AssessmentLimits()
    assert bone_check(image, labels, 20, limits) == []
    (msg,) = bone_check(image, labels, 21, limits)
    assert "does not lie on bone" in msg and "40 HU" in msg


def _stack_context(depths: dict[int, float], methods: dict[int, str], probability: float,
                   from_stage2: bool = True, keypoints: str = "auto") -> Context:
    """Three box vertebrae of the given body depths (mm) on bone, with keypoints and grades."""
    labels = sorted(depths)
    ct = np.full((20 * len(labels), 60, 60), 300, np.int16)
    lab = np.zeros(ct.shape, np.uint8)
    image = Volume(ct)
    ctx = Context(image=image, config=AnalysisConfig(keypoints=keypoints))
    for k, label in enumerate(labels):
        z0 = ct.shape[0] - 20 * (k + 1)  # cranial label at the top (superior = +z)
        d = int(depths[label])
        lab[z0 + 2: z0 + 18, 5: 5 + d, 10:50] = label
        c = image.zyx_to_lps(np.array([z0 + 9.5, 5 + d / 2, 29.5]))
        kp = {}
        for col, y in (("A", 5 + 1), ("M", 5 + d / 2), ("P", 5 + d - 1)):
            for end, z in (("sup", z0 + 17), ("inf", z0 + 2)):
                kp[f"{col}_{end}"] = tuple(image.zyx_to_lps(np.array([z, y, 29.5])))
        v = VertebraResult(label=label, centroid_lps_mm=tuple(c), keypoints_lps_mm=kp,
                           fracture_probability=probability, keypoint_method=methods.get(label, "learned"))
        v.heights_mm = {"anterior": 15.0, "middle": 15.0, "posterior": 15.0}
        v.genant = grade(v.heights_mm, [15.0])
        ctx.vertebrae[label] = v
    ctx.labelmap = image.with_array(lab)
    ctx.masks_from_stage2 = from_stage2
    return ctx


def test_assess_marks_weak_evidence_not_assessable():
    ctx = _stack_context({19: 30, 20: 30, 21: 14, 22: 31}, {20: "geometric"}, probability=0.1)
    assess(ctx)
    v = ctx.vertebrae
    assert v[19].status == "normal" and v[19].genant is not None
    assert v[20].status == "not assessable" and "keypoint network" in v[20].status_reason
    assert v[20].genant is None  # never a grade without evidence
    assert v[21].status == "not assessable" and "body depth" in v[21].status_reason
    assert v[22].status == "normal"


def test_user_masks_are_measured_as_given():
    ctx = _stack_context({19: 30, 20: 30, 21: 31}, {20: "geometric"}, probability=0.1, from_stage2=False)
    assess(ctx)
    assert ctx.vertebrae[20].status == "normal" and ctx.vertebrae[20].genant is not None


def test_no_grade_on_an_image_without_bone():
    ctx = _stack_context({19: 30, 20: 30, 21: 31}, {}, probability=0.9)
    ctx.image = ctx.image.with_array(np.full(ctx.image.array.shape, 30, np.int16))  # water, no bone
    assess(ctx)
    for v in ctx.vertebrae.values():
        assert v.status == "not assessable" and "bone" in v.status_reason and v.genant is None


def test_grading_an_empty_result_is_not_an_error():
    from VertebralFractureLib.genant import run_stage

    ctx = Context(image=Volume(np.zeros((8, 8, 8), np.int16)), config=AnalysisConfig())
    run_stage(ctx)  # stage 1 found nothing and stage 2 skipped: nothing to grade, no exception
    assert ctx.vertebrae == {} and ctx.labelmap is None


def test_a_cut_vertebra_is_never_called_fractured_on_its_appearance_alone():
    ctx = _stack_context({19: 30, 20: 30, 21: 31}, {}, probability=0.1)
    cut = ctx.vertebrae[21]
    cut.genant, cut.keypoints_lps_mm, cut.complete = None, None, False  # at the edge: stage 3 did not grade it
    cut.fracture_probability, cut.status = 0.8, "fractured"
    ctx.fracture_map = ctx.labelmap.with_array(np.where(ctx.labelmap.array == 21, 2, (ctx.labelmap.array > 0) * 1)
                                               .astype(np.uint8))
    assess(ctx)
    assert cut.status == "not assessable" and "cut by the field of view" in cut.status_reason
    assert set(np.unique(ctx.fracture_map.array)) == {0, 1}  # nothing left marked fractured
    assert ctx.vertebrae[19].status == "normal"


def test_a_body_cut_by_the_end_of_the_scan_is_not_graded():
    """The top vertebra's centroid is inside the scan, but its upper endplate lies on the last slice: the
    heights measured there (a wedge) are the image's, so no grade and no call; the others are graded."""
    ctx = _stack_context({19: 30, 20: 30, 21: 31}, {}, probability=0.9)
    top = ctx.vertebrae[19]
    n_z = ctx.image.array.shape[0]
    kp = dict(top.keypoints_lps_mm)
    for col in ("A", "M", "P"):  # the upper endplate on the scan's last slice
        x, y, _ = kp[f"{col}_sup"]
        kp[f"{col}_sup"] = (x, y, float(ctx.image.zyx_to_lps(np.array([n_z - 1.0, 0.0, 0.0]))[2]))
    top.keypoints_lps_mm = kp
    top.heights_mm = {"anterior": 7.0, "middle": 12.0, "posterior": 15.0}
    top.genant = grade(top.heights_mm, [15.0])
    assert top.genant.grade == 3 and top.complete  # without the check: a grade-3 fracture
    assess(ctx)
    assert top.status == "not assessable" and top.genant is None and not top.complete
    assert "cut by the field of view" in top.status_reason and "from the edge of the image" in top.status_reason
    assert ctx.vertebrae[20].status == ctx.vertebrae[21].status == "normal"


def test_edge_check_says_where_the_endplate_lies():
    from VertebralFractureLib.assess import edge_check

    grid = Volume(np.zeros((20, 30, 30), np.int16), spacing=(1.0, 1.0, 2.0))
    inside = {k: tuple(grid.zyx_to_lps(np.array([10.0, 15.0, 15.0]))) for k in ("A_sup", "A_inf", "M_sup", "M_inf", "P_sup", "P_inf")}
    assert edge_check(inside, grid, AssessmentLimits()) == []
    near = dict(inside, P_sup=tuple(grid.zyx_to_lps(np.array([19.0, 15.0, 15.0]))))  # on the last slice
    (msg,) = edge_check(near, grid, AssessmentLimits())
    assert "1.0 mm from the edge of the image" in msg  # half a 2 mm slice
    beyond = dict(inside, P_sup=tuple(grid.zyx_to_lps(np.array([20.5, 15.0, 15.0]))))
    (msg,) = edge_check(beyond, grid, AssessmentLimits())
    assert "lies outside the image" in msg


def _named_bodies(names: list[str], depth_mm: float, anchor: str | None = None) -> dict[int, VertebraResult]:
    """Assessed vertebrae with the given names whose measuring columns lie ``depth_mm`` apart."""
    from VertebralFractureLib.anatomy import vertebra

    out = {}
    for k, name in enumerate(names):
        z = -30.0 * k
        kp = {f"{col}_{end}": (0.0, y, z + dz) for col, y in (("A", 0.0), ("M", depth_mm / 2), ("P", depth_mm))
              for end, dz in (("sup", 12.0), ("inf", -12.0))}
        v = VertebraResult(label=vertebra(name).label, centroid_lps_mm=(0.0, depth_mm, z), keypoints_lps_mm=kp,
                           naming={"anchor": anchor, "confidence": 0.2 if anchor is None else 0.9})
        v.status = "normal"
        out[v.label] = v
    return out


def test_unanchored_names_that_do_not_fit_the_body_sizes_are_flagged():
    """Lumbar-sized bodies (29 mm between the columns) named T2–T4, as on a spine-only crop whose
    names came from the network alone: a warning naming the levels that fit; right names, anchored
    names or too few bodies: none."""
    from VertebralFractureLib.assess import naming_size_check

    msg = naming_size_check(_named_bodies(["T2", "T3", "T4"], 29.0))
    assert msg is not None and "T2–T4" in msg and "like L" in msg and "not anchored" in msg
    assert naming_size_check(_named_bodies(["L1", "L2", "L3"], 29.0)) is None
    assert naming_size_check(_named_bodies(["T2", "T3", "T4"], 29.0, anchor="first rib")) is None
    assert naming_size_check(_named_bodies(["T2", "T3"], 29.0)) is None
    given = _named_bodies(["T2", "T3", "T4"], 29.0)
    for v in given.values():
        v.naming = None  # names from a mask or centroids the user gave
    assert naming_size_check(given) is None
