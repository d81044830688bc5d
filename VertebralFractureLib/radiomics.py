"""Seed 001's route: Wiener filter, connected-component labelling, per-vertebra radiomics, classifier.

An optional second opinion per vertebra, next to the U-Net's status and the Genant grade:

* :func:`wiener_filter` — the seed's image enhancement (``scipy.signal.wiener``, window configurable);
* :func:`label_components` — a binary spine mask → vertebra labels ordered cranio-caudally
  (the seed's U-Net + connected-component labelling route);
* :func:`extract_features` — pyradiomics features of every vertebra of a labelmap, with the
  parameters of ``Resources/radiomics_params.yaml`` (all default feature classes on the original
  image; Wavelet and LoG optional), written by :func:`write_features_csv` as ``features.csv``;
* :class:`RadiomicsClassifier` — the shipped classifier (LASSO-selected features), stored as plain
  JSON parameters and evaluated with numpy (never unpickled); :func:`load_classifier` checks the
  file's sha256 against ``models.json`` before reading it;
* :class:`RadiomicsStage` — the pipeline stage behind ``analyze --radiomics``: it fills
  ``radiomics_fracture_probability`` of each complete vertebra of ``context.labelmap``.

pyradiomics is imported only when features are extracted; the classifier needs numpy only.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from VertebralFractureLib.anatomy import cranio_caudal, is_vertebra_label, name_of, vertebra
from VertebralFractureLib.errors import InputError, ModelIntegrityError
from VertebralFractureLib.volume import Volume

if TYPE_CHECKING:  # pragma: no cover
    from VertebralFractureLib.pipeline import Context

#: Registry name of the classifier in ``Resources/Models/models.json``.
MODEL_NAME = "radiomics-classifier"
#: ``format`` value of the classifier's JSON file.
CLASSIFIER_FORMAT = "vertebral-fracture-radiomics-classifier"
#: The parameter file, in ``Resources/``.
PARAMS_FILE = "radiomics_params.yaml"
#: Optional image types (``--image-types``) on top of the original image.
OPTIONAL_IMAGE_TYPES: tuple[str, ...] = ("Wavelet", "LoG")
#: The cranio-caudal label sequence used to name connected components (C1 … L5; T13 and L6 are rare).
STANDARD_SEQUENCE: tuple[int, ...] = tuple(range(1, 25))

ProgressCallback = Callable[[float, str], None]


def default_params_path() -> Path:
    """The shipped pyradiomics parameter file."""
    from VertebralFractureLib.models import resources_dir

    return resources_dir() / PARAMS_FILE


# ---------------------------------------------------------------------------------------- preprocessing
def wiener_filter(volume: Volume, window: int | Sequence[int] = 3) -> Volume:
    """The seed's enhancement: a local adaptive Wiener filter (``scipy.signal.wiener``).

    Args:
        volume: any image (filtered as float32; the geometry is kept).
        window: the window size in voxels, one odd number or one per axis (z, y, x).

    Raises:
        ValueError: for a window that is not a positive odd size.
    """
    from scipy.signal import wiener

    sizes = [int(window)] * 3 if np.isscalar(window) else [int(w) for w in window]  # type: ignore[arg-type]
    if len(sizes) != 3 or min(sizes) < 1 or any(s % 2 == 0 for s in sizes):
        raise ValueError(f"the Wiener window must be a positive odd size (or 3 of them), got {window!r}")
    arr = np.asarray(volume.array, dtype=np.float32)
    if max(sizes) == 1:
        return volume.with_array(arr.copy())
    with np.errstate(divide="ignore", invalid="ignore"):
        out = wiener(arr, mysize=sizes)
    out = np.where(np.isfinite(out), out, arr)  # flat regions (zero local variance) keep their value
    return volume.with_array(out.astype(np.float32))


def label_components(
    mask: Volume,
    first_vertebra: int | str | None = None,
    min_voxels: int = 500,
    split_mm: float = 0.0,
) -> Volume:
    """A binary spine mask → one label per connected component, ordered cranial → caudal.

    Components are ordered by the superior (LPS z) coordinate of their centre of mass. With
    ``first_vertebra`` (e.g. ``"T1"``) they get consecutive VerSe labels from that vertebra on
    (C1 … L5); without it they are numbered 1, 2, 3 … (an order, not anatomical names).

    Args:
        mask: any non-zero voxel is spine.
        first_vertebra: VerSe label or name of the most cranial component.
        min_voxels: smaller components (noise, cut fragments) are dropped.
        split_mm: erode the mask by this distance before labelling, then grow the labels back
            inside the mask; separates vertebrae that touch at the facet joints (0 = plain CCL).

    Raises:
        InputError: when no component is large enough, or the components outnumber the
            vertebrae from ``first_vertebra`` down to L5.
    """
    from scipy import ndimage

    binary = np.asarray(mask.array) != 0
    seeds = binary
    if split_mm > 0:
        zyx_spacing = np.asarray(mask.spacing[::-1], dtype=float)
        inside = ndimage.distance_transform_edt(binary, sampling=zyx_spacing)
        seeds = inside > split_mm
    components, n = ndimage.label(seeds)
    if split_mm > 0 and n:
        # small eroded pieces (tips of processes) are not vertebrae: drop them as seeds, then every
        # mask voxel takes the label of the nearest remaining seed
        seed_sizes = ndimage.sum_labels(seeds, components, np.arange(1, n + 1))
        small = np.flatnonzero(seed_sizes < min_voxels // 4) + 1
        if len(small) < n:
            components[np.isin(components, small)] = 0
        _, nearest = ndimage.distance_transform_edt(components == 0, return_indices=True)
        grown = components[tuple(nearest)]
        components = np.where(binary, grown, 0)
    if n == 0:
        raise InputError("the mask is empty: no vertebra to label")
    index = np.arange(1, n + 1)
    sizes = ndimage.sum_labels(binary, components, index)
    keep = [int(i) for i, s in zip(index, sizes) if s >= min_voxels]
    if not keep:
        raise InputError(f"no connected component of the mask has {min_voxels} voxels or more")
    centres = ndimage.center_of_mass(binary, components, keep)
    superior = [float(mask.zyx_to_lps(np.asarray(c))[2]) for c in centres]
    order = [keep[k] for k in np.argsort(superior)[::-1]]
    if first_vertebra is None:
        targets = list(range(1, len(order) + 1))
    else:
        start = vertebra(first_vertebra).label
        if start not in STANDARD_SEQUENCE:
            raise InputError(f"{name_of(start)} is not in the standard sequence C1–L5")
        sequence = STANDARD_SEQUENCE[STANDARD_SEQUENCE.index(start):]
        if len(order) > len(sequence):
            raise InputError(f"{len(order)} components found, but only {len(sequence)} vertebrae from "
                             f"{name_of(start)} to L5")
        targets = list(sequence[: len(order)])
    lut = np.zeros(n + 1, dtype=np.uint8)
    for component, target in zip(order, targets):
        lut[component] = target
    return mask.with_array(lut[components])


# ---------------------------------------------------------------------------------------- features
@dataclass
class VertebraFeatures:
    """The radiomics features of one vertebra.

    Attributes:
        label: the label value in the labelmap (a VerSe label, or an index from
            :func:`label_components` without names).
        name: the vertebra's name ("L1"), or ``"label N"`` for a non-VerSe label.
        features: pyradiomics feature name (``original_glcm_Contrast``) → value.
        seconds: extraction time of this vertebra (cropping, filtering, pyradiomics).
    """

    label: int
    name: str
    features: dict[str, float]
    seconds: float = 0.0


def load_params(path: str | Path | None = None, image_types: Iterable[str] = ()) -> dict[str, Any]:
    """The pyradiomics parameters as a dict: the parameter file plus optional image types.

    The dict form (``imageType``, ``featureClass``, ``setting``) is what the classifier stores, so
    that inference extracts features exactly as in training.
    """
    extractor = _extractor(Path(path) if path is not None else default_params_path())
    for name in image_types:
        if name not in OPTIONAL_IMAGE_TYPES:
            raise ValueError(f"image type must be one of {OPTIONAL_IMAGE_TYPES}, got {name!r}")
        extractor.enableImageTypeByName(name, customArgs={})
    return params_of(extractor)


def params_of(extractor: Any) -> dict[str, Any]:
    """The parameters of a pyradiomics extractor in JSON-ready dict form."""
    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, np.generic):
            return value.item()
        return value

    settings = {k: v for k, v in extractor.settings.items() if k != "additionalInfo"}
    classes = {k: (list(v) if v else None) for k, v in extractor.enabledFeatures.items()}
    return plain({"imageType": dict(extractor.enabledImagetypes), "featureClass": classes, "setting": settings})


def _extractor(params: str | Path | dict[str, Any]) -> Any:
    import radiomics
    from radiomics import featureextractor

    radiomics.setVerbosity(logging.ERROR)
    logging.getLogger("radiomics").setLevel(logging.ERROR)
    if isinstance(params, dict):
        extractor = featureextractor.RadiomicsFeatureExtractor(json.loads(json.dumps(params)))
    else:
        if not Path(params).exists():
            raise FileNotFoundError(f"radiomics parameter file not found: {params}")
        extractor = featureextractor.RadiomicsFeatureExtractor(str(params))
    extractor.settings["additionalInfo"] = False
    return extractor


def _label_name(label: int) -> str:
    return name_of(label) if is_vertebra_label(label) else f"label {label}"


def extract_features(
    image: Volume,
    labelmap: Volume,
    labels: Iterable[int] | None = None,
    params: str | Path | dict[str, Any] | None = None,
    image_types: Iterable[str] = (),
    wiener_window: int | None = None,
    progress: ProgressCallback | None = None,
    warnings: list[str] | None = None,
) -> list[VertebraFeatures]:
    """pyradiomics features of each vertebra of a labelmap, cranial → caudal.

    Each vertebra is cropped with a margin (so the whole scan is never resampled), optionally
    Wiener-filtered, and passed to pyradiomics with its binary mask.

    Args:
        image: the CT in HU.
        labelmap: vertebra labels in the image's geometry.
        labels: the labels to extract (default: every non-zero label).
        params: parameter file or dict (default: ``Resources/radiomics_params.yaml``).
        image_types: optional image types ("Wavelet", "LoG") added to the original image.
        wiener_window: Wiener window in voxels (None = no filter).
        progress: called as ``progress(fraction, message)``.
        warnings: vertebrae pyradiomics refuses (too small, flat) are reported here and skipped.

    Raises:
        InputError: when the labelmap's geometry differs from the image's.
    """
    if not labelmap.same_geometry(image, tol=1e-3):
        raise InputError("the segmentation's geometry (size, spacing, origin, direction) differs from the image's")
    extractor = _extractor(params if params is not None else default_params_path())
    for name in image_types:
        if name not in OPTIONAL_IMAGE_TYPES:
            raise ValueError(f"image type must be one of {OPTIONAL_IMAGE_TYPES}, got {name!r}")
        extractor.enableImageTypeByName(name, customArgs={})
    lab = np.asarray(labelmap.array)
    if not np.issubdtype(lab.dtype, np.integer):
        lab = np.round(lab).astype(np.int32)
    from scipy import ndimage

    boxes = ndimage.find_objects(lab)
    present = [i + 1 for i, b in enumerate(boxes) if b is not None]
    wanted = present if labels is None else [int(v) for v in labels if int(v) in present]
    vertebra_labels = [v for v in wanted if is_vertebra_label(v)]
    other = [v for v in wanted if not is_vertebra_label(v)]
    wanted = cranio_caudal(vertebra_labels) + sorted(other)
    margin = 4 + (0 if wiener_window is None else int(wiener_window))
    out: list[VertebraFeatures] = []
    for k, label in enumerate(wanted):
        if progress is not None:
            progress(k / max(1, len(wanted)), _label_name(label))
        t0 = time.perf_counter()
        box = tuple(slice(max(0, s.start - margin), min(n, s.stop + margin)) for s, n in zip(boxes[label - 1], lab.shape))
        crop = image.crop(box)
        if wiener_window is not None:
            crop = wiener_filter(crop, wiener_window)
        mask = crop.with_array((lab[box] == label).astype(np.uint8))
        try:
            result = extractor.execute(_to_sitk(crop, np.float32), _to_sitk(mask, np.uint8), label=1)
        except (ValueError, AssertionError) as err:
            if warnings is not None:
                warnings.append(f"{_label_name(label)}: no radiomics features ({err})")
            continue
        feats = {str(key): float(value) for key, value in result.items() if not str(key).startswith("diagnostics_")}
        out.append(VertebraFeatures(label, _label_name(label), feats, time.perf_counter() - t0))
    if progress is not None:
        progress(1.0, f"{len(out)} vertebrae")
    return out


def _to_sitk(volume: Volume, dtype: Any) -> Any:
    return volume.with_array(np.ascontiguousarray(volume.array, dtype=dtype)).to_sitk()


def write_features_csv(path: str | Path, rows: Sequence[VertebraFeatures], extra: dict[int, dict[str, Any]] | None = None) -> None:
    """Write ``features.csv``: ``label``, ``name``, optional extra columns, then every feature.

    Args:
        path: the CSV file.
        rows: from :func:`extract_features`.
        extra: label → additional columns placed after ``name`` (e.g. a predicted probability).
    """
    names = list(dict.fromkeys(n for r in rows for n in r.features))
    extra_cols: list[str] = []
    for cols in (extra or {}).values():
        extra_cols += [c for c in cols if c not in extra_cols]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["label", "name", *extra_cols, *names])
        for r in rows:
            add = (extra or {}).get(r.label, {})
            writer.writerow([r.label, r.name, *[_cell(add.get(c)) for c in extra_cols],
                             *[_cell(r.features.get(n)) for n in names]])


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if not math.isfinite(value) else repr(value)
    return value


def read_features_csv(path: str | Path) -> list[VertebraFeatures]:
    """Read a ``features.csv`` back (numeric columns only; other extra columns are dropped)."""
    out = []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            feats = {}
            for key, value in row.items():
                if key in ("label", "name") or value in ("", None):
                    continue
                try:
                    feats[key] = float(value)
                except ValueError:
                    continue
            out.append(VertebraFeatures(int(row["label"]), row["name"], feats))
    return out


# ---------------------------------------------------------------------------------------- relative features
#: Prefix of a feature taken relative to the vertebra's neighbours (:func:`relative_features`).
RELATIVE_PREFIX = "rel:"
#: Neighbours on each side a vertebra is compared with.
RELATIVE_NEIGHBOURS = 2


def relative_features(rows: Sequence[VertebraFeatures | tuple[int, dict[str, float]]]) -> list[dict[str, float] | None]:
    """Each vertebra's features relative to its neighbours in the same scan, as a reader compares a
    vertebra with the ones above and below it.

    For every feature ``f``: ``rel:f = (f − m) / (|f| + |m|)`` (0 when both are 0), with ``m`` the
    median of ``f`` over up to :data:`RELATIVE_NEIGHBOURS` vertebrae on each side (the rows in
    cranio-caudal order of their labels). What a scanner, a reconstruction or a synthetic generator
    does to every vertebra of a scan alike (bone density, noise, size) largely cancels; a vertebra
    that differs from its neighbours (a collapsed body) stands out. Scale-free and bounded in [−1, 1].

    Args:
        rows: the vertebrae of one scan, as :class:`VertebraFeatures` or ``(label, features)``.

    Returns:
        Per row (in the given order) the relative features, or None for a vertebra without a
        neighbour in the scan.
    """
    items = [(r.label, r.features) if isinstance(r, VertebraFeatures) else (int(r[0]), r[1]) for r in rows]
    labels = [lab for lab, _ in items]
    verse = all(is_vertebra_label(lab) for lab in labels)
    order = cranio_caudal(labels) if verse else sorted(labels)
    rank = {lab: k for k, lab in enumerate(order)}
    by_rank = {rank[lab]: feats for lab, feats in items}
    out: list[dict[str, float] | None] = []
    for lab, feats in items:
        k = rank[lab]
        nbs = [by_rank[j] for j in range(k - RELATIVE_NEIGHBOURS, k + RELATIVE_NEIGHBOURS + 1)
               if j != k and j in by_rank]
        if not nbs:
            out.append(None)
            continue
        rel = {}
        for name, f in feats.items():
            values = [nb[name] for nb in nbs if name in nb and np.isfinite(nb[name])]
            if not values or not np.isfinite(f):
                continue
            m = float(np.median(values))
            denom = abs(f) + abs(m)
            rel[RELATIVE_PREFIX + name] = 0.0 if denom == 0 else (float(f) - m) / denom
        out.append(rel)
    return out


# ---------------------------------------------------------------------------------------- classifier
@dataclass
class RadiomicsClassifier:
    """A fracture classifier on standardised, LASSO-selected radiomics features (JSON parameters).

    Attributes:
        kind: ``"logistic"``, ``"random_forest"`` or ``"mlp"``.
        features: the selected feature names, in the model's input order.
        mean, scale: standardisation (``(x - mean) / scale``) of each feature.
        params: the model itself as plain arrays: logistic ``coef``/``intercept``; random forest
            ``trees`` (each ``left``, ``right``, ``feature``, ``threshold``, ``value`` = P(fractured)
            at the node); MLP ``weights``/``biases`` (ReLU hidden layers, logistic output).
        threshold: probability at or above which the vertebra is called fractured.
            Features named ``rel:…`` are taken relative to the neighbours (:func:`relative_features`):
            such a classifier needs the rows of one whole scan, and gives NaN for a vertebra without
            a neighbour.
        radiomics_params: the pyradiomics parameters used in training (dict form).
        wiener_window: the Wiener window used in training (None = none).
    """

    kind: str
    features: list[str]
    mean: np.ndarray
    scale: np.ndarray
    params: dict[str, Any]
    threshold: float = 0.5
    radiomics_params: dict[str, Any] | None = None
    wiener_window: int | None = None
    info: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("logistic", "random_forest", "mlp"):
            raise ValueError(f"unknown classifier kind {self.kind!r}")
        self.mean = np.asarray(self.mean, dtype=float)
        self.scale = np.asarray(self.scale, dtype=float)
        if self.mean.shape != (len(self.features),) or self.scale.shape != (len(self.features),):
            raise ValueError("mean and scale need one value per feature")

    @property
    def relative(self) -> bool:
        """Whether the features are taken relative to the neighbours (one scan's rows at a time)."""
        return any(f.startswith(RELATIVE_PREFIX) for f in self.features)

    def matrix(self, rows: Sequence[VertebraFeatures | dict[str, float]]) -> np.ndarray:
        """The standardised input matrix (n, features) of rows of features (a row of NaN for a
        vertebra without neighbours, when the features are relative).

        Raises:
            InputError: when a selected feature is missing from a row, or relative features are
                asked of rows without labels.
        """
        if self.relative and not any(f.startswith(RELATIVE_PREFIX) for r in rows
                                     for f in (r.features if isinstance(r, VertebraFeatures) else r)):
            if not all(isinstance(r, VertebraFeatures) for r in rows):
                raise InputError("this classifier compares each vertebra with its neighbours: give the "
                                 "features of a whole scan with their labels")
            rows = [{} if rel is None else rel for rel in relative_features(rows)]
        x = np.empty((len(rows), len(self.features)), dtype=float)
        for i, row in enumerate(rows):
            feats = row.features if isinstance(row, VertebraFeatures) else row
            if self.relative and not feats:
                x[i] = np.nan
                continue
            missing = [f for f in self.features if f not in feats]
            if missing:
                raise InputError(f"radiomics features missing for the classifier: {missing[:3]}…")
            x[i] = [feats[f] for f in self.features]
        x = (x - self.mean) / self.scale
        empty = np.all(np.isnan(x), axis=1) if self.relative else np.zeros(len(x), bool)
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        x[empty] = np.nan
        return x

    def predict_proba(self, rows: Sequence[VertebraFeatures | dict[str, float]] | np.ndarray) -> np.ndarray:
        """P(fractured) of each row (rows of features, or an already standardised matrix)."""
        x = rows if isinstance(rows, np.ndarray) else self.matrix(rows)
        if self.kind == "logistic":
            z = x @ np.asarray(self.params["coef"], dtype=float) + float(self.params["intercept"])
            return _sigmoid(z)
        if self.kind == "mlp":
            h = x
            weights, biases = self.params["weights"], self.params["biases"]
            for k, (w, b) in enumerate(zip(weights, biases)):
                h = h @ np.asarray(w, dtype=float) + np.asarray(b, dtype=float)
                if k < len(weights) - 1:
                    h = np.maximum(h, 0.0)
            return _sigmoid(h[:, 0])
        trees = self.params["trees"]
        total = np.zeros(len(x))
        empty = np.isnan(x).any(axis=1)
        for tree in trees:
            total += _tree_predict(tree, np.nan_to_num(x))
        return np.where(empty, np.nan, total / len(trees))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": CLASSIFIER_FORMAT,
            "kind": self.kind,
            "features": list(self.features),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "threshold": float(self.threshold),
            "wiener_window": self.wiener_window,
            "radiomics_params": self.radiomics_params,
            "params": self.params,
            "info": self.info or {},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RadiomicsClassifier:
        if d.get("format") != CLASSIFIER_FORMAT:
            raise ValueError(f"not a radiomics classifier file (format {d.get('format')!r})")
        return cls(kind=d["kind"], features=list(d["features"]), mean=np.asarray(d["mean"]),
                   scale=np.asarray(d["scale"]), params=d["params"], threshold=float(d.get("threshold", 0.5)),
                   radiomics_params=d.get("radiomics_params"), wiener_window=d.get("wiener_window"),
                   info=d.get("info"))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict()) + "\n", encoding="utf-8")


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


def _tree_predict(tree: dict[str, Any], x: np.ndarray) -> np.ndarray:
    left = np.asarray(tree["left"], dtype=np.int64)
    right = np.asarray(tree["right"], dtype=np.int64)
    feature = np.asarray(tree["feature"], dtype=np.int64)
    threshold = np.asarray(tree["threshold"], dtype=float)
    value = np.asarray(tree["value"], dtype=float)
    node = np.zeros(len(x), dtype=np.int64)
    active = left[node] >= 0
    while active.any():
        idx = np.nonzero(active)[0]
        n = node[idx]
        go_left = x[idx, feature[n]] <= threshold[n]
        node[idx] = np.where(go_left, left[n], right[n])
        active = left[node] >= 0
    return value[node]


def load_classifier(directory: str | Path | None = None) -> RadiomicsClassifier:
    """The installed classifier, after its sha256 matched ``models.json`` (JSON only, never pickle).

    Raises:
        ModelNotAvailableError: not installed.
        ModelIntegrityError: the file's sha256 differs from the registry, or it is not a classifier.
    """
    from VertebralFractureLib import models

    card = models.require(MODEL_NAME, directory)
    d = Path(directory) if directory is not None else models.models_dir()
    try:
        return RadiomicsClassifier.from_dict(json.loads((d / card.file).read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError) as err:
        raise ModelIntegrityError(f"model '{MODEL_NAME}': {card.file} is not a valid classifier file ({err})") from err


# ---------------------------------------------------------------------------------------- pipeline stage
class RadiomicsStage:
    """Pipeline stage: the radiomics classifier's P(fractured) for each complete vertebra.

    Runs after segmentation on ``context.labelmap`` (skipped with a warning when there is none)
    and fills :attr:`VertebraResult.radiomics_fracture_probability`. Vertebrae cut by the field
    of view are left out, as in training.
    """

    name = "radiomics"
    models: tuple[str, ...] = (MODEL_NAME,)

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = directory

    def run(self, context: Context) -> None:
        if context.labelmap is None:
            context.warnings.append("radiomics not done: no vertebra segmentation")
            return
        classifier = load_classifier(self.directory)
        labels = [lab for lab, v in context.vertebrae.items() if v.complete]
        warnings: list[str] = []
        rows = extract_features(
            context.image, context.labelmap, labels=labels, params=classifier.radiomics_params,
            wiener_window=classifier.wiener_window, warnings=warnings,
            progress=lambda f, m: context.report(self.name, f, m),
        )
        context.warnings.extend(warnings)
        if not rows:
            return
        probabilities = classifier.predict_proba(rows)
        for row, p in zip(rows, probabilities):  # NaN: no neighbour to compare with
            context.vertebrae[row.label].radiomics_fracture_probability = None if np.isnan(p) else float(p)
