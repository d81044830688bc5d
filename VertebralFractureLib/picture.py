"""What the spine pictures say and their colours, shared by the 3D view (:mod:`.render`) and the
flat figures (:mod:`.figures`): the background, a vertebra's colour and label, the caption."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from VertebralFractureLib.anatomy import status_color

if TYPE_CHECKING:  # pragma: no cover
    from VertebralFractureLib.analysis import Analysis, VertebraResult

BACKGROUND = (0.08, 0.09, 0.12)


def vertebra_color(v: VertebraResult | None) -> tuple[float, float, float]:
    """Red for fractured, bone white for normal or unknown status."""
    return status_color(None if v is None else v.status)


def annotation(v: VertebraResult) -> str:
    """Short label: ``"L1"``, or ``"L1  Genant 2 wedge"`` for a fractured vertebra."""
    if v.status == "fractured":
        if v.genant is not None:
            return f"{v.name}  Genant {v.genant.grade}" + (f" {v.genant.type}" if v.genant.type else "")
        return f"{v.name}  fractured"
    return v.name


def caption(analysis: Analysis, fallback: bool = False) -> str:
    """The picture's caption (what is shown and how)."""
    if fallback:
        what = "Lateral projection (3D rendering unavailable)"
    elif analysis.labelmap is None:
        what = "Centroids only (no segmentation): spheres at the vertebra centres"
    else:
        what = "Lateral 3D view from the patient's left"
    if not analysis.vertebrae and (analysis.labelmap is None or not np.any(analysis.labelmap.array)):
        return f"{what}\nno vertebrae found"
    return f"{what}\nred = fractured, white = normal"


__all__ = ["BACKGROUND", "annotation", "caption", "vertebra_color"]
