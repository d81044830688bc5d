"""What a NIfTI, NRRD or MetaImage header declares, checked against the file before any voxel is read.

ITK allocates the whole image its header declares before it reads a byte of voxel data: a 95-byte
file that declares 1024×1024×1024 voxels costs 2 GiB of memory before it fails. A NIfTI file cut
short is even read without complaint, its missing part filled with zeros. And a spacing of 0 in a
NIfTI header is silently read as 1 mm. So before ITK reads the voxels, the header is read here and

* every spacing it declares must be positive and finite;
* the image must not exceed :data:`VertebralFractureLib.sanity.MAX_VOXELS` voxels;
* the file (or the detached data file) must be able to hold the declared voxels: uncompressed data
  needs the declared bytes; compressed data cannot expand more than :data:`MAX_DEFLATE_RATIO`-fold
  (deflate's limit is about 1032:1), and a ``.nii.gz`` must decompress to the declared size.

A header this module cannot make sense of is left to ITK, whose own error is then reported.
"""

from __future__ import annotations

import gzip
import math
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from VertebralFractureLib.errors import InputError

#: The most a deflate (gzip, zlib) stream can expand: about 1032:1, with some headroom.
MAX_DEFLATE_RATIO = 1100
#: Largest text header read (bytes).
_MAX_HEADER = 1 << 16

_NRRD_TYPE_BYTES = {
    "signed char": 1, "int8": 1, "int8_t": 1, "uchar": 1, "unsigned char": 1, "uint8": 1, "uint8_t": 1,
    "short": 2, "short int": 2, "signed short": 2, "signed short int": 2, "int16": 2, "int16_t": 2,
    "ushort": 2, "unsigned short": 2, "unsigned short int": 2, "uint16": 2, "uint16_t": 2,
    "int": 4, "signed int": 4, "int32": 4, "int32_t": 4, "uint": 4, "unsigned int": 4, "uint32": 4,
    "uint32_t": 4, "longlong": 8, "long long": 8, "long long int": 8, "signed long long": 8,
    "signed long long int": 8, "int64": 8, "int64_t": 8, "ulonglong": 8, "unsigned long long": 8,
    "unsigned long long int": 8, "uint64": 8, "uint64_t": 8, "float": 4, "double": 8,
}
_MET_TYPE_BYTES = {
    "MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
    "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8,
}


@dataclass(frozen=True)
class DeclaredLayout:
    """Where a header says the voxels are and how many bytes they take.

    Attributes:
        sizes: values along each stored axis (components included for NRRD).
        value_bytes: bytes per stored value.
        spacing: ``(where, value)`` of each spatial spacing the header declares, e.g. ``("pixdim[1]", 0.0)``.
        data_file: the file holding the voxels; None when it cannot be checked (file lists, patterns).
        offset: bytes before the voxels in ``data_file``; None: the voxels are at the end of the file.
        encoding: ``"raw"``, ``"deflate"`` (gzip or zlib) or ``"other"`` (text, bzip2: not size-checked).
    """

    sizes: tuple[int, ...]
    value_bytes: int
    spacing: tuple[tuple[str, float], ...]
    data_file: Path | None
    offset: int | None
    encoding: str

    @property
    def data_bytes(self) -> int:
        return math.prod(self.sizes) * self.value_bytes


def check_declared(p: Path, fmt: str, voxels: int) -> None:
    """Refuse a header whose spacing, size or data the file cannot back, before the voxels are read.

    Args:
        p: the image file (``.nhdr``/``.mhd``: the header file).
        fmt: ``"nifti"``, ``"nrrd"`` or ``"mha"``.
        voxels: the number of voxels (3D) the image reader reports from the header.

    Raises:
        InputError: naming the file and what does not fit.
    """
    from VertebralFractureLib.sanity import MAX_VOXELS

    if voxels > MAX_VOXELS:
        raise InputError(
            f"'{p.name}' declares {voxels:,} voxels, more than the {MAX_VOXELS:,} supported; "
            "it was not read (crop or resample it first)"
        )
    if fmt == "nifti":
        _check_nifti(p)
        return
    try:
        layout = _nrrd_layout(p) if fmt == "nrrd" else _mha_layout(p)
    except (OSError, ValueError, KeyError, IndexError):
        return  # left to ITK
    if layout is None:
        return
    _check_spacing(p, layout.spacing)
    _check_data_size(p, layout)


# ---------------------------------------------------------------------------------------- common
def _check_spacing(p: Path, spacing: tuple[tuple[str, float], ...]) -> None:
    for where, value in spacing:
        if not math.isfinite(value) or value <= 0:
            raise InputError(
                f"'{p.name}' declares a voxel spacing of {value:g} mm ({where}); a positive spacing is needed "
                "(the file was not read: a reader would silently put 1 mm in its place)"
            )


def _gib(n: int) -> str:
    return f"{n / 1024**3:.1f} GiB" if n >= 1024**3 else f"{n / 1024**2:.1f} MiB" if n >= 1024**2 else f"{n} bytes"


def _check_data_size(p: Path, layout: DeclaredLayout) -> None:
    if layout.data_file is None or layout.encoding == "other":
        return
    if not layout.data_file.is_file():
        raise InputError(f"'{p.name}': the data file '{layout.data_file.name}' its header names does not exist")
    size = layout.data_file.stat().st_size
    available = size if layout.offset is None else max(size - layout.offset, 0)
    need = layout.data_bytes
    declared = (f"its header declares {'×'.join(map(str, layout.sizes))} values of {layout.value_bytes} "
                f"byte(s) ({_gib(need)})")
    where = "the file" if layout.data_file == p else f"the data file '{layout.data_file.name}'"
    if layout.encoding == "raw" and available < need:
        raise InputError(
            f"'{p.name}' is truncated or its header is wrong: {declared}, {where} holds {available} bytes of voxel data; "
            "it was not read"
        )
    if layout.encoding == "deflate" and need > MAX_DEFLATE_RATIO * max(available, 1):
        raise InputError(
            f"'{p.name}' is truncated or its header is wrong: {declared}, more than the {available} bytes of "
            f"compressed data in {where} can hold; it was not read"
        )


def _text_header(p: Path) -> tuple[list[str], int]:
    """The lines of a text header up to its first blank line, and the byte offset after it."""
    with open(p, "rb") as fh:
        head = fh.read(_MAX_HEADER)
    end = len(head)
    for sep in (b"\n\n", b"\r\n\r\n"):
        i = head.find(sep)
        if i >= 0:
            end = min(end, i + len(sep))
    return head[:end].decode("latin-1").splitlines(), end


# ---------------------------------------------------------------------------------------- NRRD
def _nrrd_layout(p: Path) -> DeclaredLayout | None:
    lines, header_end = _text_header(p)
    if not lines or not lines[0].startswith("NRRD"):
        return None
    fields: dict[str, str] = {}
    for line in lines[1:]:
        if line.startswith("#") or ":" not in line or ":=" in line:
            continue
        key, value = line.split(":", 1)
        fields[key.strip().lower()] = value.strip()
    sizes = tuple(int(v) for v in fields["sizes"].split())
    value_bytes = _NRRD_TYPE_BYTES.get(" ".join(fields["type"].lower().split()))
    if value_bytes is None or any(n < 0 for n in sizes):
        return None
    spacing: list[tuple[str, float]] = []
    if "space directions" in fields:
        vectors = re.findall(r"\(([^)]*)\)", fields["space directions"])
        for k, vec in enumerate(vectors):
            norm = float(np.linalg.norm([float(x) for x in vec.split(",")]))
            spacing.append((f"space directions, axis {k + 1}", norm))
    elif "spacings" in fields:
        for k, v in enumerate(fields["spacings"].split()):
            if v.lower() != "nan":  # NaN marks a non-spatial axis
                spacing.append((f"spacings, axis {k + 1}", float(v)))
    encoding = fields.get("encoding", "raw").lower()
    kind = "raw" if encoding == "raw" else "deflate" if encoding in ("gzip", "gz") else "other"
    data_name = fields.get("data file", fields.get("datafile"))
    skip = int(fields.get("byte skip", fields.get("byteskip", "0")))
    if data_name is None:
        data_file: Path | None = p
        offset: int | None = header_end + max(skip, 0)
    elif data_name.upper().startswith("LIST") or "%" in data_name or " " in data_name:
        data_file, offset = None, None
    else:
        data_file = (p.parent / data_name) if not Path(data_name).is_absolute() else Path(data_name)
        offset = max(skip, 0)
    if skip == -1:
        offset = None
    return DeclaredLayout(sizes, value_bytes, tuple(spacing), data_file, offset, kind)


# ---------------------------------------------------------------------------------------- MetaImage
def _mha_layout(p: Path) -> DeclaredLayout | None:
    with open(p, "rb") as fh:
        head = fh.read(_MAX_HEADER)
    fields: dict[str, str] = {}
    header_end = None
    position = 0
    for raw in head.split(b"\n"):
        position += len(raw) + 1
        line = raw.decode("latin-1").strip()
        if "=" not in line:
            continue
        key, value = (s.strip() for s in line.split("=", 1))
        fields[key.lower()] = value
        if key.lower() == "elementdatafile":
            header_end = position
            break
    if header_end is None or "dimsize" not in fields:
        return None
    sizes = tuple(int(v) for v in fields["dimsize"].split())
    channels = int(fields.get("elementnumberofchannels", "1"))
    value_bytes = _MET_TYPE_BYTES.get(fields.get("elementtype", "").upper())
    if value_bytes is None or any(n < 0 for n in sizes):
        return None
    spacing_text = fields.get("elementspacing", fields.get("elementsize"))
    spacing = tuple((f"ElementSpacing[{k}]", float(v)) for k, v in enumerate(spacing_text.split()[:3])) \
        if spacing_text else ()
    binary = fields.get("binarydata", "true").lower() in ("true", "1", "yes")
    compressed = fields.get("compresseddata", "false").lower() in ("true", "1", "yes")
    kind = "other" if not binary else "deflate" if compressed else "raw"
    data_name = fields["elementdatafile"]
    header_size = int(fields.get("headersize", "0"))
    if data_name.upper() == "LOCAL":
        data_file: Path | None = p
        offset: int | None = header_end
    elif data_name.upper().startswith("LIST") or "%" in data_name or " " in data_name:
        data_file, offset = None, None
    else:
        data_file = (p.parent / data_name) if not Path(data_name).is_absolute() else Path(data_name)
        offset = None if header_size == -1 else max(header_size, 0)
    return DeclaredLayout((*sizes, channels) if channels > 1 else sizes, value_bytes, spacing, data_file, offset, kind)


# ---------------------------------------------------------------------------------------- NIfTI
@dataclass(frozen=True)
class NiftiHeader:
    """The fields of a NIfTI-1/2 header this module uses."""

    endian: str
    dims: tuple[int, ...]
    datatype: int
    bitpix: int
    offset: int
    pixdim: tuple[float, ...]


def nifti_header(header: bytes) -> NiftiHeader | None:
    """The layout fields of a NIfTI-1/2 header; None if ``header`` is not one."""
    for endian in "<>":
        if len(header) >= 348 and struct.unpack(endian + "i", header[:4])[0] == 348:
            dims = struct.unpack(endian + "8h", header[40:56])
            datatype, bitpix = struct.unpack(endian + "2h", header[70:74])
            pixdim = struct.unpack(endian + "8f", header[76:108])
            offset = int(struct.unpack(endian + "f", header[108:112])[0])
        elif len(header) >= 540 and struct.unpack(endian + "i", header[:4])[0] == 540:
            datatype, bitpix = struct.unpack(endian + "2h", header[12:16])
            dims = struct.unpack(endian + "8q", header[16:80])
            pixdim = struct.unpack(endian + "8d", header[104:168])
            offset = struct.unpack(endian + "q", header[168:176])[0]
        else:
            continue
        return NiftiHeader(endian, tuple(int(d) for d in dims), int(datatype), int(bitpix), int(offset),
                           tuple(float(x) for x in pixdim))
    return None


def nifti_data_end(header: bytes) -> int | None:
    """Bytes a NIfTI-1/2 file must hold (``vox_offset`` + voxel data), from its header; None if unknown."""
    h = nifti_header(header)
    if h is None:
        return None
    ndim = h.dims[0]
    if not 1 <= ndim <= 7 or h.bitpix <= 0:
        return None
    return h.offset + math.prod(max(n, 1) for n in h.dims[1 : ndim + 1]) * h.bitpix // 8


def _check_nifti(p: Path) -> None:
    """Spacing, and a file that holds what the header declares.

    ``.nii``: the file size; ``.nii.gz``: first the deflate bound, then the gzip trailer's size
    field, and when that disagrees (multi-member gzip, > 4 GiB) a count of the decompressed bytes
    (streamed, nothing kept).
    """
    compressed = p.name.lower().endswith(".gz")
    try:
        with (gzip.open(p, "rb") if compressed else open(p, "rb")) as fh:
            header = fh.read(540)
        h = nifti_header(header)
        if h is None:
            return
        ndim = h.dims[0]
        _check_spacing(p, tuple((f"pixdim[{k}]", h.pixdim[k]) for k in range(1, min(ndim, 3) + 1)))
        end = nifti_data_end(header)
        if end is None:
            return
        file_size = p.stat().st_size
        if not compressed:
            size = file_size
        elif end > MAX_DEFLATE_RATIO * max(file_size, 1):
            size = None
        else:
            with open(p, "rb") as fh:
                fh.seek(-4, 2)
                size = struct.unpack("<I", fh.read(4))[0]
            if size != end % 2**32:
                size = 0
                with gzip.open(p, "rb") as fh:
                    while chunk := fh.read(1 << 22):
                        size += len(chunk)
    except (OSError, EOFError, zlib.error, struct.error) as err:
        raise InputError(f"'{p.name}' is damaged or truncated: {err}") from err
    if size is None:
        raise InputError(
            f"'{p.name}' is truncated or its header is wrong: its header needs {end} bytes (header and voxels), "
            f"more than its {file_size} compressed bytes can hold"
        )
    if size < end:
        raise InputError(
            f"'{p.name}' is truncated: its header needs {end} bytes (header and voxels), the file holds {size}"
        )


#: NIfTI datatype codes of floating-point voxels and their numpy types.
_NIFTI_FLOATS = {16: "f4", 64: "f8"}


def check_nifti_finite(p: Path) -> None:
    """Refuse a floating-point NIfTI that stores NaN or infinite values.

    ITK's NIfTI reader turns them into 0 without a word (SimpleITK 2.5), which would make up tissue
    values; the file's voxels are therefore counted here, streamed, nothing kept.

    Raises:
        InputError: with the number of such voxels (the message of
            :func:`VertebralFractureLib.sanity.check_values`).
    """
    from VertebralFractureLib.sanity import nonfinite_message

    compressed = p.name.lower().endswith(".gz")
    try:
        with (gzip.open(p, "rb") if compressed else open(p, "rb")) as fh:
            h = nifti_header(fh.read(540))
            if h is None or h.datatype not in _NIFTI_FLOATS or not 1 <= h.dims[0] <= 7:
                return
            dtype = np.dtype(h.endian + _NIFTI_FLOATS[h.datatype])
            total = math.prod(max(n, 1) for n in h.dims[1 : h.dims[0] + 1])
            fh.seek(h.offset)
            bad, left = 0, total
            while left > 0:
                chunk = fh.read(min(left, 1 << 20) * dtype.itemsize)
                if not chunk:
                    break
                values = np.frombuffer(chunk[: len(chunk) - len(chunk) % dtype.itemsize], dtype=dtype)
                bad += int(values.size - np.count_nonzero(np.isfinite(values)))
                left -= values.size
    except (OSError, EOFError, zlib.error) as err:
        raise InputError(f"'{p.name}' is damaged or truncated: {err}") from err
    if bad:
        raise InputError(nonfinite_message(p.name, bad, total))
