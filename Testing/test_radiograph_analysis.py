"""Lateral radiographs end to end: crops, networks, ensemble, Grad-CAM grid test, the analysis, its
files, the ``radiograph`` command and the Slicer scene (real MRML from slicer-core)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from VertebralFractureLib.radiograph_classify import (
    CLASSES,
    CROP_SHAPE,
    ENSEMBLE,
    FRESH_MODEL,
    GRID,
    build_network,
    crop_vertebra,
    ensemble,
    equalize,
    grid_means,
    grid_test,
    model_name,
    whole_input,
)


def test_crop_is_seed_004s_166_by_140_with_the_box_centred_and_zero_padding():
    rng = np.random.default_rng(0)
    img = rng.normal(0.2, 0.02, (300, 200)).astype(np.float32)
    img[100:160, 40:120] += 0.6  # a bright body 80 wide, 60 high
    crop, meta = crop_vertebra(img, [40, 100, 120, 160])  # 15 % margin: 104 x 78 pixels
    assert crop.shape == CROP_SHAPE == (140, 166)
    assert meta["origin"] == (28, 91) and meta["scale"] == pytest.approx(166 / 104)  # width fills, rows padded
    r0 = meta["offset"][0]
    assert meta["offset"][1] == 0 and r0 > 0 and np.all(crop[: r0 - 1] == 0) and np.all(crop[-(r0 - 1):] == 0)
    body = crop[r0 + 20:r0 + 100, 25:140]
    beside = crop[r0 + 20:r0 + 100, 2:12]
    assert body.mean() > 0.6 > 0.3 > beside.mean()  # flattened: the body bright, the soft tissue dark
    # a box partly outside the image is padded with zeros, not wrapped around
    crop2, _ = crop_vertebra(img, [-30, -20, 50, 40], margin=0.0)
    assert crop2.shape == CROP_SHAPE and np.isfinite(crop2).all()
    with pytest.raises(ValueError):
        crop_vertebra(img, [10, 10, 10, 50])
    assert not equalize(np.ones((5, 5))).any()  # a flat region has no histogram to flatten
    # with the pixel size the region is smoothed first: the flattened soft tissue is far less noisy
    smooth, _ = crop_vertebra(img, [40, 100, 120, 160], pixel_mm=0.4)
    assert np.std(np.diff(smooth[r0 + 20:r0 + 100, 2:12], axis=0)) < 0.5 * np.std(np.diff(beside, axis=0))


def test_histogram_flattening_spreads_values_evenly():
    rng = np.random.default_rng(0)
    img = rng.normal(0.5, 0.01, (100, 100)).astype(np.float32) ** 3  # narrow, skewed
    eq = equalize(img)
    assert eq.min() >= 0 and eq.max() <= 1.0
    assert abs(float(np.median(eq)) - 0.5) < 0.05 and np.percentile(eq, 90) > 0.85
    assert np.all(np.diff(eq.ravel()[np.argsort(img.ravel())]) >= -1e-6)  # order kept


def test_whole_image_input_is_224_square_keeping_the_aspect():
    img = np.ones((400, 200), np.float32)
    x = whole_input(img)
    assert x.shape == (224, 224)
    assert x[112, 112] == pytest.approx(1.0) and x[112, 5] == 0.0  # padded left and right


@pytest.mark.parametrize("kind,depth", [("resnet50-thin", 50), ("resnet101-thin", 101), ("resnext50-thin", 50),
                                        ("densenet161-thin", 161)])
def test_networks_have_the_seeds_depths_and_three_outputs(kind, depth):
    import torch

    net = build_network(kind)
    weighted = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    if kind.startswith("res"):
        # ResNet depth: the weighted layers minus the shortcut projections (4 of them)
        assert len(weighted) - 4 == depth
        if kind.startswith("resnext"):
            assert any(m.groups > 1 for m in weighted if isinstance(m, torch.nn.Conv2d))
    else:  # DenseNet-161: 1 + 2 x (6 + 12 + 36 + 24) + 3 transitions + 1 classifier
        assert len(weighted) == depth
    assert net(torch.zeros(2, 1, *CROP_SHAPE)).shape == (2, 3)


def test_ensemble_averages_and_grid_test_finds_the_section_that_differs():
    probs = {"a": np.array([[0.6, 0.3, 0.1]]), "b": np.array([[0.2, 0.2, 0.6]]), "c": np.array([[0.3, 0.1, 0.6]])}
    e = ensemble(probs)
    assert e.shape == (1, 3) and e.sum() == pytest.approx(1.0) and int(np.argmax(e)) == 2  # sums: normal 1.1, old 0.6, fresh 1.3
    rng = np.random.default_rng(1)
    maps, groups = [], []
    for g in range(3):
        for _ in range(12):
            m = rng.uniform(0, 0.2, CROP_SHAPE)
            if g == 2:
                m[:20, :20] += 0.7  # fresh fractures: attention in the top-left section
            maps.append(m)
            groups.append(g)
    cells = np.stack([grid_means(m) for m in maps])
    assert cells.shape == (len(maps), *GRID)
    t = grid_test(cells, groups)
    assert t["p"][0][0] < 0.001 and t["highest"][0][0] == 2
    assert t["significant"] < 10  # the other sections are noise
    assert t["counts"] == {"normal": 12, "old": 12, "fresh": 12}


# ---------------------------------------------------------------------------------------- analysis
def _install_random_models(directory: Path, tmp: Path) -> None:
    """The product's five radiograph models with random weights (the shipped detector's card, its
    threshold 0 so that every level gives a box); the fresh-VCF network is a thin ResNet-50 here."""
    import torch

    from VertebralFractureLib.radiograph_detect import CHANNELS, MODEL_NAME
    from VertebralFractureLib.radiograph_detect import build_network as build_detector
    from VertebralFractureLib.training.install import install_model

    torch.manual_seed(0)
    nets = {MODEL_NAME: (build_detector(), {"architecture": {"channels": list(CHANNELS), "num_res_units": 1},
                                            "postprocess": {"threshold": 0.0}})}
    for kind in ENSEMBLE:
        nets[model_name(kind)] = (build_network(kind), {"architecture": {"type": kind}})
    nets[FRESH_MODEL] = (build_network("resnet50-thin", 1), {"architecture": {"type": "resnet50-thin"}})
    for name, (net, card) in nets.items():
        path = tmp / f"{name}.pt"
        torch.save(net.state_dict(), path)
        install_model(name, path, {**card, "version": "test"}, directory)


@pytest.fixture()
def radiograph_models(tmp_path, monkeypatch):
    d = tmp_path / "models"
    _install_random_models(d, tmp_path)
    monkeypatch.setenv("VF_MODELS_DIR", str(d))
    return d


def _radiograph_png(path: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(3)
    img = rng.normal(0.25, 0.02, (320, 240))
    for k in range(5):
        img[30 + 56 * k:30 + 56 * k + 40, 90:150] = 0.7  # five bodies, 0.5 mm pixels: 30 x 20 mm
    Image.fromarray(np.round(np.clip(img, 0, 1) * 65535).astype(np.uint16)).save(path)
    return path


def test_radiograph_command_writes_the_contract_and_slicer_reads_its_files(radiograph_models, tmp_path, mrml):
    from VertebralFractureLib.cli import main
    from VertebralFractureLib.io.radiograph_out import BOXES_DIR, CAM_NRRD, IMAGE_NRRD, RESULT_JSON

    png = _radiograph_png(tmp_path / "lateral.png")
    out = tmp_path / "out"
    assert main(["radiograph", str(png), "--pixel-spacing", "0.5", "-o", str(out), "--progress", "none"]) == 0
    data = json.loads((out / RESULT_JSON).read_text())
    assert data["input"]["pixel_spacing_mm"] == [0.5, 0.5] and data["input"]["rows"] == 320
    assert 0.0 <= data["fresh_vcf_probability"] <= 1.0
    names = [v["name"] for v in data["vertebrae"]]  # threshold 0: every level whose box keeps the spacing
    assert len(names) >= 3 and names == sorted(names) and set(names) <= {"L1", "L2", "L3", "L4", "L5"}
    assert any("synthetic radiographs only" in w for w in data["warnings"])
    assert any("not anchored to the sacrum" in w for w in data["warnings"])  # names read from the stack only
    for v in data["vertebrae"]:
        assert set(v) >= {"name", "box_px", "box_mm", "detection_score", "probabilities", "ensemble", "class", "status"}
        assert v["naming"] == {"anchor": None, "basis": "detector"}
        assert v["box_mm"] == pytest.approx([c * 0.5 for c in v["box_px"]], abs=0.01)
        if v["status"] == "assessed":
            assert set(v["probabilities"]) == set(ENSEMBLE)
            mean = {c: np.mean([v["probabilities"][m][c] for m in ENSEMBLE]) for c in CLASSES}
            assert v["ensemble"] == pytest.approx(mean, abs=1e-3)
            assert v["class"] == max(mean, key=mean.get)
        else:
            assert v["class"] is None and v["reason"]
    # the image's fresh-VCF score from its vertebrae: the largest ensemble P(fresh) of the assessed ones
    assessed = [v["ensemble"]["fresh"] for v in data["vertebrae"] if v["status"] == "assessed"]
    assert data["fresh_vcf_probability_vertebrae"] == (max(assessed) if assessed else None)
    assert "from the vertebrae" in (out / "report.html").read_text() or not assessed
    for name in ("report.png", "report.html", IMAGE_NRRD, CAM_NRRD, "fresh_gradcam.nrrd"):
        assert (out / name).stat().st_size > 0
    # Slicer: the image keeps its pixel spacing; each box is a closed curve at the box's corners
    vol = mrml.read_node("vtkMRMLScalarVolumeNode", out / IMAGE_NRRD)
    assert vol.GetImageData().GetDimensions() == (240, 320, 1) and vol.GetSpacing()[:2] == pytest.approx((0.5, 0.5))
    cam = mrml.read_node("vtkMRMLScalarVolumeNode", out / CAM_NRRD)
    assert 0.0 <= cam.GetImageData().GetScalarRange()[0] and cam.GetImageData().GetScalarRange()[1] <= 1.0 + 1e-6
    v0 = data["vertebrae"][0]
    curve = mrml.read_node("vtkMRMLMarkupsClosedCurveNode", out / BOXES_DIR / "L1.mrk.json")
    assert curve.GetNumberOfControlPoints() == 4
    ras = np.zeros(3)
    curve.GetNthControlPointPosition(0, ras)  # top-left corner (x0, y0), as RAS
    import vtk

    m = vtk.vtkMatrix4x4()
    vol.GetRASToIJKMatrix(m)
    ijk = m.MultiplyPoint([*ras, 1.0])[:3]
    assert ijk[0] == pytest.approx(v0["box_px"][0], abs=0.01) and ijk[1] == pytest.approx(v0["box_px"][1], abs=0.01)
    # nothing is overwritten
    assert main(["radiograph", str(png), "--pixel-spacing", "0.5", "-o", str(out), "--progress", "none"]) == 5


def test_radiograph_command_refuses_what_it_cannot_measure(radiograph_models, tmp_path):
    from PIL import Image

    from VertebralFractureLib.cli import main
    from VertebralFractureLib.io.readers import write_volume
    from VertebralFractureLib.volume import Volume

    png = _radiograph_png(tmp_path / "lateral.png")
    assert main(["radiograph", str(png), "-o", str(tmp_path / "a"), "--progress", "none"]) == 3  # no spacing
    colour = np.zeros((60, 60, 3), np.uint8)
    colour[..., 0] = 200
    Image.fromarray(colour).save(tmp_path / "photo.png")
    assert main(["radiograph", str(tmp_path / "photo.png"), "--pixel-spacing", "0.2", "-o", str(tmp_path / "b"),
                 "--progress", "none"]) == 3
    write_volume(Volume(np.zeros((20, 30, 30), np.int16)), tmp_path / "ct.nii.gz")
    assert main(["radiograph", str(tmp_path / "ct.nii.gz"), "-o", str(tmp_path / "c"), "--progress", "none"]) == 3
    assert main(["radiograph", str(png), "--pixel-spacing", "-1", "-o", str(tmp_path / "d")]) == 2
    assert not any((tmp_path / n).exists() for n in "abcd")


def test_a_one_slice_volume_as_slicer_saves_a_2d_image_is_read_with_its_spacing(tmp_path):
    from VertebralFractureLib.io.radiograph import read_radiograph
    from VertebralFractureLib.io.radiograph_out import image_volume
    from VertebralFractureLib.io.readers import write_volume

    img = np.linspace(0, 1, 50 * 40, dtype=np.float32).reshape(50, 40)
    write_volume(image_volume(img, (0.3, 0.2)), tmp_path / "r.nrrd")
    r = read_radiograph(tmp_path / "r.nrrd")
    assert r.image.shape == (50, 40) and r.pixel_spacing_mm == pytest.approx((0.3, 0.2))
    assert r.image[0, 0] < r.image[-1, -1]


def test_radiograph_scene_shows_image_boxes_table_and_grad_cam_and_updates_in_place(radiograph_models, tmp_path, mrml):
    from VertebralFractureLib.cli import main
    from VertebralFractureLib.radiograph_scene import add_radiograph_to_scene

    png = _radiograph_png(tmp_path / "lateral.png")
    out = tmp_path / "out"
    assert main(["radiograph", str(png), "--pixel-spacing", "0.5", "-o", str(out), "--progress", "none"]) == 0
    data = json.loads((out / "radiograph.json").read_text())
    nodes = add_radiograph_to_scene(mrml.scene, out)
    image = mrml.scene.GetNodeByID(nodes.image)
    assert image.GetImageData().GetDimensions() == (240, 320, 1)
    assert len(nodes.boxes) == len(data["vertebrae"])
    table = mrml.scene.GetNodeByID(nodes.table)
    assert table.GetNumberOfRows() == len(data["vertebrae"])
    assert table.GetCellText(0, 0) == "L1"
    from VertebralFractureLib.slicer_scene import NAMING_ATTRIBUTE

    assert "not anchored to the sacrum" in table.GetAttribute(NAMING_ATTRIBUTE)  # shown above the module's table
    cam = mrml.scene.GetNodeByID(nodes.grad_cam)
    assert cam.GetDisplayNode().GetColorNodeID()  # a colour table for the overlay
    count = mrml.scene.GetNumberOfNodes()
    again = add_radiograph_to_scene(mrml.scene, out)
    assert mrml.scene.GetNumberOfNodes() == count and again.image == nodes.image


def test_evaluate_radiograph_reports_detection_classes_fresh_vcf_and_the_grad_cam_grid(radiograph_models, tmp_path,
                                                                                        capsys):
    from factories import tiny_verse_folder

    from VertebralFractureLib.cli import main
    from VertebralFractureLib.training.radiograph_data import write_dataset

    write_dataset([tiny_verse_folder(tmp_path / "synth", n_cases=2)], tmp_path / "rad", per_case=1, seed=2)
    assert main(["evaluate", "radiograph", str(tmp_path / "rad"), "-o", str(tmp_path / "ev"), "--progress", "none"]) == 0
    result = json.loads((tmp_path / "ev" / "radiograph_eval.json").read_text())
    assert result["images"] == 2 and set(result["detection"]["per_level"]) == {"L1", "L2", "L3", "L4", "L5"}
    # no body is shown in part here: ignoring such bodies changes nothing
    assert result["detection_ignoring_cut_bodies"] == result["detection"]
    ci = result["detection"]["ci95"]
    assert ci is None or ci[0] <= result["detection"]["map"] <= ci[1]  # none where no resample holds a level
    true = result["true_boxes"]
    assert true["counts"] == {"normal": 2, "old": 0, "fresh": 2}  # L1 fresh and L2 normal in each image
    assert set(true) >= {*ENSEMBLE, "ensemble"} and true["ensemble"]["n"] == 4
    assert result["grad_cam_grid"]["grid"] == list(GRID)
    # every tiny image holds a fresh fracture: no AUC, said as None, for seed 003's network and the vertebrae
    assert len(result["fresh_vcf"]) == 2 and all(m["value"] is None for m in result["fresh_vcf"].values())
    assert any(k.startswith("vertebrae") for k in result["fresh_vcf"])
    tables = (tmp_path / "ev" / "radiograph_eval.md").read_text()
    assert "mAP@0.5" in tables and "Kruskal" in tables and "ensemble" in tables and "shown in part ignored" in tables
    assert (tmp_path / "ev" / "radiograph_gradcam.png").stat().st_size > 0
    assert main(["evaluate", "radiograph", str(tmp_path), "--progress", "none"]) == 3  # not a radiograph folder
    assert "radiographs.json" in capsys.readouterr().err


def test_bench_times_the_radiograph_analysis(radiograph_models, tmp_path, capsys):
    from VertebralFractureLib.cli import main

    png = _radiograph_png(tmp_path / "lateral.png")
    assert main(["bench", str(png), "--radiograph", "--pixel-spacing", "0.5", "--repeat", "1", "--threads", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["stages"] == "radiograph" and report["median_s"] > 0 and report["vertebrae"] >= 3
    assert set(report["stage_median_s"]) >= {"detect", "classify", "fresh_vcf"}


def _toy_entries(n: int = 4) -> list[dict]:
    """Tiny radiographs: five bright bodies; classes normal / old / fresh in turn, fresh VCF every other."""
    rng = np.random.default_rng(0)
    classes = ["normal", "old", "fresh", "normal", "normal"]
    out = []
    for k in range(n):
        img = rng.normal(0.3, 0.02, (200, 160)).astype(np.float32)
        vertebrae = []
        for j, name in enumerate(("L1", "L2", "L3", "L4", "L5")):
            y0 = 10 + 36 * j
            img[y0:y0 + 30, 50:90] = 0.8 - 0.2 * (classes[(j + k) % 5] != "normal")
            vertebrae.append({"name": name, "box_px": [50.0, float(y0), 90.0, float(y0 + 30)],
                              "class": classes[(j + k) % 5], "grade": int(classes[(j + k) % 5] != "normal")})
        out.append({"image": img, "pixel_mm": 1.0, "vertebrae": vertebrae, "fresh_vcf": bool(k % 2), "case": f"c{k}"})
    return out


def test_training_both_tasks_installs_networks_the_analysis_loads(tmp_path):
    import torch

    from VertebralFractureLib import models
    from VertebralFractureLib.training.radiograph_classifier import install, train_fresh, train_vertebra

    entries = _toy_entries()
    rep = train_vertebra(entries, entries[:2], entries[2:], tmp_path / "v", kinds=["resnet50-thin"], iterations=2,
                         batch=4, eval_every=1)
    m = rep["models"]["resnet50-thin"]
    assert m["training"]["iterations"] == 2 and len(m["training"]["log"]) == 2
    assert m["heldout"]["n"] == 10 and set(m["heldout"]["ci95"]) >= {"accuracy", "sensitivity_fresh"}
    assert sum(map(sum, m["heldout"]["confusion"])) == 10
    fresh = train_fresh(entries, entries[:2], entries[2:], tmp_path / "f", kinds=["resnet50-thin"], iterations=2,
                        batch=2, eval_every=1)
    assert fresh["models"]["resnet50-thin"]["heldout"]["n"] == 2
    d = tmp_path / "models"
    install(tmp_path / "v", rep, ["toy"], directory=d)
    install(tmp_path / "f", fresh, ["toy"], directory=d)
    card, net = models.load_network(model_name("resnet50-thin"), lambda a: build_network(a["type"]), d)
    assert card.classes == CLASSES and card.architecture["input"] == list(CROP_SHAPE)
    assert card.metrics["heldout_synthetic"]["n"] == 10 and "synthetic radiographs only" in card.accuracy
    state = torch.load(d / f"{model_name('resnet50-thin')}.pt", weights_only=True)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())  # stored in half
    fcard, _ = models.load_network(FRESH_MODEL, lambda a: build_network(a["type"], 1), d)
    assert fcard.architecture["type"] == "resnet50-thin" and fcard.metrics["heldout_synthetic_auc"]["n"] == 2
    with pytest.raises(ValueError, match="normal, old and fresh"):
        only_normal = [{**e, "vertebrae": [{**v, "class": "normal"} for v in e["vertebrae"]]} for e in entries]
        train_vertebra(only_normal, entries, entries, tmp_path / "x", kinds=["resnet50-thin"], iterations=1)


def test_a_resumed_network_installs_with_the_ledger_of_the_runs_it_continues_and_the_placed_levels(tmp_path):
    from VertebralFractureLib import models
    from VertebralFractureLib.training.install import installed_ledger
    from VertebralFractureLib.training.radiograph_classifier import install, train_vertebra

    entries = _toy_entries()
    d = tmp_path / "models"
    name = model_name("resnet50-thin")
    first = train_vertebra(entries, entries[:2], entries[2:], tmp_path / "a", kinds=["resnet50-thin"], iterations=1,
                           batch=4, eval_every=1)
    install(tmp_path / "a", first, ["toy"], directory=d)
    assert [r["run"] for r in installed_ledger(name, d)] == ["a"]
    index = json.loads((d / "models.json").read_text())  # the levels placed above L1, chosen after the networks
    index["models"][0]["postprocess"].update(placed_levels=["T12"], placed_levels_why="chosen on validation")
    (d / "models.json").write_text(json.dumps(index))
    installed = d / f"{name}.pt"
    resumed = train_vertebra(entries, entries[:2], entries[2:], tmp_path / "b", kinds=["resnet50-thin"], iterations=1,
                             batch=4, eval_every=1, init={"resnet50-thin": installed})
    install(tmp_path / "b", resumed, ["toy"], directory=d)
    ledger = installed_ledger(name, d)
    assert [r["run"] for r in ledger] == ["a", "b"] and ledger[1]["from"] == str(installed)
    assert models.registry(d)[name].postprocess["placed_levels"] == ["T12"]  # kept by the new networks
    again = train_vertebra(entries, entries[:2], entries[2:], tmp_path / "c", kinds=["resnet50-thin"], iterations=1,
                           batch=4, eval_every=1)  # from scratch: a new ledger
    install(tmp_path / "c", again, ["toy"], directory=d)
    assert [r["run"] for r in installed_ledger(name, d)] == ["c"]


def test_a_crops_grad_cam_map_goes_back_onto_its_box():
    from VertebralFractureLib.radiograph_analysis import _place

    img = np.random.default_rng(0).random((300, 200)).astype(np.float32)
    box = [40.0, 100.0, 120.0, 160.0]
    crop, meta = crop_vertebra(img, box)
    cam = np.zeros(CROP_SHAPE, np.float32)
    r0, c0 = meta["offset"]
    rows, cols = meta["size"]
    cam[r0 + rows // 2 - 5:r0 + rows // 2 + 5, c0 + cols // 2 - 5:c0 + cols // 2 + 5] = 1.0  # the crop's centre
    back = np.zeros_like(img)
    _place(back, cam, meta)
    ys, xs = np.nonzero(back > 0.5)
    assert abs(ys.mean() - 130) < 2 and abs(xs.mean() - 80) < 2  # the box's centre
    assert back[:80].max() == 0 and back[180:].max() == 0  # nothing outside the cropped region


def test_fracture_threshold_keeps_the_chosen_share_of_normal_vertebrae_normal():
    from VertebralFractureLib.radiograph_classify import decide
    from VertebralFractureLib.training.radiograph_classifier import (
        choose_fracture_threshold,
        decision_metrics,
    )

    rng = np.random.default_rng(0)
    y = np.array([0] * 100 + [1] * 10 + [2] * 10)
    p_normal = np.concatenate([rng.uniform(0.3, 1.0, 100), rng.uniform(0.0, 0.5, 20)])
    rest = 1.0 - p_normal
    prob = np.stack([p_normal, rest * np.where(y == 1, 0.7, 0.3), rest * np.where(y == 1, 0.3, 0.7)], axis=1)
    t = choose_fracture_threshold(y, prob, specificity=0.95)
    pred = decide(prob, t)
    assert np.mean(pred[y == 0] == 0) >= 0.95 and np.mean(pred[y == 0] == 0) < 0.97
    assert np.array_equal(decide(prob), np.argmax(prob, axis=1))  # no threshold: seed 004's largest probability
    assert np.all(decide(prob, 1.01) == 0)  # a threshold never reached: every vertebra normal
    m = decision_metrics(y, prob, t)
    assert m["normal_specificity"] >= 0.95 and m["threshold"] == t
    assert set(pred[pred > 0]) <= {1, 2} and np.mean(pred[y == 1] == 1) > 0.5  # old and fresh by the larger


def test_the_image_fresh_score_from_the_vertebrae_counts_only_assessed_ones():
    from VertebralFractureLib.io.radiograph_out import fresh_summary
    from VertebralFractureLib.radiograph_analysis import RadiographVertebra, box_status, vertebrae_fresh_score

    def vert(fresh: float, status: str = "assessed") -> RadiographVertebra:
        v = RadiographVertebra("L1", [0, 0, 1, 1], [0, 0, 1, 1], 0.9, status=status)
        v.ensemble = {"normal": 1 - fresh, "old": 0.0, "fresh": fresh}
        return v

    assert vertebrae_fresh_score([vert(0.2), vert(0.7), vert(0.9, "not assessable")]) == 0.7
    assert vertebrae_fresh_score([vert(0.9, "not assessable")]) is None and vertebrae_fresh_score([]) is None
    assert box_status([10, 10, 60, 50], (100, 100), (0.5, 0.5)) == ("assessed", None, True)
    status, reason, classified = box_status([0, 10, 60, 50], (100, 100), (0.5, 0.5))
    assert status == "not assessable" and "image edge" in reason and classified
    status, reason, classified = box_status([10, 10, 20, 50], (100, 100), (0.5, 0.5))  # 5 mm wide: no body
    assert status == "not assessable" and not classified
    text = fresh_summary({"fresh_vcf_probability": 0.51, "fresh_vcf_probability_vertebrae": 0.7})
    assert "p = 0.70 from the vertebrae" in text and "seed 003) p = 0.51" in text
    assert "no vertebra assessed" in fresh_summary({"fresh_vcf_probability": 0.5, "fresh_vcf_probability_vertebrae": None})


def _fake_detect(net, image, pixel_mm, threshold=0.3, device="cpu"):
    """L1-L3 on the third to fifth bodies of :func:`_radiograph_png` (two bodies above them)."""
    return [{"name": name, "box_px": [90.0, 30.0 + 56 * k, 150.0, 70.0 + 56 * k], "detection_score": 0.9}
            for name, k in (("L1", 2), ("L2", 3), ("L3", 4))]


def test_levels_named_on_the_card_are_placed_above_l1_scored_and_not_called(tmp_path, monkeypatch, mrml):
    import torch

    from VertebralFractureLib.cli import main
    from VertebralFractureLib.io.radiograph_out import vertebra_label
    from VertebralFractureLib.radiograph_analysis import PLACED, PLACED_STATUS
    from VertebralFractureLib.radiograph_scene import add_radiograph_to_scene
    from VertebralFractureLib.training.install import install_model

    monkeypatch.setattr("VertebralFractureLib.radiograph_detect.detect", _fake_detect)
    png = _radiograph_png(tmp_path / "lateral.png")
    d = tmp_path / "models"
    _install_random_models(d, tmp_path)
    monkeypatch.setenv("VF_MODELS_DIR", str(d))
    assert main(["radiograph", str(png), "--pixel-spacing", "0.5", "-o", str(tmp_path / "a"), "--progress", "none"]) == 0
    data = json.loads((tmp_path / "a" / "radiograph.json").read_text())
    assert [v["name"] for v in data["vertebrae"]] == ["L1", "L2", "L3"]  # the cards name no level to place
    for kind in ENSEMBLE:  # the same networks, their cards naming T12 and T11
        torch.save(build_network(kind).state_dict(), tmp_path / f"{kind}.pt")
        install_model(model_name(kind), tmp_path / f"{kind}.pt",
                      {"architecture": {"type": kind}, "postprocess": {"placed_levels": ["T12", "T11"]},
                       "version": "test"}, d)
    out = tmp_path / "b"
    assert main(["radiograph", str(png), "--pixel-spacing", "0.5", "-o", str(out), "--progress", "none"]) == 0
    data = json.loads((out / "radiograph.json").read_text())
    assert [v["name"] for v in data["vertebrae"]] == ["T11", "T12", "L1", "L2", "L3"]  # cranial to caudal
    t11, t12 = data["vertebrae"][:2]
    for v, body in ((t12, 1), (t11, 0)):  # each on the body above: centres within a few pixels
        assert v["detection_score"] is None and v["located"] == PLACED
        assert abs((v["box_px"][1] + v["box_px"][3]) / 2 - (50 + 56 * body)) < 10
        assert v["status"] == PLACED_STATUS and set(v["probabilities"]) == set(ENSEMBLE)
        assert v["class"] is None and "no class or call" in v["reason"]  # scored, never called
        assert vertebra_label(v) == f"{v['name']} placed (fresh {v['ensemble']['fresh']:.2f})"
    assert data["vertebrae"][2]["located"] == "detected" and data["vertebrae"][2]["class"] is not None
    scored = [v["ensemble"]["fresh"] for v in data["vertebrae"] if v["status"] in ("assessed", PLACED_STATUS)]
    assert len(scored) == 5 and data["fresh_vcf_probability_vertebrae"] == max(scored)
    assert PLACED in (out / "report.html").read_text()
    nodes = add_radiograph_to_scene(mrml.scene, out)  # Slicer: a box and a table row each, no detection score
    table = mrml.scene.GetNodeByID(nodes.table)
    assert len(nodes.boxes) == 5 and table.GetNumberOfRows() == 5 and table.GetCellText(0, 0) == "T11"


def test_levels_above_l1_follow_the_step_from_l2_and_stop_at_the_image_edge():
    from VertebralFractureLib.radiograph_detect import ABOVE_SHRINK, extend_upwards

    l1, l2 = [100.0, 300.0, 160.0, 340.0], [104.0, 350.0, 166.0, 392.0]  # L2 below L1: 51 px step
    above = extend_upwards([{"name": "L2", "box_px": l2}, {"name": "L1", "box_px": l1}], (600, 400))
    assert [a["name"] for a in above] == ["T12", "T11"] and all(a["detection_score"] is None for a in above)
    t12 = np.asarray(above[0]["box_px"])
    centre = np.array([130.0, 320.0]) + ABOVE_SHRINK * (np.array([130.0, 320.0]) - np.array([135.0, 371.0]))
    assert (t12[:2] + t12[2:]) / 2 == pytest.approx(centre, abs=0.01)
    assert t12[2:] - t12[:2] == pytest.approx(ABOVE_SHRINK * np.array([60.0, 40.0]), abs=0.01)
    t11 = np.asarray(above[1]["box_px"])
    assert (t11[1] + t11[3]) / 2 == pytest.approx(centre[1] - ABOVE_SHRINK ** 2 * 51.0, abs=0.01)
    # near the top of the image: T12 only, its box clipped at the edge; without L2 nothing is placed
    near = extend_upwards([{"name": "L1", "box_px": [100.0, 40.0, 160.0, 80.0]},
                           {"name": "L2", "box_px": [104.0, 91.0, 166.0, 133.0]}], (600, 400))
    assert [a["name"] for a in near] == ["T12"] and near[0]["box_px"][1] == 0.0
    assert extend_upwards([{"name": "L1", "box_px": l1}], (600, 400)) == []
    assert extend_upwards([{"name": "L2", "box_px": l2}, {"name": "L1", "box_px": l1}], (600, 400), ("T12",))[0]["name"] == "T12"


def test_vertebra_networks_trained_on_thoracic_levels_too_keep_seed_004s_held_out_measure(tmp_path):
    from VertebralFractureLib import models
    from VertebralFractureLib.training.radiograph_classifier import install, train_vertebra

    entries = _toy_entries()
    for k, e in enumerate(entries):  # a T12 above L1 in each image
        e["image"][0:8, 50:90] = 0.8
        e["vertebrae"].insert(0, {"name": "T12", "box_px": [50.0, 0.0, 90.0, 8.0], "class": ("normal", "fresh")[k % 2],
                                  "grade": k % 2})
    kinds = ["resnet50-thin", "resnext50-thin"]
    rep = train_vertebra(entries, entries[:2], entries[2:], tmp_path / "v", kinds=kinds, iterations=1, batch=4,
                         eval_every=1, levels=("T12", "L1", "L2", "L3", "L4", "L5"))
    assert rep["levels"] == ["T12", "L1", "L2", "L3", "L4", "L5"]
    assert rep["validation"]["vertebrae"] == 12  # two images, six levels each
    assert rep["models"]["resnet50-thin"]["heldout"]["n"] == 10  # held out: L1-L5 only, as seed 004 measures
    other = rep["ensemble"]["heldout_other_levels"]
    assert other["levels"] == ["T12"] and other["n"] == 2
    d = tmp_path / "models"
    install(tmp_path / "v", rep, ["toy"], directory=d)
    card = models.registry(d)[model_name("resnet50-thin")]
    assert card.architecture["levels"] == rep["levels"] and card.training_data.startswith("T12-L5 crops")
    assert card.metrics["ensemble_heldout_synthetic_other_levels"]["n"] == 2


def test_a_detection_above_the_levels_it_should_lie_below_is_not_assessable(tmp_path, monkeypatch):
    from VertebralFractureLib.cli import main
    from VertebralFractureLib.radiograph_analysis import OUT_OF_ORDER

    def detect_with_l5_on_top(net, image, pixel_mm, threshold=0.3, device="cpu"):
        return [*_fake_detect(net, image, pixel_mm), {"name": "L5", "box_px": [90.0, 30.0, 150.0, 70.0],
                                                     "detection_score": 0.5}]

    monkeypatch.setattr("VertebralFractureLib.radiograph_detect.detect", detect_with_l5_on_top)
    d = tmp_path / "models"
    _install_random_models(d, tmp_path)
    monkeypatch.setenv("VF_MODELS_DIR", str(d))
    png = _radiograph_png(tmp_path / "lateral.png")
    assert main(["radiograph", str(png), "--pixel-spacing", "0.5", "-o", str(tmp_path / "o"), "--progress", "none"]) == 0
    data = json.loads((tmp_path / "o" / "radiograph.json").read_text())
    by = {v["name"]: v for v in data["vertebrae"]}
    assert by["L5"]["status"] == "not assessable" and by["L5"]["reason"] == OUT_OF_ORDER
    assert by["L5"]["class"] is None and not by["L5"]["ensemble"]
    assert all(by[n]["status"] == "assessed" and by[n]["class"] for n in ("L1", "L2", "L3"))


def test_the_real_anatomy_check_counts_calls_by_name_and_by_place():
    """``radiograph_real_check``'s summary: a fresh call on a grade-2 vertebra boxed under another
    level's name counts where the box lies, not among the boxes named right; a chest case (no true
    boxes) counts its fractured calls as false."""
    from factories import load_utility

    check = load_utility("radiograph_real_check")
    verse = {"true_boxes": [{"grade": 2, "class": "fresh"}, {"grade": 0, "class": "normal"}],
             "detections": [
                 {"name": "L3", "class": "fresh", "named_right": False, "truth_here": ["L2"], "grade_here": [2]},
                 {"name": "L1", "class": "normal", "named_right": True, "truth_here": ["L1"], "grade_here": [0]},
                 {"name": "L4", "class": "old", "named_right": False, "truth_here": ["L3", "L4"], "grade_here": [0, 0]}]}
    chest = {"true_boxes": [], "detections": [{"name": "L2", "class": "fresh", "named_right": False,
                                                "truth_here": [], "grade_here": []}]}
    s = check._summary([verse, chest])
    assert s["detected_named_right"]["grade2plus"] == 0 and s["detected_named_right"]["grade0"] == 1
    assert s["detected_any_name"] == {"grade2plus": 1, "grade2plus_called_fractured": 1, "grade0": 1,
                                      "grade0_called_fractured": 0, "grade1": 0, "grade1_called_fractured": 0}
    assert s["true_boxes"]["grade2plus_called_fractured"] == 1
    assert s["detections"] == 4 and s["detections_named_right"] == 1 and s["chest_or_annotated_called_fractured"] == 1


def test_the_accuracy_warning_gives_both_fresh_scores_from_the_same_held_out_radiographs():
    from VertebralFractureLib.models import ModelCard
    from VertebralFractureLib.radiograph_analysis import accuracy_warning

    def card(metrics):
        return ModelCard(name="radiograph-fresh-vcf", file="f.pt", sha256="0", metrics=metrics)

    first = {"heldout_synthetic_auc": {"value": 0.48}}
    regenerated = {**first, "heldout_synthetic_regenerated": {"this_network": {"value": 0.53},
                                                              "vertebrae_largest_ensemble_fresh": {"value": 0.81}}}
    text = accuracy_warning({"fresh": card(regenerated)})
    assert "ROC-AUC 0.53 for the whole-image network, 0.81 from the vertebrae" in text and "0.48" not in text
    assert "ROC-AUC 0.48 for the whole-image network" in accuracy_warning({"fresh": card(first)})
    assert "from the vertebrae" not in accuracy_warning({"fresh": card(first)})
