"""Registry of segmentation labels with SNOMED CT codes (for DICOM SEG) and display colours.

Every code below is taken from pydicom's code dictionary (``pydicom.sr.codedict.codes.SCT``);
``tests/test_labels.py`` checks each value/meaning pair against that dictionary, so no code is
invented here. The module imports nothing heavy: codes are plain triples, converted to
:class:`pydicom.sr.coding.Code` only on demand (:meth:`SctCode.to_code`).

Conventions: ``property_modifier`` is the laterality (SNOMED "Left"/"Right") that DICOM SEG puts
in SegmentedPropertyTypeModifierCodeSequence; ``colour_rgb`` is 0-255 sRGB.

Usage::

    from medseg.labels import get_label
    get_label("kidney_left").property_code.meaning   # "Kidney"
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from medseg.errors import ConfigError

__all__ = ["LABELS", "LabelDef", "SctCode", "generic_label", "get_label", "lookup_label",
           "label_colour"]


@dataclass(frozen=True)
class SctCode:
    """A SNOMED CT coded concept: ``value`` (concept id), ``meaning`` and the keyword under which
    pydicom's dictionary lists it (``codes.SCT.<keyword>``)."""

    value: str
    meaning: str
    keyword: str
    scheme: str = "SCT"

    def to_code(self) -> Any:
        """This concept as a :class:`pydicom.sr.coding.Code` (accepted by highdicom)."""
        from pydicom.sr.coding import Code

        return Code(value=self.value, scheme_designator=self.scheme, meaning=self.meaning)


@dataclass(frozen=True)
class LabelDef:
    """One segmentation label.

    name: registry key (``"liver"``, ``"vertebra_L1"``); display: human-readable segment label;
    category_code / property_code: SNOMED CT Segmented Property Category / Type;
    property_modifier: laterality (Left/Right) or None; colour_rgb: display colour, 0-255;
    anatomic_region: where a finding lies (e.g. Lung for a lung nodule), or None.
    """

    name: str
    display: str
    category_code: SctCode
    property_code: SctCode
    property_modifier: SctCode | None = None
    colour_rgb: tuple[int, int, int] = (255, 255, 0)
    anatomic_region: SctCode | None = None


# --- SNOMED CT concepts (value, meaning, pydicom keyword), all present in pydicom 3.0 ---------
_ANATOMICAL = SctCode("91723000", "Anatomical Structure", "AnatomicalStructure")
_MORPH = SctCode("49755003", "Morphologically Abnormal Structure", "MorphologicallyAbnormalStructure")
_CELL_CAT = SctCode("4421005", "Cell", "Cell")
_TISSUE = SctCode("85756007", "Tissue", "Tissue")
_LEFT = SctCode("7771000", "Left", "Left")
_RIGHT = SctCode("24028007", "Right", "Right")

_LIVER = SctCode("10200004", "Liver", "Liver")
_SPLEEN = SctCode("78961009", "Spleen", "Spleen")
_KIDNEY = SctCode("64033007", "Kidney", "Kidney")
_LUNG = SctCode("39607008", "Lung", "Lung")
_BRAIN = SctCode("12738006", "Brain", "Brain")
_NODULE = SctCode("27925004", "Nodule", "Nodule")
_MASS = SctCode("4147007", "Mass", "Mass")
_LESION = SctCode("52988006", "Lesion", "Lesion")
_NUCLEUS = SctCode("84640000", "Nucleus", "Nucleus")

_VERTEBRA_CODES: dict[str, str] = {
    "C1": "14806007", "C2": "39976000", "C3": "113205007", "C4": "5329002", "C5": "36978003",
    "C6": "36054005", "C7": "87391001",
    "T1": "64864005", "T2": "53733008", "T3": "1626008", "T4": "73071006", "T5": "56401006",
    "T6": "45296009", "T7": "62487009", "T8": "11068009", "T9": "82687006", "T10": "7610001",
    "T11": "12989004", "T12": "23215003",
    "L1": "66794005", "L2": "14293000", "L3": "36470004", "L4": "11994002", "L5": "49668003",
}


def _vertebra_colour(level: str) -> tuple[int, int, int]:
    """Distinct but bone-like colours: cervical bluish, thoracic greenish, lumbar orange; neighbours
    alternate in brightness so adjacent levels stay distinguishable in an overlay."""
    region, num = level[0], int(level[1:])
    base = {"C": (110, 160, 230), "T": (120, 200, 120), "L": (240, 170, 90)}[region]
    shift = 45 if num % 2 else -25
    return tuple(int(min(255, max(0, c + shift))) for c in base)  # type: ignore[return-value]


def _build() -> dict[str, LabelDef]:
    defs = [
        LabelDef("liver", "Liver", _ANATOMICAL, _LIVER, None, (221, 130, 101)),
        LabelDef("spleen", "Spleen", _ANATOMICAL, _SPLEEN, None, (157, 108, 162)),
        LabelDef("kidney_left", "Left kidney", _ANATOMICAL, _KIDNEY, _LEFT, (185, 102, 83)),
        LabelDef("kidney_right", "Right kidney", _ANATOMICAL, _KIDNEY, _RIGHT, (230, 158, 70)),
        LabelDef("lung_left", "Left lung", _ANATOMICAL, _LUNG, _LEFT, (80, 170, 220)),
        LabelDef("lung_right", "Right lung", _ANATOMICAL, _LUNG, _RIGHT, (110, 210, 160)),
        LabelDef("lung_nodule", "Lung nodule", _MORPH, _NODULE, None, (255, 60, 60),
                 anatomic_region=_LUNG),
        LabelDef("lung_mass", "Lung mass", _MORPH, _MASS, None, (255, 0, 160), anatomic_region=_LUNG),
        LabelDef("lesion", "Lesion", _MORPH, _LESION, None, (255, 40, 40)),
        LabelDef("brain", "Brain", _ANATOMICAL, _BRAIN, None, (250, 230, 150)),
        LabelDef("nucleus", "Cell nucleus", _CELL_CAT, _NUCLEUS, None, (60, 220, 255)),
        LabelDef("foreground", "Foreground", _TISSUE, _TISSUE, None, (255, 220, 0)),
    ]
    for level, value in _VERTEBRA_CODES.items():
        code = SctCode(value, f"{level} vertebra", f"{level}Vertebra")
        defs.append(LabelDef(f"vertebra_{level}", f"Vertebra {level}", _ANATOMICAL, code, None,
                             _vertebra_colour(level)))
    return {d.name: d for d in defs}


#: All registered labels by name.
LABELS: dict[str, LabelDef] = _build()

_BY_KEY = {name.lower(): d for name, d in LABELS.items()}


def _key(name: str) -> str:
    return "_".join(str(name).strip().lower().replace("-", " ").split())


def lookup_label(name: str) -> LabelDef | None:
    """The registered label for ``name`` (case-insensitive, spaces/hyphens = underscores), or None."""
    return _BY_KEY.get(_key(name))


def get_label(name: str) -> LabelDef:
    """The registered label for ``name``; :class:`ConfigError` naming close matches if unknown."""
    found = lookup_label(name)
    if found is None:
        close = difflib.get_close_matches(_key(name), list(_BY_KEY), n=4, cutoff=0.5)
        hint = f"; did you mean {', '.join(LABELS[_BY_KEY[c].name].name for c in close)}?" if close else ""
        raise ConfigError(f"unknown label name {name!r}{hint} (see medseg.labels.LABELS for the list)")
    return found


def generic_label(name: str, colour_rgb: tuple[int, int, int] | None = None) -> LabelDef:
    """A label for a name outside the registry: category and type SNOMED "Tissue" (the usual
    generic choice of DICOM SEG writers), segment label ``name``."""
    return LabelDef(str(name), str(name), _TISSUE, _TISSUE, None, colour_rgb or label_colour(name, 1))


# A qualitative palette (0-255 RGB) for labels without a registered colour.
_PALETTE = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180),
]


def label_colour(name: str | None, index: int) -> tuple[int, int, int]:
    """Display colour (0-255 RGB) for label ``index``: the registry colour when ``name`` is
    registered, otherwise a fixed palette entry chosen by ``index``."""
    if name is not None:
        found = lookup_label(name)
        if found is not None:
            return found.colour_rgb
    return _PALETTE[(int(index) - 1) % len(_PALETTE)]
