"""Every ``vertebral-fracture`` subcommand once through ``cli.main``, with its default options.

Only the required arguments are given, plus what keeps a run small: tiny inputs, two SynthSpine
cases without a body at a coarse spacing, two training iterations, one timed bench run.
``analyze`` and ``demo`` need the installed stage-1 model and are skipped without it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import pytest
from factories import load_utility, make_analysis

from VertebralFractureLib import cli, models

REPO = Path(__file__).resolve().parents[1]
LOCALIZATION_INSTALLED = models.model_status("localization") == "ok"
NEEDS_LOCALIZATION = pytest.mark.skipif(
    not LOCALIZATION_INSTALLED, reason="the stage-1 'localization' model is not installed in Resources/Models")


check_demo_output = load_utility("check_demo_output")


def _main(*argv: str) -> tuple[int, str, str]:
    """``cli.main(argv)`` with its stdout and stderr captured (for module-scoped fixtures)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def box_case(tmp_path_factory) -> tuple[Path, Path]:
    """A small CT of three box-shaped bodies (T12, L1 a 35 % wedge, L2) and its vertebra labelmap."""
    from VertebralFractureLib.io.readers import write_volume

    d = tmp_path_factory.mktemp("boxes")
    ref = make_analysis()
    write_volume(ref.image, d / "ct.nii.gz")
    write_volume(ref.labelmap, d / "seg.nii.gz")
    return d / "ct.nii.gz", d / "seg.nii.gz"


@pytest.fixture(scope="module")
def synth_run(tmp_path_factory) -> tuple[tuple[int, str, str], Path]:
    """``synth``: two SynthSpine cases without a body, 3 mm voxels, T12–L2 in view."""
    out = tmp_path_factory.mktemp("synth") / "data"
    result = _main("synth", "-o", out, "--n", "2", "--no-body", "--spacing", "3", "3", "3", "--fov", "160",
                   "--levels", "T12", "L2")
    return result, out


@pytest.fixture(scope="module")
def synth_data(synth_run) -> Path:
    (code, _, err), out = synth_run
    if code != 0:
        pytest.fail(f"synth failed ({code}): {err}")
    return out


@pytest.fixture(scope="module")
def train_run(synth_data, tmp_path_factory) -> tuple[tuple[int, str, str], Path, Path]:
    """``train localize`` for two iterations, installed into an empty models folder (not the shipped one)."""
    root = tmp_path_factory.mktemp("train")
    mdir = root / "models"
    mdir.mkdir()
    (mdir / "models.json").write_text('{"models": []}')
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(models.MODELS_DIR_ENV, str(mdir))
        result = _main("train", "localize", "--data", synth_data, "-o", root / "run", "--iterations", "2", "--install")
    return result, root / "run", mdir


def test_synth_writes_two_cases_in_the_verse_layout(synth_run):
    (code, _, err), out = synth_run
    assert code == 0, err
    summary = json.loads((out / "synthspine.json").read_text())
    subjects = [c["subject"] for c in summary["cases"]]
    assert subjects == ["sub-synth0000", "sub-synth0001"]
    for sub in subjects:
        assert (out / "rawdata" / sub / f"{sub}_ct.nii.gz").stat().st_size > 0
        truth = json.loads((out / "derivatives" / sub / f"{sub}_genant.json").read_text())
        assert {"T12", "L1", "L2"} <= {e["name"] for e in truth}
    assert "2 cases" in err.strip().splitlines()[-1]


def test_train_writes_a_run_and_installs_its_weights(train_run):
    (code, _, err), run, mdir = train_run
    assert code == 0, err
    rows = (run / "log.csv").read_text().strip().splitlines()
    assert rows[0].startswith("iteration") and rows[-1].startswith("2,")
    assert (run / "best.pt").stat().st_size > 0 and (run / "checkpoint.pt").exists()
    assert models.model_status("localization", mdir) == "ok"
    card = models.registry(mdir)["localization"]
    assert card.sha256 == models.sha256_of(run / "best.pt")
    assert card.spacing_mm and card.patch_size and len(card.classes) > 0
    assert f"installed {mdir / 'localization.pt'}" in err


def test_bench_times_stage_one(train_run, synth_data, monkeypatch, capsys):
    _, _, mdir = train_run
    monkeypatch.setenv(models.MODELS_DIR_ENV, str(mdir))
    ct = synth_data / "rawdata" / "sub-synth0000" / "sub-synth0000_ct.nii.gz"
    assert cli.main(["bench", str(ct), "--repeat", "1"]) == cli.EXIT_OK
    report = json.loads(capsys.readouterr().out)
    assert report["input"] == ct.name and report["stages"] == "localize" and report["device"] == "cpu"
    assert len(report["runs_s"]) == 1 and report["median_s"] == report["runs_s"][0] > 0
    assert isinstance(report["vertebrae"], int) and report["peak_rss_mb"] > 0


def test_evaluate_grades_held_out_cases_against_their_truth(synth_data, capsys):
    from VertebralFractureLib.genant import NOT_GRADED

    assert cli.main(["evaluate", "grade", "--data", str(synth_data)]) == cli.EXIT_OK
    metrics = json.loads(capsys.readouterr().out)
    truth = [e for f in sorted((synth_data / "derivatives").glob("*/*_genant.json")) for e in json.loads(f.read_text())]
    gradable = [e for e in truth if e["complete"] and e["keypoints_lps_mm"] is not None and e["label"] not in NOT_GRADED]
    assert len(truth) >= 10 and gradable
    assert metrics["keypoints"] == "auto" and metrics["masks"] == "true"
    assert metrics["vertebrae_complete"] == len(gradable) and 0 <= metrics["graded"] <= len(gradable)
    # 3 mm slices: every vertebra falls in the thick-slice group
    assert {k: v["vertebrae_complete"] for k, v in metrics["by_slice_mm"].items()} == {
        "<=1.25": 0, "1.25-2.5": 0, ">2.5": len(gradable)}
    if metrics["graded"]:
        assert 0.0 <= metrics["exact_grade"] <= 1.0 and metrics["keypoint_error_mm_mean"] >= 0.0


def test_grade_writes_the_contract_from_a_segmentation(box_case, tmp_path, capsys):
    ct, seg = box_case
    out = tmp_path / "graded"
    assert cli.main(["grade", str(ct), "--segmentation", str(seg), "-o", str(out)]) == cli.EXIT_OK
    printed = capsys.readouterr().out
    assert f"results written to {out}" in printed
    # a given segmentation carries no fracture status, hence no fracture map
    assert [n for n in check_demo_output.CONTRACT if not (out / n).is_file()] == ["fracture.nii.gz"]
    data = json.loads((out / "analysis.json").read_text())
    assert [v["name"] for v in data["vertebrae"]] == ["T12", "L1", "L2"]
    for v in data["vertebrae"]:  # the masks are 20 mm high boxes: no height loss
        assert v["genant"]["grade"] == 0, v
        assert all(15.0 < h < 25.0 for h in v["heights_mm"].values()), v
    assert all(name in printed for name in ("T12", "L1", "L2"))


def test_radiomics_writes_one_feature_row_per_vertebra(box_case, tmp_path, capsys):
    ct, seg = box_case
    out = tmp_path / "radiomics"
    assert cli.main(["radiomics", str(ct), "--segmentation", str(seg), "-o", str(out)]) == cli.EXIT_OK
    with (out / "features.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["T12", "L1", "L2"]
    n_features = len(rows[0]) - 2  # label, name
    assert n_features > 50 and all(r[k] != "" for r in rows for k in r)
    assert capsys.readouterr().out.startswith(f"3 vertebrae, {n_features} features each")


def test_info_lists_versions_and_models(capsys):
    assert cli.main(["info"]) == cli.EXIT_OK
    lines = dict(line.split(None, 1) for line in capsys.readouterr().out.strip().splitlines())
    assert lines["vertebral-fracture"].strip() == cli.__version__
    assert lines["devices"].startswith("cpu")
    models_line = lines["models"]
    for name in ("localization", "segmentation", "keypoints"):
        assert f"{name}: {models.model_status(name)}" in models_line


@NEEDS_LOCALIZATION
def test_analyze_writes_the_whole_contract(tmp_path, capsys):
    # a case with T11-L2 complete (T12 and L2 fractured) at 2 mm: enough spine for stage 1
    code, _, err = _main("synth", "-o", tmp_path / "data", "--n", "1", "--no-body", "--spacing", "2", "2", "2",
                         "--fov", "160", "--levels", "T11", "L3")
    assert code == 0, err
    ct = tmp_path / "data" / "rawdata" / "sub-synth0000" / "sub-synth0000_ct.nii.gz"
    out = tmp_path / "analysis"
    assert cli.main(["analyze", str(ct), "-o", str(out)]) == cli.EXIT_OK
    assert check_demo_output.problems(out) == []
    assert f"results written to {out}" in capsys.readouterr().out


@NEEDS_LOCALIZATION
def test_demo_analyses_the_shipped_sample(tmp_path, capsys):
    out = tmp_path / "demo-output"
    assert cli.main(["demo", "-o", str(out)]) == cli.EXIT_OK
    assert check_demo_output.problems(out) == []
    captured = capsys.readouterr()
    assert "synthspine-demo_ct.nii.gz" in captured.err and f"results written to {out}" in captured.out


def test_demo_output_check_names_what_is_missing(tmp_path, capsys):
    folder = tmp_path / "demo-output"
    folder.mkdir()
    for name in check_demo_output.CONTRACT:
        (folder / name).write_bytes(b"x")
    vertebrae = [{"name": "L1", "genant": None}, {"name": "L2", "genant": {"grade": 0, "ratio": 0.95}}]
    (folder / "analysis.json").write_text(json.dumps({"vertebrae": vertebrae}))
    assert check_demo_output.main([str(folder)]) == 0
    assert "2 vertebrae, 1 graded" in capsys.readouterr().out

    (folder / "spine3d.png").unlink()
    (folder / "report.csv").write_bytes(b"")
    vertebrae[1]["genant"] = None
    (folder / "analysis.json").write_text(json.dumps({"vertebrae": vertebrae}))
    assert check_demo_output.main([str(folder)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "missing spine3d.png" in err[0] and "empty report.csv" in err[0] and "Genant grade" in err[0]

    (folder / "analysis.json").write_text("{not json")
    assert check_demo_output.main([str(folder)]) == 1
    assert "analysis.json does not parse" in capsys.readouterr().err
    assert check_demo_output.main([str(tmp_path / "nowhere")]) == 1
    assert "no output folder" in capsys.readouterr().err


RADIOGRAPH_MODELS = ("radiograph-detector", "radiograph-resnet50-thin", "radiograph-densenet161-thin",
                     "radiograph-resnext50-thin", "radiograph-fresh-vcf")


@pytest.mark.skipif(any(models.model_status(n) != "ok" for n in RADIOGRAPH_MODELS),
                    reason="the radiograph models are not all installed in Resources/Models")
def test_radiograph_analyses_a_lateral_radiograph_with_the_shipped_models(tmp_path, capsys):
    """The shipped radiograph models load and run (sha256 checked) on a synthetic lateral radiograph."""
    import numpy as np

    from VertebralFractureLib.io.readers import read_image
    from VertebralFractureLib.synth.radiograph import RadiographParams, lateral_radiograph

    code, _, err = _main("synth", "-o", tmp_path / "data", "--n", "1", "--spacing", "2", "2", "2",
                         "--levels", "T12", "L5")
    assert code == 0, err
    ct = read_image(tmp_path / "data" / "rawdata" / "sub-synth0000" / "sub-synth0000_ct.nii.gz").volume
    image, geo = lateral_radiograph(ct, RadiographParams(), np.random.default_rng(0))
    from PIL import Image

    Image.fromarray(np.round(image * 65535).astype(np.uint16)).save(tmp_path / "lateral.png")
    out = tmp_path / "rx"
    assert cli.main(["radiograph", str(tmp_path / "lateral.png"), "--pixel-spacing", f"{geo.pixel_mm:.4f}",
                     "-o", str(out)]) == cli.EXIT_OK
    data = json.loads((out / "radiograph.json").read_text())
    assert data["vertebrae"] and 0.0 <= data["fresh_vcf_probability"] <= 1.0
    assert all(m in data["models"] for m in ("detector", "fresh_vcf"))
    assert "fresh vertebral compression fracture in the image" in capsys.readouterr().out
