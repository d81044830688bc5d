"""What every reader returns: the image and what the reader noticed on the way (shared by the
volume-file readers in :mod:`.readers` and the DICOM reader in :mod:`.dicom`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from VertebralFractureLib.volume import Volume


@dataclass
class LoadedImage:
    """An image read from disk, with what the reader noticed on the way.

    Attributes:
        volume: the image with its LPS geometry.
        warnings: problems that were handled (e.g. a missing DICOM slice that was interpolated);
            shown to the user and written to ``analysis.json``.
        description: format and geometry in words, e.g. ``"DICOM CT series 2 'Body', 261 slices, …"``.
            It never contains patient names, IDs or dates.
        source_format: ``"nifti"``, ``"nrrd"``, ``"mha"`` or ``"dicom"``.
        dicom_sources: for a DICOM series read without resampling, the header of each slice
            (pydicom datasets without pixel data) in the volume's slice order — what DICOM outputs
            reference; empty otherwise.
        dicom_note: why ``dicom_sources`` is empty for a DICOM input (resampled grid, multi-frame files).
    """

    volume: Volume
    warnings: list[str] = field(default_factory=list)
    description: str = ""
    source_format: str = ""
    dicom_sources: list[Any] = field(default_factory=list)
    dicom_note: str = ""


__all__ = ["LoadedImage"]
