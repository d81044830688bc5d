"""Utilities/check_body_centres.py: hand-placed body centres checked against the cortex."""

from __future__ import annotations

import json

import numpy as np
import pytest


def body_ct(centre_xy=(-7.0, 40.0), half_width=19.0, half_depth=16.0, spacing=(0.8, 0.8, 2.5)):
    """A CT with one vertebral body: an elliptic cylinder (cortex 500 HU, inside 180 HU) in fat,
    the spinal canal (fluid) behind it closed by a bony arch, and the aorta (contrast, 250 HU) in
    front of it on the patient's left, separated from the body by 4 mm of fat."""
    from VertebralFractureLib.volume import Volume

    nx, ny, nz = 150, 150, 24
    origin = (-60.0, -20.0, -30.0)
    z, y, x = np.meshgrid(*(origin[k] + np.arange(n) * spacing[k] for k, n in ((2, nz), (1, ny), (0, nx))),
                          indexing="ij")
    cx, cy = centre_xy
    ct = np.full((nz, ny, nx), -80.0, dtype=np.float32)  # fat
    r = ((x - cx) / half_width) ** 2 + ((y - cy) / half_depth) ** 2
    ct[r <= 1.0] = 500.0
    ct[((x - cx) / (half_width - 2)) ** 2 + ((y - cy) / (half_depth - 2)) ** 2 <= 1.0] = 180.0
    behind = cy + half_depth + 8.0  # the canal's centre: its front touches the body's back
    canal = (x - cx) ** 2 + (y - behind) ** 2 <= 8.0 ** 2
    arch = ((x - cx) ** 2 + (y - behind) ** 2 <= 12.0 ** 2) & ~canal & (y > behind)
    ct[canal] = 10.0
    ct[arch] = 600.0
    ct[(x - (cx + 14.0)) ** 2 + (y - (cy - half_depth - 4.0 - 12.0)) ** 2 <= 12.0 ** 2] = 250.0  # aorta
    return Volume(ct, spacing=spacing, origin=origin)


def test_the_body_centre_is_measured_from_its_cortex_wherever_the_point_was_placed_in_it():
    from factories import load_utility

    tool = load_utility("check_body_centres")
    ct = body_ct()
    for placed in ((-1.0, 44.0, -2.0), (-12.0, 33.0, 3.0), (-7.0, 40.0, 0.0)):
        r = tool.measure(ct, np.array(placed))
        assert r["usable"]
        assert r["centre"][0] == pytest.approx(-7.0, abs=0.6)  # left-right: the body's outer edges
        assert r["centre"][1] == pytest.approx(40.0, abs=0.6)  # front-back: cortex to canal, not the arch
        assert r["centre"][2] == placed[2]  # along the spine: kept as placed
        assert r["width_mm"] == pytest.approx(38.0, abs=1.5) and r["depth_mm"] == pytest.approx(32.0, abs=1.5)


def test_a_point_outside_any_body_is_not_used_and_keeps_its_place():
    from factories import load_utility

    tool = load_utility("check_body_centres")
    r = tool.measure(body_ct(), np.array([40.0, 100.0, 0.0]))  # in fat, far from the body
    assert not r["usable"]
    doc = {"image": "ct.nii.gz", "how": "by eye.", "vertebrae": [{"label": 20, "X": 40.0, "Y": 100.0, "Z": 0.0}]}
    revised = tool.revise(doc, [r])
    assert revised["vertebrae"][0] == doc["vertebrae"][0] and "for no body" in revised["how"]


def test_the_revised_annotation_keeps_the_placed_points_and_never_overwrites_its_input(tmp_path):
    from factories import load_utility

    from VertebralFractureLib.io.readers import write_volume
    from VertebralFractureLib.training.real import read_annotation

    tool = load_utility("check_body_centres")
    write_volume(body_ct(), tmp_path / "ct.nii.gz")
    placed = {"format": "VertebralFracture body centres 1.0", "image": "ct.nii.gz", "source": "synthetic, CC0",
              "how": "Placed by eye.", "grades": "all 0",
              "vertebrae": [{"label": 20, "name": "L1", "X": -1.0, "Y": 44.0, "Z": 0.0}]}
    src = tmp_path / "ct_bodies.json"
    src.write_text(json.dumps(placed), encoding="utf-8")
    with pytest.raises(SystemExit):
        tool.main([str(src), str(tmp_path / "ct.nii.gz"), "-o", str(src)])
    assert json.loads(src.read_text(encoding="utf-8")) == placed
    out = tmp_path / "revised_bodies.json"
    assert tool.main([str(src), str(tmp_path / "ct.nii.gz"), "-o", str(out), "--figure", str(tmp_path / "c.png")]) == 0
    revised = json.loads(out.read_text(encoding="utf-8"))
    entry = revised["vertebrae"][0]
    assert entry["annotated_xyz"] == [-1.0, 44.0, 0.0]
    assert entry["X"] == pytest.approx(-7.0, abs=0.6) and entry["Y"] == pytest.approx(40.0, abs=0.6)
    assert revised["how"].startswith("Placed by eye.") and "re-measured" in revised["how"]
    assert read_annotation(out)["vertebrae"][20].centroid == (entry["X"], entry["Y"], 0.0)  # still a valid annotation
    assert (tmp_path / "c.png").stat().st_size > 0


@pytest.mark.parametrize("name", ["lidc-idri-0002_spinefov", "crlm-ct-1004_bodyfov"])
def test_the_shipped_body_centres_sit_where_the_cortex_puts_them(shared_data, name):
    """The annotated centres were re-measured with this check; measuring them again moves none."""
    from pathlib import Path

    from factories import load_utility

    from VertebralFractureLib.io.readers import read_image

    tool = load_utility("check_body_centres")
    annotations = Path(__file__).resolve().parents[1] / "Resources" / "Annotations"
    doc = json.loads((annotations / f"{name}_bodies.json").read_text(encoding="utf-8"))
    ct_path = shared_data / "real-ct" / f"{name}.nii.gz"
    if not ct_path.exists():
        pytest.skip(f"{ct_path.name} is not in the shared data")
    ct = read_image(ct_path).volume
    for e in doc["vertebrae"]:
        r = tool.measure(ct, np.array([e["X"], e["Y"], e["Z"]], dtype=float))
        assert r["usable"], e["name"]
        assert np.hypot(r["centre"][0] - e["X"], r["centre"][1] - e["Y"]) < 1.0, e["name"]
        assert "annotated_xyz" in e  # the point placed by eye is kept
