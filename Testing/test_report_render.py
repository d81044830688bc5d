"""report.csv / report.html, the sagittal images and the offscreen 3D picture."""

from __future__ import annotations

import csv
import io
import re

import numpy as np
import pytest
from factories import make_analysis, oblique_direction

from VertebralFractureLib.figures import lateral_projection_png, render_sagittal, sagittal_frame, sample_plane
from VertebralFractureLib.render import render_spine_3d
from VertebralFractureLib.report import CSV_COLUMNS, SPINE3D_KEY, summary, write_csv, write_html

SMALL = (160, 200)


def _read_png(data_or_path) -> np.ndarray:
    from matplotlib import image as mpimg

    src = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else data_or_path
    rgb = mpimg.imread(src, format="png")[..., :3]
    return (rgb * 255).round().astype(int)


def _red(rgb: np.ndarray) -> np.ndarray:
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return (r > 120) & (r > 2 * g) & (r > 2 * b)


def _white(rgb: np.ndarray) -> np.ndarray:
    return (rgb.min(axis=-1) > 150) & (rgb.max(axis=-1) - rgb.min(axis=-1) < 40)


def _spine_part(rgb: np.ndarray) -> np.ndarray:
    """The picture without the label column (left) and the caption (bottom)."""
    h, w = rgb.shape[:2]
    return rgb[: int(0.88 * h), int(0.45 * w):]


# ---------------------------------------------------------------------------------------- 3D picture
@pytest.mark.parametrize("fractured, position", [((20,), "middle"), ((19,), "top")])
def test_spine3d_shows_the_fractured_vertebra_red_at_its_place(tmp_path, fractured, position):
    analysis = make_analysis(fractured=fractured, direction=oblique_direction())
    path = tmp_path / "spine3d.png"
    render_spine_3d(analysis, path, size=SMALL)
    rgb = _read_png(path)
    assert rgb.shape == (SMALL[1], SMALL[0], 3)
    rgb = _spine_part(rgb)
    red_rows = np.nonzero(_red(rgb).sum(axis=1) > 3)[0]
    white_rows = np.nonzero(_white(rgb).sum(axis=1) > 3)[0]
    assert red_rows.size > 10 and white_rows.size > 10
    if position == "middle":  # L1 between T12 (above) and L2 (below): superior is up
        assert white_rows.min() < red_rows.min() and white_rows.max() > red_rows.max()
    else:  # T12 at the top
        assert red_rows.mean() < white_rows.mean() and red_rows.min() <= white_rows.min()


def test_spine3d_without_labelmap_draws_centroid_spheres(tmp_path):
    analysis = make_analysis()
    analysis.labelmap = None
    path = tmp_path / "spine3d.png"
    render_spine_3d(analysis, path, size=SMALL)
    rgb = _spine_part(_read_png(path))
    assert _red(rgb).sum() > 50 and _white(rgb).sum() > 50


def test_projection_fallback_without_opengl(tmp_path, monkeypatch):
    from VertebralFractureLib import render

    monkeypatch.setattr(render, "_offscreen_window", lambda: None)  # a machine without OpenGL
    render_spine_3d(make_analysis(), tmp_path / "p.png", size=SMALL)
    rgb = _read_png(tmp_path / "p.png")
    np.testing.assert_array_equal(rgb, _read_png(lateral_projection_png(make_analysis(), SMALL)))
    assert rgb.shape == (SMALL[1], SMALL[0], 3)
    rgb = _spine_part(rgb)
    red_rows = np.nonzero(_red(rgb).sum(axis=1) > 3)[0]
    white_rows = np.nonzero(_white(rgb).sum(axis=1) > 3)[0]
    assert white_rows.min() < red_rows.min() and white_rows.max() > red_rows.max()


def test_spine3d_rejects_a_tiny_size(tmp_path):
    with pytest.raises(ValueError, match="16x16"):
        render_spine_3d(make_analysis(), tmp_path / "x.png", size=(4, 4))


# ---------------------------------------------------------------------------------------- sagittal
def test_sagittal_plane_follows_the_oblique_grid():
    """On the vertebra's own plane the oblique box is cut exactly: bone inside, soft tissue outside."""
    analysis = make_analysis(direction=oblique_direction())
    v = analysis.vertebra("L1")
    d = analysis.image.direction
    centre, sup, ant = sagittal_frame(analysis, v)
    np.testing.assert_allclose(sup, d[:, 2], atol=1e-6)
    np.testing.assert_allclose(ant, -d[:, 1], atol=1e-6)
    np.testing.assert_allclose(centre, v.centroid_lps_mm, atol=1e-6)
    ct = sample_plane(analysis.image, centre, sup, ant, half_mm=20, pixel_mm=1.0, order=1, fill=-1024)
    coords = np.arange(-20, 21)
    inside = (np.abs(coords) <= 8)[:, None] & (np.abs(coords) <= 8)[None, :]
    assert np.all(ct[inside] == 250)  # the box is 20 × 20 mm in this plane
    gap = (np.abs(coords) >= 11) & (np.abs(coords) <= 13)  # the disc space to the neighbours
    assert np.all(ct[gap][:, np.abs(coords) <= 8] == -100)
    assert np.all(ct[np.abs(coords) <= 8][:, np.abs(coords) >= 11] == -100)  # in front and behind
    lab = sample_plane(analysis.labelmap, centre, sup, ant, half_mm=20, pixel_mm=1.0, order=0)
    assert np.all(lab[inside] == 20)


def test_sagittal_image_has_bone_window_outline_and_title():
    analysis = make_analysis(direction=oblique_direction())
    png = render_sagittal(analysis, "L1", size_in=(2.0, 2.0), dpi=100)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    rgb = _read_png(png)
    assert rgb.shape == (200, 200, 3)
    assert _red(rgb).sum() > 50  # red outline + title of the fractured vertebra
    grey = rgb[100, 110]  # inside the body (bone 250 HU at W1500/L400 → 40 % grey)
    assert abs(int(grey[0]) - 102) < 15 and grey[0] == grey[1] == grey[2]
    normal = _read_png(render_sagittal(analysis, "T12", size_in=(2.0, 2.0)))
    assert _red(normal).sum() < 5


def test_sagittal_without_keypoints_uses_the_spine_axis():
    analysis = make_analysis()
    for v in analysis.vertebrae:
        v.keypoints_lps_mm = None
    _, sup, ant = sagittal_frame(analysis, analysis.vertebra("L1"))
    np.testing.assert_allclose(sup, [0, 0, 1], atol=1e-6)
    np.testing.assert_allclose(ant, [0, -1, 0], atol=1e-6)
    assert render_sagittal(analysis, 20)[:4] == b"\x89PNG"


# ---------------------------------------------------------------------------------------- CSV / HTML
def test_csv_has_a_row_per_vertebra(tmp_path):
    analysis = make_analysis()
    analysis.vertebrae[2].genant = None
    write_csv(tmp_path / "r.csv", analysis)
    with open(tmp_path / "r.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert tuple(reader.fieldnames) == CSV_COLUMNS
    assert [(r["label"], r["name"], r["status"]) for r in rows] == [
        ("19", "T12", "normal"), ("20", "L1", "fractured"), ("21", "L2", "normal")]
    assert (rows[1]["genant_grade"], rows[1]["genant_type"], rows[1]["seed_class"]) == ("2", "wedge", "moderate-severe")
    assert float(rows[1]["genant_ratio"]) == pytest.approx(0.65, abs=1e-3)
    assert float(rows[1]["centroid_z_lps_mm"]) == pytest.approx(analysis.vertebra("L1").centroid_lps_mm[2], abs=1e-3)
    assert rows[2]["genant_grade"] == "" and rows[2]["height_anterior_mm"] == "20.0"


def test_html_is_self_contained_with_table_images_and_warnings(tmp_path):
    analysis = make_analysis(direction=oblique_direction())
    analysis.warnings = ["<script>alert(1)</script> slice gap"]
    analysis.models = {"mscn": {"version": "1.2", "training_data": "SynthSpine"}}
    picture = tmp_path / "spine3d.png"
    render_spine_3d(analysis, picture, size=SMALL)
    path = tmp_path / "report.html"
    write_html(path, analysis, {SPINE3D_KEY: picture})
    text = path.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert "<script" not in text and "<link" not in text
    assert text.count('src="data:image/png;base64,') == 1 + 3  # the 3D view + one per vertebra
    assert "<table" in text
    row = re.search(r'<tr class="fractured">(.*?)</tr>', text).group(1)
    assert ">L1<" in row and ">2<" in row and "wedge" in row
    assert len(re.findall(r'<tr class="fractured">', text)) == 1
    assert "&lt;script&gt;" in text  # warnings are shown, escaped
    assert "not for diagnosis" in text and "SynthSpine" in text
    assert "Fractured: L1 (Genant grade 2, wedge)" in text


def test_summary_sentences():
    analysis = make_analysis(fractured=())
    assert summary(analysis) == "3 vertebrae analysed (T12–L2). No fracture found."
    analysis.vertebrae[0].complete = False
    for v in analysis.vertebrae:
        v.status = None
    assert "not assessed" in summary(analysis) and "not graded: T12" in summary(analysis)
