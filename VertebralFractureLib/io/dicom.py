"""Reading a DICOM CT series — a folder, a ``.zip`` or one file of the series — into a :class:`Volume`.

Headers are read first with pydicom (``stop_before_pixels``), grouped into series, one CT series is
chosen, and only its pixel data are decoded (any transfer syntax pydicom has a decoder for:
uncompressed, RLE, JPEG 2000 through pylibjpeg-openjpeg, …) by
:mod:`VertebralFractureLib.io.dicom_decode`, so that a decoder crash on a corrupt slice costs the
slice, not the process. Slice placement, gaps, uneven spacing and gantry tilt are handled by
:mod:`VertebralFractureLib.io.dicom_geometry`.

Nothing that identifies the patient (name, ID, birth date, dates) is read into messages: series
are named by series number, description, modality and slice count; files by their base name.
"""

from __future__ import annotations

import tempfile
import zipfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from VertebralFractureLib.errors import InputError
from VertebralFractureLib.io.dicom_geometry import (
    GridPlan,
    plan_grid,
    resample_stack,
    slice_frame,
    sort_and_deduplicate,
)
from VertebralFractureLib.io.dicom_headers import SliceHeader, scan_headers
from VertebralFractureLib.io.loaded_image import LoadedImage
from VertebralFractureLib.volume import Volume

#: SOP classes of CT images (CT, Enhanced CT, Legacy Converted Enhanced CT).
CT_SOP_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2"})
_ORIENTATION_TOL = 1e-3
_SPACING_TOL_MM = 1e-3
_LISTED = 5  # how many files or series a message names before "…"


def read_dicom(path: str | Path) -> LoadedImage:
    """Read the CT series in a DICOM folder, a zip of one, or the series a given DICOM file belongs to.

    Choice of series: files are grouped by SeriesInstanceUID; when that UID is empty (badly
    anonymized data) by frame of reference (or study UID), orientation, image size, pixel spacing,
    series number and modality. With a DICOM file as ``path`` its own series is read; otherwise the
    CT series with the most slices, and a warning names it (series number, description, slice count).

    What is an error and what is a warning — data we can place exactly is repaired with a warning,
    data that would have to be guessed is refused:

    * errors (:class:`InputError`): path missing; no DICOM file; DICOM files but no image; images
      without position/orientation; no CT series (the message names the modalities found); a single
      slice (2D); RGB pixels; a pixel spacing of zero or less; more voxels than
      ``sanity.MAX_VOXELS`` (checked before decoding); fewer than 2 slices decodable (the
      decoders' reasons are given, a decoder crash included); a series that
      mixes orientations or image sizes in equal numbers (no majority to keep); a gap missing more
      than ``dicom_geometry.MAX_GAP_MM`` (20 mm — interpolation would invent most of a vertebra);
      an unsafe or oversized zip.
    * warnings (the volume is still returned): unreadable or corrupt files and slices that cannot
      be decoded (skipped, named by file name, with the decoder's reason); slices whose orientation or size differs from the rest of their series (dropped);
      duplicate positions (one kept); missing slices (gap position and size named; filled by linear
      interpolation along the normal); non-uniform spacing (resampled to a uniform grid); gantry
      tilt (angle named; resampled onto an orthogonal grid that keeps world positions); other series
      that were not used; a missing Modality tag.

    Args:
        path: a folder (searched recursively), a ``.zip`` file, or one DICOM file.

    Returns:
        The CT volume in Hounsfield units (RescaleSlope/Intercept applied; ``int16`` when the values
        are whole numbers that fit, else ``float32``), direction from ImageOrientationPatient
        (columns: row direction, column direction, slice normal), origin at the first slice.

    Raises:
        InputError: see above.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"DICOM input not found: '{p}' does not exist")
    if p.is_file() and (p.suffix.lower() == ".zip" or zipfile.is_zipfile(p)):
        from VertebralFractureLib.io.archive import extract_zip

        with tempfile.TemporaryDirectory(prefix="vf-dicom-") as tmp:
            _, corrupt = extract_zip(p, tmp)
            notes = [f"corrupt zip member(s) skipped: {_names(corrupt)}"] if corrupt else []
            return _read_folder(Path(tmp), p.name, preferred=None, notes=notes)
    if p.is_file():  # the series this file belongs to, among the files beside it (not below)
        return _read_folder(p.parent, p.parent.name or str(p.parent), preferred=p.resolve(), notes=[],
                            recursive=False)
    return _read_folder(p, p.name or str(p), preferred=None, notes=[])


# ---------------------------------------------------------------------------------------- series
@dataclass
class _Series:
    slices: list[SliceHeader]
    dropped: list[SliceHeader] = field(default_factory=list)  # odd orientation/size, same series UID
    ambiguous: bool = False

    @property
    def modality(self) -> str:
        return Counter(s.modality for s in self.slices).most_common(1)[0][0]

    @property
    def is_ct(self) -> bool:
        m = self.modality
        return m == "CT" or (m == "" and (self.slices[0].sop_class in CT_SOP_CLASSES or not self.slices[0].sop_class))

    @property
    def label(self) -> str:
        """``series 3 'CT Body 3.0'`` — number and description only, nothing about the patient."""
        number = Counter(s.series_number for s in self.slices).most_common(1)[0][0]
        desc = Counter(s.series_description for s in self.slices).most_common(1)[0][0]
        text = "series" + (f" {number}" if number is not None else "") + (f" '{desc}'" if desc else "")
        return text if text != "series" else "series without number or description"

    def summary(self) -> str:
        n = len(self.slices)
        return f"{self.label} ({self.modality or 'modality unknown'}, {n} slice{'s' if n != 1 else ''})"


def _same_grid(a: SliceHeader, b: SliceHeader) -> bool:
    if (a.rows, a.cols, a.samples, a.placed) != (b.rows, b.cols, b.samples, b.placed):
        return False
    if not a.placed:
        return True
    return bool(
        np.max(np.abs(np.subtract(a.orientation, b.orientation))) < _ORIENTATION_TOL
        and np.max(np.abs(np.subtract(a.pixel_spacing, b.pixel_spacing))) < _SPACING_TOL_MM
    )


def _grid_clusters(slices: Iterable[SliceHeader]) -> list[list[SliceHeader]]:
    clusters: list[list[SliceHeader]] = []
    for s in slices:
        for members in clusters:
            if _same_grid(members[0], s):
                members.append(s)
                break
        else:
            clusters.append([s])
    return sorted(clusters, key=len, reverse=True)


def _group_series(slices: list[SliceHeader]) -> list[_Series]:
    by_key: dict[tuple, list[SliceHeader]] = {}
    for s in slices:
        key = ("uid", s.series_uid) if s.series_uid else ("", s.group_uid, s.series_number, s.modality)
        by_key.setdefault(key, []).append(s)
    series = []
    for key, members in by_key.items():
        clusters = _grid_clusters(members)
        if key[0] == "uid":
            tie = len(clusters) > 1 and len(clusters[0]) == len(clusters[1])
            series.append(_Series(clusters[0], [s for c in clusters[1:] for s in c], ambiguous=tie))
        else:  # no UID: orientation, size and spacing separate the series
            series.extend(_Series(c) for c in clusters)
    return sorted(series, key=lambda s: (s.slices[0].series_number or 0, -len(s.slices)))


def _choose(series: list[_Series], preferred: Path | None, where: str) -> tuple[_Series, list[str]]:
    placed = [s for s in series if s.slices[0].placed]
    if not placed:
        raise InputError(
            f"the DICOM images in '{where}' have no slice position or orientation (ImagePositionPatient/"
            "ImageOrientationPatient), e.g. screenshots or secondary captures; a CT image series is needed"
        )
    if preferred is not None:
        mine = [s for s in placed if any(x.path.resolve() == preferred for x in s.slices)]
        if mine:
            chosen = mine[0]
            if not chosen.is_ct:
                raise InputError(
                    f"'{preferred.name}' belongs to {chosen.summary()}, which is not CT (modality "
                    f"{chosen.modality or 'unknown'}); VertebralFracture needs a CT series"
                )
            return chosen, []
    cts = [s for s in placed if s.is_ct]
    if not cts:
        found = ", ".join(s.summary() for s in placed[:_LISTED]) + (" …" if len(placed) > _LISTED else "")
        modalities = ", ".join(sorted({s.modality or "unknown" for s in placed}))
        raise InputError(
            f"no CT series in '{where}': found modality {modalities} — {found}; VertebralFracture needs a CT series"
        )
    chosen = max(cts, key=lambda s: len({x.position for x in s.slices}))
    notes = []
    if len(placed) > 1:
        others = [s for s in placed if s is not chosen]
        listed = ", ".join(s.summary() for s in others[:_LISTED]) + (" …" if len(others) > _LISTED else "")
        notes.append(
            f"the input holds {len(placed)} image series; using {chosen.summary()}, the CT series with the "
            f"most slices; not used: {listed}"
        )
    return chosen, notes


# ---------------------------------------------------------------------------------------- reading
def _read_folder(
    root: Path, where: str, preferred: Path | None, notes: list[str], recursive: bool = True
) -> LoadedImage:
    scan = scan_headers(root, recursive)
    if not scan.slices:
        if scan.non_image:
            kinds = ", ".join(f"{m} ×{n}" for m, n in scan.non_image.most_common())
            raise InputError(f"no DICOM image in '{where}': its DICOM files hold no image data ({kinds})")
        if scan.unreadable:
            raise InputError(
                f"no readable DICOM file in '{where}': {len(scan.unreadable)} file(s) could not be read "
                f"({_failures(scan.unreadable)})"
            )
        hint = f"; to read '{scan.volume_files[0]}', give that file itself" if scan.volume_files else ""
        raise InputError(f"no DICOM files in '{where}' ({scan.files} file(s) looked at){hint}")
    series, choice_notes = _choose(_group_series(scan.slices), preferred, where)
    warn = list(notes)
    if scan.unreadable:
        warn.append(
            f"{len(scan.unreadable)} file(s) could not be read as DICOM and were skipped: "
            f"{_failures(scan.unreadable)}"
        )
    warn += choice_notes
    if series.ambiguous:
        raise InputError(
            f"{series.label} mixes slices of different orientation or image size in equal numbers; "
            "cannot tell which form the volume"
        )
    if series.dropped:
        warn.append(
            f"{series.label}: dropped {len(series.dropped)} slice(s) whose orientation or image size differs "
            f"from the other {len(series.slices)} ({_grid_text(series.dropped[0])} instead of "
            f"{_grid_text(series.slices[0])})"
        )
    first = series.slices[0]
    if first.samples != 1:
        raise InputError(
            f"{series.label} has {first.samples} samples per pixel (RGB); a grey-scale CT series is needed"
        )
    if not series.modality:
        warn.append(f"{series.label} does not record its modality; assumed to be CT")
    frame = slice_frame(first.orientation)  # type: ignore[arg-type]
    positions = np.array([s.position for s in series.slices], dtype=float)
    priority = [s.instance_number if s.instance_number is not None else 1e12 for s in series.slices]
    order, dup_notes = sort_and_deduplicate(positions, frame.normal, priority)
    warn += dup_notes
    if len(order) < 2:
        raise InputError(
            f"{series.label} has a single slice (a 2D image); a 3D CT series with at least 2 slices is needed"
        )
    _check_size(series, len(order))
    stack, kept, failed, printed = _decode([series.slices[i] for i in order])
    if printed and not failed:
        warn.append(f"the decoder said while decoding {series.label}: {'; '.join(printed[:2])}")
    if failed:
        if len(kept) < 2:
            raise InputError(
                f"{len(failed)} of the {len(order)} slices of {series.label} could not be decoded, "
                f"{len(kept)} left: {_failures(failed)}"
            )
        warn.append(
            f"{len(failed)} slice(s) of {series.label} could not be decoded and were skipped: "
            f"{_failures(failed)}"
        )
    positions = np.array([s.position for s in kept], dtype=float)
    sy, sx = first.pixel_spacing  # type: ignore[misc]
    plan = plan_grid(positions, frame, (sx, sy), (first.cols, first.rows))
    warn += plan.warnings
    _check_planned_grid(series, plan)
    if plan.needs_resampling:
        fill = float(stack.min())
        resampled = resample_stack(stack, plan, fill)
        stack = np.rint(resampled).astype(np.int16) if stack.dtype == np.int16 else resampled
    volume = Volume(stack, plan.spacing, tuple(plan.origin), plan.direction)
    sources, note = _source_headers(kept, plan.needs_resampling)
    return LoadedImage(volume=volume, warnings=warn, description=_describe(series, volume, len(kept)),
                       source_format="dicom", dicom_sources=sources, dicom_note=note)


def _source_headers(kept: list[SliceHeader], resampled: bool) -> tuple[list[Any], str]:
    """The headers (no pixel data) of the slices that are the volume's slices one to one, for DICOM
    outputs that reference them; or none, and why."""
    if resampled:
        return [], "the series was resampled onto a regular grid, so its slices are not the volume's"
    if any(s.frame is not None for s in kept):
        return [], "multi-frame source files are not referenced"
    import pydicom

    try:
        return [pydicom.dcmread(s.path, stop_before_pixels=True, force=s.forced) for s in kept], ""
    except (OSError, pydicom.errors.InvalidDicomError) as err:
        return [], f"the source headers could not be read again ({err})"


def _decode(slices: list[SliceHeader]) -> tuple[np.ndarray, list[SliceHeader], list[tuple[str, str]], list[str]]:
    """Pixel data in HU, ``(N, rows, cols)``: ``int16`` while every value fits, else ``float32``.

    Decoding goes through :mod:`VertebralFractureLib.io.dicom_decode`: a slice the decoders refuse
    (or crash on) is left out and named. Returns the stack, the slices kept, ``(file name, reason)``
    of those left out, and what the decoders printed meanwhile (cleaned lines).
    """
    from VertebralFractureLib.io.dicom_decode import Frame, decode_frames
    from VertebralFractureLib.thirdparty import native_messages

    rows, cols = slices[0].rows, slices[0].cols
    printed: list[str] = []
    with native_messages(printed):
        decoded = decode_frames([Frame(s.path, s.frame, s.forced) for s in slices])
    out = np.empty((len(slices), rows, cols), dtype=np.int16)
    kept: list[SliceHeader] = []
    failed: list[tuple[str, str]] = []
    for s, raw in zip(slices, decoded):
        if isinstance(raw, np.ndarray) and raw.shape != (rows, cols):
            raw = f"pixel data of shape {raw.shape}, expected {(rows, cols)}"
        if isinstance(raw, str):
            failed.append((s.path.name, raw))
            continue
        hu = _rescale(raw, s.slope, s.intercept)
        if out.dtype == np.int16 and hu.dtype != np.int16:
            out = out.astype(np.float32)
        out[len(kept)] = hu
        kept.append(s)
    return out[: len(kept)], kept, failed, printed


def _rescale(raw: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """``raw * slope + intercept`` as ``int16`` when whole and in range, else ``float32``."""
    if raw.dtype.kind in "iu" and float(slope).is_integer() and float(intercept).is_integer():
        hu = raw.astype(np.int32) * int(slope) + int(intercept)
        if hu.size == 0 or (hu.min() >= np.iinfo(np.int16).min and hu.max() <= np.iinfo(np.int16).max):
            return hu.astype(np.int16)
        return hu.astype(np.float32)
    return (raw.astype(np.float32) * np.float32(slope) + np.float32(intercept)).astype(np.float32)


def _check_size(series: _Series, n_slices: int) -> None:
    """Refuse before decoding: a spacing of zero or less, or more voxels than are supported."""
    from VertebralFractureLib.sanity import MAX_VOXELS

    first = series.slices[0]
    spacing = first.pixel_spacing or (1.0, 1.0)
    if min(spacing) <= 0:
        raise InputError(
            f"{series.label} declares a pixel spacing of {spacing[1]:g}×{spacing[0]:g} mm (PixelSpacing); "
            "a positive spacing is needed"
        )
    voxels = first.rows * first.cols * n_slices
    if voxels > MAX_VOXELS:
        raise InputError(
            f"{series.label} has {n_slices} slices of {first.cols}×{first.rows} pixels ({voxels:,} voxels), more "
            f"than the {MAX_VOXELS:,} supported; it was not decoded"
        )


def _check_planned_grid(series: _Series, plan: GridPlan) -> None:
    """Refuse a resampling grid over the voxel limit (e.g. slices far apart on a fine spacing)."""
    from VertebralFractureLib.sanity import MAX_VOXELS

    voxels = int(np.prod(plan.size_xyz, dtype=np.int64))
    if voxels > MAX_VOXELS:
        raise InputError(
            f"{series.label} would need a grid of {voxels:,} voxels, more than the {MAX_VOXELS:,} supported"
        )


# ---------------------------------------------------------------------------------------- small helpers
def _names(items: Iterable[str]) -> str:
    items = list(items)
    return "; ".join(items[:_LISTED]) + (f"; and {len(items) - _LISTED} more" if len(items) > _LISTED else "")


def _failures(items: list[tuple[str, str]]) -> str:
    """``a.dcm, b.dcm (reason); c.dcm (other reason)``: files grouped by the same reason."""
    by_reason: dict[str, list[str]] = {}
    for name, reason in items:
        by_reason.setdefault(reason, []).append(name)
    parts = []
    for reason, names in list(by_reason.items())[:3]:
        shown = ", ".join(names[:_LISTED]) + (f" and {len(names) - _LISTED} more" if len(names) > _LISTED else "")
        parts.append(f"{shown} ({reason})")
    if len(by_reason) > 3:
        parts.append(f"{sum(len(n) for n in list(by_reason.values())[3:])} more for other reasons")
    return "; ".join(parts)


def _grid_text(s: SliceHeader) -> str:
    if not s.placed:
        return f"{s.cols}×{s.rows} without position"
    iop = ", ".join(f"{v:.3g}" for v in s.orientation)  # type: ignore[union-attr]
    return f"{s.cols}×{s.rows}, orientation [{iop}], pixel spacing {s.pixel_spacing[1]:.3g}×{s.pixel_spacing[0]:.3g} mm"  # type: ignore[index]


def _describe(series: _Series, volume: Volume, n_slices: int) -> str:
    from pydicom.uid import UID

    ts = series.slices[0].transfer_syntax
    ts_name = UID(ts).name if ts else "unknown transfer syntax"
    nx, ny, nz = volume.shape_xyz
    sx, sy, sz = volume.spacing
    return (
        f"DICOM CT {series.label}, {n_slices} slices, {nx}×{ny}×{nz} voxels of {sx:.3f}×{sy:.3f}×{sz:.3f} mm, "
        f"{ts_name}"
    )
