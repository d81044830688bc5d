"""Accuracy of the whole pipeline on real CT with known truth (``vertebral-fracture evaluate real``).

Two kinds of truth are read:

* **vertebra masks** — the VerSe file layout as distributed for single subjects:
  ``sub-X_ct.nii.gz`` + ``sub-X_seg-vert_msk.nii.gz`` (whole-vertebra labels, VerSe numbering) in
  one folder, with Genant grades per subject and label in ``genant_grades.json``
  (``{"grades": {"sub-X": {"20": 1, …}}}``; label 20 = L1). An optional
  ``sub-X_seg-subreg_msk.nii.gz`` (sub-region labels, 49/50 = vertebral body) gives body-only
  Dice. A mask without its CT is skipped with a note. A VerSe-layout folder with ``rawdata/`` and
  ``derivatives/`` (SynthSpine output) is read too, its grades from ``*_genant.json``.
  The true centroid is the centre of mass of the mask (the VerSe convention).
* **hand annotations** — ``*_bodies.json`` next to, or naming, a CT: the centre of each visible
  vertebral body with its name, a cut-by-the-field-of-view flag, and the reader's grades
  (``"all 0"`` for "no fracture seen"); see ``Resources/Annotations/README.md`` for the format.
  Body centres lie about 10 mm anterior to the VerSe centroid (centre of mass of the whole
  vertebra, posterior elements included), which is what stage 1 predicts: with the 20 mm match
  radius below, that leaves about 10 mm for the prediction's own error on these cases.

Metrics (per case and overall; :func:`vertebra_rows` and :func:`summarize` are pure):

* **identification** — a true vertebra is identified when a prediction *with its name* lies
  within :data:`MATCH_MM` of its true centre;
* **detection** — predictions and true vertebrae are paired one-to-one by increasing distance,
  pairs farther than :data:`MATCH_MM` apart excluded; recall = paired true vertebrae / true
  vertebrae, precision = paired predictions / (paired + unpaired predictions inside the annotated
  cranio-caudal span). An unpaired prediction beyond the first or last true vertebra (more than
  :data:`MATCH_MM` along the patient's superior axis) is counted apart: those vertebrae were not
  annotated, so it cannot be called false;
* **Dice** per vertebra between the predicted and the true mask of the same label (``dice``: the
  names must be right too), of the prediction paired with it by position as for detection
  (``dice_paired``: the outline, whatever the name), and of the best-overlapping predicted label
  (``dice_best_label``); body-only Dice where a body mask exists;
* the rest uses the prediction paired with each true vertebra: **grade ≥ 2 fractures found**
  (the paired prediction is "fractured" or has Genant grade ≥ 2), **false calls** on true grade-0
  vertebrae (the same test), **Genant exact / within one grade** (complete vertebrae with a true
  and a predicted grade), and the **graded share** of complete true vertebrae (paired, status not
  "not assessable", a Genant grade);
* the **body centre distance** from each true body centre — annotated, or the centre of mass of a
  mask's body (sub-region labels or the geometric split) — to the paired prediction's body centre
  (the mean of its six endplate keypoints, ``VertebraResult.body_centre_lps_mm``), and the share
  within :data:`BODY_CENTRE_MM`.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from VertebralFractureLib.anatomy import is_vertebra_label, name_of
from VertebralFractureLib.errors import InputError
from VertebralFractureLib.volume import Volume

#: Match radius (mm) for identification and detection, as the VerSe challenge uses.
MATCH_MM = 20.0
#: A predicted body centre this close (mm) to an annotated one counts as placed right.
BODY_CENTRE_MM = 5.0
#: Sub-region labels of the vertebral body (TPTBox / VerSe sub-region masks).
BODY_SUBREGION_LABELS: tuple[int, ...] = (49, 50)
ANNOTATION_SUFFIX = "_bodies.json"
MASK_SUFFIX = "_seg-vert_msk.nii.gz"
GRADES_FILE = "genant_grades.json"
#: Credits of the public data sets this evaluation is run on, by case-name prefix.
KNOWN_SOURCES: tuple[tuple[str, str], ...] = (
    ("sub-verse", "VerSe'19 (Sekuboyina et al. 2021; Löffler et al. 2020), CC BY-SA 4.0"),
    ("lidc-idri", "LIDC-IDRI (The Cancer Imaging Archive), CC BY 3.0"),
    ("crlm", "Colorectal-Liver-Metastases (The Cancer Imaging Archive), CC BY 4.0"),
)
#: Marker colours of the figure by status (fractured red, normal white as in the Slicer scene).
STATUS_COLORS = {"normal": "#f2eee0", "fractured": "#e61a1a", "not assessable": "#c8a040", None: "#60a0ff"}


# ----------------------------------------------------------------------------------- data model
@dataclass(frozen=True)
class TrueVertebra:
    """A vertebra of the truth: label, centre (LPS mm), whether it is whole in the field of view,
    and its Genant grade (None: not known)."""

    label: int
    centroid: tuple[float, float, float]
    complete: bool = True
    grade: int | None = None


@dataclass(frozen=True)
class Prediction:
    """The fields of one :class:`~VertebralFractureLib.analysis.VertebraResult` this evaluation reads."""

    label: int
    centroid: tuple[float, float, float]
    status: str | None = None
    grade: int | None = None
    complete: bool = True
    status_reason: str | None = None
    fracture_probability: float | None = None
    body_centre: tuple[float, float, float] | None = None

    @classmethod
    def from_result(cls, v: Any) -> Prediction:
        """From a ``VertebraResult`` (fields added later are read with ``getattr``)."""
        genant = getattr(v, "genant", None)
        body = getattr(v, "body_centre_lps_mm", None)
        return cls(label=int(v.label), centroid=tuple(float(c) for c in v.centroid_lps_mm),
                   status=getattr(v, "status", None), grade=None if genant is None else int(genant.grade),
                   complete=bool(getattr(v, "complete", True)), status_reason=getattr(v, "status_reason", None),
                   fracture_probability=getattr(v, "fracture_probability", None),
                   body_centre=None if body is None else tuple(float(c) for c in body))

    @property
    def calls_fracture(self) -> bool:
        """A fracture call: status "fractured" or Genant grade ≥ 2."""
        return self.status == "fractured" or (self.grade is not None and self.grade >= 2)

    @property
    def graded(self) -> bool:
        return self.status != "not assessable" and self.grade is not None


@dataclass(frozen=True)
class RealCase:
    """One real scan with its truth: ``kind`` is "masks" (``truth`` = vertebra mask) or
    "annotation" (``truth`` = ``*_bodies.json``)."""

    name: str
    ct: Path | None
    truth: Path
    kind: str
    grades: Mapping[int, int | None] = field(default_factory=dict)
    subregions: Path | None = None
    source: str = ""


# ------------------------------------------------------------------------------------ metrics
def pair_by_distance(truth: Mapping[int, Sequence[float]], predictions: Sequence[Sequence[float]],
                     radius_mm: float = MATCH_MM) -> dict[int, int]:
    """One-to-one pairs (true label → prediction index) in order of increasing distance, each
    at most ``radius_mm`` apart."""
    pairs = []
    for label, t in truth.items():
        for k, p in enumerate(predictions):
            d = float(np.linalg.norm(np.asarray(p, dtype=float) - np.asarray(t, dtype=float)))
            if d <= radius_mm:
                pairs.append((d, label, k))
    out: dict[int, int] = {}
    used: set[int] = set()
    for _, label, k in sorted(pairs):
        if label not in out and k not in used:
            out[label] = k
            used.add(k)
    return out


def vertebra_rows(truth: Mapping[int, TrueVertebra], predictions: Sequence[Prediction],
                  radius_mm: float = MATCH_MM,
                  body_centres: Mapping[int, Sequence[float]] | None = None) -> list[dict[str, Any]]:
    """One row per true vertebra (cranial → caudal): its pairing, name check and the paired
    prediction's call, grade and agreement (see the module docstring). With ``body_centres`` (label →
    the true body centre, LPS mm: the annotated centre, or the centre of mass of a mask's body),
    ``body_centre_distance_mm`` is the distance from it to the paired prediction's body centre (None
    where either is missing)."""
    from VertebralFractureLib.anatomy import cranio_caudal

    pairs = pair_by_distance({k: t.centroid for k, t in truth.items()}, [p.centroid for p in predictions], radius_mm)
    rows = []
    for label in cranio_caudal(truth):
        t = truth[label]
        same_name = [p for p in predictions if p.label == label]
        name_dist = min((_dist(p.centroid, t.centroid) for p in same_name), default=None)
        p = predictions[pairs[label]] if label in pairs else None
        comparable = t.complete and t.grade is not None and p is not None and p.graded
        rows.append({
            "label": label, "name": name_of(label), "complete": t.complete, "true_grade": t.grade,
            "true_lps_mm": [round(c, 1) for c in t.centroid],
            "identified": name_dist is not None and name_dist <= radius_mm,
            "same_name_distance_mm": None if name_dist is None else round(name_dist, 2),
            "detected": p is not None,
            "predicted_name": None if p is None else name_of(p.label),
            "predicted_label": None if p is None else int(p.label),
            "distance_mm": None if p is None else round(_dist(p.centroid, t.centroid), 2),
            "status": None if p is None else p.status,
            "status_reason": None if p is None else p.status_reason,
            "fracture_probability": None if p is None or p.fracture_probability is None
            else round(float(p.fracture_probability), 4),
            "predicted_grade": None if p is None else p.grade,
            "graded": bool(t.complete and p is not None and p.graded),
            "fracture_found": (p is not None and p.calls_fracture) if t.grade is not None and t.grade >= 2 else None,
            "false_call": (p is not None and p.calls_fracture) if t.grade == 0 else None,
            "genant_exact": (p.grade == t.grade) if comparable else None,
            "genant_within_one": (abs(p.grade - t.grade) <= 1) if comparable else None,
        })
        if body_centres is not None:
            b = body_centres.get(label)
            rows[-1]["body_centre_distance_mm"] = (None if p is None or p.body_centre is None or b is None
                                                   else round(_dist(p.body_centre, b), 2))
    return rows


def prediction_counts(truth: Mapping[int, TrueVertebra], predictions: Sequence[Prediction],
                      radius_mm: float = MATCH_MM) -> dict[str, int]:
    """Predictions paired with a true vertebra, unpaired ones inside the annotated span (false
    detections) and unpaired ones beyond it (``outside``: cranial or caudal of the first or last
    true vertebra by more than ``radius_mm`` along the superior axis, where nothing was annotated),
    and how many unpaired ones call a fracture (``unpaired_calls``: the per-vertebra false calls
    cover paired vertebrae only, so a call on a false detection would not show there)."""
    pairs = pair_by_distance({k: t.centroid for k, t in truth.items()}, [p.centroid for p in predictions], radius_mm)
    paired = set(pairs.values())
    zs = [t.centroid[2] for t in truth.values()]
    false = outside = calls = 0
    for k, p in enumerate(predictions):
        if k in paired:
            continue
        calls += int(p.calls_fracture)
        if zs and min(zs) - radius_mm <= p.centroid[2] <= max(zs) + radius_mm:
            false += 1
        else:
            outside += 1
    return {"predicted": len(predictions), "paired": len(paired), "false_detections": false, "outside_truth": outside,
            "unpaired_calls": calls}


def dice_by_label(predicted: np.ndarray, true: np.ndarray, labels: Sequence[int],
                  body: np.ndarray | None = None,
                  paired: Mapping[int, int | None] | None = None) -> dict[int, dict[str, float | None]]:
    """Dice of each true label against the predicted mask of the same label (``dice``), the
    predicted label overlapping it most (``dice_best_label``) and, with ``paired`` (true label →
    the label of the prediction paired with it by position, or None), that prediction's mask
    (``dice_paired``; 0 when it has no voxels); with a boolean ``body`` mask (the
    true vertebral bodies), ``body_dice`` compares the true label's body with the prediction — the
    paired one where ``paired`` is given, else the same label — less the true vertebra's posterior
    elements (a prediction is not penalised for covering them)."""
    predicted = np.asarray(predicted)
    true = np.asarray(true)
    if predicted.shape != true.shape:
        raise ValueError(f"label maps differ in shape: {predicted.shape} vs {true.shape}")
    out: dict[int, dict[str, float | None]] = {}
    for label in labels:
        t = true == label
        p = predicted == label
        overlap = predicted[t]
        overlap = overlap[overlap != 0]
        best = None
        if overlap.size:
            values, counts = np.unique(overlap, return_counts=True)
            best = _dice(predicted == values[int(np.argmax(counts))], t)
        row: dict[str, float | None] = {"dice": _dice(p, t), "dice_best_label": best if best is not None else 0.0}
        if paired is not None and paired.get(label) is not None:
            p = predicted == paired[label]
            row["dice_paired"] = _dice(p, t) or 0.0
        elif paired is not None:  # nothing paired with it: no body outlined
            p = np.zeros_like(t)
        if body is not None:
            b = t & body
            row["body_dice"] = _dice(p & ~(t & ~b), b) if b.any() else None
        out[int(label)] = row
    return out


def summarize(rows: Sequence[Mapping[str, Any]], counts: Mapping[str, int]) -> dict[str, Any]:
    """Case or overall summary of :func:`vertebra_rows` (with ``dice``/``body_dice`` added where
    measured) and :func:`prediction_counts`: each rate as ``{"k", "n", "rate"}``."""
    def part(k: int, n: int) -> dict[str, Any]:
        return {"k": int(k), "n": int(n), "rate": (k / n) if n else None}

    def count(key: str, value: Any = True) -> int:
        return sum(1 for r in rows if r.get(key) is value)

    def known(key: str) -> int:
        return sum(1 for r in rows if r.get(key) is not None)

    dice = [r["dice"] for r in rows if r.get("dice") is not None]
    paired_dice = [r["dice_paired"] for r in rows if r.get("dice_paired") is not None]
    body = [r["body_dice"] for r in rows if r.get("body_dice") is not None]
    centres = [r["body_centre_distance_mm"] for r in rows if r.get("body_centre_distance_mm") is not None]
    complete = [r for r in rows if r["complete"]]
    paired = counts.get("paired", 0)
    return {
        "vertebrae": len(rows),
        "complete": len(complete),
        "predicted": counts.get("predicted", 0),
        "identification": part(count("identified"), len(rows)),
        "detection_recall": part(count("detected"), len(rows)),
        "detection_precision": part(paired, paired + counts.get("false_detections", 0)),
        "false_detections": counts.get("false_detections", 0),
        "predictions_outside_truth": counts.get("outside_truth", 0),
        "fracture_calls_unpaired": counts.get("unpaired_calls", 0),
        "dice_mean": float(np.mean(dice)) if dice else None,
        "dice_median": float(np.median(dice)) if dice else None,
        "dice_vertebrae": len(dice),
        "dice_paired_mean": float(np.mean(paired_dice)) if paired_dice else None,
        "dice_paired_vertebrae": len(paired_dice),
        "body_dice_mean": float(np.mean(body)) if body else "not available",
        "fractures_grade2_found": part(count("fracture_found"), known("fracture_found")),
        "false_calls_grade0": part(count("false_call"), known("false_call")),
        "genant_exact": part(count("genant_exact"), known("genant_exact")),
        "genant_within_one": part(count("genant_within_one"), known("genant_within_one")),
        "graded_share": part(sum(1 for r in complete if r["graded"]), len(complete)),
        "body_centre_within_5mm": part(sum(1 for d in centres if d <= BODY_CENTRE_MM), len(centres)),
        "body_centre_distance_median_mm": float(np.median(centres)) if centres else None,
    }


def _dist(a: Sequence[float], b: Sequence[float]) -> float:
    return float(np.linalg.norm(np.asarray(a, dtype=float) - np.asarray(b, dtype=float)))


def _dice(a: np.ndarray, b: np.ndarray) -> float | None:
    n = int(a.sum()) + int(b.sum())
    return 2.0 * int(np.sum(a & b)) / n if n else None


# ------------------------------------------------------------------------------- truth readers
def mask_truth(labelmap: Volume, grades: Mapping[int, int | None], edge_margin_mm: float = 1.0) -> dict[int, TrueVertebra]:
    """True vertebrae of a VerSe labelmap: centre of mass per vertebra label; a vertebra whose
    mask comes within ``edge_margin_mm`` of the cranial or caudal end of the field of view is
    incomplete (as :class:`~VertebralFractureLib.pipeline.GivenSegmentation` decides)."""
    from scipy import ndimage

    arr = np.asarray(labelmap.array)
    labels = [int(v) for v in np.unique(arr) if v != 0 and is_vertebra_label(int(v))]
    if not labels:
        return {}
    centres = ndimage.center_of_mass(np.ones(arr.shape, np.uint8), arr, labels)
    boxes = ndimage.find_objects(arr.astype(np.int32))
    axis = 2 - int(np.argmax(np.abs(labelmap.direction[2, :])))  # numpy axis closest to superior
    margin = int(np.ceil(edge_margin_mm / labelmap.spacing[2 - axis]))
    out = {}
    for label, c in zip(labels, centres):
        box = boxes[label - 1][axis]
        complete = box.start >= margin and box.stop - 1 <= arr.shape[axis] - 1 - margin
        out[label] = TrueVertebra(label, tuple(float(v) for v in labelmap.zyx_to_lps(np.asarray(c))), complete,
                                  grades.get(label))
    return out


def read_annotation(path: str | Path) -> dict[str, Any]:
    """Read and check a ``*_bodies.json`` annotation (format: ``Resources/Annotations/README.md``).

    Returns the file's content with ``vertebrae`` as :class:`TrueVertebra` (label → entry).

    Raises:
        InputError: unreadable file, a missing field, an unknown or repeated vertebra name, a name
            that disagrees with its label, non-finite coordinates or a bad grade.
    """
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"cannot read annotation {p}: {err}") from err
    if not isinstance(doc, dict) or not isinstance(doc.get("vertebrae"), list):
        raise InputError(f"{p.name}: not a body-centre annotation (needs a 'vertebrae' list)")
    for key in ("image", "how", "source"):
        if not isinstance(doc.get(key), str) or not doc[key].strip():
            raise InputError(f"{p.name}: the '{key}' field is missing or empty")
    grades = doc.get("grades")
    out: dict[int, TrueVertebra] = {}
    for e in doc["vertebrae"]:
        try:
            label = int(e["label"])
            xyz = tuple(float(e[k]) for k in ("X", "Y", "Z"))
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"{p.name}: bad vertebra entry {e!r}") from err
        if not is_vertebra_label(label):
            raise InputError(f"{p.name}: {label} is not a vertebra label (VerSe 1–25, 28)")
        if "name" in e and e["name"] != name_of(label):
            raise InputError(f"{p.name}: label {label} is {name_of(label)}, not {e['name']!r}")
        if label in out:
            raise InputError(f"{p.name}: {name_of(label)} is given twice")
        if not np.all(np.isfinite(xyz)):
            raise InputError(f"{p.name}: {name_of(label)} needs finite X, Y, Z (LPS mm)")
        complete = not bool(e.get("cut", False))
        out[label] = TrueVertebra(label, xyz, complete, _annotated_grade(grades, label, complete, p.name))
    if not out:
        raise InputError(f"{p.name}: no vertebra in the annotation")
    return {**doc, "vertebrae": out}


def _annotated_grade(grades: Any, label: int, complete: bool, where: str) -> int | None:
    """A vertebra's grade from the annotation's ``grades``: "all 0", or name → 0–3 / null. A
    vertebra cut by the field of view has no grade."""
    if not complete or grades is None:
        return None
    if grades == "all 0":
        return 0
    if not isinstance(grades, dict):
        raise InputError(f"{where}: 'grades' must be \"all 0\", an object name → grade, or null")
    g = grades.get(name_of(label))
    if g is None:
        return None
    if g not in (0, 1, 2, 3):
        raise InputError(f"{where}: grade of {name_of(label)} must be 0–3 or null, got {g!r}")
    return int(g)


def source_of(name: str) -> str:
    """The credit line of a known public data set, from the case name ('' when unknown)."""
    low = name.lower()
    return next((credit for prefix, credit in KNOWN_SOURCES if low.startswith(prefix)), "")


# ----------------------------------------------------------------------------- case discovery
def find_cases(paths: Sequence[str | Path], masks_only: bool = False) -> tuple[list[RealCase], list[str]]:
    """The evaluable cases among folders and files, and notes on what was skipped.

    A folder contributes its ``*_seg-vert_msk.nii.gz`` masks that have a ``*_ct.nii.gz`` beside
    them (grades from its ``genant_grades.json``), its ``*_bodies.json`` annotations, or the
    subjects of a VerSe-layout ``rawdata/`` + ``derivatives/`` tree. A file may be a mask or an
    annotation. An annotation's ``image`` is looked for beside it, then in every folder given.
    With ``masks_only`` (grading the true masks, :func:`evaluate_case`) only masks are cases, and a
    mask without its CT is one too (``ct`` None); annotations are skipped with a note.

    Raises:
        InputError: a path that does not exist or is not a mask, annotation or folder.
    """
    dirs = [Path(p) for p in paths if Path(p).is_dir()]
    search = dirs + [Path(p).parent for p in paths if Path(p).is_file()]
    cases: list[RealCase] = []
    notes: list[str] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise InputError(f"'{p}' does not exist")
        if p.is_dir():
            if (p / "rawdata").is_dir():
                cases += _verse_tree_cases(p, notes)
            for mask in sorted(p.glob("*" + MASK_SUFFIX)):
                _add(cases, _mask_case(mask, notes, masks_only))
            for ann in sorted(p.glob("*" + ANNOTATION_SUFFIX)):
                _add(cases, _annotation_case(ann, search, notes, masks_only))
        elif p.name.endswith(ANNOTATION_SUFFIX):
            _add(cases, _annotation_case(p, search, notes, masks_only))
        elif p.name.endswith(MASK_SUFFIX):
            _add(cases, _mask_case(p, notes, masks_only))
        else:
            raise InputError(f"'{p.name}': give folders, vertebra masks (*{MASK_SUFFIX}) or annotations (*{ANNOTATION_SUFFIX})")
    names = [c.name for c in cases]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(f"cases given more than once: {', '.join(dup)}")
    return cases, notes


def _add(cases: list[RealCase], case: RealCase | None) -> None:
    if case is not None:
        cases.append(case)


def _mask_case(mask: Path, notes: list[str], masks_only: bool = False) -> RealCase | None:
    subject = mask.name[: -len(MASK_SUFFIX)]
    ct: Path | None = mask.with_name(subject + "_ct.nii.gz")
    if not ct.exists():
        if not masks_only:
            notes.append(f"{subject}: vertebra mask without a CT ({ct.name} not found), skipped")
            return None
        notes.append(f"{subject}: no CT ({ct.name} not found): graded from the mask alone, without the bone check")
        ct = None
    grades: dict[int, int | None] = {}
    table = mask.with_name(GRADES_FILE)
    if table.exists():
        try:
            per_subject = json.loads(table.read_text(encoding="utf-8")).get("grades", {}).get(subject, {})
            grades = {int(k): (None if v is None else int(v)) for k, v in per_subject.items()}
        except (ValueError, AttributeError, TypeError) as err:
            raise InputError(f"{table}: cannot read the grades of {subject}: {err}") from err
    if not grades:
        notes.append(f"{subject}: no Genant grades ({GRADES_FILE}): fracture and grade metrics not measured")
    sub = mask.with_name(subject + "_seg-subreg_msk.nii.gz")
    return RealCase(subject, ct, mask, "masks", grades, sub if sub.exists() else None, source_of(subject))


def _verse_tree_cases(root: Path, notes: list[str]) -> list[RealCase]:
    from VertebralFractureLib.io.verse import list_cases

    out = []
    for c in list_cases(root):
        if not c.vertebra_mask.exists():
            notes.append(f"{c.subject}: no vertebra mask in derivatives/, skipped")
            continue
        grades: dict[int, int | None] = {}
        if c.genant.exists():
            try:
                grades = {int(e["label"]): (None if e.get("grade") is None else int(e["grade"]))
                          for e in json.loads(c.genant.read_text(encoding="utf-8"))}
            except (ValueError, KeyError, TypeError) as err:
                raise InputError(f"{c.genant}: cannot read the grades: {err}") from err
        out.append(RealCase(c.subject, c.ct, c.vertebra_mask, "masks", grades, None, source_of(c.subject)))
    return out


def _annotation_case(path: Path, search: Sequence[Path], notes: list[str], masks_only: bool = False) -> RealCase | None:
    if masks_only:
        notes.append(f"{path.name}: an annotation has no vertebra mask to grade, skipped")
        return None
    doc = read_annotation(path)
    image = Path(doc["image"])
    if image.name != doc["image"]:
        raise InputError(f"{path.name}: 'image' must be a file name, not a path")
    for folder in [path.parent, *search]:
        if (folder / image).exists():
            name = path.name[: -len(ANNOTATION_SUFFIX)]
            return RealCase(name, folder / image, path, "annotation", {}, None, doc["source"])
    notes.append(f"{path.name}: its CT {image} is not beside it nor in the folders given, skipped")
    return None


# ------------------------------------------------------------------------------------- runner
def evaluate_case(case: RealCase, centroids_from_truth: bool = False, config: Any = None,
                  masks_from_truth: bool = False) -> dict[str, Any]:
    """Run the pipeline (its default stages, stage 1 replaced by the true centres, or with
    ``masks_from_truth`` stage 3 alone on the true mask, as ``grade`` does) on one case and compare:
    ``{"case", "rows", "counts", "summary", "analysis", "truth", "image", "true_labelmap",
    "centroids"}``. Grading the true mask measures stage 3 on real anatomy; its Dice is left out
    (the mask is the truth), and without a CT the bone check cannot run (as in ``grade``)."""
    from VertebralFractureLib.io.readers import read_image, read_labelmap
    from VertebralFractureLib.pipeline import (
        AnalysisConfig,
        GivenSegmentation,
        analyze,
        default_stages,
        given_centroid_stages,
        grading_stage,
    )
    from VertebralFractureLib.sanity import check_ct, check_geometry
    from VertebralFractureLib.vertebra_parts import body_mask

    config = config or AnalysisConfig()
    if masks_from_truth and case.kind != "masks":
        raise InputError(f"{case.name}: grading the true masks needs a vertebra mask, not an annotation")
    if case.ct is None:
        if not masks_from_truth:
            raise InputError(f"{case.name}: no CT")
        mask = read_labelmap(case.truth)
        check_geometry(mask, Path(case.truth).name)
        image = mask.with_array(np.zeros(mask.array.shape, np.int16))  # all zero: "no CT", as grade -s
    else:
        image = read_image(case.ct).volume
        check_ct(image, Path(case.ct).name)  # the same gate as analyze: no scores on an unusable image
    true_map = body = body_truth = None
    if case.kind == "masks":
        true_map = read_labelmap(case.truth, image)
        truth = mask_truth(true_map, case.grades, config.edge_margin_mm)
        if case.subregions is not None:
            body = np.isin(read_labelmap(case.subregions, image).array, BODY_SUBREGION_LABELS)
            body_truth = "sub-region labels"
        elif not masks_from_truth:  # each true vertebra split at its body's posterior wall (vertebra_parts)
            body = body_mask(true_map, list(truth))[0]
            body_truth = "true mask in front of the body's posterior wall (geometric split)"
    else:
        truth = read_annotation(case.truth)["vertebrae"]
    if not truth:
        raise InputError(f"{case.name}: no vertebra in the truth")
    if masks_from_truth:
        stages = [GivenSegmentation(true_map), grading_stage()]
        centroids = "true masks, stage 3 alone" + ("" if case.ct is not None else " (no CT)")
    elif centroids_from_truth:
        stages = given_centroid_stages({k: t.centroid for k, t in truth.items()})
        centroids = "true (mask centres of mass)" if case.kind == "masks" else "annotated body centres"
    else:
        stages, centroids = default_stages(), "stage 1"
    analysis = analyze(image, config, stages=stages,
                       input_description=(case.ct or case.truth).name)
    predictions = [Prediction.from_result(v) for v in analysis.vertebrae]
    if case.kind == "annotation":
        true_bodies = {k: t.centroid for k, t in truth.items()}
    elif body is not None:  # the centre of mass of each true body (sub-region labels or the geometric split)
        true_bodies = body_centres_of(true_map, body, list(truth))
    else:
        true_bodies = None
    rows = vertebra_rows(truth, predictions, body_centres=true_bodies)
    if true_map is not None and analysis.labelmap is not None and not masks_from_truth:
        dice = dice_by_label(analysis.labelmap.array, true_map.array, [r["label"] for r in rows], body,
                             {r["label"]: r["predicted_label"] for r in rows})
        for r in rows:
            r.update(dice[r["label"]])
    counts = prediction_counts(truth, predictions)
    summary = summarize(rows, counts)
    summary.update({"truth": case.kind, "source": case.source, "centroids": centroids, "body_truth": body_truth,
                    "seconds": {k: round(float(v), 2) for k, v in analysis.timings_s.items()}})
    return {"case": case, "rows": rows, "counts": counts, "summary": summary, "analysis": analysis,
            "truth": truth, "image": image if case.ct is not None else _mask_picture(true_map),
            "true_labelmap": true_map, "centroids": centroids}


def body_centres_of(labelmap: Volume, body: np.ndarray, labels: Sequence[int]) -> dict[int, tuple[float, float, float]]:
    """Label → LPS centre of mass of the label's voxels inside the boolean ``body`` mask (labels
    without body voxels are left out)."""
    from VertebralFractureLib.slices import mask_centres

    bodies = labelmap.with_array(np.where(body, np.asarray(labelmap.array), 0))
    return {k: tuple(float(x) for x in c) for k, c in mask_centres(bodies, labels).items()}


def _mask_picture(mask: Volume) -> Volume:
    """A stand-in picture for the figure where no CT exists: the vertebrae at bone brightness on air."""
    return mask.with_array(np.where(np.asarray(mask.array) > 0, 700, -1000).astype(np.int16))


def evaluate_real(paths: Sequence[str | Path], out_dir: str | Path | None = None, centroids_from_truth: bool = False,
                  config: Any = None, progress: Callable[[str, float, str], None] | None = None,
                  masks_from_truth: bool = False) -> dict[str, Any]:
    """Evaluate every case found in ``paths`` (:func:`find_cases`); write the CSV, the summary
    JSON and the figure into ``out_dir`` when given. Returns ``{"cases", "overall", "notes",
    "rows", "files"}``. ``masks_from_truth``: stage 3 alone on each true mask (a mask without its
    CT counts too; annotations are skipped).

    Raises:
        InputError: no case could be evaluated, or both ``centroids_from_truth`` and ``masks_from_truth``.
        ModelNotAvailableError: a model the stages need is not installed (stage 1 without
            ``centroids_from_truth``).
    """
    if centroids_from_truth and masks_from_truth:
        raise InputError("give the true centroids or the true masks, not both")
    cases, notes = find_cases(paths, masks_only=masks_from_truth)
    if not cases:
        raise InputError("no case to evaluate" + (": " + "; ".join(notes) if notes else ""))
    results = []
    for k, case in enumerate(cases):
        if progress is not None:
            progress("evaluate", k / len(cases), case.name)
        try:
            results.append(evaluate_case(case, centroids_from_truth, config, masks_from_truth))
        except InputError as err:  # one unusable case is named and left out, not the end of the run
            notes.append(f"{case.name} left out: {err}")
    if not results:
        raise InputError("no case could be evaluated: " + "; ".join(notes))
    if progress is not None:
        progress("evaluate", 1.0, "done")
    rows = [{"case": r["case"].name, **row} for r in results for row in r["rows"]]
    overall = summarize(rows, {key: sum(r["counts"][key] for r in results) for key in results[0]["counts"]})
    sources = sorted({r["case"].source for r in results if r["case"].source})
    out: dict[str, Any] = {
        "cases": {r["case"].name: r["summary"] for r in results}, "overall": overall, "notes": notes,
        "sources": sources, "match_mm": MATCH_MM, "rows": rows, "files": [],
    }
    if out_dir is not None:
        folder = Path(out_dir)
        folder.mkdir(parents=True, exist_ok=True)
        out["files"] = [write_rows_csv(rows, folder / "real_vertebrae.csv"),
                        _write_json({k: v for k, v in out.items() if k not in ("rows", "files")}, folder / "real_summary.json"),
                        write_figure(results, folder / "real_cases.png", sources)]
    return out


# ------------------------------------------------------------------------------------ outputs
CSV_COLUMNS = ("case", "name", "label", "complete", "true_grade", "true_lps_mm", "identified", "same_name_distance_mm",
               "detected", "predicted_name", "distance_mm", "status", "status_reason", "fracture_probability",
               "predicted_grade", "graded", "fracture_found", "false_call", "genant_exact", "genant_within_one",
               "dice", "dice_paired", "dice_best_label", "body_dice", "body_centre_distance_mm")


def write_rows_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """One row per true vertebra (empty cells: not applicable or not measured)."""
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for r in rows:
            w.writerow(["" if r.get(c) is None else _cell(r.get(c)) for c in CSV_COLUMNS])
    return path


def _cell(v: Any) -> str:
    if isinstance(v, list | tuple):
        return " ".join(f"{x:g}" for x in v)
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _write_json(obj: Any, path: Path) -> Path:
    path.write_text(json.dumps(obj, indent=2, default=_builtin) + "\n", encoding="utf-8")
    return path


def _builtin(obj: Any) -> Any:
    """numpy scalars and paths in JSON."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def format_table(result: Mapping[str, Any]) -> str:
    """The per-case and overall numbers as a text table (``k/n`` counts, rates in per cent)."""
    head = ("case", "truth", "ident.", "det. recall", "det. prec.", "Dice", "Dice paired", "body Dice", "g>=2 found",
            "false calls g0", "Genant exact", "within 1", "graded")
    lines = [head]

    def frac(d: Mapping[str, Any]) -> str:
        return f"{d['k']}/{d['n']}" + (f" ({100 * d['rate']:.0f}%)" if d["rate"] is not None else "")

    for name, s in [*result["cases"].items(), ("overall", result["overall"])]:
        body = s["body_dice_mean"]
        lines.append((name, s.get("truth", ""), frac(s["identification"]), frac(s["detection_recall"]),
                      frac(s["detection_precision"]), "-" if s["dice_mean"] is None else f"{s['dice_mean']:.3f}",
                      "-" if s.get("dice_paired_mean") is None else f"{s['dice_paired_mean']:.3f}",
                      body if isinstance(body, str) else f"{body:.3f}", frac(s["fractures_grade2_found"]),
                      frac(s["false_calls_grade0"]), frac(s["genant_exact"]), frac(s["genant_within_one"]),
                      frac(s["graded_share"])))
    widths = [max(len(str(r[k])) for r in lines) for k in range(len(head))]
    text = "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in lines)
    extra = [f"identification: right name within {result['match_mm']:g} mm of the true centre; detection: any "
             "prediction paired within that distance; Dice: same-label masks; Dice paired: the true mask against "
             "the mask of the prediction paired with it ('-': no true mask); body Dice: the true body against that "
             "prediction's, less the true posterior elements"]
    extra += [f"{name}: centroids {s['centroids']}" + (f"; body: {s['body_truth']}" if s.get("body_truth") else "")
              + (f"; body centres within {BODY_CENTRE_MM:g} mm of the true ones: {frac(s['body_centre_within_5mm'])}, "
                 f"median {s['body_centre_distance_median_mm']:.1f} mm"
                 if s.get("body_centre_distance_median_mm") is not None else "")
              for name, s in result["cases"].items()]
    extra.append("fracture calls on predictions paired with no true vertebra (not in 'false calls g0'): "
                 + str(result["overall"].get("fracture_calls_unpaired", 0))
                 + "".join(f"; {name} {s['fracture_calls_unpaired']}" for name, s in result["cases"].items()
                           if s.get("fracture_calls_unpaired")))
    extra += [f"note: {n}" for n in result["notes"]]
    if result["sources"]:
        extra.append("data: " + "; ".join(result["sources"]))
    return text + "\n" + "\n".join(extra)


def write_figure(results: Sequence[Mapping[str, Any]], path: Path, sources: Sequence[str] = (),
                 slab_mm: float = 5.0) -> Path:
    """Per case a sagittal slab (mean over ``slab_mm``, bone window, anterior left) through the
    true centres' median left–right position: true centres as rings named on the anterior side,
    predictions as dots named on the posterior side, coloured by status, over the predicted
    vertebrae tinted the same way."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from VertebralFractureLib.preprocess import to_model_grid

    n = len(results)
    cols = min(n, 5)
    rows = -(-n // cols)
    fig = Figure(figsize=(4.2 * max(cols, 2), 8.0 * rows), dpi=90, facecolor="black")
    FigureCanvasAgg(fig)
    for k, r in enumerate(results):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.set_facecolor("black")
        grid = to_model_grid(r["image"], 1.0)
        truth: Mapping[int, TrueVertebra] = r["truth"]
        x_mm = float(np.median([t.centroid[0] for t in truth.values()]))
        xi = int(round(grid.lps_to_index([x_mm, 0.0, 0.0])[0]))
        half = max(0, int(round(slab_mm / 2)))
        lo, hi = max(0, xi - half), min(grid.array.shape[2], xi + half + 1)
        slab = grid.array[:, :, lo:hi].mean(axis=2)
        extent = [grid.origin[1] - 0.5, grid.origin[1] + slab.shape[1] - 0.5,
                  grid.origin[2] - 0.5, grid.origin[2] + slab.shape[0] - 0.5]
        ax.imshow(slab, cmap="gray", vmin=-350, vmax=1150, origin="lower", extent=extent, interpolation="bilinear")
        analysis = r["analysis"]
        preds = {v.label: v for v in analysis.vertebrae}
        if analysis.labelmap is not None:
            labels = analysis.labelmap.resample_like(grid, interpolation="nearest").array[:, :, lo:hi].max(axis=2)
            tint = np.zeros(labels.shape + (4,))
            for label, v in preds.items():
                tint[labels == label] = _rgba(STATUS_COLORS.get(getattr(v, "status", None), STATUS_COLORS[None]), 0.28)
            ax.imshow(tint, origin="lower", extent=extent, interpolation="nearest")
        for t in truth.values():
            ax.plot(t.centroid[1], t.centroid[2], "o", ms=7, mfc="none", mec="#40e0ff", mew=1.4)
            grade = "" if t.grade is None else f" g{t.grade}"
            ax.text(t.centroid[1] - 9, t.centroid[2], name_of(t.label) + grade + ("" if t.complete else " (cut)"),
                    color="#40e0ff", fontsize=7, ha="right", va="center")
        for v in analysis.vertebrae:
            status = getattr(v, "status", None)
            color = STATUS_COLORS.get(status, STATUS_COLORS[None])
            c = v.centroid_lps_mm
            ax.plot(c[1], c[2], "o", ms=5, color=color)
            grade = "" if v.genant is None else f" g{v.genant.grade}"
            ax.text(c[1] + 9, c[2], f"{v.name}{grade}", color=color, fontsize=7, ha="left", va="center")
        ys = [t.centroid[1] for t in truth.values()]
        zs = [t.centroid[2] for t in truth.values()]
        ax.set_xlim(min(ys) - 70, max(ys) + 70)
        ax.set_ylim(max(extent[2], min(zs) - 40), min(extent[3], max(zs) + 40))
        ax.set_aspect("equal")
        ax.set_axis_off()
        s = r["summary"]
        ax.set_title(f"{r['case'].name}\nidentified {s['identification']['k']}/{s['identification']['n']}, "
                     f"centroids: {r['centroids']}", color="white", fontsize=8)
    legend = ("rings: truth (name, true grade) · dots: predictions (name, Genant grade)\n"
              "white normal, red fractured, ochre not assessable, blue no status · sagittal 5 mm slab, anterior left")
    fig.text(0.5, 0.01 / rows, legend + "".join("\n" + s for s in sources), color="white", fontsize=7,
             ha="center", va="bottom")
    fig.subplots_adjust(left=0.01, right=0.99, top=1 - 0.07 / rows, bottom=(0.05 + 0.012 * len(sources)) / rows,
                        wspace=0.05, hspace=0.12)
    fig.savefig(path, facecolor="black")
    return path


def _rgba(hex_color: str, alpha: float) -> tuple[float, float, float, float]:
    h = hex_color.lstrip("#")
    return (int(h[0:2], 16) / 255, int(h[2:4], 16) / 255, int(h[4:6], 16) / 255, alpha)


__all__ = [
    "MATCH_MM", "Prediction", "RealCase", "TrueVertebra", "dice_by_label", "evaluate_case", "evaluate_real",
    "find_cases", "format_table", "mask_truth", "pair_by_distance", "prediction_counts", "read_annotation",
    "summarize", "vertebra_rows",
]
