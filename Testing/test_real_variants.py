"""Utilities/real_variants.py: thicker slices, noise, reversed storage, a sharp kernel and a tilt of an annotated CT."""

from __future__ import annotations

import json

import numpy as np
import pytest


def test_variants_keep_the_anatomy_in_place_and_copy_the_annotation(tmp_path):
    import SimpleITK as sitk
    from factories import load_utility

    arr = np.full((40, 30, 20), -100, np.int16)  # z, y, x at 1 × 1 × 1.25 mm
    arr[18:22, 10:20, 5:15] = 700  # a bright slab
    image = sitk.GetImageFromArray(arr)
    image.SetSpacing((1.0, 1.0, 1.25))
    image.SetOrigin((-10.0, -15.0, -50.0))
    ct = tmp_path / "case.nii.gz"
    sitk.WriteImage(image, str(ct))
    ann = tmp_path / "case_bodies.json"
    ann.write_text(json.dumps({"image": "case.nii.gz", "vertebrae": [{"label": 20, "X": 0.0, "Y": 0.0, "Z": -25.0,
                                                                   "annotated_xyz": [1.0, 2.0, -45.0]}]}))
    before = ct.read_bytes()
    out = tmp_path / "variants"
    assert load_utility("real_variants").main([str(out), f"{ct}:{ann}"]) == 0
    assert ct.read_bytes() == before  # the input is only read
    names = sorted(p.name for p in out.glob("*.nii.gz"))
    assert names == ["case-flipped-storage.nii.gz", "case-noise40.nii.gz", "case-sharp.nii.gz", "case-slices2.5.nii.gz",
                     "case-slices5.nii.gz", "case-tilt10.nii.gz"]
    for name in names:
        doc = json.loads((out / name.replace(".nii.gz", "_bodies.json")).read_text())
        assert doc["image"] == name
        assert (doc["vertebrae"][0]["Z"] == -25.0) == (name != "case-tilt10.nii.gz")  # only the tilt moves the anatomy
    thick = sitk.ReadImage(str(out / "case-slices5.nii.gz"))
    assert thick.GetSpacing() == (1.0, 1.0, 5.0) and thick.GetSize()[2] == 10
    flipped = sitk.ReadImage(str(out / "case-flipped-storage.nii.gz"))
    assert flipped.GetDirection()[0] == -1.0
    for p in [(-5.2, -10.3, -26.1), (2.7, 3.4, -40.2), (-9.6, 13.8, -2.6)]:  # the same HU at the same place
        assert flipped[flipped.TransformPhysicalPointToIndex(p)] == image[image.TransformPhysicalPointToIndex(p)]
    noisy = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "case-noise40.nii.gz"))).astype(float)
    assert 30 < np.std(noisy - arr) < 50
    # the sharp kernel: edges overshoot (brighter just inside the slab, darker just outside), flat parts stay
    sharp = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "case-sharp.nii.gz"))).astype(float)
    assert sharp[18, 15, 10] > 750 and sharp[17, 15, 10] < -150 and abs(sharp[5, 15, 10] + 100) < 5
    # the tilt: the annotated point and the anatomy turn together (10 degrees about left-right)
    tilted = sitk.ReadImage(str(out / "case-tilt10.nii.gz"))
    point = json.loads((out / "case-tilt10_bodies.json").read_text())["vertebrae"][0]
    utility = load_utility("real_variants")
    assert (point["X"], point["Y"], point["Z"]) == utility.moved_point(image, "tilt10", (0.0, 0.0, -25.0))
    assert tuple(point["annotated_xyz"]) == utility.moved_point(image, "tilt10", (1.0, 2.0, -45.0)) != (1.0, 2.0, -45.0)
    far = np.array(utility.moved_point(image, "tilt10", (-0.5, -0.5, 14.4)))  # 40 mm above the image centre
    assert abs(far[0] + 0.5) < 1e-6 and abs(np.degrees(np.arctan2(abs(far[1] + 0.5), far[2] + 25.6)) - 10.0) < 0.1
    for p in [(0.0, -3.0, -26.0), (4.0, 2.0, -25.5)]:  # inside the slab: bright in both at the matching places
        assert image[image.TransformPhysicalPointToIndex(p)] == 700
        assert tilted[tilted.TransformPhysicalPointToIndex(utility.moved_point(image, "tilt10", p))] > 500
    # only the variants asked for
    only = tmp_path / "only"
    assert utility.main([str(only), f"{ct}:{ann}", "--only", "sharp"]) == 0
    assert sorted(p.name for p in only.glob("*.nii.gz")) == ["case-sharp.nii.gz"]
    with pytest.raises(SystemExit):  # a misspelt variant is an error, not an empty folder
        utility.main([str(tmp_path / "typo"), f"{ct}:{ann}", "--only", "sharpen"])
    assert not (tmp_path / "typo").exists()
    # the slab keeps its place along z in the thick slices (its centre at voxel 20 → z = -50 + 20 × 1.25 - 0.6)
    profile = sitk.GetArrayFromImage(thick)[:, 15, 10]
    z_peak = thick.TransformIndexToPhysicalPoint((10, 15, int(np.argmax(profile))))[2]
    assert abs(z_peak - (-50.0 + 19.5 * 1.25)) <= 5.0


def test_a_verse_case_gets_its_mask_and_grades_with_each_variant(tmp_path):
    import SimpleITK as sitk
    from factories import load_utility

    arr = np.full((40, 30, 20), -100, np.int16)
    arr[18:22, 10:20, 5:15] = 700
    lab = np.zeros(arr.shape, np.uint8)
    lab[16:24, 8:22, 3:17] = 20
    paths = {}
    for name, a in (("sub-x_ct", arr), ("sub-x_seg-vert_msk", lab)):
        im = sitk.GetImageFromArray(a)
        im.SetSpacing((1.0, 1.0, 1.25))
        paths[name] = tmp_path / f"{name}.nii.gz"
        sitk.WriteImage(im, str(paths[name]))
    grades = tmp_path / "genant_grades.json"
    grades.write_text(json.dumps({"grades": {"sub-x": {"20": 2}}}))
    out = tmp_path / "variants"
    assert load_utility("real_variants").main([str(out), f"{paths['sub-x_ct']}:{paths['sub-x_seg-vert_msk']}:{grades}"]) == 0
    table = json.loads((out / "genant_grades.json").read_text())["grades"]
    assert table == {f"sub-x-{v}": {"20": 2} for v in ("slices2.5", "slices5", "noise40", "flipped-storage", "sharp", "tilt10")}
    for subject in table:
        ct = sitk.ReadImage(str(out / f"{subject}_ct.nii.gz"))
        mask = sitk.ReadImage(str(out / f"{subject}_seg-vert_msk.nii.gz"))
        assert ct.GetSize() == mask.GetSize() and ct.GetSpacing() == mask.GetSpacing()
        assert ct.GetDirection() == mask.GetDirection() and set(np.unique(sitk.GetArrayFromImage(mask))) == {0, 20}
    # the variants' folder is a real-case folder of the evaluation
    from VertebralFractureLib.training.real import find_cases

    cases = find_cases([out])[0]
    assert sorted(c.name for c in cases) == sorted(table) and all(c.grades == {20: 2} for c in cases)
