"""SynthSpine configuration: every random range of the generator in one frozen dataclass.

Each case draws its anatomy, fractures and acquisition from these ranges with its own random
generator, so a case is a pure function of ``(seed, config)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from VertebralFractureLib.anatomy import vertebra

#: Levels that may be generated, cranial to caudal (T13 and L6 are optional variants).
LEVEL_NAMES: tuple[str, ...] = (
    "C1", "C2", "C3", "C4", "C5", "C6", "C7",
    "T1", "T2", "T3", "T4", "T5", "T6", "T7", "T8", "T9", "T10", "T11", "T12", "T13",
    "L1", "L2", "L3", "L4", "L5", "L6",
)  # fmt: skip


class FractureType(str, Enum):
    """Genant fracture types (ARCHITECTURE §4)."""

    WEDGE = "wedge"
    BICONCAVE = "biconcave"
    CRUSH = "crush"


#: How a fracture may look (:class:`FractureSpec`).
FRACTURE_AGES: tuple[str, ...] = ("fresh", "old")


@dataclass(frozen=True)
class FractureSpec:
    """A requested fracture: Genant grade 1–3, type, and age.

    ``age`` is how the fracture looks, as radiologists tell them apart: ``"fresh"`` — a thick
    condensation band of impacted trabeculae under an irregular fractured endplate; ``"old"`` — a
    smooth, remodelled endplate with a thin sclerotic rim and no band.
    """

    grade: int
    type: FractureType | str = FractureType.WEDGE
    age: str = "fresh"

    def __post_init__(self) -> None:
        if self.grade not in (1, 2, 3):
            raise ValueError(f"fracture grade must be 1, 2 or 3, got {self.grade!r}")
        if self.age not in FRACTURE_AGES:
            raise ValueError(f"fracture age must be one of {FRACTURE_AGES}, got {self.age!r}")
        try:
            object.__setattr__(self, "type", FractureType(self.type))
        except ValueError as err:
            raise ValueError(f"fracture type must be wedge, biconcave or crush, got {self.type!r}") from err


@dataclass(frozen=True)
class SynthConfig:
    """All ranges of SynthSpine in one place.

    Ranges are ``(low, high)`` and drawn uniformly unless stated. Lengths in mm, HU for intensities.

    Attributes:
        levels: a fixed level range ``("T10", "L4")``; ``None`` draws a contiguous range.
        n_vertebrae: number of vertebrae of a drawn range (inclusive bounds).
        p_t13: probability of a supernumerary, rib-bearing T13 (13 rib pairs, 25 presacral vertebrae).
            Its ribs are full or stumps (``p_rib_stump``).
        p_l6: probability of a sixth lumbar vertebra L6 (VerSe label 25) above a normal sacrum.
            Together with ``p_lumbarisation`` (also drawn as L6) about 5.5 % of adults have six
            lumbar vertebrae (Yan et al. 2018: 16 of 293).
        p_11_ribs: probability of 11 rib pairs when there is no T13: T12 bears no full rib, only a
            short stump (``p_rib_stump``) or nothing. Labels still count from C1, so the vertebra
            below T11 is T12 (Yan et al. 2018: 11 thoracic vertebrae in 5.8 %).
        p_lumbar_rib: probability of a lumbar rib when there is no T13: ribs on L1 (13 rib pairs
            without a supernumerary vertebra), full or stumps (``p_rib_stump``). ``p_11_ribs +
            p_lumbar_rib`` must not exceed 1.
        p_rib_stump: probability that the last pair of a rib variant is a short stump (length drawn
            from ``rib_stump_mm``) instead of nothing (11 pairs) or a full rib (T13, lumbar rib).
            Stumps break the rule "the last rib is T12" differently from full ribs (Möller et al. 2025).
        rib_stump_mm: stump length range, centreline from the rib's proximal end (the head, or the
            transverse process for a lumbar rib); full ribs are longer than about 40 mm (Yun et al.
            2018 call ribs under 38 mm short).
        p_sacralisation: probability of a lumbosacral transitional vertebra by sacralisation: the
            last lumbar vertebra (L5, or L6 where there is one) has an enlarged transverse process on
            one or both sides, dysplastic, articulating with or fused to the sacral ala (Castellvi
            types I–IV, ``castellvi_weights``), and a narrower disc below. It keeps its label.
        p_lumbarisation: probability of a lumbosacral transitional vertebra by lumbarisation: the
            first sacral segment is free and drawn as L6 (label 25) with the same transverse-process
            variants, above a four-segment sacrum. ``p_sacralisation + p_lumbarisation`` must not
            exceed 1. An LSTV is seen on 18 % of radiographs (Nardo et al. 2012), sacralisation far
            more often than lumbarisation in most series.
        castellvi_weights: relative frequency of Castellvi types I (dysplastic, ≥ 19 mm tall, no
            contact), II (pseudo-articulation), III (fusion) and IV (II on one side, III on the
            other); Nardo et al. 2012: 42, 41, 12, 5 %. Types I–III are uni- or bilateral (a/b).
        fractures: fixed fractures by level name (``{"L1": FractureSpec(2, "wedge")}``); when given,
            no random fractures are drawn.
        p_fractured_case: probability that a case has at least one (random) fracture.
        max_fractures: most random fractures per case.
        fracture_levels: levels eligible for random fractures.
        grade_weights: relative frequency of grades 1, 2, 3.
        type_weights: relative frequency of wedge, biconcave, crush.
        p_old_fracture: probability that a random fracture is old (remodelled) rather than fresh
            (:class:`FractureSpec`); 0 (the default) draws nothing, so cases are as before.
        p_osteoporotic: probability of osteoporotic bone (trabecular 50–150 HU instead of 150–300).
        p_scoliosis: probability of a scoliotic curve; ``scoliosis_deg`` its Cobb-like amplitude.
        size_sd: subject body-size factor spread (relative); per-level jitter ``level_sd``.
        curvature_sd: subject-level spread of lordosis/kyphosis (relative to the VerSe means).
        spacing_xy_mm: in-plane pixel spacing range.
        slice_mm: slice spacing (= thickness) choices and their weights.
        fov_mm: in-plane field of view range (square).
        spacing: fixed output spacing (x, y, z) instead of the drawn one.
        fov: fixed in-plane field of view (mm) instead of the drawn one.
        noise_hu: image-noise standard deviation range.
        rotation_deg: largest patient rotation about the x (pitch), y (roll) and z (yaw) axes.
        offset_mm: largest in-plane offset of the spine from the field-of-view centre.
        p_cut: probability that the field of view cuts the top (and, independently, the bottom)
            vertebra.
        p_contrast: probability of intravenous contrast (vessels, kidneys, liver enhance).
        body: simulate the surrounding body (muscle, fat, organs, lungs, ribs); off gives a spine in
            soft tissue (fast, for unit tests).
        orientation: axis codes of the written image (``"LPS"``, ``"RAS"``, ``"PIR"``, ...) or
            ``"random"`` to draw one of ``orientations``.
        orientations: the axis codes ``"random"`` draws from.
    """

    levels: tuple[str, str] | None = None
    n_vertebrae: tuple[int, int] = (5, 17)
    p_t13: float = 0.01
    p_l6: float = 0.04
    p_11_ribs: float = 0.05
    p_lumbar_rib: float = 0.01
    p_rib_stump: float = 0.5
    rib_stump_mm: tuple[float, float] = (22.0, 38.0)
    p_sacralisation: float = 0.15
    p_lumbarisation: float = 0.015
    castellvi_weights: tuple[float, float, float, float] = (0.42, 0.41, 0.12, 0.05)
    fractures: Mapping[str, FractureSpec] | None = None
    p_fractured_case: float = 0.6
    max_fractures: int = 3
    fracture_levels: tuple[str, ...] = (
        "T4", "T5", "T6", "T7", "T8", "T9", "T10", "T11", "T12", "T13", "L1", "L2", "L3", "L4", "L5", "L6")  # fmt: skip
    grade_weights: tuple[float, float, float] = (0.3, 0.4, 0.3)
    type_weights: tuple[float, float, float] = (0.55, 0.25, 0.20)
    p_old_fracture: float = 0.0
    p_osteoporotic: float = 0.4
    p_scoliosis: float = 0.15
    scoliosis_deg: tuple[float, float] = (8.0, 30.0)
    size_sd: float = 0.06
    level_sd: float = 0.03
    curvature_sd: float = 0.2
    spacing_xy_mm: tuple[float, float] = (0.5, 1.0)
    slice_mm: tuple[tuple[float, ...], tuple[float, ...]] = (
        (0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 5.0), (1, 2, 3, 2, 1, 2, 1, 2, 1))
    fov_mm: tuple[float, float] = (150.0, 500.0)
    spacing: tuple[float, float, float] | None = None
    fov: float | None = None
    noise_hu: tuple[float, float] = (5.0, 40.0)
    rotation_deg: tuple[float, float, float] = (6.0, 4.0, 8.0)
    offset_mm: float = 20.0
    p_cut: float = 0.3
    p_contrast: float = 0.5
    body: bool = True
    orientation: str = "LPS"
    orientations: tuple[str, ...] = ("LPS", "RAS", "LPI", "RPI")
    #: Real vertebra masks (files or folders of ``*seg-vert*_msk.nii.gz``) whose posterior elements replace the
    #: procedural ones at the levels they cover (:mod:`~VertebralFractureLib.synth.templates`); empty: procedural.
    templates: tuple[str, ...] = ()
    #: Share of cases whose tissue intensities and textures are randomised beyond realistic CT
    #: (:func:`~VertebralFractureLib.synth.appearance.randomise`).
    p_random_appearance: float = 0.0

    def __post_init__(self) -> None:
        if self.levels is not None:
            if len(self.levels) != 2:
                raise ValueError(f"levels must be (first, last), got {self.levels!r}")
            for name in self.levels:
                if name not in LEVEL_NAMES:
                    raise ValueError(f"unknown level {name!r}; expected one of {LEVEL_NAMES}")
            if LEVEL_NAMES.index(self.levels[0]) > LEVEL_NAMES.index(self.levels[1]):
                raise ValueError(f"levels {self.levels} must run cranial to caudal")
        lo, hi = self.n_vertebrae
        if not 1 <= lo <= hi <= 25:
            raise ValueError(f"n_vertebrae must satisfy 1 <= low <= high <= 25, got {self.n_vertebrae}")
        if self.fractures is not None:
            fixed = {}
            for name, spec in self.fractures.items():
                vertebra(name)  # validates the name
                fixed[name.upper()] = spec if isinstance(spec, FractureSpec) else FractureSpec(*spec)
            object.__setattr__(self, "fractures", fixed)
        for name in ("spacing_xy_mm", "fov_mm", "noise_hu"):
            a, b = getattr(self, name)
            if not 0 <= a <= b:
                raise ValueError(f"{name} must be a range (low <= high, non-negative), got {(a, b)}")
        if self.spacing is not None and (len(self.spacing) != 3 or min(self.spacing) <= 0):
            raise ValueError(f"spacing must be 3 positive numbers (x, y, z) in mm, got {self.spacing}")
        if self.fov is not None and self.fov <= 0:
            raise ValueError(f"fov must be positive (mm), got {self.fov}")
        valid = {"L", "R", "P", "A", "S", "I"}
        for code in (*self.orientations, *([] if self.orientation == "random" else [self.orientation])):
            if len(code) != 3 or set(code) - valid or len({_AXIS[c] for c in code}) != 3:
                raise ValueError(f"orientation must be 3 axis codes like 'LPS' or 'PIR', got {code!r}")
        for name in ("p_t13", "p_l6", "p_11_ribs", "p_lumbar_rib", "p_rib_stump", "p_sacralisation",
                     "p_lumbarisation", "p_fractured_case", "p_osteoporotic", "p_scoliosis", "p_cut", "p_contrast",
                     "p_old_fracture", "p_random_appearance"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
        for a, b in (("p_11_ribs", "p_lumbar_rib"), ("p_sacralisation", "p_lumbarisation")):
            if getattr(self, a) + getattr(self, b) > 1.0:
                raise ValueError(f"{a} + {b} must not exceed 1 (they exclude each other), got "
                                 f"{getattr(self, a)} + {getattr(self, b)}")
        lo, hi = self.rib_stump_mm
        if not 0 < lo <= hi:
            raise ValueError(f"rib_stump_mm must be a positive range (low <= high), got {self.rib_stump_mm}")
        w = self.castellvi_weights
        if len(w) != 4 or min(w) < 0 or sum(w) <= 0:
            raise ValueError(f"castellvi_weights must be 4 non-negative weights (types I–IV), got {w}")

    def replace(self, **changes: Any) -> SynthConfig:
        """A copy with some fields changed."""
        return replace(self, **changes)


_AXIS = {"L": 0, "R": 0, "P": 1, "A": 1, "S": 2, "I": 2}

__all__ = ["LEVEL_NAMES", "FractureSpec", "FractureType", "SynthConfig"]
