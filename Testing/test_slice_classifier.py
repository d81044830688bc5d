"""Seed 000: per-vertebra slices, the slice classifiers, the conditional GAN and their comparison."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from factories import tiny_verse_folder

from VertebralFractureLib.slices import (
    OUTSIDE_HU,
    SLICE_PX,
    VIEWS,
    build_network,
    mask_centres,
    plane_grid,
    sample_plane,
    to_unit,
    vertebra_slices,
)
from VertebralFractureLib.volume import Volume


def _phantom(flip: bool = False) -> tuple[Volume, Volume]:
    """A 'body' (300 HU) anterior and a 'process' (900 HU) posterior and cranial, one label; stored
    LPS, or RAS-flipped in x and y (the same anatomy)."""
    ct = np.full((60, 60, 60), 40, np.int16)  # z, y, x at 1 mm, y posterior
    lab = np.zeros(ct.shape, np.uint8)
    ct[20:40, 12:30, 20:40], lab[20:40, 12:30, 20:40] = 300, 22
    ct[32:38, 34:50, 27:33], lab[32:38, 34:50, 27:33] = 900, 22
    if not flip:
        return Volume(ct, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3)), Volume(lab, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3))
    d = np.diag([-1.0, -1.0, 1.0])
    return (Volume(ct[:, ::-1, ::-1].copy(), (1.0, 1.0, 1.0), (59.0, 59.0, 0.0), d),
            Volume(lab[:, ::-1, ::-1].copy(), (1.0, 1.0, 1.0), (59.0, 59.0, 0.0), d))


@pytest.mark.parametrize("flip", [False, True])
def test_slices_are_cranial_up_anterior_left_and_anterior_up_whatever_the_storage(flip):
    ct, lab = _phantom(flip)
    centre = mask_centres(lab)[22]
    s = vertebra_slices(ct, centre, px=64, field_mm=64.0)
    assert s.shape == (len(VIEWS), 64, 64) and s.dtype == np.float32 and 0.0 <= s.min() and s.max() <= 1.0
    bright = to_unit(np.array([900.0]))[0] - 0.05
    sag, ax = s[0], s[1]
    rows, cols = np.nonzero(sag >= bright)
    assert rows.max() < 32 and cols.min() > 32  # the process: cranial (top) and posterior (right)
    rows, _ = np.nonzero(ax[:, :] >= to_unit(np.array([250.0]))[0])
    assert rows.min() < 32  # the body: anterior, the upper half of the axial slice
    assert vertebra_slices(ct, centre + np.array([0.0, 0.0, 500.0]), px=16).max() == 0.0  # outside: air


def test_plane_grids_and_bad_arguments():
    g = plane_grid([0.0, 0.0, 0.0], "sagittal", px=10, field_mm=20.0)
    assert g.array.shape == (10, 10, 1) and g.spacing == pytest.approx((1.0, 2.0, 2.0))
    assert plane_grid([0.0, 0.0, 0.0], "axial", px=10).array.shape == (1, 10, 10)
    with pytest.raises(ValueError):
        plane_grid([0, 0, 0], "coronal")
    with pytest.raises(ValueError):
        plane_grid([0, 0, 0], "axial", px=1)
    assert SLICE_PX == 224


@pytest.mark.parametrize("view", VIEWS)
def test_a_plane_is_sampled_as_simpleitk_resamples_it_on_any_oblique_ct(view):
    rng = np.random.default_rng(3)
    direction = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    ct = Volume(rng.normal(0, 300, (30, 40, 50)).astype(np.float32), (0.8, 0.9, 2.5), (10.0, -20.0, 30.0), direction)
    grid = plane_grid(ct.index_to_lps([25, 20, 15]), view, px=48, field_mm=70.0)  # reaches outside the CT
    ours = sample_plane(ct, grid)
    theirs = np.asarray(ct.resample_like(grid, "linear", OUTSIDE_HU).array)
    assert ours.shape == theirs.shape
    np.testing.assert_array_equal(ours == OUTSIDE_HU, theirs == OUTSIDE_HU)  # the same points inside
    assert 0 < np.sum(ours == OUTSIDE_HU) < ours.size
    np.testing.assert_allclose(ours, theirs, atol=1e-2)


def test_the_thin_densenet_has_densenet121s_layers_at_a_quarter_of_the_width():
    import torch

    full, thin = build_network("densenet121"), build_network({"type": "densenet121-thin"})
    convs = [sum(isinstance(m, torch.nn.Conv2d) for m in n.modules()) for n in (full, thin)]
    assert convs[0] == convs[1] == 120  # + the classifier: 121 layers
    n_full, n_thin = (sum(p.numel() for p in n.parameters()) for n in (full, thin))
    assert n_thin < n_full / 10
    assert build_network("densenet-thin")(torch.zeros(2, 1, 64, 64)).shape == (2, 2)
    with pytest.raises(ValueError, match="unknown slice classifier"):
        build_network("resnet")


def test_collect_reads_every_complete_vertebra_with_its_truth(tmp_path):
    from VertebralFractureLib.training.slice_classifier import collect

    root = tiny_verse_folder(tmp_path / "tree", n_cases=2)
    data = collect([root], cache=tmp_path / "cache")
    assert data["x"].shape == (6, 2, SLICE_PX, SLICE_PX) and data["x"].dtype == np.uint8
    assert list(data["label"]) == [19, 20, 21] * 2 and list(data["y"]) == [0, 1, 0] * 2
    assert data["x"].max() > 100  # the bright boxes
    assert data["case"][0] == "tree/sub-tiny0"  # folder/subject: two folders may hold the same subject name
    again = collect([root], cache=tmp_path / "cache")  # from the cache
    assert np.array_equal(again["x"], data["x"]) and list(again["case"]) == list(data["case"])
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1


def test_metrics_with_known_answers():
    from VertebralFractureLib.training.slice_classifier import bootstrap, classification_metrics, per_vertebra

    y = np.array([1, 1, 0, 0, 0])
    p = np.array([0.9, 0.4, 0.6, 0.1, 0.2])
    m = classification_metrics(y, p, 0.5)
    assert m["accuracy"] == pytest.approx(0.6) and m["precision"] == pytest.approx(0.5)
    assert m["recall"] == pytest.approx(0.5) and m["f1"] == pytest.approx(0.5)
    assert m["roc_auc"] == pytest.approx(5 / 6)
    b = bootstrap(y, p, 0.5, n=50)
    assert b["confusion"] == {"tp": 1, "fp": 1, "tn": 2, "fn": 1} and b["n_fractured"] == 2
    assert b["roc_auc"]["ci95"][0] <= b["roc_auc"]["value"] <= b["roc_auc"]["ci95"][1]
    assert list(per_vertebra(np.array([0.2, 0.4, 1.0, 0.0]), np.array([0, 0, 1, 1]), 2)) == [pytest.approx(0.3), 0.5]


def test_handcrafted_features_are_finite_and_tell_a_band_apart():
    from VertebralFractureLib.training.slice_features import handcrafted_features

    rng = np.random.default_rng(0)
    flat = rng.random((32, 32)).astype(np.float32) * 0.2
    band = flat.copy()
    band[10:20] += 0.6
    a, b = handcrafted_features(flat), handcrafted_features(band)
    assert a.shape == b.shape and np.all(np.isfinite(a)) and not np.allclose(a, b)


def _toy(n: int, n_fractured: int, seed: int, px: int = 32) -> dict[str, np.ndarray]:
    """Noise slices; the fractured ones carry a bright band (an easy, known signal)."""
    rng = np.random.default_rng(seed)
    x = (rng.random((n, 2, px, px)) * 60).astype(np.uint8)
    y = np.zeros(n, np.int64)
    y[:n_fractured] = 1
    x[y == 1, :, 10:20, :] += 150
    return {"x": x, "y": y, "grade": 2 * y, "case": np.array([f"c{i // 4}" for i in range(n)]),
            "label": np.arange(n) % 17 + 8}


def test_the_comparison_trains_every_model_and_writes_its_report(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    from VertebralFractureLib.training.slice_classifier import compare, table

    report = compare(_toy(40, 8, 1), _toy(20, 5, 2), _toy(20, 5, 3), models=("rf", "cnn", "densenet-gan"),
                     output=tmp_path / "run", iterations=4, gan_budget_s=3.0)
    assert set(report["models"]) == {"rf", "cnn", "densenet-gan"}
    assert report["models"]["rf"]["heldout"]["roc_auc"]["value"] > 0.9  # the band is easy
    gan = report["models"]["densenet-gan"]["gan"]
    assert gan["generated_fractured"] == gan["generated_normal"] == 2 * (40 - 8) - 2 * 8  # slices: 64 normal, 16 fractured
    assert 0.0 <= gan["realism_auc"] <= 1.0
    assert report["models"]["cnn"]["training"]["iterations"] == 4
    for f in ("report.json", "predictions.csv", "cnn.pt", "densenet-gan.pt", "gan_slices.png"):
        assert (tmp_path / "run" / f).exists(), f
    assert json.loads((tmp_path / "run" / "report.json").read_text())["heldout"]["vertebrae"] == 20
    with (tmp_path / "run" / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 20 and {"rf", "cnn", "densenet-gan"} <= set(rows[0])
    text = table(report)
    assert text.count("\n") == 4 and "| rf |" in text
    with pytest.raises(ValueError):
        compare(_toy(8, 2, 1), _toy(8, 2, 2), _toy(8, 2, 3), models=("svm",))
    # training adds up: a second run starts each network from the first run's weights
    again = compare(_toy(40, 8, 1), _toy(20, 5, 2), _toy(20, 5, 3), models=("cnn",), output=tmp_path / "run2",
                    iterations=1, init=tmp_path / "run")
    assert again["models"]["cnn"]["training"]["from"] == str(tmp_path / "run" / "cnn.pt")
    assert report["models"]["cnn"]["training"]["from"] == "scratch"


def test_the_gan_generates_slices_of_each_class_in_the_classifiers_size():
    pytest.importorskip("torch")
    from VertebralFractureLib.training.slice_gan import generate, train_gan

    data = _toy(16, 4, 0, px=48)
    x, y = data["x"][:, 0].astype(np.float32) / 255, data["y"]
    gen, report = train_gan(x, y, iterations=2)
    assert report["iterations"] == 2 and np.isfinite(report["loss_d"])
    out = generate(gen, np.array([0, 1, 1]), 48)
    assert out.shape == (3, 48, 48) and 0.0 <= out.min() and out.max() <= 1.0
    with pytest.raises(ValueError):
        train_gan(x, np.zeros_like(y), iterations=1)


def test_an_installed_network_gives_every_complete_vertebra_a_slice_probability(tmp_path, monkeypatch):
    """The shipped kind of network (the thin DenseNet-121) from a tiny comparison run, installed (half
    precision, sha256, card) into a models folder,
    then ``analyze`` from a given segmentation with the slice stage: a probability for each complete
    vertebra, in analysis.json's fields and the report's columns, and the status left alone."""
    pytest.importorskip("torch")
    from VertebralFractureLib import models
    from VertebralFractureLib.io.readers import read_image, read_labelmap
    from VertebralFractureLib.pipeline import AnalysisConfig, GivenSegmentation, analyze
    from VertebralFractureLib.report import csv_row
    from VertebralFractureLib.slices import MODEL_NAME, SliceClassifierStage
    from VertebralFractureLib.training.slice_classifier import compare, install

    run = tmp_path / "run"
    report = compare(_toy(16, 4, 1), _toy(8, 2, 2), _toy(8, 2, 3), models=("densenet-thin",), output=run, iterations=2)
    models_dir = tmp_path / "models"
    path = install("densenet-thin", run, report, ["toy"], directory=models_dir)
    card = models.require(MODEL_NAME, models_dir)
    entry = next(m for m in json.loads((models_dir / "models.json").read_text())["models"] if m["name"] == MODEL_NAME)
    assert path.exists() and card.architecture["type"] == "densenet121-thin" and entry["ledger"][-1]["iterations"] == 2
    assert 0.0 <= card.postprocess["threshold"] <= 1.0 and "synthetic CT only" in card.accuracy
    with pytest.raises(ValueError):
        install("rf", run, report, ["toy"], directory=models_dir)

    root = tiny_verse_folder(tmp_path / "tree", n_cases=1)
    ct = read_image(root / "rawdata" / "sub-tiny0" / "sub-tiny0_ct.nii.gz").volume
    seg = read_labelmap(root / "derivatives" / "sub-tiny0" / "sub-tiny0_seg-vert_msk.nii.gz", ct)
    monkeypatch.setenv(models.MODELS_DIR_ENV, str(models_dir))
    result = analyze(ct, AnalysisConfig(device="cpu"), stages=[GivenSegmentation(seg), SliceClassifierStage()])
    assert result.models[MODEL_NAME]["sha256"] == card.sha256
    by = {v.name: v for v in result.vertebrae}
    complete = [v for v in result.vertebrae if v.complete]
    assert complete and all(0.0 <= v.slice_fracture_probability <= 1.0 for v in complete)
    assert all(v.slice_fracture_probability is None for v in result.vertebrae if not v.complete)
    assert all(v.status is None for v in by.values())  # no grading stage ran: nothing was called
    row = csv_row(complete[0])
    assert row["slice_fracture_probability"] == pytest.approx(complete[0].slice_fracture_probability, abs=1e-4)
    again = type(complete[0]).from_dict(complete[0].to_dict())
    assert again.slice_fracture_probability == pytest.approx(complete[0].slice_fracture_probability, abs=1e-4)

    from VertebralFractureLib import cli

    assert cli.main(["bench", str(tmp_path / "any.nii.gz"), "--slice-classifier"]) == cli.EXIT_USAGE  # needs all stages


def test_analyze_with_the_slice_classifier_but_no_weights_says_so_before_any_work(tmp_path, monkeypatch, capsys):
    from VertebralFractureLib import cli, models

    monkeypatch.setenv(models.MODELS_DIR_ENV, str(tmp_path / "no-models"))
    root = tiny_verse_folder(tmp_path / "tree", n_cases=1)
    seg = root / "derivatives" / "sub-tiny0" / "sub-tiny0_seg-vert_msk.nii.gz"
    out = tmp_path / "out"
    code = cli.main(["grade", "-s", str(seg), "-o", str(out), "--slice-classifier", "--progress", "none"])
    assert code == cli.EXIT_MODEL and not out.exists()
    assert "slice-classifier" in capsys.readouterr().err


def test_real_cases_are_scored_per_scan(tmp_path):
    pytest.importorskip("torch")
    from VertebralFractureLib.training.slice_classifier import collect_real, compare, real_summary, real_table

    data = {"grade": np.array([0, 2, 0, 3, 0, -1]), "case": np.array(["a", "a", "a", "b", "b", "b"])}
    s = real_summary(data, np.array([0.2, 0.7, 0.4, 0.3, 0.5, 0.9]))
    assert s["a"] == {"grade2": 1, "grade0": 2, "lowest_grade2": 0.7, "highest_grade0": 0.4, "all_above": True}
    assert s["b"]["all_above"] is False and s["b"]["grade0"] == 1  # the unknown grade counts in neither group

    root = tiny_verse_folder(tmp_path / "tree", n_cases=1)  # T12 0, L1 2, L2 0 (VerSe layout, grades)
    real = collect_real([root])
    assert list(real["grade"]) == [0, 2, 0] and list(real["y"]) == [0, 1, 0] and real["x"].shape[1] == 2
    small = {**real, "x": real["x"][:, :, ::7, ::7]}  # 32 px: a quick network
    report = compare(_toy(16, 4, 1), _toy(8, 2, 2), _toy(8, 2, 3), models=("rf", "cnn"), output=tmp_path / "run",
                     iterations=2, real=small)
    for kind in ("rf", "cnn"):
        r = report["models"][kind]["real"]["sub-tiny0"]
        assert r["grade2"] == 1 and r["grade0"] == 2 and isinstance(r["all_above"], bool)
    assert (tmp_path / "run" / "real_predictions.csv").exists() and "| cnn | sub-tiny0 |" in real_table(report)
