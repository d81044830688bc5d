"""The analysis of one lateral spine radiograph: L1–L5 found, each vertebra normal / old / fresh,
the whole image fresh VCF or not, with Grad-CAM maps (seeds 003 and 004).

Steps: the detector (:mod:`.radiograph_detect`) boxes L1–L5; the levels above L1 that the
ensemble's card names (``postprocess.placed_levels``, chosen on validation radiographs) are placed
from the L1–L2 step (:func:`.radiograph_detect.extend_upwards`): the detector does not name them,
and half of the fresh fractures lie there, at the thoracolumbar junction. A placed vertebra gets
the ensemble's probabilities, which count towards the image's fresh-VCF score, but no class and no
call (``status`` ``"placed"``): its box is not a detection, and on validation radiographs the networks
called one normal T12 in five fresh. Each box is cropped as seed 004 does
(:func:`.radiograph_classify.crop_vertebra`) and classified by the three networks of the ensemble,
whose probabilities are averaged (the seed's sum, divided by three); a vertebra is called fractured
(old or fresh) only when 1 − P(normal) reaches the threshold on its card, chosen on validation data
so that 95 % of normal vertebrae stay normal (:func:`.radiograph_classify.decide`); Grad-CAM maps of the ensemble's
class, averaged over the networks, are put back where each crop came from; the fresh-VCF network
(seed 003) scores the whole image, with its own Grad-CAM map.

A vertebra whose box is cut by the image edge is reported, but ``not assessable``: its crop misses
part of the body. Nothing here is a diagnosis; every model is trained on synthetic radiographs
(their cards say how they fare), which the warnings say in plain words.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from VertebralFractureLib.io.radiograph import Radiograph
from VertebralFractureLib.radiograph_classify import CLASSES, ENSEMBLE, FRESH_MODEL, model_name

#: Box edges closer than this to the image border (pixels) make the vertebra not assessable.
EDGE_PX = 1.0
#: A box narrower or lower than this (mm) holds no vertebral body (a lumbar body is 25-50 mm).
MIN_BOX_MM = 8.0
#: Why a detection whose place contradicts the other levels' is not classified (:func:`.radiograph_detect.out_of_order`).
OUT_OF_ORDER = ("its place contradicts the other levels (L1 above L2 above ... L5): not a vertebra the name "
                "could be checked on")
#: How the thoracic vertebrae above L1 are located (:func:`.radiograph_detect.extend_upwards`).
PLACED = "placed from L1 and L2"
#: The status of a placed vertebra that could be classified: probabilities, no class, no call.
PLACED_STATUS = "placed"
PLACED_REASON = ("placed from L1 and L2, not detected: its probabilities count towards the image's fresh-VCF "
                 "score; no class or call is made on it")
ProgressCallback = Callable[[str, float, str], None]


@dataclass
class RadiographVertebra:
    """One detected vertebra: box (image pixels and mm), detection score, each network's and the
    ensemble's probabilities, the ensemble's class, and whether it could be assessed."""

    name: str
    box_px: list[float]
    box_mm: list[float]
    detection_score: float | None
    probabilities: dict[str, dict[str, float]] = field(default_factory=dict)
    ensemble: dict[str, float] = field(default_factory=dict)
    cls: str | None = None
    status: str = "assessed"
    reason: str | None = None

    @property
    def located(self) -> str:
        """``"detected"`` (L1–L5, the detector) or :data:`PLACED` (above L1: no detection score)."""
        return "detected" if self.detection_score is not None else PLACED

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "box_px": self.box_px, "box_mm": self.box_mm,
                               "detection_score": self.detection_score, "located": self.located,
                               "naming": dict(RADIOGRAPH_NAMING),
                               "probabilities": self.probabilities,
                               "ensemble": self.ensemble, "class": self.cls, "status": self.status}
        if self.reason:
            out["reason"] = self.reason
        return out


@dataclass
class RadiographAnalysis:
    """The result: the radiograph, its vertebrae, the fresh-VCF probability of the image and the
    Grad-CAM maps (image size, 0..1: ``cam`` of the vertebra ensemble, ``fresh_cam`` of seed 003)."""

    radiograph: Radiograph
    vertebrae: list[RadiographVertebra]
    fresh_vcf_probability: float | None
    cam: np.ndarray | None = None
    fresh_cam: np.ndarray | None = None
    models: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def fresh_vcf_probability_vertebrae(self) -> float | None:
        """The image's fresh-VCF score from its vertebrae (:func:`vertebrae_fresh_score`)."""
        return vertebrae_fresh_score(self.vertebrae)

    def to_json(self) -> dict[str, Any]:
        r = self.radiograph
        return {"input": {"kind": r.kind, "rows": int(r.image.shape[0]), "columns": int(r.image.shape[1]),
                          "pixel_spacing_mm": list(r.pixel_spacing_mm), "spacing_source": r.spacing_source},
                "vertebrae": [v.to_json() for v in self.vertebrae],
                "fresh_vcf_probability": self.fresh_vcf_probability,
                "fresh_vcf_probability_vertebrae": self.fresh_vcf_probability_vertebrae,
                "classes": list(CLASSES), "ensemble_members": list(ENSEMBLE), "models": self.models,
                "warnings": list(self.warnings), "timings_s": self.timings_s,
                "disclaimer": "Research software, not for diagnosis."}


#: How a radiograph's vertebrae are named: by the detector's reading of the lumbar stack, with no
#: anchor (the sacrum, the last rib) found and checked as the CT analysis does (``naming`` there).
RADIOGRAPH_NAMING: dict[str, Any] = {"anchor": None, "basis": "detector"}
#: Said with every radiograph that has a named vertebra.
NAMING_WARNING = ("level names are the detector's reading of the lumbar stack, not anchored to the sacrum or the "
                  "last rib: on radiographs reconstructed from real CT most boxes were named a level off "
                  "(docs/radiographs.md); count the levels from the sacrum before reporting one")


def accuracy_warning(cards: dict[str, Any]) -> str:
    """The models' measured accuracy in plain words, from their cards."""
    parts = []
    det = cards.get("detector")
    if det is not None:
        m = (det.metrics or {}).get("heldout_synthetic", {}).get("map")
        if m is not None:
            parts.append(f"L1-L5 detection mAP@0.5 {m:.3f}")  # three decimals: 0.949 does not reach a 0.95 goal
    member = cards.get(ENSEMBLE[0])
    if member is not None:
        ens = (member.metrics or {}).get("ensemble_heldout_synthetic") or {}
        if ens.get("accuracy") is not None:
            parts.append(f"three-class accuracy {ens['accuracy']:.2f}")
    fresh = cards.get("fresh")
    if fresh is not None:
        # both numbers from the same held-out radiographs: the regenerated set where the card has it
        regenerated = (fresh.metrics or {}).get("heldout_synthetic_regenerated", {})
        auc = (regenerated.get("this_network", {}).get("value") if regenerated else
               (fresh.metrics or {}).get("heldout_synthetic_auc", {}).get("value"))
        if auc is not None:
            parts.append(f"fresh-VCF ROC-AUC {auc:.2f} for the whole-image network")
        by_vertebrae = regenerated.get("vertebrae_largest_ensemble_fresh", {}).get("value")
        if by_vertebrae is not None:
            parts.append(f"{by_vertebrae:.2f} from the vertebrae")
    held = f" (held-out synthetic: {', '.join(parts)})" if parts else ""
    return ("The radiograph models are trained on synthetic radiographs only" + held + "; they have not been "
            "measured on real radiographs, and on radiographs reconstructed from real CT they named and classified "
            "vertebrae wrongly (docs/radiographs.md). A second look, not a diagnosis.")


def load_models(device: str) -> tuple[dict[str, Any], dict[str, Any], Any, Any]:
    """The installed radiograph models (checked, cached per process): their cards (``detector``, each
    ensemble network's kind, ``fresh``), the ensemble's networks, the detector and the fresh-VCF network."""
    from VertebralFractureLib.models import load_network
    from VertebralFractureLib.radiograph_classify import build_network
    from VertebralFractureLib.radiograph_detect import MODEL_NAME
    from VertebralFractureLib.radiograph_detect import build_network as build_detector

    cards: dict[str, Any] = {}
    cards["detector"], detector = load_network(MODEL_NAME, build_detector, cached=True)
    nets = {}
    for kind in ENSEMBLE:
        cards[kind], nets[kind] = load_network(model_name(kind), lambda a: build_network(a["type"]), cached=True)
    cards["fresh"], fresh = load_network(FRESH_MODEL, lambda a: build_network(a["type"], 1), cached=True)
    for net in (detector, fresh, *nets.values()):
        net.to(device).eval()
    return cards, nets, detector, fresh


def _place(cam_img: np.ndarray, crop_cam: np.ndarray, meta: dict[str, Any]) -> None:
    """Put a crop's Grad-CAM map back on the image (maximum where maps overlap)."""
    from PIL import Image

    r0, c0 = meta["offset"]
    rows, cols = meta["size"]
    inner = crop_cam[r0:r0 + rows, c0:c0 + cols]
    scale = meta["scale"]
    h, w = max(1, int(round(rows / scale))), max(1, int(round(cols / scale)))
    back = np.asarray(Image.fromarray(inner.astype(np.float32)).resize((w, h), Image.BILINEAR))
    xa, ya = meta["origin"]
    ys, xs = max(ya, 0), max(xa, 0)
    ye, xe = min(ya + h, cam_img.shape[0]), min(xa + w, cam_img.shape[1])
    if ye > ys and xe > xs:
        region = back[ys - ya:ye - ya, xs - xa:xe - xa]
        cam_img[ys:ye, xs:xe] = np.maximum(cam_img[ys:ye, xs:xe], region)


def vertebrae_fresh_score(vertebrae: list[RadiographVertebra]) -> float | None:
    """The largest ensemble P(fresh) among the assessed and placed vertebrae (None when there is none):
    a fresh fracture in view, judged vertebra by vertebra (seed 004's networks) rather than from the
    whole image (seed 003)."""
    scores = [v.ensemble["fresh"] for v in vertebrae
              if v.status in ("assessed", PLACED_STATUS) and "fresh" in v.ensemble]
    return max(scores) if scores else None


def box_status(box_px: list[float], shape: tuple[int, int],
               spacing_mm: tuple[float, float]) -> tuple[str, str | None, bool]:
    """Whether a detected box can be assessed: the status (``"assessed"`` or ``"not assessable"``), the
    reason, and whether its crop is classified at all (a box too small to hold a body is not)."""
    x0, y0, x1, y1 = box_px
    rows, cols = shape
    if min(x1 - x0, y1 - y0) * min(spacing_mm) < MIN_BOX_MM:
        return "not assessable", f"the box is smaller than {MIN_BOX_MM:g} mm: no vertebral body", False
    if x0 <= EDGE_PX or y0 <= EDGE_PX or x1 >= cols - EDGE_PX or y1 >= rows - EDGE_PX:
        return "not assessable", "the box is cut by the image edge: part of the body is not in view", True
    return "assessed", None, True


def analyze_radiograph(radiograph: Radiograph, device: str = "auto", grad_cam: bool = True,
                       progress: ProgressCallback | None = None) -> RadiographAnalysis:
    """Analyse one radiograph (module docstring)."""
    from VertebralFractureLib.models import select_device
    from VertebralFractureLib.radiograph_classify import (
        crop_vertebra,
        decide,
        ensemble,
        ensemble_grad_cam,
        fresh_probability,
        grad_cam,
        probabilities,
        whole_input,
        whole_map_to_image,
    )
    from VertebralFractureLib.radiograph_detect import LEVELS, detect

    report = progress or (lambda stage, fraction, message: None)
    dev = select_device(device)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    cards, nets, detector, fresh_net = load_models(dev)
    timings["load"] = round(time.perf_counter() - t0, 3)
    image, (sy, sx) = radiograph.image, radiograph.pixel_spacing_mm

    report("detect", 0.0, "finding L1-L5")
    t0 = time.perf_counter()
    found = detect(detector, image, (sy, sx), threshold=detection_threshold(cards), device=dev)
    boxes = reported_boxes(found, image.shape, (sy, sx), placed_levels(cards))
    timings["detect"] = round(time.perf_counter() - t0, 3)
    report("detect", 1.0, f"{len(found)} vertebrae")

    report("classify", 0.0, "normal / old / fresh")
    t0 = time.perf_counter()
    vertebrae: list[RadiographVertebra] = []
    crops, metas, cropped = [], [], []
    for d, status, reason, classified in boxes:
        x0, y0, x1, y1 = d["box_px"]
        v = RadiographVertebra(d["name"], d["box_px"], [round(x0 * sx, 2), round(y0 * sy, 2), round(x1 * sx, 2),
                                                       round(y1 * sy, 2)], d["detection_score"],
                               status=status, reason=reason)
        vertebrae.append(v)
        if not classified:
            continue
        crop, meta = crop_vertebra(image, d["box_px"], pixel_mm=float(np.sqrt(sx * sy)))
        crops.append(crop)
        metas.append(meta)
        cropped.append(v)
    cam_img = np.zeros_like(image, dtype=np.float32) if grad_cam else None
    if crops:
        x = np.stack(crops)
        probs = probabilities(nets, x)
        ens = ensemble(probs)
        classes = decide(ens, fracture_threshold(cards))
        for k, v in enumerate(cropped):
            v.probabilities = {kind: {c: round(float(p[k, j]), 4) for j, c in enumerate(CLASSES)}
                               for kind, p in probs.items()}
            v.ensemble = {c: round(float(ens[k, j]), 4) for j, c in enumerate(CLASSES)}
            if v.status == "assessed" and v.located == PLACED:
                v.status, v.reason = PLACED_STATUS, PLACED_REASON
            elif v.status == "assessed":
                v.cls = CLASSES[int(classes[k])]
        if grad_cam:
            maps = ensemble_grad_cam(nets, x, np.argmax(ens, axis=1))
            for k, meta in enumerate(metas):
                _place(cam_img, maps[k], meta)
    timings["classify"] = round(time.perf_counter() - t0, 3)
    report("classify", 1.0, ", ".join(f"{v.name} {v.cls or v.status}" for v in vertebrae))

    report("fresh-vcf", 0.0, "whole image")
    t0 = time.perf_counter()
    fresh_p = round(fresh_probability(fresh_net, image, dev), 4)
    fresh_cam = None
    if grad_cam:
        square = grad_cam(fresh_net, fresh_kind(cards["fresh"]), whole_input(image)[None], [0])[0]
        fresh_cam = whole_map_to_image(square, image.shape)
    timings["fresh_vcf"] = round(time.perf_counter() - t0, 3)
    report("fresh-vcf", 1.0, f"p = {fresh_p:.2f}")

    warnings = [accuracy_warning(cards), *radiograph.notes]
    if radiograph.spacing_source == "ImagerPixelSpacing":
        warnings.append("pixel spacing from Imager Pixel Spacing (at the detector): millimetres include the beam's "
                        "magnification, about 10-20 % at the spine")
    if vertebrae:
        warnings.append(NAMING_WARNING)
    missing = [n for n in LEVELS if n not in {v.name for v in vertebrae}]
    if missing:
        warnings.append(f"not found: {', '.join(missing)}")
    models = {"detector": cards["detector"].version, **{k: cards[k].version for k in ENSEMBLE},
              "fresh_vcf": cards["fresh"].version}
    return RadiographAnalysis(radiograph, vertebrae, fresh_p, cam_img, fresh_cam, models, warnings, timings)


def reported_boxes(found: list[dict[str, Any]], shape: tuple[int, int], spacing_mm: tuple[float, float],
                   placed: tuple[str, ...] = ()) -> list[tuple[dict[str, Any], str, str | None, bool]]:
    """The boxes the analysis reports, cranial to caudal: the levels ``placed`` above L1 (from the
    detections in order, :func:`.radiograph_detect.extend_upwards`), then the detections; each with its
    status, the reason it is not assessable, and whether it is classified (:func:`box_status`; a
    detection out of order, :func:`.radiograph_detect.out_of_order`, is not). The boxes with status
    ``"assessed"`` score the image (:func:`vertebrae_fresh_score`); a placed one's status becomes
    ``"placed"`` once it is classified."""
    from VertebralFractureLib.radiograph_detect import extend_upwards, out_of_order

    disorder = out_of_order(found)
    above = extend_upwards([d for d in found if d["name"] not in disorder], shape, placed)
    out = []
    for d in [*reversed(above), *found]:
        status, reason, classified = box_status(d["box_px"], shape, spacing_mm)
        if d["name"] in disorder:
            status, reason, classified = "not assessable", OUT_OF_ORDER, False
        out.append((d, status, reason, classified))
    return out


def placed_levels(cards: dict[str, Any]) -> tuple[str, ...]:
    """The levels above L1 that are placed and scored (:data:`.radiograph_detect.ABOVE`, nearest
    first): those named by the ensemble's first card (``postprocess.placed_levels``, chosen on
    validation data for those networks); none where it names none."""
    from VertebralFractureLib.radiograph_detect import ABOVE

    card = cards.get(ENSEMBLE[0])
    named = (card.postprocess or {}).get("placed_levels", []) if card is not None else []
    return tuple(lv for lv in ABOVE if lv in named)


def detection_threshold(cards: dict[str, Any]) -> float:
    """The detector's threshold (heatmap peak) from its card."""
    from VertebralFractureLib.radiograph_detect import DEFAULT_THRESHOLD

    return float((cards["detector"].postprocess or {}).get("threshold", DEFAULT_THRESHOLD))


def fracture_threshold(cards: dict[str, Any]) -> float | None:
    """The ensemble's fracture threshold on 1 − P(normal), from its first network's card (chosen on
    validation data); None (the largest probability decides, as in seed 004) where the card has none."""
    card = cards.get(ENSEMBLE[0])
    value = (card.postprocess or {}).get("fracture_threshold") if card is not None else None
    return None if value is None else float(value)


def fresh_kind(card: Any) -> str:
    """The network kind of the fresh-VCF model's card."""
    return str((card.architecture or {}).get("type", "resnet101-thin"))


__all__ = ["NAMING_WARNING", "OUT_OF_ORDER", "PLACED", "PLACED_REASON", "PLACED_STATUS", "RADIOGRAPH_NAMING",
           "RadiographAnalysis", "RadiographVertebra",
           "accuracy_warning", "analyze_radiograph", "detection_threshold", "fracture_threshold", "fresh_kind",
           "load_models", "placed_levels", "reported_boxes"]
