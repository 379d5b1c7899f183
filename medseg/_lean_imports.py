"""Import MONAI without the optional packages that only its training engines and plots use.

``import monai`` imports every MONAI submodule, and through MONAI's ``optional_import`` it
also imports pytorch-ignite (with ``torch.distributed``'s optimisers and FSDP), ``matplotlib.pyplot``
and ``scipy.signal`` whenever they are installed: about 2.5 s of a 4.8 s import on a 2-core CPU,
none of which an inference run uses (medseg's engine, readers and writers never touch ignite,
pyplot or scipy.signal; overlays draw on matplotlib's Agg canvas, not pyplot).

:func:`import_monai_for_inference` hides those three packages while MONAI is imported, so MONAI
records them as absent (its features that need them raise MONAI's own "optional import" error
when used), then unhides them: later explicit imports in the same process work as usual. The CLI
commands that only run inference (``segment``, ``batch``) call it first; library users are not
affected unless they call it themselves.
"""

from __future__ import annotations

import sys

NOT_NEEDED_FOR_INFERENCE = ("ignite", "matplotlib.pyplot", "scipy.signal")


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
