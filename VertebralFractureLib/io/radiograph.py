"""Reading a lateral spine radiograph: DICOM DX/CR, or PNG/JPEG with a given pixel spacing.

What a reader of radiographs must get right before any model sees the image:

* **Pixel spacing** (mm): for DICOM, *Pixel Spacing* (0028,0030) where the modality calibrated it
  at the patient, else *Imager Pixel Spacing* (0018,1164), the detector's, which includes the
  beam's magnification (about 10–20 % at the spine); the source is recorded. A PNG or JPEG has no
  spacing: it must be given (``pixel_spacing``), and nothing is guessed.
* **Grey scale**: *MONOCHROME1* stores bone dark, so it is inverted; the result is always bone
  bright, 0..1. The stored values go through the *Modality LUT* (rescale) and the *VOI LUT* or
  *Window Center/Width* the modality chose, as a viewer shows them; without either, the image's
  1st–99th percentiles set the window.
* **A one-slice volume file** (NRRD, NIfTI, MetaImage — how 3D Slicer saves a 2D image): its
  in-plane spacing is the pixel spacing.
* **Refusals**, each with a clear message: a CT or MR (or any volume: several frames, slices of
  a series, a volume file with several slices) — use ``analyze``; a colour photograph or screenshot (colour channels that differ); an
  image without a spacing; an unreadable file.

Patient names and IDs are never read into the result or logged.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from VertebralFractureLib.errors import InputError

#: DICOM modalities of projection radiographs.
RADIOGRAPH_MODALITIES = ("DX", "CR", "RG", "RF", "PX", "DR")
#: Modalities that are volumes: ``analyze`` reads them.
VOLUME_MODALITIES = ("CT", "MR", "PT", "NM", "US")
#: Image files read with Pillow.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
#: Volume files: a radiograph saved by 3D Slicer is a one-slice volume (its spacing kept).
VOLUME_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")
#: Colour channels differing by more than this (0..255 scale, mean absolute) make a colour photo.
COLOUR_TOLERANCE = 2.0
#: Plausible pixel spacings of a radiograph (mm).
SPACING_RANGE_MM = (0.02, 2.0)


@dataclass
class Radiograph:
    """A radiograph ready for the models: ``image`` (rows, columns) float32 in 0..1, bone bright;
    ``pixel_spacing_mm`` (row, column); where the spacing came from; the input's kind."""

    image: np.ndarray
    pixel_spacing_mm: tuple[float, float]
    spacing_source: str
    kind: str
    notes: list[str] = field(default_factory=list)


def read_radiograph(path: str | Path, pixel_spacing: float | tuple[float, float] | None = None) -> Radiograph:
    """Read a radiograph (module docstring). ``pixel_spacing`` (mm, one value or row, column) is
    required for PNG/JPEG and overrides a DICOM file's own spacing (with a note)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path.name}: no such file (a radiograph is one DICOM file or one PNG/JPEG image)")
    given = _spacing_pair(pixel_spacing) if pixel_spacing is not None else None
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return _read_picture(path, given)
    if any(path.name.lower().endswith(s) for s in VOLUME_SUFFIXES):
        return _read_volume_file(path, given)
    return _read_dicom(path, given)


def _read_volume_file(path: Path, given: tuple[float, float] | None) -> Radiograph:
    """A one-slice NRRD/NIfTI/MetaImage (as 3D Slicer saves a 2D image): its in-plane spacing is
    the pixel spacing; values windowed at their 1st–99th percentiles. A volume of several slices
    is a CT or MR, refused."""
    import SimpleITK as sitk

    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as err:
        raise InputError(f"{path.name}: not a readable image ({str(err).splitlines()[0][:120]})") from None
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{path.name}: a colour image, not a radiograph (radiographs are grey)")
    size = list(img.GetSize())
    arr = sitk.GetArrayFromImage(img)
    if img.GetDimension() == 3:
        if sorted(size)[0] != 1 or sorted(size)[1] == 1:
            raise InputError(f"{path.name}: a volume of {size[0]} x {size[1]} x {size[2]} voxels, not a projection "
                             "radiograph; for CT use `vertebral-fracture analyze`")
        axis = int(np.argmin(size))  # the slice axis, in (x, y, z) order
        spacing_xyz = [s for k, s in enumerate(img.GetSpacing()) if k != axis]
        arr = np.squeeze(arr, axis=2 - axis)
    else:
        spacing_xyz = list(img.GetSpacing())
    spacing = (float(spacing_xyz[1]), float(spacing_xyz[0]))  # (row, column)
    source = "image header"
    if given is not None:
        spacing, source = given, "given (--pixel-spacing)"
    else:
        spacing = _spacing_pair(spacing)
    return Radiograph(_window(arr.astype(np.float32), None, None), spacing, source, f"{path.name.split('.')[-1].upper()} image")


def _spacing_pair(value: float | tuple[float, float]) -> tuple[float, float]:
    pair = (float(value), float(value)) if np.isscalar(value) else tuple(float(v) for v in value)  # type: ignore[arg-type]
    if len(pair) != 2 or not all(SPACING_RANGE_MM[0] <= v <= SPACING_RANGE_MM[1] for v in pair):
        raise InputError(f"pixel spacing {value} mm is not that of a radiograph "
                         f"({SPACING_RANGE_MM[0]}–{SPACING_RANGE_MM[1]} mm a pixel)")
    return pair  # type: ignore[return-value]


def _read_picture(path: Path, spacing: tuple[float, float] | None) -> Radiograph:
    from PIL import Image, UnidentifiedImageError

    if spacing is None:
        raise InputError(f"{path.name}: a {path.suffix.lstrip('.').upper()} image carries no pixel spacing; give it "
                         "(--pixel-spacing MM, from the radiograph's DICOM header or its ruler): heights in mm "
                         "cannot be measured without it")
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im)
            mode = im.mode
    except (UnidentifiedImageError, OSError) as err:
        raise InputError(f"{path.name}: not a readable image ({err.__class__.__name__})") from None
    if arr.ndim == 3:
        rgb = arr[..., :3].astype(np.float32)
        if rgb.shape[-1] == 3 and np.mean(np.abs(rgb - rgb.mean(axis=-1, keepdims=True))) > COLOUR_TOLERANCE:
            raise InputError(f"{path.name}: a colour image, not a radiograph (radiographs are grey); a photograph "
                             "or screenshot cannot be measured")
        arr = rgb.mean(axis=-1)
    image = _window(arr.astype(np.float32), None, None)
    return Radiograph(image, spacing, "given (--pixel-spacing)", f"{path.suffix.lstrip('.').upper()} ({mode})")


def _read_dicom(path: Path, given: tuple[float, float] | None) -> Radiograph:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError) as err:
        raise InputError(f"{path.name}: neither a DICOM file nor a PNG/JPEG image ({err.__class__.__name__})") from None
    modality = str(getattr(ds, "Modality", "") or "").upper()
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if modality in VOLUME_MODALITIES or frames > 1:
        what = f"a {modality} image" if modality in VOLUME_MODALITIES else f"a {frames}-frame image"
        raise InputError(f"{path.name}: {what}, not a projection radiograph; for CT use `vertebral-fracture analyze`")
    notes = []
    if modality not in RADIOGRAPH_MODALITIES:
        notes.append(f"modality {modality or 'not given'}: read as a radiograph")
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise InputError(f"{path.name}: {photometric} pixels, not a grey-scale radiograph")
    spacing, source = _dicom_spacing(ds)
    if given is not None:
        if spacing is not None and not np.allclose(spacing, given, rtol=0.01):
            notes.append(f"pixel spacing {given} mm given, the header says {spacing} mm ({source}): the given one is used")
        spacing, source = given, "given (--pixel-spacing)"
    if spacing is None:
        raise InputError(f"{path.name}: the DICOM header has neither Pixel Spacing nor Imager Pixel Spacing; give it "
                         "(--pixel-spacing MM)")
    from VertebralFractureLib.io.dicom_decode import Frame, decode_frames

    stored = decode_frames([Frame(path, None, False)])[0]
    if isinstance(stored, str):
        raise InputError(f"{path.name}: the pixel data cannot be decoded: {stored}")
    stored = np.asarray(stored)
    if stored.ndim != 2:
        raise InputError(f"{path.name}: pixel data of shape {stored.shape}, not one grey-scale image")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pydicom.pixels import apply_modality_lut, apply_voi_lut

        values = np.asarray(apply_modality_lut(stored, ds), np.float32)
        has_voi = "VOILUTSequence" in ds or ("WindowCenter" in ds and "WindowWidth" in ds)
        if has_voi:  # the modality's own window: its output range is the display range
            values = np.asarray(apply_voi_lut(values, ds, prefer_lut=True), np.float32)
    image = _window(values, float(values.min()), float(values.max())) if has_voi else _window(values, None, None)
    if photometric == "MONOCHROME1":
        image = 1.0 - image
    return Radiograph(image, spacing, source, f"DICOM {modality or '?'} ({photometric})", notes)


def _dicom_spacing(ds: object) -> tuple[tuple[float, float] | None, str]:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = getattr(ds, keyword, None)
        if value is not None and len(value) == 2:
            try:
                return _spacing_pair((float(value[0]), float(value[1]))), keyword
            except (InputError, ValueError):
                continue
    return None, ""


def _window(values: np.ndarray, lo: float | None, hi: float | None) -> np.ndarray:
    """Values → 0..1 between ``lo`` and ``hi`` (default: the 1st and 99th percentiles)."""
    v = np.asarray(values, np.float32)
    if lo is None or hi is None:
        lo, hi = (float(x) for x in np.percentile(v, (1.0, 99.0)))
    if hi <= lo:
        hi = lo + 1.0
    return np.clip((v - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


__all__ = ["Radiograph", "read_radiograph"]
