"""Display windows for overlay pictures: which intensity range is shown from black to white.

CT has calibrated units (HU), so the picture uses the clinical window of the anatomy the model
segments (Hounsfield windows as in radiology teaching: width W, level L -> L - W/2 .. L + W/2);
other modalities (MR, microscopy, X-ray) have no fixed units and keep the 1st-99th percentile
range of the image (:func:`medseg.io.overlay.overlay_slices` default).

The task is told by the model's preset (``ct_abdomen``, ``ct_lung``, ``ct_spine``) or, for
models without one (nnU-Net folders, several models), by the label names.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["CT_WINDOWS", "display_window"]

#: (low, high) HU: name -> window. abdomen: W400 L40 (soft tissue); lung: W1500 L-600;
#: bone: W1800 L400; brain: W80 L40.
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "abdomen": (-160.0, 240.0),
    "lung": (-1350.0, 150.0),
    "bone": (-500.0, 1300.0),
    "brain": (0.0, 80.0),
}

_BY_PRESET = {"ct_abdomen": "abdomen", "ct_lung": "lung", "ct_spine": "bone"}
# label-name words -> window, first match wins (lung before the abdominal organs: a lung nodule)
_BY_WORD = (("lung", "lung"), ("nodule", "lung"), ("airway", "lung"), ("vertebra", "bone"), ("rib", "bone"),
            ("bone", "bone"), ("skull", "bone"), ("femur", "bone"), ("brain", "brain"))


def display_window(modality: str | None, *, preset: str | None = None,
                   label_names: Iterable[str] = ()) -> tuple[float, float] | None:
    """The (low, high) display range for an overlay, or None for the percentile default.

    CT (``modality == "CT"``, or a ``ct_*`` preset when the input format carries no modality):
    the window of the preset's task, else of the first label name that tells one, else the
    abdominal soft-tissue window (W400 L40). Anything else: None.
    """
    mod = str(modality or "").upper()
    is_ct = mod == "CT" or (mod in ("", "UNKNOWN") and str(preset or "").startswith("ct_"))
    if not is_ct:
        return None
    if preset in _BY_PRESET:
        return CT_WINDOWS[_BY_PRESET[preset]]
    names = [str(n).lower() for n in label_names]
    for word, window in _BY_WORD:
        if any(word in n for n in names):
            return CT_WINDOWS[window]
    return CT_WINDOWS["abdomen"]
