"""MONAI bundles: build from a training run, verify, load under a trust policy, list, export.

Public API (lazy: importing :mod:`medseg.bundle` loads nothing heavy)::

    build_bundle(run_dir, out_dir, *, name, version="0.1.0", ...) -> Path
    verify_bundle(path, *, trust=False) -> VerifyReport
    load_bundle(path_or_name, *, trust=False) -> medseg.inference.SegmentationModel
    list_bundles() -> list[BundleInfo]
    export_bundle(path_or_name, fmt="torchscript"|"onnx", out=None, *, trust=False) -> Path
    run_inference_config(bundle_dir, dataset_dir, output_dir, *, trust=False) -> list[Path]

The trust policy (what a bundle config may contain without ``trust=True``) is documented in
:mod:`medseg.bundle.trust`.
"""

from __future__ import annotations

from medseg._lazy import lazy_getattr

_LAZY = {
    "build_bundle": "medseg.bundle.build",
    "run_inference_config": "medseg.bundle.run_config",
    "verify_bundle": "medseg.bundle.verify",
    "VerifyReport": "medseg.bundle.verify",
    "load_bundle": "medseg.bundle.load",
    "resolve_bundle": "medseg.bundle.load",
    "list_bundles": "medseg.bundle.load",
    "bundle_info": "medseg.bundle.load",
    "BundleInfo": "medseg.bundle.load",
    "export_bundle": "medseg.bundle.export",
    "ensure_trusted": "medseg.bundle.trust",
    "find_untrusted": "medseg.bundle.trust",
    "check_metadata": "medseg.bundle.spec",
}

__all__ = sorted(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY)
