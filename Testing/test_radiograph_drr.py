"""Lateral radiographs reconstructed from CT (synth.radiograph): physics, geometry and boxes."""

from __future__ import annotations

import numpy as np
import pytest

from VertebralFractureLib.synth.radiograph import (
    MU_WATER,
    RadiographParams,
    body_boxes,
    draw_params,
    expose,
    lateral_radiograph,
    line_integrals,
    thicker_slices,
)
from VertebralFractureLib.volume import Volume


def _phantom(direction=None) -> Volume:
    """Air around a 100 mm water block (x 50..150 mm), with a 1000 HU bone bead centred at LPS
    (100, 60, 80) mm; 2 mm voxels."""
    ct = np.full((100, 100, 100), -1000, np.int16)  # z, y, x
    ct[10:90, 10:90, 25:75] = 0
    ct[38:43, 28:33, 48:53] = 1000  # centre voxel (40, 30, 50): LPS (100, 60, 80) mm
    if direction is None:
        return Volume(ct, (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), np.eye(3))
    # the same anatomy stored RAS-like: x and y reversed
    return Volume(ct[:, ::-1, ::-1].copy(), (2.0, 2.0, 2.0), (198.0, 198.0, 0.0), np.diag([-1.0, -1.0, 1.0]))


@pytest.mark.parametrize("flipped", [False, True])
def test_line_integrals_follow_the_attenuation_and_the_geometry_maps_lps_to_pixels(flipped):
    ct = _phantom(direction=flipped or None)
    integrals, geo = line_integrals(ct, pixel_mm=0.5, sample_mm=2.0)
    assert integrals.shape == geo.shape
    col, row = np.round(geo.to_pixels(np.array([100.0, 60.0, 80.0]))).astype(int)
    # through the water block beside the bead: 100 mm of water
    c_water, r_water = np.round(geo.to_pixels(np.array([100.0, 120.0, 120.0]))).astype(int)
    assert integrals[r_water, c_water] == pytest.approx(MU_WATER * 100.0, rel=0.03)
    # through the bead: 10 mm at twice water's attenuation in place of 10 mm of water
    assert integrals[row, col] == pytest.approx(MU_WATER * 110.0, rel=0.03)
    c_air, r_air = np.round(geo.to_pixels(np.array([100.0, 195.0, 195.0]))).astype(int)
    assert integrals[r_air, c_air] == pytest.approx(0.0, abs=1e-6)
    # rows run cranial to caudal, columns anterior to posterior
    upper = geo.to_pixels(np.array([100.0, 60.0, 150.0]))
    posterior = geo.to_pixels(np.array([100.0, 150.0, 80.0]))
    assert upper[1] < row and posterior[0] > col


def test_exposure_shows_bone_bright_collimation_white_and_noise_falling_with_dose():
    ct = _phantom()
    integrals, geo = line_integrals(ct, pixel_mm=0.5, sample_mm=2.0)
    col, row = np.round(geo.to_pixels(np.array([100.0, 60.0, 80.0]))).astype(int)
    c_w, r_w = np.round(geo.to_pixels(np.array([100.0, 120.0, 120.0]))).astype(int)
    plain = RadiographParams(pixel_mm=0.5, compression=0.0, scatter_fraction=0.0, photons=1e6,
                             window_percentiles=(0.5, 100.0))
    img = expose(integrals, plain, np.random.default_rng(0))
    assert img.dtype == np.float32 and 0.0 <= img.min() and img.max() <= 1.0
    assert img[row, col] > img[r_w, c_w] + 0.1  # the bead is brighter than water
    coll = expose(integrals, RadiographParams(pixel_mm=0.5, collimation=(0.1, 0.0, 0.2, 0.0)), np.random.default_rng(0))
    assert np.all(coll[: int(0.1 * img.shape[0])] == 1.0) and np.all(coll[:, : int(0.2 * img.shape[1])] == 1.0)
    patch = (slice(r_w - 10, r_w + 10), slice(c_w - 10, c_w + 10))
    low = expose(integrals, RadiographParams(pixel_mm=0.5, compression=0.0, photons=1e3), np.random.default_rng(1))
    high = expose(integrals, RadiographParams(pixel_mm=0.5, compression=0.0, photons=1e6), np.random.default_rng(1))
    assert np.std(low[patch]) > 3 * np.std(high[patch])


def test_random_acquisitions_differ_and_stay_in_range():
    ct = _phantom()
    a = draw_params(np.random.default_rng(1))
    b = draw_params(np.random.default_rng(2))
    assert a != b and 0.3 <= a.pixel_mm <= 0.5 and 0.6 <= a.compression <= 0.9
    img, geo = lateral_radiograph(ct, a, np.random.default_rng(0))
    assert img.shape == geo.shape and np.isfinite(img).all()


def test_thicker_slices_average_runs_of_slices_and_keep_every_position():
    ct = _phantom()  # 2 mm slices; the bead fills slices 38-42 (LPS z 76-84 mm)
    thick = thicker_slices(ct, 6.0)  # runs of 3 slices: 6 mm
    assert thick.spacing == (2.0, 2.0, 6.0) and thick.array.shape == (33, 100, 100)
    # the first thick slice is the mean of slices 0-2, centred on slice 1 (z 2 mm)
    assert thick.index_to_lps([0, 0, 0])[2] == pytest.approx(2.0)
    # slices 36-38, 39-41 and 42-44: the bead's 5 slices spread over three thick ones
    centre = thick.array[:, 30, 50]
    assert centre[13] == pytest.approx(1000.0) and centre[12] == pytest.approx(1000 / 3)
    assert centre[14] == pytest.approx(1000 / 3)
    # the mean HU along the slices, and where the bead is, stay as they were
    z_thin = ct.index_to_lps([50, 30, 40])[2]
    z_thick = thick.index_to_lps([50, 30, 13])[2]
    assert z_thick == pytest.approx(z_thin)
    assert thick.array[:, 30, 50].mean() == pytest.approx(ct.array[:99, 30, 50].astype(float).mean(), rel=1e-4)
    assert thicker_slices(ct, 2.5) is ct  # already that thick
    with pytest.raises(ValueError):
        thicker_slices(ct, 0.0)


def test_a_thick_slice_source_blurs_the_radiograph_from_top_to_bottom_only():
    ct = _phantom()
    plain = dict(pixel_mm=0.5, compression=0.0, scatter_fraction=0.0, photons=1e7, blur_mm=0.0,
                 window_percentiles=(0.5, 100.0))
    thin, geo = lateral_radiograph(ct, RadiographParams(**plain), np.random.default_rng(0))
    thick, geo2 = lateral_radiograph(ct, RadiographParams(**plain, source_slice_mm=6.0), np.random.default_rng(0))
    col, row = np.round(geo.to_pixels(np.array([100.0, 60.0, 80.0]))).astype(int)
    col2, row2 = np.round(geo2.to_pixels(np.array([100.0, 60.0, 80.0]))).astype(int)
    # the bead's shadow is centred where each image's geometry puts it (the images start at the
    # outer edge of their first and last slices, which differ)
    for img, r, c in ((thin, row, col), (thick, row2, col2)):
        line = img[:, c].astype(float)
        top = np.flatnonzero(line > (line.max() + np.median(line)) / 2)
        assert abs((top.min() + top.max()) / 2 - r) <= 2

    def steepest(img, r, c, axis):  # the bead's steepest edge along a column (0) or a row (1)
        line = (img[:, c] if axis == 0 else img[r, :]).astype(float)
        return float(np.abs(np.diff(line)).max())

    assert steepest(thick, row2, col2, 0) < 0.5 * steepest(thin, row, col, 0)  # soft from top to bottom
    assert steepest(thick, row2, col2, 1) > 0.8 * steepest(thin, row, col, 1)  # as sharp from front to back


def test_the_drawn_share_of_thick_slice_sources():
    draws = [draw_params(np.random.default_rng(k)) for k in range(200)]
    thick = [d.source_slice_mm for d in draws if d.source_slice_mm > 0]
    assert 0.2 < len(thick) / len(draws) < 0.5 and all(3.0 <= t <= 7.0 for t in thick)
    assert all(draw_params(np.random.default_rng(k), 0.0).source_slice_mm == 0.0 for k in range(20))
    assert all(draw_params(np.random.default_rng(k), 1.0).source_slice_mm > 0.0 for k in range(20))
    # the acquisition drawn before the slice thickness is the same whatever the share
    a, b = draw_params(np.random.default_rng(5), 0.0), draw_params(np.random.default_rng(5), 1.0)
    assert a.pixel_mm == b.pixel_mm and a.window_percentiles == b.window_percentiles
    with pytest.raises(ValueError):
        draw_params(np.random.default_rng(0), 1.5)


def test_body_boxes_enclose_the_six_keypoints_of_each_named_vertebra():
    ct = _phantom()
    _, geo = line_integrals(ct, pixel_mm=0.5, sample_mm=2.0)
    kp = {"A_sup": [100, 40, 100], "A_inf": [100, 42, 70], "M_sup": [100, 55, 98], "M_inf": [100, 55, 72],
          "P_sup": [100, 70, 100], "P_inf": [100, 68, 70]}
    vertebrae = [{"name": "L1", "keypoints_lps_mm": kp}, {"name": "T12", "keypoints_lps_mm": kp},
                 {"name": "L2", "keypoints_lps_mm": None}]
    boxes = body_boxes(vertebrae, geo)
    assert list(boxes) == ["L1"]  # T12 is not among L1-L5; L2 has no keypoints
    x0, y0, x1, y1 = boxes["L1"]
    assert (x1 - x0) * 0.5 == pytest.approx(30.0) and (y1 - y0) * 0.5 == pytest.approx(30.0)
    assert [x0, y0] == pytest.approx(list(geo.to_pixels(np.array([100.0, 40.0, 100.0]))))
    assert list(body_boxes(vertebrae, geo, names=None)) == ["L1", "T12"]


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="positive"):
        line_integrals(_phantom(), pixel_mm=0.0)


# ---------------------------------------------------------------------------------------- the training data
def test_vertebra_classes_and_fields_of_view():
    from VertebralFractureLib.training.radiograph_data import field_rows, vertebra_class

    assert vertebra_class({"grade": 0}) == "normal"
    assert vertebra_class({"grade": 2, "fracture_age": "old"}) == "old"
    assert vertebra_class({"grade": 1, "fracture_age": "fresh"}) == "fresh"
    assert vertebra_class({"grade": 3}) == "fresh"  # truth written before ages: SynthSpine's band is fresh
    assert vertebra_class({"grade": None}) is None
    boxes = {"T10": [0, 100, 10, 150], "L1": [0, 300, 10, 350], "L5": [0, 600, 10, 650]}
    rng = np.random.default_rng(0)
    r0, r1 = field_rows(boxes, "lumbar", 0.5, 2000, rng)
    assert 300 - 120 <= r0 <= 300 - 30 and 650 + 50 <= r1 <= 650 + 140
    assert field_rows(boxes, "thoracolumbar", 0.5, 2000, rng)[0] < 100
    assert field_rows({"L1": boxes["L1"]}, "lumbar", 0.5, 2000, rng) is None
    assert field_rows(boxes, "whole", 0.5, 2000, rng) == (0, 2000)


def test_a_dataset_is_written_with_boxes_inside_its_images_and_read_back(tmp_path):
    from factories import tiny_verse_folder

    from VertebralFractureLib.training.radiograph_data import read_dataset, write_dataset

    root = tiny_verse_folder(tmp_path / "synth", n_cases=2)
    index = write_dataset([root], tmp_path / "rad", per_case=2, seed=1)
    data = read_dataset(tmp_path / "rad")
    assert len(data) == 4 and index.name == "radiographs.json"
    for e in data:
        img = e["image"]
        assert img.dtype == np.float32 and img.ndim == 2 and 0.0 <= img.min() and img.max() <= 1.0
        names = [v["name"] for v in e["vertebrae"]]
        assert names == ["T12", "L1", "L2"]  # every complete body, cranial to caudal
        for v in e["vertebrae"]:
            x0, y0, x1, y1 = v["box_px"]
            assert 0 <= x0 < x1 <= img.shape[1] and 0 <= y0 < y1 <= img.shape[0]
            # the tiny vertebrae are 400 HU blocks in soft tissue: brighter inside the box than beside it
            inside = img[int(y0) + 2:int(y1) - 2, int(x0) + 2:int(x1) - 2].mean()
            assert inside > img[int(y0) + 2:int(y1) - 2, : max(1, int(x0) - 6)].mean()
        assert {v["name"]: v["class"] for v in e["vertebrae"]} == {"T12": "normal", "L1": "fresh", "L2": "normal"}
        assert e["fresh_vcf"] is True
        assert e["ignore"] == []  # every body is whole
        assert e["source_slice_mm"] == 0.0 or 3.0 <= e["source_slice_mm"] <= 7.0
    with pytest.raises(FileExistsError):
        write_dataset([root], tmp_path / "rad")
    thick = read_dataset(write_dataset([root], tmp_path / "thick", per_case=1, seed=1, thick_share=1.0).parent)
    assert all(3.0 <= e["source_slice_mm"] <= 7.0 for e in thick)
    assert [[v["name"] for v in e["vertebrae"]] for e in thick] == [["T12", "L1", "L2"]] * 2


def test_a_body_shown_only_in_part_is_an_ignore_region_not_a_true_box(tmp_path):
    """A vertebra the source CT cuts keeps its true box where its body is in view (the CT's border
    took only its processes); where the body itself reaches beyond the image, the part in view is
    recorded by name as an ignore region, where a detector's box counts neither way."""
    import json

    from factories import tiny_verse_folder

    from VertebralFractureLib.io.verse import list_cases
    from VertebralFractureLib.training.radiograph_data import read_dataset, visible_part, write_dataset

    root = tiny_verse_folder(tmp_path / "synth", n_cases=1)
    whole = read_dataset(write_dataset([root], tmp_path / "whole", per_case=1, seed=1).parent)[0]
    case = list_cases(root)[0]
    truth = json.loads(case.genant.read_text())
    truth[2]["complete"] = False  # L2 touches the CT's border, but its body is in view
    case.genant.write_text(json.dumps(truth))
    processes = read_dataset(write_dataset([root], tmp_path / "processes", per_case=1, seed=1).parent)[0]
    assert np.array_equal(processes["image"], whole["image"])
    assert processes["vertebrae"] == whole["vertebrae"] and processes["ignore"] == []
    for key, point in truth[2]["keypoints_lps_mm"].items():
        if key.endswith("_inf"):
            point[2] -= 40.0  # the body now reaches beyond the CT's end
    case.genant.write_text(json.dumps(truth))
    cut = read_dataset(write_dataset([root], tmp_path / "cut", per_case=1, seed=1).parent)[0]
    assert np.array_equal(cut["image"], whole["image"])  # the same radiograph, only its labels differ
    assert [v["name"] for v in cut["vertebrae"]] == ["T12", "L1"]
    (region,) = cut["ignore"]
    x0, y0, x1, _ = whole["vertebrae"][2]["box_px"]
    assert region["name"] == "L2" and region["box_px"][:3] == [x0, y0, x1]
    assert region["box_px"][3] == cut["image"].shape[0]  # clipped at the image's last row
    # the part in view: clipped to the image; a sliver at its edge is no region
    assert visible_part([-10.0, 90.0, 50.0, 130.0], (120, 100), 0.5) == [0.0, 90.0, 50.0, 120.0]
    assert visible_part([10.0, 115.0, 50.0, 130.0], (120, 100), 0.5) is None  # 2.5 mm in view


def test_a_dataset_labelled_again_matches_one_written_with_bodies_in_view(tmp_path):
    """Relabelling a dataset written before :func:`body_in_view` (a body in view counted as an
    ignore region when the CT cut its vertebra) gives what writing it now gives, without drawing
    the radiographs again; a body cut by the image's edge stays an ignore region."""
    import json

    from factories import tiny_verse_folder

    from VertebralFractureLib.io.verse import list_cases
    from VertebralFractureLib.training.radiograph_data import body_in_view, relabel_dataset, write_dataset

    root = tiny_verse_folder(tmp_path / "synth", n_cases=1)
    case = list_cases(root)[0]
    truth = json.loads(case.genant.read_text())
    truth[1]["complete"] = False
    case.genant.write_text(json.dumps(truth))
    now = json.loads(write_dataset([root], tmp_path / "now", per_case=2, seed=3).read_text())
    old = json.loads(json.dumps(now))
    for entry in old["radiographs"]:  # as the earlier rule wrote it: L1 an ignore region
        (l1,) = [v for v in entry["vertebrae"] if v["name"] == "L1"]
        entry["vertebrae"].remove(l1)
        entry["ignore"].append({"name": "L1", "box_px": l1["box_px"]})
        entry["fresh_vcf"] = not entry["fresh_vcf"]  # stale: relabelling recomputes it
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "radiographs.json").write_text(json.dumps(old))
    (tmp_path / "old" / "images").symlink_to(tmp_path / "now" / "images")
    again = relabel_dataset(tmp_path / "old", [root], tmp_path / "again")
    assert json.loads(again.read_text()) == now
    assert (tmp_path / "again" / now["radiographs"][0]["image"]).read_bytes() == \
        (tmp_path / "now" / now["radiographs"][0]["image"]).read_bytes()
    with pytest.raises(FileExistsError):
        relabel_dataset(tmp_path / "old", [root], tmp_path / "again")
    # margins: a cut vertebra's body 2 mm inside every edge; a whole one anywhere inside
    assert body_in_view([10, 10, 50, 50], (100, 100), 0.5, complete=False)
    assert not body_in_view([10, 10, 50, 97], (100, 100), 0.5, complete=False)  # 1.5 mm from the bottom
    assert body_in_view([10, 10, 50, 100], (100, 100), 0.5, complete=True)


def test_an_oblique_ct_is_projected_like_the_same_anatomy_stored_straight():
    from VertebralFractureLib.synth.radiograph import line_integrals

    ct = _phantom()
    a = np.deg2rad(4.0)  # a slight tilt about x: the block stays where it is within a few mm
    rot = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    centre = np.array([100.0, 100.0, 100.0])
    origin = centre - rot @ (centre - np.zeros(3))
    tilted = Volume(ct.array, ct.spacing, tuple(origin), rot)
    straight, geo = line_integrals(ct, pixel_mm=1.0)
    oblique, geo2 = line_integrals(tilted, pixel_mm=1.0, sample_mm=2.0)
    for lps in ([100.0, 100.0, 100.0], [100.0, 60.0, 80.0]):
        c1, r1 = np.round(geo.to_pixels(np.array(lps))).astype(int)
        c2, r2 = np.round(geo2.to_pixels(rot @ (np.array(lps) - centre) + centre)).astype(int)
        assert oblique[r2, c2] == pytest.approx(straight[r1, c1], rel=0.1)


def test_label_shadows_lie_where_the_label_projects():
    from VertebralFractureLib.synth.radiograph import label_shadows

    ct = _phantom()
    lab = np.zeros(ct.array.shape, np.uint8)
    lab[38:43, 28:33, 48:53] = 20  # the bead
    labelmap = ct.with_array(lab)
    image, geo = lateral_radiograph(ct, RadiographParams(pixel_mm=0.5))
    shadows = label_shadows(labelmap, 0.5, image.shape)
    assert list(shadows) == [20] and shadows[20].shape == image.shape
    col, row = np.round(geo.to_pixels(np.array([100.0, 60.0, 80.0]))).astype(int)
    assert shadows[20][row, col] and 300 < shadows[20].sum() < 600  # 10 × 10 mm at 0.5 mm pixels
