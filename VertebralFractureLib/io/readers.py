"""Reading input images (NIfTI, NRRD, MetaImage, DICOM) into :class:`Volume` and writing volumes.

Volume formats are read with SimpleITK, which converts every format to ITK's LPS convention, so the
geometry (spacing, origin and an oblique direction too) is kept exactly as stored. DICOM is read by
:mod:`VertebralFractureLib.io.dicom` (series choice, slice ordering, gaps, gantry tilt).

Values are never rescaled: a CT stored as HU stays HU. Integer images become ``int16`` when their
values fit (``int32`` otherwise), floating-point images become ``float32``.

Before any voxel is read, the header is checked against the file
(:mod:`VertebralFractureLib.io.volume_headers`: positive spacing, a supported size, a file that can
hold the declared voxels), and what ITK prints while reading comes back as a warning of one line.
Whether the image is a CT an analysis can use is a separate question: :mod:`VertebralFractureLib.sanity`.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from VertebralFractureLib.errors import InputError
from VertebralFractureLib.io.loaded_image import LoadedImage
from VertebralFractureLib.volume import Volume

#: File name endings of the volume formats SimpleITK reads for us, with their ``source_format``.
VOLUME_SUFFIXES: dict[str, str] = {
    ".nii.gz": "nifti",
    ".nii": "nifti",
    ".nrrd": "nrrd",
    ".nhdr": "nrrd",
    ".mha": "mha",
    ".mhd": "mha",
}
#: Endings :func:`write_volume` accepts.
WRITE_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".mha")
#: A labelmap may be off the reference grid by this much (mm, at any voxel) and still be accepted.
LABELMAP_GEOMETRY_TOLERANCE_MM = 1e-3

_FORMAT_NAMES = {"nifti": "NIfTI", "nrrd": "NRRD", "mha": "MetaImage"}
_SUPPORTED = "NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd), a DICOM folder, a .zip of a DICOM series or a DICOM file"


# ---------------------------------------------------------------------------------------- reading
def read_image(path: str | Path) -> LoadedImage:
    """Read a 3D image: a volume file, a DICOM folder, a zip of a DICOM series or one DICOM file.

    A single DICOM file stands for its series: the folder holding it is read and the file's own
    series is chosen.

    Args:
        path: a ``.nii``/``.nii.gz``/``.nrrd``/``.nhdr``/``.mha``/``.mhd`` file, a folder of DICOM
            files, a ``.zip`` of DICOM files, or a DICOM file.

    Returns:
        The volume (values as stored, HU for CT), warnings, a description and the format.

    Raises:
        InputError: when the path does not exist, its format is unknown, the file cannot be read,
            its header declares a spacing of zero or less, more voxels than supported or more data
            than the file holds, a floating-point NIfTI holds NaN or infinite values, or the image
            is not a scalar 3D volume (2D, single slice, RGB, 4D).
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"input not found: '{p}' does not exist")
    fmt = _format_of(p)
    if fmt == "dicom":
        from VertebralFractureLib.io.dicom import read_dicom

        return read_dicom(p)
    image, notes = _read_sitk(p, fmt)
    volume = _volume_of(image, p)
    volume = volume.with_array(_sensible_dtype(volume.array))
    if min(volume.shape_xyz) < 2:
        raise InputError(
            f"'{p.name}' holds a single slice (size {_size_text(volume)}); a 3D volume with at least "
            "2 voxels along each axis is needed"
        )
    return LoadedImage(volume=volume, warnings=notes, description=_describe(volume, fmt), source_format=fmt)


def _volume_of(image: object, p: Path) -> Volume:
    """The volume of an image ITK read; a header whose axes are not orthogonal is refused."""
    try:
        return Volume.from_sitk(image)
    except ValueError as err:
        if "orthonormal" not in str(err):
            raise
        raise InputError(f"'{p.name}' has axes that are not at right angles (a sheared or skewed grid in its "
                         "header); resample it onto an orthogonal grid first (e.g. Slicer's Resample Image)") from err


def read_labelmap(path: str | Path, reference: Volume | None = None) -> Volume:
    """Read an integer labelmap (e.g. VerSe vertebra labels), optionally checked against its image.

    Labels stored as floating point are accepted when every value is a whole number. The result is
    ``uint8`` when all labels fit, else ``uint16``/``int32``.

    Args:
        path: a NIfTI, NRRD or MetaImage file.
        reference: the image the labelmap belongs to. When given, the labelmap must have the same
            grid; a difference of at most :data:`LABELMAP_GEOMETRY_TOLERANCE_MM` at any voxel
            (rounding in the file header) is forgiven and the reference geometry is adopted.

    Returns:
        The labelmap volume.

    Raises:
        InputError: for a missing or unreadable file, non-integer or negative values, a non-3D or
            multi-component image, or a grid that differs from ``reference``.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"labelmap not found: '{p}' does not exist")
    fmt = _format_of(p)
    if fmt == "dicom":
        raise InputError(f"'{p.name}': labelmaps are read from NIfTI, NRRD or MetaImage files, not DICOM")
    image, _ = _read_sitk(p, fmt)
    volume = _volume_of(image, p)
    array = _label_dtype(volume.array, p.name)
    if reference is None:
        return volume.with_array(array)
    if volume.array.shape != reference.array.shape:
        raise InputError(
            f"labelmap '{p.name}' has size {_size_text(volume)} but the image has size {_size_text(reference)}; "
            "the labelmap must be on the image's voxel grid"
        )
    distance = max_grid_distance_mm(volume, reference)
    if distance > LABELMAP_GEOMETRY_TOLERANCE_MM:
        raise InputError(
            f"labelmap '{p.name}' is not on the image's voxel grid: voxel positions differ by up to "
            f"{distance:.4g} mm (allowed {LABELMAP_GEOMETRY_TOLERANCE_MM:g} mm); labelmap spacing "
            f"{_fmt3(volume.spacing)} origin {_fmt3(volume.origin)}, image spacing {_fmt3(reference.spacing)} "
            f"origin {_fmt3(reference.origin)}"
        )
    return reference.with_array(array)


def max_grid_distance_mm(a: Volume, b: Volume) -> float:
    """Largest distance (mm) between the LPS positions of the same voxel index in two equal-size grids.

    Both index-to-LPS maps are affine, so the largest difference is found at one of the 8 corners.
    """
    if a.array.shape != b.array.shape:
        raise ValueError(f"grids differ in size: {a.array.shape} vs {b.array.shape}")
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in a.shape_xyz], indexing="ij")).reshape(3, -1).T
    return float(np.max(np.linalg.norm(a.index_to_lps(corners) - b.index_to_lps(corners), axis=1)))


# ---------------------------------------------------------------------------------------- writing
def write_volume(volume: Volume, path: str | Path, compress: bool = True) -> None:
    """Write a volume as ``.nii.gz``, ``.nii``, ``.nrrd`` or ``.mha`` with its exact LPS geometry.

    Integer arrays stay integer (labelmaps remain labelmaps); booleans are written as ``uint8`` and
    64-bit integers as ``int32`` when the values fit. Missing parent folders are created.

    Args:
        volume: the volume to write.
        path: the output file; its ending picks the format.
        compress: compress the voxel data (``.nii.gz`` is always compressed, ``.nii`` never).

    Raises:
        ValueError: for an unsupported file ending.
        OSError: when the file cannot be written.
    """
    import SimpleITK as sitk

    p = Path(path).expanduser()
    suffix = _suffix(p)
    if suffix not in WRITE_SUFFIXES:
        raise ValueError(f"cannot write '{p.name}': the file name must end with one of {', '.join(WRITE_SUFFIXES)}")
    array = volume.array
    if array.dtype == bool:
        array = array.astype(np.uint8)
    elif array.dtype.kind in "iu" and array.dtype.itemsize == 8:
        lo, hi = (int(array.min()), int(array.max())) if array.size else (0, 0)
        if np.iinfo(np.int32).min <= lo and hi <= np.iinfo(np.int32).max:
            array = array.astype(np.int32)
    image = volume.with_array(array).to_sitk() if array is not volume.array else volume.to_sitk()
    p.parent.mkdir(parents=True, exist_ok=True)
    try:
        sitk.WriteImage(image, str(p), useCompression=bool(compress) or suffix == ".nii.gz")
    except RuntimeError as err:
        raise OSError(f"could not write '{p}': {_first_line(err)}") from err


# ---------------------------------------------------------------------------------------- helpers
def _suffix(p: Path) -> str:
    name = p.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else p.suffix.lower()


def _format_of(p: Path) -> str:
    """``"dicom"`` or a key of :data:`VOLUME_SUFFIXES`, from the name first and the content second."""
    if p.is_dir():
        return "dicom"
    suffix = _suffix(p)
    if suffix in VOLUME_SUFFIXES:
        return VOLUME_SUFFIXES[suffix]
    if suffix in (".zip", ".dcm", ".dicom", ".ima") or zipfile.is_zipfile(p):
        return "dicom"
    try:
        with open(p, "rb") as fh:
            head = fh.read(352)
    except OSError as err:
        raise InputError(f"cannot read '{p.name}': {err.strerror or err}") from err
    if head[128:132] == b"DICM":
        return "dicom"
    if head[:4] == b"NRRD":
        return "nrrd"
    if head[344:348] in (b"n+1\0", b"ni1\0"):
        return "nifti"
    if head.lstrip()[:10] in (b"ObjectType", b"NDims = 3\n") or b"ElementDataFile" in head:
        return "mha"
    raise InputError(f"unknown image format: '{p.name}'. Supported: {_SUPPORTED}")


def _read_sitk(p: Path, fmt: str):
    """Read with SimpleITK after checking the header: scalar, 3D (a 4D image with one frame is taken).

    What ITK prints meanwhile (e.g. "unexpected scales in sform") comes back as one note a message.
    """
    import SimpleITK as sitk

    from VertebralFractureLib.thirdparty import native_messages

    printed: list[str] = []
    with _readable_path(p, fmt) as readable, native_messages(printed):
        image, notes = _read_sitk_file(sitk, readable, p, fmt)
    notes += [f"ITK, reading '{p.name}': {m}" for m in printed]
    return image, notes


_CANONICAL_SUFFIX = {"nifti": ".nii", "nrrd": ".nrrd", "mha": ".mha"}


@contextmanager
def _readable_path(p: Path, fmt: str) -> Iterator[Path]:
    """A path ITK reads ``p`` from.

    ITK picks its reader by the file name, so a file recognised by its content gets a link with the
    right ending. And ITK's NIfTI reader, given ``scan.nii.gz``, reads ``scan.nii`` instead when that
    file exists (SimpleITK 2.5): such a file is read through a link under a unique name too.
    """
    suffix = _suffix(p)
    if suffix == ".nii.gz" and p.with_name(p.name[: -len(".gz")]).exists():
        link_name = "image.nii.gz"
    elif suffix not in VOLUME_SUFFIXES:
        link_name = "image" + _CANONICAL_SUFFIX[fmt]
    else:
        yield p
        return
    with tempfile.TemporaryDirectory(prefix="vf-image-") as tmp:
        link = Path(tmp) / link_name
        try:
            link.symlink_to(p.resolve())
        except OSError:  # no symlinks (e.g. Windows without privilege)
            shutil.copyfile(p, link)
        yield link


def _read_sitk_file(sitk, readable: Path, p: Path, fmt: str):
    from VertebralFractureLib.io.volume_headers import check_declared

    name = _FORMAT_NAMES[fmt]
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(readable))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise InputError(f"cannot read '{p.name}' as {name}: {_first_line(err, readable)}") from err
    dim, size = reader.GetDimension(), reader.GetSize()
    if reader.GetNumberOfComponents() != 1:
        raise InputError(
            f"'{p.name}' is a multi-component image ({reader.GetNumberOfComponents()} values per voxel, "
            "e.g. RGB); a scalar CT volume is needed"
        )
    notes: list[str] = []
    if dim == 2:
        raise InputError(f"'{p.name}' is a 2D image (size {'×'.join(map(str, size))}); a 3D volume is needed")
    if dim == 4 and size[3] != 1:
        raise InputError(
            f"'{p.name}' is a 4D image (size {'×'.join(map(str, size))}); a 3D volume is needed "
            "(extract one time point or channel first)"
        )
    if dim not in (3, 4):
        raise InputError(f"'{p.name}' is a {dim}D image; a 3D volume is needed")
    check_declared(p, fmt, int(np.prod([int(n) for n in size[:3]], dtype=np.int64)))
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise InputError(
            f"cannot read the voxel data of '{p.name}' ({name}), the file is damaged or incomplete: "
            f"{_first_line(err, readable)}"
        ) from err
    if fmt == "nifti" and image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        from VertebralFractureLib.io.volume_headers import check_nifti_finite

        check_nifti_finite(p)
    if dim == 4:
        image = sitk.Extract(image, [*size[:3], 0], [0, 0, 0, 0])
        notes.append(f"'{p.name}' is stored as 4D with a single time point; read as 3D")
    return image, notes


def _sensible_dtype(array: np.ndarray) -> np.ndarray:
    """``int16`` for integers that fit (``int32`` otherwise), ``float32`` for floating point."""
    if array.dtype.kind == "f":
        return array.astype(np.float32, copy=False)
    if array.dtype.kind == "b":
        return array.astype(np.int16)
    if array.dtype.kind in "iu":
        if array.dtype == np.int16:
            return array
        lo, hi = (int(array.min()), int(array.max())) if array.size else (0, 0)
        i16 = np.iinfo(np.int16)
        if i16.min <= lo and hi <= i16.max:
            return array.astype(np.int16)
        i32 = np.iinfo(np.int32)
        if i32.min <= lo and hi <= i32.max:
            return array.astype(np.int32, copy=False)
        return array.astype(np.float32)
    raise InputError(f"unsupported voxel type {array.dtype}; a scalar integer or floating-point image is needed")


def _label_dtype(array: np.ndarray, name: str) -> np.ndarray:
    """Whole, non-negative labels as the smallest unsigned type (``int32`` beyond ``uint16``)."""
    if array.dtype.kind == "b":
        return array.astype(np.uint8)
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)):
            raise InputError(f"labelmap '{name}' contains NaN or infinite values")
        rounded = np.rint(array)
        if np.max(np.abs(array - rounded), initial=0.0) > 1e-3:
            raise InputError(
                f"labelmap '{name}' has non-integer values (e.g. {array[np.abs(array - rounded) > 1e-3].flat[0]:g}); "
                "a labelmap holds whole label numbers — is this an intensity image?"
            )
        array = rounded
    elif array.dtype.kind not in "iu":
        raise InputError(f"labelmap '{name}' has unsupported voxel type {array.dtype}")
    lo, hi = (int(array.min()), int(array.max())) if array.size else (0, 0)
    if lo < 0:
        raise InputError(
            f"labelmap '{name}' has negative values (minimum {lo}); labels are 0 (background) or positive "
            "— is this a CT image?"
        )
    for dtype in (np.uint8, np.uint16, np.int32):
        if hi <= np.iinfo(dtype).max:
            return array.astype(dtype)
    raise InputError(f"labelmap '{name}' has labels up to {hi}, beyond the supported {np.iinfo(np.int32).max}")


def _first_line(err: BaseException, path: Path | None = None) -> str:
    """The informative line of an ITK exception (they span several lines with file/line noise)."""
    text = str(err)
    if path is not None:
        text = text.replace(str(path), path.name)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in lines:
        if "Description:" in ln:
            return ln.split("Description:", 1)[1].strip()
    if lines and "Unable to determine ImageIO reader" in lines[-1]:
        return "not a valid image file of this type (damaged, truncated or misnamed)"
    return lines[-1] if lines else type(err).__name__


def _fmt3(values) -> str:
    return "(" + ", ".join(f"{v:.4f}" for v in values) + ")"


def _size_text(volume: Volume) -> str:
    return "×".join(str(n) for n in volume.shape_xyz)


def _describe(volume: Volume, fmt: str) -> str:
    sx, sy, sz = volume.spacing
    return (
        f"{_FORMAT_NAMES[fmt]} image, {_size_text(volume)} voxels of {sx:.3f}×{sy:.3f}×{sz:.3f} mm, "
        f"{volume.array.dtype}"
    )
