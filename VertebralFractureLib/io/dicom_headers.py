"""DICOM headers of a folder: which files are images, and where each image (or frame) lies.

Every file is read with pydicom up to its pixel data (``stop_before_pixels``). Files without the
``DICM`` preamble are tried as raw datasets. A multi-frame file (Enhanced CT) gives one
:class:`SliceHeader` per frame, placed by its per-frame functional groups.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

_VOLUME_ENDINGS = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


@dataclass
class SliceHeader:
    """What the header says about one image (one frame of a multi-frame file)."""

    path: Path
    frame: int | None
    forced: bool
    series_uid: str
    group_uid: str  # frame of reference, else study UID (for series without a UID)
    series_number: int | None
    series_description: str
    modality: str
    sop_class: str
    instance_number: int | None
    rows: int
    cols: int
    samples: int
    pixel_spacing: tuple[float, float] | None  # DICOM order: (between rows = y, between columns = x)
    orientation: tuple[float, ...] | None
    position: tuple[float, float, float] | None
    slope: float
    intercept: float
    transfer_syntax: str

    @property
    def placed(self) -> bool:
        return self.orientation is not None and self.position is not None and self.pixel_spacing is not None


@dataclass
class HeaderScan:
    """What a folder holds: placed images, unreadable files (name, reason), DICOM files without an image."""

    slices: list[SliceHeader] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    non_image: Counter = field(default_factory=Counter)  # modality of DICOM files without an image
    files: int = 0
    volume_files: list[str] = field(default_factory=list)  # NIfTI/NRRD/MetaImage files met on the way


def scan_headers(root: Path, recursive: bool = True) -> HeaderScan:
    """Read the header of every file under ``root`` (hidden files and ``__MACOSX`` left out).

    Files that are not DICOM are passed over, except that a ``.dcm``/``.dicom``/``.ima`` file that
    cannot be read is listed as unreadable, like any DICOM file whose header is corrupt.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    scan = HeaderScan()
    for f in sorted(root.rglob("*") if recursive else root.iterdir()):
        rel = f.relative_to(root).parts
        if not f.is_file() or any(part.startswith(".") or part == "__MACOSX" for part in rel):
            continue
        scan.files += 1
        if f.name.lower().endswith(_VOLUME_ENDINGS):
            scan.volume_files.append(f.name)
            continue
        looks_dicom = f.suffix.lower() in (".dcm", ".dicom", ".ima")
        forced = False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ds = pydicom.dcmread(f, stop_before_pixels=True)
            except InvalidDicomError:
                ds, forced = None, True
            except Exception as err:  # noqa: BLE001 — a corrupt file fails in many ways inside pydicom
                scan.unreadable.append((f.name, error_text(err)))
                continue
            if ds is None:  # no DICM preamble: a raw dataset, or not DICOM at all
                try:
                    ds = pydicom.dcmread(f, stop_before_pixels=True, force=True)
                    plausible = "SOPClassUID" in ds or ("Rows" in ds and "Columns" in ds)
                except Exception:  # noqa: BLE001 — not DICOM
                    plausible = False
                if not plausible:
                    if looks_dicom:
                        scan.unreadable.append((f.name, "not a DICOM file"))
                    continue
            try:
                found = _slices_of(ds, f, forced)
            except Exception as err:  # noqa: BLE001 — malformed header values
                scan.unreadable.append((f.name, error_text(err)))
                continue
        if found is None:
            scan.non_image[_text(ds, "Modality") or "unknown"] += 1
        else:
            scan.slices.extend(found)
    return scan


def _slices_of(ds, path: Path, forced: bool) -> list[SliceHeader] | None:
    """The images in one dataset (several for a multi-frame file); ``None`` when it holds no image."""
    rows, cols = _int(ds, "Rows"), _int(ds, "Columns")
    if not rows or not cols:
        return None
    frames = _int(ds, "NumberOfFrames") or 1
    meta = getattr(ds, "file_meta", None)
    common = dict(
        path=path, forced=forced, series_uid=_text(ds, "SeriesInstanceUID"),
        group_uid=_text(ds, "FrameOfReferenceUID") or _text(ds, "StudyInstanceUID"),
        series_number=_int(ds, "SeriesNumber"), series_description=_text(ds, "SeriesDescription"),
        modality=_text(ds, "Modality").upper(), sop_class=_text(ds, "SOPClassUID"),
        instance_number=_int(ds, "InstanceNumber"), rows=rows, cols=cols,
        samples=_int(ds, "SamplesPerPixel") or 1,
        transfer_syntax=str(meta.get("TransferSyntaxUID", "")) if meta is not None else "",
    )
    shared = _first_item(ds, "SharedFunctionalGroupsSequence")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []

    def value(frame: int, sequence: str, keyword: str):
        groups = ([per_frame[frame]] if frame < len(per_frame) else []) + ([shared] if shared is not None else [])
        for group in groups:
            item = _first_item(group, sequence)
            if item is not None and item.get(keyword) is not None:
                return item.get(keyword)
        return ds.get(keyword)

    out = []
    for i in range(frames):
        position = value(i, "PlanePositionSequence", "ImagePositionPatient")
        if frames > 1 and i >= len(per_frame):
            position = None  # a multi-frame image without per-frame positions cannot be placed
        orientation = value(i, "PlaneOrientationSequence", "ImageOrientationPatient")
        spacing = value(i, "PixelMeasuresSequence", "PixelSpacing")
        slope = value(i, "PixelValueTransformationSequence", "RescaleSlope")
        intercept = value(i, "PixelValueTransformationSequence", "RescaleIntercept")
        out.append(SliceHeader(
            frame=i if frames > 1 else None,
            pixel_spacing=_floats(spacing, 2), orientation=_floats(orientation, 6),
            position=_floats(position, 3),  # type: ignore[arg-type]
            slope=float(slope) if slope not in (None, "") else 1.0,
            intercept=float(intercept) if intercept not in (None, "") else 0.0,
            **common,
        ))
    return out


def _text(ds, keyword: str) -> str:
    v = ds.get(keyword)
    return str(v).strip() if v is not None else ""


def _int(ds, keyword: str) -> int | None:
    v = ds.get(keyword)
    try:
        return int(v) if v not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _floats(value, n: int) -> tuple[float, ...] | None:
    if value is None or value == "":
        return None
    items = [value] if isinstance(value, (str, int, float)) else list(value)
    try:
        out = tuple(float(x) for x in items)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n and all(np.isfinite(out)) else None


def _first_item(ds, keyword: str):
    seq = ds.get(keyword) if ds is not None else None
    return seq[0] if seq else None


def error_text(err: BaseException) -> str:
    """An exception as one line of at most 300 characters, for warnings and errors."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 300 else text[:297] + "…"
