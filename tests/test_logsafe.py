"""No patient identifier reaches stderr through a library's warning or log line: a patient name stored
under numeric VRs (IS, DS) and in a UID makes pydicom warn with the value; the CLI shows the warning
with the value replaced. Run in fresh processes, the way a user meets it."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from medseg import logsafe

CANARY = "CANARY^PHI^XQZ"


def test_scrub_removes_every_quoted_part():
    assert logsafe.scrub("Invalid value for VR IS: 'DOE^JOHN'. See <https://x>") == \
        "Invalid value for VR IS: <value>. See <value>"
    assert logsafe.scrub('bad "DOE^JOHN" and b\'\\x00DOE\'') == "bad <value> and <value>"
    assert logsafe.scrub("value 'DOE^JO") == "value <value>"  # an unclosed quote swallows the rest
    assert logsafe.scrub("a\nb   c") == "a b c"
    assert len(logsafe.scrub("x" * 1000)) == 240


def test_library_warning_is_scrubbed_and_medseg_warning_kept(capsys):
    logsafe.install()
    logsafe._seen.clear()
    # a warning raised from a library file (its filename is outside medseg)
    warnings.warn_explicit(f"Invalid value for VR DS: '{CANARY}'", UserWarning, "/x/pydicom/valuerep.py", 1)
    warnings.warn_explicit("slice gap of 3 mm", UserWarning, logsafe.__file__, 1)
    logging.getLogger("pydicom").warning("Invalid value %r for tag", CANARY)
    err = capsys.readouterr().err
    assert CANARY not in err and "CANARY" not in err
    assert "medseg: warning: pydicom: Invalid value for VR DS: <value>" in err
    assert "medseg: warning: slice gap of 3 mm" in err


@pytest.fixture(scope="module")
def phi_series(tmp_path_factory):
    """A CT series whose patient name also sits in InstanceNumber (IS), SliceThickness (DS) and a
    private-looking UID field, as a broken anonymiser or a misconfigured modality leaves it."""
    import pydicom
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    from medseg.data.dicom_writer import write_dicom_series

    root = tmp_path_factory.mktemp("phi")
    vol = np.zeros((8, 8, 4))
    vol[2:6, 2:6, 1:3] = 500.0
    paths = write_dicom_series(vol, np.diag([1.0, 1.0, 2.0, 1.0]), root / "s", patient_name=CANARY,
                               patient_id="PHIXQZ123")
    raw = CANARY.encode()
    for p in paths:
        ds = pydicom.dcmread(p)
        for tag, vr in ((0x00200013, "IS"), (0x00180050, "DS"), (0x00200052, "UI")):
            value = raw + b" " * (len(raw) % 2)
            ds._dict[Tag(tag)] = RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)
        ds.save_as(p)
    return root / "s"


@pytest.mark.parametrize("command", ["info", "info-json", "convert"])
def test_cli_never_prints_the_patient_name(phi_series, tmp_path, command):
    argv = {"info": ["info", str(phi_series)], "info-json": ["info", str(phi_series), "--json"],
            "convert": ["convert", str(phi_series), str(tmp_path / "out.nii.gz")]}[command]
    env = dict(os.environ, PYTHONWARNINGS="default")
    proc = subprocess.run([sys.executable, "-m", "medseg", *argv], capture_output=True, text=True, env=env,
                          timeout=300)
    text = proc.stdout + proc.stderr
    assert "CANARY" not in text and "PHIXQZ123" not in text, text[-2000:]
    assert "Traceback" not in proc.stderr
    assert proc.returncode in (0, 2), proc.stderr[-2000:]
    if proc.returncode == 2:
        assert proc.stderr.strip().splitlines()[-1].startswith("medseg: error:")
