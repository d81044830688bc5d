"""DICOM series reading: series choice, slice order, gaps, spacing, tilt, corrupt files, zips, real data.

Synthetic series are written with pydicom; their voxels hold a linear function of the LPS position
(``_field``), so every voxel of the result can be checked against the world position it claims:
linear interpolation reproduces a linear field exactly (up to the int16 rounding of HU).
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from factories import oblique_direction

from VertebralFractureLib.errors import InputError
from VertebralFractureLib.io.dicom import read_dicom
from VertebralFractureLib.io.readers import read_image

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
ROWS, COLS = 12, 10
PIXEL_SPACING = (1.0, 0.5)  # DICOM order: between rows (y), between columns (x)


def _field(w: np.ndarray) -> np.ndarray:
    """HU at LPS points (..., 3): linear, whole numbers on the default grid."""
    return 2.0 * w[..., 0] - 3.0 * w[..., 1] + 5.0 * w[..., 2] + 100.0


def write_series(
    folder: Path,
    positions: Sequence[Sequence[float]],
    orientation: Sequence[float] = AXIAL,
    modality: str = "CT",
    series_uid: str | None = None,
    study_uid: str | None = None,
    frame_of_reference: str | None = None,
    series_number: int | None = 3,
    description: str = "Body 1.0",
    rows: int = ROWS,
    cols: int = COLS,
    pixel_spacing: tuple[float, float] = PIXEL_SPACING,
    slope: float = 1.0,
    intercept: float = -1024.0,
    field: Callable[[np.ndarray], np.ndarray] = _field,
    names: Sequence[str] | None = None,
    instance_numbers: Sequence[int] | None = None,
) -> list[Path]:
    """Write one uncompressed slice per position; UIDs default to fresh ones ("" writes an empty UID)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid() if series_uid is None else series_uid
    study_uid = generate_uid() if study_uid is None else study_uid
    frame_of_reference = generate_uid() if frame_of_reference is None else frame_of_reference
    r, c = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    jj, ii = np.mgrid[0:rows, 0:cols]
    paths = []
    for k, pos in enumerate(positions):
        world = np.asarray(pos, float) + ii[..., None] * pixel_spacing[1] * r + jj[..., None] * pixel_spacing[0] * c
        stored = np.rint((field(world) - intercept) / slope).astype(np.int16)
        sop_class = CTImageStorage if modality in ("CT", "") else MRImageStorage
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
        ds.Modality = modality
        ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.FrameOfReferenceUID = series_uid, study_uid, frame_of_reference
        ds.SeriesNumber = series_number
        ds.SeriesDescription = description
        ds.PatientName, ds.PatientID = "SECRET^NAME", "SECRET-ID-123"
        ds.InstanceNumber = instance_numbers[k] if instance_numbers is not None else k + 1
        ds.ImagePositionPatient = [float(v) for v in pos]
        ds.ImageOrientationPatient = [float(v) for v in orientation]
        ds.PixelSpacing = list(pixel_spacing)
        ds.SliceThickness = 1.0
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        ds.PixelData = stored.tobytes()
        path = folder / (names[k] if names is not None else f"slice{k:03d}.dcm")
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def axial_positions(z: Sequence[float], x0: float = -3.0, y0: float = 4.0) -> list[tuple[float, float, float]]:
    return [(x0, y0, float(v)) for v in z]


def assert_world_values(volume, atol: float = 0.51, inside: np.ndarray | None = None) -> None:
    """Every voxel holds the field at the LPS position the volume's geometry gives it."""
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in volume.array.shape], indexing="ij")
    world = volume.index_to_lps(np.stack([xx, yy, zz], axis=-1).astype(float))
    err = np.abs(volume.array.astype(float) - _field(world))
    if inside is not None:
        err = err[inside]
    assert err.size > 0
    assert err.max() <= atol, f"largest difference {err.max():.3f} HU"


# ----------------------------------------------------------------------------------- regular series
def test_slices_ordered_by_position_not_instance_number_or_name(tmp_path):
    z = [10.0, 12.0, 14.0, 16.0, 18.0]
    # file names and instance numbers both run opposite to the positions, shuffled
    write_series(tmp_path, axial_positions([14.0, 10.0, 18.0, 12.0, 16.0]),
                 names=["a.dcm", "e.dcm", "b.dcm", "d.dcm", "c.dcm"], instance_numbers=[3, 5, 1, 4, 2])
    loaded = read_dicom(tmp_path)
    v = loaded.volume
    assert loaded.warnings == []
    assert loaded.source_format == "dicom"
    assert v.array.shape == (5, ROWS, COLS) and v.array.dtype == np.int16
    assert v.spacing == pytest.approx((0.5, 1.0, 2.0))
    assert v.origin == pytest.approx((-3.0, 4.0, z[0]))
    np.testing.assert_allclose(v.direction, np.eye(3), atol=1e-12)
    assert_world_values(v, atol=0.0)
    assert "DICOM CT series 3 'Body 1.0', 5 slices" in loaded.description
    assert "SECRET" not in loaded.description


def test_oblique_series_direction_from_orientation(tmp_path):
    rot = oblique_direction(25.0)
    iop = tuple(rot[:, 0]) + tuple(rot[:, 1])
    origin = np.array([5.0, -7.0, 30.0])
    positions = [origin + k * 1.5 * rot[:, 2] for k in range(6)]
    write_series(tmp_path, positions[::-1], orientation=iop)
    v = read_dicom(tmp_path).volume
    np.testing.assert_allclose(v.direction, rot, atol=1e-6)
    np.testing.assert_allclose(v.origin, origin, atol=1e-5)
    assert v.spacing == pytest.approx((0.5, 1.0, 1.5))
    assert_world_values(v)


def test_rescale_slope_gives_float_hu(tmp_path):
    write_series(tmp_path, axial_positions([0, 1, 2]), slope=0.5, intercept=-1000.0)
    v = read_dicom(tmp_path).volume
    assert v.array.dtype == np.float32
    assert_world_values(v, atol=0.26)


@pytest.mark.parametrize(("syntax", "word"), [("RLELossless", "RLE Lossless"), ("JPEG2000Lossless", "JPEG 2000")])
def test_compressed_series_decodes(tmp_path, syntax, word):
    import pydicom
    import pydicom.uid

    uid = getattr(pydicom.uid, syntax)
    paths = write_series(tmp_path, axial_positions([0, 2, 4]), rows=64, cols=48)  # J2K needs ≥ 32 pixels
    for p in paths:
        ds = pydicom.dcmread(p)
        try:
            ds.compress(uid)
        except (RuntimeError, NotImplementedError) as err:  # no encoder here; decoding is what is tested
            pytest.skip(f"no {word} encoder: {err}")
        ds.save_as(p, enforce_file_format=True)
    assert pydicom.dcmread(paths[0]).file_meta.TransferSyntaxUID == uid
    loaded = read_dicom(tmp_path)
    assert word in loaded.description
    assert_world_values(loaded.volume, atol=0.0)


def test_enhanced_multiframe_ct(tmp_path):
    """One file with per-frame positions (Enhanced CT) reads like a series of single files."""
    import pydicom
    from pydicom.dataset import Dataset

    write_series(tmp_path / "single", axial_positions([0, 2, 4, 6]))
    files = sorted((tmp_path / "single").glob("*.dcm"))
    frames = [pydicom.dcmread(f) for f in files]
    ds = frames[0]
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"
    ds.NumberOfFrames = len(frames)
    ds.PixelData = b"".join(f.PixelData for f in frames[::-1])  # stored in reverse order
    per_frame = []
    for f in frames[::-1]:
        item, pos = Dataset(), Dataset()
        pos.ImagePositionPatient = f.ImagePositionPatient
        item.PlanePositionSequence = [pos]
        per_frame.append(item)
    shared, orient, measures, rescale = Dataset(), Dataset(), Dataset(), Dataset()
    orient.ImageOrientationPatient = list(AXIAL)
    measures.PixelSpacing = list(PIXEL_SPACING)
    rescale.RescaleSlope, rescale.RescaleIntercept = 1, -1024
    shared.PlaneOrientationSequence, shared.PixelMeasuresSequence = [orient], [measures]
    shared.PixelValueTransformationSequence = [rescale]
    ds.SharedFunctionalGroupsSequence, ds.PerFrameFunctionalGroupsSequence = [shared], per_frame
    for kw in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "RescaleSlope", "RescaleIntercept"):
        delattr(ds, kw)
    (tmp_path / "multi").mkdir()
    ds.save_as(tmp_path / "multi" / "enhanced.dcm", enforce_file_format=True)
    v = read_dicom(tmp_path / "multi").volume
    assert v.array.shape == (4, ROWS, COLS)
    assert v.origin == pytest.approx((-3.0, 4.0, 0.0))
    assert_world_values(v, atol=0.0)


# ----------------------------------------------------------------------------------- series choice
def test_empty_uids_are_grouped_by_geometry_and_series_number(tmp_path):
    """Badly anonymized data: every UID empty; two series told apart by orientation/size/number."""
    write_series(tmp_path, axial_positions(range(0, 12, 2)), series_uid="", study_uid="", frame_of_reference="",
                 series_number=2, description="Axial", names=[f"a{k}.dcm" for k in range(6)])
    coronal = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
    write_series(tmp_path, [(0.0, float(y), 20.0) for y in range(3)], orientation=coronal, series_uid="",
                 study_uid="", frame_of_reference="", series_number=2, description="Axial",
                 names=[f"c{k}.dcm" for k in range(3)])
    loaded = read_dicom(tmp_path)
    assert loaded.volume.array.shape == (6, ROWS, COLS)
    assert_world_values(loaded.volume, atol=0.0)
    (note,) = loaded.warnings
    assert "2 image series" in note and "series 2 'Axial' (CT, 6 slices)" in note and "(CT, 3 slices)" in note


def test_several_series_the_ct_with_most_slices_is_chosen(tmp_path):
    write_series(tmp_path / "a", axial_positions(range(4)), series_number=1, description="Short")
    write_series(tmp_path / "b", axial_positions(range(8)), series_number=5, description="Long")
    write_series(tmp_path / "c", axial_positions(range(20)), modality="MR", series_number=7, description="T2")
    loaded = read_dicom(tmp_path)
    assert loaded.volume.array.shape[0] == 8
    (note,) = loaded.warnings
    assert note == (
        "the input holds 3 image series; using series 5 'Long' (CT, 8 slices), the CT series with the most "
        "slices; not used: series 1 'Short' (CT, 4 slices), series 7 'T2' (MR, 20 slices)"
    )
    assert "SECRET" not in note


def test_single_file_reads_its_own_series(tmp_path):
    write_series(tmp_path, axial_positions(range(8)), series_number=5, names=[f"long{k}.dcm" for k in range(8)])
    short = write_series(tmp_path, axial_positions(range(3)), series_number=1, names=[f"s{k}.dcm" for k in range(3)])
    loaded = read_image(short[1])
    assert loaded.volume.array.shape[0] == 3
    assert loaded.warnings == []


def test_non_ct_modality_is_an_error_naming_it(tmp_path):
    write_series(tmp_path, axial_positions(range(5)), modality="MR", description="T1")
    with pytest.raises(InputError, match=r"no CT series in .*found modality MR — series 3 'T1' \(MR, 5 slices\); VertebralFracture needs a CT series"):
        read_dicom(tmp_path)


def test_single_non_ct_file_is_an_error_naming_the_modality(tmp_path):
    paths = write_series(tmp_path, axial_positions(range(4)), modality="PT", description="PET")
    write_series(tmp_path, axial_positions(range(6)), names=[f"ct{k}.dcm" for k in range(6)])
    with pytest.raises(InputError, match=r"'slice001.dcm' belongs to series 3 'PET' \(PT, 4 slices\), which is not CT"):
        read_image(paths[1])


def test_missing_modality_is_assumed_ct_with_a_warning(tmp_path):
    write_series(tmp_path, axial_positions(range(3)), modality="")
    loaded = read_dicom(tmp_path)
    assert loaded.warnings == ["series 3 'Body 1.0' does not record its modality; assumed to be CT"]


def test_folder_without_dicom(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match=r"no DICOM files in .* \(1 file\(s\) looked at\)"):
        read_dicom(tmp_path)


def test_folder_with_a_nifti_hints_at_the_file(tmp_path):
    (tmp_path / "scan.nii.gz").write_bytes(b"x")
    with pytest.raises(InputError, match=r"no DICOM files in .*; to read 'scan.nii.gz', give that file itself"):
        read_image(tmp_path)


def test_dicom_without_image(tmp_path):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.Modality = meta.MediaStorageSOPClassUID, "SR"
    ds.save_as(tmp_path / "report.dcm", enforce_file_format=True)
    with pytest.raises(InputError, match=r"no DICOM image in .*no image data \(SR ×1\)"):
        read_dicom(tmp_path)


def test_single_slice_is_an_error(tmp_path):
    write_series(tmp_path, axial_positions([5.0]))
    with pytest.raises(InputError, match=r"series 3 'Body 1.0' has a single slice \(a 2D image\)"):
        read_dicom(tmp_path)


# ----------------------------------------------------------------------------------- corrupt files
def test_corrupt_files_are_skipped_with_a_warning(tmp_path):
    paths = write_series(tmp_path, axial_positions(range(0, 12, 2)))
    data = paths[3].read_bytes()
    paths[3].write_bytes(data[: len(data) - 100])  # pixel data cut short: header fine, decoding fails
    (tmp_path / "garbage.dcm").write_bytes(b"\x00\x01not dicom at all" * 10)
    loaded = read_dicom(tmp_path)
    text = "\n".join(loaded.warnings)
    assert "1 file(s) could not be read as DICOM and were skipped: garbage.dcm (not a DICOM file)" in text
    assert "1 slice(s) of series 3 'Body 1.0' could not be decoded and were skipped: slice003.dcm" in text
    # the skipped slice leaves a gap that is filled: 6 slices on the 2 mm grid, values right
    assert "missing slices: a 4.00 mm gap between the slices at 4.00 and 8.00 mm" in text
    assert loaded.volume.array.shape[0] == 6
    assert_world_values(loaded.volume, atol=0.0)


def test_nothing_readable_is_an_error(tmp_path):
    for k in range(3):
        (tmp_path / f"x{k}.dcm").write_bytes(b"\x00" * 10)
    with pytest.raises(InputError, match=r"no readable DICOM file .*3 file\(s\) could not be read \(x0.dcm, x1.dcm, x2.dcm \(not a DICOM file\)\)"):
        read_dicom(tmp_path)


def test_no_slice_decodable_is_an_error(tmp_path):
    for p in write_series(tmp_path, axial_positions(range(3))):
        p.write_bytes(p.read_bytes()[:-50])
    with pytest.raises(InputError, match=r"3 of the 3 slices of series 3 'Body 1.0' could not be decoded, 0 left: slice000.dcm, slice001.dcm, "
                       r"slice002.dcm \(The number of bytes of pixel data is less than expected"):
        read_dicom(tmp_path)


# ----------------------------------------------------------------------------------- spacing problems
def test_gap_is_filled_on_the_uniform_grid(tmp_path):
    z = [0.0, 2.0, 4.0, 10.0, 12.0, 14.0]  # 6 and 8 are missing
    write_series(tmp_path, axial_positions(z))
    loaded = read_dicom(tmp_path)
    assert loaded.warnings == [
        "missing slices: a 6.00 mm gap between the slices at 4.00 and 10.00 mm along the slice normal "
        "(slices 3 and 4 of 6; about 2 slice(s) of 2.00 mm missing); filled by linear interpolation"
    ]
    v = loaded.volume
    assert v.array.shape[0] == 8
    assert v.spacing[2] == pytest.approx(2.0)
    assert v.origin == pytest.approx((-3.0, 4.0, 0.0))
    assert_world_values(v, atol=0.0)  # the filled slices at 6 and 8 mm hold the field there
    # the original slices lie on the new grid: their world positions are voxel centres
    for zk in z:
        idx = v.lps_to_index((-3.0, 4.0, zk))
        np.testing.assert_allclose(idx, np.round(idx), atol=1e-9)


def test_huge_gap_is_an_error(tmp_path):
    write_series(tmp_path, axial_positions([0, 2, 4, 40, 42]))
    with pytest.raises(InputError, match=r"a 36.0 mm gap between the slices at 4.00 and 40.00 mm .* too much to interpolate"):
        read_dicom(tmp_path)


def test_non_uniform_spacing_is_resampled(tmp_path):
    z = [0.0, 1.0, 2.25, 3.0, 4.0, 5.2, 6.0]
    write_series(tmp_path, axial_positions(z))
    loaded = read_dicom(tmp_path)
    (note,) = loaded.warnings
    assert note.startswith("non-uniform slice spacing: the distance between slices ranges from 0.750 to 1.250 mm "
                           "(nominal 1.000 mm); resampled to a uniform grid")
    v = loaded.volume
    assert v.array.shape[0] == 7 and v.spacing[2] == pytest.approx(1.0)
    assert v.origin[2] == pytest.approx(0.0)
    assert_world_values(v)


def test_duplicate_positions_keep_one(tmp_path):
    z = [0.0, 2.0, 2.0, 4.0, 6.0, 6.0, 6.0]
    write_series(tmp_path, axial_positions(z))
    loaded = read_dicom(tmp_path)
    assert loaded.warnings == [
        "duplicate slice positions: 3 slice(s) repeat a position already present (at 2.00, 6.00 mm along the "
        "slice normal); kept one slice per position (4 slices)"
    ]
    assert loaded.volume.array.shape[0] == 4
    assert_world_values(loaded.volume, atol=0.0)


def _inside_every_slice(volume, positions, orientation, rows, cols) -> np.ndarray:
    """Voxels whose world point projects inside every source slice (away from the fill)."""
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in volume.array.shape], indexing="ij")
    world = volume.index_to_lps(np.stack([xx, yy, zz], -1).astype(float))
    r, c = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    inside = np.ones(volume.array.shape, bool)
    for p in positions:
        rel = world - np.asarray(p)
        col, row = rel @ r / PIXEL_SPACING[1], rel @ c / PIXEL_SPACING[0]
        inside &= (col >= -1e-6) & (col <= cols - 1 + 1e-6) & (row >= -1e-6) & (row <= rows - 1 + 1e-6)
    return inside


def test_gantry_tilt_shifted_positions_is_regularized_keeping_world_positions(tmp_path):
    angle, step = 15.0, 2.0
    # axial slices, each shifted posteriorly: positions step 15° away from the slice normal
    positions = [(-3.0, 4.0 + k * step * np.tan(np.deg2rad(angle)), k * step) for k in range(6)]
    write_series(tmp_path, positions, rows=16, slope=0.01, intercept=0.0)  # float HU: no rounding
    loaded = read_dicom(tmp_path)
    (note,) = loaded.warnings
    assert note == (
        "gantry tilt of 15.00°: the slice positions step along a direction 15.00° away from the slice normal "
        "(in-plane drift up to 2.7 mm); resampled onto an orthogonal grid that keeps world positions "
        "(10×19×6 voxels)"
    )
    v = loaded.volume
    np.testing.assert_allclose(v.direction, np.eye(3), atol=1e-12)
    assert v.spacing == pytest.approx((0.5, 1.0, 2.0))
    assert v.array.shape == (6, 16 + 3, COLS)  # grown in y to keep every shifted slice
    inside = _inside_every_slice(v, positions, AXIAL, 16, COLS)
    assert inside.sum() > 0.6 * v.array.size
    assert_world_values(v, atol=0.01, inside=inside)
    assert v.array[5, 0, 0] == v.array.min()  # outside every slice: the fill value, not a copy of an edge


def test_gantry_tilt_tilted_orientation_is_regularized_keeping_world_positions(tmp_path):
    """As scanners write it: the image plane is tilted, the table (the positions) moves along z."""
    t = np.deg2rad(12.0)
    iop = (1.0, 0.0, 0.0, 0.0, np.cos(t), -np.sin(t))
    positions = [(-3.0, 4.0, 2.0 * k) for k in range(8)]
    write_series(tmp_path, positions[::-1], orientation=iop, rows=20, slope=0.01, intercept=0.0)
    loaded = read_dicom(tmp_path)
    (note,) = loaded.warnings
    assert note.startswith("gantry tilt of 12.00°")
    v = loaded.volume
    normal = np.cross(iop[:3], iop[3:])
    np.testing.assert_allclose(v.direction, np.column_stack([iop[:3], iop[3:], normal]), atol=1e-9)
    assert v.spacing[2] == pytest.approx(2.0 * np.cos(t))
    inside = _inside_every_slice(v, positions, iop, 20, COLS)
    assert inside.sum() > 0.4 * v.array.size
    assert_world_values(v, atol=0.01, inside=inside)


def test_several_problems_at_once_in_a_zip(tmp_path):
    """Tilt + duplicate + gap + a corrupt file + empty UIDs, zipped: every message clean of patient data."""
    t = np.deg2rad(10.0)
    iop = (1.0, 0.0, 0.0, 0.0, np.cos(t), -np.sin(t))
    z = [0.0, 2.0, 4.0, 4.0, 6.0, 12.0, 14.0, 16.0]  # a duplicate at 4, a gap from 6 to 12
    positions = [(-3.0, 4.0, v) for v in z]
    paths = write_series(tmp_path / "s", positions, orientation=iop, rows=20, series_uid="", study_uid="",
                         slope=0.01, intercept=0.0)
    (tmp_path / "s" / "broken.dcm").write_bytes(b"DICM" * 8)
    archive = tmp_path / "all.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in [*paths, tmp_path / "s" / "broken.dcm"]:
            zf.write(p, p.name)
    loaded = read_image(archive)
    text = "\n".join(loaded.warnings)
    assert "1 file(s) could not be read as DICOM and were skipped: broken.dcm" in text
    assert "duplicate slice positions: 1 slice(s)" in text
    assert "missing slices: a 5.91 mm gap" in text
    assert "gantry tilt of 10.00°" in text
    assert "SECRET" not in text + loaded.description
    v = loaded.volume
    assert v.spacing[2] == pytest.approx(2.0 * np.cos(t))
    unique = [positions[i] for i in (0, 1, 2, 4, 5, 6, 7)]
    inside = _inside_every_slice(v, unique, iop, 20, COLS)
    assert inside.sum() > 0.3 * v.array.size
    assert_world_values(v, atol=0.01, inside=inside)


# ----------------------------------------------------------------------------------- odd slices
def test_slice_with_other_orientation_is_dropped(tmp_path):
    uid = "1.2.3.4.5"
    write_series(tmp_path, axial_positions(range(6)), series_uid=uid, names=[f"a{k}.dcm" for k in range(6)])
    write_series(tmp_path, [(0.0, 0.0, 0.0)], orientation=(1.0, 0.0, 0.0, 0.0, 0.0, -1.0), series_uid=uid,
                 names=["scout.dcm"])
    loaded = read_dicom(tmp_path)
    assert loaded.warnings == [
        "series 3 'Body 1.0': dropped 1 slice(s) whose orientation or image size differs from the other 6 "
        "(10×12, orientation [1, 0, 0, 0, 0, -1], pixel spacing 0.5×1 mm instead of "
        "10×12, orientation [1, 0, 0, 0, 1, 0], pixel spacing 0.5×1 mm)"
    ]
    assert loaded.volume.array.shape == (6, ROWS, COLS)


def test_slice_with_other_size_is_dropped(tmp_path):
    uid = "1.2.3.4.6"
    write_series(tmp_path, axial_positions(range(5)), series_uid=uid, names=[f"a{k}.dcm" for k in range(5)])
    write_series(tmp_path, axial_positions([5.0]), series_uid=uid, rows=8, names=["odd.dcm"])
    loaded = read_dicom(tmp_path)
    assert "dropped 1 slice(s) whose orientation or image size differs from the other 5 (10×8" in loaded.warnings[0]
    assert loaded.volume.array.shape == (5, ROWS, COLS)


def test_equal_halves_of_different_size_is_an_error(tmp_path):
    uid = "1.2.3.4.7"
    write_series(tmp_path, axial_positions(range(3)), series_uid=uid, names=[f"a{k}.dcm" for k in range(3)])
    write_series(tmp_path, axial_positions(range(3, 6)), series_uid=uid, rows=8, names=[f"b{k}.dcm" for k in range(3)])
    with pytest.raises(InputError, match="mixes slices of different orientation or image size in equal numbers"):
        read_dicom(tmp_path)


# ----------------------------------------------------------------------------------- zip input
def test_zip_of_a_series(tmp_path):
    paths = write_series(tmp_path / "series", axial_positions(range(0, 8, 2)))
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in paths:
            zf.write(p, f"export/CT/{p.name}")
    loaded = read_image(archive)
    assert loaded.source_format == "dicom"
    assert loaded.volume.array.shape[0] == 4
    assert_world_values(loaded.volume, atol=0.0)


@pytest.mark.parametrize("member", ["../evil.dcm", "/etc/evil.dcm", "a/../../evil.dcm", "C:/evil.dcm"])
def test_zip_with_unsafe_member_is_refused(tmp_path, member):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(member, b"x")
    with pytest.raises(InputError, match="unsafe zip member"):
        read_dicom(archive)
    assert not (tmp_path.parent / "evil.dcm").exists()


def test_zip_with_a_corrupt_member_skips_it(tmp_path):
    paths = write_series(tmp_path / "series", axial_positions(range(0, 10, 2)))
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for p in paths:
            zf.write(p, p.name)
    data = bytearray(archive.read_bytes())
    last = data.rfind(b"SECRET^NAME")  # inside the last member's stored bytes: CRC no longer matches
    data[last] ^= 0xFF
    archive.write_bytes(bytes(data))
    loaded = read_dicom(archive)
    assert loaded.warnings[0] == "corrupt zip member(s) skipped: slice004.dcm"
    assert loaded.volume.array.shape[0] == 4


def test_zip_bomb_is_refused(tmp_path):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.dcm", b"\0" * (8 * 2**20))
    with pytest.raises(InputError, match=r"compressed more than 200:1"):
        read_dicom(archive)


# ----------------------------------------------------------------------------------- real data
def test_real_anonymized_jpeg2000_series(shared_data):
    """Empty SOP/Study/Series UIDs and JPEG 2000 lossless pixel data."""
    loaded = read_image(shared_data / "dicom" / "anonymized-20slice")
    v = loaded.volume
    assert loaded.warnings == []
    assert v.array.shape == (20, 512, 512) and v.array.dtype == np.int16
    assert v.spacing == pytest.approx((0.9765625, 0.9765625, 2.0))
    assert v.origin == pytest.approx((-249.51171875, -437.51171875, -804.5))  # the most inferior slice
    assert "JPEG 2000" in loaded.description and "20 slices" in loaded.description
    assert v.array.min() == -1024 and 1000 < v.array.max() < 3000  # HU: air and bone
    # the air outside the body is about -1000 HU
    assert np.median(v.array[:, :20, :20]) < -900


def test_real_ct_3slice(shared_data):
    loaded = read_dicom(shared_data / "dicom" / "ct-3slice")
    v = loaded.volume
    assert v.array.shape == (3, 512, 512)
    assert v.spacing == pytest.approx((0.810547, 0.810547, 1.0))
    assert v.origin == pytest.approx((-235.199997, -226.800003, -128.690002))
    assert v.array.min() == -3024  # padding outside the reconstruction circle, HU as stored
    # single-file input reads the same series
    one = read_image(shared_data / "dicom" / "ct-3slice" / "02.dcm")
    np.testing.assert_array_equal(one.volume.array, v.array)


def test_jpeg_lossless_series_decodes(tmp_path):
    """JPEG Lossless (process 14, SV1) — the common PACS export syntax — decodes through GDCM."""
    gdcm = pytest.importorskip("gdcm")
    import pydicom

    paths = write_series(tmp_path, axial_positions([0, 2, 4]), rows=64, cols=48)
    for p in paths:
        reader = gdcm.ImageReader()
        reader.SetFileName(str(p))
        assert reader.Read()
        change = gdcm.ImageChangeTransferSyntax()
        change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGLosslessProcess14_1))
        change.SetInput(reader.GetImage())
        assert change.Change()
        writer = gdcm.ImageWriter()
        writer.SetFileName(str(p))
        writer.SetFile(reader.GetFile())
        writer.SetImage(change.GetOutput())
        assert writer.Write()
    assert pydicom.dcmread(paths[0]).file_meta.TransferSyntaxUID == pydicom.uid.JPEGLosslessSV1
    loaded = read_dicom(tmp_path)
    assert_world_values(loaded.volume, atol=0.0)
