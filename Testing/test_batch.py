"""``vertebral-fracture batch``: discovery, per-study states, findings, resume, parallel workers."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from VertebralFractureLib import batch, cli
from VertebralFractureLib.batch import Study, StudyResult, find_studies, run_batch, study_name
from VertebralFractureLib.errors import InputError, OutputError

SAMPLE = Path(cli.sample_path("ct"))


def _dicom_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 16)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_studies_are_found_recursively_with_folder_names(tmp_path):
    root = tmp_path / "in"
    (root / "site A" / "p1").mkdir(parents=True)
    (root / "site A" / "p1" / "ct.nii.gz").write_bytes(b"x")
    (root / "b.nrrd").write_bytes(b"x")
    (root / "b.raw").write_bytes(b"x")  # a data file, not a study
    (root / ".hidden.nii").write_bytes(b"x")
    _dicom_file(root / "series1" / "IM0001")
    _dicom_file(root / "series1" / "IM0002")
    (root / "notes.txt").write_text("not a study")
    studies = find_studies(root)
    assert {s.name: s.path.relative_to(root).as_posix() for s in studies} == {
        "b": "b.nrrd", "series1": "series1", "site_A_p1_ct": "site A/p1/ct.nii.gz"}
    assert study_name(root / "x" / "y.mha", root) == "x_y"


def test_a_csv_list_names_its_studies(tmp_path):
    (tmp_path / "a.nii.gz").write_bytes(b"x")
    listing = tmp_path / "list.csv"
    listing.write_text("path,study\na.nii.gz,first\n/elsewhere/b.nii.gz,\n")
    studies = find_studies(listing)
    assert [s.name for s in studies] == ["first", "b"]
    assert studies[0].path == tmp_path / "a.nii.gz" and studies[1].path == Path("/elsewhere/b.nii.gz")
    (tmp_path / "bad.csv").write_text("file\na.nii.gz\n")
    with pytest.raises(InputError, match="'path' column"):
        find_studies(tmp_path / "bad.csv")


def test_discovery_refuses_what_it_cannot_use(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        find_studies(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no study found"):
        find_studies(tmp_path / "empty")
    with pytest.raises(InputError, match="use analyze"):
        find_studies(SAMPLE)
    clash = tmp_path / "clash"
    (clash / "a").mkdir(parents=True)
    (clash / "a_b.nii").write_bytes(b"x")
    (clash / "a" / "b.nii").write_bytes(b"x")
    with pytest.raises(InputError, match="share the result folder 'a_b'"):
        find_studies(clash)


def _fake_analysis(monkeypatch, calls: list[str]) -> None:
    """analyse_study without the networks: 'bad*' studies fail, the others write an analysis.json."""

    def fake(study: Study, out_dir: Path, options=None) -> StudyResult:
        calls.append(study.name)
        if study.name.startswith("bad"):
            return StudyResult(study.name, str(study.path), "failed", "cannot read it")
        folder = out_dir / study.name
        folder.mkdir()
        doc = {"vertebrae": [{"name": "L1", "label": 20, "status": "fractured", "genant": {"grade": 2, "type": "wedge"},
                              "fracture_probability": 0.9, "complete": True, "naming": {"anchor": "last rib"}},
                             {"name": "L2", "label": 21, "status": "normal", "genant": {"grade": 0, "type": None},
                              "fracture_probability": 0.1, "complete": True, "naming": {"anchor": None}}]}
        (folder / "analysis.json").write_text(json.dumps(doc))
        return StudyResult(study.name, str(study.path), "done", "", 1.0, batch.findings_of(study.name, doc), str(folder))

    monkeypatch.setattr(batch, "analyse_study", fake)


def test_states_findings_and_resume(tmp_path, monkeypatch):
    root = tmp_path / "in"
    root.mkdir()
    for name in ("a", "b", "bad1", "c"):
        (root / f"{name}.nii.gz").write_bytes(b"x")
    out = tmp_path / "out"
    calls: list[str] = []
    _fake_analysis(monkeypatch, calls)
    seen = []
    results = run_batch(root, out, progress=lambda k, n, r: seen.append((k, n, r.study, r.state)))
    assert [r.state for r in results] == ["done", "done", "failed", "done"]
    assert seen[-1][:2] == (4, 4) and len(seen) == 4
    state = {r["study"]: r for r in _rows(out / "batch.csv")}
    assert state["bad1"]["state"] == "failed" and state["bad1"]["reason"] == "cannot read it"
    assert state["a"]["fractured"] == "1" and state["a"]["max_genant"] == "2" and state["a"]["vertebrae"] == "2"
    findings = _rows(out / "findings.csv")
    assert len(findings) == 6 and {f["study"] for f in findings} == {"a", "b", "c"}
    assert findings[0]["vertebra"] == "L1" and findings[0]["genant_grade"] == "2" and findings[0]["naming_anchor"] == "last rib"
    # a second run does nothing new: done ones are skipped, the failure is kept, findings stay
    calls.clear()
    again = run_batch(root, out)
    assert calls == [] and [r.state for r in again] == ["skipped", "skipped", "failed", "skipped"]
    assert len(_rows(out / "findings.csv")) == 6
    # a new study is picked up; the failed one only with retry_failed
    (root / "d.nii.gz").write_bytes(b"x")
    run_batch(root, out)
    assert calls == ["d"]
    run_batch(root, out, retry_failed=True)
    assert calls == ["d", "bad1"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_a_result_folder_the_record_does_not_know_is_never_overwritten(tmp_path, monkeypatch):
    root = tmp_path / "in"
    root.mkdir()
    (root / "a.nii.gz").write_bytes(b"x")
    out = tmp_path / "out"
    calls: list[str] = []
    _fake_analysis(monkeypatch, calls)
    run_batch(root, out)
    (out / "batch.csv").unlink()
    (out / "batch.csv").write_text(",".join(batch.STATE_COLUMNS) + "\n")
    kept = (out / "a" / "analysis.json").read_text()
    [r] = run_batch(root, out)
    assert r.state == "failed" and "move it away" in r.reason and calls == ["a"]
    assert (out / "a" / "analysis.json").read_text() == kept


def test_the_batch_folder_is_checked_before_any_work(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    (root / "a.nii.gz").write_bytes(b"x")
    with pytest.raises(OutputError, match="inside the input"):
        run_batch(root, root / "out")
    other = tmp_path / "other"
    other.mkdir()
    (other / "mine.txt").write_text("keep")
    with pytest.raises(OutputError, match="no batch wrote"):
        run_batch(root, other)
    assert (other / "mine.txt").read_text() == "keep"


def test_cli_batch_two_workers_real_pipeline_broken_study_and_resume(tmp_path, capsys):
    """The real pipeline in two worker processes: two copies of the demo CT and one broken file."""
    from VertebralFractureLib import models

    if models.model_status("localization") != "ok":
        pytest.skip("stage-1 weights not installed")
    root = tmp_path / "in"
    (root / "ward").mkdir(parents=True)
    shutil.copy(SAMPLE, root / "ward" / "one.nii.gz")
    shutil.copy(SAMPLE, root / "two.nii.gz")
    (root / "broken.nii.gz").write_text("not an image")
    out = tmp_path / "out"
    args = ["batch", str(root), "-o", str(out), "--workers", "2", "--progress", "none", "--device", "cpu"]
    assert cli.main(args) == cli.EXIT_SOME_FAILED
    printed = capsys.readouterr()
    assert "3 studies: 2 done" in printed.out and "1 failed" in printed.out
    assert "broken: cannot read 'broken.nii.gz'" in printed.err and "Traceback" not in printed.err
    state = {r["study"]: r for r in _rows(out / "batch.csv")}
    assert state["ward_one"]["state"] == state["two"]["state"] == "done" and state["broken"]["state"] == "failed"
    one = json.loads((out / "ward_one" / "analysis.json").read_text())
    two = json.loads((out / "two" / "analysis.json").read_text())
    assert [v["name"] for v in one["vertebrae"]] == [v["name"] for v in two["vertebrae"]]  # same CT, same result
    findings = _rows(out / "findings.csv")
    assert len(findings) == len(one["vertebrae"]) + len(two["vertebrae"])
    assert not (out / "broken").exists()
    assert cli.main(args) == cli.EXIT_SOME_FAILED  # nothing new: the broken study stays failed
    assert "0 done, 2 done before (skipped), 1 failed" in capsys.readouterr().out
    assert cli.main(["batch", str(root), "-o", str(tmp_path / "o2"), "--workers", "0"]) == cli.EXIT_USAGE


def test_ray_missing_or_unreachable_is_a_clear_usage_error(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    from VertebralFractureLib.errors import UsageError

    with pytest.raises(UsageError, match=r"pip install 'vertebral-fracture\[cluster\]'"):
        batch.RayExecutor("auto")


@pytest.mark.slow
def test_ray_cluster_gives_the_local_findings(tmp_path):
    """A real Ray head on 127.0.0.1, started (and stopped) here: the same findings as the local run."""
    import socket
    import subprocess
    import sys

    pytest.importorskip("ray")
    from VertebralFractureLib import models

    if models.model_status("localization") != "ok":
        pytest.skip("stage-1 weights not installed")
    root = tmp_path / "in"
    root.mkdir()
    shutil.copy(SAMPLE, root / "one.nii.gz")
    shutil.copy(SAMPLE, root / "two.nii.gz")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray_bin = Path(sys.executable).parent / "ray"
    start = [str(ray_bin), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
             "--include-dashboard=false", "--disable-usage-stats"]
    subprocess.run(start, check=True, capture_output=True, timeout=180)
    try:
        code = cli.main(["batch", str(root), "-o", str(tmp_path / "ray"), "--ray", f"127.0.0.1:{port}",
                         "--progress", "none", "--device", "cpu"])
    finally:
        subprocess.run([str(ray_bin), "stop", "--force"], capture_output=True, timeout=180)
    assert code == cli.EXIT_OK
    assert cli.main(["batch", str(root), "-o", str(tmp_path / "local"), "--progress", "none", "--device", "cpu"]) == 0

    def findings(folder: Path) -> list[dict[str, str]]:
        return sorted(_rows(folder / "findings.csv"), key=lambda r: (r["study"], int(r["label"])))

    assert findings(tmp_path / "ray") == findings(tmp_path / "local") and len(findings(tmp_path / "ray")) > 2
