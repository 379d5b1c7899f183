"""The label registry: every SNOMED CT code exists in pydicom's dictionary with the same meaning."""

from __future__ import annotations

import pytest
from pydicom.sr.codedict import codes

from medseg.errors import ConfigError
from medseg.labels import LABELS, generic_label, get_label, label_colour, lookup_label


def _codes_of(label):
    return [c for c in (label.category_code, label.property_code, label.property_modifier,
                        label.anatomic_region) if c is not None]


@pytest.mark.parametrize("name", sorted(LABELS))
def test_every_code_is_in_pydicoms_dictionary(name):
    label = LABELS[name]
    for code in _codes_of(label):
        ref = getattr(codes.SCT, code.keyword)  # AttributeError if the keyword is unknown
        assert (ref.value, ref.scheme_designator, ref.meaning) == (code.value, code.scheme, code.meaning)
        as_code = code.to_code()
        assert as_code == ref


def test_required_coverage():
    levels = [f"C{i}" for i in range(1, 8)] + [f"T{i}" for i in range(1, 13)] + [f"L{i}" for i in range(1, 6)]
    required = ["liver", "spleen", "kidney_left", "kidney_right", "lung_left", "lung_right",
                "lung_nodule", "lung_mass", "lesion", "brain", "nucleus", "foreground"]
    required += [f"vertebra_{lv}" for lv in levels]
    missing = [n for n in required if n not in LABELS]
    assert not missing
    # each vertebra level has its own concept (no copy-paste of one code)
    vert_codes = {LABELS[f"vertebra_{lv}"].property_code.value for lv in levels}
    assert len(vert_codes) == 24


def test_categories_and_laterality():
    assert get_label("liver").category_code.meaning == "Anatomical Structure"
    assert get_label("lesion").category_code.value == codes.SCT.MorphologicallyAbnormalStructure.value
    assert get_label("nucleus").category_code.value == codes.SCT.Cell.value
    left, right = get_label("kidney_left"), get_label("kidney_right")
    assert left.property_code == right.property_code
    assert left.property_code.value == codes.SCT.Kidney.value
    assert left.property_modifier.value == codes.SCT.Left.value
    assert right.property_modifier.value == codes.SCT.Right.value
    assert get_label("lung_left").property_modifier.value == codes.SCT.Left.value
    assert get_label("liver").property_modifier is None


def test_lookup_is_forgiving_about_case_and_separators():
    assert get_label("Vertebra-l1").name == "vertebra_L1"
    assert get_label("Kidney Left").name == "kidney_left"
    assert lookup_label("no_such_organ") is None


def test_unknown_name_lists_close_matches():
    with pytest.raises(ConfigError, match="kidney_left") as info:
        get_label("kidny_left")
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="unknown label"):
        get_label("zzzzzz")


def test_colours_are_valid_and_distinct_where_it_matters():
    for label in LABELS.values():
        assert len(label.colour_rgb) == 3 and all(0 <= c <= 255 for c in label.colour_rgb)
    for a, b in [("kidney_left", "kidney_right"), ("lung_left", "lung_right"),
                 ("vertebra_L1", "vertebra_L2"), ("vertebra_T12", "vertebra_L1")]:
        assert LABELS[a].colour_rgb != LABELS[b].colour_rgb
    assert label_colour("liver", 7) == LABELS["liver"].colour_rgb
    assert label_colour("my_custom_thing", 1) != label_colour("my_custom_thing", 2)


def test_generic_label_uses_tissue():
    g = generic_label("tumour core")
    assert g.display == "tumour core"
    assert g.property_code.value == codes.SCT.Tissue.value
