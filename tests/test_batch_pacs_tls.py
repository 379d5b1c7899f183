"""DICOMweb over HTTPS with a hospital CA and bearer tokens, against a real Orthanc behind a TLS
gateway on loopback (a throw-away CA made with OpenSSL; Debian's Orthanc 1.10.1 itself crashes at
the TLS handshake). Credentials never come from the command line."""

from __future__ import annotations

import json
import secrets
import shutil

import pydicom
import pytest

from medseg import cli
from medseg.batch.local_gateway import LocalGateway
from medseg.batch.local_orthanc import LocalOrthanc, make_test_ca, orthanc_available
from medseg.commands.batch import add_arguments

pytestmark = [
    pytest.mark.orthanc,
    pytest.mark.skipif(not orthanc_available(), reason="Debian's orthanc/orthanc-dicomweb not installed"),
    pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command is not installed"),
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from test_batch_job import make_band_run

    return make_band_run(tmp_path_factory.mktemp("run"), (48, 48, 16))


def _clear_credentials(monkeypatch, tmp_path):
    for name in ("MEDSEG_PACS_USER", "MEDSEG_PACS_PASSWORD", "MEDSEG_PACS_TOKEN", "MEDSEG_PACS_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


def test_https_with_ca_bundle_and_bearer_token_stores_each_seg_once(run_dir, tmp_path, monkeypatch, capsys):
    from test_batch_job import _write_series

    pem, ca = make_test_ca(tmp_path / "ca")
    token = secrets.token_urlsafe(24)
    _clear_credentials(monkeypatch, tmp_path)
    import certifi

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())  # as on many hospital machines: must not win
    with LocalOrthanc() as pacs, LocalGateway(pacs, tls=pem, token=token) as gw:
        for seed in (11, 12):
            pacs.upload(_write_series(tmp_path / f"s{seed}", seed=seed))
        out = tmp_path / "out"
        base = ["batch", gw.dicomweb_url, "--bundle", str(run_dir), "--output", str(out), "--store-back",
                "--retries", "0"]

        assert cli.main(base) == 2  # the gateway's certificate is signed by a CA the system does not know
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "TLS failure" in err and "--ca-bundle" in err, err

        assert cli.main([*base, "--ca-bundle", str(ca)]) == 2  # TLS fine, no token: the gateway says 401
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "HTTP 401" in err and "bearer token" in err, err

        token_file = tmp_path / "token"
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
        assert cli.main([*base, "--ca-bundle", str(ca), "--token-file", str(token_file)]) == 0
        text = capsys.readouterr()
        assert "DICOM SEG store-back: 2 stored, 0 already on the PACS, 0 not sent" in text.out
        assert len(pacs.instances_of_modality("SEG")) == 2
        assert all(m in ("GET", "POST") for m, _ in gw.requests)  # everything went through the gateway

        monkeypatch.setenv("MEDSEG_PACS_TOKEN", token)  # the same job again, token from the environment
        assert cli.main([*base, "--ca-bundle", str(ca), "--no-resume"]) == 0
        again = capsys.readouterr()
        assert "0 stored, 2 already on the PACS" in again.out
        assert len(pacs.instances_of_modality("SEG")) == 2
        for text_out in (text.out + text.err, again.out + again.err, (out / "manifest.jsonl").read_text()):
            assert token not in text_out
        for record in (json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()):
            seg = pydicom.dcmread(out / record["case"] / "seg.dcm", stop_before_pixels=True)
            assert record["extra"]["seg_series_instance_uid"] == seg.SeriesInstanceUID


def test_credentials_never_on_the_command_line(tmp_path, monkeypatch, capsys):
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    flags = {s for a in parser._actions for s in a.option_strings}
    assert not {f for f in flags if re_secret(f) and not f.endswith("-file")}, flags  # only files

    _clear_credentials(monkeypatch, tmp_path)
    assert cli.main(["batch", "https://medseg:hunter2@127.0.0.1:9/dicom-web", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "carries credentials" in err and "hunter2" not in err

    token_file = tmp_path / "token"
    token_file.write_text("abc\n")
    monkeypatch.setenv("MEDSEG_PACS_USER", "u")
    monkeypatch.setenv("MEDSEG_PACS_PASSWORD", "p")
    assert cli.main(["batch", "http://127.0.0.1:9/dicom-web", "--dry-run", "--token-file", str(token_file)]) == 2
    assert "keep one" in capsys.readouterr().err


def re_secret(flag: str) -> bool:
    return any(w in flag for w in ("password", "token", "secret", "user", "auth"))
