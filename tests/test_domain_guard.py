"""The out-of-domain guard on real scans: TotalSegmentator's real abdominal MR through the brain-mask
bundle (it paints about 3 L of "brain") is flagged on its field of view and on the result's volume,
and refused with --strict; a real brain T1 (pyradiomics brain2) is not flagged; the abdominal MR
through a CT bundle is flagged on its intensities (no air below -300 HU)."""

from __future__ import annotations

import json

import pytest

from medseg import cli
from medseg.errors import ConfigError
from medseg.inference.domain import validate_domain

pytestmark = pytest.mark.network  # real scans come from PyPI archives through medseg.data


def _segment(argv, capsys):
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.err


def test_abdominal_mr_through_the_brain_bundle_is_flagged_then_refused(tmp_path, capsys):
    from medseg.data import sample

    mr = sample("ts_mr_sm")
    code, err = _segment(["segment", str(mr), "--model", "mri_brain_mask", "--output", str(tmp_path / "o"),
                          "--format", "nifti"], capsys)
    assert code == 0, err
    warnings = [ln for ln in err.splitlines() if "outside the model's domain" in ln]
    assert any("left-right, the head model expects 120-280 mm" in w for w in warnings), err
    assert any(w.startswith("medseg: warning: outside the model's domain: brain volume") for w in warnings), err
    (case,) = list((tmp_path / "o").iterdir())
    flags = json.loads((case / "provenance.json").read_text())["domain_flags"]
    assert len(flags) == len(warnings) >= 2
    brain = next(f for f in flags if f.startswith("brain volume"))
    assert float(brain.split()[2]) > 2200  # mL: the ~3 L the issue measured

    code, err = _segment(["segment", str(mr), "--model", "mri_brain_mask", "--output", str(tmp_path / "s"),
                          "--strict"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("medseg: error: outside the domain"), err
    assert "(--strict)" in lines[0]
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())


def test_real_brain_t1_is_in_the_brain_domain(tmp_path, capsys):
    from medseg.data import sample

    code, err = _segment(["segment", str(sample("brain2_image")), "--model", "mri_brain_mask", "--output",
                          str(tmp_path / "o"), "--format", "nifti", "--strict"], capsys)
    assert code == 0, err
    (case,) = list((tmp_path / "o").iterdir())
    assert json.loads((case / "provenance.json").read_text())["domain_flags"] == []


def test_mr_through_a_ct_bundle_is_flagged_on_intensity(tmp_path, capsys):
    from medseg.data import sample

    code, err = _segment(["segment", str(sample("ts_mr_sm")), "--model", "ct_abdomen_organs", "--output",
                          str(tmp_path / "o"), "--format", "nifti", "--strict"], capsys)
    assert code == 2
    assert "the input's 1st intensity percentile is -2, the abdomen model expects -3100 to -300" in err, err


def test_real_ct_is_in_the_abdomen_domain(tmp_path, capsys):
    from medseg.data import sample

    code, err = _segment(["segment", str(sample("ts_ct")), "--model", "ct_abdomen_organs", "--output",
                          str(tmp_path / "o"), "--format", "nifti"], capsys)
    assert code == 0 and "outside the model's domain" not in err, err


def test_domain_declarations_are_validated():
    assert validate_domain(None) == {}
    with pytest.raises(ConfigError, match="unknown key"):
        validate_domain({"organ": "brain"})
    with pytest.raises(ConfigError, match="fov_mm"):
        validate_domain({"fov_mm": {"min": [1, 2]}})
    with pytest.raises(ConfigError, match="volume_ml"):
        validate_domain({"volume_ml": {"brain": [1]}})


def test_report_shows_the_domain_flags(tmp_path, capsys):
    from medseg.data import sample

    out = tmp_path / "o"
    assert cli.main(["segment", str(sample("ts_mr_sm")), "--model", "mri_brain_mask", "--output", str(out),
                     "--format", "nifti"]) == 0
    assert cli.main(["report", str(out)]) == 0
    capsys.readouterr()
    html = (out / "report.html").read_text()
    assert "outside the model&#x27;s domain: brain volume" in html or "outside the model's domain: brain volume" in html
