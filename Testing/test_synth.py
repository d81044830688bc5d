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
from VertebralFractureLib.synth.spine import draw_variants, measured_grade, plan_spine, variant_rng
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
    with pytest.raises(ValueError, match="p_11_ribs"):
        SynthConfig(p_11_ribs=1.2)
    with pytest.raises(ValueError, match="exclude each other"):
        SynthConfig(p_sacralisation=1.0)  # + the default lumbarisation rate
    with pytest.raises(ValueError, match="castellvi_weights"):
        SynthConfig(castellvi_weights=(1.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="rib_stump_mm"):
        SynthConfig(rib_stump_mm=(30.0, 20.0))
    with pytest.raises(ValueError, match="neighbours"):
        generate_case(1, SynthConfig(levels=("L1", "L3"), fractures={"L3": FractureSpec(2, "crush")}, body=False,
                                     spacing=(2.0, 2.0, 2.0), fov=120.0))
    with pytest.raises(ValueError, match="outside the imaged range"):
        generate_case(1, SynthConfig(levels=("L1", "L3"), fractures={"T5": FractureSpec(2)}, body=False,
                                     spacing=(2.0, 2.0, 2.0), fov=120.0))


# ------------------------------------------------------------------------------------------- variants
#: No variant unless a test forces one.
NO_VARIANTS = {"p_t13": 0.0, "p_l6": 0.0, "p_11_ribs": 0.0, "p_lumbar_rib": 0.0, "p_sacralisation": 0.0,
               "p_lumbarisation": 0.0}
#: A small body case at the thoracolumbar junction: spine field of view, no rotation, offset or curve.
RIBS = SynthConfig(levels=("T12", "L1"), spacing=(2.0, 2.0, 2.5), fov=240.0, p_cut=0.0, rotation_deg=(0.0, 0.0, 0.0),
                   offset_mm=0.0, p_scoliosis=0.0, noise_hu=(5.0, 5.0), **NO_VARIANTS)
#: A small spine-only case at the lumbosacral junction (dense bone, so marrow is brighter than muscle).
LUMBOSACRAL = SynthConfig(levels=("L4", "L5"), spacing=(1.25, 1.25, 1.25), fov=160.0, p_cut=0.0,
                          rotation_deg=(0.0, 0.0, 0.0), offset_mm=0.0, p_scoliosis=0.0, p_osteoporotic=0.0,
                          body=False, noise_hu=(5.0, 5.0), **NO_VARIANTS)
LABEL = {name: vertebra(name).label for name in ("T11", "T12", "T13", "L1", "L5", "L6")}


def _bone_outside_labels(case) -> np.ndarray:
    """Bone that no vertebra label covers (ribs, sacrum, pelvis)."""
    return (case.ct.array > 250) & (case.labelmap.array == 0)


def _lateral_reach(case, mask: np.ndarray, label: int) -> float:
    """How far (mm, left–right) the voxels of ``mask`` reach beyond the lateral extent of vertebra ``label``."""
    cx = case.centroids_lps[label][0]
    own = np.abs(case.labelmap.index_to_lps(np.argwhere(case.labelmap.array == label)[:, ::-1])[:, 0] - cx).max()
    idx = np.argwhere(mask)[:, ::-1]
    if idx.size == 0:
        return float("-inf")
    return float(np.abs(case.ct.index_to_lps(idx)[:, 0] - cx).max() - own)


@pytest.fixture(scope="module")
def ribs_normal():
    return generate_case(2, RIBS)


@pytest.fixture(scope="module")
def ribs_eleven():
    """11 rib pairs: T12 without ribs."""
    return generate_case(2, RIBS.replace(p_11_ribs=1.0, p_rib_stump=0.0))


def test_rib_variants_change_only_the_ribs(ribs_normal, ribs_eleven):
    """The variants have their own random stream: the labels, truth and acquisition stay the same."""
    assert np.array_equal(ribs_normal.labelmap.array, ribs_eleven.labelmap.array)
    assert ribs_normal.truth == ribs_eleven.truth
    drop = ("variants", "timings_s")
    assert {k: v for k, v in ribs_normal.meta.items() if k not in drop} == \
        {k: v for k, v in ribs_eleven.meta.items() if k not in drop}
    assert ribs_normal.meta["variants"]["ribs"] == {"variant": None, "pairs": 12, "full_pairs": 12, "last_level": "T12",
                                                    "last": "full", "last_mm": None, "stumps": []}


def test_eleven_rib_pairs_leave_t12_without_rib_or_with_a_stump(ribs_normal, ribs_eleven):
    assert ribs_eleven.meta["variants"]["ribs"] == {"variant": "11", "pairs": 11, "full_pairs": 11,
                                                    "last_level": "T11", "last": "full", "last_mm": None, "stumps": []}
    # the vertebra below T11 is still labelled T12 (labels count from C1)
    assert LABEL["T12"] in ribs_eleven.centroids_lps and LABEL["T13"] not in ribs_eleven.centroids_lps
    normal, eleven = _bone_outside_labels(ribs_normal), _bone_outside_labels(ribs_eleven)
    assert not (eleven & ~normal).any()  # no bone appears
    t12_rib = normal & ~eleven  # the rib T12 bears in the normal spine, gone with 11 pairs
    assert t12_rib.sum() > 300 and _lateral_reach(ribs_normal, t12_rib, LABEL["T12"]) > 70
    stumped = generate_case(2, RIBS.replace(p_11_ribs=1.0, p_rib_stump=1.0))
    ribs = stumped.meta["variants"]["ribs"]
    assert (ribs["variant"], ribs["pairs"], ribs["full_pairs"], ribs["last_level"], ribs["last"]) == \
        ("11", 12, 11, "T12", "stump")
    assert RIBS.rib_stump_mm[0] <= ribs["last_mm"] <= RIBS.rib_stump_mm[1] and ribs["stumps"] == ["T12"]
    stump = _bone_outside_labels(stumped) & ~eleven
    assert stump.sum() > 20  # a stump is there ...
    assert (stump & ~normal).sum() <= 5  # ... on the course of the normal rib ...
    # ... and reaches no further than its length beyond the transverse process (+ radius and a voxel)
    assert _lateral_reach(stumped, stump, LABEL["T12"]) <= ribs["last_mm"] + 8.0


@pytest.mark.parametrize("stump", [False, True])
def test_a_lumbar_rib_gives_13_pairs_full_or_stump(ribs_normal, stump):
    case = generate_case(2, RIBS.replace(p_lumbar_rib=1.0, p_rib_stump=float(stump)))
    ribs = case.meta["variants"]["ribs"]
    assert (ribs["variant"], ribs["pairs"], ribs["last_level"], ribs["last"]) == \
        ("13-L1", 13, "L1", "stump" if stump else "full")
    assert ribs["full_pairs"] == (12 if stump else 13)
    assert np.array_equal(case.labelmap.array, ribs_normal.labelmap.array)  # no T13: L1 keeps its label
    rib = _bone_outside_labels(case) & ~_bone_outside_labels(ribs_normal)
    assert rib.sum() > 100
    reach = _lateral_reach(case, rib, LABEL["L1"])
    if stump:
        assert reach <= ribs["last_mm"] + 8.0
    else:
        assert reach > 60.0


def test_a_t13_bears_the_13th_pair_full_or_stump():
    config = RIBS.replace(levels=("T13", "L1"), p_t13=1.0)
    full = generate_case(3, config.replace(p_rib_stump=0.0))
    stumped = generate_case(3, config.replace(p_rib_stump=1.0))
    for case, kind in ((full, "full"), (stumped, "stump")):
        ribs = case.meta["variants"]["ribs"]
        assert (ribs["variant"], ribs["pairs"], ribs["last_level"], ribs["last"]) == ("13-T13", 13, "T13", kind)
        assert case.meta["variants"]["t13"] and case.meta["variants"]["presacral"] == 25
        assert LABEL["T13"] in case.centroids_lps
    assert np.array_equal(full.labelmap.array, stumped.labelmap.array)
    a, b = _bone_outside_labels(full), _bone_outside_labels(stumped)
    assert (b & ~a).sum() <= 5  # the stump is the start of the full rib's course
    beyond = a & ~b
    assert beyond.sum() > 300 and _lateral_reach(full, beyond, LABEL["T13"]) > 60.0


def test_six_lumbar_vertebrae_label_l6_25():
    case = generate_case(1, LUMBOSACRAL.replace(levels=("L4", "L6"), p_l6=1.0))
    assert [e["name"] for e in case.truth][-2:] == ["L5", "L6"]
    assert LABEL["L6"] == 25 and 25 in case.centroids_lps and (case.labelmap.array == 25).sum() > 1000
    v = case.meta["variants"]
    assert v["l6"] and v["presacral"] == 25 and v["lstv"] is None


def _distance_within(vol: Volume, p: np.ndarray, label: int, radius_mm: float = 15.0) -> float:
    """Distance (mm) from ``p`` to the nearest voxel centre of ``label`` within ``radius_mm`` (inf if none)."""
    r = int(np.ceil(radius_mm / min(vol.spacing)))
    ijk = np.rint(vol.lps_to_index(p)).astype(int)
    lo, hi = np.maximum(ijk - r, 0), np.minimum(ijk + r + 1, np.array(vol.shape_xyz))
    idx = np.argwhere(vol.array[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]] == label)[:, ::-1] + lo
    d = np.linalg.norm(vol.index_to_lps(idx) - p, axis=1) if idx.size else np.array([np.inf])
    return float(d.min())


@pytest.fixture(scope="module")
def lumbosacral_normal():
    return generate_case(2, LUMBOSACRAL)


@pytest.mark.parametrize(("weights", "contact", "lo", "hi"), [
    ((0, 0, 1, 0), "fused", 0.0, 1.5),
    ((0, 1, 0, 0), "joint", 1.0, 4.0),
    ((1, 0, 0, 0), "dysplastic", 5.0, 12.0),
])
def test_sacralisation_draws_the_l5_wing_down_to_the_sacrum(lumbosacral_normal, weights, contact, lo, hi):
    normal = lumbosacral_normal
    case = generate_case(2, LUMBOSACRAL.replace(p_sacralisation=1.0, castellvi_weights=weights))
    lstv = case.meta["variants"]["lstv"]
    assert (lstv["kind"], lstv["level"]) == ("sacralisation", "L5")
    assert lstv["castellvi"] == {"fused": "IIIb", "joint": "IIb", "dysplastic": "Ib"}[contact]  # bilateral here
    assert lstv["sides"] == {"left": contact, "right": contact}
    assert set(case.centroids_lps) == set(normal.centroids_lps)  # the wing is part of L5: no new label
    for side, point in lstv["contact_lps_mm"].items():
        p = np.asarray(point)
        # the wing (labelled L5) comes down to the ala: touching, a joint space, or a gap
        assert lo <= _distance_within(case.labelmap, p, LABEL["L5"]) <= hi, side
        # without the variant, L5 stays far from there
        assert _distance_within(normal.labelmap, p, LABEL["L5"]) > 12.0, side
        # under the contact point lies the sacral ala: bone, not labelled as a vertebra
        below = p - np.array([0.0, 0.0, 4.0])
        assert _label_at(case.labelmap, below) == 0
        ijk = np.rint(case.ct.lps_to_index(below)).astype(int)
        assert case.ct.array[ijk[2], ijk[1], ijk[0]] > 120, side


def test_lumbarisation_is_drawn_as_l6_above_a_shorter_sacrum(tmp_path):
    config = LUMBOSACRAL.replace(levels=("L5", "L6"), p_lumbarisation=1.0, castellvi_weights=(0, 0, 1, 0))
    case = generate_case(1, config)
    write_verse_case(case, tmp_path, "sub-synth0000")
    check_written_case(tmp_path, "sub-synth0000")  # the wing does not disturb the truth
    assert [e["name"] for e in case.truth][-1] == "L6" and 25 in case.centroids_lps
    lstv = case.meta["variants"]["lstv"]
    assert (lstv["kind"], lstv["level"]) == ("lumbarisation", "L6") and lstv["castellvi"].startswith("III")
    for point in lstv["contact_lps_mm"].values():
        assert _distance_within(case.labelmap, np.asarray(point), LABEL["L6"]) <= 1.5
    seq = np.random.SeedSequence([1, 0x5E5E])
    assert plan_spine(np.random.default_rng(seq), config).sacrum.segments == 4
    assert plan_spine(np.random.default_rng(seq), LUMBOSACRAL.replace(levels=("L5", "L6"), p_l6=1.0)).sacrum.segments == 5


def test_variant_rates_follow_the_config():
    config = SynthConfig()
    n = 4000
    draws = [draw_variants(variant_rng(np.random.default_rng(seed)), config, False) for seed in range(n)]
    rib = [d[0] for d in draws]
    lstv = [d[2].kind if d[2] else None for d in draws]

    def close(count: int, p: float, total: int = n) -> bool:  # within 4 binomial standard errors
        return abs(count / total - p) <= 4 * np.sqrt(p * (1 - p) / total)

    assert close(rib.count("11"), config.p_11_ribs) and close(rib.count("13-L1"), config.p_lumbar_rib)
    assert close(lstv.count("sacralisation"), config.p_sacralisation)
    assert close(lstv.count("lumbarisation"), config.p_lumbarisation)
    stumps = [d[1] for d in draws if d[0] is not None]
    assert close(sum(s is not None for s in stumps), config.p_rib_stump, len(stumps))
    assert all(config.rib_stump_mm[0] <= s <= config.rib_stump_mm[1] for s in stumps if s is not None)
    types = [d[2].castellvi for d in draws if d[2]]
    assert {t.rstrip("ab") for t in types} == {"I", "II", "III", "IV"}
    # a T13 is the 13th rib-bearing vertebra: no other rib variant with it
    assert {draw_variants(variant_rng(np.random.default_rng(s)), config, True)[0] for s in range(50)} == {"13-T13"}


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
    with pytest.raises(InputError, match="p_old_fracture"):
        run(_cli_args("--n", "1", "--old-fractures", "2", "-o", str(tmp_path / "z")))


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


def test_vertebra_planes_show_anterior_left_and_up_whatever_the_file_orientation():
    """A body (HU 300, anterior) and a process (HU 900, posterior) of one label: in the sagittal plane
    the body is on the left, in the axial plane at the top, for an LPS and an RAS-stored volume alike."""
    from VertebralFractureLib.synth.realism import vertebra_planes

    ct = np.full((40, 40, 40), -1000, np.int16)  # z, y, x in LPS: y grows posteriorly
    lab = np.zeros((40, 40, 40), np.uint8)
    ct[15:25, 8:18, 15:25], lab[15:25, 8:18, 15:25] = 300, 22  # body, anterior
    ct[18:22, 22:32, 18:22], lab[18:22, 22:32, 18:22] = 900, 22  # process, posterior
    lps = Volume(ct, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3))
    ras = Volume(ct[:, ::-1, ::-1].copy(), (1.0, 1.0, 1.0), (39.0, 39.0, 0.0), np.diag([-1.0, -1.0, 1.0]))
    for vol, arr in ((lps, lab), (ras, lab[:, ::-1, ::-1].copy())):
        planes = vertebra_planes(vol, vol.with_array(arr), 22, half_mm=20.0)
        sag, sag_mask = planes["sagittal"]
        ax, ax_mask = planes["axial"]
        assert sag_mask.any() and ax_mask.any()
        cols = np.nonzero(sag > 600)[1]
        assert cols.min() > sag.shape[1] // 2  # the posterior process right of centre: anterior left
        rows = np.nonzero(ax > 600)[0]
        assert rows.min() > ax.shape[0] // 2  # the process in the lower half: anterior up
    with pytest.raises(ValueError):
        vertebra_planes(lps, lps.with_array(lab), 23)


def test_vertebra_figure_pairs_each_vertebra_with_a_synthetic_one(tmp_path):
    from PIL import Image

    from VertebralFractureLib.synth.realism import synthetic_vertebra, vertebra_figure

    ct, lab, label = synthetic_vertebra("L3", seed=3)
    assert label == 22 and np.any(lab.array == 22) and lab.spacing == (1.0, 1.0, 1.0)
    out = vertebra_figure([("a SynthSpine L3 as stand-in", ct, lab, label)], tmp_path / "v.png", seed=4)
    with Image.open(out) as im:
        assert im.size[0] > 800 and im.size[1] > 200
        assert np.asarray(im.convert("L")).std() > 20  # pictures, not an empty canvas
    with pytest.raises(ValueError):
        vertebra_figure([], tmp_path / "none.png")


def test_an_old_fracture_has_a_thin_sclerotic_rim_where_a_fresh_one_has_a_condensation_band():
    cases = {}
    for age in ("fresh", "old"):
        cfg = SynthConfig(levels=("T12", "L2"), fractures={"L1": FractureSpec(2, "wedge", age)}, body=False,
                          spacing=(1.0, 1.0, 1.0), fov=110.0, p_cut=0.0, noise_hu=(5.0, 5.0))
        cases[age] = generate_case(5, cfg)
    for age, case in cases.items():
        truth = {v["name"]: v for v in case.truth}
        assert truth["L1"]["fracture_age"] == age and truth["L1"]["grade"] == 2
        assert truth["T12"]["fracture_age"] is None
    fresh, old = (np.asarray(cases[a].ct.array, np.float32) for a in ("fresh", "old"))
    l1 = (cases["fresh"].labelmap.array == 20) & (cases["old"].labelmap.array == 20)
    denser_fresh = int(np.sum(fresh[l1] > old[l1] + 100))  # the band of impacted bone, thinned when old
    denser_old = int(np.sum(old[l1] > fresh[l1] + 100))
    assert denser_fresh > 300 and denser_fresh > 5 * denser_old
    elsewhere = cases["fresh"].labelmap.array == 22  # L3: untouched
    np.testing.assert_array_equal(fresh[elsewhere], old[elsewhere])
    with pytest.raises(ValueError, match="age"):
        FractureSpec(2, "wedge", "ancient")
    with pytest.raises(ValueError, match="p_old_fracture"):
        SynthConfig(p_old_fracture=1.5)
