"""`medseg view` on the server: which prompt method answers (the trained network by default when its
bundle is there; --model), the legend's volumes in every change answer, and full-resolution crops
of a reduced study. Volumes are read back with nibabel and compared with the source voxels and
world positions, independently of the server's writer."""

from __future__ import annotations

import gzip
import json

import nibabel as nib
import numpy as np
import pytest
from viewer_fixture import (
    MARKER_HU,
    MARKER_RAS_MM,
    PROMPT_METHOD,
    dice,
    phantom_case,
    post_json,
    request,
    running_server,
    world_box_of,
)

from medseg.prompt import network
from medseg.viewer.grid import FULL_SIDE
from medseg.viewer.session import ViewerSession


@pytest.fixture(scope="module")
def case():
    return phantom_case()


def _base(server) -> str:
    return f"http://127.0.0.1:{server.port}"


def _get(server, path: str, token: str | None = "") -> tuple[int, bytes, dict]:
    headers = {}
    token = server.token if token == "" else token
    if token:
        headers["X-Medseg-Token"] = token
    return request(_base(server) + path, headers=headers)


def _voxel_ml(server) -> float:
    """A voxel's volume from the image NIfTI the page gets (nibabel's zooms, not the server's code)."""
    img = nib.Nifti1Image.from_bytes(gzip.decompress(_get(server, "/volume/image")[1]))
    return float(np.prod(img.header.get_zooms()[:3])) / 1000.0


# ---------------------------------------------------------------- which method answers a prompt
def test_default_method_is_the_network_when_its_bundle_is_there(case, monkeypatch):
    session = ViewerSession(case.image)
    want = "promptable" if network.available() else "auto"
    assert session.prompt_method == want
    label = session.info()["prompt_method_label"]
    assert label.startswith(want + ":")
    if want == "promptable":
        meta = json.loads((network.bundle_dir() / "configs" / "metadata.json").read_text())
        assert f"{meta['name']} {meta['version']}" in label
    monkeypatch.setattr(network, "available", lambda *a, **k: False)
    assert ViewerSession(case.image).prompt_method == "auto"  # no bundle: classical
    assert ViewerSession(case.image, prompt_method="region-growing").prompt_method == "region-growing"


@pytest.mark.skipif(not network.available(), reason="the promptable_3d bundle's weights are not here")
def test_default_prompt_is_the_networks_answer(case):
    from medseg.prompt import segment

    session = ViewerSession(case.image)
    box = world_box_of(case.label == 1, case.affine)
    with running_server(session) as srv:
        status, body, headers = post_json(_base(srv) + "/api/prompt", {"box": box}, srv.token)
        assert status == 200, body
        assert json.loads(headers["X-Medseg-Prompt"])["method"] == "promptable"
    direct = segment(case.image, box=box, method="promptable").numpy()[0]
    np.testing.assert_array_equal(session.mask > 0, direct > 0)


# ---------------------------------------------------------------- the legend follows the edits
def test_every_change_answer_carries_the_legend_volumes(case):
    session = ViewerSession(case.image, labels=case.label, label_names=case.names, prompt_method=PROMPT_METHOD)
    with running_server(session) as srv:
        unit = _voxel_ml(srv)
        info = json.loads(_get(srv, "/api/info")[1])
        assert info["mask_volumes"] == []  # nothing drawn yet
        box = world_box_of(case.label == 1, case.affine)
        status, body, headers = post_json(_base(srv) + "/api/prompt", {"box": box}, srv.token)
        assert status == 200, body
        legend = json.loads(headers["X-Medseg-Prompt"])["legend"]
        n = int(np.count_nonzero(session.mask))
        assert [e["value"] for e in legend] == [1] and legend[0]["voxels"] == n > 0
        assert legend[0]["size"] == pytest.approx(n * unit, rel=1e-6)
        for path, want in (("/api/undo", 0), ("/api/redo", n), ("/api/clear", 0)):
            status, body, headers = post_json(_base(srv) + path, {}, srv.token)
            assert status == 200, body
            legend = json.loads(headers["X-Medseg-Prompt"])["legend"]
            assert sum(e["voxels"] for e in legend) == want == int(np.count_nonzero(session.edits.array))
            assert sum(e["size"] for e in legend) == pytest.approx(want * unit, rel=1e-6)


def test_review_legend_counts_every_structure_after_an_edit(case):
    """Under review the editable map is the prediction: every structure's volume, and after an
    eraser stroke the erased structure's drops by exactly the voxels erased."""
    session = ViewerSession(case.image, labels=case.label, label_names=case.names, prompt_method=PROMPT_METHOD,
                            edit_labels=True)
    unit = float(abs(np.linalg.det(case.affine[:3, :3]))) / 1000.0
    before = {e["value"]: e for e in session.info()["mask_volumes"]}
    values, counts = np.unique(case.label[case.label > 0], return_counts=True)
    assert {v: e["voxels"] for v, e in before.items()} == dict(zip(values.tolist(), counts.tolist(), strict=True))
    assert all(before[v]["name"] == case.names[v] for v in before)
    i, j, k = (int(v) for v in np.argwhere(case.label == 1)[len(np.argwhere(case.label == 1)) // 2])
    erased = np.zeros((3, 3, 1), np.uint8)
    img = nib.Nifti1Image(erased, case.affine @ np.array([[1, 0, 0, i], [0, 1, 0, j], [0, 0, 1, k], [0, 0, 0, 1.0]]))
    img.set_sform(img.affine, code=1)
    gone = int(np.count_nonzero(case.label[i:i + 3, j:j + 3, k] == 1))
    summary = session.edit(gzip.compress(img.to_bytes()))
    after = {e["value"]: e for e in summary["legend"]}
    assert after[1]["voxels"] == before[1]["voxels"] - gone and gone > 0
    assert after[1]["size"] == pytest.approx(after[1]["voxels"] * unit, rel=1e-6)


# ---------------------------------------------------------------- full resolution on demand
@pytest.fixture
def reduced(case):
    session = ViewerSession(case.image, labels=case.label, label_names=case.names, prompt_method=PROMPT_METHOD,
                            max_voxels=100_000)
    with running_server(session) as srv:
        yield srv


def _fullres(server, role="image", at=MARKER_RAS_MM, extra="", token: str | None = ""):
    q = f"role={role}&x={at[0]}&y={at[1]}&z={at[2]}{extra}"
    return _get(server, "/api/fullres?" + q, token)


def test_full_resolution_crop_is_the_source_voxels_around_a_position(reduced, case):
    assert json.loads(_get(reduced, "/api/info")[1])["display"]["factor"] == [2, 2, 2]
    status, body, headers = _fullres(reduced)
    assert status == 200, body
    box = json.loads(headers["X-Medseg-Crop"])
    img = nib.Nifti1Image.from_bytes(gzip.decompress(body))
    lo = np.asarray(box["lo"])
    assert list(img.shape) == box["shape"] and all(s <= FULL_SIDE for s in img.shape)
    # on the source grid (not the reduced one): its affine is the source's moved to the box's first voxel
    want = case.affine.copy()
    want[:3, 3] = case.affine[:3, :3] @ lo + case.affine[:3, 3]
    np.testing.assert_allclose(img.affine, want, atol=1e-4)
    sl = tuple(slice(a, a + n) for a, n in zip(lo, img.shape, strict=True))
    np.testing.assert_array_equal(np.asarray(img.dataobj), np.rint(case.image.numpy()[0][sl]))
    # the marker is where its world position says, at full resolution
    ijk = np.rint(np.linalg.solve(img.affine[:3, :3], np.asarray(MARKER_RAS_MM) - img.affine[:3, 3])).astype(int)
    assert float(np.asarray(img.dataobj)[tuple(ijk)]) == MARKER_HU
    lab = nib.Nifti1Image.from_bytes(gzip.decompress(_fullres(reduced, "labels")[1]))
    np.testing.assert_array_equal(np.asarray(lab.dataobj), case.label[sl])
    # the editable map as it is now (nothing drawn yet: empty)
    status, body, _ = _fullres(reduced, "mask")
    assert status == 200 and not np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(body)).dataobj).any()


def test_full_resolution_crop_at_the_edge_stays_inside(reduced, case):
    corner = case.affine[:3, 3]  # voxel (0, 0, 0)
    status, body, headers = _fullres(reduced, at=corner, extra="&side=20")
    assert status == 200, body
    box = json.loads(headers["X-Medseg-Crop"])
    assert box["lo"] == [0, 0, 0] and box["shape"] == [20, 20, 20]


@pytest.mark.parametrize(("role", "at", "extra", "status"), [
    ("image", (500.0, 0.0, 0.0), "", 409),          # outside the image
    ("image", MARKER_RAS_MM, f"&side={FULL_SIDE + 1}", 409),  # larger than allowed
    ("image", MARKER_RAS_MM, "&side=0", 409),
    ("image", ("nan", 0, 0), "", 409),
    ("image", ("abc", 0, 0), "", 400),
    ("reference", MARKER_RAS_MM, "", 409),           # none was given
    ("secret", MARKER_RAS_MM, "", 404),
    ("../../etc/passwd", MARKER_RAS_MM, "", 400),     # traversal, refused before routing
    ("/etc/passwd", MARKER_RAS_MM, "", 400),
])
def test_full_resolution_requests_checked(reduced, role, at, extra, status):
    got, body, _ = _fullres(reduced, role, at, extra)
    assert got == status, body
    assert b"\n" not in body.strip()  # one line


def test_full_resolution_needs_the_token(reduced):
    assert _fullres(reduced, token=None)[0] == 403
    assert _fullres(reduced, token="x" * 43)[0] == 403


# ---------------------------------------------------------------- --model
@pytest.mark.skipif(not network.available(), reason="the promptable_3d bundle's weights are not here")
def test_model_names_the_promptable_bundle_the_prompts_use(case):
    from medseg.prompt import segment

    by_name = ViewerSession(case.image, prompt_model="promptable_3d")
    by_folder = ViewerSession(case.image, prompt_model=str(network.bundle_dir()))
    assert by_name.prompt_model == by_folder.prompt_model == network.bundle_dir()
    assert by_name.prompt_method == "promptable"
    box = world_box_of(case.label == 2, case.affine)
    by_folder.prompt(box=box)
    direct = segment(case.image, box=box, model=str(network.bundle_dir())).numpy()[0]
    np.testing.assert_array_equal(by_folder.mask > 0, direct > 0)
    assert by_folder.prompt_log["method"] == "promptable"


@pytest.mark.parametrize("model", ["ct_spine", "bundles/ct_spine", "no_such_bundle", "segmentation-folder"])
def test_view_refuses_a_model_that_is_not_a_promptable_bundle(tmp_path, case, capsys, model):
    """A segmentation bundle (by name or folder), an unknown name, a folder of something else:
    one line, exit 2, before anything is served."""
    from pathlib import Path

    from medseg.cli import main
    from medseg.io import save

    src = tmp_path / "ct.nii.gz"
    save(case.image, src)
    if model == "bundles/ct_spine":
        model = str(Path(__file__).resolve().parents[1] / model)
    elif model == "segmentation-folder":
        (tmp_path / "seg" / "configs").mkdir(parents=True)
        (tmp_path / "seg" / "configs" / "inference.json").write_text("{}")
        model = str(tmp_path / "seg")
    assert main(["view", str(src), "--model", model, "--no-browser", "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "promptable" in err, err


def test_view_refuses_model_with_a_classical_method(tmp_path, case, capsys):
    from medseg.cli import main
    from medseg.io import save

    src = tmp_path / "ct.nii.gz"
    save(case.image, src)
    assert main(["view", str(src), "--model", "promptable_3d", "--method", "grabcut", "--no-browser"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--model" in err, err


@pytest.mark.skipif(not network.available(2), reason="the promptable_2d bundle's weights are not here")
def test_a_2d_radiograph_is_answered_by_promptable_2d(tmp_path):
    """A 2D image's default is the 2D network; its box (RAS x-z mm: a PA film spans x and z) gives
    the same mask as segment(model="promptable_2d") and finds the right lung (held-out seed 9003)."""
    from medseg.data.phantoms import as_metatensors, chest_xray
    from medseg.prompt import segment

    ph = chest_xray(seed=9003)
    image, _ = as_metatensors(ph)
    session = ViewerSession(image, output_dir=tmp_path)
    assert session.prompt_method == "promptable"
    meta = json.loads((network.bundle_dir(2) / "configs" / "metadata.json").read_text())
    assert f"promptable_2d {meta['version']}" in session.info()["prompt_method_label"]
    right = ph.label == 1
    box = world_box_of(right[..., None], ph.affine)
    with running_server(session) as srv:
        status, body, headers = post_json(_base(srv) + "/api/prompt", {"box": [float(v) for v in box]}, srv.token)
        assert status == 200, body
        assert json.loads(headers["X-Medseg-Prompt"])["method"] == "promptable"
    got = session.edits.array.reshape(session.shape) > 0
    idx = np.argwhere(right)
    lo = nib.affines.apply_affine(ph.affine, np.r_[idx.min(0), 0.0])
    hi = nib.affines.apply_affine(ph.affine, np.r_[idx.max(0), 0.0])
    direct = segment(image, box=[lo[0], lo[2], hi[0], hi[2]], model="promptable_2d").numpy()[0] > 0
    np.testing.assert_array_equal(got.reshape(direct.shape), direct)
    assert dice(direct, right) > 0.9  # 0.982 measured (tests/test_prompt_network.py)
    assert (direct & (ph.label == 2)).sum() < 0.02 * direct.sum()

