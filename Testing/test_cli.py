from __future__ import annotations

import json
import subprocess
import sys

import pytest
from factories import make_analysis

from VertebralFractureLib import cli, pipeline

CONTRACT = ["analysis.json", "vertebrae.nii.gz", "fracture.nii.gz", "segmentation.seg.nrrd", "centroids.mrk.json",
            "keypoints.mrk.json", "centroids_ctd.json", "report.csv", "report.html", "spine3d.png"]


@pytest.fixture()
def no_models(tmp_path, monkeypatch):
    d = tmp_path / "models"
    d.mkdir()
    (d / "models.json").write_text('{"models": []}')
    monkeypatch.setenv("VF_MODELS_DIR", str(d))


@pytest.fixture()
def ct_file(tmp_path):
    ref = make_analysis()
    path = tmp_path / "ct.nii.gz"
    import SimpleITK as sitk

    sitk.WriteImage(ref.image.to_sitk(), str(path))
    return path


class _TruthStage:
    """A stand-in for the model stages: copies a known analysis into the context."""

    name = "truth"
    models: tuple[str, ...] = ()

    def __init__(self):
        self.ref = make_analysis()

    def run(self, context):
        for v in self.ref.vertebrae:
            context.vertebrae[v.label] = v
        context.labelmap = context.image.with_array(self.ref.labelmap.array)
        context.fracture_map = context.image.with_array(self.ref.fracture_map.array)


def test_import_is_light():
    code = ("import sys, VertebralFractureLib, VertebralFractureLib.cli as c; c.build_parser(); "
            "heavy = [m for m in ('torch', 'monai', 'slicer', 'vtk', 'SimpleITK') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing the package pulled in {out.stdout.strip()}"


def test_help_and_usage_errors(capsys):
    assert cli.main(["--help"]) == 0
    assert "analyze" in capsys.readouterr().out
    assert cli.main(["analyze"]) == cli.EXIT_USAGE
    assert cli.main(["frobnicate"]) == cli.EXIT_USAGE


def test_analyze_refuses_without_models(no_models, ct_file, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.main(["analyze", str(ct_file), "-o", str(out), "--progress", "none"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == cli.EXIT_MODEL
    assert len(err) == 1 and "model not available" in err[0] and "Traceback" not in err[0]
    assert not out.exists(), "a refused analysis must not leave an output folder"
    assert not any(p.name.startswith(".out") for p in tmp_path.iterdir())


def test_missing_input_and_existing_output(tmp_path, ct_file, capsys):
    assert cli.main(["analyze", str(tmp_path / "nope.nii.gz"), "-o", str(tmp_path / "o")]) == cli.EXIT_INPUT
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    assert cli.main(["analyze", str(ct_file), "-o", str(existing)]) == cli.EXIT_EXISTS
    assert "--overwrite" in capsys.readouterr().err
    assert [p.name for p in existing.iterdir()] == ["keep.txt"]


def test_json_progress_lines(no_models, ct_file, tmp_path, capsys):
    code = cli.main(["analyze", str(ct_file), "-o", str(tmp_path / "o"), "--progress", "json"])
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert code == cli.EXIT_MODEL
    assert all({"stage", "fraction", "message"} <= set(x) for x in lines)
    assert lines[0]["stage"] == "read" and lines[-1]["stage"] == "error"
    assert "model not available" in lines[-1]["message"]


def test_full_run_writes_contract_and_respects_overwrite(ct_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pipeline, "default_stages", lambda: [_TruthStage()])
    out = tmp_path / "result"
    assert cli.main(["analyze", str(ct_file), "-o", str(out), "--progress", "json"]) == cli.EXIT_OK
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert lines[-1]["stage"] == "done" and lines[-1]["output"] == str(out)
    for name in CONTRACT:
        assert (out / name).is_file(), name
    data = json.loads((out / "analysis.json").read_text())
    assert [v["name"] for v in data["vertebrae"]] == ["T12", "L1", "L2"]
    assert "truth" in data["timings_s"]
    # no overwrite without --overwrite, and the first result stays intact
    assert cli.main(["analyze", str(ct_file), "-o", str(out), "--progress", "none"]) == cli.EXIT_EXISTS
    assert (out / "analysis.json").read_text() == json.dumps(data, indent=2) + "\n"
    assert cli.main(["analyze", str(ct_file), "-o", str(out), "--overwrite", "--progress", "none"]) == cli.EXIT_OK
    assert "L1" in capsys.readouterr().out  # the summary table


def test_grade_runs_without_any_model(no_models, ct_file, tmp_path, capsys):
    """Grading a given segmentation measures the masks; it needs no trained weights."""
    import SimpleITK as sitk

    seg = tmp_path / "seg.nii.gz"
    sitk.WriteImage(make_analysis().labelmap.to_sitk(), str(seg))
    out = tmp_path / "g"
    code = cli.main(["grade", "--segmentation", str(seg), str(ct_file), "-o", str(out), "--progress", "none"])
    assert code == cli.EXIT_OK
    data = json.loads((out / "analysis.json").read_text())
    assert [v["keypoint_method"] for v in data["vertebrae"] if v["complete"]] == ["geometric"] * 3


def test_info_json(capsys):
    assert cli.main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["vertebral-fracture"] and "cpu" in info["devices"]
    assert set(info["models"]) >= {"localization", "segmentation", "keypoints"}


def test_console_script_exit_code(no_models, ct_file, tmp_path):
    exe = [sys.executable, "-m", "VertebralFractureLib"]
    r = subprocess.run(exe + ["analyze", str(ct_file), "-o", str(tmp_path / "x"), "--progress", "none"],
                       capture_output=True, text=True)
    assert r.returncode == cli.EXIT_MODEL
    assert r.stderr.strip().startswith("vertebral-fracture: error: model not available")


@pytest.mark.parametrize("args, message", [
    (["localize", "--defect-share", "0.2"], "--defect-share applies to 'train keypoints' only"),
    (["keypoints", "--defect-share", "1.5"], "--defect-share is a share between 0 and 1"),
    (["segment", "--deformed-share", "0.3"], "--deformed-share applies to 'train keypoints' only"),
    (["keypoints", "--fov-crop", "0.3"], "--fov-crop applies to 'train localize' only"),
    (["localize", "--fov-crop", "-0.1"], "--fov-crop is a share between 0 and 1"),
])
def test_train_refuses_a_sampling_share_for_another_stage_or_outside_0_to_1(tmp_path, args, message):
    from VertebralFractureLib.cli import main

    with pytest.raises(SystemExit, match=message):
        main(["train", args[0], "--data", str(tmp_path), "-o", str(tmp_path / "run"), *args[1:]])
    assert not (tmp_path / "run").exists()  # refused before anything was written
