"""Classifying lumbar vertebrae on a lateral radiograph: normal, old or fresh fracture (seed 004),
and the whole radiograph: fresh vertebral compression fracture or not (seed 003).

Seed 004 crops each vertebral body from its detected box, flattens the crop's histogram, resizes
and pads it to 166 (W) × 140 (H) pixels, and classifies it with three CNNs — ResNet-50,
DenseNet-161 and ResNeXt-50 — whose probabilities are summed (the ensemble's class is the largest
sum). Seed 003 classifies the whole radiograph at 224 × 224 with ResNet-101 (compared with
ResNet-50). Both explain the decisions with Grad-CAM; seed 004 divides the Grad-CAM map into a
6 × 8 grid and tests each section between the classes (Kruskal–Wallis).

The networks are MONAI's building blocks at the seeds' depths (ResNet bottleneck layers 3-4-6-3
and 3-4-23-3, DenseNet-161's blocks 6-12-36-24, ResNeXt bottlenecks with grouped convolutions) at
a quarter of their widths (``-thin``): they are trained from scratch on synthetic radiographs on a
CPU (no ImageNet weights can be downloaded), where the full widths cannot be trained in time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

#: Vertebra classes of seed 004, in the order of a network's outputs.
CLASSES: tuple[str, ...] = ("normal", "old", "fresh")
#: Crop size of seed 004: 166 pixels wide, 140 high (rows, columns here).
CROP_SHAPE: tuple[int, int] = (140, 166)
#: Margin added around a detected box before cropping (fraction of its width and height, each side).
CROP_MARGIN = 0.15
#: Gaussian smoothing (sigma, mm) of a crop before its histogram is flattened.
CROP_SMOOTH_MM = 0.8
#: Whole-radiograph input size of seed 003.
WHOLE_SIZE = 224
#: The three networks of seed 004's ensemble (registry names ``radiograph-<kind>``).
ENSEMBLE: tuple[str, ...] = ("resnet50-thin", "densenet161-thin", "resnext50-thin")
#: Seed 003's network and its comparison.
FRESH_KINDS: tuple[str, ...] = ("resnet101-thin", "resnet50-thin")
#: Registry name of seed 003's fresh-VCF network.
FRESH_MODEL = "radiograph-fresh-vcf"
#: Grad-CAM grid of seed 004 (rows, columns) over the 140 × 166 crop.
GRID: tuple[int, int] = (6, 8)
#: ResNeXt's groups in the thin networks (ResNeXt-50 is 32 × 4d; at a quarter width 8 × 4d).
RESNEXT_GROUPS = 8

_RESNET_LAYERS = {"resnet50-thin": [3, 4, 6, 3], "resnet101-thin": [3, 4, 23, 3], "resnext50-thin": [3, 4, 6, 3]}
_THIN_PLANES = [16, 32, 64, 128]  # a quarter of ResNet's 64-128-256-512
#: DenseNet-161 (init 96, growth 48, blocks 6-12-36-24) at a quarter width.
DENSENET161_THIN = {"init_features": 24, "growth_rate": 12, "block_config": (6, 12, 36, 24)}
NETWORK_KINDS: tuple[str, ...] = ("resnet50-thin", "resnet101-thin", "resnext50-thin", "densenet161-thin")


def model_name(kind: str) -> str:
    """Registry name of one of the ensemble's networks."""
    return f"radiograph-{kind}"


# ---------------------------------------------------------------------------------------- networks
def _resnext_block() -> Any:
    from monai.networks.layers.factories import Conv
    from monai.networks.layers.utils import get_norm_layer
    from monai.networks.nets.resnet import ResNetBottleneck

    class ResNeXtBottleneck(ResNetBottleneck):
        """ResNet's bottleneck with ResNeXt's grouped 3 × 3 convolution, twice as wide inside."""

        def __init__(self, in_planes: int, planes: int, spatial_dims: int = 2, stride: int = 1,
                     downsample: Any = None, act: Any = ("relu", {"inplace": True}), norm: Any = "batch") -> None:
            super().__init__(in_planes, planes, spatial_dims, stride, downsample, act, norm)
            conv = Conv[Conv.CONV, spatial_dims]
            width = 2 * planes
            self.conv1 = conv(in_planes, width, kernel_size=1, bias=False)
            self.bn1 = get_norm_layer(name=norm, spatial_dims=spatial_dims, channels=width)
            self.conv2 = conv(width, width, kernel_size=3, stride=stride, padding=1, groups=RESNEXT_GROUPS, bias=False)
            self.bn2 = get_norm_layer(name=norm, spatial_dims=spatial_dims, channels=width)
            self.conv3 = conv(width, planes * self.expansion, kernel_size=1, bias=False)

    return ResNeXtBottleneck


def build_network(kind: str, num_classes: int = len(CLASSES)) -> Any:
    """One of :data:`NETWORK_KINDS` for one-channel 2D images, ``num_classes`` logits out."""
    if kind == "densenet161-thin":
        from monai.networks.nets import DenseNet

        return DenseNet(spatial_dims=2, in_channels=1, out_channels=num_classes, **DENSENET161_THIN)
    if kind not in _RESNET_LAYERS:
        raise ValueError(f"unknown network {kind!r}; one of {', '.join(NETWORK_KINDS)}")
    from monai.networks.nets import ResNet

    block: Any = _resnext_block() if kind.startswith("resnext") else "bottleneck"
    return ResNet(block=block, layers=_RESNET_LAYERS[kind], block_inplanes=list(_THIN_PLANES), spatial_dims=2,
                  n_input_channels=1, conv1_t_size=7, conv1_t_stride=2, num_classes=num_classes)


def cam_layer(kind: str) -> str:
    """The layer whose activations Grad-CAM weighs: the last convolutional features."""
    return "class_layers.relu" if kind.startswith("densenet") else "layer4"


# ---------------------------------------------------------------------------------------- crops
def equalize(image: np.ndarray, bins: int = 256) -> np.ndarray:
    """Histogram flattening (seed 004): each value mapped to its cumulative frequency, 0..1."""
    img = np.asarray(image, np.float32)
    lo, hi = float(img.min()), float(img.max())
    if hi - lo < 1e-6:
        return np.zeros_like(img)
    hist, edges = np.histogram(img.astype(np.float64), bins=bins, range=(lo, hi))
    cdf = np.cumsum(hist).astype(np.float64)
    cdf = (cdf - cdf[0]) / max(cdf[-1] - cdf[0], 1.0)
    return np.interp(img, edges[1:], cdf).astype(np.float32)


def crop_vertebra(image: np.ndarray, box_px: Sequence[float], margin: float = CROP_MARGIN,
                  shape: tuple[int, int] = CROP_SHAPE, pixel_mm: float | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Seed 004's input for one vertebra: the box (x0, y0, x1, y1 in pixels) with ``margin`` each
    side, histogram-flattened, resized to fit ``shape`` (rows, columns) keeping its aspect, and
    zero-padded to it (centred). With ``pixel_mm`` the region is first smoothed by a Gaussian of
    :data:`CROP_SMOOTH_MM` (the flattening stretches a body's narrow grey range, and its noise with
    it). Returns the crop and where it came from (to map a Grad-CAM map back: ``origin`` (x, y),
    ``scale`` crop pixels per image pixel, ``offset`` (row, col) of the resized crop in the padded one)."""
    from PIL import Image
    from scipy import ndimage

    x0, y0, x1, y1 = (float(v) for v in box_px)
    w, h = x1 - x0, y1 - y0
    if w <= 1 or h <= 1:
        raise ValueError(f"box {list(box_px)} is empty")
    xa, xb = int(np.floor(x0 - margin * w)), int(np.ceil(x1 + margin * w))
    ya, yb = int(np.floor(y0 - margin * h)), int(np.ceil(y1 + margin * h))
    rows, cols = image.shape
    region = np.zeros((yb - ya, xb - xa), np.float32)  # outside the image: zero, as the padding
    sy, sx = max(ya, 0), max(xa, 0)
    ey, ex = min(yb, rows), min(xb, cols)
    region[sy - ya:ey - ya, sx - xa:ex - xa] = image[sy:ey, sx:ex]
    if pixel_mm is not None and CROP_SMOOTH_MM > 0:
        inside = region[sy - ya:ey - ya, sx - xa:ex - xa]
        region[sy - ya:ey - ya, sx - xa:ex - xa] = ndimage.gaussian_filter(inside, CROP_SMOOTH_MM / float(pixel_mm))
    region = equalize(region)
    scale = min(shape[0] / region.shape[0], shape[1] / region.shape[1])
    size = (max(1, int(round(region.shape[1] * scale))), max(1, int(round(region.shape[0] * scale))))
    size = (min(size[0], shape[1]), min(size[1], shape[0]))
    resized = np.asarray(Image.fromarray(region).resize(size, Image.BILINEAR), np.float32)
    out = np.zeros(shape, np.float32)
    r0, c0 = (shape[0] - resized.shape[0]) // 2, (shape[1] - resized.shape[1]) // 2
    out[r0:r0 + resized.shape[0], c0:c0 + resized.shape[1]] = resized
    return out, {"origin": (xa, ya), "scale": scale, "offset": (r0, c0), "size": resized.shape}


def whole_input(image: np.ndarray, size: int = WHOLE_SIZE) -> np.ndarray:
    """Seed 003's input: the radiograph padded to a square (zeros, centred) and resized to
    ``size`` × ``size``."""
    from PIL import Image

    rows, cols = image.shape
    n = max(rows, cols)
    sq = np.zeros((n, n), np.float32)
    r0, c0 = (n - rows) // 2, (n - cols) // 2
    sq[r0:r0 + rows, c0:c0 + cols] = image
    return np.array(Image.fromarray(sq).resize((size, size), Image.BILINEAR), np.float32)


def whole_map_to_image(square: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A map on :func:`whole_input`'s square (e.g. its Grad-CAM) back on the radiograph of ``shape``."""
    from PIL import Image

    rows, cols = shape
    n = max(rows, cols)
    big = np.asarray(Image.fromarray(np.asarray(square, np.float32)).resize((n, n), Image.BILINEAR))
    r0, c0 = (n - rows) // 2, (n - cols) // 2
    return np.ascontiguousarray(big[r0:r0 + rows, c0:c0 + cols], np.float32)


# ---------------------------------------------------------------------------------------- inference
def probabilities(nets: Mapping[str, Any], crops: np.ndarray) -> dict[str, np.ndarray]:
    """Softmax probabilities (n, 3) of each network for crops (n, rows, cols)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(crops, np.float32))[:, None]
    out = {}
    with torch.inference_mode():
        for kind, net in nets.items():
            net.eval()
            out[kind] = torch.softmax(net(x).float(), dim=1).numpy()
    return out


def fresh_probability(net: Any, image: np.ndarray, device: str = "cpu") -> float:
    """Seed 003: the probability of a fresh VCF in view, from the whole radiograph (0..1, bone bright)."""
    import torch
    from scipy.special import expit

    with torch.inference_mode():
        logit = float(net(torch.from_numpy(whole_input(image))[None, None].to(device)).float().cpu()[0, 0])
    return float(expit(logit))


def ensemble(probs: Mapping[str, np.ndarray]) -> np.ndarray:
    """Seed 004's ensemble: the networks' probabilities summed (divided by their number, so that
    the result is again a probability); the class is the largest."""
    stack = np.stack([np.asarray(p, np.float64) for p in probs.values()])
    return stack.mean(axis=0)


def decide(prob: np.ndarray, fracture_threshold: float | None = None) -> np.ndarray:
    """Class index of each row of ensemble probabilities (n, 3). Without a threshold, the largest
    (seed 004). With one, a vertebra is fractured only when 1 − P(normal) reaches it (a threshold
    chosen on validation data for a high specificity), and then old or fresh by the larger of the two."""
    prob = np.atleast_2d(np.asarray(prob, float))
    if fracture_threshold is None:
        return np.argmax(prob, axis=1)
    fractured = 1.0 - prob[:, 0] >= fracture_threshold
    return np.where(fractured, 1 + np.argmax(prob[:, 1:], axis=1), 0)


def grad_cam(net: Any, kind: str, crops: np.ndarray, class_idx: Sequence[int] | None = None) -> np.ndarray:
    """Grad-CAM maps (n, rows, cols; 0..1 each) of ``net`` for ``crops`` (MONAI's GradCAM at
    :func:`cam_layer`), for the given classes (default: the predicted ones)."""
    import torch
    from monai.visualize import GradCAM

    net.eval()
    cam = GradCAM(nn_module=net, target_layers=cam_layer(kind))
    x = torch.from_numpy(np.ascontiguousarray(crops, np.float32))[:, None]
    maps = []
    for k in range(len(x)):
        idx = None if class_idx is None else int(class_idx[k])
        with torch.enable_grad():
            m = cam(x[k:k + 1], class_idx=idx)
        maps.append(np.asarray(m.detach().cpu().numpy()[0, 0], np.float32))
    return np.stack(maps) if maps else np.zeros((0, *crops.shape[1:]), np.float32)


def ensemble_grad_cam(nets: Mapping[str, Any], crops: np.ndarray, class_idx: Sequence[int]) -> np.ndarray:
    """The ensemble's Grad-CAM maps: each network's map for the given classes, averaged."""
    return np.mean([grad_cam(net, kind, crops, class_idx) for kind, net in nets.items()], axis=0)


def grid_means(cam_map: np.ndarray, grid: tuple[int, int] = GRID) -> np.ndarray:
    """Mean of a Grad-CAM map in each section of a ``grid`` (rows, columns) — seed 004's 6 × 8."""
    rows = np.array_split(np.arange(cam_map.shape[0]), grid[0])
    cols = np.array_split(np.arange(cam_map.shape[1]), grid[1])
    return np.array([[float(cam_map[np.ix_(r, c)].mean()) for c in cols] for r in rows])


def grid_test(cells: np.ndarray, groups: Sequence[int], n_groups: int = len(CLASSES)) -> dict[str, Any]:
    """Kruskal–Wallis test of each grid section between the classes (seed 004's Grad-CAM analysis).

    ``cells``: (n, rows, columns) section means; ``groups``: each map's class. Returns per section
    H, p and the class with the highest median (where p < 0.05); sections where fewer than two
    classes have maps are None."""
    from scipy.stats import kruskal

    cells = np.asarray(cells, float)
    groups = np.asarray(groups)
    present = [g for g in range(n_groups) if np.sum(groups == g) > 0]
    h = np.full(cells.shape[1:], np.nan)
    p = np.full(cells.shape[1:], np.nan)
    top = np.full(cells.shape[1:], -1)
    if len(present) >= 2:
        for r in range(cells.shape[1]):
            for c in range(cells.shape[2]):
                samples = [cells[groups == g, r, c] for g in present]
                if all(np.ptp(s) == 0 for s in samples) and len({float(s[0]) for s in samples}) == 1:
                    continue  # identical values: no test
                stat, pv = kruskal(*samples)
                h[r, c], p[r, c] = stat, pv
                top[r, c] = present[int(np.argmax([np.median(s) for s in samples]))]
    return {"grid": list(cells.shape[1:]), "groups": [CLASSES[g] if g < len(CLASSES) else str(g) for g in present],
            "counts": {CLASSES[g]: int(np.sum(groups == g)) for g in present},
            "h": h.round(3).tolist(), "p": p.round(5).tolist(), "highest": top.tolist(),
            "significant": int(np.sum(p < 0.05))}


__all__ = ["CLASSES", "CROP_SHAPE", "ENSEMBLE", "FRESH_KINDS", "FRESH_MODEL", "GRID", "NETWORK_KINDS", "WHOLE_SIZE",
           "build_network", "cam_layer", "crop_vertebra", "decide", "ensemble", "ensemble_grad_cam", "equalize",
           "fresh_probability", "grad_cam", "grid_means", "grid_test", "model_name", "probabilities", "whole_input",
           "whole_map_to_image"]
