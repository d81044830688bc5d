from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from VertebralFractureLib.networks.mscn import MSCN  # noqa: E402


@pytest.mark.parametrize("variant", ["ln+gn", "ln", "gn", "scn"])
def test_mscn_3d_variants_shape_and_gradient(variant):
    torch.manual_seed(0)
    net = MSCN(dims=3, out_channels=5, features=(4, 8, 8), gn_features=4, gn_kernel=3, variant=variant)
    x = torch.randn(2, 1, 16, 16, 24)
    y = net(x)
    assert y.shape == (2, 5, 16, 16, 24)
    y.abs().mean().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_mscn_2d_and_switches():
    net = MSCN(dims=2, out_channels=6, features=(4, 8, 16, 16, 16), gn_kernel=7,
               attention=False, residual=False, multiple_filtering=True)
    assert net(torch.zeros(1, 1, 32, 48)).shape == (1, 6, 32, 48)
    assert net.divisor == 16
    # with the LN heatmap multiplied in, a zero LN output gives a zero prediction (Eq. 8)
    full = MSCN(dims=2, out_channels=3, features=(4, 8), gn_kernel=3)
    torch.nn.init.zeros_(full.ln_head.weight)
    torch.nn.init.zeros_(full.ln_head.bias)
    assert torch.count_nonzero(full(torch.randn(1, 1, 8, 8))) == 0


def test_mscn_argument_checks():
    with pytest.raises(ValueError, match="dims"):
        MSCN(dims=4)
    with pytest.raises(ValueError, match="variant"):
        MSCN(variant="transformer")
    with pytest.raises(ValueError, match="odd"):
        MSCN(gn_kernel=4)
    with pytest.raises(ValueError, match="features"):
        MSCN(features=(8,))
    with pytest.raises(ValueError, match="multiple_filtering"):
        MSCN(variant="gn", multiple_filtering=False)
    net = MSCN(dims=3, out_channels=2, features=(4, 8, 8), gn_kernel=3)
    with pytest.raises(ValueError, match="divisible"):
        net(torch.zeros(1, 1, 10, 16, 16))
    with pytest.raises(ValueError, match="5D"):
        net(torch.zeros(1, 16, 16, 16))
