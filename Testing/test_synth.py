"""SynthSpine: ground-truth self-consistency, target grades by measurement, determinism, the CLI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from VertebralFractureLib import genant
from VertebralFractureLib.analysis import KEYPOINT_NAMES
from VertebralFractureLib.anatomy import vertebra
from VertebralFractureLib.errors import InputError, OutputExistsError
from VertebralFractureLib.io.verse import VerseCase, read_centroids
from VertebralFractureLib.synth import (
    FractureSpec,
    SynthConfig,
    generate_case,
    label_centroids,
    write_verse_case,
)
from VertebralFractureLib.synth.spine import measured_grade, plan_spine
from VertebralFractureLib.volume import Volume

REPO = Path(__file__).resolve().parents[1]

#: A small case with one fracture of each type (T12 biconcave 1, L1 wedge 2, L2 crush 3).
FRACTURES = {"T12": FractureSpec(1, "biconcave"), "L1": FractureSpec(2, "wedge"), "L2": FractureSpec(3, "crush")}
SMALL = SynthConfig(levels=("T11", "L3"), fractures=FRACTURES, spacing=(1.2, 1.2, 2.0), fov=150.0, p_cut=0.0,
                    noise_hu=(10.0, 10.0))


def _read(path: Path) -> Volume:
    import SimpleITK as sitk

    return Volume.from_sitk(sitk.ReadImage(str(path)))


def _label_at(vol: Volume, lps: np.ndarray) -> int:
    ijk = np.rint(vol.lps_to_index(lps)).astype(int)
    nx, ny, nz = vol.shape_xyz
    if not (0 <= ijk[0] < nx and 0 <= ijk[1] < ny and 0 <= ijk[2] < nz):
        return -1
    return int(vol.array[ijk[2], ijk[1], ijk[0]])


def _distance_to_label(vol: Volume, lps: np.ndarray, label: int) -> float:
    """Distance (mm) from a point to the nearest voxel centre carrying ``label`` (searched ±4 voxels)."""
    ijk = np.rint(vol.lps_to_index(lps)).astype(int)
    lo = np.maximum(ijk - 4, 0)
    hi = np.minimum(ijk + 5, np.array(vol.shape_xyz))
    sub = vol.array[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]]
    idx = np.argwhere(sub == label)[:, ::-1] + lo
    if idx.size == 0:
        return float("inf")
    return float(np.min(np.linalg.norm(vol.index_to_lps(idx) - np.asarray(lps), axis=1)))


def check_written_case(root: Path, subject: str) -> list[dict]:
    """Every self-consistency property of one written case; returns its truth list."""
    vc = VerseCase(root, subject)
    ct, mask, frac = _read(vc.ct), _read(vc.vertebra_mask), _read(vc.fracture_mask)
    # geometry identical across files
    assert ct.same_geometry(mask, tol=1e-6) and ct.same_geometry(frac, tol=1e-6)
    assert ct.array.dtype == np.int16 and -1024 <= ct.array.min() and ct.array.max() <= 3071
    truth = json.loads(vc.genant.read_text())
    labels_mask = {int(v) for v in np.unique(mask.array) if v}
    # labels = centroids = truth entries, each centroid the centre of mass of its label
    ctd = read_centroids(vc.centroids, mask)
    assert set(ctd) == labels_mask == {e["label"] for e in truth}
    for label, c in ctd.items():
        com = mask.index_to_lps(np.argwhere(mask.array == label)[:, ::-1].mean(0))
        assert np.allclose(c, com, atol=0.01), (label, c, com)
    # fracture mask = grade > 0
    lut = np.zeros(256, np.uint8)
    for e in truth:
        lut[e["label"]] = 2 if (e["grade"] or 0) > 0 else 1
    assert np.array_equal(frac.array, lut[mask.array])
    # cranial → caudal order, heights = keypoint distances, grade from the measured heights
    orders = [vertebra(e["label"]).order for e in truth]
    assert orders == sorted(orders)
    for i, e in enumerate(truth):
        assert e["name"] == vertebra(e["label"]).name
        if e["keypoints_lps_mm"] is None:
            assert e["name"] == "C1" and e["grade"] is None
            continue
        kp = {k: np.asarray(e["keypoints_lps_mm"][k]) for k in KEYPOINT_NAMES}
        h = genant.heights_from_keypoints(kp)
        for k, v in h.items():
            assert abs(v - e["heights_mm"][k]) < 2e-3
        # neighbours: the adjacent labelled vertebrae (T12 and L1 are adjacent when there is no T13)
        nb = [t["heights_mm"]["posterior"] for t in truth[max(0, i - 1):i + 2]
              if t is not e and t["heights_mm"] is not None]
        g = genant.grade(e["heights_mm"], nb)
        assert (g.grade, g.type) == (e["grade"], e["type"]), e["name"]
        assert abs(g.ratio - e["ratio"]) < 1e-3
        if not e["complete"]:
            continue
        # keypoints on their vertebra's endplates: near a voxel of the vertebra's label (the mask is a
        # voxelisation on the working grid resampled nearest-neighbour to the output: ≤ 1.5 voxel
        # diagonals), and (on grids fine enough to tell) inside just below the endplate, outside beyond it
        diag = 1.5 * float(np.linalg.norm(mask.spacing))
        for level in ("A", "M", "P"):
            n = kp[f"{level}_sup"] - kp[f"{level}_inf"]
            n /= np.linalg.norm(n)
            for which, sign in (("sup", 1.0), ("inf", -1.0)):
                p = kp[f"{level}_{which}"]
                assert _distance_to_label(mask, p, e["label"]) <= diag, (e["name"], level, which)
                if max(mask.spacing) <= 2.0:
                    step = 0.5 * max(mask.spacing) + 0.5
                    assert _label_at(mask, p - sign * step * n) == e["label"], (e["name"], level, which)
                    assert _label_at(mask, p + sign * (step + 1.0) * n) != e["label"], (e["name"], level, which)
    return truth


@pytest.fixture(scope="module")
def small_case():
    return generate_case(7, SMALL)


@pytest.fixture(scope="module")
def small_written(small_case, tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    paths = write_verse_case(small_case, root, "sub-synth0000")
    return root, paths


def test_written_layout_is_self_consistent(small_written):
    root, paths = small_written
    for key in ("ct", "vertebra_mask", "fracture_mask", "centroids", "genant"):
        assert paths[key].exists()
    assert paths["ct"] == root / "rawdata" / "sub-synth0000" / "sub-synth0000_ct.nii.gz"
    assert paths["genant"].parent == root / "derivatives" / "sub-synth0000"
    check_written_case(root, "sub-synth0000")


def test_fractures_reach_their_target_grade_by_measurement(small_case):
    by_name = {e["name"]: e for e in small_case.truth}
    for name, spec in FRACTURES.items():
        e = by_name[name]
        assert (e["grade"], e["type"]) == (spec.grade, spec.type.value), e
        lo, hi = {1: (0.2, 0.25), 2: (0.25, 0.4), 3: (0.4, 1.0)}[spec.grade]
        assert lo < 1 - e["ratio"] <= hi
    for e in small_case.truth:
        if e["name"] not in FRACTURES:
            assert e["grade"] == 0 and e["type"] is None, e["name"]


def test_rasterised_bodies_have_the_truth_heights(small_case):
    """The label mask, read along each keypoint pair, has the recorded height (within a voxel)."""
    mask = small_case.labelmap
    tol = float(np.linalg.norm(mask.spacing))  # one voxel diagonal
    checked = 0
    for e in small_case.truth:
        if not e["complete"] or e["keypoints_lps_mm"] is None:
            continue
        for level, key in (("A", "anterior"), ("M", "middle"), ("P", "posterior")):
            a, b = (np.asarray(e["keypoints_lps_mm"][f"{level}_{w}"]) for w in ("inf", "sup"))
            n = (b - a) / np.linalg.norm(b - a)
            ts = np.arange(-6.0, np.linalg.norm(b - a) + 6.0, 0.1)
            inside = np.flatnonzero([_label_at(mask, a + t * n) == e["label"] for t in ts])
            # extent of the vertebra's label along the line (the concave anterior wall may leave a gap)
            measured = (inside[-1] - inside[0]) * 0.1
            assert abs(measured - e["heights_mm"][key]) < tol, (e["name"], key, measured, e["heights_mm"][key])
            checked += 1
    assert checked >= 9


def test_same_seed_gives_identical_arrays_and_another_seed_does_not():
    cfg = SynthConfig(levels=("L1", "L3"), spacing=(1.5, 1.5, 2.0), fov=130.0, body=False)
    a, b, c = generate_case(3, cfg), generate_case(3, cfg), generate_case(4, cfg)
    assert np.array_equal(a.ct.array, b.ct.array)
    assert np.array_equal(a.labelmap.array, b.labelmap.array)
    assert a.truth == b.truth
    assert a.ct.array.shape != c.ct.array.shape or not np.array_equal(a.ct.array, c.ct.array)


def test_threads_do_not_change_the_result():
    cfg = SynthConfig(levels=("T12", "L2"), spacing=(1.5, 1.5, 2.5), fov=200.0)
    a, b = generate_case(9, cfg, threads=1), generate_case(9, cfg, threads=2)
    assert np.array_equal(a.ct.array, b.ct.array) and np.array_equal(a.labelmap.array, b.labelmap.array)


def test_orientation_changes_storage_not_anatomy(tmp_path):
    base = SynthConfig(levels=("L2", "L4"), spacing=(1.5, 1.5, 2.0), fov=130.0, body=False, rotation_deg=(0, 0, 0))
    lps = generate_case(5, base)
    ras = generate_case(5, base.replace(orientation="RAS"))
    assert np.allclose(ras.ct.direction, np.diag([-1.0, -1.0, 1.0]))
    assert np.array_equal(ras.ct.array, lps.ct.array[:, ::-1, ::-1])
    for label, c in lps.centroids_lps.items():
        assert np.allclose(c, ras.centroids_lps[label], atol=1e-6)
    write_verse_case(ras, tmp_path, "sub-synth0000")
    truth = check_written_case(tmp_path, "sub-synth0000")
    assert [e["keypoints_lps_mm"] for e in truth] == [e["keypoints_lps_mm"] for e in lps.truth]


def test_planned_fractures_measure_as_planned_over_many_spines():
    n_fractures = 0
    for seed in range(40):
        plan = plan_spine(np.random.default_rng(seed), SynthConfig())
        i0, i1 = plan.index(plan.range_names[0]), plan.index(plan.range_names[1])
        visible = set(range(i0, i1 + 1))
        for i in visible:
            v = plan.vertebrae[i]
            if not v.gradable:
                continue
            g = measured_grade(plan.vertebrae, i, visible)
            if v.fracture is None:
                assert g.grade == 0, (seed, v.name, g)
            else:
                assert (g.grade, g.type) == (v.fracture.grade, v.fracture.type), (seed, v.name)
                n_fractures += 1
    assert n_fractures > 10


def test_spine_priors_are_reproduced():
    """Inter-centroid distances and body heights grow caudally as in the VerSe/neuro-ml priors."""
    from VertebralFractureLib.synth import priors

    icd = {"T5": [], "L3": []}
    hp = {"T5": [], "L3": []}
    for seed in range(30):
        plan = plan_spine(np.random.default_rng(seed), SynthConfig(p_fractured_case=0.0, p_scoliosis=0.0))
        for name in icd:
            i = plan.index(name)
            icd[name].append(np.linalg.norm(plan.vertebrae[i + 1].centre - plan.vertebrae[i].centre))
            hp[name].append(plan.vertebrae[i].heights()["posterior"])
    for name in icd:
        assert abs(np.median(icd[name]) - priors.LEVELS[name].icd) < 0.12 * priors.LEVELS[name].icd
    assert np.median(hp["L3"]) > np.median(hp["T5"]) + 3.0


def test_config_and_fracture_specs_are_validated():
    with pytest.raises(ValueError, match="cranial to caudal"):
        SynthConfig(levels=("L4", "T10"))
    with pytest.raises(ValueError, match="unknown level"):
        SynthConfig(levels=("T10", "X9"))
    with pytest.raises(ValueError, match="grade"):
        FractureSpec(4)
    with pytest.raises(ValueError, match="type"):
        FractureSpec(2, "burst")
    with pytest.raises(ValueError, match="orientation"):
        SynthConfig(orientation="LPX")
    with pytest.raises(ValueError, match="neighbours"):
        generate_case(1, SynthConfig(levels=("L1", "L3"), fractures={"L3": FractureSpec(2, "crush")}, body=False,
                                     spacing=(2.0, 2.0, 2.0), fov=120.0))
    with pytest.raises(ValueError, match="outside the imaged range"):
        generate_case(1, SynthConfig(levels=("L1", "L3"), fractures={"T5": FractureSpec(2)}, body=False,
                                     spacing=(2.0, 2.0, 2.0), fov=120.0))


def _cli_args(*argv: str) -> argparse.Namespace:
    from VertebralFractureLib.synth.cli import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_cli_run_writes_two_cases(tmp_path):
    from VertebralFractureLib.synth.cli import run

    out = tmp_path / "ds"
    calls = []
    args = _cli_args("--n", "2", "--seed", "11", "--levels", "T12", "L3", "--spacing", "1.5", "1.5", "2.5",
                     "--fov", "140", "-o", str(out))
    assert run(args, progress=lambda stage, frac, msg: calls.append((stage, frac))) == 0
    assert calls == [("synth", 0.5), ("synth", 1.0)]
    summary = json.loads((out / "synthspine.json").read_text())
    assert [c["subject"] for c in summary["cases"]] == ["sub-synth0000", "sub-synth0001"]
    for sub in ("sub-synth0000", "sub-synth0001"):
        truth = check_written_case(out, sub)
        assert {"T12", "L1", "L2", "L3"} <= {e["name"] for e in truth}
    with pytest.raises(OutputExistsError):
        run(args)
    with pytest.raises(InputError, match="unknown level"):
        run(_cli_args("--n", "1", "--levels", "T12", "Q3", "-o", str(tmp_path / "x")))
    with pytest.raises(InputError, match="--n"):
        run(_cli_args("--n", "0", "-o", str(tmp_path / "y")))


def test_shipped_sample_is_consistent():
    """The demo sample in Resources/SampleData: T10–L4 truth, one grade-2 wedge, ≤ 3 MB."""
    from VertebralFractureLib.synth.sample import SAMPLE_STEM

    d = REPO / "Resources" / "SampleData"
    files = sorted(d.glob(f"{SAMPLE_STEM}_*"))
    if not files:
        pytest.skip("demo sample not generated")
    assert sum(f.stat().st_size for f in files) <= 3 * 1024 * 1024
    ct, mask = _read(d / f"{SAMPLE_STEM}_ct.nii.gz"), _read(d / f"{SAMPLE_STEM}_seg-vert_msk.nii.gz")
    assert ct.same_geometry(mask, tol=1e-6)
    assert np.allclose(ct.spacing, (1.0, 1.0, 2.0))
    truth = json.loads((d / f"{SAMPLE_STEM}_genant.json").read_text())
    names = [e["name"] for e in truth]
    assert names[names.index("T10"):names.index("L4") + 1] == ["T10", "T11", "T12", "L1", "L2", "L3", "L4"]
    fractured = [(e["name"], e["grade"], e["type"]) for e in truth if (e["grade"] or 0) > 0]
    assert fractured == [("L1", 2, "wedge")]
    ctd = read_centroids(d / f"{SAMPLE_STEM}_ctd.json", mask)
    com = label_centroids(mask)
    assert set(ctd) == set(com) == {e["label"] for e in truth}
    assert all(np.allclose(ctd[k], com[k], atol=0.01) for k in ctd)


def test_body_fov_case_has_lungs_air_and_bone(small_case):
    """A thoracolumbar case shows air, fat, soft tissue and dense bone in plausible proportions."""
    case = generate_case(2, SynthConfig(levels=("T8", "L1"), spacing=(1.5, 1.5, 3.0), fov=420.0, p_cut=0.0))
    a = case.ct.array
    assert (a < -900).mean() > 0.2  # air around the body and in the lungs
    assert ((a > -150) & (a < -50)).mean() > 0.02  # fat
    assert ((a > 0) & (a < 100)).mean() > 0.05  # soft tissue
    assert (a > 300).mean() > 0.002  # bone
    bone = a[case.labelmap.array > 0]
    assert np.median(bone) > 50


@pytest.mark.slow
def test_cli_twenty_cases_default_ranges(tmp_path):
    from VertebralFractureLib.synth.cli import run

    out = tmp_path / "ds"
    assert run(_cli_args("--n", "20", "--seed", "1", "--workers", "2", "-o", str(out))) == 0
    n_fractured = 0
    for i in range(20):
        truth = check_written_case(out, f"sub-synth{i:04d}")
        n_fractured += sum(1 for e in truth if (e["grade"] or 0) > 0)
    assert n_fractured > 0


def test_realism_statistics_on_real_ct(shared_data, tmp_path):
    from VertebralFractureLib.synth.realism import hu_regions, load_real

    real = load_real(shared_data / "real-ct")
    assert len(real) == 2
    for vol in real.values():
        stats = hu_regions(vol.array)
        assert stats["air"]["p50"] < -900
        assert -130 < stats["fat"]["p50"] < -60
        assert stats["bone"]["p50"] > 200
