"""Write the output contract (ARCHITECTURE §3) of one analysis into a folder, atomically.

Every file is written into a temporary folder beside the destination; only when all of them are
written is the folder renamed into place. A failure removes the temporary folder, so a crash or
an error never leaves half a result behind. An existing destination is an
:class:`~VertebralFractureLib.errors.OutputExistsError` unless ``overwrite`` is asked for; then the
old folder is replaced only after the new one is complete.

:func:`check_destination` is the check a command runs before any work: the destination is not,
does not hold and does not lie inside an input (an ``--overwrite`` there would delete the input),
its folder is a folder one can write in, and the disk has :data:`MIN_FREE_BYTES` free.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from VertebralFractureLib.analysis import Analysis
from VertebralFractureLib.errors import OutputError, OutputExistsError
from VertebralFractureLib.interrupts import deferred_signals
from VertebralFractureLib.volume import Volume

ProgressCallback = Callable[[float, str], None]

#: The contract's file names.
ANALYSIS_JSON = "analysis.json"
VERTEBRAE_NII = "vertebrae.nii.gz"
FRACTURE_NII = "fracture.nii.gz"
SEGMENTATION = "segmentation.seg.nrrd"
CENTROIDS_MRK = "centroids.mrk.json"
KEYPOINTS_MRK = "keypoints.mrk.json"
CENTROIDS_CTD = "centroids_ctd.json"
REPORT_CSV = "report.csv"
REPORT_HTML = "report.html"
SPINE3D_PNG = "spine3d.png"

#: Size of ``spine3d.png`` (width, height).
SPINE3D_SIZE = (800, 1000)
#: Free space the destination's disk must have before an analysis starts (bytes).
MIN_FREE_BYTES = 100 * 1024**2


def check_destination(out_dir: str | Path, overwrite: bool = False, inputs: tuple[str | Path | None, ...] = (),
                      overwrite_hint: str = "overwrite") -> Path:
    """Check, before any work, that results can be written to ``out_dir`` without harm.

    Args:
        out_dir: the output folder.
        overwrite: an existing folder may be replaced.
        inputs: the paths the command reads (files or folders; None entries are ignored).
        overwrite_hint: how the caller names the overwrite option in messages (``--overwrite``).

    Returns:
        The absolute output path.

    Raises:
        OutputError: the output is an input, lies inside one or holds one (symbolic links
            followed); the nearest existing folder above it is a file or cannot be written in;
            fewer than :data:`MIN_FREE_BYTES` are free there.
        OutputExistsError: it exists and ``overwrite`` is False, or it is a file.
    """
    out = Path(out_dir).expanduser().absolute()
    real_out = out.resolve()
    for given in inputs:
        if given is None:
            continue
        real_in = Path(given).expanduser().resolve()
        if real_out == real_in:
            raise OutputError(f"the output {out} is the input itself; choose a new folder for the results")
        if real_out.is_relative_to(real_in):
            raise OutputError(f"the output {out} lies inside the input {given}; choose a folder outside it")
        if real_in.is_relative_to(real_out):
            raise OutputError(
                f"the output {out} holds the input {given} (it would be replaced); choose a new folder for the results"
            )
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise OutputExistsError(f"output path {out} exists and is not a folder")
        if not overwrite:
            raise OutputExistsError(f"output folder {out} already exists (use {overwrite_hint} to replace it)")
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"cannot create {out}: {parent} is a file, not a folder")
    try:
        with deferred_signals():  # never leave the probe behind
            os.rmdir(tempfile.mkdtemp(prefix=f".{out.name}.probe-", dir=parent))
    except OSError as err:
        raise OutputError(f"cannot write in {parent}: {err.strerror or err}") from err
    try:
        free = shutil.disk_usage(parent).free
    except OSError:
        free = None
    if free is not None and free < MIN_FREE_BYTES:
        raise OutputError(
            f"only {free / 1024**2:.0f} MiB free on the disk of {parent}; the results need at least "
            f"{MIN_FREE_BYTES / 1024**2:.0f} MiB"
        )
    return out


def write_outputs(analysis: Analysis, out_dir: str | Path, overwrite: bool = False,
                  progress: ProgressCallback | None = None, dicom_sources: Sequence[Any] | None = None,
                  dicom_note: str = "") -> Path:
    """Write every contract file of ``analysis`` into ``out_dir``.

    Files: ``analysis.json``, ``vertebrae.nii.gz`` and ``fracture.nii.gz`` (when the maps exist),
    ``segmentation.seg.nrrd`` (with a labelmap), ``centroids.mrk.json``, ``keypoints.mrk.json``
    (when any vertebra has keypoints), ``centroids_ctd.json``, ``report.csv``, ``report.html`` and
    ``spine3d.png``.

    Args:
        analysis: the result to write.
        out_dir: the folder to create.
        overwrite: replace an existing ``out_dir`` (only once the new result is complete).
        progress: optional ``progress(fraction, message)`` callback, fraction in 0..1.
        dicom_sources: for a DICOM input, the headers of its slices in the volume's slice order
            (:attr:`~.loaded_image.LoadedImage.dicom_sources`): ``dicom/seg.dcm`` and ``dicom/sr.dcm``
            are written too (:mod:`.dicom_out`); what prevents them becomes a warning, never a failure.
        dicom_note: why a DICOM input has no ``dicom_sources`` (said in the warning).

    Returns:
        The absolute path of the written folder.

    What VTK or ITK print while the files are written is not passed on raw: it becomes one line
    appended to ``analysis.warnings`` (and ``analysis.json``).

    Raises:
        OutputExistsError: ``out_dir`` exists and ``overwrite`` is False, or it is not a folder.
        ValueError: a labelmap or fracture map holds values outside 0..255.
        OSError: a file cannot be written (nothing is left behind).
    """
    report = progress or (lambda fraction, message: None)
    out = write_folder(out_dir, lambda tmp: _write_all(analysis, tmp, report, dicom_sources, dicom_note), overwrite)
    report(1.0, f"results written to {out}")
    return out


def write_folder(out_dir: str | Path, fill: Callable[[Path], None], overwrite: bool = False) -> Path:
    """Create the folder ``out_dir`` whole or not at all.

    ``fill(folder)`` writes the files into a hidden sibling folder, which is renamed to ``out_dir``
    once complete. An error or an interrupt (Ctrl-C, SIGTERM) on the way removes the sibling; with
    ``overwrite`` an earlier ``out_dir`` is replaced only by a complete new one.

    Returns:
        The absolute path of the written folder.

    Raises:
        OutputExistsError: ``out_dir`` exists and ``overwrite`` is False, or it is not a folder.
    """
    out = Path(out_dir).expanduser().absolute()
    _check_destination(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp: Path | None = None
    try:
        with deferred_signals():  # an interrupt right after the mkdir would leave the sibling behind
            tmp = _new_sibling(out, "partial")
        fill(tmp)
        _check_destination(out, overwrite)  # it may have appeared meanwhile
        with deferred_signals():  # an interrupt between the two renames would lose both results
            _move_into_place(tmp, out)
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _check_destination(out: Path, overwrite: bool) -> None:
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise OutputExistsError(f"output path {out} exists and is not a folder")
        if not overwrite:
            raise OutputExistsError(f"output folder {out} already exists (use overwrite to replace it)")


def _new_sibling(out: Path, kind: str) -> Path:
    """Create a new, hidden, uniquely named folder beside ``out`` (permissions as ``mkdir`` gives)."""
    for _ in range(100):
        candidate = out.parent / f".{out.name}.{kind}-{uuid.uuid4().hex[:10]}"
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise OSError(f"could not create a temporary folder beside {out}")


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an existing ``out`` is moved aside first and removed after."""
    if not out.exists():
        os.rename(tmp, out)
        return
    old = _new_sibling(out, "old")
    old.rmdir()  # only the unique name is needed
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except OSError:
        os.rename(old, out)  # put the previous result back
        raise
    shutil.rmtree(old, ignore_errors=True)


def _write_dicom(analysis: Analysis, folder: Path, sources: Sequence[Any] | None, note: str) -> None:
    """``dicom/seg.dcm`` and ``dicom/sr.dcm`` for a DICOM input; a warning in place of what cannot be written."""
    if sources is None:
        return
    if not sources:
        analysis.warnings.append(f"DICOM SEG and SR not written: {note or 'the source slices are not known'}")
        return
    try:
        from VertebralFractureLib.io.dicom_out import DICOM_DIR, write_dicom_outputs

        analysis.warnings.extend(write_dicom_outputs(analysis, analysis.labelmap, sources, folder / DICOM_DIR))
    except ImportError as err:
        analysis.warnings.append(f"DICOM SEG and SR not written: {err.name or 'highdicom'} is not installed")
    except (ValueError, TypeError, AttributeError, KeyError) as err:  # the input's headers or a result they cannot hold
        shutil.rmtree(folder / DICOM_DIR, ignore_errors=True)
        analysis.warnings.append(f"DICOM SEG and SR not written: {' '.join(str(err).split())[:300]}")


def _write_all(analysis: Analysis, folder: Path, report: ProgressCallback, dicom_sources: Sequence[Any] | None = None,
               dicom_note: str = "") -> None:
    from VertebralFractureLib import report as report_files
    from VertebralFractureLib.figures import render_sagittal
    from VertebralFractureLib.io import slicer_files
    from VertebralFractureLib.io.verse import write_centroids
    from VertebralFractureLib.render import render_spine_3d
    from VertebralFractureLib.thirdparty import native_messages, summary

    printed: list[str] = []  # what VTK/ITK print while writing, as cleaned lines
    steps = 10
    step = iter(range(steps))

    def tick(message: str) -> None:
        report(next(step) / steps, message)

    tick("writing analysis.json")
    _write_dicom(analysis, folder, dicom_sources, dicom_note)  # first: its warnings belong in analysis.json
    analysis.to_json(folder / ANALYSIS_JSON)

    tick("writing labelmaps")
    if analysis.labelmap is not None:
        _write_label_volume(analysis.labelmap, folder / VERTEBRAE_NII, "labelmap")
    if analysis.fracture_map is not None:
        _write_label_volume(analysis.fracture_map, folder / FRACTURE_NII, "fracture map")

    tick("writing the Slicer segmentation")
    if analysis.labelmap is not None:
        with native_messages(printed):
            slicer_files.write_segmentation_nrrd(folder / SEGMENTATION, analysis.labelmap, analysis.vertebrae)

    tick("writing markups")
    slicer_files.write_centroid_markups(folder / CENTROIDS_MRK, analysis)
    if any(v.keypoints_lps_mm is not None for v in analysis.vertebrae):
        slicer_files.write_keypoint_markups(folder / KEYPOINTS_MRK, analysis)

    tick("writing VerSe centroids")
    write_centroids(folder / CENTROIDS_CTD, {v.label: np.asarray(v.centroid_lps_mm) for v in analysis.vertebrae},
                    reference_geometry(analysis))

    tick("writing report.csv")
    report_files.write_csv(folder / REPORT_CSV, analysis)

    tick("rendering the 3D view")
    with native_messages(printed):
        render_spine_3d(analysis, folder / SPINE3D_PNG, size=SPINE3D_SIZE)

    tick("rendering sagittal images")
    images: dict[str, bytes | Path] = {report_files.SPINE3D_KEY: folder / SPINE3D_PNG}
    can_draw = analysis.image is not None or analysis.labelmap is not None
    for v in analysis.vertebrae:
        if can_draw or v.keypoints_lps_mm is not None:
            images[v.name] = render_sagittal(analysis, v.label)

    tick("writing report.html")
    report_files.write_html(folder / REPORT_HTML, analysis, images)
    tick("finishing")
    line = summary(printed, "while the results were written")
    if line is not None:  # one line of ours instead of the libraries' raw output
        analysis.warnings.append(line)
        analysis.to_json(folder / ANALYSIS_JSON)


def _write_label_volume(volume: Volume, path: Path, what: str) -> None:
    """A labelmap as ``uint8`` NIfTI in its own (the input's) geometry."""
    from VertebralFractureLib.io.readers import write_volume

    array = volume.array
    if array.size and (array.min() < 0 or array.max() > 255):
        raise ValueError(f"the {what} holds values outside 0..255 ({array.min()}..{array.max()}); "
                         "expected label values")
    write_volume(volume.with_array(array.astype(np.uint8, copy=False)), path)


def reference_geometry(analysis: Analysis) -> Volume:
    """A volume with the input geometry: the image, the labelmap, or one built from ``input_geometry``.

    Raises:
        ValueError: when the analysis has neither an image, a labelmap nor an input geometry.
    """
    for vol in (analysis.image, analysis.labelmap, analysis.fracture_map):
        if vol is not None:
            return vol
    geom = analysis.input_geometry
    try:
        size = [int(n) for n in geom["size_xyz"]]
        direction = np.asarray(geom["direction"], dtype=float).reshape(3, 3)
        spacing, origin = geom["spacing_mm"], geom["origin_lps_mm"]
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"the analysis has no image, no labelmap and no usable input geometry ({err})") from err
    if len(size) != 3 or min(size) < 1:
        raise ValueError(f"input geometry size must be 3 positive integers, got {size}")
    # Only the grid's geometry is needed (centroid conversion): one voxel stands for the image.
    return Volume(np.zeros((1, 1, 1), dtype=np.uint8), spacing, origin, direction)
