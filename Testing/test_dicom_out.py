"""DICOM SEG and TID 1500 SR for DICOM inputs: valid (dciodvfy), referencing the source, read back to
the same vertebrae, heights and grades."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from factories import make_analysis
from test_io_dicom import write_series

hd = pytest.importorskip("highdicom")

from VertebralFractureLib import cli  # noqa: E402
from VertebralFractureLib.io.dicom_out import SEG_FILE, SR_FILE, status_text, write_dicom_outputs  # noqa: E402
from VertebralFractureLib.io.readers import read_image  # noqa: E402


def dciodvfy_errors(path: Path) -> list[str]:
    """The error lines of Debian's dicom3tools validator (skips the test without it)."""
    exe = shutil.which("dciodvfy")
    if exe is None:
        pytest.skip("dciodvfy (dicom3tools) not installed")
    run = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


def _series_like(analysis, folder: Path) -> list[Path]:
    """A CT series on exactly the analysis's grid (identity direction, z up)."""
    vol = analysis.image
    nz, ny, nx = vol.array.shape
    ox, oy, oz = vol.origin
    return write_series(folder, [(ox, oy, oz + vol.spacing[2] * k) for k in range(nz)], rows=ny, cols=nx,
                        pixel_spacing=(vol.spacing[1], vol.spacing[0]))


def test_seg_and_sr_reference_the_source_and_read_back(tmp_path):
    import pydicom

    analysis = make_analysis()
    paths = _series_like(analysis, tmp_path / "series")
    image = read_image(tmp_path / "series")
    assert len(image.dicom_sources) == analysis.labelmap.array.shape[0] and image.dicom_note == ""
    assert np.allclose(image.volume.origin, analysis.image.origin)
    source = pydicom.dcmread(paths[0], stop_before_pixels=True)
    warnings = write_dicom_outputs(analysis, analysis.labelmap, image.dicom_sources, tmp_path / "dicom")
    assert warnings == []
    seg_path, sr_path = tmp_path / "dicom" / SEG_FILE, tmp_path / "dicom" / SR_FILE
    assert dciodvfy_errors(seg_path) == [] and dciodvfy_errors(sr_path) == []

    seg = hd.seg.segread(seg_path)
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    assert seg.SeriesInstanceUID != source.SeriesInstanceUID and seg.SOPInstanceUID != source.SOPInstanceUID
    assert seg.PatientID == source.PatientID  # the patient module is copied, not invented
    segments = {int(s.SegmentNumber): s for s in seg.SegmentSequence}
    by_name = {v.name: v for v in analysis.vertebrae}
    assert [s.SegmentLabel for s in segments.values()] == ["T12", "L1", "L2"]
    for s in segments.values():
        assert s.SegmentDescription == status_text(by_name[s.SegmentLabel])
        assert s.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "SCT"
    assert segments[2].SegmentDescription == "fractured, Genant 2 wedge"
    # every frame lies on its source slice, and holds that slice's mask
    uids = [str(h.SOPInstanceUID) for h in image.dicom_sources]
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=list(segments))
    for n, s in segments.items():
        label = next(v.label for v in analysis.vertebrae if v.name == s.SegmentLabel)
        assert np.array_equal(pixels[..., n - 1].astype(bool), analysis.labelmap.array == label)
    for frame in seg.PerFrameFunctionalGroupsSequence:
        ref = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        k = uids.index(ref)
        pos = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
        assert pos == pytest.approx([float(v) for v in image.dicom_sources[k].ImagePositionPatient])

    sr = hd.sr.srread(sr_path)
    assert sr.StudyInstanceUID == source.StudyInstanceUID
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert [str(g.tracking_identifier) for g in groups] == ["T12", "L1", "L2"]
    for g in groups:
        v = by_name[str(g.tracking_identifier)]
        assert g.referenced_segment.referenced_sop_instance_uid == seg.SOPInstanceUID
        grade = [e for e in g.get_qualitative_evaluations() if e.name.value == "VF-GENANT"]
        assert grade[0].value.value == f"VF-G{v.genant.grade}"
        [prob] = g.get_measurements()
        assert prob.value == pytest.approx(v.fracture_probability, abs=1e-6)
    planar = sr.content.get_planar_roi_measurement_groups()
    assert [str(g.tracking_identifier) for g in planar] == ["T12 keypoints", "L1 keypoints", "L2 keypoints"]
    for g in planar:
        v = by_name[str(g.tracking_identifier).split()[0]]
        heights = {m.name.value: m.value for m in g.get_measurements()}
        assert heights == pytest.approx({"VF-HA": v.heights_mm["anterior"], "VF-HM": v.heights_mm["middle"],
                                         "VF-HP": v.heights_mm["posterior"]}, abs=1e-3)
        region = np.asarray(g.roi.value)
        assert region.shape == (7, 3) and np.allclose(region[0], v.keypoints_lps_mm["A_sup"], atol=1e-3)


def test_a_resampled_series_gets_no_dicom_output_and_says_why(tmp_path):
    analysis = make_analysis()
    vol = analysis.image
    nz, ny, nx = vol.array.shape
    z = [vol.origin[2] + vol.spacing[2] * k for k in range(nz) if k != 5]  # one slice missing: resampled
    write_series(tmp_path / "gap", [(vol.origin[0], vol.origin[1], zz) for zz in z], rows=ny, cols=nx,
                 pixel_spacing=(vol.spacing[1], vol.spacing[0]))
    image = read_image(tmp_path / "gap")
    assert image.dicom_sources == [] and "resampled" in image.dicom_note
    from VertebralFractureLib.io.output import write_outputs

    analysis.labelmap = image.volume.with_array(np.zeros(image.volume.array.shape, np.uint8))
    analysis.fracture_map = None
    out = write_outputs(analysis, tmp_path / "out", dicom_sources=image.dicom_sources, dicom_note=image.dicom_note)
    assert not (out / "dicom").exists()
    warnings = json.loads((out / "analysis.json").read_text())["warnings"]
    assert any(w.startswith("DICOM SEG and SR not written: the series was resampled") for w in warnings)


def test_analyze_writes_seg_and_sr_for_the_badly_anonymized_series(shared_data, tmp_path):
    """The shared series with empty UIDs: valid output with generated UIDs and a warning."""
    from VertebralFractureLib import models

    if models.model_status("localization") != "ok" or models.model_status("segmentation") != "ok":
        pytest.skip("stage-1/2 weights not installed")
    series = shared_data / "dicom" / "anonymized-20slice"
    out = tmp_path / "out"
    assert cli.main(["analyze", str(series), "-o", str(out), "--progress", "none", "--device", "cpu"]) == cli.EXIT_OK
    analysis = json.loads((out / "analysis.json").read_text())
    assert any("identifiers are empty" in w for w in analysis["warnings"])
    assert dciodvfy_errors(out / "dicom" / SEG_FILE) == [] and dciodvfy_errors(out / "dicom" / SR_FILE) == []
    seg = hd.seg.segread(out / "dicom" / SEG_FILE)
    outlined = [v["name"] for v in analysis["vertebrae"]]
    assert {s.SegmentLabel for s in seg.SegmentSequence} <= set(outlined) and len(seg.SegmentSequence) >= 1
    source_z = sorted(float(read_image(series).dicom_sources[k].ImagePositionPatient[2]) for k in range(20))
    for frame in seg.PerFrameFunctionalGroupsSequence:  # frames lie on source slices
        assert float(frame.PlanePositionSequence[0].ImagePositionPatient[2]) in source_z


def test_dicom_out_is_on_by_default_and_can_be_turned_off():
    parser = cli.build_parser()
    for command in (["analyze", "ct"], ["batch", "studies"]):
        assert parser.parse_args([*command, "-o", "out"]).dicom_out is True
        assert parser.parse_args([*command, "-o", "out", "--no-dicom-out"]).dicom_out is False
