"""Export a bundle's network to TorchScript or ONNX (checked against PyTorch on a random input)."""

from __future__ import annotations

import os
from pathlib import Path

from medseg.errors import BundleError, ConfigError
from medseg.io.atomic import atomic_path

FORMATS = ("torchscript", "onnx")


def export_bundle(path_or_name: str | os.PathLike[str], fmt: str = "torchscript", out: str | os.PathLike[str] | None = None,
                  *, trust: bool = False, atol: float = 1e-4) -> Path:
    """Write the bundle's network as TorchScript (``.ts``) or ONNX (``.onnx``) to ``out``.

    Default ``out``: ``<bundle name>.ts`` / ``<bundle name>.onnx`` in the current folder (the
    bundle itself is never modified: its files are covered by its checksums). The network is
    built under the trust policy with checksum-verified weights, exported with
    ``torch.jit.script`` or ``torch.onnx.export`` (opset 17, dynamic batch and spatial axes), and
    the export is run once (TorchScript via ``torch.jit.load``, ONNX via onnxruntime) on a random
    input of the bundle's ROI size: outputs must match PyTorch within ``atol`` or BundleError.
    """
    import numpy as np
    import torch

    from medseg.bundle.load import load_bundle, resolve_bundle

    if fmt not in FORMATS:
        raise ConfigError(f"export format {fmt!r} is not one of {', '.join(FORMATS)}")
    bundle = resolve_bundle(path_or_name)
    model = load_bundle(bundle, trust=trust)
    net = model.network.cpu().eval()
    out = Path(out) if out is not None else Path.cwd() / f"{bundle.name}.{'ts' if fmt == 'torchscript' else 'onnx'}"
    n_in = int(model.network_spec.get("in_channels", 1))
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((1, n_in, *model.roi_size), generator=gen)
    with torch.no_grad():
        ref = net(x)
    ref = (ref[0] if isinstance(ref, (list, tuple)) else ref).numpy()
    with atomic_path(out) as tmp:
        if fmt == "torchscript":
            try:
                ts = torch.jit.script(net)
            except Exception:  # noqa: BLE001 - scripting fails in many ways; tracing is the fallback
                with torch.no_grad():
                    ts = torch.jit.trace(net, x)
            torch.jit.save(ts, str(tmp))
            with torch.no_grad():
                got = torch.jit.load(str(tmp), map_location="cpu")(x)
            got = (got[0] if isinstance(got, (list, tuple)) else got).numpy()
        else:
            import onnxruntime as ort

            axes = {0: "batch", **{i + 2: f"d{i}" for i in range(len(model.roi_size))}}
            try:
                torch.onnx.export(net, (x,), str(tmp), input_names=["image"], output_names=["pred"],
                                  dynamic_axes={"image": axes, "pred": axes}, opset_version=17, dynamo=False)
            except (RuntimeError, TypeError, ValueError) as exc:
                raise BundleError(f"ONNX export of bundle {bundle.name} failed: "
                                  f"{(str(exc).splitlines() or ['?'])[0][:160]}") from exc
            sess = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
            got = sess.run(None, {"image": x.numpy()})[0]
        diff = float(np.max(np.abs(got - ref))) if got.shape == ref.shape else float("inf")
        if not diff <= atol:
            raise BundleError(f"{fmt} export of bundle {bundle.name} differs from PyTorch by {diff:.3g} "
                              f"(> {atol}); not written")
    return out
