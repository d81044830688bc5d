"""Naming anchors from the CT (first and last rib, sacrum, skull base) on SynthSpine cases with known levels,
and the whole naming step (anchors + the chain decoding) in stage 1."""

from __future__ import annotations

import numpy as np
import pytest
from factories import oblique_direction

from VertebralFractureLib import anchors
from VertebralFractureLib.anatomy import cranio_caudal, name_of, vertebra
from VertebralFractureLib.synth import SynthConfig, generate_case
from VertebralFractureLib.synth.generator import reorient
from VertebralFractureLib.volume import Volume

#: Anatomical variants SynthSpine may draw, all switched off unless a test asks for one (only those
#: this SynthSpine version knows).
_NO_VARIANTS = ("p_t13", "p_l6", "p_11_ribs", "p_lumbar_rib", "p_sacralisation", "p_lumbarisation")


def _case(seed: int, levels: tuple[str, str], spacing=(2.0, 2.0, 2.0), **kw):
    fields = SynthConfig.__dataclass_fields__
    cfg = {name: 0.0 for name in _NO_VARIANTS if name in fields}
    cfg.update(levels=levels, fractures={}, spacing=spacing, p_cut=0.0, p_scoliosis=0.0, noise_hu=(10.0, 15.0))
    cfg.update(kw)
    return generate_case(seed, SynthConfig(**cfg))


def _chain(case, complete: bool = True) -> tuple[list[int], np.ndarray]:
    """True labels and centroids, cranial to caudal, as stage 1 would detect them: the complete
    vertebrae, or (``complete=False``) all of the requested range, cut by the field of view or not."""
    first, last = (vertebra(n).order for n in case.meta["levels"])
    labels = cranio_caudal([e["label"] for e in case.truth
                            if (e["complete"] if complete else first <= vertebra(e["label"]).order <= last)])
    return labels, np.array([case.centroids_lps[lab] for lab in labels])


def _anchored(report: anchors.AnchorReport, labels: list[int]) -> dict[str, int]:
    """Anchor kind → the true label of the vertebra it names."""
    return {a.kind: labels[a.index] for a in report.anchors if a.names}


@pytest.fixture(scope="module")
def thoracolumbar():
    """T9–L3 in a body field of view with intravenous contrast (aorta, kidneys enhance)."""
    case = _case(11, ("T9", "L3"), fov=340.0, p_contrast=1.0)
    labels, c = _chain(case)
    return case, labels, c, anchors.find_anchors(case.ct, c)


@pytest.fixture(scope="module")
def lumbar():
    """L1–L5 down to the top of the sacrum, with contrast."""
    case = _case(2, ("L1", "L5"), fov=350.0, p_contrast=1.0)
    labels, c = _chain(case)
    return case, labels, c, anchors.find_anchors(case.ct, c)


def test_last_rib_is_found_on_t12(thoracolumbar):
    case, labels, c, report = thoracolumbar
    assert case.meta["contrast"] and {17, 18, 19, 20, 21} <= set(labels)  # T10 … L2 in view
    assert _anchored(report, labels) == {"last rib": 19}
    last, below = report.anchors  # the last rib, and what it implies for the rib-free vertebra below
    assert last.confidence >= 0.6 and last.cost(19) == 0.0 and 0 < last.cost(18) < 1 and last.cost(20) > last.cost(18)
    assert not below.names and labels[below.index] == 20 and below.cost(20) == below.cost(19) == 0 == 1 - below.cost(28)
    ribs = {name_of(lab): e.ribs for lab, e in zip(labels, report.vertebrae)}
    assert ribs["T10"] == ribs["T11"] == ribs["T12"] == "full", ribs
    # neither the lumbar transverse processes nor the enhancing aorta and kidneys count as ribs
    assert ribs["L1"] == ribs["L2"] == "none"
    assert not any(e.sacrum_below or e.in_sacrum or e.skull_above for e in report.vertebrae)


def test_last_rib_on_a_t13():
    case = _case(3, ("T10", "L2"), fov=340.0, p_t13=1.0)
    labels, c = _chain(case)
    assert 28 in labels
    report = anchors.find_anchors(case.ct, c)
    assert _anchored(report, labels) == {"last rib": 28}  # the last rib-bearing vertebra is the 13th
    ribs = {name_of(lab): e.ribs for lab, e in zip(labels, report.vertebrae)}
    assert ribs["T12"] == ribs["T13"] == "full" and ribs["L1"] == "none"


def test_sacrum_below_l5(lumbar):
    case, labels, c, report = lumbar
    assert labels[-1] == 24 and case.meta["contrast"]
    assert _anchored(report, labels) == {"sacrum": 24}
    sacrum = report.anchors[0]
    assert sacrum.cost(24) == 0 and sacrum.cost(25) == sacrum.cost(23) < 1  # L6 / L4: transitional variants
    assert [e.sacrum_below for e in report.vertebrae] == [lab == 24 for lab in labels]
    assert not any(e.in_sacrum for e in report.vertebrae)
    assert all(e.ribs == "none" for e in report.vertebrae[1:])  # lumbar transverse processes are no ribs


def _cut_across(volume: Volume, x_lo: float, x_hi: float) -> Volume:
    """The part of an LPS-aligned volume between LPS ``x_lo`` and ``x_hi`` (a reconstruction narrowed
    from side to side, as a spine-only one is)."""
    assert np.allclose(volume.direction, np.eye(3))
    i0, i1 = (int(round(volume.lps_to_index([x, 0.0, 0.0])[0])) for x in (x_lo, x_hi))
    return volume.crop((slice(None), slice(None), slice(max(0, i0), i1 + 1)))


@pytest.mark.parametrize("left_mm, right_mm", [(50.0, 50.0), (75.0, 25.0), (25.0, 75.0)])
def test_sacrum_in_a_spine_only_field_of_view(lumbar, left_mm, right_mm):
    """~100 mm wide, centred on the spine or to one side: the alae are followed to the edge of the image
    (or seen on one side only), so L5 is still anchored, and the anchor says the view cut the alae."""
    case, labels, c, wide = lumbar
    x0 = float(np.median(c[:, 0]))  # LPS x grows to the patient's left
    narrow = anchors.find_anchors(_cut_across(case.ct, x0 - right_mm, x0 + left_mm), c)
    assert _anchored(narrow, labels) == {"sacrum": 24}
    assert "field of view cuts the alae" in narrow.anchors[0].detail
    assert "field of view" not in wide.anchors[0].detail and narrow.anchors[0].confidence > 0.5
    assert [e.sacrum_below for e in narrow.vertebrae] == [lab == 24 for lab in labels]


def test_no_sacrum_in_a_spine_only_view_of_the_thoracolumbar_junction(thoracolumbar):
    """The same narrowing above the pelvis: ribs and transverse processes cut by the edge of the image
    are not taken for the alae."""
    case, labels, c, _ = thoracolumbar
    x0 = float(np.median(c[:, 0]))
    for right_mm, left_mm in ((50.0, 50.0), (75.0, 25.0), (25.0, 75.0)):
        report = anchors.find_anchors(_cut_across(case.ct, x0 - right_mm, x0 + left_mm), c)
        assert not any(a.kind == "sacrum" for a in report.anchors)
        assert not any(e.sacrum_below or e.in_sacrum for e in report.vertebrae)


def _five_lumbar_boxes(shape: tuple[int, int, int], origin: tuple[float, float, float], first_z: float,
                       step: float, half_height: float) -> tuple[Volume, tuple, list[list[float]]]:
    """A 2 mm phantom (40 HU) with bone boxes for five lumbar vertebrae on the axis x = 0, the first centred
    at LPS z ``first_z`` and each ``step`` below: body, transverse processes reaching 48 mm from the
    midline, arch and spinous process. Returns the image (its array can be drawn into), the LPS x, y, z of
    every voxel and the body centroids."""
    arr = np.full(shape, 40, np.int16)
    vol = Volume(arr, (2.0, 2.0, 2.0), origin)
    zyx = np.indices(shape, dtype=np.float32)
    x, y, z = (vol.origin[0] + 2 * zyx[2], vol.origin[1] + 2 * zyx[1], vol.origin[2] + 2 * zyx[0])
    centroids = []
    for k in range(5):
        zc = first_z - step * k
        centroids.append([0.0, 10.0, zc])
        arr[(np.abs(x) < 22) & (y > -25) & (y < 10) & (np.abs(z - zc) < half_height)] = 450  # body
        arr[(np.abs(x) < 48) & (y > 12) & (y < 22) & (np.abs(z - zc - 4) < 5)] = 700  # transverse processes
        arr[(np.abs(x) < 6) & (y > 10) & (y < 60) & (np.abs(z - zc) < 8)] = 700  # arch, spinous process
    return vol, (x, y, z), centroids


def _lumbar_phantom(x_lo: float, x_hi: float) -> tuple[Volume, list[list[float]]]:
    """Bone boxes for L1–L5 (transverse processes to 48 mm) above a sacrum whose alae, 30 mm deep,
    run out to the iliac wings (80 mm), in an image reaching from LPS x ``x_lo`` to ``x_hi`` (a
    spine-only reconstruction when narrow). Returns the image and the body centroids."""
    shape = (110, 100, int(round((x_hi - x_lo) / 2.0)) + 1)  # z, y, x at 2 mm: 220 mm tall
    vol, (x, y, z), centroids = _five_lumbar_boxes(shape, (x_lo, -100.0, -150.0), 55.0, 32.0, 12.0)
    arr = vol.array
    top = 55.0 - 32.0 * 4 - 20.0  # the sacrum begins 20 mm below L5's centroid
    arr[(np.abs(x) < 22) & (y > -20) & (y < 12) & (z < top) & (z > top - 50)] = 450  # S1–S2 bodies
    arr[(np.abs(x) < 80) & (y > -5) & (y < 25) & (z < top - 2) & (z > top - 45)] = 500  # alae joined to the ilium
    return vol, centroids


@pytest.mark.parametrize("x_lo, x_hi", [(-50.0, 50.0), (-25.0, 75.0), (-150.0, 150.0)])
def test_sacrum_and_a_detection_on_s1_in_a_narrow_view(x_lo, x_hi):
    """A detection on S1 below L5 is recognised as the sacrum and L5 is anchored, in the whole body and in
    spine-only views (centred, or with the patient's right ala outside the image)."""
    vol, centroids = _lumbar_phantom(x_lo, x_hi)
    s1 = [0.0, 5.0, centroids[-1][2] - 34.0]
    report = anchors.find_anchors(vol, np.array(centroids + [s1]))
    assert [(a.kind, a.index) for a in report.anchors if a.names] == [("sacrum", 4)]
    assert [e.in_sacrum for e in report.vertebrae] == [False] * 5 + [True]
    assert ("field of view cuts the alae" in report.anchors[0].detail) == (x_hi - x_lo < 200)


def test_first_rib_on_t1():
    case = _case(4, ("C4", "T3"), fov=300.0)
    labels, c = _chain(case)
    report = anchors.find_anchors(case.ct, c)
    assert _anchored(report, labels) == {"first rib": 8}
    ribs = {name_of(lab): e.ribs for lab, e in zip(labels, report.vertebrae)}
    assert ribs["C6"] == ribs["C7"] == "none" and ribs["T1"] == ribs["T2"] == "full"


def test_first_rib_when_the_vertebra_above_was_not_detected():
    """C7 in view but missed by stage 1: T1 is still named from its ribs and the rib-free level above."""
    case = _case(4, ("C4", "T3"), fov=300.0)
    labels, c = _chain(case)
    below = [k for k, lab in enumerate(labels) if vertebra(lab).order >= vertebra(8).order]  # T1 and down
    report = anchors.find_anchors(case.ct, c[below])
    first = [a for a in report.anchors if a.kind == "first rib" and a.names]
    assert len(first) == 1 and labels[below[first[0].index]] == 8 and "level above in view" in first[0].detail
    # a chain starting at T2 (T1 in view with its ribs) gets no such anchor: ribs leave the spine above it
    from_t2 = [k for k, lab in enumerate(labels) if vertebra(lab).order >= vertebra(9).order]
    report = anchors.find_anchors(case.ct, c[from_t2])
    assert not any(a.kind == "first rib" and a.names and a.index == 0 for a in report.anchors)


def test_c2_below_the_skull_base():
    case = _case(5, ("C1", "C5"), fov=250.0)
    labels, c = _chain(case)
    assert labels[:2] == [1, 2]
    report = anchors.find_anchors(case.ct, c)
    assert _anchored(report, labels) == {"C2": 2}
    assert report.vertebrae[0].skull_above
    # C1 not detected: the first vertebra below the skull base is then C2 itself, with less confidence
    report = anchors.find_anchors(case.ct, c[1:])
    assert _anchored(report, labels[1:]) == {"C2": 2} and report.anchors[0].confidence < 0.7


def test_a_spine_only_field_of_view_gives_no_anchor():
    """~100 mm wide: ribs are cut short, so nothing is said about them (rather than a guess)."""
    case = _case(6, ("T10", "L3"), fov=100.0)
    labels, c = _chain(case, complete=False)
    assert labels == [17, 18, 19, 20, 21, 22]
    report = anchors.find_anchors(case.ct, c)
    assert report.anchors == []
    assert all(e.ribs == "unknown" and e.rib_length_mm == (None, None) for e in report.vertebrae)


def _cut_below(volume: Volume, z_mm: float) -> Volume:
    """The part of an LPS-aligned volume above LPS ``z_mm`` (a CT whose caudal end lies there)."""
    assert np.allclose(volume.direction, np.eye(3))
    iz = int(np.ceil(volume.lps_to_index([0.0, 0.0, z_mm])[2]))
    return volume.crop((slice(iz, None), slice(None), slice(None)))


def test_a_vertebra_cut_through_its_middle_is_not_rib_free(thoracolumbar):
    """The caudal end of the image 2 mm below L1's centroid: L1's ribs, if it had any, could lie outside
    the image, so it is not seen rib-free, and nothing anchors T12 on it. With L1 whole in view it is."""
    case, labels, c, _ = thoracolumbar
    k = labels.index(20)
    cut = anchors.find_anchors(_cut_below(case.ct, c[k, 2] - 2.0), c[: k + 1])
    assert cut.vertebrae[k].ribs == "unknown" and cut.vertebrae[k - 1].ribs == "full"
    assert not any(a.kind == "last rib" for a in cut.anchors)
    whole = anchors.find_anchors(_cut_below(case.ct, c[k, 2] - 16.0), c[: k + 1])
    assert whole.vertebrae[k].ribs == "none" and _anchored(whole, labels) == {"last rib": 19}


def test_anchors_do_not_depend_on_the_file_orientation(thoracolumbar):
    case, labels, c, report = thoracolumbar
    for codes in ("PIR", "RAS"):
        other = anchors.find_anchors(reorient(case.ct, codes), c)
        assert [(a.kind, a.index) for a in other.anchors] == [(a.kind, a.index) for a in report.anchors]
        assert [e.ribs for e in other.vertebrae] == [e.ribs for e in report.vertebrae]


def test_anchors_with_5_mm_slices():
    case = _case(11, ("T9", "L3"), spacing=(1.5, 1.5, 5.0), fov=340.0)
    labels, c = _chain(case)
    report = anchors.find_anchors(case.ct, c)
    assert _anchored(report, labels) == {"last rib": 19}


def test_block_mean_keeps_the_geometry():
    rng = np.random.default_rng(0)
    a = rng.integers(-1000, 2000, (30, 41, 52)).astype(np.int16)
    vol = Volume(a, (0.7, 1.0, 0.5), (1.0, 2.0, 3.0), oblique_direction(25.0))
    out = anchors.block_mean(vol, 2.0)  # blocks of 3 (x) × 2 (y) × 4 (z) voxels
    expected = a[:28, :40, :51].astype(float).reshape(7, 4, 20, 2, 17, 3).mean(axis=(1, 3, 5))
    assert out.array.shape == (7, 20, 17) and np.allclose(out.array, expected, atol=1e-3)
    assert out.spacing == pytest.approx((2.1, 2.0, 2.0))
    # each coarse voxel sits at the centre of its block
    assert np.allclose(out.zyx_to_lps([1, 2, 3]), vol.zyx_to_lps([1 * 4 + 1.5, 2 * 2 + 0.5, 3 * 3 + 1.0]))


def test_spine_frame_follows_the_axis():
    """A bright voxel at a known offset from the spine axis lands at that (u, v) in the frame, also for
    an oblique acquisition."""
    arr = np.full((60, 60, 60), -1000, np.int16)
    vol = Volume(arr, (2.0, 2.0, 2.0), (-60.0, -60.0, -60.0), oblique_direction(20.0))
    centre = vol.zyx_to_lps([30, 30, 30])
    c = np.array([centre + [0, 0, 20.0], centre + [4.0, 2.0, -20.0]])
    target = centre + [2.0 + 24.0, 1.0 + 10.0, 0.0]  # axis at z=0 is (+2, +1); u=24 (left), v=10 (posterior)
    ijk = np.rint(vol.lps_to_index(target)).astype(int)
    arr[ijk[2], ijk[1], ijk[0]] = 3000
    frame = anchors.spine_frame(anchors.working_grid(vol), c)
    k, j, i = np.unravel_index(np.argmax(frame.hu), frame.hu.shape)
    assert abs(frame.z[k] - target[2]) <= 3.0 and abs(frame.u[i] - 24.0) <= 3.0 and abs(frame.v[j] - 10.0) <= 3.0
    assert frame.inside[k, j, i] and not frame.inside.all()


def test_find_anchors_checks_its_input(thoracolumbar):
    case, labels, c, report = thoracolumbar
    with pytest.raises(ValueError):
        anchors.find_anchors(case.ct, c[::-1])  # caudal first
    assert anchors.find_anchors(case.ct, np.zeros((0, 3))).anchors == []


def test_stage_1_names_from_the_last_rib_when_the_network_is_two_levels_off(thoracolumbar, monkeypatch):
    """Stage 1 end to end: heatmaps that name every vertebra two levels too cranial (as on real CT) are
    renamed from the last rib; each vertebra says which anchor named it."""
    from VertebralFractureLib import localize
    from VertebralFractureLib.analysis import VertebraResult
    from VertebralFractureLib.pipeline import AnalysisConfig, Context
    from VertebralFractureLib.preprocess import aligned_grid
    from VertebralFractureLib.training.localization import gaussian_targets

    case, labels, c, _ = thoracolumbar
    grid = aligned_grid(case.ct, 4.0)
    wrong = {localize.CHANNEL_LABELS[localize.CHANNEL_LABELS.index(lab) - 2]: p for lab, p in zip(labels, c)}
    heat = gaussian_targets(grid.array.shape, {k: grid.lps_to_index(p)[::-1] for k, p in wrong.items()}, 1.5)

    def fake_localize(volume, device="cpu", threshold=None, model=None, anchors=None, outlines=None):
        return localize.detect_and_name(heat, grid, 0.3, anchors=anchors, outlines=outlines)

    monkeypatch.setattr(localize, "localize", fake_localize)
    ctx = Context(image=case.ct, config=AnalysisConfig(device="cpu"))
    localize.run_stage(ctx)
    assert sorted(ctx.vertebrae, key=lambda lab: vertebra(lab).order) == labels  # not two levels up
    t12: VertebraResult = ctx.vertebrae[19]
    assert t12.naming["anchor"] == "last rib" and t12.naming["confidence"] >= 0.6
    assert all(v.naming["anchor"] == "last rib" for v in ctx.vertebrae.values())
    assert not any("not anchored" in w for w in ctx.warnings)
    # the same network output without anchors keeps its (wrong) names
    assert [f.label for f in localize.detect_and_name(heat, grid, 0.3)] == cranio_caudal(wrong)


def test_stage_1_says_when_names_are_not_anchored(monkeypatch):
    from VertebralFractureLib import localize
    from VertebralFractureLib.pipeline import AnalysisConfig, Context
    from VertebralFractureLib.preprocess import aligned_grid
    from VertebralFractureLib.training.localization import gaussian_targets

    case = _case(6, ("T10", "L3"), fov=100.0)  # spine-only field of view: no anchor can be seen
    labels, c = _chain(case, complete=False)
    grid = aligned_grid(case.ct, 4.0)
    heat = gaussian_targets(grid.array.shape, {k: grid.lps_to_index(p)[::-1] for k, p in zip(labels, c)}, 1.5)
    monkeypatch.setattr(localize, "localize",
                        lambda volume, device="cpu", threshold=None, model=None, anchors=None, outlines=None:
                        localize.detect_and_name(heat, grid, 0.3, anchors=anchors, outlines=outlines))
    ctx = Context(image=case.ct, config=AnalysisConfig(device="cpu"))
    localize.run_stage(ctx)
    assert cranio_caudal(ctx.vertebrae) == labels  # the network's names, unchanged
    assert all(v.naming == {"anchor": None, "confidence": localize.UNANCHORED_CONFIDENCE}
               for v in ctx.vertebrae.values())
    assert ctx.warnings.count(localize.UNANCHORED_WARNING) == 1


def test_vessels_and_transverse_processes_are_no_ribs():
    """A phantom: bone boxes for five lumbar vertebrae with transverse processes reaching 48 mm from the
    midline, a contrast-filled aorta (400 HU) against the left side of the bodies and an enhancing
    kidney (250 HU) with a dense renal pelvis (900 HU) beside them — none of it is a rib, and there is
    no sacrum: no anchor."""
    shape = (120, 150, 150)  # z, y, x at 2 mm: 300 × 300 × 240 mm
    vol, (x, y, z), centroids = _five_lumbar_boxes(shape, (-150.0, -150.0, -120.0), 80.0, 34.0, 13.0)
    arr = vol.array
    arr[((x - 34) ** 2 + (y + 2) ** 2 < 12**2)] = 400  # aorta along the whole spine
    arr[((x + 62) / 30) ** 2 + ((y + 5) / 25) ** 2 + ((z - 10) / 55) ** 2 < 1] = 250  # kidney
    arr[((x + 45) ** 2 + (y + 5) ** 2 + (z - 10) ** 2 < 9**2)] = 900  # renal pelvis with excreted contrast
    report = anchors.find_anchors(vol, np.array(centroids))
    assert report.anchors == []
    assert [e.ribs for e in report.vertebrae] == ["none"] * 5
    assert not any(e.sacrum_below or e.in_sacrum for e in report.vertebrae)
    # the same phantom with a rib pair on the first vertebra (running out to 120 mm, descending)
    rib = (np.abs(x) > 20) & (np.abs(x) < 120) & (y > 14) & (y < 24) & (np.abs(z - 84 + 0.2 * np.abs(x)) < 5)
    arr[rib] = 650
    report = anchors.find_anchors(vol, np.array(centroids))
    assert [e.ribs for e in report.vertebrae] == ["full"] + ["none"] * 4
    assert [(a.kind, a.index) for a in report.anchors if a.names] == [("last rib", 0)]


@pytest.mark.slow
def test_anchor_audit_scores_names_and_anchors_against_the_truth(tmp_path, capsys):
    """``Utilities/anchor_audit.py`` on one SynthSpine case: stage 1 with and without anchors, and the
    last-rib anchor judged right against the true T12."""
    import json

    from factories import load_utility

    from VertebralFractureLib.synth.generator import write_verse_case

    case = _case(11, ("T9", "L3"), fov=340.0, p_contrast=1.0)
    write_verse_case(case, tmp_path / "synth", "sub-synth0000")
    out = tmp_path / "audit.jsonl"
    assert load_utility("anchor_audit").main([str(tmp_path / "synth"), "-o", str(out)]) == 0
    row = json.loads(out.read_text())
    assert row["case"] == "sub-synth0000" and row["vertebrae"] == len(case.centroids_lps)
    assert 0 <= row["right_without"] <= row["vertebrae"] and 0 <= row["right_with_anchors"] <= row["vertebrae"]
    last = [a for a in row["anchors"] if a["kind"] == "last rib"]
    assert len(last) == 1 and last[0]["says"] == last[0]["true"] == "T12" and last[0]["verdict"] == "right"
    assert "1 cases" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # an existing output is never overwritten
        load_utility("anchor_audit").main([str(tmp_path / "synth"), "-o", str(out)])


@pytest.mark.slow
def test_sacrum_figure_draws_the_sacral_rows(tmp_path, capsys, lumbar):
    """``Utilities/sacrum_figure.py`` on a spine-only view of the lumbar case: stage 1 runs, the figure
    is written, the CT is only read and an existing figure is never overwritten."""
    from factories import load_utility

    from VertebralFractureLib.io.readers import write_volume

    case, labels, c, _ = lumbar
    x0 = float(np.median(c[:, 0]))
    ct = tmp_path / "narrow.nii.gz"
    write_volume(_cut_across(case.ct, x0 - 50.0, x0 + 50.0), ct)
    before = ct.read_bytes()
    figure = load_utility("sacrum_figure")
    out = tmp_path / "sacrum.png"
    found, sacrum, frame, rows = figure.sacrum_view(ct)
    assert rows.any() and len(found) >= 3
    assert figure.main([str(ct), str(out), "--title", "SynthSpine"]) == 0
    assert out.stat().st_size > 10_000 and ct.read_bytes() == before
    printed = capsys.readouterr().out
    assert sacrum and "field of view cuts the alae" in printed  # L5 anchored from the sacrum, as with true centroids
    with pytest.raises(SystemExit):
        figure.main([str(ct), str(out)])
