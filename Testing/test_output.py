"""The output contract (ARCHITECTURE §3): every file, its content, the no-overwrite rule, atomicity."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
import SimpleITK as sitk
from factories import make_analysis, oblique_direction

from VertebralFractureLib.errors import OutputExistsError
from VertebralFractureLib.io import output
from VertebralFractureLib.io.output import write_outputs
from VertebralFractureLib.io.verse import read_centroids
from VertebralFractureLib.volume import Volume

CONTRACT = {"analysis.json", "vertebrae.nii.gz", "fracture.nii.gz", "segmentation.seg.nrrd",
            "centroids.mrk.json", "keypoints.mrk.json", "centroids_ctd.json", "report.csv",
            "report.html", "spine3d.png"}
VERTEBRA_KEYS = {"label", "name", "centroid_lps_mm", "localization_score", "complete", "status",
                 "fracture_probability", "keypoints_lps_mm", "heights_mm", "genant"}


@pytest.fixture(autouse=True)
def small_picture(monkeypatch):
    monkeypatch.setattr(output, "SPINE3D_SIZE", (160, 200))


def _entries(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("direction", [None, oblique_direction()], ids=["identity", "oblique"])
def test_every_contract_file_with_the_right_content(tmp_path, direction):
    analysis = make_analysis(direction=direction)
    calls = []
    out = write_outputs(analysis, tmp_path / "out", progress=lambda f, m: calls.append((f, m)))
    assert out == (tmp_path / "out").absolute()
    assert set(_entries(out)) == CONTRACT
    assert _entries(tmp_path) == ["out"]  # no temporary folder left
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and all(0 <= f <= 1 for f in fractions)

    doc = json.loads((out / "analysis.json").read_text())
    assert {"schema_version", "software", "models", "input", "timings_s", "warnings", "vertebrae"} <= set(doc)
    assert doc["input"]["geometry"] == analysis.image.geometry_dict()
    assert [v["name"] for v in doc["vertebrae"]] == ["T12", "L1", "L2"]
    for v in doc["vertebrae"]:
        assert VERTEBRA_KEYS <= set(v)
        assert set(v["keypoints_lps_mm"]) == {"A_sup", "A_inf", "M_sup", "M_inf", "P_sup", "P_inf"}
        assert set(v["heights_mm"]) == {"anterior", "middle", "posterior"}
        assert {"ratio", "grade", "type", "seed_class"} <= set(v["genant"])
    l1 = doc["vertebrae"][1]
    assert (l1["status"], l1["genant"]["grade"], l1["genant"]["type"]) == ("fractured", 2, "wedge")

    for name, truth in (("vertebrae.nii.gz", analysis.labelmap), ("fracture.nii.gz", analysis.fracture_map)):
        image = sitk.ReadImage(str(out / name))
        assert image.GetPixelID() == sitk.sitkUInt8
        back = Volume.from_sitk(image)
        assert back.same_geometry(analysis.image, tol=1e-5), name
        np.testing.assert_array_equal(back.array, truth.array)
    assert set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(out / "vertebrae.nii.gz"))))) == {0, 19, 20, 21}

    rows = list(csv.DictReader((out / "report.csv").open()))
    assert [r["name"] for r in rows] == ["T12", "L1", "L2"]
    assert [r["status"] for r in rows] == ["normal", "fractured", "normal"]
    assert [r["genant_grade"] for r in rows] == ["0", "2", "0"]
    assert float(rows[1]["height_anterior_mm"]) == pytest.approx(analysis.vertebra("L1").heights_mm["anterior"], abs=0.01)

    ctd = read_centroids(out / "centroids_ctd.json", analysis.image)
    for v in analysis.vertebrae:
        np.testing.assert_allclose(ctd[v.label], v.centroid_lps_mm, atol=2e-3)


def test_without_labelmap_image_or_keypoints(tmp_path):
    """Centroids only: no voxel files, no keypoint markups; the VerSe centroids use the input geometry."""
    analysis = make_analysis(direction=oblique_direction())
    image = analysis.image
    analysis.labelmap = analysis.fracture_map = analysis.image = None
    for v in analysis.vertebrae:
        v.keypoints_lps_mm = v.heights_mm = v.genant = None
    out = write_outputs(analysis, tmp_path / "out")
    assert set(_entries(out)) == CONTRACT - {"vertebrae.nii.gz", "fracture.nii.gz", "segmentation.seg.nrrd",
                                             "keypoints.mrk.json"}
    ctd = read_centroids(out / "centroids_ctd.json", image)
    for v in analysis.vertebrae:
        np.testing.assert_allclose(ctd[v.label], v.centroid_lps_mm, atol=2e-3)


def test_existing_folder_is_refused_and_untouched(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(OutputExistsError, match="already exists"):
        write_outputs(make_analysis(), out)
    assert _entries(out) == ["mine.txt"] and (out / "mine.txt").read_text() == "keep me"
    assert _entries(tmp_path) == ["out"]


def test_a_file_in_the_way_is_refused_even_with_overwrite(tmp_path):
    (tmp_path / "out").write_text("x")
    with pytest.raises(OutputExistsError, match="not a folder"):
        write_outputs(make_analysis(), tmp_path / "out", overwrite=True)


def _fail(*args, **kwargs):
    raise RuntimeError("disk full (simulated)")


def test_a_failure_midway_leaves_nothing_behind(tmp_path, monkeypatch):
    from VertebralFractureLib import report

    monkeypatch.setattr(report, "write_csv", _fail)
    with pytest.raises(RuntimeError, match="simulated"):
        write_outputs(make_analysis(), tmp_path / "out")
    assert _entries(tmp_path) == []


def test_overwrite_replaces_only_when_the_new_result_is_complete(tmp_path, monkeypatch):
    from VertebralFractureLib import report

    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("previous result")

    monkeypatch.setattr(report, "write_html", _fail)
    with pytest.raises(RuntimeError, match="simulated"):
        write_outputs(make_analysis(), out, overwrite=True)
    assert _entries(tmp_path) == ["out"] and _entries(out) == ["old.txt"]  # old result intact

    monkeypatch.undo()
    monkeypatch.setattr(output, "SPINE3D_SIZE", (160, 200))
    write_outputs(make_analysis(), out, overwrite=True)
    assert set(_entries(out)) == CONTRACT  # old.txt gone
    assert _entries(tmp_path) == ["out"]


def test_output_names_never_enter_the_files(tmp_path):
    """A folder named after a patient must not leak into the written files."""
    out = write_outputs(make_analysis(), tmp_path / "Doe^John_12345")
    for name in ("analysis.json", "report.csv", "report.html", "centroids.mrk.json", "keypoints.mrk.json",
                 "centroids_ctd.json"):
        text = re.sub(r"base64,[A-Za-z0-9+/=]+", "", (out / name).read_text(encoding="utf-8"))
        assert "Doe" not in text and "12345" not in text, name
    assert b"Doe" not in (out / "segmentation.seg.nrrd").read_bytes()


def test_real_spine_mask(shared_data, tmp_path, mrml, monkeypatch):
    """A real VerSe-style mask (T9–L5, rotated axes): Slicer reads every vertebra back in place."""
    from scipy import ndimage

    from VertebralFractureLib.analysis import Analysis, VertebraResult

    path = shared_data / "masks" / "healthivert-0007_seg-vert_msk.nii.gz"
    if not path.exists():
        pytest.skip(f"{path.name} not in the shared data")
    monkeypatch.setattr(output, "SPINE3D_SIZE", (200, 260))
    mask = Volume.from_sitk(sitk.ReadImage(str(path)))
    mask = mask.with_array(mask.array.astype(np.uint8))
    labels = [int(v) for v in np.unique(mask.array) if v]
    centres = ndimage.center_of_mass(mask.array > 0, mask.array, labels)
    vertebrae = [VertebraResult(lab, tuple(mask.zyx_to_lps(np.array(c))), status="fractured" if lab == 20 else "normal")
                 for lab, c in zip(labels, centres)]
    analysis = Analysis(vertebrae, mask.geometry_dict(), labelmap=mask)
    out = write_outputs(analysis, tmp_path / "out")

    node = mrml.read_node("vtkMRMLSegmentationNode", out / "segmentation.seg.nrrd")
    seg = node.GetSegmentation()
    names = [seg.GetNthSegment(i).GetName() for i in range(seg.GetNumberOfSegments())]
    assert names == ["T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5"]
    from vtk.util.numpy_support import vtk_to_numpy

    image = seg.GetNthSegment(0).GetRepresentation("Binary labelmap")
    voxels = vtk_to_numpy(image.GetPointData().GetScalars())
    for lab in labels:
        assert (voxels == lab).sum() == (mask.array == lab).sum()
    back = Volume.from_sitk(sitk.ReadImage(str(out / "vertebrae.nii.gz")))
    assert back.same_geometry(mask, tol=1e-5)

    from matplotlib import image as mpimg

    rgb = (mpimg.imread(out / "spine3d.png")[..., :3] * 255).astype(int)
    rgb = rgb[: int(0.88 * rgb.shape[0]), int(0.45 * rgb.shape[1]):]  # no labels, no caption
    red = (rgb[..., 0] > 120) & (rgb[..., 0] > 2 * rgb[..., 1])
    white = rgb.min(axis=-1) > 150
    red_rows, white_rows = np.nonzero(red.sum(1) > 3)[0], np.nonzero(white.sum(1) > 3)[0]
    assert red_rows.size and white_rows.min() < red_rows.min() and white_rows.max() > red_rows.max()


def test_nothing_found_still_gives_a_complete_readable_result(tmp_path, mrml):
    from VertebralFractureLib.analysis import Analysis

    a = make_analysis()
    empty = Analysis([], a.input_geometry, labelmap=a.labelmap.with_array(a.labelmap.array * 0), image=a.image)
    out = write_outputs(empty, tmp_path / "out")
    assert set(_entries(out)) == CONTRACT - {"fracture.nii.gz", "keypoints.mrk.json"}
    assert json.loads((out / "analysis.json").read_text())["vertebrae"] == []
    assert "No vertebrae were found." in (out / "report.html").read_text()
    assert list(csv.DictReader((out / "report.csv").open())) == []
    node = mrml.read_node("vtkMRMLSegmentationNode", out / "segmentation.seg.nrrd")
    assert node.GetSegmentation().GetNumberOfSegments() == 0
    assert mrml.read_node("vtkMRMLMarkupsFiducialNode", out / "centroids.mrk.json").GetNumberOfControlPoints() == 0
