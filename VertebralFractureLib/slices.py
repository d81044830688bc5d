"""Per-vertebra 2D slices, as a radiologist reads them: the mid-sagittal and the mid-axial plane.

The slice classifier (seed 000, :mod:`.training.slice_classifier`) looks at each vertebra through
two planes through its centre (the centre of mass of its mask, the VerSe centroid): a sagittal
plane, where a compression shows as lost height, and an axial plane. Each plane is
:data:`SLICE_PX` × :data:`SLICE_PX` pixels over a fixed :data:`FIELD_MM` square, so that a vertebra
has the same size in pixels whatever the scan's resolution, and HU are windowed to
:data:`HU_WINDOW` and scaled to 0..1.

The planes are aligned with the patient (LPS), not with the vertebra: a tilted vertebra appears
rotated, which the classifier's rotation augmentation covers. Orientation: sagittal with cranial up
and anterior left; axial with anterior up and the patient's right on the left (radiological view).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from VertebralFractureLib.volume import Volume

#: Pixels per side of a slice (the seed's 224 × 224 input).
SLICE_PX = 224
#: Side of the square a slice covers (mm): a lumbar vertebra with its neighbours' endplates.
FIELD_MM = 90.0
#: HU window mapped to 0..1 (bone window wide enough for cortical bone and soft tissue).
HU_WINDOW: tuple[float, float] = (-250.0, 1250.0)
#: The planes, in the order of a slice stack's first axis.
VIEWS: tuple[str, ...] = ("sagittal", "axial")
#: HU outside the image (air).
OUTSIDE_HU = -1000.0


def plane_grid(centre_lps: Sequence[float], view: str, px: int = SLICE_PX, field_mm: float = FIELD_MM) -> Volume:
    """A one-voxel-thick LPS-aligned grid of ``px`` × ``px`` pixels over ``field_mm``, centred on
    ``centre_lps``: (z, y, x) = (px, px, 1) for ``sagittal``, (1, px, px) for ``axial``."""
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    if px < 2 or field_mm <= 0:
        raise ValueError(f"a slice needs at least 2 pixels and a positive field, got {px} px over {field_mm} mm")
    step = field_mm / px
    half = (px - 1) * step / 2.0
    c = np.asarray(centre_lps, dtype=float)
    if view == "sagittal":
        shape, spacing = (px, px, 1), (1.0, step, step)
        origin = c - np.array([0.0, half, half])
    else:
        shape, spacing = (1, px, px), (step, step, 1.0)
        origin = c - np.array([half, half, 0.0])
    return Volume(np.zeros(shape, np.int16), spacing, tuple(origin), np.eye(3))


def to_unit(hu: np.ndarray, window: tuple[float, float] = HU_WINDOW) -> np.ndarray:
    """HU → 0..1 over ``window`` (float32)."""
    lo, hi = window
    return ((np.clip(hu, lo, hi) - lo) / (hi - lo)).astype(np.float32)


def sample_plane(ct: Volume, grid: Volume, default_value: float = OUTSIDE_HU) -> np.ndarray:
    """``ct`` linearly interpolated at every voxel of ``grid`` (array in ``grid``'s z, y, x order).

    The values of ``ct.resample_like(grid)`` (trilinear; a point within half a voxel outside the
    image takes its edge value, farther out ``default_value``), without copying the whole CT into
    SimpleITK for each plane and without rounding to the CT's integer type.
    """
    from scipy import ndimage

    shape = grid.array.shape
    # one affine from the grid's array indices (z, y, x) to the CT's: the points are a regular lattice
    flip = np.eye(4)[[2, 1, 0, 3]]
    to_ct = (flip @ np.linalg.inv(ct.affine_lps) @ grid.affine_lps @ flip).astype(np.float32)
    coords = to_ct[:3, 3].reshape(3, 1, 1, 1).copy()
    for axis, n in enumerate(shape):
        ramp = np.arange(n, dtype=np.float32).reshape([-1 if a == axis else 1 for a in range(3)])
        coords = coords + to_ct[:3, axis].reshape(3, 1, 1, 1) * ramp
    arr = np.asarray(ct.array)
    dims = np.asarray(arr.shape, np.float32).reshape(3, 1, 1, 1)
    inside = np.all((coords >= -0.5) & (coords <= dims - 0.5), axis=0)
    values = ndimage.map_coordinates(arr, coords, order=1, mode="nearest", output=np.float32)
    values[~inside] = default_value
    return values


def vertebra_slices(ct: Volume, centre_lps: Sequence[float], px: int = SLICE_PX, field_mm: float = FIELD_MM,
                    window: tuple[float, float] = HU_WINDOW) -> np.ndarray:
    """The sagittal and axial planes through ``centre_lps`` (2, px, px), windowed to 0..1.

    Sagittal: rows cranial → caudal, columns anterior → posterior. Axial: rows anterior →
    posterior, columns the patient's right → left. Outside the image counts as air.
    """
    out = np.empty((len(VIEWS), px, px), np.float32)
    for k, view in enumerate(VIEWS):
        plane = sample_plane(ct, plane_grid(centre_lps, view, px, field_mm))
        if view == "sagittal":
            img = plane[::-1, :, 0]  # z grows cranially: first row the most cranial
        else:
            img = plane[0]  # y grows posteriorly, x to the patient's left
        out[k] = to_unit(img, window)
    return out


def mask_centres(labelmap: Volume, labels: Iterable[int] | None = None) -> dict[int, np.ndarray]:
    """Centre of mass (LPS mm) of each label (every non-zero label by default) that has voxels.

    One pass over the labelled voxels only (a whole-spine labelmap is mostly background)."""
    arr = np.asarray(labelmap.array)
    flat = np.flatnonzero(arr)
    if flat.size == 0:
        return {}
    lab = arr.reshape(-1)[flat].astype(np.int64)
    n = np.bincount(lab)
    zyx = np.unravel_index(flat, arr.shape)
    sums = [np.bincount(lab, weights=axis.astype(np.float64), minlength=len(n)) for axis in zyx]
    present = [int(v) for v in np.flatnonzero(n) if v]
    wanted = present if labels is None else [int(v) for v in labels if 0 < int(v) < len(n) and n[int(v)]]
    return {v: np.asarray(labelmap.zyx_to_lps(np.array([sm[v] / n[v] for sm in sums]))) for v in wanted}


def slices_of(ct: Volume, centres_lps: Mapping[int, Sequence[float]], px: int = SLICE_PX,
              field_mm: float = FIELD_MM) -> dict[int, np.ndarray]:
    """:func:`vertebra_slices` of every vertebra, by label."""
    return {int(lab): vertebra_slices(ct, c, px, field_mm) for lab, c in centres_lps.items()}


# ---------------------------------------------------------------------------------------- the classifier
#: Registry name of the slice classifier's weights (``Resources/Models``).
MODEL_NAME = "slice-classifier"


#: DenseNet-121's widths: the seed's network (``densenet121``) and the thin one the product ships
#: (``densenet121-thin``: the same 121 layers and dense blocks 6-12-24-16, a quarter of the growth
#: rate and of the stem, about a sixteenth of the parameters and a seventh of the time a slice).
DENSENET_WIDTHS: dict[str, dict[str, int]] = {"densenet121": {"init_features": 64, "growth_rate": 32},
                                              "densenet121-thin": {"init_features": 16, "growth_rate": 8}}
#: Network names of the training comparison → architecture type of :func:`build_network`.
NETWORK_TYPES: dict[str, str] = {"densenet": "densenet121", "densenet-gan": "densenet121",
                                 "densenet-thin": "densenet121-thin", "cnn": "cnn"}


def build_network(architecture: Mapping[str, object] | str) -> object:
    """The slice classifier of a model card's ``architecture`` (``{"type": ...}``, or the type
    alone: ``densenet121``, ``densenet121-thin``, ``cnn``, or a comparison name of
    :data:`NETWORK_TYPES`): one channel in (a 0..1 slice), two classes out (normal, fractured).

    ``densenet121`` is MONAI's DenseNet-121 (2D), the seed's network; ``densenet121-thin`` the same
    layers at the widths of :data:`DENSENET_WIDTHS`; ``cnn`` a small plain CNN of four convolution
    blocks, the seed's "standard CNN" baseline.
    """
    import torch.nn as nn

    kind = architecture if isinstance(architecture, str) else str(architecture.get("type", ""))
    kind = NETWORK_TYPES.get(kind, kind)
    if kind in DENSENET_WIDTHS:
        from monai.networks.nets import DenseNet121

        return DenseNet121(spatial_dims=2, in_channels=1, out_channels=2, **DENSENET_WIDTHS[kind])
    if kind == "cnn":
        layers: list[nn.Module] = []
        c_in = 1
        for c in (16, 32, 64, 128):
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c_in = c
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.3), nn.Linear(c_in, 2)]
        return nn.Sequential(*layers)
    raise ValueError(f"unknown slice classifier {kind!r}; use one of {sorted(DENSENET_WIDTHS) + ['cnn']}")


def slice_probabilities(net: object, stack: np.ndarray, device: str = "cpu", batch: int = 16) -> np.ndarray:
    """P(fractured) of each slice of ``stack`` (n, px, px; 0..1), ``batch`` slices a pass."""
    import torch

    net.eval()
    net.to(memory_format=torch.channels_last)  # a fifth faster on a CPU; a no-op when already so
    out = []
    with torch.inference_mode():
        for b in range(0, len(stack), batch):
            t = torch.from_numpy(np.ascontiguousarray(stack[b: b + batch, None], np.float32)).to(device)
            t = t.contiguous(memory_format=torch.channels_last)
            out.append(torch.softmax(net(t).float(), dim=1)[:, 1].cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


class SliceClassifierStage:
    """Pipeline stage behind ``analyze --slice-classifier`` (seed 000): the installed slice
    classifier reads the mid-sagittal and mid-axial slice of each complete vertebra of
    ``context.labelmap`` (centred on its outline's centre of mass) and fills
    :attr:`~.analysis.VertebraResult.slice_fracture_probability` with the mean of the two. Cut
    vertebrae are left out, as in training; the status is never changed."""

    name = "slice-classifier"
    models: tuple[str, ...] = (MODEL_NAME,)

    def __init__(self, directory: object = None) -> None:
        self.directory = directory

    def run(self, context: object) -> None:
        from VertebralFractureLib import models
        from VertebralFractureLib.models import select_device

        if context.labelmap is None:
            context.warnings.append("slice classifier not run: no vertebra segmentation")
            return
        card, net = models.load_network(MODEL_NAME, build_network, self.directory, cached=True)
        arch = card.architecture
        px, field = int(arch.get("px", SLICE_PX)), float(arch.get("field_mm", FIELD_MM))
        window = tuple(arch.get("hu_window", HU_WINDOW))
        device = select_device(context.config.device)
        net.to(device)
        labels = [lab for lab, v in context.vertebrae.items() if v.complete]
        centres = mask_centres(context.labelmap, labels)
        if not centres:
            return
        context.report(self.name, 0.1, f"slices of {len(centres)} vertebrae")
        stacks = np.concatenate([vertebra_slices(context.image, c, px, field, window) for c in centres.values()])
        context.report(self.name, 0.3, "classifying the slices")
        p = slice_probabilities(net, stacks, device)
        for k, lab in enumerate(centres):  # the mean over each vertebra's slices
            context.vertebrae[lab].slice_fracture_probability = float(np.mean(p[k * len(VIEWS): (k + 1) * len(VIEWS)]))


__all__ = ["DENSENET_WIDTHS", "FIELD_MM", "HU_WINDOW", "MODEL_NAME", "NETWORK_TYPES", "SLICE_PX", "VIEWS",
           "SliceClassifierStage", "build_network", "mask_centres", "plane_grid", "sample_plane",
           "slice_probabilities", "slices_of", "to_unit", "vertebra_slices"]
