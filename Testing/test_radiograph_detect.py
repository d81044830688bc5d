"""The L1-L5 radiograph detector: targets, decoding, mAP, and a tiny training run."""

from __future__ import annotations

import numpy as np
import pytest

from VertebralFractureLib.radiograph_detect import (
    DET_MM,
    LEVELS,
    average_precision,
    covered,
    decode,
    iou,
    mean_average_precision,
    targets,
    to_detector_grid,
)

BOXES = {"L1": [40.0, 20.0, 140.0, 95.0], "L2": [44.0, 110.0, 146.0, 190.0], "L5": [60.0, 300.0, 170.0, 380.0]}


def test_targets_decode_back_to_the_true_boxes():
    image = np.zeros((420, 300), np.float32)  # 0.5 mm pixels: 210 × 150 mm
    grid, scale = to_detector_grid(image, 0.5)
    assert grid.shape[0] % 8 == 0 and grid.shape[1] % 8 == 0 and np.allclose(scale, DET_MM / 0.5)
    heat, size = targets(grid.shape, BOXES, scale)
    assert heat.shape == (len(LEVELS), *grid.shape) and heat[2].max() == 0.0  # L3 is not in the image
    output = np.concatenate([heat, size[:2]])
    found = {d["name"]: d for d in decode(output, scale, image.shape, threshold=0.5)}
    assert set(found) == set(BOXES)
    for name, box in BOXES.items():
        assert iou(found[name]["box_px"], box) > 0.85
        assert found[name]["detection_score"] > 0.9


def test_a_level_whose_peak_lies_on_a_body_another_level_claims_gives_way():
    """L5 out of view: its map's faint maximum on L4 is not reported as L5; where the map has a
    second peak elsewhere, L5 is taken there; L4 keeps its own body either way."""
    image = np.zeros((420, 300), np.float32)
    grid, scale = to_detector_grid(image, 0.5)
    l4 = [50.0, 200.0, 160.0, 280.0]
    heat, size = targets(grid.shape, {"L4": l4}, scale)
    faint = targets(grid.shape, {"L5": l4}, scale)[0][LEVELS.index("L5")]
    heat[LEVELS.index("L5")] = 0.45 * faint  # L5's map: a faint peak on L4's body
    found = {d["name"]: d for d in decode(np.concatenate([heat, size[:2]]), scale, image.shape, threshold=0.2)}
    assert set(found) == {"L4"} and iou(found["L4"]["box_px"], l4) > 0.85
    # a second, weaker L5 peak below L4 (a body of its own): L5 is reported there
    below = targets(grid.shape, {"L5": [60.0, 300.0, 170.0, 380.0]}, scale)
    heat[LEVELS.index("L5")] = np.maximum(heat[LEVELS.index("L5")], 0.3 * below[0][LEVELS.index("L5")])
    size = np.maximum(size, below[1])
    found = {d["name"]: d for d in decode(np.concatenate([heat, size[:2]]), scale, image.shape, threshold=0.2)}
    assert set(found) == {"L4", "L5"}
    assert iou(found["L5"]["box_px"], [60.0, 300.0, 170.0, 380.0]) > 0.85
    assert found["L5"]["detection_score"] == pytest.approx(0.3, abs=0.02)
    # the stronger claim wins: with L5's peak on that body above L4's, the body is L5's
    heat[LEVELS.index("L5")] = 0.9 * faint
    heat[LEVELS.index("L4")] *= 0.5
    found = {d["name"]: d for d in decode(np.concatenate([heat, size[:2]]), scale, image.shape, threshold=0.2)}
    assert "L4" not in found and iou(found["L5"]["box_px"], l4) > 0.85


def test_a_box_reaching_beyond_the_image_scores_the_share_of_it_in_view():
    """A body whose box runs past the image's last row: the box is clipped and its score is the
    peak times the share of the box left in view (a whole body in view is what a true box is)."""
    image = np.zeros((340, 300), np.float32)  # 0.5 mm pixels
    grid, scale = to_detector_grid(image, 0.5)
    inside, beyond = [60.0, 150.0, 170.0, 230.0], [60.0, 280.0, 170.0, 360.0]  # the second: 60 of its 80 rows in view
    heat, size = targets(grid.shape, {"L4": inside, "L5": beyond}, scale)
    found = {d["name"]: d for d in decode(np.concatenate([heat, size[:2]]), scale, image.shape, threshold=0.2)}
    assert found["L4"]["detection_score"] > 0.95
    assert found["L5"]["box_px"][3] == 340.0 and iou(found["L5"]["box_px"], [60.0, 280.0, 170.0, 340.0]) > 0.85
    assert found["L5"]["detection_score"] == pytest.approx(0.75, abs=0.05)
    # below the threshold once scaled: not reported
    assert "L5" not in {d["name"] for d in decode(np.concatenate([heat, size[:2]]), scale, image.shape, threshold=0.8)}


def test_names_that_skip_a_body_give_way_to_evenly_spaced_ones():
    """Six bodies (a T13 above L1–L5): the L1 and L2 maps peak strongest one body too high, the L3–L5
    maps on their own bodies, so the strongest names leave two bodies between "L2" and "L3". The
    evenly spaced set is reported instead, each level on its own body."""
    from VertebralFractureLib.radiograph_detect import evenly_spaced

    image = np.zeros((480, 300), np.float32)
    grid, scale = to_detector_grid(image, 0.5)
    bodies = [[60.0, 10.0 + 75 * i, 170.0, 70.0 + 75 * i] for i in range(6)]  # T13, L1, … L5
    peaks = {"L1": [(0, 0.9), (1, 0.5)], "L2": [(1, 0.9), (2, 0.6)], "L3": [(3, 0.9)], "L4": [(4, 0.9)], "L5": [(5, 0.9)]}
    heat = np.zeros((len(LEVELS), *grid.shape), np.float32)
    size = np.zeros((3, *grid.shape), np.float32)
    for name, spots in peaks.items():
        for body, score in spots:
            h, sz = targets(grid.shape, {name: bodies[body]}, scale)
            heat[LEVELS.index(name)] = np.maximum(heat[LEVELS.index(name)], score * h[LEVELS.index(name)])
            size = np.maximum(size, sz)
    found = {d["name"]: d for d in decode(np.concatenate([heat, size[:2]]), scale, image.shape, threshold=0.2)}
    assert list(found) == list(LEVELS)
    for k, name in enumerate(LEVELS):
        assert iou(found[name]["box_px"], bodies[k + 1]) > 0.85, name
    # the rule itself: a doubled gap fails, an even chain and any pair pass, disorder fails
    assert not evenly_spaced([(0, bodies[0]), (1, bodies[1]), (2, bodies[3]), (3, bodies[4])])
    assert evenly_spaced([(0, bodies[1]), (1, bodies[2]), (3, bodies[4])])  # a level missing, spacing kept
    assert evenly_spaced([(0, bodies[0]), (1, bodies[3])])
    assert not evenly_spaced([(0, bodies[2]), (1, bodies[1]), (2, bodies[3])])


def test_map_has_a_bootstrap_interval_over_images():
    """All right: the interval is [1, 1]; half the images wrong: it spans the mAP, narrower with
    more images."""
    from VertebralFractureLib.training.radiograph_detector import detection_map

    box = [0.0, 0.0, 10.0, 10.0]
    entries = [{"vertebrae": [{"name": "L1", "box_px": box}]} for _ in range(20)]
    right = [[{"name": "L1", "box_px": box, "detection_score": 0.9}] for _ in entries]
    assert detection_map(right, entries, ci=200)["ci95"] == [1.0, 1.0]
    half = [p if k % 2 else [{"name": "L1", "box_px": [50.0, 50.0, 60.0, 60.0], "detection_score": 0.5}]
            for k, p in enumerate(right)]
    m = detection_map(half, entries, ci=200)
    assert m["ci95"][0] < m["map"] < m["ci95"][1]
    wide = detection_map(half[:4], entries[:4], ci=200)["ci95"]
    assert wide[1] - wide[0] > m["ci95"][1] - m["ci95"][0]
    assert "ci95" not in detection_map(half, entries)


def test_iou_and_average_precision_known_answers():
    assert iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(50 / 150)
    assert iou([0, 0, 1, 1], [2, 2, 3, 3]) == 0.0
    truths = [{"L1": [0, 0, 10, 10]}, {"L1": [0, 0, 10, 10]}, {}]
    good = [[{"name": "L1", "box_px": [0, 0, 10, 10], "detection_score": 0.9}]] * 2 + [[]]
    assert average_precision(good, truths, "L1") == 1.0
    # a confident false positive on the image without L1, then two hits: precision 1/2 and 2/3
    mixed = good[:2] + [[{"name": "L1", "box_px": [0, 0, 10, 10], "detection_score": 0.95}]]
    assert average_precision(mixed, truths, "L1") == pytest.approx(2 / 3)
    # a box off by half its width is a miss at IoU 0.5
    off = [[{"name": "L1", "box_px": [5, 0, 15, 10], "detection_score": 0.9}]] * 2 + [[]]
    assert average_precision(off, truths, "L1") == 0.0
    assert average_precision(good, truths, "L2") is None
    # the same false positive inside an ignore region of its level (a body shown in part) counts neither way
    ignores = [{}, {}, {"L1": [0, 0, 10, 16]}]
    assert average_precision(mixed, truths, "L1", ignores=ignores) == 1.0
    assert average_precision(mixed, truths, "L1", ignores=[{}, {}, {"L2": [0, 0, 10, 16]}]) == pytest.approx(2 / 3)
    assert average_precision(mixed, truths, "L1", ignores=[{}, {}, {"L1": [0, 6, 10, 16]}]) == pytest.approx(2 / 3)
    assert covered([0, 0, 10, 10], [0, 6, 10, 16]) == pytest.approx(0.4) and covered([0, 0, 0, 10], [0, 0, 5, 5]) == 0.0
    # a hit stays a hit whatever the regions
    assert mean_average_precision(good, truths, ignores=[{"L1": [0, 0, 10, 10]}] * 3)["map"] == 1.0
    m = mean_average_precision(good, truths)
    assert m["map"] == 1.0 and m["per_level"]["L3"] is None


def test_training_runs_and_learns_to_find_bright_blocks(tmp_path):
    """A few iterations on tiny synthetic radiographs: it runs, saves, resumes and its loss falls."""
    import torch

    from VertebralFractureLib.radiograph_detect import build_network, detect
    from VertebralFractureLib.training.radiograph_detector import evaluate, loss_fn, prepare, train

    rng = np.random.default_rng(0)
    entries = []
    for k in range(4):
        img = rng.normal(0.3, 0.02, (200, 160)).astype(np.float32)
        vertebrae = []
        for j, name in enumerate(LEVELS):
            y0 = 10 + 36 * j + k
            img[y0:y0 + 30, 50:90] = 0.8
            vertebrae.append({"name": name, "box_px": [50.0, float(y0), 90.0, float(y0 + 30)]})
        entries.append({"image": img, "pixel_mm": 1.0, "vertebrae": vertebrae})
    report = train(entries, entries[:2], tmp_path / "run", iterations=4, batch=2, eval_every=2)
    assert (tmp_path / "run" / "best.pt").exists() and report["iterations"] == 4 and len(report["log"]) == 2
    net = build_network()
    net.load_state_dict(torch.load(tmp_path / "run" / "best.pt", weights_only=True))
    boxes = detect(net, entries[0]["image"], 1.0, threshold=0.0)
    names = [b["name"] for b in boxes]  # threshold 0: every level whose box keeps the spacing
    assert len(names) >= 3 and names == sorted(names) and set(names) <= set(LEVELS)
    held = evaluate(net, entries[:1])
    assert held["images"] == 1 and set(held["per_level"]) == set(LEVELS)
    from VertebralFractureLib import models
    from VertebralFractureLib.radiograph_detect import MODEL_NAME
    from VertebralFractureLib.training.radiograph_detector import install

    install(tmp_path / "run", report, held, ["toy"], directory=tmp_path / "models")
    card, loaded = models.load_network(MODEL_NAME, build_network, tmp_path / "models")
    assert card.architecture["levels"] == list(LEVELS) and "synthetic radiographs only" in card.accuracy
    import json

    entry = json.loads((tmp_path / "models" / "models.json").read_text())["models"][0]
    assert entry["ledger"][-1]["iterations"] == 4 and entry["metrics"]["heldout_synthetic"]["images"] == 1
    assert detect(loaded, entries[0]["image"], 1.0, threshold=0.0) == boxes  # the same weights
    x, h, s = prepare(entries[:1])[0]
    heat, size = torch.from_numpy(h)[None], torch.from_numpy(s)[None]
    right = torch.cat([torch.logit(heat.clamp(1e-4, 1 - 1e-4)), size[:, :2]], 1)
    shifted = torch.cat([torch.roll(right[:, : len(LEVELS)], 12, dims=2), size[:, :2] * 2], 1)
    assert float(loss_fn(right, heat, size)) < 0.5 * float(loss_fn(shifted, heat, size))


def test_ignore_regions_leave_the_loss_and_a_cut_body_becomes_one():
    """Inside an ignore region the detector's output does not change the loss; cropping away a body's
    centre while part of it stays in view turns it into such a region."""
    import torch

    from VertebralFractureLib.training.radiograph_detector import IGNORED, _ignore_cut, loss_fn, prepare

    img = np.full((400, 200), 0.3, np.float32)
    entry = {"image": img, "pixel_mm": 0.5, "vertebrae": [{"name": "L1", "box_px": [60.0, 40.0, 140.0, 120.0]}],
             "ignore": [{"name": "L5", "box_px": [60.0, 330.0, 140.0, 400.0]}]}
    _, heat, size = prepare([entry])[0]
    assert (heat[LEVELS.index("L5")] == IGNORED).any() and heat[LEVELS.index("L1")].max() == pytest.approx(1.0, abs=0.05)
    h, s = torch.from_numpy(heat)[None], torch.from_numpy(size)[None]
    out = torch.zeros((1, len(LEVELS) + 2, *heat.shape[1:]))
    loud = out.clone()
    loud[0, LEVELS.index("L5")][torch.from_numpy(heat[LEVELS.index("L5")] == IGNORED)] = 8.0  # a confident L5 there
    assert float(loss_fn(loud, h, s)) == pytest.approx(float(loss_fn(out, h, s)))
    outside = out.clone()
    outside[0, LEVELS.index("L5"), :5] = 8.0  # the same output outside the region is wrong
    assert float(loss_fn(outside, h, s)) > float(loss_fn(out, h, s)) + 0.1
    # keep rows 0..24 of the detector grid (0..100 image rows at 0.5 mm → 2 mm): L1's centre (row 20) stays;
    # keep rows 22..: L1's centre is cut away but 9 of its 20 rows stay in view: an ignore region
    assert not (_ignore_cut(heat, size, 0, 24) == IGNORED)[LEVELS.index("L1")].any()
    cut = _ignore_cut(heat, size, 22, heat.shape[1])
    assert (cut[LEVELS.index("L1"), 22:30] == IGNORED).any() and not (cut[LEVELS.index("L1"), 31:] == IGNORED).any()
    assert not (heat[LEVELS.index("L1")] == IGNORED).any()  # the data itself is left as it was


def test_a_narrowed_view_keeps_every_body_and_the_network_divisor():
    from VertebralFractureLib.radiograph_detect import DIVISOR
    from VertebralFractureLib.training.radiograph_detector import narrow_columns

    image = np.zeros((400, 600), np.float32)  # 0.5 mm pixels: the bodies in the middle third
    _, scale = to_detector_grid(image, 0.5)
    shape = (200 // 2 + 12, 300 // 2 + 10)
    _, size = targets(shape, {"L1": [240.0, 40.0, 340.0, 120.0], "L3": [260.0, 250.0, 370.0, 330.0]}, scale)
    rng = np.random.default_rng(0)
    for _ in range(20):
        c0, c1 = narrow_columns(size, shape[1], rng)
        assert (c1 - c0) % DIVISOR == 0 and 0 <= c0 < c1 <= shape[1]
        # both bodies (columns 60-85 and 65-92.5 of the 2 mm grid) stay whole, with at least 2.5 columns (5 mm) beside
        assert c0 <= 60 - 2.5 and c1 >= 92.5 + 2.5 and c1 - c0 < shape[1]
    assert narrow_columns(np.zeros((3, *shape), np.float32), shape[1], rng) is None  # no body: not narrowed


def test_levels_out_of_order_are_the_fewest_whose_removal_leaves_l1_above_l5():
    from VertebralFractureLib.radiograph_detect import out_of_order

    def det(name, row, score=0.8):
        return {"name": name, "box_px": [10.0, row - 5.0, 30.0, row + 5.0], "detection_score": score}

    chain = [det("L1", 10), det("L2", 50), det("L3", 90), det("L4", 130)]
    assert out_of_order(chain) == set() and out_of_order([]) == set()
    assert out_of_order([*chain, det("L5", 5)]) == {"L5"}  # an L5 above L1
    assert out_of_order([det("L1", 60), det("L2", 50), det("L3", 90)]) in ({"L1"}, {"L2"})
    # two chains as long: the higher-scoring one is kept
    assert out_of_order([det("L1", 60, 0.9), det("L2", 50, 0.4)]) == {"L2"}
    assert out_of_order([det("L1", 60, 0.4), det("L2", 50, 0.9)]) == {"L1"}


def test_radiographs_of_spines_with_a_t13_or_an_l6_are_drawn_as_often_as_asked(tmp_path, monkeypatch):
    """``variant_weight`` draws the radiographs whose labels name a T13 or an L6 that many times as
    often as the others; the report records it."""
    from VertebralFractureLib.training import radiograph_detector as rd

    rng = np.random.default_rng(1)
    entries = []
    for k in range(4):
        img = rng.normal(0.3, 0.02, (96, 96)).astype(np.float32)
        img[0, 0] = k  # which radiograph a batch holds
        entries.append({"image": img, "pixel_mm": 2.0, "ignore": [{"name": "T13", "box_px": [0, 0, 10, 10]}] if k == 2 else [],
                        "vertebrae": [{"name": "L6" if k == 3 else "L1", "box_px": [30.0, 30.0, 60.0, 60.0]}]})
    assert [rd.numeric_variant(e) for e in entries] == [False, False, True, True]
    drawn = []
    augment = rd._augment

    def record(img, *rest):
        drawn.append(round(float(img[0, 0] * 2) / 2))  # the corner pixel survives the 2 mm grid as its value
        return augment(img, *rest)

    monkeypatch.setattr(rd, "_augment", record)
    report = rd.train(entries, entries[:1], tmp_path / "run", iterations=20, batch=1, eval_every=20, variant_weight=1000.0)
    assert report["variant_weight"] == 1000.0
    assert set(drawn) <= {2, 3} and len(drawn) == 20
    drawn.clear()
    rd.train(entries, entries[:1], tmp_path / "run2", iterations=20, batch=1, eval_every=20)
    assert {0, 1} & set(drawn)  # unweighted: the others too


def test_the_detector_sees_the_image_and_its_mirror_and_averages_them():
    """A network blind to its input (the same maps whatever it sees) has its peak averaged with the
    mirrored peak: half the score, at either place. An equivariant one (here: the same maps built
    for each input's bright block) keeps its full score where the body is."""
    import torch

    from VertebralFractureLib.radiograph_detect import detect

    image = np.zeros((160, 128), np.float32)
    grid, scale = to_detector_grid(image, 2.0)
    box = [20.0, 40.0, 60.0, 80.0]  # left of the middle: its mirror lies elsewhere
    heat, size = targets(grid.shape, {"L3": box}, scale)
    logits = np.where(heat > 0, np.log(np.clip(heat, 1e-4, 1 - 1e-4) / (1 - np.clip(heat, 1e-4, 1 - 1e-4))), -20.0)
    fixed = torch.from_numpy(np.concatenate([logits, size[:2]]).astype(np.float32))

    class Blind(torch.nn.Module):
        def forward(self, x):
            return fixed.repeat(x.shape[0], 1, 1, 1)

    class Follows(torch.nn.Module):
        def forward(self, x):
            return torch.stack([fixed.clone() if float(x[k, 0, 60, 20]) > 0.5 else torch.flip(fixed, dims=[2])
                                for k in range(x.shape[0])])

    (found,) = detect(Blind(), image, 2.0, threshold=0.2)
    assert found["name"] == "L3" and found["detection_score"] == pytest.approx(0.5, abs=0.02)
    image[60, 20] = 1.0  # the pixel Follows looks at (2 mm pixels: the detector's grid is the image)
    (found,) = detect(Follows(), image, 2.0, threshold=0.2)
    assert found["detection_score"] == pytest.approx(1.0, abs=0.02) and iou(found["box_px"], box) > 0.85


def test_runs_combined_into_one_detector_average_their_outputs_and_install_with_their_card(tmp_path):
    """``ensemble`` puts the best weights of several runs into one detector whose heatmap
    probabilities and sizes are the members' means; it installs with ``architecture.members``, loads
    back through the registry, and training can go on from it (its first member)."""
    import json

    import torch

    from VertebralFractureLib import models
    from VertebralFractureLib.radiograph_detect import MODEL_NAME, average_outputs, build_network
    from VertebralFractureLib.training.radiograph_detector import ensemble, install, train

    rng = np.random.default_rng(2)
    entries = []
    for _ in range(2):
        img = rng.normal(0.3, 0.02, (128, 96)).astype(np.float32)
        img[20:50, 30:60] = 0.8
        entries.append({"image": img, "pixel_mm": 1.0, "vertebrae": [{"name": "L1", "box_px": [30.0, 20.0, 60.0, 50.0]}]})
    runs = [tmp_path / f"run{k}" for k in range(2)]
    for k, run in enumerate(runs):
        train(entries, entries[:1], run, iterations=2, batch=1, eval_every=2, seed=k)
    report = ensemble(runs, tmp_path / "both", entries[:1])
    assert report["members"] == ["run0", "run1"] and 0.0 <= report["best_val_map"] <= 1.0
    with pytest.raises(FileExistsError):
        ensemble(runs, tmp_path / "both", entries[:1])
    singles = []
    for run in runs:
        net = build_network()
        net.load_state_dict(torch.load(run / "best.pt", weights_only=True))
        singles.append(net.eval())
    x = torch.from_numpy(np.ascontiguousarray(entries[0]["image"][None, None]))
    with torch.inference_mode():
        outs = [n(x) for n in singles]
        mean = average_outputs(outs)
    p = (torch.sigmoid(outs[0][:, :len(LEVELS)]) + torch.sigmoid(outs[1][:, :len(LEVELS)])) / 2
    assert torch.allclose(torch.sigmoid(mean[:, :len(LEVELS)]), p.clamp(1e-6, 1 - 1e-6), atol=1e-5)
    assert torch.allclose(mean[:, len(LEVELS):], (outs[0][:, len(LEVELS):] + outs[1][:, len(LEVELS):]) / 2)
    install(tmp_path / "both", report, {"map": 0.5, "images": 1}, ["toy"], directory=tmp_path / "models")
    card, loaded = models.load_network(MODEL_NAME, build_network, tmp_path / "models")
    assert card.architecture["members"] == 2
    entry = json.loads((tmp_path / "models" / "models.json").read_text())["models"][0]
    assert entry["ledger"][-1]["members"] == ["run0", "run1"]
    with torch.inference_mode():
        assert torch.allclose(loaded.eval()(x), mean, atol=1e-5)
    again = train(entries, entries[:1], tmp_path / "again", iterations=1, batch=1, eval_every=1,
                  init=tmp_path / "models" / "radiograph-detector.pt")
    assert again["iterations"] == 1
    with pytest.raises(ValueError, match="at least one member"):
        build_network({"members": 0})
