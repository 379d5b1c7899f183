"""Import MONAI without the optional packages an inference run does not need from it.

``import monai`` imports every MONAI submodule, and through MONAI's ``optional_import`` also every
optional package that is installed: pytorch-ignite (with ``torch.distributed``'s optimisers and
FSDP), matplotlib, SciPy, scikit-image, ITK, ONNX / ONNX Runtime, requests, pydicom, Pillow and
tifffile. On a 2-core CPU that is about 3 s of a 4.8 s import, none of it used by MONAI in an
inference run: medseg's engine only takes MetaTensor, intensity / orientation transforms and
the networks from MONAI, which need torch, numpy and nibabel.

:func:`import_monai_for_inference` hides those packages while MONAI is imported, so MONAI records
them as absent (its own features that need them raise MONAI's "optional import" error when
used), then unhides them: medseg's readers, writers and postprocessing import pydicom, SciPy,
matplotlib etc. themselves later in the same process, as usual, and only when a run needs them.
The CLI commands that only run inference (``segment``, ``batch``) call it first; library users
are not affected unless they call it themselves.
"""

from __future__ import annotations

import sys

NOT_NEEDED_FOR_INFERENCE = ("ignite", "matplotlib", "scipy", "skimage", "itk", "onnx", "onnxruntime", "requests",
                            "pydicom", "PIL", "tifffile")


def import_monai_for_inference() -> bool:
    """Import MONAI with :data:`NOT_NEEDED_FOR_INFERENCE` hidden; False if MONAI was already imported."""
    if "monai" in sys.modules:
        return False
    hidden = [name for name in NOT_NEEDED_FOR_INFERENCE if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # makes ``import name`` raise ImportError
    try:
        import monai  # noqa: F401
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
    return True
