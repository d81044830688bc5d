"""Reading radiographs (io.radiograph): DICOM DX/CR, PNG/JPEG, and the clear refusals."""

from __future__ import annotations

import numpy as np
import pytest

from VertebralFractureLib.errors import InputError
from VertebralFractureLib.io.radiograph import read_radiograph


def _ramp(rows: int = 40, cols: int = 30) -> np.ndarray:
    """Stored values rising from left to right (bone-bright where high in MONOCHROME2)."""
    return np.tile(np.linspace(100, 3000, cols), (rows, 1)).astype(np.uint16)


def _dicom(path, pixels, modality="DX", photometric="MONOCHROME2", spacing=("PixelSpacing", [0.15, 0.15]),
           window=None, frames=None):
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientName, ds.PatientID = modality, "Doe^Jane", "SECRET-ID"
    ds.PhotometricInterpretation = photometric
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 16, 12, 11, 0
    if frames:
        ds.NumberOfFrames = frames
        pixels = np.stack([pixels] * frames)
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if spacing is not None:
        setattr(ds, spacing[0], spacing[1])
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_a_dx_file_is_read_with_its_spacing_bone_bright_in_0_to_1(tmp_path):
    r = read_radiograph(_dicom(tmp_path / "a.dcm", _ramp()))
    assert r.image.shape == (40, 30) and r.image.dtype == np.float32
    assert 0.0 <= r.image.min() and r.image.max() <= 1.0 and r.image[:, -1].mean() > r.image[:, 0].mean() + 0.9
    assert r.pixel_spacing_mm == (0.15, 0.15) and r.spacing_source == "PixelSpacing"
    assert "DX" in r.kind and "Doe" not in repr(r) and "SECRET" not in repr(r)


def test_monochrome1_is_inverted_and_the_imager_spacing_is_used_when_alone(tmp_path):
    r = read_radiograph(_dicom(tmp_path / "b.dcm", _ramp(), modality="CR", photometric="MONOCHROME1",
                               spacing=("ImagerPixelSpacing", [0.2, 0.1])))
    assert r.image[:, 0].mean() > r.image[:, -1].mean() + 0.9  # high stored values are dark in MONOCHROME1
    assert r.pixel_spacing_mm == (0.2, 0.1) and r.spacing_source == "ImagerPixelSpacing"


def test_the_modalitys_window_sets_the_display_range(tmp_path):
    r = read_radiograph(_dicom(tmp_path / "c.dcm", _ramp(), window=(1000, 400)))
    cols = r.image.mean(axis=0)
    stored = np.linspace(100, 3000, 30)
    assert np.all(cols[stored < 790] == 0.0) and np.all(cols[stored > 1210] == 1.0)
    inside = (stored > 820) & (stored < 1180)
    assert inside.any() and np.all((cols[inside] > 0.0) & (cols[inside] < 1.0))


def test_a_given_spacing_overrides_the_header_with_a_note(tmp_path):
    r = read_radiograph(_dicom(tmp_path / "d.dcm", _ramp()), pixel_spacing=0.3)
    assert r.pixel_spacing_mm == (0.3, 0.3) and any("header says" in n for n in r.notes)


@pytest.mark.parametrize("modality,frames,match", [("CT", None, "analyze"), ("DX", 3, "3-frame")])
def test_a_volume_is_refused_with_a_pointer_to_analyze(tmp_path, modality, frames, match):
    path = _dicom(tmp_path / "v.dcm", _ramp(), modality=modality, frames=frames)
    with pytest.raises(InputError, match=match):
        read_radiograph(path)


def test_no_spacing_anywhere_is_refused(tmp_path):
    with pytest.raises(InputError, match="--pixel-spacing"):
        read_radiograph(_dicom(tmp_path / "e.dcm", _ramp(), spacing=None))
    assert read_radiograph(_dicom(tmp_path / "f.dcm", _ramp(), spacing=None), pixel_spacing=(0.1, 0.1)).pixel_spacing_mm == (0.1, 0.1)


def test_png_needs_a_spacing_grey_is_read_and_colour_is_refused(tmp_path):
    from PIL import Image

    grey = (np.tile(np.linspace(0, 255, 30), (40, 1))).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    with pytest.raises(InputError, match="--pixel-spacing"):
        read_radiograph(tmp_path / "g.png")
    r = read_radiograph(tmp_path / "g.png", pixel_spacing=0.14)
    assert r.image.shape == (40, 30) and r.pixel_spacing_mm == (0.14, 0.14) and r.image[:, -1].mean() == 1.0
    Image.fromarray(np.stack([grey] * 3, -1)).save(tmp_path / "grey_rgb.jpg")  # grey saved as RGB is fine
    assert read_radiograph(tmp_path / "grey_rgb.jpg", pixel_spacing=0.14).image.shape == (40, 30)
    colour = np.stack([grey, 255 - grey, grey // 2], -1)
    Image.fromarray(colour).save(tmp_path / "photo.png")
    with pytest.raises(InputError, match="colour"):
        read_radiograph(tmp_path / "photo.png", pixel_spacing=0.14)


def test_unreadable_missing_and_implausible_inputs_are_refused(tmp_path):
    (tmp_path / "junk.dcm").write_bytes(b"not dicom at all")
    with pytest.raises(InputError, match="neither a DICOM"):
        read_radiograph(tmp_path / "junk.dcm")
    with pytest.raises(InputError, match="no such file"):
        read_radiograph(tmp_path / "missing.dcm")
    (tmp_path / "junk.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(InputError, match="not a readable image"):
        read_radiograph(tmp_path / "junk.png", pixel_spacing=0.1)
    with pytest.raises(InputError, match="not that of a radiograph"):
        read_radiograph(tmp_path / "junk.png", pixel_spacing=5.0)
