"""The one vertebra table: VerSe labels, names, regions, SNOMED CT codes and colours.

VerSe numbering (Sekuboyina et al., VerSe challenge): 1–7 C1–C7, 8–19 T1–T12, 20–25 L1–L6,
28 T13 (a supernumerary thoracic vertebra, anatomically between T12 and L1).

SNOMED CT codes are those of the DICOM anatomic-region context (CID 7600) also used by Slicer's
terminologies and TotalSegmentator; T13 and L6 have no own concept and use the generic
"thoracic vertebra" / "lumbar vertebra" concepts.

TotalSegmentator numbering (v2 ``total`` task): 50 = C1 … 44 = C7, 43 = T1 … 32 = T12,
31 = L1 … 27 = L5, 26 = S1 (not a vertebra graded here), 25 = sacrum.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

import numpy as np


class Region(str, Enum):
    """Spine region of a vertebra."""

    CERVICAL = "cervical"
    THORACIC = "thoracic"
    LUMBAR = "lumbar"


@dataclass(frozen=True)
class Vertebra:
    """One row of the vertebra table.

    Attributes:
        label: VerSe label value.
        name: short name, "L1".
        region: cervical / thoracic / lumbar.
        order: cranio-caudal rank (C1 = 0, …, T12 = 18, T13 = 19, L1 = 20, …).
        snomed_code: SNOMED CT concept id.
        snomed_meaning: the concept's display name.
        color: RGB in 0..1 for a per-level display.
    """

    label: int
    name: str
    region: Region
    order: int
    snomed_code: str
    snomed_meaning: str
    color: tuple[float, float, float]


_SNOMED = {
    "C1": "14806007", "C2": "39976000", "C3": "113205007", "C4": "5329002", "C5": "36978003",
    "C6": "36054005", "C7": "87391001",
    "T1": "64864005", "T2": "53733008", "T3": "1626008", "T4": "73071006", "T5": "56401006",
    "T6": "45296009", "T7": "62487009", "T8": "11068009", "T9": "82687006", "T10": "7610001",
    "T11": "12989004", "T12": "23215003", "T13": "122495006",
    "L1": "66794005", "L2": "14293000", "L3": "36470004", "L4": "11994002", "L5": "49668003",
    "L6": "122496007",
}  # fmt: skip

# Colours that tell the three regions apart (cervical blue-green, thoracic yellow-orange, lumbar purple).
_REGION_RGB = {
    Region.CERVICAL: ((0.35, 0.75, 0.85), (0.20, 0.55, 0.65)),
    Region.THORACIC: ((0.95, 0.85, 0.45), (0.85, 0.55, 0.25)),
    Region.LUMBAR: ((0.75, 0.60, 0.90), (0.50, 0.35, 0.75)),
}

#: Display colour of a normal vertebra in the fracture view (bone white).
NORMAL_COLOR: tuple[float, float, float] = (0.95, 0.93, 0.88)
#: Display colour of a fractured vertebra in the fracture view (red).
FRACTURED_COLOR: tuple[float, float, float] = (0.90, 0.10, 0.10)
#: Display colour of a vertebra that is not assessable (ochre: neither a normal nor a fracture call).
NOT_ASSESSABLE_COLOR: tuple[float, float, float] = (0.80, 0.68, 0.30)


def status_color(status: str | None) -> tuple[float, float, float]:
    """Display colour of a vertebra by its status (red fractured, ochre not assessable, else white)."""
    return {"fractured": FRACTURED_COLOR, "not assessable": NOT_ASSESSABLE_COLOR}.get(status or "", NORMAL_COLOR)


def _build_table() -> dict[int, Vertebra]:
    rows: list[tuple[int, str, Region, int]] = []
    rows += [(i, f"C{i}", Region.CERVICAL, i - 1) for i in range(1, 8)]
    rows += [(7 + i, f"T{i}", Region.THORACIC, 6 + i) for i in range(1, 13)]
    rows += [(28, "T13", Region.THORACIC, 19)]
    rows += [(19 + i, f"L{i}", Region.LUMBAR, 19 + i) for i in range(1, 7)]
    table: dict[int, Vertebra] = {}
    for label, name, region, order in rows:
        members = [r for r in rows if r[2] == region]
        k = [r[0] for r in members].index(label)
        t = k / max(1, len(members) - 1)
        c0, c1 = (np.asarray(c) for c in _REGION_RGB[region])
        color = tuple(float(v) for v in (1 - t) * c0 + t * c1)
        meaning = f"{name} vertebra" if name not in ("T13", "L6") else (
            "Thoracic vertebra" if name == "T13" else "Lumbar vertebra")
        table[label] = Vertebra(label, name, region, order, _SNOMED[name], meaning, color)  # type: ignore[arg-type]
    return table


#: VerSe label → :class:`Vertebra`.
VERTEBRAE: dict[int, Vertebra] = _build_table()
_BY_NAME = {v.name: v for v in VERTEBRAE.values()}

#: TotalSegmentator (v2 ``total``) label → VerSe label.
TOTALSEGMENTATOR_TO_VERSE: dict[int, int] = {
    **{50 - i: 1 + i for i in range(7)},  # C1..C7 = 50..44
    **{43 - i: 8 + i for i in range(12)},  # T1..T12 = 43..32
    **{31 - i: 20 + i for i in range(5)},  # L1..L5 = 31..27
}


def vertebra(label_or_name: int | str) -> Vertebra:
    """Look a vertebra up by VerSe label (``20``) or name (``"L1"``).

    Raises:
        KeyError: for an unknown label or name.
    """
    if isinstance(label_or_name, str):
        try:
            return _BY_NAME[label_or_name.strip().upper()]
        except KeyError as err:
            raise KeyError(f"unknown vertebra name {label_or_name!r}; expected C1–C7, T1–T13, L1–L6") from err
    try:
        return VERTEBRAE[int(label_or_name)]
    except KeyError as err:
        raise KeyError(f"unknown VerSe label {label_or_name!r}; expected 1–25 or 28") from err


def name_of(label: int) -> str:
    """The name ("L1") of a VerSe label."""
    return vertebra(label).name


def is_vertebra_label(label: int) -> bool:
    """True for VerSe labels of vertebrae this product handles (1–25, 28)."""
    return int(label) in VERTEBRAE


def split_vertebra_labels(values: Iterable[int]) -> tuple[list[int], list[int]]:
    """The non-zero values of a labelmap split into vertebra labels (1–25, 28) and the others."""
    present = [int(v) for v in values if int(v) != 0]
    return [v for v in present if is_vertebra_label(v)], [v for v in present if not is_vertebra_label(v)]


def cranio_caudal(labels: Iterable[int]) -> list[int]:
    """Sort VerSe labels from cranial to caudal (T13 between T12 and L1)."""
    return sorted((int(x) for x in labels), key=lambda lab: vertebra(lab).order)


def neighbours(label: int, present: Iterable[int]) -> tuple[int | None, int | None]:
    """The nearest present vertebra above and below ``label`` (by anatomical order)."""
    order = vertebra(label).order
    present_sorted = cranio_caudal(set(present) - {int(label)})
    above = [p for p in present_sorted if vertebra(p).order < order]
    below = [p for p in present_sorted if vertebra(p).order > order]
    return (above[-1] if above else None, below[0] if below else None)


def convert_totalsegmentator(labelmap: np.ndarray) -> np.ndarray:
    """Map a TotalSegmentator (v2 ``total``) labelmap to VerSe labels; everything else → 0."""
    lut = np.zeros(max(256, int(labelmap.max()) + 1), dtype=np.uint8)
    for ts, verse in TOTALSEGMENTATOR_TO_VERSE.items():
        lut[ts] = verse
    if labelmap.min() < 0:
        raise ValueError("a labelmap cannot have negative labels")
    return lut[labelmap.astype(np.int64)]
