from __future__ import annotations

import json

import pytest
from factories import make_analysis

from VertebralFractureLib.analysis import Analysis, GenantResult, VertebraResult


def test_json_contract_keys_and_round_trip(tmp_path):
    a = make_analysis(labels=(21, 19, 20))  # given out of order
    assert [v.name for v in a.vertebrae] == ["T12", "L1", "L2"]  # kept cranial → caudal
    path = tmp_path / "analysis.json"
    a.to_json(path)
    d = json.loads(path.read_text())
    assert d["schema_version"] == "1.0"
    assert {"software", "models", "input", "timings_s", "warnings", "vertebrae"} <= set(d)
    v = d["vertebrae"][1]
    for key in ("label", "name", "centroid_lps_mm", "localization_score", "complete", "status",
                "fracture_probability", "keypoints_lps_mm", "heights_mm", "genant"):
        assert key in v
    assert set(v["keypoints_lps_mm"]) == {"A_sup", "A_inf", "M_sup", "M_inf", "P_sup", "P_inf"}
    assert set(v["heights_mm"]) == {"anterior", "middle", "posterior"}
    assert set(v["genant"]) >= {"ratio", "grade", "type", "seed_class"}
    assert (v["name"], v["status"], v["genant"]["grade"], v["genant"]["type"]) == ("L1", "fractured", 2, "wedge")
    back = Analysis.from_json(path)
    assert back.to_dict() == a.to_dict()


def test_validation_errors():
    with pytest.raises(ValueError, match="status"):
        VertebraResult(label=20, centroid_lps_mm=(0, 0, 0), status="broken")
    with pytest.raises(KeyError):
        VertebraResult(label=26, centroid_lps_mm=(0, 0, 0))
    with pytest.raises(ValueError, match="centroid"):
        VertebraResult(label=20, centroid_lps_mm=(0, float("nan"), 0))
    with pytest.raises(ValueError, match="grade"):
        GenantResult(ratio=0.5, grade=4, type="wedge")
    with pytest.raises(ValueError, match="duplicate"):
        Analysis(vertebrae=[VertebraResult(20, (0, 0, 0)), VertebraResult(20, (0, 0, 1))], input_geometry={})
    with pytest.raises(ValueError, match="schema"):
        Analysis.from_dict({"schema_version": "9.0", "vertebrae": [], "input": {"geometry": {}}})
