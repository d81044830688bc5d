"""Seed 001's route: Wiener filter, CCL labelling, per-vertebra radiomics, the JSON classifier."""

from __future__ import annotations

import json

import numpy as np
import pytest

from VertebralFractureLib import cli
from VertebralFractureLib.analysis import VertebraResult
from VertebralFractureLib.errors import InputError, ModelIntegrityError, ModelNotAvailableError
from VertebralFractureLib.radiomics import (
    MODEL_NAME,
    RadiomicsClassifier,
    RadiomicsStage,
    default_params_path,
    extract_features,
    label_components,
    load_classifier,
    load_params,
    read_features_csv,
    wiener_filter,
    write_features_csv,
)
from VertebralFractureLib.volume import Volume

pytest.importorskip("radiomics")


def phantom(n: int = 3, fractured: int | None = None, seed: int = 0) -> tuple[Volume, Volume]:
    """A noisy soft-tissue block with ``n`` textured bone blocks stacked along z (1 mm), labelled
    L1, L2, … from cranial (high z) down; ``fractured`` (an index) is a flattened one."""
    rng = np.random.default_rng(seed)
    arr = rng.normal(40, 20, (40 + 22 * n, 48, 48)).astype(np.float32)
    lab = np.zeros(arr.shape, np.uint8)
    for k in range(n):
        top = arr.shape[0] - 12 - 22 * k
        height = 8 if k == fractured else 16
        box = (slice(top - height, top), slice(12, 36), slice(12, 36))
        arr[box] = rng.normal(300, 80, arr[box].shape)
        lab[box] = 20 + k
    vol = Volume(arr, (1.0, 1.0, 1.0), (-24.0, -24.0, 0.0))
    return vol, vol.with_array(lab)


# ---------------------------------------------------------------------------------------- preprocessing
def test_wiener_filter_smooths_noise_and_keeps_geometry():
    vol, _ = phantom(1)
    out = wiener_filter(vol, 5)
    assert out.same_geometry(vol) and out.array.dtype == np.float32
    background = (slice(0, 8), slice(0, 48), slice(0, 48))
    assert out.array[background].std() < 0.7 * vol.array[background].std()
    assert np.all(np.isfinite(out.array))
    flat = Volume(np.zeros((5, 5, 5)))
    assert np.all(wiener_filter(flat, 3).array == 0)  # zero local variance: values kept, no NaN
    with pytest.raises(ValueError):
        wiener_filter(vol, 4)


def test_label_components_orders_cranio_caudally_and_names():
    _, lab = phantom(3)
    mask = lab.with_array((lab.array > 0).astype(np.uint8))
    mask.array[2:4, 2:4, 2:4] = 1  # a speck: dropped
    numbered = label_components(mask, min_voxels=100)
    assert sorted(np.unique(numbered.array)) == [0, 1, 2, 3]
    # cranial = high z here (identity direction, LPS z = superior): the top block gets 1
    assert numbered.array[lab.array == 20].min() == 1 and numbered.array[lab.array == 22].min() == 3
    named = label_components(mask, first_vertebra="L1", min_voxels=100)
    assert np.array_equal(named.array, np.where(lab.array > 0, lab.array, 0))
    with pytest.raises(InputError):
        label_components(mask, first_vertebra="L4", min_voxels=100)  # 3 components, only L4 and L5 left
    with pytest.raises(InputError):
        label_components(mask.with_array(np.zeros_like(mask.array)))


def test_label_components_splits_touching_vertebrae():
    _, lab = phantom(2)
    binary = (lab.array > 0).astype(np.uint8)
    gap = np.nonzero(binary.any(axis=(1, 2)) == 0)[0]
    gap = gap[(gap > np.nonzero(binary.any(axis=(1, 2)))[0].min())]
    binary[gap.min():gap.max() + 1, 22:26, 22:26] = 1  # a thin bridge between the two blocks
    mask = lab.with_array(binary)
    assert len(np.unique(label_components(mask, min_voxels=100).array)) == 2  # plain CCL: one component
    split = label_components(mask, first_vertebra="L1", min_voxels=100, split_mm=3.0)
    assert sorted(np.unique(split.array)) == [0, 20, 21]
    assert np.mean(split.array[lab.array == 20] == 20) > 0.99


# ---------------------------------------------------------------------------------------- features
def test_params_file_enables_every_default_class_on_the_original_image():
    params = load_params()
    assert default_params_path().exists()
    assert set(params["imageType"]) == {"Original"}
    assert {"shape", "firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm"} <= set(params["featureClass"])
    assert params["setting"]["binWidth"] == 25 and params["setting"]["resampledPixelSpacing"] == [1.0, 1.0, 1.0]
    assert set(load_params(image_types=["LoG"])["imageType"]) == {"Original", "LoG"}
    with pytest.raises(ValueError):
        load_params(image_types=["Gradient"])


def test_extract_features_per_vertebra_and_csv(tmp_path):
    vol, lab = phantom(3)
    warnings: list[str] = []
    rows = extract_features(vol, lab, wiener_window=3, warnings=warnings)
    assert [r.name for r in rows] == ["L1", "L2", "L3"] and warnings == []
    names = list(rows[0].features)
    assert len([n for n in names if n.startswith("original_")]) >= 100
    assert all(np.isfinite(v) for v in rows[0].features.values())
    assert all(r.seconds > 0 for r in rows)
    only = extract_features(vol, lab, labels=[21, 99])
    assert [r.label for r in only] == [21]
    path = tmp_path / "features.csv"
    write_features_csv(path, rows, {20: {"radiomics_fracture_probability": 0.25}})
    header = path.read_text().splitlines()[0].split(",")
    assert header[:3] == ["label", "name", "radiomics_fracture_probability"] and header[3:] == names
    back = read_features_csv(path)
    assert [r.label for r in back] == [20, 21, 22]
    assert back[1].features[names[5]] == pytest.approx(rows[1].features[names[5]])


def test_extract_features_reports_tiny_vertebrae_and_geometry_mismatch():
    vol, lab = phantom(1)
    arr = lab.array.copy()
    arr[2, 2, 2] = 21  # one voxel: pyradiomics refuses it
    warnings: list[str] = []
    rows = extract_features(vol, lab.with_array(arr), warnings=warnings)
    assert [r.label for r in rows] == [20] and "L2" in warnings[0]
    with pytest.raises(InputError):
        extract_features(vol, Volume(lab.array, (2.0, 1.0, 1.0)))


# ---------------------------------------------------------------------------------------- classifier
def _training_set(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6))
    y = (x[:, 0] - x[:, 2] + 0.3 * rng.normal(size=n) > 0.8).astype(int)
    return x, y


@pytest.mark.parametrize("kind", ["logistic", "random_forest", "mlp"])
def test_json_classifier_matches_scikit_learn(kind):
    pytest.importorskip("sklearn")
    from VertebralFractureLib.training.radiomics_classifier import export, make_candidate

    x, y = _training_set()
    model = make_candidate(kind).fit(x, y)
    names = [f"f{i}" for i in range(6)]
    clf = RadiomicsClassifier(kind, names, np.zeros(6), np.ones(6), export(kind, model))
    back = RadiomicsClassifier.from_dict(json.loads(json.dumps(clf.to_dict())))
    rows = [dict(zip(names, r)) for r in x[:30]]
    assert back.predict_proba(rows) == pytest.approx(model.predict_proba(x[:30])[:, 1], abs=1e-5)
    with pytest.raises(InputError):
        back.predict_proba([{"f0": 1.0}])


def test_relative_features_compare_each_vertebra_with_its_neighbours():
    from VertebralFractureLib.radiomics import VertebraFeatures, relative_features

    # L1–L4 of one scan, given out of order; L3 half the volume of its neighbours
    rows = [VertebraFeatures(22, "L3", {"volume": 10.0, "skew": 0.0}),
            VertebraFeatures(20, "L1", {"volume": 20.0, "skew": 0.5}),
            VertebraFeatures(21, "L2", {"volume": 20.0, "skew": -0.5}),
            VertebraFeatures(23, "L4", {"volume": 20.0, "skew": 0.0})]
    rel = relative_features(rows)
    assert rel[0]["rel:volume"] == pytest.approx((10 - 20) / 30)  # median of L1, L2, L4
    assert rel[1]["rel:volume"] == pytest.approx((20 - 15) / 35)  # L1 against L2 and L3 (median 15)
    assert rel[0]["rel:skew"] == 0.0  # median of 0.5, -0.5, 0: both zero
    # a scanner that doubles every volume changes nothing
    doubled = relative_features([(r.label, {"volume": 2 * r.features["volume"]}) for r in rows])
    assert [d["rel:volume"] for d in doubled] == pytest.approx([r["rel:volume"] for r in rel])
    assert relative_features([(20, {"volume": 1.0})]) == [None]  # no neighbour


def test_a_relative_classifier_needs_the_whole_scan():
    from VertebralFractureLib.radiomics import VertebraFeatures

    clf = RadiomicsClassifier("logistic", ["rel:volume"], np.zeros(1), np.ones(1) * 0.1,
                              {"coef": [-1.0], "intercept": 0.0})
    assert clf.relative and RadiomicsClassifier.from_dict(clf.to_dict()).relative
    rows = [VertebraFeatures(20 + k, f"L{k + 1}", {"volume": v}) for k, v in enumerate([20.0, 20.0, 10.0, 20.0])]
    p = clf.predict_proba(rows)
    assert p[2] > 0.9 and p[0] < 0.5 and p[3] < 0.5  # the collapsed L3 stands out
    alone = clf.predict_proba(rows[:1])
    assert np.isnan(alone[0])  # no neighbour: no probability
    with pytest.raises(InputError):  # plain feature dicts carry no labels to find neighbours
        clf.predict_proba([{"volume": 1.0}, {"volume": 2.0}])


def test_training_rows_made_relative_per_case():
    from VertebralFractureLib.training.radiomics_classifier import to_relative

    rows = [{"root": "a", "case": c, "label": 20 + k, "fractured": k == 1, "features": {"v": float(10 + k)}}
            for c in ("s1", "s2") for k in range(5)] + [{"root": "a", "case": "s3", "label": 20, "fractured": False,
                                                         "features": {"v": 1.0}}]
    out = to_relative(rows, normal_per_case=2)
    assert all(set(r["features"]) == {"rel:v"} for r in out)
    assert {r["case"] for r in out} == {"s1", "s2"}  # s3 has one vertebra: dropped
    for c in ("s1", "s2"):
        kept = [r for r in out if r["case"] == c]
        assert sum(r["fractured"] for r in kept) == 1 and len(kept) == 3


def test_lasso_path_keeps_the_informative_features_and_bootstrap_cis():
    pytest.importorskip("sklearn")
    from VertebralFractureLib.training.radiomics_classifier import bootstrap_metrics, lasso_path

    x, y = _training_set(200)
    x = np.hstack([x, np.random.default_rng(1).normal(size=(200, 10))])
    names = [f"f{i}" for i in range(16)]
    result = lasso_path((x - x.mean(0)) / x.std(0), y, names, n_lambdas=10)
    assert {"f0", "f2"} <= set(result["selected"])
    assert len(result["path"]) == 10 and result["best_cv_roc_auc"] > 0.9
    p = 1 / (1 + np.exp(-(x[:, 0] - x[:, 2])))
    m = bootstrap_metrics(y, p, 0.5, n=200)
    for name in ("roc_auc", "accuracy", "sensitivity", "specificity"):
        lo, hi = m[name]["ci95"]
        assert lo <= m[name]["value"] <= hi
    assert m["n"] == 200 and m["n_fractured"] == int(y.sum())


def _install_toy(directory, vol, lab) -> RadiomicsClassifier:
    """A logistic classifier on one shape feature (small height = fractured), installed in ``directory``."""
    from VertebralFractureLib.training.radiomics_classifier import install

    feature = "original_shape_LeastAxisLength"
    clf = RadiomicsClassifier("logistic", [feature], np.array([14.0]), np.array([2.0]),
                              {"coef": [-3.0], "intercept": 0.0}, radiomics_params=load_params(), wiener_window=3)
    install(clf, {"version": "test"}, directory)
    return clf


def test_load_classifier_checks_the_sha256(tmp_path):
    pytest.importorskip("sklearn")
    vol, lab = phantom(1)
    with pytest.raises(ModelNotAvailableError):
        load_classifier(tmp_path)
    _install_toy(tmp_path, vol, lab)
    registry = json.loads((tmp_path / "models.json").read_text())
    assert [m["name"] for m in registry["models"]] == [MODEL_NAME]
    assert load_classifier(tmp_path).features == ["original_shape_LeastAxisLength"]
    path = tmp_path / registry["models"][0]["file"]
    path.write_text(path.read_text().replace("-3.0", "3.0"))
    with pytest.raises(ModelIntegrityError):
        load_classifier(tmp_path)


def test_stage_adds_probability_and_skips_without_segmentation(tmp_path):
    pytest.importorskip("sklearn")
    from VertebralFractureLib.pipeline import AnalysisConfig, Context, GivenSegmentation

    vol, lab = phantom(3, fractured=1)
    _install_toy(tmp_path, vol, lab)
    context = Context(image=vol, config=AnalysisConfig())
    RadiomicsStage(tmp_path).run(context)
    assert "no vertebra segmentation" in context.warnings[0]
    context = Context(image=vol, config=AnalysisConfig())
    GivenSegmentation(lab).run(context)
    RadiomicsStage(tmp_path).run(context)
    p = {v.name: v.radiomics_fracture_probability for v in context.vertebrae.values()}
    assert p["L2"] > 0.5 > max(p["L1"], p["L3"])


def test_analysis_json_round_trips_the_radiomics_probability():
    v = VertebraResult(label=20, centroid_lps_mm=(0.0, 0.0, 0.0), radiomics_fracture_probability=0.123456)
    d = v.to_dict()
    assert d["radiomics_fracture_probability"] == 0.1235
    assert VertebraResult.from_dict(d).radiomics_fracture_probability == 0.1235
    assert VertebraResult.from_dict({k: x for k, x in d.items() if k != "radiomics_fracture_probability"}
                                    ).radiomics_fracture_probability is None


# ---------------------------------------------------------------------------------------- command line
def _write(vol: Volume, path) -> None:
    from VertebralFractureLib.io.readers import write_volume

    write_volume(vol, path)


def test_cli_radiomics_writes_features_csv(tmp_path, monkeypatch, capsys):
    pytest.importorskip("sklearn")
    vol, lab = phantom(3, fractured=1)
    _write(vol, tmp_path / "ct.nii.gz")
    _write(lab, tmp_path / "seg.nii.gz")
    _write(lab.with_array((lab.array > 0).astype(np.uint8)), tmp_path / "spine.nii.gz")
    out = tmp_path / "r"
    args = ["radiomics", str(tmp_path / "ct.nii.gz"), "-s", str(tmp_path / "seg.nii.gz"), "-o", str(out),
            "--progress", "none"]
    assert cli.main(args) == cli.EXIT_OK
    rows = read_features_csv(out / "features.csv")
    assert [r.name for r in rows] == ["L1", "L2", "L3"] and len(rows[0].features) >= 100
    assert "3 vertebrae" in capsys.readouterr().out
    assert cli.main(args) == cli.EXIT_EXISTS
    # a binary spine mask, labelled by connected components, and the classifier's probability
    models = tmp_path / "models"
    _install_toy(models, vol, lab)
    monkeypatch.setenv("VF_MODELS_DIR", str(models))
    args = ["radiomics", str(tmp_path / "ct.nii.gz"), "-s", str(tmp_path / "spine.nii.gz"), "-o", str(out),
            "--overwrite", "--label-components", "L1", "--classify", "--progress", "none"]
    assert cli.main(args) == cli.EXIT_OK
    header = (out / "features.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["label", "name", "radiomics_fracture_probability"]
    assert (out / "vertebrae.nii.gz").exists()
    assert cli.main(["radiomics", str(tmp_path / "ct.nii.gz"), "-s", str(tmp_path / "seg.nii.gz"), "-o",
                     str(tmp_path / "w"), "--wiener", "4", "--progress", "none"]) == cli.EXIT_USAGE


def test_cli_grade_with_radiomics_fills_analysis_json(tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    vol, lab = phantom(3, fractured=1)
    _write(vol, tmp_path / "ct.nii.gz")
    _write(lab, tmp_path / "seg.nii.gz")
    out = tmp_path / "g"
    args = ["grade", str(tmp_path / "ct.nii.gz"), "-s", str(tmp_path / "seg.nii.gz"), "-o", str(out),
            "--radiomics", "--progress", "none"]
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("VF_MODELS_DIR", str(empty))
    assert cli.main(args) == cli.EXIT_MODEL  # asked for, not installed: refused before any work
    models = tmp_path / "models"
    _install_toy(models, vol, lab)
    monkeypatch.setenv("VF_MODELS_DIR", str(models))
    assert cli.main(args) == cli.EXIT_OK
    data = json.loads((out / "analysis.json").read_text())
    p = {v["name"]: v["radiomics_fracture_probability"] for v in data["vertebrae"]}
    assert p["L2"] > 0.5 > p["L1"]
    assert "radiomics_fracture_probability" in (out / "report.csv").read_text().splitlines()[0]
    assert "P(fracture), radiomics" in (out / "report.html").read_text()


class _GivenStage:
    """Stands in for localization + segmentation: the phantom's labelmap as stage 2's output."""

    name = "given"
    models: tuple[str, ...] = ()

    def __init__(self, labelmap: Volume) -> None:
        self.labelmap = labelmap

    def run(self, context) -> None:
        from VertebralFractureLib.pipeline import GivenSegmentation

        GivenSegmentation(self.labelmap).run(context)


def test_cli_analyze_with_radiomics_appends_the_stage(tmp_path, monkeypatch, capsys):
    pytest.importorskip("sklearn")
    from VertebralFractureLib import pipeline

    vol, lab = phantom(3, fractured=1)
    _write(vol, tmp_path / "ct.nii.gz")
    models = tmp_path / "models"
    _install_toy(models, vol, lab)
    monkeypatch.setenv("VF_MODELS_DIR", str(models))
    monkeypatch.setattr(pipeline, "default_stages", lambda: [_GivenStage(lab)])
    out = tmp_path / "a"
    assert cli.main(["analyze", str(tmp_path / "ct.nii.gz"), "-o", str(out), "--radiomics", "--progress", "none"]) == 0
    data = json.loads((out / "analysis.json").read_text())
    assert list(data["timings_s"]) == ["given", "radiomics"] and MODEL_NAME in data["models"]
    assert [v["radiomics_fracture_probability"] > 0.5 for v in data["vertebrae"]] == [False, True, False]
    assert "p radiomics" in capsys.readouterr().out


def test_shipped_classifier_is_json_and_runs():
    from VertebralFractureLib import models

    if MODEL_NAME not in models.registry():
        pytest.skip("no radiomics classifier shipped")
    clf = load_classifier()
    card = models.registry()[MODEL_NAME]
    assert card.file.endswith(".json") and clf.kind in ("logistic", "random_forest", "mlp")
    assert 0 < len(clf.features) <= 107
    assert all(f.removeprefix("rel:").startswith("original_") for f in clf.features)
    vol, lab = phantom(4, fractured=1)
    rows = extract_features(vol, lab, params=clf.radiomics_params, wiener_window=clf.wiener_window)
    p = clf.predict_proba(rows)
    assert p.shape == (4,) and np.all((p >= 0) & (p <= 1))
    if clf.relative:  # a vertebra alone has nothing to be compared with
        assert np.isnan(clf.predict_proba(rows[:1])[0])


# ---------------------------------------------------------------------------------------- real data
def test_real_vertebra_crops(shared_data):
    from VertebralFractureLib.io.readers import read_image, read_labelmap

    crops = shared_data / "vertebra-crops"
    ct = read_image(crops / "sub-ct_label-22_ct.nii.gz").volume
    seg = read_labelmap(crops / "sub-ct_seg-vert_label-22_msk.nii.gz", reference=ct)
    warnings: list[str] = []
    rows = extract_features(ct, seg, wiener_window=3, warnings=warnings)
    assert "L3" in [r.name for r in rows]
    assert all(len(r.features) >= 100 and all(np.isfinite(list(r.features.values()))) for r in rows)
    ct = read_image(crops / "verse004_L2_ct.nii.gz").volume
    msk = read_labelmap(crops / "verse004_L2_msk.nii.gz", reference=ct)
    rows = extract_features(ct, msk.with_array(np.where(msk.array > 0, 21, 0).astype(np.uint8)))
    assert [r.name for r in rows] == ["L2"] and len(rows[0].features) >= 100


def test_real_masks_label_and_extract(shared_data):
    from VertebralFractureLib.io.readers import read_image

    seg = read_image(shared_data / "masks" / "healthivert-0007_seg-vert_msk.nii.gz").volume
    binary = seg.with_array((seg.array > 0).astype(np.uint8))
    labelled = label_components(binary, split_mm=3.0)
    assert len(np.unique(labelled.array)) - 1 >= 1
    # the masks have no CT: a bone-like image from the mask alone still gives every feature
    rng = np.random.default_rng(0)
    image = seg.with_array(np.where(seg.array > 0, 300.0, 0.0) + rng.normal(0, 20, seg.array.shape))
    rows = extract_features(image, seg.with_array(seg.array.astype(np.uint8)), labels=[16, 20, 24])
    assert [r.name for r in rows] == ["T9", "L1", "L5"] and all(len(r.features) >= 100 for r in rows)
