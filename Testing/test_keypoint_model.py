"""Stage 3's learned keypoints: the 2D M-SCN's input, heatmap read-out, training data and its use in grading."""

from __future__ import annotations

import json

import numpy as np
import pytest

from VertebralFractureLib.analysis import KEYPOINT_NAMES
from VertebralFractureLib.keypoints import KeypointInput, heatmap_peaks
from VertebralFractureLib.training.keypoints import KeypointTraining, augment, gaussian_targets


def test_pixel_and_plane_coordinates_round_trip():
    spec = KeypointInput(size=64, pixel_mm=0.5)
    st = np.array([[3.0, -7.25], [-10.0, 12.0], [0.0, 0.0]])
    rc = spec.st_to_pixels(st)
    np.testing.assert_allclose(spec.pixels_to_st(rc), st, atol=1e-9)
    # the plane centre is the middle of the image; anterior (s > 0) is on the left (small column)
    np.testing.assert_allclose(rc[2], [31.5, 31.5])
    assert rc[0, 1] < 31.5 and rc[0, 0] < 31.5


def test_heatmap_peaks_are_sub_pixel_and_report_their_height():
    kp = np.array([[[10.3, 40.7], [50.0, 12.25], [33.6, 33.4], [5.0, 60.0], [20.9, 20.1], [61.2, 2.8]]])
    heat = gaussian_targets(kp, 64, sigma_px=2.0)[0]
    heat[3] *= 0.2  # a weak channel
    rc, peaks = heatmap_peaks(heat)
    np.testing.assert_allclose(rc, kp[0], atol=0.02)
    assert peaks[3] == pytest.approx(0.2, abs=0.03) and peaks.min() == peaks[3]
    assert np.all(peaks[[0, 1, 2, 4, 5]] > 0.85)


def test_augmentation_moves_keypoints_with_the_image():
    cfg = KeypointTraining(size=64, pixel_mm=0.5, lateral_offsets_mm=(0.0,), mask_error_share=0.0,
                           rotation_deg=10.0, translate_mm=4.0)
    kp = np.array([[20.0, 15.0], [40.0, 44.0], [25.5, 30.0], [45.0, 20.0], [15.0, 45.0], [30.0, 30.0]], np.float32)
    stack = gaussian_targets(kp[None], 64, 1.5)[0].sum(0, keepdims=True)  # blobs where the keypoints are
    rng = np.random.default_rng(3)
    for _ in range(3):
        img, moved = augment(stack, kp, cfg, rng)
        assert img.shape == stack.shape
        for r, c in moved:  # every moved keypoint sits on a blob of the moved image
            assert img[0, int(round(r)), int(round(c))] > 0.6


def test_mask_errors_change_the_boundary_only():
    from VertebralFractureLib.training.keypoints import mask_errors

    stack = np.zeros((1, 64, 64), np.float32)
    stack[0, 20:44, 16:48] = 1.0
    noisy = mask_errors(stack, np.random.default_rng(0))
    assert set(np.unique(noisy)) <= {0.0, 1.0}
    inner, outer = noisy[0, 26:38, 22:42], noisy[0, :10, :]
    assert inner.all() and not outer.any()
    assert abs(noisy.sum() - stack.sum()) < 0.3 * stack.sum()


def test_outline_defects_open_the_posterior_wall_and_leave_the_corners_and_endplates():
    from VertebralFractureLib.training.keypoints import outline_defects

    # a body 24 rows (superior up = small row) by 32 columns (anterior left), 0.5 mm pixels, 3 planes
    stack = np.zeros((3, 64, 64), np.float32)
    stack[:, 20:44, 16:48] = 1.0
    kp = np.array([[20, 16], [43, 16], [20, 32], [43, 32], [20, 47], [43, 47]], np.float32)  # A, M, P: sup, inf
    rng = np.random.default_rng(0)
    carved_mid, carved_side = 0, 0
    for _ in range(20):
        out = outline_defects(stack, kp, 0.5, rng)
        assert set(np.unique(out)) <= {0.0, 1.0} and not np.any(out > stack)  # only removes
        gone = (stack > 0) & (out == 0)
        for r, c in kp.astype(int):  # the keypoints' corners and endplates stay
            assert out[:, r, c].all()
        assert out[:, 20, 17:46].all() and out[:, 43, 17:46].all()
        # the pocket lies at the posterior wall between the corners, deepest on the middle plane
        wall = gone[:, 22:42, 44:48]
        assert wall[1].any()
        carved_mid += int(gone[1].sum())
        carved_side += int(gone[0].sum() + gone[2].sum()) // 2
        assert not gone[:, :, 16:20].any() or gone[:, 22:42, 16:20].any()  # holes only inside the body
    assert carved_mid > carved_side


def test_network_shape_and_card_arguments():
    pytest.importorskip("torch")
    import torch

    from VertebralFractureLib.keypoints import build_keypoint_network

    cfg = KeypointTraining(size=32, features=(4, 8, 8), gn_features=4, gn_kernel=3)
    net = build_keypoint_network(cfg.architecture())
    out = net(torch.zeros(2, 3, 32, 32))
    assert out.shape == (2, 6, 32, 32)


def test_train_install_and_grade_with_learned_keypoints(tmp_path, monkeypatch):
    """A few iterations on tiny cases: extraction, loop, resume, installation; grading uses the
    network where it is confident and says so, and measures on the mask where it is not."""
    pytest.importorskip("torch")
    from factories import tiny_verse_folder

    from VertebralFractureLib import cli, models
    from VertebralFractureLib.errors import ModelNotAvailableError
    from VertebralFractureLib.io.readers import read_image, read_labelmap
    from VertebralFractureLib.io.verse import list_cases
    from VertebralFractureLib.pipeline import AnalysisConfig, GivenSegmentation, analyze, grading_stage
    from VertebralFractureLib.training.install import install_model
    from VertebralFractureLib.training.keypoints import load_samples, train_keypoints

    data = tiny_verse_folder(tmp_path / "data")
    cfg = KeypointTraining(size=64, pixel_mm=1.0, features=(4, 8, 8), gn_features=4, gn_kernel=3, iterations=3,
                           batch_size=2, validate_every=2, variants=2)
    samples = load_samples([data], cfg, log=lambda m: None)
    assert samples["x"].shape == (2 * 3 * 2, 3, 64, 64) and samples["kp"].shape == (12, 6, 2)
    # the exact frame puts the true keypoints where the box's corners are: heights 20 mm
    exact = samples["kp"][samples["variant"] == 0]
    assert np.allclose(np.abs(exact[:, 0, 0] - exact[:, 1, 0]) * cfg.pixel_mm, 20.0, atol=0.5)
    run = tmp_path / "kp"
    best = train_keypoints([data], run, cfg, val_root=data, log=lambda m: None)
    assert (run / "log.csv").read_text().strip().splitlines()[-1].startswith("3,")
    train_keypoints([data], run, KeypointTraining(**{**cfg.__dict__, "iterations": 4}), val_root=data,
                    log=lambda m: None)
    assert (run / "log.csv").read_text().strip().splitlines()[-1].startswith("4,")

    case = list_cases(data)[0]
    image = read_image(case.ct).volume
    seg = read_labelmap(case.vertebra_mask, image)
    mdir = tmp_path / "models"
    monkeypatch.setenv(models.MODELS_DIR_ENV, str(mdir))
    with pytest.raises(ModelNotAvailableError):
        analyze(image, AnalysisConfig(keypoints="learned"), stages=[GivenSegmentation(seg), grading_stage()])
    card = {"architecture": cfg.architecture(), "spacing_mm": [cfg.pixel_mm] * 2, "patch_size": [cfg.size] * 2}
    install_model("keypoints", best, {**card, "postprocess": {"min_peak": -1e9}})
    result = analyze(image, AnalysisConfig(), stages=[GivenSegmentation(seg), grading_stage()])
    assert result.models["keypoints"]["sha256"] == models.require("keypoints").sha256
    graded = [v for v in result.vertebrae if v.genant is not None]
    # an untrained net may put points anywhere; too-low heights fall back to the mask with a note
    for v in graded:
        assert v.keypoint_method in ("learned", "geometric")
        if v.keypoint_method == "geometric":
            assert any("not confident" in n for n in v.notes)
    install_model("keypoints", best, {**card, "postprocess": {"min_peak": 1e9}})  # never confident
    result = analyze(image, AnalysisConfig(), stages=[GivenSegmentation(seg), grading_stage()])
    assert {v.keypoint_method for v in result.vertebrae if v.genant is not None} == {"geometric"}
    geometric = analyze(image, AnalysisConfig(keypoints="geometric"), stages=[GivenSegmentation(seg), grading_stage()])
    assert "keypoints" not in geometric.models
    assert all(v.genant.grade == 0 for v in geometric.vertebrae if v.genant is not None)  # boxes: no height loss

    out = tmp_path / "eval.json"
    assert cli.main(["evaluate", "grade", "--data", str(data), "--weights", str(best), "--keypoints", "learned",
                     "--threshold=-1e9", "--output", str(out), "--progress", "none"]) == cli.EXIT_OK
    metrics = json.loads(out.read_text())["metrics"]
    assert metrics["keypoints"] == "learned" and metrics["graded"] <= metrics["vertebrae_complete"] == 6
    assert set(metrics["by_slice_mm"]) == {"<=1.25", "1.25-2.5", ">2.5"}


def test_quadratic_kappa():
    from VertebralFractureLib.training.metrics import quadratic_kappa

    t = np.array([0, 0, 1, 2, 3, 0])
    assert quadratic_kappa(t, t) == pytest.approx(1.0)
    assert quadratic_kappa(t, np.array([0, 0, 2, 2, 3, 0])) < 1.0
    assert quadratic_kappa(np.zeros(4, int), np.zeros(4, int)) is None


def test_shipped_model_on_an_unseen_synthspine_case():
    """The keypoint model in Resources/Models on a case none of its training or validation data
    holds: keypoints near the generator's exact ones, planted fractures graded, normals grade 0."""
    pytest.importorskip("torch")
    from VertebralFractureLib import models
    from VertebralFractureLib.pipeline import AnalysisConfig, GivenSegmentation, analyze, grading_stage
    from VertebralFractureLib.synth import FractureSpec, SynthConfig, generate_case

    assert models.model_status("keypoints") == "ok"
    fractures = {"L1": FractureSpec(2, "wedge"), "L3": FractureSpec(3, "crush")}
    config = SynthConfig(levels=("T11", "L4"), fractures=fractures, spacing=(1.0, 1.0, 1.0), fov=140.0, p_cut=0.0,
                         body=False, noise_hu=(10.0, 10.0))
    case = generate_case(4, config)  # T12–L4 complete: L1 ratio 0.69, L3 0.54, normals 0.84–0.88
    result = analyze(case.ct, AnalysisConfig(keypoints="learned"),
                     stages=[GivenSegmentation(case.labelmap), grading_stage()])
    assert result.models["keypoints"]["sha256"] == models.require("keypoints").sha256
    truth = {e["name"]: e for e in case.truth if e["complete"]}
    errors = []
    for name, e in truth.items():
        v = result.vertebra(name)
        assert v.keypoint_method == "learned", (name, v.notes)
        errors += [np.linalg.norm(np.subtract(v.keypoints_lps_mm[k], e["keypoints_lps_mm"][k])) for k in KEYPOINT_NAMES]
        assert (v.genant.grade >= 1) == (e["grade"] >= 1), (name, v.genant, e["grade"])
        assert abs(v.genant.ratio - e["ratio"]) < 0.04, (name, v.genant.ratio, e["ratio"])
    assert np.mean(errors) < 1.0, np.mean(errors)
    assert result.vertebra("L1").genant.grade == 2 and result.vertebra("L1").genant.type == "wedge"
    assert result.vertebra("L3").genant.grade == 3


def test_deformed_vertebrae_are_drawn_at_their_share():
    from VertebralFractureLib.training.keypoints import deformed, draw_batch

    def kp(ha, hm, hp):  # rows of (sup, inf) per column, A M P
        return [[0, 0], [ha, 0], [0, 5], [hm, 5], [0, 10], [hp, 10]]

    kps = np.array([kp(20, 20, 20)] * 95 + [kp(14, 20, 20)] * 5, dtype=float)
    mask = deformed(kps, 0.8)
    assert mask.sum() == 5 and mask[-5:].all()
    cfg = KeypointTraining(batch_size=1000, deformed_share=0.3)
    share = mask[draw_batch(mask, cfg, np.random.default_rng(0))].mean()
    assert 0.28 < share < 0.36  # 30 % drawn from the deformed, plus the 5 % met by chance
    assert mask[draw_batch(mask, KeypointTraining(batch_size=1000), np.random.default_rng(0))].mean() < 0.1
