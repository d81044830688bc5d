"""The analysis pipeline: interchangeable stages over a shared context.

``analyze(volume)`` runs, in order, the stages of the seed system (seeds/002):

1. ``localize`` — M-SCN heatmaps → centroids and names (:mod:`.localize`),
2. ``segment``  — per-vertebra 3-class U-Net → labelmap and fracture map (:mod:`.segment`),
3. ``grade``    — mid-sagittal keypoints → heights → Genant grade (:mod:`.genant`).

A stage is any object with a ``name``, the ``models`` it needs, and ``run(context)``; stages can be
replaced, e.g. :class:`GivenSegmentation` starts from a vertebra labelmap the user already has and
:class:`GivenCentroids` from the user's vertebra centroids.
Progress is reported as ``progress(stage, fraction, message)``; ``cancel()`` is polled between
and inside stages and stops the run with :class:`~.errors.CancelledError`. Stage timings go into
``analysis.json``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from VertebralFractureLib import models as model_registry
from VertebralFractureLib.analysis import Analysis, VertebraResult
from VertebralFractureLib.anatomy import cranio_caudal, is_vertebra_label, name_of, split_vertebra_labels
from VertebralFractureLib.errors import CancelledError, InputError
from VertebralFractureLib.models import Device
from VertebralFractureLib.volume import Volume

ProgressCallback = Callable[[str, float, str], None]
#: Ways stage 3 places its keypoints (:class:`AnalysisConfig`).
KEYPOINT_METHODS = ("auto", "learned", "geometric")
CancelCallback = Callable[[], bool]


@dataclass(frozen=True)
class AnalysisConfig:
    """Options shared by all stages (defaults in one place).

    Attributes:
        device: ``auto``, ``cpu`` or ``cuda``.
        fracture_threshold: a vertebra is "fractured" when its mean fractured-class probability
            reaches this value.
        min_vertebra_voxels: labelmap components smaller than this are ignored.
        edge_margin_mm: a vertebra whose mask comes closer than this to the cranial or caudal edge
            of the field of view is flagged ``complete: false`` and not graded.
        keypoints: how stage 3 places the keypoints: ``auto`` (the learned 2D M-SCN when its
            model is installed, measured on the mask where the network is not confident),
            ``learned`` (the model is required) or ``geometric`` (measured on the mask only).
        test_time_augmentation: stage 2 averages its fracture probability over mirrored and
            shifted crops and reports the spread (about four times the stage-2 time).
        bone_growth: the segmentation written out is stage 2's outlines completed into the bone
            they touch (the posterior elements, :mod:`.bone_growth`); grading measures the
            network's own outlines either way.
        refine_centroids: the segmentation written out comes from a second look of stage 2 (without
            test-time variants) around the centres of its first outlines, which are drawn around
            stage 1's centres (8–17 mm behind the body centres on real CT); the calls, grades and
            reported centres keep coming from the first look. Given centres are used as given.
    """

    device: Device | str = Device.AUTO
    fracture_threshold: float = 0.5
    min_vertebra_voxels: int = 50
    edge_margin_mm: float = 1.0
    keypoints: str = "auto"
    test_time_augmentation: bool = True
    bone_growth: bool = True
    refine_centroids: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "device", Device(self.device))
        if self.keypoints not in KEYPOINT_METHODS:
            raise ValueError(f"keypoints must be one of {KEYPOINT_METHODS}, got {self.keypoints!r}")
        if not 0.0 < self.fracture_threshold < 1.0:
            raise ValueError(f"fracture_threshold must be in (0, 1), got {self.fracture_threshold}")
        if self.min_vertebra_voxels < 1:
            raise ValueError(f"min_vertebra_voxels must be ≥ 1, got {self.min_vertebra_voxels}")
        if self.edge_margin_mm < 0:
            raise ValueError(f"edge_margin_mm must be ≥ 0, got {self.edge_margin_mm}")


@dataclass
class Context:
    """What stages read and fill in."""

    image: Volume
    config: AnalysisConfig
    vertebrae: dict[int, VertebraResult] = field(default_factory=dict)
    labelmap: Volume | None = None
    #: the segmentation written out, when it differs from ``labelmap`` (which the stages measure):
    #: stage 2's second look around its first outlines' centres, completed into the bone they touch
    completed_labelmap: Volume | None = None
    fracture_map: Volume | None = None
    warnings: list[str] = field(default_factory=list)
    models: dict[str, dict] = field(default_factory=dict)
    progress: ProgressCallback | None = None
    cancel: CancelCallback | None = None
    #: the vertebra masks come from stage 2 (not given by the user): stage 3 checks their outline
    masks_from_stage2: bool = False
    #: the centroids come from stage 1 (not given by the user): once every stage has run, each is reported
    #: at the centre of its outline (:func:`~VertebralFractureLib.segment.recentre`)
    centroids_from_stage1: bool = False
    #: the CT resampled onto a network's grid, by spacing (mm): made once, shared by the stages of this
    #: analysis (:func:`~VertebralFractureLib.segment.model_input`)
    model_inputs: dict[float, tuple[Volume, np.ndarray]] = field(default_factory=dict)
    #: stage 2's network output for the crops of stage 1's outline check, by grid spacing and crop
    #: start, for stage 2's first look to reuse (:func:`~VertebralFractureLib.segment.segment_crops`)
    crop_outputs: dict[tuple, np.ndarray] = field(default_factory=dict)

    def report(self, stage: str, fraction: float, message: str = "") -> None:
        """Report progress within a stage and honour a cancellation request."""
        self.check_cancel()
        if self.progress is not None:
            self.progress(stage, float(min(1.0, max(0.0, fraction))), message)

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel():
            raise CancelledError("analysis cancelled")


class Stage(Protocol):
    """A pipeline step."""

    name: str
    models: tuple[str, ...]

    def run(self, context: Context) -> None: ...


class ModelStage:
    """A stage implemented by a trained model; the implementation module is imported on use."""

    def __init__(self, name: str, models: tuple[str, ...], entry: str) -> None:
        self.name = name
        self.models = models
        self._entry = entry

    def run(self, context: Context) -> None:
        import importlib

        module_name, func = self._entry.split(":")
        getattr(importlib.import_module(module_name), func)(context)


def default_stages() -> list[Stage]:
    """Localization → segmentation → grading, as in the seed system."""
    return [
        ModelStage("localize", ("localization",), "VertebralFractureLib.localize:run_stage"),
        ModelStage("segment", ("segmentation",), "VertebralFractureLib.segment:run_stage"),
        grading_stage(),
    ]


class GradingStage:
    """Stage 3: keypoints, heights and Genant grades of the vertebrae in ``context.labelmap``.

    Its keypoint model is optional (a geometric fallback exists), so ``models`` is empty and the
    stage looks the model up itself; ``keypoint_model`` = ``(card, network)`` replaces the installed one.
    """

    name = "grade"
    models: tuple[str, ...] = ()

    def __init__(self, keypoint_model: tuple[Any, Any] | None = None) -> None:
        self.keypoint_model = keypoint_model

    def run(self, context: Context) -> None:
        from VertebralFractureLib.genant import run_stage

        run_stage(context, keypoint_model=self.keypoint_model)


def grading_stage(keypoint_model: tuple[Any, Any] | None = None) -> Stage:
    """Stage 3 (:class:`GradingStage`)."""
    return GradingStage(keypoint_model)


class GivenSegmentation:
    """Start from a vertebra labelmap (VerSe labels) instead of localization and segmentation.

    Centroids are the labels' centres of mass; a vertebra touching the cranial or caudal edge of
    the field of view is flagged incomplete.
    """

    name = "given-segmentation"
    models: tuple[str, ...] = ()

    def __init__(self, labelmap: Volume) -> None:
        self.labelmap = labelmap

    def run(self, context: Context) -> None:
        from scipy import ndimage

        lab = self.labelmap
        if not lab.same_geometry(context.image, tol=1e-3):
            raise InputError("the segmentation's geometry (size, spacing, origin, direction) differs from the image's")
        arr = np.asarray(lab.array)
        if not np.issubdtype(arr.dtype, np.integer):
            if not np.allclose(arr, np.round(arr)):
                raise InputError("the segmentation must hold integer labels")
            arr = np.round(arr).astype(np.int32)
        labels, unknown = split_vertebra_labels(np.unique(arr))
        if unknown:
            context.warnings.append(f"labels {unknown} are not vertebrae (VerSe 1–25, 28) and were ignored")
        if not labels:
            raise InputError("the segmentation holds no vertebra label (VerSe 1–25 or 28)")
        counts = ndimage.sum_labels(np.ones_like(arr, dtype=np.int64), arr, labels)
        centres = ndimage.center_of_mass(np.ones_like(arr, dtype=np.uint8), arr, labels)
        boxes = ndimage.find_objects(arr)  # one pass: bounding box of every label value
        axis = _cranio_caudal_axis(lab)
        margin = [int(np.ceil(context.config.edge_margin_mm / lab.spacing[2 - a])) for a in range(3)]
        kept_labels = []
        for k, (label, n, c) in enumerate(zip(labels, counts, centres)):
            context.report(self.name, k / len(labels), f"{name_of(label)}")
            if n < context.config.min_vertebra_voxels:
                context.warnings.append(f"{name_of(label)}: only {int(n)} voxels, ignored")
                continue
            lo, hi = boxes[label - 1][axis].start, boxes[label - 1][axis].stop - 1
            complete = lo >= margin[axis] and hi <= arr.shape[axis] - 1 - margin[axis]
            res = VertebraResult(label=label, centroid_lps_mm=tuple(lab.zyx_to_lps(np.asarray(c))), complete=complete)
            if not complete:
                res.notes.append("cut by the field of view: not graded")
            context.vertebrae[label] = res
            kept_labels.append(label)
        kept = np.where(np.isin(arr, kept_labels), arr, 0).astype(np.uint8)
        context.labelmap = context.image.with_array(kept)


class GivenCentroids:
    """Start from vertebra centroids (label → LPS mm) placed by the user instead of localization.

    Stage 2 segments around them; a centroid within the field of view's cranial or caudal margin
    is flagged incomplete, as stage 1 does.
    """

    name = "given-centroids"
    models: tuple[str, ...] = ()

    def __init__(self, centroids_lps: Mapping[int, Sequence[float]]) -> None:
        self.centroids_lps = {int(k): np.asarray(v, dtype=float) for k, v in centroids_lps.items()}

    def run(self, context: Context) -> None:
        from VertebralFractureLib.localize import is_complete

        unknown = sorted(k for k in self.centroids_lps if not is_vertebra_label(k))
        if unknown:
            context.warnings.append(f"centroid labels {unknown} are not vertebrae (VerSe 1–25, 28) and were ignored")
        labels = cranio_caudal(k for k in self.centroids_lps if is_vertebra_label(k))
        if not labels:
            raise InputError("no vertebra centroid given")
        for label in labels:
            pos = self.centroids_lps[label]
            if pos.shape != (3,) or not np.all(np.isfinite(pos)):
                raise InputError(f"{name_of(label)}: the centroid needs 3 finite LPS coordinates")
            complete = is_complete(pos, context.image)
            res = VertebraResult(label=label, centroid_lps_mm=tuple(float(c) for c in pos), complete=complete)
            res.notes.append("centroid given, not localized")
            if not complete:
                res.notes.append("near the end of the field of view: probably cut, not graded")
            context.vertebrae[label] = res


def given_centroid_stages(centroids_lps: Mapping[int, Sequence[float]]) -> list[Stage]:
    """Given centroids → segmentation → grading (stage 1 replaced by the user's points)."""
    return [GivenCentroids(centroids_lps), *default_stages()[1:]]


def _cranio_caudal_axis(volume: Volume) -> int:
    """The numpy axis (0 = z, 1 = y, 2 = x) closest to the patient's superior direction."""
    xyz_axis = int(np.argmax(np.abs(volume.direction[2, :])))
    return 2 - xyz_axis


def available_default_stages() -> tuple[list[Stage], list[str]]:
    """The default stages up to the first whose trained model is not installed, and warnings.

    Stages depend on their predecessors (segmentation needs centroids, grading needs masks), so a
    missing model stops the chain there; the results of the earlier stages are still real and are
    returned with a warning naming what was not done.

    Raises:
        ModelNotAvailableError: when not even the first stage can run.
    """
    from VertebralFractureLib.errors import ModelNotAvailableError

    stages = default_stages()
    for k, stage in enumerate(stages):
        try:
            for name in stage.models:
                model_registry.require(name)
        except ModelNotAvailableError as err:
            if k == 0:
                raise
            rest = ", ".join(s.name for s in stages[k:])
            return stages[:k], [f"not done: {rest} ({err})"]
    return stages, []


def second_opinion_stages(radiomics: bool = False, slices: bool = False) -> list[Stage]:
    """The optional second opinions that run after the default stages: the radiomics classifier
    (seed 001, ``--radiomics``) and the slice classifier (seed 000, ``--slice-classifier``)."""
    out: list[Stage] = []
    if radiomics:
        from VertebralFractureLib.radiomics import RadiomicsStage

        out.append(RadiomicsStage())
    if slices:
        from VertebralFractureLib.slices import SliceClassifierStage

        out.append(SliceClassifierStage())
    return out


def required_models(stages: Sequence[Stage]) -> list[str]:
    """The model names a list of stages needs, in order, without duplicates."""
    out: list[str] = []
    for s in stages:
        out += [m for m in s.models if m not in out]
    return out


def accuracy_statements(used: Mapping[str, Any]) -> list[str]:
    """``"accuracy: …"`` lines, in plain words from the model cards, for the models that ran."""
    try:
        cards = model_registry.registry()
    except Exception:  # noqa: BLE001 - a broken registry was reported when the models were loaded
        return []
    return [f"accuracy: {cards[name].accuracy}" for name in used if name in cards and cards[name].accuracy]


def analyze(
    image: Volume,
    config: AnalysisConfig | None = None,
    stages: Sequence[Stage] | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelCallback | None = None,
    input_description: str = "",
) -> Analysis:
    """Run the stages on a CT volume and return the :class:`Analysis`.

    Args:
        image: the CT in Hounsfield units, any geometry.
        config: shared options; defaults to :class:`AnalysisConfig`.
        stages: the steps to run; defaults to :func:`default_stages`.
        progress: called as ``progress(stage, fraction, message)``.
        cancel: polled often; returning True stops the run with ``CancelledError``.
        input_description: anonymous description of the input, stored in ``analysis.json``.

    Raises:
        ModelNotAvailableError: a stage's trained weights are not installed (checked before any
            work is done). With the default stages only the first stage's model is required: later
            stages without installed weights are left out with a warning (see
            :func:`available_default_stages`).
        InputError: the image cannot be analysed.
        CancelledError: ``cancel()`` returned True.
    """
    config = config or AnalysisConfig()
    skipped: list[str] = []
    if stages is None:
        stages, skipped = available_default_stages()
    stages = list(stages)
    if not stages:
        raise ValueError("at least one stage is needed")
    if image.array.size == 0 or min(image.array.shape) < 2:
        raise InputError(f"the image is too small to analyse: shape {image.array.shape}")
    context = Context(image=image, config=config, progress=progress, cancel=cancel)
    context.warnings.extend(skipped)
    for name in required_models(stages):
        card = model_registry.require(name)
        context.models[name] = {"version": card.version, "sha256": card.sha256}
    timings: dict[str, float] = {}
    for k, stage in enumerate(stages):
        context.report(stage.name, 0.0, f"step {k + 1}/{len(stages)}: {stage.name}")
        t0 = time.perf_counter()
        stage.run(context)
        timings[stage.name] = time.perf_counter() - t0
        context.report(stage.name, 1.0, f"{stage.name} done in {timings[stage.name]:.1f} s")
    if context.centroids_from_stage1 and context.labelmap is not None:
        from VertebralFractureLib.segment import recentre

        recentre(context.vertebrae, context.labelmap)  # reported where the outline is; stages 2 and 3 ran on stage 1's
    if context.completed_labelmap is not None and context.labelmap is not None:
        from VertebralFractureLib.segment import fracture_map_of

        context.labelmap = context.completed_labelmap  # written out; every stage has measured the network's outline
        context.fracture_map = fracture_map_of(context.labelmap, context.vertebrae)
    context.warnings.extend(accuracy_statements(context.models))
    return Analysis(
        vertebrae=list(context.vertebrae.values()),
        input_geometry=image.geometry_dict(),
        labelmap=context.labelmap,
        fracture_map=context.fracture_map,
        image=image,
        timings_s=timings,
        warnings=context.warnings,
        models=context.models,
        input_description=input_description,
    )
