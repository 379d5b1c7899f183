"""`medseg view` server: token on every request, no traversal, loopback only, volumes on the source
grid (read back with nibabel), legend volumes (counted independently), prompt and save (read back
with medseg's reader), and the CLI printing its URL."""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import socket
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pytest
from viewer_fixture import PROMPT_METHOD, dice, phantom_case, post_json, request, running_server, world_box_of

from medseg.viewer.session import ViewerSession


@pytest.fixture(scope="module")
def case():
    return phantom_case()


@pytest.fixture(scope="module")
def server(case, tmp_path_factory):
    out = tmp_path_factory.mktemp("viewer-out")
    session = ViewerSession(case.image, labels=case.label, label_names=case.names, reference=case.label,
                            output_dir=out, prompt_method=PROMPT_METHOD)
    with running_server(session) as srv:
        yield srv


def _base(server) -> str:
    return f"http://127.0.0.1:{server.port}"


@pytest.mark.parametrize("path", ["/", "/api/info", "/static/viewer.js", "/volume/image", "/volume/labels",
                                  "/nothing-here"])
def test_every_request_needs_the_token(server, path):
    status, body, _ = request(_base(server) + path)
    assert status == 403 and body == b""
    status, _, _ = request(_base(server) + path + "?token=" + "x" * len(server.token))
    assert status == 403
    status, _, _ = request(_base(server) + path, headers={"X-Medseg-Token": server.token[:-1]})
    assert status == 403
    status, _, _ = request(_base(server) + path + "?token=" + server.token)
    assert status == (404 if path == "/nothing-here" else 200)


def test_post_needs_the_token(server):
    status, _, _ = post_json(_base(server) + "/api/save", {}, token=None)
    assert status == 403


def test_page_carries_the_token_and_strict_headers(server):
    status, body, headers = request(_base(server) + "/?token=" + server.token)
    assert status == 200
    assert b"{{TOKEN}}" not in body and server.token.encode() in body
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("target", [
    "/static/../session.py", "/static/%2e%2e/session.py", "/static/vendor/../../server.py",
    "/static//etc/passwd", "/static/%2Fetc%2Fpasswd", "/volume/..%2f..%2fetc%2fpasswd",
    "/api/info?file=../../etc/passwd", "/api/info?file=/etc/passwd", "/api/info?file=..%5C..%5Cwin.ini",
    "/api/info?file=C:%5Cwindows", "/volume/image?x=%2Froot",
])
def test_traversal_in_path_or_query_refused(server, target):
    sep = "&" if "?" in target else "?"
    status, body, _ = request(_base(server) + target + sep + "token=" + server.token)
    assert status == 400, (target, status)
    assert b"root:" not in body and b"import" not in body


@pytest.mark.parametrize("name", ["../evil.nii.gz", "/tmp/evil.nii.gz", "sub/evil.nii.gz", "..\\evil.nii.gz",
                                  "evil.txt", ".hidden.nii.gz"])
def test_save_name_outside_the_output_folder_refused(server, name, tmp_path):
    status, _, _ = post_json(_base(server) + "/api/save", {"name": name}, server.token)
    assert status in (400, 422)
    out = server.session.output_dir
    assert not (out.parent / "evil.nii.gz").exists() and not os.path.exists("/tmp/evil.nii.gz")
    assert not any(p.name.startswith("evil") for p in out.rglob("*"))


def test_prompt_body_with_a_path_refused(server):
    status, _, _ = post_json(_base(server) + "/api/prompt", {"box": [0, 0, 0, 1, 1, 1], "x": "../../etc"},
                             server.token)
    assert status == 400


def _non_loopback_addresses() -> list[str]:
    found = set()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # no packet is sent for UDP connect
            found.add(s.getsockname()[0])
        except OSError:
            pass
    try:
        found.update(socket.gethostbyname_ex(socket.gethostname())[2])
    except OSError:
        pass
    return sorted(a for a in found if not a.startswith("127."))


def test_bound_to_loopback_only(server):
    assert server.server_address[0] == "127.0.0.1"
    assert server.socket.getsockname()[0] == "127.0.0.1"
    others = _non_loopback_addresses()
    if not others:
        pytest.skip("this machine has no non-loopback IPv4 address to try")
    for addr in others:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(3)
            assert s.connect_ex((addr, server.port)) != 0, f"reachable on {addr}"


def test_foreign_host_header_refused(server):
    # a DNS-rebinding page would send its own host name
    status, _, _ = request(_base(server) + "/api/info?token=" + server.token, headers={"Host": "evil.example:80"})
    assert status == 403


def _nifti(body: bytes):
    return nib.Nifti1Image.from_bytes(gzip.decompress(body))


def _delta(body: bytes, headers: dict, session) -> np.ndarray:
    """The changed box the server sent: its affine must be the grid's moved to the box's first voxel
    and its voxels the label map's there. Returns the server's whole label map."""
    summary = json.loads(headers["X-Medseg-Prompt"])
    mask = session.edits.array
    if summary["roi"] is None:
        assert body == b""
        return mask.reshape(session.shape)
    lo, hi = (np.array(v) for v in summary["roi"])
    crop = _nifti(body)
    assert crop.shape == tuple(hi - lo + 1)
    want = session.grid.affine.copy()
    want[:3, 3] = want[:3, :3] @ lo + want[:3, 3]
    np.testing.assert_allclose(crop.affine, want, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(crop.dataobj), mask[tuple(slice(a, b + 1) for a, b in zip(lo, hi, strict=True))])
    return mask.reshape(session.shape)


def test_volumes_are_on_the_source_grid(server, case):
    status, body, headers = request(_base(server) + "/volume/image?token=" + server.token)
    assert status == 200 and headers["Content-Type"] == "application/gzip"
    img = _nifti(body)
    np.testing.assert_allclose(img.affine, case.affine, atol=1e-5)
    assert int(img.header["sform_code"]) == 1
    src = case.image.numpy()[0]
    np.testing.assert_array_equal(np.asarray(img.dataobj), np.rint(src))  # CT in HU goes as int16
    assert img.get_data_dtype() == np.int16
    status, body, _ = request(_base(server) + "/volume/labels?token=" + server.token)
    lab = _nifti(body)
    np.testing.assert_allclose(lab.affine, case.affine, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(lab.dataobj), case.label)
    # the world position of the marker voxel read through nibabel's affine is the marker's
    from viewer_fixture import MARKER_HU, MARKER_RAS_MM

    vox = np.rint(np.linalg.solve(img.affine[:3, :3], np.asarray(MARKER_RAS_MM) - img.affine[:3, 3])).astype(int)
    assert np.asarray(img.dataobj)[tuple(vox)] == MARKER_HU


def test_info_legend_volumes_and_presets(server, case):
    status, body, _ = request(_base(server) + "/api/info?token=" + server.token)
    info = json.loads(body)
    assert info["modality"] == "CT" and info["orientation"] == "LPS" and info["shape"] == [96, 96, 64]
    assert info["presets"]["soft tissue"] == [-160.0, 240.0] and info["presets"]["lung"] == [-1350.0, 150.0]
    voxel_ml = 1.5 * 1.5 * 2.5 / 1000.0
    legend = {e["name"]: e for e in info["labels"]}
    assert set(legend) == set(case.names.values())
    for value, name in case.names.items():
        assert legend[name]["volume_ml"] == pytest.approx(np.count_nonzero(case.label == value) * voxel_ml, rel=1e-9)
    assert [e["volume_ml"] for e in info["reference"]] == [e["volume_ml"] for e in info["labels"]]
    text = json.dumps(info)
    assert "/" not in text.replace("mL", "")  # no path of any kind reaches the page


def test_prompt_then_save_reads_back_on_the_source_grid(server, case):
    from medseg.io import load
    from medseg.prompt import segment

    liver = case.label == 1
    box = world_box_of(liver, case.affine)
    status, body, headers = post_json(_base(server) + "/api/prompt", {"box": box}, server.token)
    assert status == 200, body
    summary = json.loads(headers["X-Medseg-Prompt"])
    mask = _delta(body, headers, server.session).copy()
    assert summary["voxels"] == int(mask.sum())
    direct = segment(case.image, box=box, method=PROMPT_METHOD).numpy()[0]
    np.testing.assert_array_equal(mask, direct)  # the server adds nothing of its own
    assert dice(mask, liver) > 0.8
    status, body, _ = post_json(_base(server) + "/api/save", {"name": "liver.nii.gz"}, server.token)
    assert status == 200 and json.loads(body) == {"saved": "liver.nii.gz"}
    back = load(server.session.output_dir / "liver.nii.gz", kind="label")
    np.testing.assert_allclose(back.affine.numpy(), case.affine, atol=1e-5)
    np.testing.assert_array_equal(back.numpy()[0], mask)
    assert (server.session.output_dir / "liver.prompt.json").is_file()


def test_prompt_errors_are_one_line(server):
    status, body, _ = post_json(_base(server) + "/api/prompt", {"box": [1e6, 1e6, 1e6, 2e6, 2e6, 2e6]}, server.token)
    assert status == 422 and b"outside" in body and b"\n" not in body
    status, _, _ = post_json(_base(server) + "/api/prompt", {}, server.token)
    assert status == 422


def test_cli_prints_the_url_and_serves(tmp_path, case):
    from medseg.io import save
    from medseg.viewer.server import vendor_missing

    if vendor_missing():
        pytest.skip("NiiVue is not vendored (run `make viewer-vendor`)")
    src = tmp_path / "ct.nii.gz"
    save(case.image, src)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "medseg", "view", str(src), "--no-browser", "--output",
                             str(tmp_path / "out")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, env=env)
    try:
        line = proc.stdout.readline()
        m = re.match(r"medseg view: (http://127\.0\.0\.1:(\d+)/\?token=([A-Za-z0-9_-]{40,}))$", line.strip())
        assert m, line
        port, token = int(m.group(2)), m.group(3)
        deadline = time.time() + 30
        while True:
            status, body, _ = request(f"http://127.0.0.1:{port}/api/info?token={token}")
            if status == 200 or time.time() > deadline:
                break
            time.sleep(0.2)
        assert status == 200 and json.loads(body)["shape"] == [96, 96, 64]
        assert request(f"http://127.0.0.1:{port}/api/info")[0] == 403
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_cli_refuses_labels_on_another_grid(tmp_path, case):
    from medseg.cli import main
    from medseg.io import save
    from medseg.viewer.server import vendor_missing

    if vendor_missing():
        pytest.skip("NiiVue is not vendored (run `make viewer-vendor`)")

    src, other = tmp_path / "ct.nii.gz", tmp_path / "lab.nii.gz"
    save(case.image, src)
    save(case.image[:, :50], other)
    err = io.StringIO()
    from contextlib import redirect_stderr

    with redirect_stderr(err):
        code = main(["view", str(src), "--labels", str(other), "--no-browser", "--output", str(tmp_path / "o")])
    assert code == 2
    assert "grid" in err.getvalue() and "\n" == err.getvalue()[-1] and err.getvalue().count("\n") == 1


def test_refine_clear_and_undo(server, case):
    liver = case.label == 1
    status, body, headers = post_json(_base(server) + "/api/prompt", {"box": world_box_of(liver, case.affine)},
                                      server.token)
    first = _delta(body, headers, server.session).copy()
    status, body, headers = post_json(_base(server) + "/api/clear", {}, server.token)
    assert status == 200 and json.loads(headers["X-Medseg-Prompt"])["has_mask"] is False
    assert not _delta(body, headers, server.session).any()
    status, body, headers = post_json(_base(server) + "/api/undo", {}, server.token)
    assert status == 200 and json.loads(headers["X-Medseg-Prompt"])["has_mask"] is True
    np.testing.assert_array_equal(_delta(body, headers, server.session), first)
    status, body, headers = post_json(_base(server) + "/api/redo", {}, server.token)
    assert status == 200 and not _delta(body, headers, server.session).any()
    status, body, headers = post_json(_base(server) + "/api/undo", {}, server.token)
    np.testing.assert_array_equal(_delta(body, headers, server.session), first)
    # a refining click is passed to medseg.prompt.segment as `previous`
    from medseg.prompt import segment

    centre = list(np.argwhere(liver).mean(0) @ case.affine[:3, :3].T + case.affine[:3, 3])
    status, body, headers = post_json(_base(server) + "/api/prompt",
                                      {"points": [centre], "labels": [1], "refine": True}, server.token)
    assert status == 200, body
    direct = segment(case.image, points=[centre], labels=[1], previous=first, method=PROMPT_METHOD).numpy()[0]
    np.testing.assert_array_equal(_delta(body, headers, server.session), direct)


def test_dicom_input_saves_a_dicom_seg_and_rtstruct_on_its_grid(tmp_path):
    """A DICOM series in: the page offers a DICOM SEG and an RTSTRUCT, written by the CLI's writers
    and read back by medseg on the series' grid; the patient's name never reaches the page."""
    from medseg.data.dicom_writer import write_dicom_series
    from medseg.data.phantoms import abdomen_ct
    from medseg.io.dicom_seg import read_dicom_seg

    ph = abdomen_ct(shape=(48, 48, 24), spacing=(3.0, 3.0, 5.0), orientation="LPS", seed=2)
    write_dicom_series(ph.image, ph.affine, tmp_path / "ct", patient_name="DOE^JANE", patient_id="SECRET123")
    session = ViewerSession.from_paths(tmp_path / "ct", output_dir=tmp_path / "out", prompt_method=PROMPT_METHOD)
    with running_server(session) as srv:
        status, body, _ = request(_base(srv) + "/api/info?token=" + srv.token)
        info = json.loads(body)
        assert info["can_save_seg"] is True and b"DOE" not in body and b"SECRET" not in body
        status, body, headers = post_json(_base(srv) + "/api/prompt", {"box": world_box_of(ph.label == 1, ph.affine)},
                                          srv.token)
        assert status == 200, body
        mask = _delta(body, headers, srv.session).copy()
        for name in ("../x.dcm", "x.nii.gz"):
            assert post_json(_base(srv) + "/api/save", {"format": "dicom-seg", "name": name}, srv.token)[0] in (400, 422)
        status, body, _ = post_json(_base(srv) + "/api/save", {"format": "dicom-seg"}, srv.token)
        assert status == 200, body
        saved_seg = json.loads(body)["saved"]
        status, body, _ = post_json(_base(srv) + "/api/save", {"format": "rtstruct"}, srv.token)
        assert status == 200, body
        saved_rt = json.loads(body)["saved"]
    seg = read_dicom_seg(tmp_path / "out" / saved_seg, reference=session.image)
    np.testing.assert_array_equal(seg.numpy()[0] > 0, mask > 0)
    # the RTSTRUCT holds contours: filled back on the grid they cover the mask up to its outline
    from medseg.io.dicom_rtstruct import read_rtstruct

    rt = np.asarray(read_rtstruct(tmp_path / "out" / saved_rt, session.image).array)[0] > 0
    assert dice(rt, mask > 0) > 0.9


def test_extreme_points_prompt(server, case):
    from medseg.prompt import segment

    liver = case.label == 1
    idx = np.argwhere(liver)
    extreme = []
    for d in range(3):  # the voxels of least and greatest index along each axis
        for pick in (idx[np.argmin(idx[:, d])], idx[np.argmax(idx[:, d])]):
            extreme.append([float(v) for v in case.affine[:3, :3] @ pick + case.affine[:3, 3]])
    status, body, headers = post_json(_base(server) + "/api/prompt", {"extreme_points": extreme}, server.token)
    assert status == 200, body
    direct = segment(case.image, extreme_points=extreme, method=PROMPT_METHOD).numpy()[0]
    np.testing.assert_array_equal(_delta(body, headers, server.session), direct)
    assert dice(direct, liver) > 0.5


def test_a_2d_radiograph_is_served_and_prompted(tmp_path):
    """A 2D image goes out as one NIfTI slice on its grid; the page's 3D world points lose their z."""
    from medseg.data.phantoms import as_metatensors, chest_xray

    ph = chest_xray(shape=(128, 128), seed=0)
    image, _ = as_metatensors(ph)
    session = ViewerSession(image, output_dir=tmp_path, prompt_method=PROMPT_METHOD)
    with running_server(session) as srv:
        status, body, _ = request(_base(srv) + "/volume/image?token=" + srv.token)
        img = _nifti(body)
        assert img.shape == (128, 128, 1)
        np.testing.assert_allclose(img.affine, ph.affine, atol=1e-5)
        value = next(iter(ph.labels))
        organ = ph.label == value
        box = world_box_of(organ[..., None], ph.affine)  # a radiograph's plane is x-z: the box spans x and z
        status, body, headers = post_json(_base(srv) + "/api/prompt", {"box": [float(v) for v in box]}, srv.token)
        assert status == 200, body
        mask = _delta(body, headers, srv.session)
        assert mask.shape == organ.shape and dice(mask, organ) > 0.5
    # a 2D image's legend gives areas: pixels x pixel area (spacing 1.4 x 1.4 mm) in cm^2
    session.labels, session.label_names = ph.label, dict(ph.labels)
    info = session.info()
    assert info["volume_unit"] == "cm\u00b2"
    for e in info["labels"]:
        assert e["size"] == pytest.approx(np.count_nonzero(ph.label == e["value"]) * 1.4 * 1.4 / 100, rel=1e-9)


def test_multichannel_image_refused():
    import torch
    from monai.data import MetaTensor

    from medseg.errors import InputError

    with pytest.raises(InputError, match="one-channel"):
        ViewerSession(MetaTensor(torch.zeros(3, 8, 8), affine=torch.eye(4)))
