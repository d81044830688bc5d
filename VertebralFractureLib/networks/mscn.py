"""M-SCN: the modified spatial configuration network of seeds/002 (§2.2), in 2D or 3D.

Heatmap regression with one output channel per landmark (a vertebra label in 3D, a keypoint in
2D). Two parts (Payer et al., "Integrating spatial configuration into heatmap regression based
CNNs for landmark localization", MedIA 2019, modified as in seeds/002 Fig. 4–5):

* **Local network (LN)** — a U-Net whose blocks are residual double convolutions, with attention
  gates (Oktay et al., 2018) on the skip connections: ``attn(x, g) = σ(ψ(ReLU(Wx·x + Wg·g)))``.
  A 1×1 convolution of the finest decoder map gives the LN heatmap ``F_L``.
* **Global network (GN)** — single-convolution blocks with large kernels (7³). "Multiple
  filtering": ``F_L`` is re-featured at each decoder level's resolution and multiplied
  element-wise with that level's decoder map; the filtered maps are merged coarse → fine by
  up-sampling and re-convolution into the GN heatmap ``F_G``.
* Output ``F = F_L · F_G``, no final activation (Eq. 8).

The ablation variants of the seed's Table 4 are options: ``variant="ln"`` (LN only), ``"gn"``
(GN only, fed by a plain encoder), ``"ln+gn"``; ``attention``, ``residual`` and
``multiple_filtering`` switch the three modifications; ``variant="scn"`` is the original SCN-like
design (plain LN, GN on the down-sampled LN heatmap alone).

Shapes: input ``(B, in_channels, *S)``, output ``(B, out_channels, *S)``, ``S`` divisible by
``2 ** (len(features) - 1)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

VARIANTS = ("ln+gn", "ln", "gn", "scn")


def _conv(dims: int) -> type[nn.Module]:
    return nn.Conv3d if dims == 3 else nn.Conv2d


def _norm(dims: int, channels: int) -> nn.Module:
    return nn.InstanceNorm3d(channels, affine=True) if dims == 3 else nn.InstanceNorm2d(channels, affine=True)


class LNBlock(nn.Module):
    """Double 3×3 convolution with instance norm and LeakyReLU, optionally residual (seeds/002 Fig. 5a)."""

    def __init__(self, dims: int, cin: int, cout: int, residual: bool = True) -> None:
        super().__init__()
        conv = _conv(dims)
        self.body = nn.Sequential(
            conv(cin, cout, 3, padding=1, bias=False), _norm(dims, cout), nn.LeakyReLU(0.1, inplace=True),
            conv(cout, cout, 3, padding=1, bias=False), _norm(dims, cout),
        )
        self.skip = (conv(cin, cout, 1, bias=False) if cin != cout else nn.Identity()) if residual else None
        self.act = nn.LeakyReLU(0.1, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        if self.skip is not None:
            y = y + self.skip(x)
        return self.act(y)


class GNBlock(nn.Module):
    """Single large-kernel convolution (7³ by default) with LeakyReLU (seeds/002 Fig. 5b)."""

    def __init__(self, dims: int, cin: int, cout: int, kernel: int = 7) -> None:
        super().__init__()
        self.conv = _conv(dims)(cin, cout, kernel, padding=kernel // 2)
        self.act = nn.LeakyReLU(0.1, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class AttentionGate(nn.Module):
    """Additive attention gate (Oktay et al. 2018; seeds/002 Eq. 5) on a skip connection."""

    def __init__(self, dims: int, skip_channels: int, gate_channels: int, inter_channels: int) -> None:
        super().__init__()
        conv = _conv(dims)
        self.wx = conv(skip_channels, inter_channels, 1, bias=False)
        self.wg = conv(gate_channels, inter_channels, 1)
        self.psi = conv(inter_channels, 1, 1)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        a = torch.sigmoid(self.psi(F.relu(self.wx(x) + self.wg(g))))
        return x * a


class MSCN(nn.Module):
    """The M-SCN heatmap regressor.

    Args:
        dims: 3 for volumes (stage 1), 2 for sagittal slices (stage 3 keypoints).
        in_channels: image channels (1 for CT or a mask).
        out_channels: landmarks (vertebra labels or keypoints), one heatmap each.
        features: channels per U-Net level, fine → coarse; ``len(features) - 1`` down-samplings.
            The LN decoder yields ``len(features) - 1`` maps (4 in the seed: 5 levels).
        gn_features: channels of the GN blocks.
        gn_kernel: kernel size of the GN convolutions (7 in the seed).
        variant: ``"ln+gn"`` (M-SCN), ``"ln"``, ``"gn"`` or ``"scn"`` (ablations).
        attention: attention gates on the LN skip connections.
        residual: residual LN blocks.
        multiple_filtering: GN filters every decoder map with the re-featured LN heatmap; without it
            the GN sees only the LN heatmap (down-sampled), as in the original SCN.
        gn_stride: the GN works at no finer than 1/``gn_stride`` of the input resolution (finer
            decoder maps are average-pooled first) and its heatmap is up-sampled; large-kernel
            convolutions at full resolution would cost ~8× more for a smooth, global signal.

    Raises:
        ValueError: for inconsistent arguments.
    """

    def __init__(
        self,
        dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 26,
        features: Sequence[int] = (16, 32, 48, 64, 96),
        gn_features: int = 16,
        gn_kernel: int = 7,
        variant: str = "ln+gn",
        attention: bool = True,
        residual: bool = True,
        multiple_filtering: bool = True,
        gn_stride: int = 2,
    ) -> None:
        super().__init__()
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {dims}")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be ≥ 1, got {in_channels}, {out_channels}")
        features = tuple(int(f) for f in features)
        if len(features) < 2 or min(features) < 1:
            raise ValueError(f"features needs ≥ 2 positive channel counts, got {features}")
        if gn_stride < 1:
            raise ValueError(f"gn_stride must be ≥ 1, got {gn_stride}")
        if gn_kernel < 1 or gn_kernel % 2 == 0:
            raise ValueError(f"gn_kernel must be a positive odd number, got {gn_kernel}")
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if variant == "scn":
            attention, residual, multiple_filtering = False, False, False
        self.dims, self.out_channels, self.variant = dims, out_channels, variant
        self.attention, self.multiple_filtering, self.gn_stride = attention, multiple_filtering, gn_stride
        self.levels = len(features)
        conv = _conv(dims)

        # ---- local network: attention U-Net with residual blocks
        self.enc = nn.ModuleList()
        cin = in_channels
        for f in features:
            self.enc.append(LNBlock(dims, cin, f, residual))
            cin = f
        self.up = nn.ModuleList()
        self.gates = nn.ModuleList()
        self.dec = nn.ModuleList()
        for k in range(self.levels - 2, -1, -1):  # coarse → fine
            self.up.append(conv(features[k + 1], features[k], 1))
            self.gates.append(AttentionGate(dims, features[k], features[k], max(1, features[k] // 2))
                              if attention else nn.Identity())
            self.dec.append(LNBlock(dims, 2 * features[k], features[k], residual))
        self.ln_head = conv(features[0], out_channels, 1)

        # ---- global network
        dec_channels = [features[k] for k in range(self.levels - 2, -1, -1)]  # coarse → fine
        if variant in ("ln+gn", "gn") and multiple_filtering:
            self.refeature = nn.ModuleList(GNBlock(dims, out_channels, c, gn_kernel) for c in dec_channels)
            self.gn_in = nn.ModuleList(GNBlock(dims, c, gn_features, gn_kernel) for c in dec_channels)
            self.gn_merge = nn.ModuleList(GNBlock(dims, 2 * gn_features, gn_features, gn_kernel)
                                          for _ in dec_channels[1:])
            self.gn_head = conv(gn_features, out_channels, 1)
        elif variant in ("ln+gn", "scn"):
            # spatial-configuration component on the down-sampled LN heatmap (Payer et al.)
            self.sc = nn.Sequential(
                GNBlock(dims, out_channels, gn_features, gn_kernel),
                GNBlock(dims, gn_features, gn_features, gn_kernel),
                conv(gn_features, out_channels, gn_kernel, padding=gn_kernel // 2),
            )
        if variant == "gn" and not multiple_filtering:
            raise ValueError("variant 'gn' needs multiple_filtering (the GN alone has no other input)")

    @property
    def divisor(self) -> int:
        """Spatial sizes must be multiples of this."""
        return 2 ** (self.levels - 1)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(x, 2) if self.dims == 3 else F.max_pool2d(x, 2)

    def _pool_to(self, x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        pool = F.adaptive_avg_pool3d if self.dims == 3 else F.adaptive_avg_pool2d
        return pool(x, tuple(size))

    def _resize(self, x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        mode = "trilinear" if self.dims == 3 else "bilinear"
        return F.interpolate(x, size=tuple(size), mode=mode, align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != self.dims + 2:
            raise ValueError(f"expected a {self.dims + 2}D tensor (B, C, *spatial), got shape {tuple(x.shape)}")
        if any(s % self.divisor for s in x.shape[2:]):
            raise ValueError(f"spatial size {tuple(x.shape[2:])} must be divisible by {self.divisor}")
        skips = []
        h = x
        for k, block in enumerate(self.enc):
            h = block(h if k == 0 else self._pool(h))
            skips.append(h)
        decoded = []  # coarse → fine
        for i, k in enumerate(range(self.levels - 2, -1, -1)):
            up = self.up[i](self._resize(h, skips[k].shape[2:]))
            skip = self.gates[i](skips[k], up) if self.attention else skips[k]
            h = self.dec[i](torch.cat([up, skip], dim=1))
            decoded.append(h)
        f_local = self.ln_head(h)
        if self.variant == "ln":
            return f_local
        if hasattr(self, "gn_head"):
            g = None
            finest = [max(1, s // self.gn_stride) for s in x.shape[2:]]
            for i, d in enumerate(decoded):
                if any(a > b for a, b in zip(d.shape[2:], finest)):
                    d = self._pool_to(d, finest)
                filt = self.refeature[i](self._resize(f_local, d.shape[2:])) * d  # multiple filtering
                filt = self.gn_in[i](filt)
                g = filt if g is None else self.gn_merge[i - 1](torch.cat([self._resize(g, d.shape[2:]), filt], 1))
            f_global = self._resize(self.gn_head(g), f_local.shape[2:])
        else:
            coarse = [s // 4 for s in f_local.shape[2:]]
            low = self._resize(f_local, [max(1, s) for s in coarse])
            f_global = self._resize(self.sc(low), f_local.shape[2:])
        if self.variant == "gn":
            return f_global
        return f_local * f_global
