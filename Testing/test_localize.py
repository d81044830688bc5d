"""Stage 1 post-processing, preprocessing and metrics (the network itself: test_networks.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from factories import oblique_direction, tiny_verse_folder

from VertebralFractureLib import preprocess
from VertebralFractureLib.localize import (
    CHANNEL_LABELS,
    UNANCHORED_CONFIDENCE,
    detect_and_name,
    is_complete,
    step_costs,
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
    assert [c.label for c in detect_and_name(heat, grid, threshold=0.3, fill=False)] == [14, 15, 17, 18, 19]
    # the missed T9 is placed between its neighbours, flagged, and named in the count
    found = detect_and_name(heat, grid, threshold=0.3)
    assert [c.label for c in found] == [14, 15, 16, 17, 18, 19]
    assert [c.interpolated for c in found] == [False, False, True, False, False, False]
    assert np.linalg.norm(found[2].position_lps - truth[16]) < 6.0
    assert detect_and_name(np.zeros_like(heat), grid, threshold=0.3) == []
    with pytest.raises(ValueError):
        detect_and_name(heat[:3], grid)


def test_fill_gaps_places_missed_vertebrae_only_where_the_spacing_shows_them():
    from VertebralFractureLib.localize import fill_gaps

    line = np.array([[0.0, 0.0, -20.0 * k] for k in range(8)])
    same, flags = fill_gaps(line)
    assert np.array_equal(same, line) and not flags.any()
    one = np.delete(line, 3, axis=0)  # a 40 mm step among 20 mm ones: one missed
    filled, flags = fill_gaps(one)
    assert np.allclose(filled, line) and flags.tolist() == [False, False, False, True] + [False] * 4
    two = np.delete(line, [3, 4], axis=0)  # 60 mm: two missed
    filled, flags = fill_gaps(two)
    assert np.allclose(filled, line) and flags.sum() == 2
    # lumbar spacing grows gradually (25 → 35 mm): nothing is placed
    grow = np.cumsum([[0, 0, -s] for s in (25, 27, 29, 31, 33, 35, 36)], axis=0)
    assert not fill_gaps(grow)[1].any()
    # three detections: no reliable spacing, nothing placed
    assert not fill_gaps(one[:3] * [1, 1, 3])[1].any()


def test_merge_duplicates_joins_a_split_peak_but_not_a_crushed_vertebra():
    from VertebralFractureLib.localize import merge_duplicates

    line = np.array([[0.0, 0.0, -30.0 * k] for k in range(6)])
    vox = [np.array([k, 0, 0]) for k in range(6)]
    same, same_vox = merge_duplicates(line, vox, np.ones(6))
    assert np.array_equal(same, line) and len(same_vox) == 6
    # vertebra 2 found twice, 12 mm apart (peaks 0.9 and 0.3): one vertebra at the weighted mean
    split = np.insert(line, 3, line[2] + [0.0, 0.0, -12.0], axis=0)
    peaks = np.array([1.0, 1.0, 0.9, 0.3, 1.0, 1.0, 1.0])
    merged, merged_vox = merge_duplicates(split, vox[:3] + [np.array([9, 9, 9])] + vox[3:], peaks)
    assert len(merged) == 6 and merged[2] == pytest.approx(line[2] + [0.0, 0.0, -3.0])
    assert merged_vox[2].tolist() == [2, 0, 0]  # the stronger peak's voxel names it
    # a crushed vertebra (half its height) shortens its two steps to ~0.8 of the others: kept
    crushed = line.copy()
    crushed[3:] += [0.0, 0.0, 7.0]
    crushed[3] += [0.0, 0.0, -1.0]
    assert len(merge_duplicates(crushed, vox, np.ones(6))[0]) == 6
    # three detections: no reliable spacing, nothing merged
    assert len(merge_duplicates(split[1:4], vox[1:4], peaks[1:4])[0]) == 3


def test_a_vertebra_cut_by_the_top_of_the_view_is_placed_where_bone_is():
    from VertebralFractureLib.localize import extend_cranially

    arr = np.full((60, 20, 20), -100.0, np.float32)  # z up: index 0 = caudal (LPS z = 5 × index)
    centres = [5.0 + 30.0 * k for k in range(6)]  # mm; the top one at 155 is 140 mm up, view ends at 295
    for z in centres:
        k = int(round(z / 5.0))
        arr[k - 2: k + 3, 6:14, 6:14] = 400.0
    grid = Volume(arr, (5.0, 5.0, 5.0))
    chain = np.array([[47.5, 47.5, z] for z in centres[::-1][1:]])  # 125 … 5: the top vertebra (155) missed
    vox = [np.array([int(z / 5), 9, 9]) for z in chain[:, 2]]
    # the missed one lies 140 mm below the top of the view: whole, so not placed
    same, _, flags = extend_cranially(chain, vox, grid, 26)
    assert len(same) == 5 and not flags.any()
    cut = Volume(arr[:36], (5.0, 5.0, 5.0))  # the view ends at 175 mm: the vertebra at 155 is cut
    placed, placed_vox, flags = extend_cranially(chain, vox, cut, 26)
    assert flags.tolist() == [True] + [False] * 5 and placed[0] == pytest.approx([47.5, 47.5, 155.0])
    assert placed_vox[0].tolist() == [31, 10, 10]  # (z, y, x) grid index of 155, 47.5, 47.5 mm
    soft = cut.with_array(np.where(np.arange(36)[:, None, None] > 28, -100.0, arr[:36]).astype(np.float32))
    assert not extend_cranially(chain, vox, soft, 26)[2].any()  # no bone there: nothing placed
    assert not extend_cranially(chain[:1], vox[:1], cut, 26)[2].any()  # one detection: no step


def test_detect_and_name_names_t13_only_where_its_channel_wins():
    grid = Volume(np.zeros((64, 30, 30), np.uint8), (5.0, 5.0, 5.0))
    normal = _spine(grid, [18, 19, 20, 21])  # T11, T12, L1, L2
    assert [c.label for c in detect_and_name(_heatmaps(grid, normal, 1.2), grid, 0.3)] == [18, 19, 20, 21]
    variant = _spine(grid, [18, 19, 28, 20, 21])  # T11, T12, T13, L1, L2
    assert [c.label for c in detect_and_name(_heatmaps(grid, variant, 1.2), grid, 0.3)] == [18, 19, 28, 20, 21]


def test_without_an_anchor_in_view_no_vertebra_is_named_t13_or_l6():
    from VertebralFractureLib.anchors import AnchorReport, VertebraEvidence

    grid = Volume(np.zeros((64, 30, 30), np.uint8), (5.0, 5.0, 5.0))
    variant = _spine(grid, [18, 19, 28, 20, 21])  # the network says T11, T12, T13, L1, L2
    heat = _heatmaps(grid, variant, 1.2)
    none_in_view = AnchorReport([VertebraEvidence() for _ in range(5)], [])
    found = detect_and_name(heat, grid, 0.3, anchors=none_in_view)
    assert [c.label for c in found] == [18, 19, 20, 21, 22]  # the usual anatomy: T11, T12, L1, L2, L3
    assert all(c.naming["anchor"] is None for c in found)
    lumbar = _spine(grid, [21, 22, 23, 24, 25])  # L2 … L6
    assert [c.label for c in detect_and_name(_heatmaps(grid, lumbar, 1.2), grid, 0.3, anchors=none_in_view)] == \
        [20, 21, 22, 23, 24]


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


# ------------------------------------------------------------------ naming from anchors
def _shifted_heatmaps(grid: Volume, truth: dict[int, np.ndarray], shift: int) -> np.ndarray:
    """Heatmaps of a network that puts every vertebra ``shift`` channels away from its true label."""
    wrong = {CHANNEL_LABELS[_channel(lab) + shift]: p for lab, p in truth.items()}
    return _heatmaps(grid, wrong, sigma_vox=1.2)


def _anchor(kind: str, index: int, confidence: float):
    from VertebralFractureLib.anchors import ANCHOR_LABELS, Anchor

    return Anchor(kind, index, confidence, ANCHOR_LABELS[kind])


def _rib_anchor(kind: str, index: int, confidence: float) -> list:
    """A rib anchor as :func:`~VertebralFractureLib.anchors.find_anchors` gives it: with its consequence
    for the rib-free neighbour (above the first rib, below the last)."""
    from VertebralFractureLib.anchors import rib_free_neighbour

    a = _anchor(kind, index, confidence)
    return [a, rib_free_neighbour(a, index + 1, (19,)) if kind == "last rib" else rib_free_neighbour(a, index - 1, (8,))]


def test_without_anchors_the_network_names_and_none_in_view_names_no_variant():
    grid = Volume(np.zeros((64, 30, 30), np.uint8), (5.0, 5.0, 5.0))
    truth = _spine(grid, [16, 17, 18, 19, 20, 21, 22])
    heat = _shifted_heatmaps(grid, truth, -2)  # the network says T7 … L1 for T9 … L3
    plain = detect_and_name(heat, grid, threshold=0.3)
    assert len(plain) == 7 and plain[0].label == 14 and all(c.naming is None for c in plain)
    assert 28 in [c.label for c in plain]  # the network alone names a T13 where its channel wins
    empty = detect_and_name(heat, grid, threshold=0.3, anchors=[])  # looked for, none in view
    assert [c.label for c in empty] == [14, 15, 16, 17, 18, 19, 20]  # the usual anatomy: no T13 without ribs
    assert all(c.naming == {"anchor": None, "confidence": UNANCHORED_CONFIDENCE} for c in empty)


def test_an_anchor_corrects_a_network_two_levels_off():
    grid = Volume(np.zeros((64, 30, 30), np.uint8), (5.0, 5.0, 5.0))
    labels = [16, 17, 18, 19, 20, 21, 22]  # T9 … L3
    truth = _spine(grid, labels)
    heat = _shifted_heatmaps(grid, truth, -2)
    found = detect_and_name(heat, grid, threshold=0.3, anchors=_rib_anchor("last rib", 3, 0.75))
    assert [c.label for c in found] == labels
    assert all(c.naming["anchor"] == "last rib" for c in found)
    conf = [c.naming["confidence"] for c in found]
    assert conf[3] == pytest.approx(0.75) and conf[0] < conf[3] and min(conf) > UNANCHORED_CONFIDENCE
    # counted up from the sacrum; a callable gets the chain's centroids, cranial to caudal
    labels = [18, 19, 20, 21, 22, 23, 24]  # T11 … L5
    heat = _shifted_heatmaps(grid, _spine(grid, labels), -2)
    seen = []
    found = detect_and_name(heat, grid, threshold=0.3, anchors=lambda p: seen.append(p) or [_anchor("sacrum", 6, 0.8)])
    assert seen[0].shape == (7, 3) and np.all(np.diff(seen[0][:, 2]) < 0)
    assert [c.label for c in found] == labels and found[0].naming["anchor"] == "sacrum"


def test_naming_variants_from_two_anchors():
    grid = Volume(np.zeros((90, 30, 30), np.uint8), (5.0, 5.0, 5.0))
    # 13 rib-bearing vertebrae (T1 … T13): the last one is named T13
    labels = [7] + list(range(8, 20)) + [28, 20]  # C7, T1 … T12, T13, L1
    truth = _spine(grid, labels, z_top=420.0)
    heat = _shifted_heatmaps(grid, {k: v for k, v in truth.items() if k != 28}, 0)
    # the network misses the T13 channel; there is a detection (peak) at T13 labelled "L1", L1 labelled "L2"
    heat += _heatmaps(grid, {20: truth[28]}, sigma_vox=1.2)
    heat[_channel(20)] -= _heatmaps(grid, {20: truth[20]}, sigma_vox=1.2)[_channel(20)]
    heat += _heatmaps(grid, {21: truth[20]}, sigma_vox=1.2)
    found = detect_and_name(heat, grid, threshold=0.3,
                            anchors=[*_rib_anchor("first rib", 1, 0.9), *_rib_anchor("last rib", 13, 0.75)])
    assert [c.label for c in found] == labels
    assert all(c.naming["anchor"] == "first rib" for c in found)  # exact; the last rib is met as a variant (T13)
    assert found[13].naming["confidence"] < found[1].naming["confidence"]
    # 11 rib-bearing vertebrae (first rib on T1, last on T11): names count from the first rib, the
    # last rib is met as a variant (11 pairs) and the confidence says so
    labels = [7] + list(range(8, 21))  # C7, T1 … T12, L1
    truth = _spine(grid, labels, z_top=420.0)
    heat = _shifted_heatmaps(grid, truth, 0)
    consistent = detect_and_name(heat, grid, threshold=0.3,
                                 anchors=[*_rib_anchor("first rib", 1, 0.9), *_rib_anchor("last rib", 12, 0.75)])
    eleven = detect_and_name(heat, grid, threshold=0.3,
                             anchors=[*_rib_anchor("first rib", 1, 0.9), *_rib_anchor("last rib", 11, 0.75)])
    assert [c.label for c in consistent] == [c.label for c in eleven] == labels
    assert all(e.naming["confidence"] < c.naming["confidence"] for e, c in zip(eleven, consistent))


def test_six_lumbar_vertebrae_between_the_last_rib_and_the_sacrum():
    grid = Volume(np.zeros((80, 30, 30), np.uint8), (5.0, 5.0, 5.0))
    labels = [18, 19, 20, 21, 22, 23, 24, 25]  # T11, T12, L1 … L6
    truth = _spine(grid, labels, z_top=380.0)
    heat = _shifted_heatmaps(grid, {k: v for k, v in truth.items() if k != 25}, 0)
    heat += _heatmaps(grid, {24: truth[25]}, sigma_vox=1.2)  # the network calls L6 "L5" a second time
    found = detect_and_name(heat, grid, threshold=0.3, anchors=[*_rib_anchor("last rib", 1, 0.75), _anchor("sacrum", 7, 0.8)])
    assert [c.label for c in found] == labels
    assert all(c.naming["anchor"] == "last rib" for c in found)  # exact; the sacrum is met as a variant (L6) …
    assert max(c.naming["confidence"] for c in found) < 0.7  # … which makes every name less sure


def test_contradicted_anchor_is_reported():
    from VertebralFractureLib.anchors import AnchorReport, VertebraEvidence

    grid = Volume(np.zeros((64, 30, 30), np.uint8), (5.0, 5.0, 5.0))
    labels = [22, 23, 24]  # L3, L4, L5; a (wrong) last rib on L3, the sacrum below L5
    truth = _spine(grid, labels)
    report = AnchorReport([VertebraEvidence() for _ in labels], [_anchor("last rib", 0, 0.7), _anchor("sacrum", 2, 0.85)])
    found = detect_and_name(_shifted_heatmaps(grid, truth, 0), grid, threshold=0.3, anchors=report)
    assert [c.label for c in found] == labels  # the surer anchor wins; the chain stays consecutive
    assert len(report.conflicts) == 1 and report.conflicts[0].startswith("the last rib anchor")
    assert all(c.naming["anchor"] == "sacrum" for c in found)


def test_detections_in_the_sacrum_are_dropped():
    from VertebralFractureLib.anchors import AnchorReport, VertebraEvidence

    grid = Volume(np.zeros((64, 30, 30), np.uint8), (5.0, 5.0, 5.0))
    labels = [20, 21, 22, 23, 24]
    truth = _spine(grid, labels)
    heat = _shifted_heatmaps(grid, truth, 0) + _heatmaps(grid, {25: truth[24] + [0.0, 8.0, -34.0]}, 1.2)
    evidence = [VertebraEvidence() for _ in range(6)]
    evidence[5].in_sacrum = True  # S1, detected as "L6"
    found = detect_and_name(heat, grid, threshold=0.3, anchors=AnchorReport(evidence, [_anchor("sacrum", 4, 0.8)]))
    assert [c.label for c in found] == labels


def test_variant_steps_only_with_anchors():
    t11, l1 = _channel(18), _channel(20)
    plain, anchored = step_costs(27.0), step_costs(27.0, variants=True)
    assert anchored[t11, l1] < plain[t11, l1]  # T11 → L1 is one step (11 thoracic vertebrae), not a skip
    assert anchored[t11, l1] > anchored[t11, _channel(19)]  # … but a variant costs a little
    keep = np.ones_like(plain, bool)
    keep[t11, l1] = False
    assert np.array_equal(plain[keep], anchored[keep])


def test_field_of_view_crop_blanks_outside_and_drops_cut_vertebrae():
    from VertebralFractureLib.training.localization import crop_field_of_view

    patch = np.zeros((64, 40, 40), np.float32) + 0.2
    # ten vertebrae 5 voxels (25 mm at 5 mm) apart down the middle of the patch
    cents = {8 + k: np.array([5.0 + 5 * k, 20.0, 20.0]) for k in range(10)}
    seen_fewer = False
    for seed in range(20):
        out, kept = crop_field_of_view(patch, cents, 5.0, np.random.default_rng(seed), -1.0)
        assert out.shape == patch.shape and out.dtype == np.float32
        blank = out == -1.0
        assert blank.any() and (~blank).any()
        # every kept vertebra lies in the kept field of view, and at least the chosen run is kept
        assert 2 <= len(kept) <= len(cents)
        for p in kept.values():
            assert out[tuple(np.round(p).astype(int))] == np.float32(0.2)
        # a vertebra whose centroid level is blanked has no target any more
        for k, p in cents.items():
            if k not in kept:
                assert blank[int(round(p[0]))].all()
        # the in-plane box is tight: 80–160 mm, i.e. 16–32 voxels of the 40
        row = ~blank[int(round(next(iter(kept.values()))[0])), :, 20]
        assert 14 <= row.sum() <= 34
        seen_fewer |= len(kept) < len(cents)
    assert seen_fewer
    # the run is chosen among the vertebrae inside the patch; with fewer than two there, nothing is cut
    outside = {8: np.array([-30.0, 20.0, 20.0]), 9: np.array([-25.0, 20.0, 20.0]), 10: np.array([3.0, 20.0, 20.0])}
    same, kept = crop_field_of_view(patch, outside, 5.0, np.random.default_rng(0), -1.0)
    assert same is patch and kept is outside


def test_mirrored_heatmaps_are_the_mean_of_both_readings_mirrored_back():
    import torch

    from VertebralFractureLib.localize import heatmaps, two_looks

    class Card:  # the two fields heatmaps() reads
        spacing_mm, patch_size = 4.0, (16, 16, 16)

    class LeftBiased(torch.nn.Module):  # reads the image and adds a ramp towards the grid's left
        divisor = 4

        def forward(self, x):
            ramp = torch.linspace(0.0, 1.0, x.shape[-1]).expand_as(x)
            return torch.cat([x, ramp], dim=1)

    ct = Volume(np.random.default_rng(0).normal(0, 200, (16, 16, 16)).astype(np.float32), (4.0, 4.0, 4.0),
                (0.0, 0.0, 0.0), np.eye(3))
    plain, grid = heatmaps(ct, Card, LeftBiased())
    mirrored, grid2 = heatmaps(ct, Card, LeftBiased(), mirror=True)
    assert grid.same_geometry(grid2)
    np.testing.assert_allclose(mirrored[0], plain[0], atol=1e-6)  # a reading that follows the image is kept
    np.testing.assert_allclose(mirrored[1], 0.5, atol=1e-6)  # a left-right bias cancels
    # the two looks of the pipeline: the image, and its mirror image read and mirrored back
    first, second, _ = two_looks(ct, Card, LeftBiased())
    np.testing.assert_allclose(second[0], first[0], atol=1e-6)  # the image, read in either direction
    np.testing.assert_allclose(second[1], first[1][..., ::-1], atol=1e-6)  # the bias, mirrored back
    assert two_looks(ct, Card, LeftBiased(), second=False)[1] is None
    assert np.ptp(plain[1]) > 0.9


def test_a_second_look_adds_what_the_first_missed_and_moves_nothing():
    grid = Volume(np.zeros((64, 30, 30), np.uint8), (5.0, 5.0, 5.0))
    truth = _spine(grid, [19, 20, 21, 22, 23], z_top=220.0)  # T12 … L4
    first = _heatmaps(grid, {k: p for k, p in truth.items() if k != 23})  # L4 (the chain's end) missed
    shifted = {k: p + np.array([0.0, 3.0, 0.0]) for k, p in truth.items()}  # the second look's peaks lie elsewhere
    second = _heatmaps(grid, shifted)
    alone = detect_and_name(first, grid, threshold=0.3)
    both = detect_and_name(first, grid, threshold=0.3, second=second)
    assert len(alone) == 4 and len(both) == 5
    for a, b in zip(alone, both):  # the first look's vertebrae keep their positions
        np.testing.assert_allclose(a.position_lps, b.position_lps)
    assert np.linalg.norm(both[-1].position_lps - shifted[23]) < 1.0  # the added one at the second look's peak
    assert not both[-1].interpolated and not both[-1].extrapolated
    with pytest.raises(ValueError, match="second look"):
        detect_and_name(first, grid, second=second[:, :10])


def test_merge_same_outlines_keeps_one_detection_per_outlined_vertebra():
    from VertebralFractureLib.localize import merge_same_outlines
    from VertebralFractureLib.segment import ChainOutlines

    pos = np.array([[0.0, 0.0, -30.0 * k] for k in range(5)])
    centres = pos.copy()
    centres[2] = pos[1] + [0.0, 0.0, -1.0]  # detection 2 lies 29 mm from the outline its crop drew
    centres[3] = [np.nan] * 3  # detection 3's crop outlined nothing
    # 1, 2 and 3 outline one vertebra: the one nearest to its outline's centre stays
    assert merge_same_outlines(pos, ChainOutlines(np.array([0.0, 0.6, 0.5, 0.0]), centres)) == [0, 1, 4]
    # a share below the limit keeps both (two vertebrae that touch at a facet)
    assert merge_same_outlines(pos, ChainOutlines(np.array([0.0, 0.39, 0.0, 0.1]), centres)) == [0, 1, 2, 3, 4]
    assert merge_same_outlines(pos[:1], ChainOutlines(np.zeros(0), centres[:1])) == [0]
    # a member placed between its neighbours (not detected) gives way to a detected one
    placed = np.array([True, False, True, True, True])
    assert merge_same_outlines(pos, ChainOutlines(np.array([0.6, 0.0, 0.0, 0.0]), pos), detected=~placed) == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="shares"):
        merge_same_outlines(pos, ChainOutlines(np.zeros(3), centres))


def test_a_vertebra_found_twice_is_named_once_when_stage_2_outlines_it_once():
    from VertebralFractureLib.segment import ChainOutlines

    grid = Volume(np.zeros((64, 30, 30), np.uint8), (5.0, 5.0, 5.0))
    labels = [20, 21, 22, 23, 24]
    truth = _spine(grid, labels)
    canal = truth[22] + [0.0, 18.0, -16.0]  # a second peak, behind L3
    heat = _heatmaps(grid, truth, sigma_vox=1.2) + _heatmaps(grid, {23: canal}, sigma_vox=1.2, peak=0.7)
    true_pos = np.array([truth[k] for k in labels])

    def outlines(positions: np.ndarray) -> ChainOutlines:  # each crop outlines the true vertebra nearest to it
        nearest = [int(np.argmin(np.linalg.norm(true_pos - p, axis=1))) for p in positions]
        shared = np.array([float(a == b) for a, b in zip(nearest[:-1], nearest[1:])])
        return ChainOutlines(shared, true_pos[nearest])

    plain = detect_and_name(heat, grid, threshold=0.3)
    assert len(plain) == 6  # the second peak joins the chain and pushes the names down
    found = detect_and_name(heat, grid, threshold=0.3, outlines=outlines)
    assert [c.label for c in found] == labels
    assert np.linalg.norm(found[2].position_lps - truth[22]) < 2.0  # the detection in the body stays


def test_a_vertebra_placed_where_the_view_cuts_it_is_not_merged_by_its_outline():
    from VertebralFractureLib.segment import ChainOutlines

    arr = np.full((36, 20, 20), -100.0, np.float32)  # the view ends at 175 mm: the vertebra at 155 mm is cut
    centres = [5.0 + 30.0 * k for k in range(6)]
    for z in centres:
        k = int(round(z / 5.0))
        arr[max(0, k - 2): k + 3, 6:14, 6:14] = 400.0
    grid = Volume(arr, (5.0, 5.0, 5.0))
    heat = _heatmaps(grid, {lab: np.array([47.5, 47.5, z]) for lab, z in zip((20, 21, 22, 23, 24), centres[4::-1])})
    seen = []

    def outlines(positions: np.ndarray) -> ChainOutlines:  # every crop outlines the same vertebra
        seen.append(np.array(positions))
        return ChainOutlines(np.ones(len(positions) - 1), np.array(positions))

    found = detect_and_name(heat, grid, threshold=0.3)
    assert found[0].extrapolated and len(found) == 6
    merged = detect_and_name(heat, grid, threshold=0.3, outlines=outlines)
    assert len(seen) == 1 and len(seen[0]) == 5  # the placed top vertebra is not offered
    assert [c.extrapolated for c in merged] == [True, False]  # it stays; the five detections became one


def test_stage_1_warns_when_stage_2_counted_a_vertebra_once(monkeypatch):
    from VertebralFractureLib import localize, models, segment
    from VertebralFractureLib.pipeline import AnalysisConfig, Context
    from VertebralFractureLib.segment import ChainOutlines

    grid = Volume(np.zeros((64, 30, 30), np.int16), (5.0, 5.0, 5.0))
    labels = [20, 21, 22, 23, 24]
    truth = _spine(grid, labels)
    true_pos = np.array([truth[k] for k in labels])
    second = _heatmaps(grid, {23: truth[22] + [0.0, 18.0, -16.0]}, sigma_vox=1.2, peak=0.7)

    def fake_outlines(image, positions, device="cpu", **_):  # each crop outlines the true vertebra nearest to it
        nearest = [int(np.argmin(np.linalg.norm(true_pos - p, axis=1))) for p in positions]
        return ChainOutlines(np.array([float(a == b) for a, b in zip(nearest[:-1], nearest[1:])]), true_pos[nearest])

    monkeypatch.setattr(models, "model_status", lambda name, directory=None: "ok")
    monkeypatch.setattr(segment, "chain_outlines", fake_outlines)
    for extra, warned in ((0.0, False), (1.0, True)):
        heat = _heatmaps(grid, truth, sigma_vox=1.2) + extra * second
        monkeypatch.setattr(localize, "localize", lambda volume, device="cpu", threshold=None, model=None, anchors=None,
                            outlines=None, heat=heat: localize.detect_and_name(heat, grid, 0.3, outlines=outlines))
        ctx = Context(image=grid, config=AnalysisConfig(device="cpu"))
        localize.run_stage(ctx)
        assert sorted(ctx.vertebrae) == labels
        merged = [w for w in ctx.warnings if w.startswith("stage 1 counted")]
        assert merged == ([localize.MERGED_WARNING.format(what="one vertebra")] if warned else []), ctx.warnings
