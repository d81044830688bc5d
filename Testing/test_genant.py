from __future__ import annotations

import pytest

from VertebralFractureLib import genant


@pytest.mark.parametrize(
    "reduction, grade",
    [(0.0, 0), (0.19, 0), (0.20, 1), (0.249, 1), (0.25, 2), (0.40, 2), (0.41, 3), (0.7, 3)],
)
def test_grade_thresholds(reduction, grade):
    assert genant.grade_from_reduction(reduction) == grade


def test_wedge_biconcave_crush():
    wedge = genant.grade({"anterior": 15.0, "middle": 22.0, "posterior": 25.0})
    assert (wedge.grade, wedge.type) == (2, "wedge") and wedge.ratio == pytest.approx(0.6)
    bicon = genant.grade({"anterior": 24.0, "middle": 18.0, "posterior": 25.0})
    assert (bicon.grade, bicon.type) == (2, "biconcave") and bicon.ratio == pytest.approx(0.72)
    crush = genant.grade({"anterior": 14.0, "middle": 14.0, "posterior": 14.5}, neighbour_posterior_mm=[25.0, 27.0])
    assert crush.type == "crush" and crush.grade == 3
    # without neighbours a uniformly flat body cannot be called crushed
    assert genant.grade({"anterior": 14.0, "middle": 14.0, "posterior": 14.5}).grade == 0


def test_normal_lumbar_anterior_wedging_is_not_a_fracture():
    # L5: anterior taller than posterior is normal lordotic shape
    g = genant.grade({"anterior": 30.0, "middle": 27.0, "posterior": 24.0}, neighbour_posterior_mm=[26.0])
    assert g.grade == 0 and g.type is None and g.ratio == pytest.approx(1.0 - max(0, 1 - 24 / 26))


def test_seed_score_and_classes():
    g = genant.grade({"anterior": 18.0, "middle": 22.0, "posterior": 24.0})
    assert g.seed_ratio == pytest.approx(0.75)
    assert g.seed_class == "mild"
    assert genant.seed_class(0.73) == "moderate-severe" and genant.seed_class(0.8) == "normal"


def test_heights_from_keypoints_and_errors():
    kp = {"A_sup": (0, 0, 20), "A_inf": (0, 0, 0), "M_sup": (0, 10, 18), "M_inf": (0, 10, 1),
          "P_sup": (0, 20, 25), "P_inf": (0, 20, 0)}
    h = genant.heights_from_keypoints(kp)
    assert h == {"anterior": 20.0, "middle": 17.0, "posterior": 25.0}
    with pytest.raises(ValueError, match="missing keypoints"):
        genant.heights_from_keypoints({"A_sup": (0, 0, 0)})
    with pytest.raises(ValueError, match="positive"):
        genant.grade({"anterior": 0.0, "middle": 1.0, "posterior": 1.0})
