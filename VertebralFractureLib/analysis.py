"""Result dataclasses and their JSON form: the output contract (ARCHITECTURE §3).

An :class:`Analysis` holds everything ``analyze`` produces: per-vertebra results in cranial-to-
caudal order, and the voxel outputs (VerSe labelmap, fracture map) in the input geometry.
``analysis.json`` is :meth:`Analysis.to_json`; voxel maps are written by :mod:`.io.output`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from VertebralFractureLib import __version__
from VertebralFractureLib.anatomy import cranio_caudal, name_of
from VertebralFractureLib.volume import Volume

SCHEMA_VERSION = "1.0"

#: Keypoint names on the mid-sagittal plane: anterior/middle/posterior × superior/inferior endplate.
KEYPOINT_NAMES: tuple[str, ...] = ("A_sup", "A_inf", "M_sup", "M_inf", "P_sup", "P_inf")
HEIGHT_NAMES: tuple[str, ...] = ("anterior", "middle", "posterior")
STATUSES: tuple[str, ...] = ("normal", "fractured", "not assessable")
#: Anatomical landmarks that fix the level names (``naming.anchor``); None: names not anchored.
NAMING_ANCHORS: tuple[str, ...] = ("C2", "first rib", "last rib", "sacrum", "given")


@dataclass
class GenantResult:
    """Genant semi-quantitative grade of one vertebra (ARCHITECTURE §4).

    Attributes:
        ratio: reduced height / reference height (1.0 = no reduction).
        grade: 0 normal, 1 mild (20–25 %), 2 moderate (25–40 %), 3 severe (> 40 %).
        type: "wedge", "biconcave", "crush" or None for grade 0.
        seed_ratio: the seed paper's ``G = min(Ha, Hm, Hp) / max(Ha, Hm, Hp)``.
        seed_class: "normal" (G ≥ 0.8), "mild" (0.74 ≤ G < 0.8), "moderate-severe" (G < 0.74).
    """

    ratio: float
    grade: int
    type: str | None
    seed_ratio: float | None = None
    seed_class: str | None = None

    def __post_init__(self) -> None:
        if self.grade not in (0, 1, 2, 3):
            raise ValueError(f"Genant grade must be 0–3, got {self.grade}")
        if self.type not in (None, "wedge", "biconcave", "crush"):
            raise ValueError(f"Genant type must be wedge/biconcave/crush/None, got {self.type!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "ratio": _round(self.ratio),
            "grade": int(self.grade),
            "type": self.type,
            "seed_ratio": _round(self.seed_ratio),
            "seed_class": self.seed_class,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GenantResult:
        return cls(d["ratio"], int(d["grade"]), d.get("type"), d.get("seed_ratio"), d.get("seed_class"))


@dataclass
class VertebraResult:
    """Everything known about one vertebra.

    Coordinates are LPS millimetres. Fields left ``None`` are stages that did not run (or, for
    ``genant``, a vertebra that is not graded because it is cut by the field of view).
    ``radiomics_fracture_probability`` is the optional radiomics classifier's second opinion
    (``--radiomics``, :mod:`.radiomics`) and ``slice_fracture_probability`` the slice classifier's
    (``--slice-classifier``, :mod:`.slices`, seed 000); neither ever changes ``status``.

    ``status`` is "not assessable" (with ``status_reason``, and no grade) when the evidence for a
    call is weak: an implausible mask, keypoints off the endplates, heights that contradict the
    neighbours'. ``naming`` says what fixed the level name: ``{"anchor": "last rib" | "first rib" |
    "sacrum" | "C2" | "given" | None, "confidence": 0–1}``; anchor None means the names were
    counted from the network's appearance alone and may be off by one or more levels.
    ``fracture_probability_spread`` is the range of the fracture probability over the test-time
    flips and centroid shifts (how stable the call is).
    """

    label: int
    centroid_lps_mm: tuple[float, float, float]
    localization_score: float | None = None
    complete: bool = True
    status: str | None = None
    fracture_probability: float | None = None
    keypoints_lps_mm: dict[str, tuple[float, float, float]] | None = None
    heights_mm: dict[str, float] | None = None
    genant: GenantResult | None = None
    keypoint_method: str | None = None
    radiomics_fracture_probability: float | None = None
    slice_fracture_probability: float | None = None
    notes: list[str] = field(default_factory=list)
    status_reason: str | None = None
    naming: dict[str, Any] | None = None
    fracture_probability_spread: float | None = None

    def __post_init__(self) -> None:
        name_of(self.label)  # validates the label
        c = np.asarray(self.centroid_lps_mm, dtype=float)
        if c.shape != (3,) or not np.all(np.isfinite(c)):
            raise ValueError(f"centroid_lps_mm must be 3 finite numbers, got {self.centroid_lps_mm}")
        self.centroid_lps_mm = tuple(float(v) for v in c)  # type: ignore[assignment]
        if self.status is not None and self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        if self.naming is not None:
            anchor = self.naming.get("anchor")
            if anchor is not None and anchor not in NAMING_ANCHORS:
                raise ValueError(f"naming anchor must be one of {NAMING_ANCHORS} or None, got {anchor!r}")
            self.naming = {"anchor": anchor, "confidence": float(self.naming.get("confidence", 0.0))}
        if self.keypoints_lps_mm is not None and set(self.keypoints_lps_mm) != set(KEYPOINT_NAMES):
            raise ValueError(f"keypoints must be exactly {KEYPOINT_NAMES}, got {sorted(self.keypoints_lps_mm)}")

    @property
    def name(self) -> str:
        return name_of(self.label)

    @property
    def body_centre_lps_mm(self) -> tuple[float, float, float] | None:
        """The vertebral body's centre on its mid-sagittal plane: the mean of the six endplate
        keypoints (None without keypoints). ``centroid_lps_mm`` is the whole vertebra's centre
        (posterior elements included, the VerSe convention), about 10 mm behind the body's."""
        if self.keypoints_lps_mm is None:
            return None
        return tuple(float(x) for x in np.mean([self.keypoints_lps_mm[k] for k in KEYPOINT_NAMES], axis=0))

    @property
    def assessable(self) -> bool:
        return self.status != "not assessable"

    def mark_not_assessable(self, reason: str) -> None:
        """No call and no grade for this vertebra: the evidence is too weak (``reason`` says why)."""
        self.status = "not assessable"
        self.status_reason = reason
        self.genant = None
        self.notes.append("not assessable: " + reason)

    def to_dict(self) -> dict[str, Any]:
        kp = None
        if self.keypoints_lps_mm is not None:
            kp = {k: [_round(v) for v in self.keypoints_lps_mm[k]] for k in KEYPOINT_NAMES}
        heights = None if self.heights_mm is None else {k: _round(self.heights_mm[k]) for k in HEIGHT_NAMES}
        return {
            "label": int(self.label),
            "name": self.name,
            "centroid_lps_mm": [_round(v) for v in self.centroid_lps_mm],
            "body_centre_lps_mm": None if self.body_centre_lps_mm is None else [_round(v) for v in self.body_centre_lps_mm],
            "localization_score": _round(self.localization_score),
            "complete": bool(self.complete),
            "status": self.status,
            "status_reason": self.status_reason,
            "naming": None if self.naming is None else {"anchor": self.naming["anchor"],
                                                        "confidence": _round(self.naming["confidence"], 3)},
            "fracture_probability": _round(self.fracture_probability),
            "fracture_probability_spread": _round(self.fracture_probability_spread),
            "keypoints_lps_mm": kp,
            "keypoint_method": self.keypoint_method,
            "heights_mm": heights,
            "genant": None if self.genant is None else self.genant.to_dict(),
            "radiomics_fracture_probability": _round(self.radiomics_fracture_probability),
            "slice_fracture_probability": _round(self.slice_fracture_probability),
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VertebraResult:
        kp = d.get("keypoints_lps_mm")
        return cls(
            label=int(d["label"]),
            centroid_lps_mm=tuple(d["centroid_lps_mm"]),
            localization_score=d.get("localization_score"),
            complete=bool(d.get("complete", True)),
            status=d.get("status"),
            fracture_probability=d.get("fracture_probability"),
            keypoints_lps_mm=None if kp is None else {k: tuple(v) for k, v in kp.items()},
            heights_mm=d.get("heights_mm"),
            genant=None if d.get("genant") is None else GenantResult.from_dict(d["genant"]),
            keypoint_method=d.get("keypoint_method"),
            radiomics_fracture_probability=d.get("radiomics_fracture_probability"),
            slice_fracture_probability=d.get("slice_fracture_probability"),
            notes=list(d.get("notes", [])),
            status_reason=d.get("status_reason"),
            naming=d.get("naming"),
            fracture_probability_spread=d.get("fracture_probability_spread"),
        )


@dataclass
class Analysis:
    """The result of one analysis.

    Attributes:
        vertebrae: per-vertebra results (kept sorted cranial → caudal).
        input_geometry: :meth:`Volume.geometry_dict` of the input image.
        labelmap: VerSe labelmap in the input geometry, or None when stage 2 did not run.
        fracture_map: 0 background / 1 normal / 2 fractured, in the input geometry, or None.
        image: the input CT (for rendering the report); not written by the contract writers.
        timings_s: seconds per stage.
        warnings: messages for the user (field-of-view cuts, DICOM irregularities, fallbacks).
        models: name → version/sha256 of the models used.
        input_description: a short, anonymous description of the input (file type, never patient data).
    """

    vertebrae: list[VertebraResult]
    input_geometry: dict[str, Any]
    labelmap: Volume | None = None
    fracture_map: Volume | None = None
    image: Volume | None = None
    timings_s: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    models: dict[str, Any] = field(default_factory=dict)
    input_description: str = ""
    software_version: str = __version__

    def __post_init__(self) -> None:
        labels = [v.label for v in self.vertebrae]
        if len(set(labels)) != len(labels):
            raise ValueError(f"duplicate vertebra labels in an analysis: {labels}")
        order = cranio_caudal(labels)
        by_label = {v.label: v for v in self.vertebrae}
        self.vertebrae = [by_label[lab] for lab in order]
        for name, vol in (("labelmap", self.labelmap), ("fracture_map", self.fracture_map)):
            if vol is not None and self.image is not None and not vol.same_geometry(self.image):
                raise ValueError(f"{name} must be in the input geometry")

    def vertebra(self, label_or_name: int | str) -> VertebraResult:
        """The result for a VerSe label or a name ("L1")."""
        for v in self.vertebrae:
            if v.label == label_or_name or v.name == label_or_name:
                return v
        raise KeyError(f"no vertebra {label_or_name!r} in this analysis")

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "software": {"name": "VertebralFracture", "version": self.software_version},
            "models": self.models,
            "input": {"description": self.input_description, "geometry": self.input_geometry},
            "timings_s": {k: round(float(v), 3) for k, v in self.timings_s.items()},
            "warnings": list(self.warnings),
            "vertebrae": [v.to_dict() for v in self.vertebrae],
        }

    def to_json(self, path: str | Path | None = None) -> str:
        """The JSON form; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Analysis:
        if str(d.get("schema_version", "")).split(".")[0] != SCHEMA_VERSION.split(".")[0]:
            raise ValueError(f"unsupported analysis schema {d.get('schema_version')!r}; expected {SCHEMA_VERSION}")
        return cls(
            vertebrae=[VertebraResult.from_dict(v) for v in d["vertebrae"]],
            input_geometry=d["input"]["geometry"],
            timings_s=dict(d.get("timings_s", {})),
            warnings=list(d.get("warnings", [])),
            models=dict(d.get("models", {})),
            input_description=d["input"].get("description", ""),
            software_version=d.get("software", {}).get("version", __version__),
        )

    @classmethod
    def from_json(cls, path: str | Path) -> Analysis:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def _round(value: float | None, ndigits: int = 4) -> float | None:
    return None if value is None else round(float(value), ndigits)
