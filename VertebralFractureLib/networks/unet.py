"""Stage-2 network: a 3D U-Net with three output classes (background, normal vertebra, fractured
vertebra), seeds/002 §2.3.1.

The network is MONAI's residual U-Net (``monai.networks.nets.UNet``); this module only turns a
model card's ``architecture`` into it, checks the arguments, and knows the input-size divisor.
With ``in_channels`` 2 the second input is a Gaussian at the crop centre (where the vertebra to
segment is expected), as in Payer et al.'s VerSe method: it tells the network which of the
vertebrae in the crop is meant, which a translation-equivariant network cannot see otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: Output classes, in channel order.
CLASSES: tuple[str, ...] = ("background", "normal", "fractured")

DEFAULT_ARCHITECTURE: dict[str, Any] = {
    "type": "UNet",
    "channels": [16, 32, 64, 128],
    "strides": [2, 2, 2],
    "num_res_units": 1,
    "norm": "instance",
    "dropout": 0.0,
    "in_channels": 1,
}


def divisor(architecture: Mapping[str, Any]) -> int:
    """Input sizes must be multiples of this (the product of the strides)."""
    out = 1
    for s in architecture.get("strides", DEFAULT_ARCHITECTURE["strides"]):
        out *= int(s)
    return out


def build_unet(architecture: Mapping[str, Any] | None = None) -> Any:
    """The 3D U-Net described by ``architecture`` (a model card entry; defaults filled in).

    Raises:
        ValueError: unknown type, or channels/strides that do not fit together.
    """
    from monai.networks.nets import UNet

    arch = {**DEFAULT_ARCHITECTURE, **dict(architecture or {})}
    if arch["type"] != "UNet":
        raise ValueError(f"not a U-Net architecture: type {arch['type']!r}")
    channels: Sequence[int] = [int(c) for c in arch["channels"]]
    strides: Sequence[int] = [int(s) for s in arch["strides"]]
    if len(channels) < 2 or len(strides) != len(channels) - 1:
        raise ValueError(f"a U-Net needs ≥ 2 levels and one stride fewer than channels, got {channels}, {strides}")
    if any(c < 1 for c in channels) or any(s < 1 for s in strides):
        raise ValueError(f"channels and strides must be positive, got {channels}, {strides}")
    if not 0.0 <= float(arch["dropout"]) < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {arch['dropout']}")
    if int(arch["in_channels"]) not in (1, 2):
        raise ValueError(f"in_channels must be 1 (CT) or 2 (CT + centre heatmap), got {arch['in_channels']}")
    net = UNet(spatial_dims=3, in_channels=int(arch["in_channels"]), out_channels=len(CLASSES), channels=channels, strides=strides,
               num_res_units=int(arch["num_res_units"]), norm=str(arch["norm"]), dropout=float(arch["dropout"]))
    net.divisor = divisor(arch)
    return net
