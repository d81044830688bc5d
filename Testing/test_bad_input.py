"""Bad input gets a clear refusal — never a crash, a made-up result or a lost file.

Every case is generated here (the JPEG 2000 cases copy the shared anonymized series when present)
and goes through ``cli.main`` as a user's command line would, or through a child process where a
signal death must be caught. Each refusal is checked for: its exit code (2 command line, 3 input,
5 output), exactly one line on stderr and no traceback, nothing in or beside the output folder,
and every input file unchanged (hashes before and after).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from VertebralFractureLib import cli
from VertebralFractureLib.errors import InputError
from VertebralFractureLib.io.readers import read_image, write_volume
from VertebralFractureLib.volume import Volume

REPO = Path(__file__).resolve().parents[1]
SPACING = (1.5, 1.5, 2.5)  # x, y, z mm: 48 × 48 × 60 mm for the default phantom


# ---------------------------------------------------------------------------------------- inputs
def ct_array(shape: tuple[int, int, int] = (24, 32, 32)) -> np.ndarray:
    """A small CT in HU (z, y, x): air around a body of soft tissue and fat, a bone block inside."""
    nz, ny, nx = shape
    _, yy, xx = np.mgrid[0:nz, 0:ny, 0:nx]
    r = np.hypot((yy - ny / 2) / (0.45 * ny), (xx - nx / 2) / (0.45 * nx))
    ct = np.full(shape, -1000, np.int16)
    ct[r < 1.0] = -100  # fat
    ct[r < 0.8] = 40  # muscle
    ct[:, ny // 2 - 4 : ny // 2 + 4, nx // 2 - 4 : nx // 2 + 4] = 700  # bone
    return ct


def ct_volume(array: np.ndarray | None = None, spacing=SPACING) -> Volume:
    return Volume(ct_array() if array is None else array, spacing, (-24.0, -24.0, 100.0))


def labels_for(volume: Volume) -> Volume:
    lab = np.zeros(volume.array.shape, np.uint8)
    nz, ny, nx = lab.shape
    lab[2:-2, ny // 2 - 4 : ny // 2 + 4, nx // 2 - 4 : nx // 2 + 4] = 20  # L1
    return volume.with_array(lab)


@pytest.fixture()
def case(tmp_path):
    """A valid CT and its labelmap, and an empty folder that will hold the output."""
    d = tmp_path / "in"
    d.mkdir()
    ct = ct_volume()
    write_volume(ct, d / "ct.nii.gz")
    write_volume(labels_for(ct), d / "seg.nii.gz")
    outs = tmp_path / "outs"
    outs.mkdir()
    return d / "ct.nii.gz", d / "seg.nii.gz", outs


def write_dicom_series(folder: Path, n: int = 24, rows: int = 32, cols: int = 32,
                       pixel_spacing: tuple[float, float] = (1.5, 1.5), slice_mm: float = 2.5) -> list[Path]:
    """An uncompressed CT series of the phantom, with a (fake) patient name and ID in every file."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    hu = ct_array((n, rows, cols))
    series, study, frame = generate_uid(), generate_uid(), generate_uid()
    paths = []
    for k in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality = "CT"
        ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.FrameOfReferenceUID = series, study, frame
        ds.SeriesNumber, ds.SeriesDescription = 2, "Body"
        ds.PatientName, ds.PatientID = "DOE^JANE", "PID-998877"
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [-24.0, -24.0, 100.0 + slice_mm * k]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = list(pixel_spacing)
        ds.SliceThickness = slice_mm
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1.0, -1024.0
        ds.PixelData = (hu[k].astype(np.int32) + 1024).astype(np.int16).tobytes()
        path = folder / f"IM{k:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def nifti_with(path: Path, volume: Volume, patch: dict[int, tuple[str, float]] | None = None) -> Path:
    """Write ``volume`` as NIfTI, then overwrite header fields: ``{offset: (struct format, value)}``."""
    raw = path.with_name("raw.nii")
    write_volume(volume, raw)
    data = bytearray(raw.read_bytes())
    raw.unlink()
    for offset, (fmt, value) in (patch or {}).items():
        struct.pack_into(fmt, data, offset, value)
    path.write_bytes(gzip.compress(bytes(data)) if path.name.endswith(".gz") else bytes(data))
    return path


PIXDIM = 76  # NIfTI-1: pixdim[0..7], float32; pixdim[1] (x spacing) at 80
DIM = 40  # NIfTI-1: dim[0..7], int16


# ---------------------------------------------------------------------------------------- checking
def digest(*paths: Path | None) -> dict[str, str]:
    """sha256 of every file under the given paths (files or folders)."""
    out = {}
    for p in paths:
        if p is None or not (p.exists() or p.is_symlink()):
            continue
        files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def refused(capfd, argv: list, code: int, match: str, inputs: tuple = (), around: Path | None = None) -> str:
    """Run ``cli.main(argv)``; check the exit code, one error line matching ``match``, no traceback,
    inputs unchanged and nothing new in ``around`` (the output's folder). Returns the error line."""
    before = digest(*inputs)
    listing = sorted(os.listdir(around)) if around is not None and around.exists() else None
    got = cli.main([str(a) for a in argv])
    out, err = capfd.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert got == code, f"exit {got}, expected {code}; stderr: {err!r}"
    assert len(lines) == 1, f"expected one line on stderr, got {lines!r}"
    assert lines[0].startswith("vertebral-fracture: error: "), lines
    assert re.search(match, lines[0]), f"{match!r} not in {lines[0]!r}"
    assert "Traceback" not in err + out and "internal error" not in err
    assert "\x1b[" not in err
    assert digest(*inputs) == before, "an input file changed"
    if listing is not None:
        assert sorted(os.listdir(around)) == listing, "something was left in or beside the output folder"
    return lines[0]


# ======================================================================================== 1. output path
def test_analyze_dicom_into_itself_with_overwrite_keeps_the_series(tmp_path, capfd):
    series = tmp_path / "series"
    write_dicom_series(series)
    refused(capfd, ["analyze", series, "-o", series, "--overwrite"], 5, r"is the input itself", (series,), tmp_path)
    assert len(list(series.iterdir())) == 24


def test_analyze_dicom_into_itself_without_overwrite(tmp_path, capfd):
    series = tmp_path / "series"
    write_dicom_series(series, n=3)
    refused(capfd, ["analyze", series, "-o", series], 5, r"is the input itself", (series,), tmp_path)


def test_output_inside_the_input_folder(tmp_path, capfd):
    series = tmp_path / "series"
    write_dicom_series(series, n=3)
    refused(capfd, ["analyze", series, "-o", series / "results"], 5, r"lies inside the input", (series,), tmp_path)


def test_output_holding_the_input_with_overwrite(tmp_path, capfd):
    series = tmp_path / "data" / "series"
    write_dicom_series(series, n=3)
    refused(capfd, ["analyze", series, "-o", tmp_path / "data", "--overwrite"], 5, r"holds the input",
            (series,), tmp_path)


def test_output_is_the_input_file(case, capfd):
    ct, _, _ = case
    refused(capfd, ["analyze", ct, "-o", ct, "--overwrite"], 5, r"is the input itself", (ct,), ct.parent)


def test_grade_output_is_the_segmentation(case, capfd):
    ct, seg, _ = case
    refused(capfd, ["grade", ct, "-s", seg, "-o", seg, "--overwrite"], 5, r"is the input itself", (ct, seg),
            ct.parent)


def test_radiomics_into_the_dicom_folder(tmp_path, case, capfd):
    _, seg, _ = case
    series = tmp_path / "series"
    write_dicom_series(series, n=3)
    refused(capfd, ["radiomics", series, "-s", seg, "-o", series, "--overwrite"], 5, r"is the input itself",
            (series, seg), tmp_path)


def test_demo_into_the_sample_folder(tmp_path, case, capfd, monkeypatch):
    ct, _, _ = case
    monkeypatch.setattr(cli, "sample_path", lambda kind="ct": ct)
    refused(capfd, ["demo", "-o", ct.parent, "--overwrite"], 5, r"holds the input", (ct,), tmp_path)


def test_output_through_a_symlink_to_the_input(tmp_path, capfd):
    series = tmp_path / "series"
    write_dicom_series(series, n=3)
    (tmp_path / "link").symlink_to(series, target_is_directory=True)
    refused(capfd, ["analyze", series, "-o", tmp_path / "link", "--overwrite"], 5, r"is the input itself",
            (series,), tmp_path)


def test_centroid_file_inside_the_output(case, capfd):
    ct, _, outs = case
    (outs / "old").mkdir()
    (outs / "old" / "c.mrk.json").write_text("{}")
    refused(capfd, ["analyze", ct, "--centroids", outs / "old" / "c.mrk.json", "-o", outs / "old", "--overwrite"],
            5, r"holds the input", (ct, outs), outs)


def test_output_parent_is_a_file(case, capfd):
    ct, _, outs = case
    (outs / "notes.txt").write_text("x")
    refused(capfd, ["grade", ct, "-s", case[1], "-o", outs / "notes.txt" / "result"], 5, r"notes.txt is a file",
            (ct, outs), outs)


def test_output_exists_as_a_file_even_with_overwrite(case, capfd):
    ct, seg, outs = case
    (outs / "result").write_text("keep me")
    refused(capfd, ["grade", ct, "-s", seg, "-o", outs / "result", "--overwrite"], 5, r"exists and is not a folder",
            (ct, seg, outs), outs)


def test_output_exists_without_overwrite(case, capfd):
    ct, seg, outs = case
    (outs / "result").mkdir()
    (outs / "result" / "mine.txt").write_text("keep me")
    refused(capfd, ["radiomics", ct, "-s", seg, "-o", outs / "result"], 5, r"already exists \(use --overwrite",
            (ct, seg, outs), outs)


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs /proc (Linux)")
def test_output_folder_not_writable(case, capfd):
    ct, seg, _ = case
    refused(capfd, ["grade", ct, "-s", seg, "-o", "/proc/vertebral-fracture-out"], 5, r"cannot write in /proc",
            (ct, seg))


def test_output_disk_full(case, capfd, monkeypatch):
    from VertebralFractureLib.io import output

    ct, seg, outs = case
    monkeypatch.setattr(output, "MIN_FREE_BYTES", 1 << 60)
    refused(capfd, ["grade", ct, "-s", seg, "-o", outs / "result"], 5, r"MiB free on the disk of .*need at least",
            (ct, seg), outs)


def test_disk_full_while_writing_leaves_nothing(case, capfd, monkeypatch):
    from VertebralFractureLib.io import output

    ct, seg, outs = case

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(output, "_write_label_volume", full)
    refused(capfd, ["grade", ct, "-s", seg, "-o", outs / "r", "--keypoints", "geometric"], 5,
            r"could not write the results to .*: No space left on device", (ct, seg), outs)


def test_radiomics_write_failure_leaves_nothing(case, capfd, monkeypatch):
    from VertebralFractureLib import radiomics

    ct, seg, outs = case

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(radiomics, "write_features_csv", denied)
    refused(capfd, ["radiomics", ct, "-s", seg, "-o", outs / "r"], 5, r"could not write the results .*Permission denied",
            (ct, seg), outs)


# ======================================================================================== 3. the sanity gate
@pytest.mark.parametrize(("value", "name"), [(np.nan, "bad.nii.gz"), (np.inf, "bad.nii"), (-np.inf, "bad.nrrd"),
                                           (np.nan, "bad.mha")])
def test_non_finite_voxels_are_refused(case, capfd, value, name):
    """NIfTI: counted in the file (ITK would read them as 0); NRRD, MetaImage: refused by the gate."""
    _, seg, outs = case
    arr = ct_array().astype(np.float32)
    arr[3, 4, 5] = value
    bad = outs.parent / "in" / name
    write_volume(ct_volume(arr), bad)
    line = refused(capfd, ["grade", bad, "-s", seg, "-o", outs / "r"], 3, rf"'{name}' has 1 voxel\(s\) .* NaN or infinite",
                   (bad, seg), outs)
    assert line.endswith("(they are refused, not filled in)")


@pytest.mark.parametrize(("pixdim", "shown"), [(0.0, "0"), (-1.5, "-1.5")])
def test_zero_or_negative_nifti_spacing(case, capfd, pixdim, shown):
    _, seg, outs = case
    bad = nifti_with(outs.parent / "in" / "bad.nii", ct_volume(), {PIXDIM + 4: ("<f", pixdim)})
    refused(capfd, ["analyze", bad, "-o", outs / "r"], 3, rf"spacing of {shown} mm \(pixdim\[1\]\)", (bad,), outs)


def test_zero_spacing_metaimage(case, capfd):
    _, _, outs = case
    bad = outs.parent / "in" / "bad.mha"
    header = "ObjectType = Image\nNDims = 3\nDimSize = 32 32 24\nElementSpacing = 1.5 0 2.5\n" \
             "ElementType = MET_SHORT\nElementDataFile = LOCAL\n"
    bad.write_bytes(header.encode() + ct_array().tobytes())
    refused(capfd, ["analyze", bad, "-o", outs / "r"], 3, r"spacing of 0 mm \(ElementSpacing\[1\]\)", (bad,), outs)


def test_zero_spacing_nrrd(case, capfd):
    _, _, outs = case
    bad = outs.parent / "in" / "bad.nrrd"
    header = ("NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\nsizes: 32 32 24\n"
              "space directions: (1.5,0,0) (0,1.5,0) (0,0,0)\nencoding: raw\nendian: little\n\n")
    bad.write_bytes(header.encode() + ct_array().tobytes())
    refused(capfd, ["analyze", bad, "-o", outs / "r"], 3, r"spacing of 0 mm \(space directions, axis 3\)",
            (bad,), outs)


@pytest.mark.parametrize(("spacing", "match"), [
    ((0.05, 0.05, 0.05), r"spacing of 0.05 mm along x, outside the 0.1–10 mm"),
    ((50.0, 50.0, 50.0), r"spacing of 50 mm along x, outside the 0.1–10 mm"),
])
def test_implausible_spacing(case, capfd, spacing, match):
    _, _, outs = case
    bad = outs.parent / "in" / "bad.nii.gz"
    write_volume(ct_volume(spacing=spacing), bad)
    start = time.perf_counter()
    refused(capfd, ["analyze", bad, "-o", outs / "r"], 3, match, (bad,), outs)
    assert time.perf_counter() - start < 10.0  # refused, not resampled to hundreds of GiB


def test_tiny_3x3x3_image(case, capfd):
    _, _, outs = case
    bad = outs.parent / "in" / "tiny.nii.gz"
    write_volume(Volume(ct_array((3, 3, 3)), (1.0, 1.0, 1.0)), bad)
    refused(capfd, ["analyze", bad, "-o", outs / "r"], 3, r"too small to hold a vertebra: 3 voxel\(s\), 3.0 mm along x",
            (bad,), outs)


def test_three_slice_dicom_ct(case, capfd):
    _, _, outs = case
    series = outs.parent / "three"
    write_dicom_series(series, n=3, slice_mm=1.0)
    line = refused(capfd, ["analyze", series, "-o", outs / "r"], 3, r"too small to hold a vertebra: 3 voxel\(s\), "
                   r"3.0 mm along z", (series,), outs)
    assert "DOE" not in line and "998877" not in line


def test_field_of_view_beyond_a_human(case, capfd):
    _, _, outs = case
    bad = outs.parent / "in" / "long.nii.gz"
    write_volume(Volume(ct_array((300, 16, 16)), (4.0, 4.0, 8.0)), bad)
    refused(capfd, ["analyze", bad, "-o", outs / "r"], 3, r"spans 2400 mm along z", (bad,), outs)


def test_constant_image(case, capfd):
    _, seg, outs = case
    bad = outs.parent / "in" / "flat.nii.gz"
    write_volume(ct_volume(np.full((24, 32, 32), -1000, np.int16)), bad)
    refused(capfd, ["radiomics", bad, "-s", seg, "-o", outs / "r"], 3, r"constant image \(every voxel is -1000\)",
            (bad, seg), outs)


def test_mr_like_image_without_negative_values(case, capfd):
    _, seg, outs = case
    rng = np.random.default_rng(0)
    bad = outs.parent / "in" / "t1.nii.gz"
    write_volume(ct_volume(rng.integers(0, 4000, (24, 32, 32)).astype(np.int16)), bad)
    refused(capfd, ["grade", bad, "-s", seg, "-o", outs / "r"], 3,
            r"does not look like a CT in Hounsfield units: its values run from 0 to 399\d with none below 0",
            (bad, seg), outs)


def test_image_without_bone(case, capfd):
    _, _, outs = case
    arr = ct_array()
    arr[arr > 100] = 40
    bad = outs.parent / "in" / "soft.nii.gz"
    write_volume(ct_volume(arr), bad)
    refused(capfd, ["analyze", bad, "-o", outs / "r"], 3, r"shows no bone: no voxel reaches 200 HU", (bad,), outs)


def test_dicom_with_zero_pixel_spacing(case, capfd):
    _, _, outs = case
    series = outs.parent / "zero"
    write_dicom_series(series, n=4, pixel_spacing=(0.0, 0.0))
    line = refused(capfd, ["analyze", series, "-o", outs / "r"], 3, r"pixel spacing of 0×0 mm", (series,), outs)
    assert "DOE" not in line


def test_dicom_declaring_huge_slices(case, capfd):
    """Rows and Columns of 60000 in three small files: refused before a stack is allocated."""
    import pydicom

    _, _, outs = case
    series = outs.parent / "huge"
    for path in write_dicom_series(series, n=3):
        ds = pydicom.dcmread(path)
        ds.Rows = ds.Columns = 60000
        ds.save_as(path, enforce_file_format=True)
    refused(capfd, ["analyze", series, "-o", outs / "r"], 3, r"3 slices of 60000×60000 pixels \(10,800,000,000 voxels\)",
            (series,), outs)


def test_segmentation_without_any_label(case, capfd):
    ct, _, outs = case
    empty = outs.parent / "in" / "empty.nii.gz"
    write_volume(ct_volume().with_array(np.zeros((24, 32, 32), np.uint8)), empty)
    refused(capfd, ["grade", ct, "-s", empty, "-o", outs / "r"], 3, r"'empty.nii.gz' holds no label", (ct, empty), outs)


def test_segmentation_alone_with_bad_spacing(case, capfd):
    _, _, outs = case
    seg = outs.parent / "in" / "seg50.nii.gz"
    write_volume(labels_for(ct_volume(spacing=(50.0, 50.0, 50.0))), seg)
    refused(capfd, ["grade", "-s", seg, "-o", outs / "r"], 3, r"spacing of 50 mm", (seg,), outs)


# ======================================================================================== 4. declared size
def test_metaimage_declaring_2_gib_in_95_bytes(case, capfd):
    _, _, outs = case
    bad = outs.parent / "in" / "huge.mha"
    bad.write_text("NDims = 3\nDimSize = 1024 1024 1024\nElementType = MET_SHORT\nElementDataFile = LOCAL\n")
    assert bad.stat().st_size < 100
    start = time.perf_counter()
    refused(capfd, ["analyze", bad, "-o", outs / "r"], 3,
            r"'huge.mha' is truncated or its header is wrong: .*1024×1024×1024 values of 2 byte\(s\) \(2.0 GiB\)",
            (bad,), outs)
    assert time.perf_counter() - start < 5.0


def test_nrrd_declaring_more_than_the_file_holds(case, capfd):
    _, _, outs = case
    bad = outs.parent / "in" / "huge.nrrd"
    bad.write_bytes(b"NRRD0004\ntype: short\ndimension: 3\nsizes: 1024 1024 1024\nencoding: raw\n"
                    b"endian: little\n\n" + b"\0" * 1000)
    refused(capfd, ["analyze", bad, "-o", outs / "r"], 3, r"truncated or its header is wrong", (bad,), outs)


def test_gzip_nrrd_declaring_more_than_deflate_can_hold(case, capfd):
    _, _, outs = case
    bad = outs.parent / "in" / "bomb.nrrd"
    bad.write_bytes(b"NRRD0004\ntype: short\ndimension: 3\nsizes: 1024 1024 512\nencoding: gzip\n"
                    b"endian: little\n\n" + gzip.compress(b"\0" * 4096))
    refused(capfd, ["analyze", bad, "-o", outs / "r"], 3, r"compressed data in the file can hold", (bad,), outs)


def test_nifti_declaring_more_than_the_file_holds(case, capfd):
    _, _, outs = case
    bad = nifti_with(outs.parent / "in" / "big.nii", ct_volume(), {DIM + 2: ("<h", 1024), DIM + 4: ("<h", 1024),
                                                                   DIM + 6: ("<h", 1024)})
    refused(capfd, ["analyze", bad, "-o", outs / "r"], 3, r"'big.nii' is truncated: its header needs 2147484000 bytes",
            (bad,), outs)


def test_gzipped_nifti_declaring_more_than_deflate_can_hold(case, capfd):
    _, _, outs = case
    bad = nifti_with(outs.parent / "in" / "big.nii.gz", ct_volume(), {DIM + 2: ("<h", 1024), DIM + 4: ("<h", 1024),
                                                                      DIM + 6: ("<h", 1024)})
    refused(capfd, ["analyze", bad, "-o", outs / "r"], 3, r"more than its \d+ compressed bytes can hold", (bad,), outs)


def test_header_over_the_voxel_limit(case, capfd):
    _, _, outs = case
    bad = outs.parent / "in" / "giant.mha"
    bad.write_text("ObjectType = Image\nNDims = 3\nDimSize = 2000 2000 2000\nElementType = MET_UCHAR\n"
                   "ElementDataFile = LOCAL\n")
    refused(capfd, ["analyze", bad, "-o", outs / "r"], 3, r"declares 8,000,000,000 voxels, more than", (bad,), outs)


def test_metaimage_with_a_missing_data_file(case, capfd):
    _, _, outs = case
    bad = outs.parent / "in" / "detached.mhd"
    bad.write_text("ObjectType = Image\nNDims = 3\nDimSize = 32 32 24\nElementSpacing = 1.5 1.5 2.5\n"
                   "ElementType = MET_SHORT\nElementDataFile = detached.raw\n")
    refused(capfd, ["analyze", bad, "-o", outs / "r"], 3, r"data file 'detached.raw' .* does not exist", (bad,), outs)


# ======================================================================================== broken files
def test_empty_file(case, capfd):
    _, _, outs = case
    bad = outs.parent / "in" / "empty.nii.gz"
    bad.write_bytes(b"")
    refused(capfd, ["analyze", bad, "-o", outs / "r"], 3, r"'empty.nii.gz'", (bad,), outs)


def test_truncated_gzip(case, capfd):
    ct, seg, outs = case
    bad = outs.parent / "in" / "cut.nii.gz"
    data = ct.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    refused(capfd, ["grade", bad, "-s", seg, "-o", outs / "r"], 3, r"'cut.nii.gz' is damaged or truncated",
            (bad, seg), outs)


def test_text_file_named_nii_gz(case, capfd):
    _, _, outs = case
    bad = outs.parent / "in" / "notes.nii.gz"
    bad.write_text("patient list\n" * 40)
    refused(capfd, ["analyze", bad, "-o", outs / "r"], 3, r"'notes.nii.gz'", (bad,), outs)


def test_2d_image(case, capfd):
    import SimpleITK as sitk

    _, _, outs = case
    bad = outs.parent / "in" / "xray.mha"
    sitk.WriteImage(sitk.GetImageFromArray(ct_array()[0]), str(bad))
    refused(capfd, ["analyze", bad, "-o", outs / "r"], 3, r"is a 2D image \(size 32×32\)", (bad,), outs)


def test_4d_image(case, capfd):
    import SimpleITK as sitk

    _, _, outs = case
    bad = outs.parent / "in" / "dyn.nii.gz"
    sitk.WriteImage(sitk.Image([32, 32, 24, 3], sitk.sitkInt16), str(bad))
    refused(capfd, ["analyze", bad, "-o", outs / "r"], 3, r"is a 4D image \(size 32×32×24×3\)", (bad,), outs)


def test_rgb_image(case, capfd):
    import SimpleITK as sitk

    _, _, outs = case
    bad = outs.parent / "in" / "colour.nrrd"
    sitk.WriteImage(sitk.Image([32, 32, 24], sitk.sitkVectorUInt8, 3), str(bad))
    refused(capfd, ["analyze", bad, "-o", outs / "r"], 3, r"multi-component image \(3 values per voxel", (bad,), outs)


def test_folder_without_dicom(case, capfd):
    _, _, outs = case
    folder = outs.parent / "docs"
    folder.mkdir()
    (folder / "readme.txt").write_text("no images here")
    (folder / "scan.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 200)
    refused(capfd, ["analyze", folder, "-o", outs / "r"], 3, r"no DICOM files in 'docs'", (folder,), outs)


def test_empty_folder(case, capfd):
    _, _, outs = case
    folder = outs.parent / "nothing"
    folder.mkdir()
    refused(capfd, ["analyze", folder, "-o", outs / "r"], 3, r"no DICOM files in 'nothing' \(0 file", (folder,), outs)


def test_zip_with_path_traversal(case, capfd):
    _, _, outs = case
    archive = outs.parent / "in" / "series.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok/IM0001.dcm", b"\0" * 200)
        zf.writestr("../../escaped.txt", b"gotcha")
    refused(capfd, ["analyze", archive, "-o", outs / "r"], 3, r"unsafe zip member '\.\./\.\./escaped.txt'",
            (archive,), outs)
    import tempfile

    assert not any(Path(d, "escaped.txt").exists() for d in ("/", tempfile.gettempdir(), outs.parent.parent))


def test_missing_input(case, capfd):
    _, _, outs = case
    refused(capfd, ["analyze", outs.parent / "in" / "gone.nii.gz", "-o", outs / "r"], 3, r"does not exist", (), outs)


def test_unknown_format(case, capfd):
    _, _, outs = case
    bad = outs.parent / "in" / "photo.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    refused(capfd, ["analyze", bad, "-o", outs / "r"], 3, r"unknown image format: 'photo.png'", (bad,), outs)


def test_segmentation_of_another_size(case, capfd):
    ct, _, outs = case
    seg = outs.parent / "in" / "small.nii.gz"
    write_volume(labels_for(Volume(ct_array((20, 32, 32)), SPACING, (-24.0, -24.0, 100.0))), seg)
    refused(capfd, ["radiomics", ct, "-s", seg, "-o", outs / "r"], 3, r"labelmap 'small.nii.gz' has size 32×32×20",
            (ct, seg), outs)


def test_segmentation_that_is_a_ct(case, capfd):
    ct, _, outs = case
    refused(capfd, ["grade", ct, "-s", ct, "-o", outs / "r"], 3, r"negative values .* is this a CT image", (ct,), outs)


def test_bad_command_line(case, capfd):
    ct, _, outs = case
    got = cli.main(["analyze", str(ct), "-o", str(outs / "r"), "--fracture-threshold", "2"])
    err = capfd.readouterr().err
    assert got == 2 and "Traceback" not in err and "must be between 0 and 1" in err
    assert os.listdir(outs) == []


# ======================================================================================== 1. DICOM decoding
def _python_cli(*argv) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "VertebralFractureLib", *map(str, argv), "--progress", "none"],
                          capture_output=True, text=True, env=env, timeout=300)


def _corrupt_j2k_header(path: Path, seed: int) -> None:
    """Overwrite the JPEG 2000 main header after the SOC/SIZ markers: the stream that crashed GDCM."""
    data = bytearray(path.read_bytes())
    start = data.find(b"\xff\x4f\xff\x51")
    assert start > 0, "no JPEG 2000 code stream in the file"
    rng = np.random.default_rng(seed)
    data[start + 4 : start + 60] = rng.integers(0, 256, 56, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def j2k_series(shared_data, tmp_path_factory):
    """A writable copy of the shared JPEG 2000 lossless series and a labelmap on its grid."""
    src = shared_data / "dicom" / "anonymized-20slice"
    if not src.is_dir():
        pytest.skip("the anonymized JPEG 2000 series is not in the shared data")
    d = tmp_path_factory.mktemp("j2k")
    clean = d / "clean"
    shutil.copytree(src, clean)
    for f in clean.iterdir():
        f.chmod(0o644)
    volume = read_image(clean).volume
    lab = np.zeros(volume.array.shape, np.uint8)
    lab[4:16, 200:260, 230:290] = 20
    write_volume(volume.with_array(lab), d / "seg.nii.gz")
    return clean, d / "seg.nii.gz"


def test_one_corrupt_jpeg2000_slice_is_skipped_and_named(j2k_series, tmp_path):
    clean, seg = j2k_series
    series = tmp_path / "series"
    shutil.copytree(clean, series)
    victim = sorted(series.iterdir())[9]
    _corrupt_j2k_header(victim, seed=1)
    before = digest(series, seg)
    proc = _python_cli("radiomics", series, "-s", seg, "-o", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "features.csv").is_file()
    lines = proc.stderr.splitlines()
    assert all(ln.startswith("vertebral-fracture: warning: ") for ln in lines), lines
    skipped = [ln for ln in lines if "could not be decoded and were skipped" in ln]
    assert len(skipped) == 1 and victim.name in skipped[0]
    assert "Traceback" not in proc.stderr and "terminate called" not in proc.stderr
    assert digest(series, seg) == before


def test_every_slice_garbage_is_a_refusal_not_a_crash(j2k_series, tmp_path):
    clean, seg = j2k_series
    series = tmp_path / "series"
    shutil.copytree(clean, series)
    for k, f in enumerate(sorted(series.iterdir())):
        _corrupt_j2k_header(f, seed=k)
    before = digest(series, seg)
    proc = _python_cli("grade", series, "-s", seg, "-o", tmp_path / "out")
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 3, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("vertebral-fracture: error: 20 of the 20 slices"), lines
    assert "could not be decoded, 0 left" in lines[0]
    assert not (tmp_path / "out").exists() and digest(series, seg) == before


def test_reader_names_the_corrupt_slice_without_patient_data(tmp_path):
    """Uncompressed pixel data cut short: the slice is skipped and named by its file only."""
    paths = write_dicom_series(tmp_path / "s", n=6)
    paths[2].write_bytes(paths[2].read_bytes()[:-300])
    loaded = read_image(tmp_path / "s")
    text = " ".join(loaded.warnings)
    assert "1 slice(s) of series 2 'Body' could not be decoded and were skipped: IM0002.dcm" in text
    assert "DOE" not in text and "998877" not in text and loaded.volume.array.shape == (6, 32, 32)


def test_decoder_crash_in_the_child_costs_only_that_frame(tmp_path, monkeypatch):
    """A decoder that kills its process (SIGABRT) on one frame: that frame is named, the others decode."""
    from VertebralFractureLib.io import dicom_decode

    paths = write_dicom_series(tmp_path / "s", n=3)
    child = tmp_path / "aborting_decoder.py"
    child.write_text(
        "import json, os, signal, sys\nimport numpy as np\n"
        "for k, job in enumerate(json.loads(sys.stdin.read())):\n"
        "    if job['path'].endswith('IM0001.dcm'):\n"
        "        os.kill(os.getpid(), signal.SIGABRT)\n"
        "    np.save(os.path.join(sys.argv[1], f'{k}.npy'), np.full((32, 32), 7, np.int16))\n"
        "    print(json.dumps({'index': k}), flush=True)\n"
    )
    real_run = subprocess.run
    monkeypatch.setattr(dicom_decode.subprocess, "run",
                        lambda cmd, **kw: real_run([sys.executable, str(child), cmd[-1]], **kw))
    results = dicom_decode._decode_in_children([dicom_decode.Frame(p, None, False) for p in paths])
    assert results[1] == "the GDCM decoder crashed on it (SIGABRT)"
    for got in (results[0], results[2]):  # before and after the crash (a second child)
        assert isinstance(got, np.ndarray) and got.shape == (32, 32) and np.all(got == 7)


# ======================================================================================== 5. library messages
def test_itk_warning_becomes_one_note_of_ours(tmp_path, capfd):
    path = nifti_with(tmp_path / "scaled.nii", ct_volume(), {280: ("<f", -3.0)})  # sform x scale ≠ pixdim
    loaded = read_image(path)
    err = capfd.readouterr().err
    assert err == "", f"ITK printed on stderr: {err!r}"
    notes = [w for w in loaded.warnings if w.startswith("ITK")]
    assert notes == ["ITK, reading 'scaled.nii': NiftiImageIO: scaled.nii has unexpected scales in sform"]


def test_vtk_colour_log_lines_become_one_line(capfd):
    from vtkmodules.vtkIOImage import vtkPNGReader

    from VertebralFractureLib.thirdparty import native_messages, summary

    printed: list[str] = []
    with native_messages(printed):
        reader = vtkPNGReader()
        reader.SetFileName("/nonexistent/picture.png")
        reader.Update()
    assert capfd.readouterr().err == ""
    assert printed[0] == "vtkPNGReader: Unable to open file picture.png"  # no folder names
    line = summary(printed, "while testing")
    assert line.startswith("VTK said while testing: vtkPNGReader: Unable to open file") and "\n" not in line
    assert "\x1b" not in line and "0x" not in line and ".cxx" not in line


def test_clean_drops_colour_codes_locations_and_addresses():
    from VertebralFractureLib.thirdparty import split_messages

    text = ("\x1b[0m\x1b[33m2026-01-02 10:00:00.000 (   0.034s) [main thread     ]vtkEGLRenderWindow.cxx:353   WARN| "
            "vtkEGLRenderWindow (0x5634a1b2c3d0): EGL device index: 0 could not be initialized.\x1b[0m\n"
            "WARNING: In /build/ITK/Modules/IO/NIFTI/src/itkNiftiImageIO.cxx, line 2008\n"
            "NiftiImageIO (0x55ebd88f16d0): /data/DOE_JANE/a.nii has unexpected scales in sform\n\n"
            "WARNING: In /build/ITK/Modules/IO/NIFTI/src/itkNiftiImageIO.cxx, line 2008\n"
            "NiftiImageIO (0x55ebd88f16d0): /data/DOE_JANE/a.nii has unexpected scales in sform\n\n")
    assert split_messages(text) == [
        "vtkEGLRenderWindow: EGL device index: 0 could not be initialized.",
        "NiftiImageIO: a.nii has unexpected scales in sform",
    ]


def test_python_warnings_of_a_command_are_one_line_each(capfd, monkeypatch):
    import warnings

    def noisy(args, progress):
        for _ in range(3):
            warnings.warn("a library's\nmultiline   warning", UserWarning, stacklevel=1)
        warnings.warn("for developers", DeprecationWarning, stacklevel=1)
        return cli.EXIT_OK

    monkeypatch.setattr(cli, "cmd_info", noisy)
    assert cli.main(["info"]) == cli.EXIT_OK
    err = capfd.readouterr().err
    assert err.splitlines() == ["vertebral-fracture: warning: UserWarning in test_bad_input: a library's multiline warning"]


def test_reader_refusal_raises_input_error_for_library_users(tmp_path):
    """The same checks hold for a library caller of the reader (no command line involved)."""
    bad = tmp_path / "huge.mha"
    bad.write_text("ObjectType = Image\nNDims = 3\nDimSize = 1024 1024 1024\nElementType = MET_SHORT\n"
                   "ElementDataFile = LOCAL\n")
    with pytest.raises(InputError, match="truncated or its header is wrong"):
        read_image(bad)


# ======================================================================================== 8. point lists, 9. radiomics
@pytest.mark.parametrize(("points", "match"), [
    ([("L1", (0, 0, 130)), ("L2", (0.1, 0, 130))], r"c.mrk.json: L1 and L2 are 0.1 mm apart — one vertebra named twice"),
    ([("L2", (0, 0, 148)), ("L1", (0, 0, 124))], r"c.mrk.json: L2 lies 24 mm above L1: names out of cranio-caudal order"),
])
def test_implausible_point_lists_are_refused_before_any_work(case, capfd, points, match):
    from VertebralFractureLib.io.slicer_files import write_markups_json

    ct, _, outs = case
    pts = outs.parent / "in" / "c.mrk.json"
    write_markups_json(pts, points, "Vertebra centroids")
    refused(capfd, ["analyze", ct, "--centroids", pts, "-o", outs / "r"], 3, match, (ct, pts), outs)


def test_radiomics_refuses_a_labelmap_without_vertebra_labels(case, capfd):
    ct, seg, outs = case
    vol = read_image(seg).volume
    arr = vol.array.copy()
    arr[arr > 0] = 40
    other = outs.parent / "in" / "organs.nii.gz"
    write_volume(vol.with_array(arr.astype(np.uint8)), other)
    refused(capfd, ["radiomics", ct, "-s", other, "-o", outs / "r"], 3,
            r"'organs.nii.gz' holds no vertebra label \(VerSe 1–25 or 28\)", (ct, other), outs)


def test_radiomics_write_failure_keeps_the_earlier_result(case, capfd, monkeypatch):
    """With --overwrite the earlier folder is replaced only by a complete new one."""
    from VertebralFractureLib import radiomics

    ct, seg, outs = case
    old = outs / "r"
    old.mkdir()
    (old / "features.csv").write_text("label,name\n20,L1\n")

    def full(path, *args, **kwargs):
        Path(path).write_text("label,na")  # a truncated file, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(radiomics, "write_features_csv", full)
    refused(capfd, ["radiomics", ct, "-s", seg, "-o", old, "--overwrite"], 5,
            r"could not write the results .*No space left on device", (ct, seg, old), outs)
    assert (old / "features.csv").read_text() == "label,name\n20,L1\n"


def test_bench_refuses_what_analyze_refuses(case, capfd):
    _, _, outs = case
    flat = outs.parent / "in" / "flat.nii.gz"
    write_volume(Volume(np.full((20, 32, 32), -1000, np.int16), (1.0, 1.0, 2.0)), flat)
    refused(capfd, ["bench", flat], 3, r"flat.nii.gz.*constant image", (flat,), outs)


# ======================================================================================== 10. messages
@pytest.mark.parametrize(("content", "match"), [
    (b'{"a": 1}', r"p.mrk.json holds JSON but no 'markups' list: a Slicer point list \(.mrk.json"),
    (gzip.compress(b"\x00" * 400), r"p.mrk.json is not a text file \(an image or other binary data\?\)"),
    (b'{"markups": [', r"p.mrk.json is not valid JSON \(line 1, column 14"),
])
def test_a_point_list_that_is_not_one_is_named_with_the_fix(case, capfd, content, match):
    ct, _, outs = case
    pts = outs.parent / "in" / "p.mrk.json"
    pts.write_bytes(content)
    refused(capfd, ["analyze", ct, "--centroids", pts, "-o", outs / "r"], 3, match, (ct, pts), outs)


def test_non_integer_vertebra_labels_are_a_command_line_error(case, capfd):
    ct, seg, outs = case
    refused(capfd, ["grade", ct, "-s", seg, "--vertebra", "L1", "--vertebra-labels", "a,b", "-o", outs / "r"], 2,
            r"--vertebra-labels takes comma-separated integer labels .*\(got 'a,b'\)", (ct, seg), outs)


def test_sheared_image_is_refused_with_the_fix(case, capfd):
    import SimpleITK as sitk

    _, _, outs = case
    img = sitk.GetImageFromArray(ct_array())
    img.SetSpacing(SPACING)
    img.SetDirection((1.0, 0.5, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))  # x and y axes not at right angles
    bad = outs.parent / "in" / "sheared.nrrd"
    sitk.WriteImage(img, str(bad))
    refused(capfd, ["analyze", bad, "-o", outs / "r"], 3, r"'sheared.nrrd' has axes that are not at right angles",
            (bad,), outs)
