"""User-given centroids (``analyze --centroids``): Slicer point lists and VerSe centroid files."""

import json

import numpy as np
import pytest

from VertebralFractureLib.io.centroids import read_centroid_file
from VertebralFractureLib.io.slicer_files import write_markups_json
from VertebralFractureLib.io.verse import write_centroids
from VertebralFractureLib.pipeline import AnalysisConfig, GivenCentroids, analyze
from VertebralFractureLib.volume import Volume


def _ct(direction=None) -> Volume:
    return Volume(np.zeros((100, 40, 50), np.int16), spacing=(1.0, 1.0, 2.0), origin=(-25.0, -20.0, -100.0),
                  direction=np.eye(3) if direction is None else direction)


def test_markups_in_lps_and_ras_give_the_same_lps_centroids(tmp_path):
    ct = _ct()
    lps = {"T12": (1.0, 2.0, 0.0), "L1": (0.5, 3.0, -30.0)}
    write_markups_json(tmp_path / "a.mrk.json", [(k, v) for k, v in lps.items()], "Vertebra centroids")
    got = read_centroid_file(tmp_path / "a.mrk.json", ct)
    assert set(got) == {19, 20}
    assert np.allclose(got[19], lps["T12"]) and np.allclose(got[20], lps["L1"])
    doc = json.loads((tmp_path / "a.mrk.json").read_text())
    doc["markups"][0]["coordinateSystem"] = "RAS"
    for p in doc["markups"][0]["controlPoints"]:
        p["position"] = [-p["position"][0], -p["position"][1], p["position"][2]]
    doc["markups"][0]["controlPoints"].append({"label": "L2", "position": [0, 0, 0], "positionStatus": "undefined"})
    (tmp_path / "b.mrk.json").write_text(json.dumps(doc))
    got_ras = read_centroid_file(tmp_path / "b.mrk.json", ct)
    assert set(got_ras) == {19, 20}  # the unplaced L2 is skipped
    assert np.allclose(got_ras[20], lps["L1"])


def test_verse_centroid_file_round_trip_on_an_oblique_image(tmp_path):
    c, s = np.cos(0.3), np.sin(0.3)
    ct = _ct(np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]))
    cents = {20: ct.index_to_lps(np.array([20.0, 10.0, 40.0])), 21: ct.index_to_lps(np.array([21.0, 12.0, 20.0]))}
    write_centroids(tmp_path / "x_ctd.json", cents, ct)
    got = read_centroid_file(tmp_path / "x_ctd.json", ct)
    assert set(got) == {20, 21} and all(np.allclose(got[k], cents[k], atol=1e-2) for k in cents)


@pytest.mark.parametrize("points, message", [
    ([("L7", (0, 0, 0))], "not a vertebra"),
    ([("L1", (0, 0, 0)), ("l1", (0, 0, -20))], "twice"),
    ([("L1", (0, 0, 500))], "outside the image"),
    ([], "no centroid"),
    ([("L1", (0, 0, -20)), ("L2", (0, 0.1, -20))], r"L1 and L2 are 0.1 mm apart — one vertebra named twice"),
    ([("T12", (0, 0, -40)), ("L1", (0, 0, -10))], r"L1 lies 30 mm above T12: names out of cranio-caudal order"),
    ([("T12", (0, 0, -60)), ("L1", (0, 0, -30)), ("L2", (0, 0, 0))], r"names are upside down"),
])
def test_bad_point_lists_are_refused_with_the_reason(tmp_path, points, message):
    write_markups_json(tmp_path / "c.mrk.json", points, "Vertebra centroids")
    with pytest.raises(ValueError, match=message):
        read_centroid_file(tmp_path / "c.mrk.json", _ct())


def test_a_curved_spine_within_the_tolerance_is_accepted(tmp_path):
    # scoliosis: L2 beside L1, 3 mm higher, 25 mm to the side
    points = [("T12", (0, 0, -10)), ("L1", (0, 0, -40)), ("L2", (-20, 0, -37))]
    write_markups_json(tmp_path / "s.mrk.json", points, "Vertebra centroids")
    assert set(read_centroid_file(tmp_path / "s.mrk.json", _ct())) == {19, 20, 21}


def test_unreadable_file_is_a_value_error(tmp_path):
    (tmp_path / "d.mrk.json").write_text("{not json")
    with pytest.raises(ValueError, match="d.mrk.json is not valid JSON"):
        read_centroid_file(tmp_path / "d.mrk.json", _ct())


def test_given_centroids_stage_flags_the_field_of_view_ends_and_ignores_non_vertebrae():
    ct = _ct()  # z from -100 to +98 mm
    stage = GivenCentroids({20: (0.0, 0.0, 0.0), 21: (0.0, 0.0, -99.0), 26: (0.0, 0.0, -60.0)})
    analysis = analyze(ct, AnalysisConfig(), stages=[stage])
    by = {v.label: v for v in analysis.vertebrae}
    assert set(by) == {20, 21}
    assert by[20].complete and not by[21].complete
    assert any("not vertebrae" in w for w in analysis.warnings)
    assert "centroid given, not localized" in by[20].notes


def test_analyze_refuses_a_bad_centroid_file_before_any_work(tmp_path):
    from VertebralFractureLib import cli
    from VertebralFractureLib.io.readers import write_volume

    write_volume(_ct(), tmp_path / "ct.nii.gz")
    write_markups_json(tmp_path / "p.mrk.json", [("Sacrum", (0, 0, 0))], "Vertebra centroids")
    code = cli.main(["analyze", str(tmp_path / "ct.nii.gz"), "--centroids", str(tmp_path / "p.mrk.json"),
                     "-o", str(tmp_path / "out"), "--progress", "none"])
    assert code == cli.EXIT_INPUT and not (tmp_path / "out").exists()
