"""Network factory: every architecture in 2D and 3D, nnU-Net-style DynUNet plans, bad specs."""

from __future__ import annotations

import pytest
import torch

from medseg.errors import ConfigError
from medseg.models import build_network, count_parameters, dynunet_kernels_strides

SPECS = [
    {"arch": "unet", "channels": [4, 8, 16], "num_res_units": 1},
    {"arch": "dynunet", "patch_size": None, "spacing": None, "filters": None},
    {"arch": "segresnet", "init_filters": 8, "blocks_down": [1, 1, 1], "blocks_up": [1, 1]},
    {"arch": "conv", "kernel_size": 3},
]


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("base", SPECS, ids=lambda s: s["arch"])
def test_forward_shapes(base, dims):
    n_classes = 1 if dims == 2 else 7
    spec = {k: v for k, v in base.items() if v is not None}
    spec.update(spatial_dims=dims, in_channels=2, out_channels=n_classes)
    size = (32, 32) if dims == 2 else (16, 16, 16)
    if base["arch"] == "dynunet":
        spec.update(patch_size=list(size), spacing=[1.0] * dims)
        spec["max_levels"] = 4
    net = build_network(spec).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 2, *size))
    assert tuple(out.shape) == (1, n_classes, *size)
    assert count_parameters(net) == sum(p.numel() for p in net.parameters()) > 0


def test_dynunet_plan_isotropic_and_anisotropic():
    kernels, strides = dynunet_kernels_strides([128, 128, 128], [1.0, 1.0, 1.0])
    assert strides == [[1, 1, 1]] + [[2, 2, 2]] * 5 and kernels == [[3, 3, 3]] * 6
    # 5 mm slices with 0.8 mm pixels: first levels neither convolve nor pool along k
    kernels, strides = dynunet_kernels_strides([192, 192, 48], [0.8, 0.8, 5.0])
    assert strides[1] == [2, 2, 1] and kernels[0] == [3, 3, 1]
    assert strides[-1][2] == 2  # k is pooled once the spacings even out
    prod = [1, 1, 1]
    for s in strides:
        prod = [a * b for a, b in zip(prod, s, strict=True)]
    assert all(p % f == 0 for p, f in zip([192, 192, 48], prod, strict=True))


def test_dynunet_deep_supervision_heads():
    spec = {"arch": "dynunet", "spatial_dims": 3, "in_channels": 1, "out_channels": 3, "patch_size": [32, 32, 32],
            "spacing": [1, 1, 1], "deep_supervision": True, "deep_supr_num": 2, "max_levels": 4,
            "filters": [8, 16, 32, 64]}
    net = build_network(spec)
    net.train()
    out = net(torch.randn(2, 1, 32, 32, 32))
    assert tuple(out.shape) == (2, 3, 3, 32, 32, 32)  # main output + 2 supervision heads
    net.eval()
    with torch.no_grad():
        assert tuple(net(torch.randn(1, 1, 32, 32, 32)).shape) == (1, 3, 32, 32, 32)


def test_conv_parameter_count():
    net = build_network({"arch": "conv", "spatial_dims": 3, "in_channels": 2, "out_channels": 100, "kernel_size": 3})
    assert count_parameters(net) == 2 * 100 * 27 + 100


@pytest.mark.parametrize("spec,msg", [
    ({"arch": "vnet", "out_channels": 2}, "unknown arch"),
    ({"arch": "unet"}, "out_channels"),
    ({"arch": "unet", "out_channels": 0}, "out_channels"),
    ({"arch": "unet", "out_channels": 2, "spatial_dims": 4}, "spatial_dims"),
    ({"arch": "unet", "out_channels": 2, "channels": [8]}, "channels"),
    ({"arch": "unet", "out_channels": 2, "chanels": [8, 16]}, "does not take"),
    ({"arch": "dynunet", "out_channels": 2}, "patch_size"),
    ({"arch": "dynunet", "out_channels": 2, "patch_size": [30, 32, 32], "spacing": [1, 1, 1]}, "divisible"),
    ({"arch": "conv", "out_channels": 2, "kernel_size": 2}, "odd"),
    ("unet", "mapping"),
])
def test_bad_specs_raise_config_error(spec, msg):
    with pytest.raises(ConfigError, match=msg):
        build_network(spec)
