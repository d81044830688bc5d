"""Stage 3: keypoints on the mid-sagittal plane (geometric on phantoms; the installed model on real masks), heights and Genant grades."""

from __future__ import annotations

import json

import numpy as np
import pytest
from factories import oblique_direction

from VertebralFractureLib import cli, genant
from VertebralFractureLib.io.readers import read_image, read_labelmap, write_volume
from VertebralFractureLib.keypoints import INSET_FRACTION, MIN_INSET_MM
from VertebralFractureLib.pipeline import AnalysisConfig, GivenSegmentation, analyze, grading_stage
from VertebralFractureLib.volume import Volume

DEPTH = 30.0  # body depth (mm), anterior wall at local y = -15


def _rot_z(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])


def phantom(heights: dict[int, tuple[float, float]], rotation_deg: float = 10.0, direction=None,
            flip_ap: bool = False) -> tuple[Volume, dict[int, np.ndarray]]:
    """Vertebrae stacked along z: a body whose height goes linearly from Ha (front) to Hp (back),
    pedicles and laminae around the canal and a spinous process; the patient turned
    ``rotation_deg`` about z.

    Returns the labelmap and each vertebra's local→world rotation-free centre.
    """
    labels = sorted(heights)
    spacing = 1.0
    n_z = 32 * len(labels) + 24
    direction = np.eye(3) if direction is None else direction
    size_xyz = np.array([100, 130, n_z])
    origin = -direction @ (size_xyz * spacing / 2)
    vol = Volume(np.zeros(size_xyz[::-1], dtype=np.uint8), (spacing,) * 3, tuple(origin), direction)
    zz, yy, xx = np.meshgrid(*(np.arange(s) for s in vol.array.shape), indexing="ij")
    world = vol.zyx_to_lps(np.stack([zz, yy, xx], -1).reshape(-1, 3).astype(float))
    rot = _rot_z(rotation_deg)
    centres = {}
    arr = np.zeros(world.shape[0], dtype=np.uint8)
    for k, label in enumerate(labels):  # cranial label on top
        c = np.array([0.5, -14.5, (len(labels) - 1 - k - (len(labels) - 1) / 2) * 32.0 + 0.5])  # between voxel centres
        centres[label] = c
        local = (world - c) @ rot  # world → local (inverse rotation)
        x, y, z = local[:, 0], local[:, 1], local[:, 2]
        if flip_ap:
            y = -y
        ha, hp = heights[label]
        half = (ha + (hp - ha) * (y + 15) / 30) / 2
        body = (np.abs(x) <= 20) & (np.abs(y) <= 15) & (np.abs(z) <= half)
        r = np.hypot(x, y - 27)
        lamina = (r >= 8) & (r <= 13) & (y >= 27) & (np.abs(z) <= 8)
        pedicles = (np.abs(x) >= 8) & (np.abs(x) <= 13) & (y >= 14) & (y <= 27) & (np.abs(z) <= 6)
        arch = lamina | pedicles
        spinous = (np.abs(x) <= 3) & (y >= 38) & (y <= 58) & (np.abs(z) <= 6)
        arr[body | arch | spinous] = label
    return vol.with_array(arr.reshape(vol.array.shape)), centres


def _truth_heights(ha: float, hp: float) -> dict[str, float]:
    inset = max(MIN_INSET_MM, INSET_FRACTION * DEPTH)
    h = lambda y: ha + (hp - ha) * (y + 15) / 30  # noqa: E731
    return {"anterior": h(-15 + inset), "middle": h(0.0), "posterior": h(15 - inset)}


def _grade(lab: Volume, keypoints: str = "geometric"):
    ct = lab.with_array(np.where(lab.array > 0, 300, -50).astype(np.int16))
    return analyze(ct, AnalysisConfig(keypoints=keypoints), stages=[GivenSegmentation(lab), grading_stage()])


@pytest.mark.parametrize("oblique", [False, True])
def test_heights_and_grades_on_a_rotated_phantom(oblique):
    heights = {19: (26.0, 26.0), 20: (15.0, 26.0), 21: (28.0, 28.0)}  # L1: an anterior wedge
    lab, _ = phantom(heights, rotation_deg=12.0, direction=oblique_direction(25.0) if oblique else None)
    result = _grade(lab)
    assert [v.name for v in result.vertebrae] == ["T12", "L1", "L2"]
    for v in result.vertebrae:
        truth = _truth_heights(*heights[v.label])
        for key in truth:
            assert v.heights_mm[key] == pytest.approx(truth[key], abs=1.0), (v.name, key)
        assert v.keypoint_method == "geometric"
    l1 = result.vertebra("L1")
    expected = genant.grade(_truth_heights(15.0, 26.0))  # 37.5 % reduction at the measuring columns
    assert expected.grade == 2
    assert (l1.genant.grade, l1.genant.type, l1.status) == (2, "wedge", "fractured")
    assert l1.genant.ratio == pytest.approx(expected.ratio, abs=0.03)
    assert result.vertebra("T12").genant.grade == 0 and result.vertebra("T12").status == "normal"
    # the anterior keypoints are in front of the posterior ones along the turned anterior axis
    ant_axis = _rot_z(12.0) @ np.array([0.0, -1.0, 0.0])
    kp = {k: np.asarray(p) for k, p in l1.keypoints_lps_mm.items()}
    front_back = (kp["A_sup"] + kp["A_inf"]) / 2 - (kp["P_sup"] + kp["P_inf"]) / 2
    depth_dir = front_back / np.linalg.norm(front_back)
    assert np.degrees(np.arccos(np.clip(depth_dir @ ant_axis, -1, 1))) < 6.0


def test_orientation_contradicting_the_anatomy_is_overruled():
    lab, _ = phantom({20: (20.0, 26.0)}, rotation_deg=0.0, flip_ap=True)  # canal in front per header
    v = _grade(lab).vertebra("L1")
    truth = _truth_heights(20.0, 26.0)
    assert v.heights_mm["anterior"] == pytest.approx(truth["anterior"], abs=1.0)
    assert v.heights_mm["posterior"] == pytest.approx(truth["posterior"], abs=1.0)
    assert any("anatomy" in n for n in v.notes)


def test_vertebra_cut_by_the_field_of_view_is_not_graded():
    lab, _ = phantom({19: (26.0, 26.0), 20: (26.0, 26.0)}, rotation_deg=0.0)
    top = np.nonzero((lab.array == 19).any(axis=(1, 2)))[0].max()
    cut = Volume(lab.array[: top - 4], lab.spacing, lab.origin, lab.direction)  # a smaller field of view cuts T12
    result = _grade(cut)
    assert result.vertebra("T12").complete is False and result.vertebra("T12").genant is None
    assert result.vertebra("L1").genant is not None


def test_crush_against_neighbours():
    lab, _ = phantom({19: (26.0, 26.0), 20: (14.0, 14.0), 21: (28.0, 28.0)}, rotation_deg=0.0)
    l1 = _grade(lab).vertebra("L1")
    assert (l1.genant.type, l1.genant.grade) == ("crush", 3)


def test_a_crushed_body_keeps_the_files_orientation():
    """A crushed body is thinner than the spinous process: the anatomy check must not turn the vertebra round."""
    lab, _ = phantom({20: (9.0, 9.0)}, rotation_deg=0.0)
    v = _grade(lab).vertebra("L1")
    assert not any("anatomy" in n for n in v.notes)
    assert v.heights_mm["anterior"] == pytest.approx(9.0, abs=1.0)
    kp = {k: np.asarray(p) for k, p in v.keypoints_lps_mm.items()}
    assert kp["A_sup"][1] < kp["P_sup"][1]  # anterior keypoints in front (smaller LPS y)


def test_atlas_and_axis_are_not_graded_nor_references():
    lab, _ = phantom({2: (40.0, 40.0), 3: (14.0, 14.0), 4: (14.0, 14.0)}, rotation_deg=0.0)
    result = _grade(lab)
    c2, c3 = result.vertebra("C2"), result.vertebra("C3")
    assert c2.genant is None and any("C1, C2" in n for n in c2.notes)
    assert c3.genant is not None and c3.genant.grade == 0  # not a crush against the tall axis


def test_grade_command_writes_keypoints(tmp_path, capsys):
    lab, _ = phantom({19: (26.0, 26.0), 20: (18.0, 26.0)}, rotation_deg=5.0)
    seg = tmp_path / "seg.nii.gz"
    write_volume(lab, seg)
    out = tmp_path / "graded"
    assert cli.main(["grade", "-s", str(seg), "-o", str(out), "--progress", "none", "--keypoints", "geometric"]) == cli.EXIT_OK
    data = json.loads((out / "analysis.json").read_text())
    l1 = [v for v in data["vertebrae"] if v["name"] == "L1"][0]
    assert l1["genant"]["grade"] == 2 and l1["genant"]["type"] == "wedge"
    points = json.loads((out / "keypoints.mrk.json").read_text())["markups"][0]["controlPoints"]
    assert {p["label"] for p in points} >= {"L1 A_sup", "L1 P_inf", "T12 M_sup"}
    assert cli.main(["grade", "-s", str(seg), "--vertebra", "X9", "-o", str(tmp_path / "x")]) == cli.EXIT_INPUT


def test_real_normal_vertebra_verse004_l2_is_grade_0(shared_data):
    crops = shared_data / "vertebra-crops"
    ct = read_image(crops / "verse004_L2_ct.nii.gz").volume
    seg = read_labelmap(crops / "verse004_L2_msk.nii.gz", reference=ct)
    # spineFE sub-regions: 1–4 bone (body and posterior elements); 5, 6 are the FE model's loading caps
    body = seg.with_array((np.isin(seg.array, [1, 2, 3, 4]) * 21).astype(np.uint8))
    result = analyze(ct, stages=[GivenSegmentation(body), grading_stage()])
    v = result.vertebra("L2")
    assert v.keypoint_method == "learned"  # the shipped keypoint model, confident on this real mask
    assert v.genant.grade == 0 and v.status == "normal"
    assert 22.0 < v.heights_mm["middle"] < 32.0


@pytest.mark.parametrize("keypoints", ["geometric", "auto"])
@pytest.mark.parametrize("name", ["healthivert-0007_seg-vert_msk.nii.gz", "sub-sample001_seg-vert_msk.nii.gz"])
def test_real_whole_spine_masks_are_graded(shared_data, name, keypoints):
    lab = read_labelmap(shared_data / "masks" / name)
    result = _grade(lab, keypoints)
    complete = [v for v in result.vertebrae if v.complete]
    assert len(complete) >= 7
    for v in complete:
        assert v.genant is not None, v.name
        assert all(8.0 < h < 40.0 for h in v.heights_mm.values()) or v.genant.grade >= 2, (v.name, v.heights_mm)


def test_real_crop_with_neighbour_labels(shared_data):
    crops = shared_data / "vertebra-crops"
    ct = read_image(crops / "sub-ct_label-22_ct.nii.gz").volume
    seg = read_labelmap(crops / "sub-ct_seg-vert_label-22_msk.nii.gz", reference=ct)
    result = analyze(ct, stages=[GivenSegmentation(seg), grading_stage()])
    l3 = result.vertebra("L3")
    assert l3.complete and l3.genant is not None and l3.genant.grade == 0


def test_thick_slices_come_with_a_warning():
    lab, _ = phantom({19: (26.0, 26.0), 20: (26.0, 26.0), 21: (26.0, 26.0)}, rotation_deg=0.0)
    thin = _grade(lab)
    assert not any("slices" in w for w in thin.warnings)
    thick = Volume(lab.array[::3], (1.0, 1.0, 3.0), lab.origin, lab.direction)
    result = _grade(thick)
    assert any(w.startswith("3.0 mm slices") for w in result.warnings)
    assert result.vertebra("L1").genant is not None  # still graded, with the warning
