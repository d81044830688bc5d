"""Stage 1 post-processing, preprocessing and metrics (the network itself: test_networks.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from factories import oblique_direction, tiny_verse_folder

from VertebralFractureLib import preprocess
from VertebralFractureLib.localize import (
    CHANNEL_LABELS,
    detect_and_name,
    is_complete,
)
from VertebralFractureLib.training.metrics import localization_metrics
from VertebralFractureLib.volume import Volume


def _heatmaps(grid: Volume, points: dict[int, np.ndarray], sigma_vox: float = 1.5, peak: float = 1.0):
    from VertebralFractureLib.training.localization import gaussian_targets

    zyx = {k: grid.lps_to_index(p)[::-1] for k, p in points.items()}
    return peak * gaussian_targets(grid.array.shape, zyx, sigma_vox)


def test_channel_order_is_cranio_caudal():
    assert CHANNEL_LABELS[:2] == (1, 2) and CHANNEL_LABELS[18:21] == (19, 28, 20) and len(CHANNEL_LABELS) == 26


def test_peaks_are_sub_voxel_accurate():
    grid = Volume(np.zeros((40, 30, 30), np.uint8), (4.0, 4.0, 4.0), (-60.0, -60.0, -80.0))
    truth = {20: np.array([1.3, -2.6, 10.9]), 21: np.array([0.7, 1.9, -20.2])}
    found = detect_and_name(_heatmaps(grid, truth), grid)
    assert [c.label for c in found] == [20, 21]
    for c in found:
        assert np.linalg.norm(c.position_lps - truth[c.label]) < 0.6  # well below the 4 mm voxel
        assert c.score == pytest.approx(1.0, abs=0.15)
    assert detect_and_name(_heatmaps(grid, truth, peak=0.1), grid, threshold=0.2) == []  # below threshold


def _spine(grid: Volume, labels: list[int], z_top: float = 260.0) -> dict[int, np.ndarray]:
    """Centroids of consecutive levels going caudally with the VerSe median spacing, slightly curved."""
    from VertebralFractureLib.anatomy import name_of
    from VertebralFractureLib.synth.priors import LEVELS

    out, z = {}, z_top
    for i, lab in enumerate(labels):
        out[lab] = np.array([20.0, 70.0 + 3.0 * np.sin(i / 3), z])
        z -= LEVELS[name_of(lab)].icd
    return out


def _channel(label: int) -> int:
    return CHANNEL_LABELS.index(label)


def test_detect_and_name_recovers_a_weak_or_confused_channel():
    grid = Volume(np.zeros((64, 30, 30), np.uint8), (5.0, 5.0, 5.0))
    truth = _spine(grid, [16, 17, 18, 19, 20, 21, 22])  # T9 … L3
    heat = _heatmaps(grid, truth, sigma_vox=1.2)
    l1 = _heatmaps(grid, {20: truth[20]}, sigma_vox=1.2)[_channel(20)]
    heat[_channel(20)] *= 0.1  # the network hesitates on L1 …
    heat[_channel(19)] += 0.4 * l1  # … and half calls it T12
    found = detect_and_name(heat, grid, threshold=0.3)
    assert [c.label for c in found] == [16, 17, 18, 19, 20, 21, 22]
    for c in found:
        assert np.linalg.norm(c.position_lps - truth[c.label]) < 1.0
    assert found[4].score == pytest.approx(0.1, abs=0.03)  # the score is L1's own (weak) evidence


def test_detect_and_name_skips_a_missed_vertebra_and_drops_outliers():
    grid = Volume(np.zeros((64, 40, 30), np.uint8), (5.0, 5.0, 5.0))
    truth = _spine(grid, [14, 15, 16, 17, 18, 19])  # T7 … T12
    seen = {k: v for k, v in truth.items() if k != 16}  # T9 not detected at all
    seen_heat = _heatmaps(grid, seen, sigma_vox=1.2)
    outlier = {15: truth[15] + np.array([0.0, -100.0, -12.0])}  # a bright spot 10 cm anterior
    heat = seen_heat + 0.6 * _heatmaps(grid, outlier, sigma_vox=1.2)
    found = detect_and_name(heat, grid, threshold=0.3)
    assert [c.label for c in found] == [14, 15, 17, 18, 19]
    assert detect_and_name(np.zeros_like(heat), grid, threshold=0.3) == []
    with pytest.raises(ValueError):
        detect_and_name(heat[:3], grid)


def test_detect_and_name_names_t13_only_where_its_channel_wins():
    grid = Volume(np.zeros((64, 30, 30), np.uint8), (5.0, 5.0, 5.0))
    normal = _spine(grid, [18, 19, 20, 21])  # T11, T12, L1, L2
    assert [c.label for c in detect_and_name(_heatmaps(grid, normal, 1.2), grid, 0.3)] == [18, 19, 20, 21]
    variant = _spine(grid, [18, 19, 28, 20, 21])  # T11, T12, T13, L1, L2
    assert [c.label for c in detect_and_name(_heatmaps(grid, variant, 1.2), grid, 0.3)] == [18, 19, 28, 20, 21]


def test_is_complete_uses_the_cranio_caudal_axis():
    vol = Volume(np.zeros((50, 20, 20), np.uint8), (1.0, 1.0, 2.0))  # 100 mm along z
    assert is_complete(np.array([10.0, 10.0, 50.0]), vol)
    assert not is_complete(np.array([10.0, 10.0, 3.0]), vol)
    assert not is_complete(np.array([10.0, 10.0, 96.0]), vol)
    assert not is_complete(np.array([10.0, 10.0, 150.0]), vol)


def test_model_grid_is_lps_aligned_and_keeps_positions():
    arr = np.full((30, 40, 50), -1000, np.int16)
    arr[15, 20, 25] = 2000
    vol = Volume(arr, (1.0, 1.5, 2.0), (10.0, -20.0, 30.0), oblique_direction(30.0))
    bright = vol.zyx_to_lps([15, 20, 25])
    grid = preprocess.to_model_grid(vol, 4.0)
    assert np.allclose(grid.direction, np.eye(3)) and grid.spacing == (4.0, 4.0, 4.0)
    peak = np.unravel_index(np.argmax(grid.array), grid.array.shape)
    assert np.linalg.norm(grid.zyx_to_lps(peak) - bright) < 4.0
    norm = preprocess.normalize(np.array([-3000.0, 0.0, 3000.0]))
    assert norm.tolist() == pytest.approx([-1.0, 0.0, 1.5])
    padded, pads = preprocess.pad_to_multiple(np.zeros((5, 9, 16)), 8, -1.0)
    assert padded.shape == (8, 16, 16) and pads == (3, 7, 0)


def test_localization_metrics():
    truth = [{19: np.array([0, 0, 60.0]), 20: np.array([0, 0, 30.0]), 21: np.array([0, 0, 0.0])}]
    pred = [{19: np.array([0, 0, 62.0]), 20: np.array([0, 0, 14.0]), 23: np.array([0, 0, -90.0])}]
    m = localization_metrics(pred, truth)
    assert m["vertebrae"] == 3 and m["id_rate"] == pytest.approx(1 / 3)  # L1 is 16 mm off, nearer L2
    assert m["mean_distance_mm"] == pytest.approx(9.0)
    assert m["error_rate_r4"] == pytest.approx(2 / 3) and m["error_rate_r20"] == pytest.approx(1 / 3)
    assert m["false_positive_labels"] == 1
    with pytest.raises(ValueError):
        localization_metrics(pred, truth * 2)


def test_training_runs_resumes_installs_and_the_model_is_used(tmp_path, monkeypatch):
    """A few iterations on tiny cases: the loop, checkpoints, resume, installation and inference wiring."""
    pytest.importorskip("torch")
    from VertebralFractureLib import cli, models
    from VertebralFractureLib.localize import localize
    from VertebralFractureLib.training.install import install_model
    from VertebralFractureLib.training.localization import (
        LocalizationTraining,
        cache_cases,
        train_localization,
    )

    data = tiny_verse_folder(tmp_path / "data")
    cases = cache_cases(data, 4.0)
    assert len(cases) == 2 and set(cases[0].centroids_zyx) == {19, 20, 21}
    cfg = LocalizationTraining(patch_size=(32, 16, 16), features=(4, 8), gn_features=4, gn_kernel=3, iterations=3,
                               batch_size=1, validate_every=2)
    run = tmp_path / "run"
    best = train_localization(data, run, cfg, val_root=data, log=lambda m: None)
    assert best.exists() and (run / "checkpoint.pt").exists()
    rows = (run / "log.csv").read_text().strip().splitlines()
    assert rows[0].startswith("iteration") and len(rows) == 3  # validation at 2 and at the end (3)
    cfg5 = LocalizationTraining(**{**cfg.__dict__, "iterations": 5})
    train_localization(data, run, cfg5, val_root=data, log=lambda m: None)  # resumes at 3
    assert (run / "log.csv").read_text().strip().splitlines()[-1].startswith("5,")

    mdir = tmp_path / "models"
    monkeypatch.setenv(models.MODELS_DIR_ENV, str(mdir))
    install_model("localization", best, {"architecture": cfg.architecture(), "spacing_mm": [4.0] * 3,
                                         "patch_size": list(cfg.patch_size), "training_data": "test"})
    assert models.model_status("localization") == "ok"
    from VertebralFractureLib.io.readers import read_image

    read_ct = read_image(data / "rawdata" / "sub-tiny0" / "sub-tiny0_ct.nii.gz").volume
    found = localize(read_ct)  # an untrained net finds whatever it finds; the chain must hold
    assert all(isinstance(c.score, float) for c in found)
    # analyze runs stage 1, leaves out the stages without weights, and says so
    code = cli.main(["analyze", str(data / "rawdata" / "sub-tiny0" / "sub-tiny0_ct.nii.gz"), "-o",
                     str(tmp_path / "out"), "--progress", "none"])
    assert code == cli.EXIT_OK
    result = json.loads((tmp_path / "out" / "analysis.json").read_text())
    assert "localize" in result["timings_s"] and "segment" not in result["timings_s"]
    assert any(w.startswith("not done: segment, grade (model not available") for w in result["warnings"])
