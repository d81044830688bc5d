"""Stage 2: crops, central component, assembly into the input geometry, metrics, training samples."""

from __future__ import annotations

import numpy as np
import pytest
from factories import oblique_direction

from VertebralFractureLib.models import ModelCard
from VertebralFractureLib.segment import assemble, central_component, crop_at, segment
from VertebralFractureLib.training.metrics import roc_auc, segmentation_metrics
from VertebralFractureLib.volume import Volume


def test_crop_at_pads_outside_the_array():
    a = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
    crop, start = crop_at(a, np.array([0.0, 0.0, 0.0]), (4, 4, 4), fill=-1.0)
    assert tuple(start) == (-2, -2, -2) or tuple(start) == (-1, -1, -1)
    s = -start
    assert crop[tuple(s)] == a[0, 0, 0]
    assert crop[0, 0, 0] == -1.0
    inside, start = crop_at(a, np.array([2.0, 3.0, 3.0]), (3, 3, 3), fill=-1.0)
    np.testing.assert_array_equal(inside, a[1:4, 2:5, 2:5])


def test_central_component_drops_neighbours_and_blobs():
    m = np.zeros((21, 21, 21), bool)
    m[8:13, 8:13, 8:13] = True  # centre
    m[0:3, 0:3, 0:3] = True  # stray
    m[15:20, 8:13, 8:13] = True  # neighbour
    keep = central_component(m)
    assert keep[10, 10, 10] and not keep[1, 1, 1] and not keep[17, 10, 10]
    off = np.zeros_like(m)
    off[2:5, 2:5, 2:5] = True  # the centre voxel itself is empty: nearest component kept
    off[15:20, 15:20, 15:20] = True
    k2 = central_component(off)  # nearest voxels (4, 4, 4) and (15, 15, 15): 10.4 and 8.7 voxels away
    assert k2[16, 16, 16] and not k2[3, 3, 3] and k2.sum() == 125
    off[2:5, 2:5, 2:5] = False
    off[5:8, 5:8, 5:8] = True  # now the first component lies nearer (5.2 voxels)
    k3 = central_component(off)
    assert k3[6, 6, 6] and not k3[16, 16, 16] and k3.sum() == 27


class _BoneNet:
    """A fixed 'network' for tests: bone (> 220 HU) is vertebra; bone brighter than 800 HU fractured."""

    divisor = 8

    def __call__(self, x):
        import torch

        bone = torch.sigmoid((x - 0.22) * 60)
        dense = torch.sigmoid((x - 0.8) * 60)
        p = torch.cat([1 - bone, bone * (1 - dense), bone * dense], dim=1).clamp(1e-6, 1)
        return torch.log(p)

    def eval(self):
        return self

    def to(self, _device):
        return self


def _two_vertebra_phantom(direction: np.ndarray) -> tuple[Volume, dict[int, np.ndarray]]:
    """Two bone blocks 30 mm apart along z (L1 at 400 HU, L2 at 1000 HU) in soft tissue."""
    shape = (70, 50, 50)  # z, y, x at 1 mm
    vol = Volume(np.full(shape, 40.0, np.float32), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), direction)
    arr = vol.array
    arr[10:28, 15:35, 15:35] = 400.0
    arr[40:58, 15:35, 15:35] = 1000.0
    cents = {20: vol.zyx_to_lps(np.array([18.5, 24.5, 24.5])), 21: vol.zyx_to_lps(np.array([48.5, 24.5, 24.5]))}
    return vol, cents


@pytest.mark.parametrize("oblique", [False, True])
def test_segment_assembles_into_the_input_geometry(oblique):
    direction = oblique_direction(25.0) if oblique else np.eye(3)
    vol, cents = _two_vertebra_phantom(direction)
    card = ModelCard(name="segmentation", file="x.pt", sha256="0" * 64, spacing_mm=(2.0, 2.0, 2.0), patch_size=(24, 32, 32))
    labelmap, probs, _ = segment(vol, cents, model=(card, _BoneNet()))
    assert labelmap.same_geometry(vol)
    lab = labelmap.array
    truth = np.zeros(lab.shape, np.uint8)
    truth[10:28, 15:35, 15:35] = 20
    truth[40:58, 15:35, 15:35] = 21
    for label in (20, 21):
        m = segmentation_metrics(lab == label, truth == label, (1.0, 1.0, 1.0))
        assert m["dice"] > 0.9, (label, m)
        assert m["mssd_mm"] <= 3.0
    assert set(np.unique(lab)) == {0, 20, 21}
    assert probs[20] < 0.1 and probs[21] > 0.5  # the dense block's blurred rim reads as normal


def test_overlapping_crops_go_to_the_more_probable_vertebra():
    ref = Volume(np.zeros((20, 10, 10), np.uint8), (1.0, 1.0, 1.0))
    from VertebralFractureLib.segment import VertebraSegmentation

    fg_a = np.zeros((20, 10, 10), np.float32)
    fg_b = np.zeros_like(fg_a)
    fg_a[0:12] = 0.9
    fg_b[8:20] = 0.6  # overlap in z 8..11: a wins there (0.9 > 0.6)
    segs = [VertebraSegmentation(1, np.zeros(3), fg_a, 0.9 * fg_a),
            VertebraSegmentation(2, np.zeros(3), fg_b, np.zeros_like(fg_b))]
    labels, probs = assemble(segs, ref, 1.0, {1: np.array([5.0, 5.0, 5.0]), 2: np.array([5.0, 5.0, 15.0])})
    assert (labels[0:12] == 1).all() and (labels[12:20] == 2).all()
    assert probs[1] == pytest.approx(0.9, abs=1e-3) and probs[2] == pytest.approx(0.0, abs=1e-6)


def test_segmentation_metrics_on_known_shapes():
    a = np.zeros((30, 30, 30), bool)
    b = np.zeros_like(a)
    a[5:15, 5:15, 5:15] = True
    b[5:15, 5:15, 7:17] = True  # shifted by 2 voxels along x
    m = segmentation_metrics(a, b, (1.0, 1.0, 2.0))
    assert m["dice"] == pytest.approx(0.8)
    assert m["precision"] == pytest.approx(0.8) and m["recall"] == pytest.approx(0.8)
    assert m["mssd_mm"] == pytest.approx(4.0)  # 2 voxels of 2 mm
    assert 0 < m["assd_mm"] < 4.0
    same = segmentation_metrics(a, a, (1.0, 1.0, 1.0))
    assert same["dice"] == 1.0 and same["mssd_mm"] == 0.0
    empty = segmentation_metrics(np.zeros_like(a), a, (1.0, 1.0, 1.0))
    assert empty["dice"] == 0.0 and np.isnan(empty["assd_mm"])
    with pytest.raises(ValueError):
        segmentation_metrics(a, a[:-1], (1, 1, 1))


def test_roc_auc():
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert roc_auc(np.array([0, 1]), np.array([0.5, 0.5])) == 0.5
    assert roc_auc(np.array([1, 0, 1, 0]), np.array([0.1, 0.2, 0.3, 0.4])) == 0.25
    assert np.isnan(roc_auc(np.array([1, 1]), np.array([0.1, 0.2])))


def test_unet_checks_its_arguments_and_keeps_the_shape():
    torch = pytest.importorskip("torch")
    from VertebralFractureLib.networks.unet import build_unet

    net = build_unet({"channels": [4, 8], "strides": [2]})
    y = net(torch.zeros(1, 1, 8, 16, 8))
    assert tuple(y.shape) == (1, 3, 8, 16, 8) and net.divisor == 2
    with pytest.raises(ValueError):
        build_unet({"channels": [4, 8], "strides": [2, 2]})
    with pytest.raises(ValueError):
        build_unet({"type": "MSCN"})


def test_training_sample_targets_only_the_centred_vertebra():
    from VertebralFractureLib.training.segmentation import SegCase, SegmentationTraining, sample

    labels = np.zeros((60, 30, 30), np.uint8)
    labels[10:25, 10:20, 10:20] = 20
    labels[30:45, 10:20, 10:20] = 21
    image = np.where(labels > 0, 0.5, 0.0).astype(np.float32)
    case = SegCase("c", image, labels, frozenset({21}), {20: np.array([17.0, 14.5, 14.5]), 21: np.array([37.0, 14.5, 14.5])})
    cfg = SegmentationTraining(patch_size=(24, 24, 24), spacing_mm=1.0)
    img, target = sample(case, 21, cfg, np.random.default_rng(0), train=False)
    assert img.shape == (24, 24, 24) and set(np.unique(target)) == {0, 2}
    assert target.sum() == 2 * 15 * 10 * 10  # whole L2 (fractured) inside, L1 not a target
    img, target = sample(case, 20, cfg, np.random.default_rng(1), train=True)
    assert set(np.unique(target)) <= {0, 1} and (target == 1).sum() > 0.7 * 1500


def test_thick_slice_simulation_blurs_along_z_only():
    from VertebralFractureLib.training.segmentation import thick_slices

    rng = np.random.default_rng(0)
    img = rng.normal(size=(40, 6, 6)).astype(np.float32)
    assert np.array_equal(thick_slices(img, 1.0, 0.3), img)  # no thicker than the grid: unchanged
    const_z = np.broadcast_to(img[:1], img.shape).copy()  # varies in-plane only
    assert np.allclose(thick_slices(const_z, 3.4, 0.5), const_z, atol=1e-5)
    step = np.zeros((40, 6, 6), np.float32)
    step[20:] = 1.0
    out = thick_slices(step, 4.0, 0.0)
    assert out.shape == step.shape and out.dtype == np.float32
    assert out[0].max() < 1e-6 and out[-1].min() > 1 - 1e-6  # far from the edge: kept
    assert np.sum((out > 0.05) & (out < 0.95)) >= 3 * 36  # the edge is spread over several planes


def test_training_installs_and_analyze_runs_all_three_stages(tmp_path, monkeypatch):
    """A few iterations on tiny cases: cache, loop, resume, evaluation, installation and the full pipeline."""
    pytest.importorskip("torch")
    import json

    from factories import tiny_verse_folder

    from VertebralFractureLib import cli, models
    from VertebralFractureLib.training.install import install_model
    from VertebralFractureLib.training.localization import LocalizationTraining, train_localization
    from VertebralFractureLib.training.segmentation import (
        SegmentationTraining,
        cache_cases,
        train_segmentation,
    )

    data = tiny_verse_folder(tmp_path / "data")
    cases = cache_cases(data, 4.0)
    assert len(cases) == 2 and cases[0].fractured == frozenset({20}) and set(cases[0].centroids_zyx) == {19, 20, 21}
    cfg = SegmentationTraining(spacing_mm=4.0, patch_size=(16, 16, 16), channels=(4, 8), strides=(2,), iterations=3,
                               batch_size=1, validate_every=2)
    run = tmp_path / "seg"
    best = train_segmentation([data], run, cfg, val_root=data, log=lambda m: None)
    rows = (run / "log.csv").read_text().strip().splitlines()
    assert rows[0].startswith("iteration") and len(rows) == 3
    train_segmentation([data], run, SegmentationTraining(**{**cfg.__dict__, "iterations": 4}), val_root=data,
                       log=lambda m: None)
    assert (run / "log.csv").read_text().strip().splitlines()[-1].startswith("4,")
    # a new run that adds to earlier weights starts from them, not from random ones
    import torch

    logged: list[str] = []
    train_segmentation([data], tmp_path / "seg-more", SegmentationTraining(**{**cfg.__dict__, "iterations": 1, "lr": 0.0}),
                       log=logged.append, init_weights=best)
    start, after = torch.load(best, weights_only=True), torch.load(tmp_path / "seg-more" / "best.pt", weights_only=True)
    assert f"initialised from {best}" in logged and all(torch.equal(start[k], after[k]) for k in start)

    lcfg = LocalizationTraining(patch_size=(32, 16, 16), features=(4, 8), gn_features=4, gn_kernel=3, iterations=2,
                                batch_size=1, validate_every=2)
    lbest = train_localization(data, tmp_path / "loc", lcfg, log=lambda m: None)
    mdir = tmp_path / "models"
    monkeypatch.setenv(models.MODELS_DIR_ENV, str(mdir))
    install_model("localization", lbest, {"architecture": lcfg.architecture(), "spacing_mm": [4.0] * 3,
                                          "patch_size": list(lcfg.patch_size), "postprocess": {"threshold": 0.0}})
    install_model("segmentation", best, {"architecture": cfg.architecture(), "spacing_mm": [4.0] * 3,
                                         "patch_size": list(cfg.patch_size)})
    ct = data / "rawdata" / "sub-tiny0" / "sub-tiny0_ct.nii.gz"
    out = tmp_path / "out"
    assert cli.main(["analyze", str(ct), "-o", str(out), "--progress", "none"]) == cli.EXIT_OK
    result = json.loads((out / "analysis.json").read_text())
    assert {"localize", "segment", "grade"} <= set(result["timings_s"])
    assert not any(w.startswith("not done") for w in result["warnings"])
    from VertebralFractureLib.io.readers import read_image, read_labelmap

    image = read_image(ct).volume
    read_labelmap(out / "vertebrae.nii.gz", image)  # same geometry as the input
    frac = read_labelmap(out / "fracture.nii.gz", image).array
    assert set(np.unique(frac)) <= {0, 1, 2}
    for v in result["vertebrae"]:  # an untrained net: whatever it segments must be consistent
        if v["fracture_probability"] is not None:
            assert 0.0 <= v["fracture_probability"] <= 1.0
            assert v["status"] in ("normal", "fractured", "not assessable")
            assert (v["status"] == "not assessable") == (v["status_reason"] is not None)
            if v["status"] == "not assessable":
                assert v["genant"] is None  # never a grade without the evidence for it
    # stage 1 replaced by the user's centroids (the case's VerSe _ctd.json)
    from VertebralFractureLib.io.verse import list_cases, read_centroids

    case = next(c for c in list_cases(data) if c.subject == "sub-tiny0")
    given = read_centroids(case.centroids, image)
    out2 = tmp_path / "out2"
    assert cli.main(["analyze", str(ct), "-o", str(out2), "--progress", "none", "--centroids", str(case.centroids)]) == cli.EXIT_OK
    result2 = json.loads((out2 / "analysis.json").read_text())
    assert "localize" not in result2["timings_s"] and {"given-centroids", "segment", "grade"} <= set(result2["timings_s"])
    assert {v["label"] for v in result2["vertebrae"]} == set(given)
    for v in result2["vertebrae"]:
        assert np.allclose(v["centroid_lps_mm"], given[v["label"]], atol=1e-3)
    # evaluation from true centroids with the run's weights
    assert cli.main(["evaluate", "segment", "--data", str(data), "--weights", str(best), "--true-centroids",
                     "--output", str(tmp_path / "eval.json"), "--progress", "none"]) == cli.EXIT_OK
    ev = json.loads((tmp_path / "eval.json").read_text())
    assert ev["metrics"]["vertebrae_complete"] == 6 and ev["metrics"]["centroids"] == "true"
    assert len(ev["vertebrae"]) == 6 and {r["name"] for r in ev["vertebrae"]} == {"T12", "L1", "L2"}
    # the same with simulated localization errors; jitter needs the true centroids
    assert cli.main(["evaluate", "segment", "--data", str(data), "--weights", str(best), "--true-centroids",
                     "--centroid-jitter-mm", "3", "--output", str(tmp_path / "eval_j.json"), "--progress", "none"]) == cli.EXIT_OK
    ev_j = json.loads((tmp_path / "eval_j.json").read_text())
    assert ev_j["metrics"]["centroids"] == "true + N(0, 3 mm) per axis" and ev_j["metrics"]["vertebrae_complete"] == 6
    assert cli.main(["evaluate", "segment", "--data", str(data), "--weights", str(best),
                     "--centroid-jitter-mm", "3", "--progress", "none"]) == cli.EXIT_USAGE


def test_shipped_model_on_an_unseen_synthspine_case():
    """The stage-2 model in Resources/Models on a case outside its training and validation data
    (no simulated body, 1 mm): the complete vertebrae segmented with Dice ≥ 0.85 and the planted
    fractures scored above every normal vertebra."""
    pytest.importorskip("torch")
    from VertebralFractureLib import models
    from VertebralFractureLib.segment import segment
    from VertebralFractureLib.synth import FractureSpec, SynthConfig, generate_case

    assert models.model_status("segmentation") == "ok"
    fractures = {"L1": FractureSpec(2, "wedge"), "L3": FractureSpec(3, "crush")}
    config = SynthConfig(levels=("T11", "L4"), fractures=fractures, spacing=(1.0, 1.0, 1.0), fov=140.0, p_cut=0.0,
                         body=False, noise_hu=(10.0, 10.0))
    case = generate_case(4, config)
    truth = np.asarray(case.labelmap.array)
    labelmap, probs, _ = segment(case.ct, case.centroids_lps)  # the generator's centres of mass
    complete = {e["label"]: e["grade"] for e in case.truth if e["complete"]}
    assert len(complete) == 5
    for lab in complete:
        a, b = labelmap.array == lab, truth == lab
        assert 2 * np.sum(a & b) / (a.sum() + b.sum()) >= 0.85, lab
    fractured = [probs[lab] for lab, g in complete.items() if g >= 1]
    normal = [probs[lab] for lab, g in complete.items() if g == 0]
    assert len(fractured) == 2 and min(fractured) > 0.5 and min(fractured) > max(normal), probs


def test_shifted_crops_only_where_the_crop_and_its_mirror_leave_the_call_open():
    """Test-time variants: a clear call (p ≈ 0.95 or 0.05) takes two passes, an open one (p ≈ 0.5) four."""
    import torch

    from VertebralFractureLib.segment import SHIFTS_MM, segment_crops

    class Fake(torch.nn.Module):  # foreground in the crop's centre; P(fractured) set by the crop's brightness
        in_channels = 1

        def forward(self, x):
            b, _, z, y, w = x.shape
            out = torch.zeros(b, 3, z, y, w)
            out[:, 0] = 4.0
            centre = (slice(z // 4, 3 * z // 4), slice(y // 4, 3 * y // 4), slice(w // 4, 3 * w // 4))
            level = x[:, 0][(slice(None), *centre)].mean(dim=(1, 2, 3))  # 0 … 1
            frac_logit = torch.logit(level.clamp(0.02, 0.98))
            out[(slice(None), 0, *centre)] = -4.0
            out[(slice(None), 1, *centre)] = 0.0
            out[(slice(None), 2, *centre)] = frac_logit[:, None, None, None]
            self.calls = getattr(self, "calls", 0) + b
            return out

    grid = Volume(np.zeros((40, 20, 20), np.uint8), (2.0, 2.0, 2.0))
    image = np.zeros((40, 20, 20), np.float32)
    image[2:18] = 0.95  # the upper vertebra: clearly fractured
    image[22:38] = 0.5  # the lower one: undecided
    cents = {19: grid.zyx_to_lps(np.array([10.0, 10.0, 10.0])), 20: grid.zyx_to_lps(np.array([30.0, 10.0, 10.0]))}
    net = Fake()
    segs = {s.label: s for s in segment_crops(net, grid, image, cents, (12, 12, 12))}
    assert len(segs[19].variant_probabilities) == 2 and min(segs[19].variant_probabilities) > 0.9
    assert len(segs[20].variant_probabilities) == 2 + len(SHIFTS_MM)
    assert all(abs(p - 0.5) < 0.05 for p in segs[20].variant_probabilities)
    assert net.calls == 2 * 2 + len(SHIFTS_MM)
    plain = segment_crops(Fake(), grid, image, cents, (12, 12, 12), tta=False)
    assert all(s.variant_probabilities == () for s in plain)


def test_an_uncertain_vertebra_is_never_a_training_centre():
    from VertebralFractureLib.training.segmentation import (
        SegCase,
        SegmentationTraining,
        _draw,
        validation_pairs,
    )

    img, lab = np.zeros((4, 4, 4), np.float32), np.zeros((4, 4, 4), np.uint8)
    cents = {20: np.zeros(3), 21: np.ones(3), 22: np.full(3, 2.0)}
    real = SegCase("real", img, lab, frozenset({22}), cents, excluded=frozenset({20, 21}))
    only_uncertain = SegCase("grade1", img, lab, frozenset(), {23: np.zeros(3)}, excluded=frozenset({23}))
    rng = np.random.default_rng(0)
    drawn = {_draw([real, only_uncertain], SegmentationTraining(fractured_share=0.3), rng) for _ in range(300)}
    assert drawn == {(0, 22)}
    assert validation_pairs([real, only_uncertain]) == [(0, 22)]


def test_stage1_centroids_move_to_the_centre_of_their_outline():
    from VertebralFractureLib.analysis import VertebraResult
    from VertebralFractureLib.segment import recentre

    arr = np.zeros((60, 40, 40), np.uint8)
    arr[5:25, 10:30, 10:30] = 20  # centre of mass (z, y, x) = (14.5, 19.5, 19.5) voxels
    arr[35:55, 10:30, 10:30] = 21
    lm = Volume(arr, (1.0, 1.0, 1.0))
    near = VertebraResult(label=20, centroid_lps_mm=(19.5, 31.5, 14.5))  # 12 mm posterior of its outline's centre
    far = VertebraResult(label=21, centroid_lps_mm=(19.5, 19.5, 44.5 + 25.0))  # 25 mm off: left alone
    missing = VertebraResult(label=22, centroid_lps_mm=(0.0, 0.0, 0.0))  # no outline
    recentre({20: near, 21: far, 22: missing}, lm)
    assert near.centroid_lps_mm == pytest.approx((19.5, 19.5, 14.5))
    assert far.centroid_lps_mm == pytest.approx((19.5, 19.5, 69.5))
    assert missing.centroid_lps_mm == (0.0, 0.0, 0.0)


def test_training_caches_are_written_whole(tmp_path):
    """A cache file appears only complete (written aside and renamed), so trainings that share a data
    folder never read half of one; no temporary file is left behind."""
    from VertebralFractureLib.training.common import save_npz

    target = tmp_path / "sub-x.npz"
    save_npz(target, image=np.ones((4, 4), np.float16), labels=np.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["sub-x.npz"]
    with np.load(target) as d:
        assert d["image"].shape == (4, 4) and list(d["labels"]) == [0, 1, 2]
    save_npz(target, image=np.zeros((2, 2), np.float16), labels=np.arange(1))  # replaced, never appended
    with np.load(target) as d:
        assert d["image"].shape == (2, 2)


@pytest.mark.parametrize("from_stage1, refine, calls", [(True, True, 2), (True, False, 1), (False, True, 1)])
def test_stage1_centres_are_refined_by_a_first_look(monkeypatch, from_stage1, refine, calls):
    """With stage 1's centroids, the written outlines come from a second look (without test-time
    variants) around the centres of the first outlines; the calls come from the first look, and
    given centroids are outlined once, where given."""
    from VertebralFractureLib import segment as seg
    from VertebralFractureLib.analysis import VertebraResult
    from VertebralFractureLib.pipeline import AnalysisConfig, Context

    ct = Volume(np.zeros((40, 40, 40), np.int16), (1.0, 1.0, 1.0))
    lab = np.zeros(ct.array.shape, np.uint8)
    lab[10:30, 10:30, 10:30] = 20  # the outline's centre (LPS) = (19.5, 19.5, 19.5)
    shifted = np.roll(lab, 2, axis=0)  # the second look's outline, told apart from the first's
    seen = []

    def fake_segment(image, cents, device="cpu", progress=None, tta=True, **_):
        seen.append((tta, tuple(np.round(cents[20], 3))))
        return image.with_array(lab if tta else shifted), {20: 0.1 if tta else 0.9}, {20: 0.0}

    monkeypatch.setattr(seg, "segment", fake_segment)
    context = Context(image=ct, config=AnalysisConfig(device="cpu", refine_centroids=refine, bone_growth=False))
    context.vertebrae[20] = VertebraResult(label=20, centroid_lps_mm=(19.5, 31.5, 19.5))  # 12 mm behind
    context.centroids_from_stage1 = from_stage1
    seg.run_stage(context)
    assert len(seen) == calls
    assert seen[0] == (True, (19.5, 31.5, 19.5))
    assert context.vertebrae[20].centroid_lps_mm == (19.5, 31.5, 19.5)  # stages 2 and 3 work from stage 1's
    assert context.vertebrae[20].fracture_probability == pytest.approx(0.1)  # the first look's call
    assert np.array_equal(context.labelmap.array, lab)  # what stage 3 measures
    if calls == 2:
        assert seen[1] == (False, (19.5, 19.5, 19.5))
        assert np.array_equal(context.completed_labelmap.array, shifted)  # what is written out
    else:
        assert context.completed_labelmap is None


def test_the_second_look_keeps_the_first_looks_vertebrae():
    from VertebralFractureLib.segment import same_vertebrae

    first = np.zeros((10, 10, 10), np.uint8)
    first[0:3] = 20
    first[4:7] = 21
    second = np.zeros_like(first)
    second[0:4] = 20  # a little more of L1
    second[8:10] = 22  # a vertebra the first look did not outline: no call, dropped
    out = same_vertebrae(second, first)  # L2 lost in the second look: its first outline stays
    assert np.array_equal(out[0:4], np.full((4, 10, 10), 20))
    assert np.all(out[4:7] == 21) and not np.any(out == 22)


def test_a_vertebra_without_an_outline_is_not_assessable(monkeypatch):
    """A detected vertebra around whose centre stage 2 finds no foreground has nothing to measure or
    judge: it says so, instead of carrying no status at all."""
    from VertebralFractureLib import segment as seg
    from VertebralFractureLib.analysis import VertebraResult
    from VertebralFractureLib.pipeline import AnalysisConfig, Context

    ct = Volume(np.zeros((40, 40, 40), np.int16), (1.0, 1.0, 1.0))
    lab = np.zeros(ct.array.shape, np.uint8)
    lab[5:18, 10:30, 10:30] = 20

    def fake_segment(image, cents, device="cpu", progress=None, tta=True, **_):
        return image.with_array(lab), {20: 0.2}, {20: 0.0}  # nothing for 21

    monkeypatch.setattr(seg, "segment", fake_segment)
    context = Context(image=ct, config=AnalysisConfig(device="cpu", refine_centroids=False, bone_growth=False))
    context.vertebrae[20] = VertebraResult(label=20, centroid_lps_mm=(19.5, 19.5, 11.0))
    context.vertebrae[21] = VertebraResult(label=21, centroid_lps_mm=(19.5, 19.5, 30.0))
    seg.run_stage(context)
    assert context.vertebrae[20].status == "normal"
    missing = context.vertebrae[21]
    assert missing.status == "not assessable" and missing.genant is None
    assert "no outline" in missing.status_reason and missing.fracture_probability is None


def test_chain_outlines_tell_one_vertebra_found_twice_from_two():
    from VertebralFractureLib.segment import chain_outlines

    vol, cents = _two_vertebra_phantom(np.eye(3))
    card = ModelCard(name="segmentation", file="x.pt", sha256="0" * 64, spacing_mm=(2.0, 2.0, 2.0), patch_size=(24, 32, 32))
    upper, lower = cents[20], cents[21]
    # L1, L1 again 8 mm behind its centre (a peak in the canal), L2
    chain = np.array([upper, upper + [0.0, 8.0, 0.0], lower])
    out = chain_outlines(vol, chain, model=(card, _BoneNet()))
    assert out.shared.shape == (2,) and out.centres.shape == (3, 3)
    assert out.shared[0] > 0.9  # both crops outline the same block
    assert out.shared[1] == 0.0  # two blocks 12 mm apart share nothing
    assert np.linalg.norm(out.centres[1] - upper) < 2.0  # the second crop's outline is L1's
    assert np.linalg.norm(out.centres[2] - lower) < 2.0
    # a crop with nothing in it outlines nothing: no centre, nothing shared
    empty = chain_outlines(vol, np.array([upper, [500.0, 500.0, 500.0]]), model=(card, _BoneNet()))
    assert empty.shared.tolist() == [0.0] and np.isnan(empty.centres[1]).all()


def test_the_ct_is_resampled_once_per_model_grid_and_shared_within_one_analysis(monkeypatch):
    """Stage 1's outline check and stage 2's two looks work on the same model grid: with the
    analysis's ``model_inputs`` it is made once, and the outlines are those made without it."""
    from VertebralFractureLib import preprocess
    from VertebralFractureLib.segment import chain_outlines, segment

    vol, cents = _two_vertebra_phantom(np.eye(3))
    card = ModelCard(name="segmentation", file="x.pt", sha256="0" * 64, spacing_mm=(2.0, 2.0, 2.0), patch_size=(24, 32, 32))
    made = []
    resample = preprocess.to_model_grid
    monkeypatch.setattr(preprocess, "to_model_grid", lambda *a, **k: made.append(a[1]) or resample(*a, **k))
    alone = segment(vol, cents, model=(card, _BoneNet()), tta=False)
    assert made == [2.0]
    inputs: dict = {}
    chain = np.array([cents[20], cents[21]])
    outlines = chain_outlines(vol, chain, model=(card, _BoneNet()), inputs=inputs)
    first = segment(vol, cents, model=(card, _BoneNet()), tta=False, inputs=inputs)
    second = segment(vol, cents, model=(card, _BoneNet()), tta=False, inputs=inputs)
    assert made == [2.0, 2.0] and list(inputs) == [2.0]  # once for the three calls
    assert np.array_equal(first[0].array, alone[0].array) and np.array_equal(second[0].array, alone[0].array)
    assert first[1] == alone[1]
    assert np.array_equal(outlines.shared, chain_outlines(vol, chain, model=(card, _BoneNet())).shared)


def test_stage_2s_first_look_reuses_the_crops_stage_1s_outline_check_ran(monkeypatch):
    """The outline check leaves the network's output for its crops; the first look takes those
    (mirrored and other crops are still run) and gives what it gives without them."""
    from VertebralFractureLib import segment as seg

    vol, cents = _two_vertebra_phantom(np.eye(3))
    card = ModelCard(name="segmentation", file="x.pt", sha256="0" * 64, spacing_mm=(2.0, 2.0, 2.0), patch_size=(24, 32, 32))
    alone = seg.segment(vol, cents, model=(card, _BoneNet()))
    ran = []
    run = seg._run
    monkeypatch.setattr(seg, "_run", lambda net, jobs, *a, **k: ran.append([(i, v) for i, v, _ in jobs]) or run(net, jobs, *a, **k))
    outputs: dict = {}
    seg.chain_outlines(vol, np.array([cents[20], cents[21]]), model=(card, _BoneNet()), outputs=outputs)
    assert len(outputs) == 2 and ran[-1] == [(0, 0), (1, 0)]
    first = seg.segment(vol, cents, model=(card, _BoneNet()), outputs=outputs)
    assert ran[-2] == [(0, 1), (1, 1)]  # pass 1 ran only the mirror images
    assert not outputs  # taken, not kept
    assert np.array_equal(first[0].array, alone[0].array) and first[1] == alone[1] and first[2] == alone[2]
