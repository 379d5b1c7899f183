"""Network factory: a small JSON-able spec -> a MONAI network.

Spec keys (all architectures): ``arch`` (``"unet"``, ``"dynunet"``, ``"segresnet"``),
``spatial_dims`` (2 or 3), ``in_channels``, ``out_channels`` (number of classes incl. background;
1 means a single sigmoid foreground channel).

* ``unet``: ``channels`` (default ``[16, 32, 64, 128]``), ``strides`` (default 2 between levels),
  ``num_res_units`` (2), ``norm`` (``"instance"``), ``dropout`` (0.0).
* ``dynunet`` (nnU-Net-like): ``patch_size`` (voxels) and ``spacing`` (mm) from which kernel sizes
  and strides are derived (:func:`dynunet_kernels_strides`), or explicit ``kernel_size`` /
  ``strides``; ``filters`` (default 32, 64, 128, 256, 320, ...), ``deep_supervision`` (False),
  ``deep_supr_num`` (1), ``res_block`` (False), ``norm`` (``"instance"``).
* ``segresnet``: ``init_filters`` (16), ``blocks_down`` ([1, 2, 2, 4]), ``blocks_up`` ([1, 1, 1]),
  ``dropout_prob`` (None).
* ``conv``: one convolution (``kernel_size`` odd, default 1, "same" padding): a linear voxel
  classifier on a local neighbourhood. A baseline, and the cheapest many-class network for
  benchmarks; with hand-set weights it is an exact intensity-band classifier for tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from medseg.errors import ConfigError

ARCHS = ("unet", "dynunet", "segresnet", "conv")
_COMMON = {"arch", "spatial_dims", "in_channels", "out_channels", "name"}
_KNOWN = {
    "unet": _COMMON | {"channels", "strides", "num_res_units", "norm", "dropout", "act", "kernel_size"},
    "dynunet": _COMMON | {"patch_size", "spacing", "kernel_size", "strides", "filters", "deep_supervision",
                          "deep_supr_num", "res_block", "norm", "dropout", "max_levels"},
    "segresnet": _COMMON | {"init_filters", "blocks_down", "blocks_up", "dropout_prob", "norm"},
    "conv": _COMMON | {"kernel_size"},
}


def _int(spec: Mapping[str, Any], key: str, *, minimum: int, default: int | None = None) -> int:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"network spec: {key!r} must be an integer >= {minimum}, got {value!r}")
    return value


def dynunet_kernels_strides(patch_size: Sequence[int], spacing: Sequence[float], *,
                            max_levels: int = 6) -> tuple[list[list[int]], list[list[int]]]:
    """nnU-Net-style kernel sizes and strides for a DynUNet.

    Each level halves an axis only while that axis' spacing (mm) is at most twice the finest
    spacing and it still has at least 8 voxels; strongly anisotropic axes get kernel 1 until the
    spacings even out. Returns ``(kernels, strides)``; the first stride is all ones.
    """
    if len(patch_size) != len(spacing):
        raise ConfigError("network spec: patch_size and spacing must have one value per spatial axis")
    if any(int(p) < 1 for p in patch_size) or any(float(s) <= 0 for s in spacing):
        raise ConfigError("network spec: patch_size must be positive voxels and spacing positive mm")
    sizes = [float(p) for p in patch_size]
    spacings = [float(s) for s in spacing]
    kernels: list[list[int]] = []
    strides: list[list[int]] = [[1] * len(sizes)]
    while len(strides) < max_levels:
        finest = min(spacings)
        ratio = [s / finest for s in spacings]
        stride = [2 if r <= 2 and size >= 8 else 1 for r, size in zip(ratio, sizes, strict=False)]
        if all(s == 1 for s in stride):
            break
        kernels.append([3 if r <= 2 else 1 for r in ratio])
        strides.append(stride)
        sizes = [size / s for size, s in zip(sizes, stride, strict=False)]
        spacings = [sp * s for sp, s in zip(spacings, stride, strict=False)]
    kernels.append([3] * len(sizes))
    return kernels, strides


def build_network(spec: Mapping[str, Any]):
    """Build a MONAI network (a ``torch.nn.Module``) from ``spec``; ConfigError for a bad spec."""
    if not isinstance(spec, Mapping):
        raise ConfigError(f"network spec must be a mapping, got {type(spec).__name__}")
    arch = str(spec.get("arch", "")).lower()
    if arch not in ARCHS:
        raise ConfigError(f"network spec: unknown arch {spec.get('arch')!r}; choose one of {', '.join(ARCHS)}")
    unknown = sorted(set(spec) - _KNOWN[arch])
    if unknown:
        raise ConfigError(f"network spec: {arch} does not take {', '.join(unknown)}")
    dims = _int(spec, "spatial_dims", minimum=2, default=3)
    if dims not in (2, 3):
        raise ConfigError(f"network spec: spatial_dims must be 2 or 3, got {dims}")
    cin = _int(spec, "in_channels", minimum=1, default=1)
    cout = _int(spec, "out_channels", minimum=1)
    try:
        if arch == "unet":
            return _unet(spec, dims, cin, cout)
        if arch == "dynunet":
            return _dynunet(spec, dims, cin, cout)
        if arch == "conv":
            return _conv(spec, dims, cin, cout)
        return _segresnet(spec, dims, cin, cout)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"network spec for {arch} is invalid: {exc}") from exc


def _unet(spec, dims, cin, cout):
    from monai.networks.nets import UNet

    channels = [int(c) for c in spec.get("channels", (16, 32, 64, 128))]
    if len(channels) < 2 or any(c < 1 for c in channels):
        raise ConfigError("network spec: unet 'channels' needs at least two positive values")
    strides = [int(s) for s in spec.get("strides", [2] * (len(channels) - 1))]
    if len(strides) != len(channels) - 1:
        raise ConfigError("network spec: unet 'strides' needs len(channels) - 1 values")
    return UNet(spatial_dims=dims, in_channels=cin, out_channels=cout, channels=channels, strides=strides,
                kernel_size=spec.get("kernel_size", 3), num_res_units=int(spec.get("num_res_units", 2)),
                norm=spec.get("norm", "instance"), dropout=float(spec.get("dropout", 0.0)),
                act=spec.get("act", "PRELU"))


def _dynunet(spec, dims, cin, cout):
    from monai.networks.nets import DynUNet

    if "kernel_size" in spec or "strides" in spec:
        if "kernel_size" not in spec or "strides" not in spec:
            raise ConfigError("network spec: dynunet needs both 'kernel_size' and 'strides', or 'patch_size'")
        kernels = [list(k) if isinstance(k, Sequence) else k for k in spec["kernel_size"]]
        strides = [list(s) if isinstance(s, Sequence) else s for s in spec["strides"]]
    else:
        if "patch_size" not in spec:
            raise ConfigError("network spec: dynunet needs 'patch_size' (voxels) and 'spacing' (mm)")
        patch = list(spec["patch_size"])
        spacing = list(spec.get("spacing", [1.0] * dims))
        if len(patch) != dims:
            raise ConfigError(f"network spec: patch_size needs {dims} values for spatial_dims={dims}")
        kernels, strides = dynunet_kernels_strides(patch, spacing, max_levels=int(spec.get("max_levels", 6)))
        factor = [1] * dims
        for s in strides:
            factor = [f * si for f, si in zip(factor, s, strict=False)]
        if any(p % f for p, f in zip(patch, factor, strict=False)):
            raise ConfigError(f"network spec: patch_size {patch} must be divisible by {factor} (the strides)")
    if len(kernels) != len(strides) or len(kernels) < 2:
        raise ConfigError("network spec: dynunet needs equal numbers (>= 2) of kernel sizes and strides")
    default_filters = [min(32 * 2**i, 320) for i in range(len(strides))]
    filters = [int(f) for f in spec.get("filters", default_filters)]
    if len(filters) != len(strides):
        raise ConfigError(f"network spec: dynunet 'filters' needs {len(strides)} values (one per level)")
    deep = bool(spec.get("deep_supervision", False))
    return DynUNet(spatial_dims=dims, in_channels=cin, out_channels=cout, kernel_size=kernels, strides=strides,
                   upsample_kernel_size=strides[1:], filters=filters, norm_name=spec.get("norm", "instance"),
                   dropout=spec.get("dropout"), deep_supervision=deep,
                   deep_supr_num=int(spec.get("deep_supr_num", 1)), res_block=bool(spec.get("res_block", False)))


def _segresnet(spec, dims, cin, cout):
    from monai.networks.nets import SegResNet

    return SegResNet(spatial_dims=dims, in_channels=cin, out_channels=cout,
                     init_filters=int(spec.get("init_filters", 16)),
                     blocks_down=tuple(spec.get("blocks_down", (1, 2, 2, 4))),
                     blocks_up=tuple(spec.get("blocks_up", (1, 1, 1))),
                     dropout_prob=spec.get("dropout_prob"), norm=spec.get("norm", ("GROUP", {"num_groups": 8})))


def _conv(spec, dims, cin, cout):
    import torch

    k = _int(spec, "kernel_size", minimum=1, default=1)
    if k % 2 == 0:
        raise ConfigError(f"network spec: conv kernel_size must be odd, got {k}")
    layer = torch.nn.Conv3d if dims == 3 else torch.nn.Conv2d
    return layer(cin, cout, kernel_size=k, padding=k // 2)


def count_parameters(module, *, trainable_only: bool = False) -> int:
    """Number of parameters (scalars) of a ``torch.nn.Module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
