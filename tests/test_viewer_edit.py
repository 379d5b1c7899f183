"""`medseg view` editing on the server: brush / eraser boxes checked before they change the label map
(grid, affine, size, values), undo / redo, scribbles passed to medseg.prompt.segment, the reduced
grid of a large study, and review of a `medseg segment` / `medseg batch` output folder with the
decisions in its manifest. Boxes are built with nibabel from world positions, independently of
the server's own writer."""

from __future__ import annotations

import gzip
import http.client
import json

import nibabel as nib
import numpy as np
import pytest
from viewer_fixture import PROMPT_METHOD, dice, phantom_case, post_json, request, running_server

from medseg.viewer.session import ViewerSession


@pytest.fixture(scope="module")
def case():
    return phantom_case()


@pytest.fixture
def server(case):
    session = ViewerSession(case.image, labels=case.label, label_names=case.names, prompt_method=PROMPT_METHOD)
    with running_server(session) as srv:
        yield srv


def _base(server) -> str:
    return f"http://127.0.0.1:{server.port}"


def _box_nifti(values: np.ndarray, affine: np.ndarray, lo, *, level: int = 6) -> bytes:
    """A box of ``values`` whose first voxel is ``lo`` of the grid ``affine`` (nibabel, not medseg)."""
    a = np.array(affine, dtype=np.float64)
    a[:3, 3] = a[:3, :3] @ np.asarray(lo, dtype=float) + a[:3, 3]
    img = nib.Nifti1Image(np.asarray(values, dtype=np.uint8), a)
    img.set_sform(a, code=1)
    return gzip.compress(img.to_bytes(), compresslevel=level)


def _post_gz(server, path: str, body: bytes, token: str | None = "", ctype: str = "application/gzip"):
    headers = {"Content-Type": ctype}
    token = server.token if token == "" else token
    if token:
        headers["X-Medseg-Token"] = token
    return request(_base(server) + path, data=body, headers=headers)


def _world_to_voxel(affine, mm) -> np.ndarray:
    return np.rint(np.linalg.solve(affine[:3, :3], np.asarray(mm, float) - affine[:3, 3])).astype(int)


def test_brush_box_lands_at_its_world_position_then_undo_redo(server, case):
    """A 3 x 2 x 1 stroke whose first voxel is at a world position: exactly those voxels change."""
    world = (10.0, -5.0, 15.0)  # RAS mm
    lo = _world_to_voxel(case.affine, world)
    status, body, headers = _post_gz(server, "/api/edit", _box_nifti(np.ones((3, 2, 1)), case.affine, lo))
    assert status == 200, body
    mask = server.session.mask
    want = np.zeros(case.label.shape, bool)
    want[lo[0]:lo[0] + 3, lo[1]:lo[1] + 2, lo[2]] = True
    np.testing.assert_array_equal(mask > 0, want)
    summary = json.loads(headers["X-Medseg-Prompt"])
    assert summary["roi"] == [list(map(int, lo)), [int(lo[0] + 2), int(lo[1] + 1), int(lo[2])]]
    # eraser: the middle voxel back to 0
    status, _, _ = _post_gz(server, "/api/edit", _box_nifti(np.zeros((1, 1, 1)), case.affine, lo + [1, 0, 0]))
    assert status == 200 and server.session.mask.sum() == 5 and server.session.mask[lo[0] + 1, lo[1], lo[2]] == 0
    assert post_json(_base(server) + "/api/undo", {}, server.token)[0] == 200
    assert server.session.mask.sum() == 6
    assert post_json(_base(server) + "/api/redo", {}, server.token)[0] == 200
    assert server.session.mask.sum() == 5
    assert post_json(_base(server) + "/api/redo", {}, server.token)[0] == 422  # nothing to redo


def _bad_boxes(case):
    a = case.affine
    flipped = a @ np.diag([-1.0, 1, 1, 1])
    half = a.copy()
    half[:3, 3] += a[:3, :3] @ [0.5, 0, 0]
    scaled = a @ np.diag([2.0, 1, 1, 1])
    shape = np.array(case.label.shape)
    return {
        "flipped axis": _box_nifti(np.ones((2, 2, 1)), flipped, (10, 10, 10)),
        "half a voxel off the grid": _box_nifti(np.ones((2, 2, 1)), half, (10, 10, 10)),
        "other spacing": _box_nifti(np.ones((2, 2, 1)), scaled, (10, 10, 10)),
        "outside the grid": _box_nifti(np.ones((4, 1, 1)), a, (int(shape[0]) - 2, 0, 0)),
        "negative origin": _box_nifti(np.ones((2, 1, 1)), a, (-1, 0, 0)),
        "value not in the map": _box_nifti(np.full((2, 2, 1), 7), a, (10, 10, 10)),
        "not gzip": b"\x00" * 400,
        "not NIfTI": gzip.compress(b"hello" * 100),
        "truncated gzip": _box_nifti(np.ones((2, 2, 1)), a, (10, 10, 10))[:-12],
        # a gzip bomb: small upload, unpacks to far more than the grid holds
        "unpacks past the grid": gzip.compress(b"\x00" * (int(np.prod(shape)) + 200_000), 9),
    }


@pytest.mark.parametrize("what", ["flipped axis", "half a voxel off the grid", "other spacing", "outside the grid",
                                  "negative origin", "value not in the map", "not gzip", "not NIfTI",
                                  "truncated gzip", "unpacks past the grid"])
def test_edits_off_the_grid_or_malformed_are_refused(server, case, what):
    before = server.session.edits.array.copy()
    status, body, _ = _post_gz(server, "/api/edit", _bad_boxes(case)[what])
    assert status == 422, (what, status, body)
    assert b"\n" not in body and body
    np.testing.assert_array_equal(server.session.edits.array, before)


def test_upload_limits_and_content_type(server, case):
    good = _box_nifti(np.ones((2, 2, 1)), case.affine, (10, 10, 10))
    assert _post_gz(server, "/api/edit", good, ctype="application/json")[0] == 415
    # a declared length above the limit is refused before the body is read
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.putrequest("POST", "/api/edit")
    conn.putheader("X-Medseg-Token", server.token)
    conn.putheader("Content-Type", "application/gzip")
    conn.putheader("Content-Length", str(65 << 20))
    conn.endheaders()
    assert conn.getresponse().status == 413
    conn.close()


@pytest.mark.parametrize("path", ["/api/edit", "/api/scribble", "/api/redo", "/api/review/open", "/api/review/decide"])
def test_new_endpoints_need_the_token(server, case, path):
    body = _box_nifti(np.ones((1, 1, 1)), case.affine, (10, 10, 10))
    assert _post_gz(server, path, body, token=None)[0] == 403
    assert _post_gz(server, path, body, token="x" * len(server.token))[0] == 403
    assert server.session.mask is None
    assert request(_base(server) + "/api/review")[0] == 403


@pytest.mark.parametrize("query", ["value=../1", "refine=%2Fetc%2Fpasswd", "value=..%5C1", "x=C:%5Cwin"])
def test_traversal_in_scribble_parameters_refused(server, case, query):
    body = _box_nifti(np.ones((1, 1, 1)), case.affine, (10, 10, 10))
    assert _post_gz(server, "/api/scribble?" + query, body)[0] == 400


def test_review_routes_absent_without_a_batch(server):
    assert request(_base(server) + "/api/review?token=" + server.token)[0] == 404
    assert post_json(_base(server) + "/api/review/open", {"index": 0}, server.token)[0] == 404


def test_scribbles_go_to_medseg_prompt_segment(server, case):
    from medseg.prompt import segment

    liver = case.label == 1
    k = int(round(np.argwhere(liver)[:, 2].mean()))
    i, j = np.argwhere(liver[:, :, k]).mean(0).astype(int)
    stroke = np.ones((7, 1, 1), np.uint8)  # an object stroke along i through the liver's centre
    status, body, _ = _post_gz(server, "/api/scribble?value=1", _box_nifti(stroke, case.affine, (i - 3, j, k)))
    assert status == 200, body
    scribbles = np.zeros(case.label.shape, np.uint8)
    scribbles[i - 3:i + 4, j, k] = 1
    direct = segment(case.image, scribbles=scribbles, method=PROMPT_METHOD).numpy()[0]
    np.testing.assert_array_equal(server.session.mask, direct)
    assert dice(direct, liver) > 0.6
    # a background stroke refines it: both strokes go, with the object as `previous`
    bg = np.argwhere(~liver[:, :, k] & (case.label[:, :, k] == 0))[0]
    status, body, _ = _post_gz(server, "/api/scribble?value=1&refine=1",
                               _box_nifti(np.full((1, 1, 1), 2), case.affine, (bg[0], bg[1], k)))
    assert status == 200, body
    scribbles[bg[0], bg[1], k] = 2
    again = segment(case.image, scribbles=scribbles, previous=direct, method=PROMPT_METHOD).numpy()[0]
    np.testing.assert_array_equal(server.session.mask, again)
    # values other than 1 (object) and 2 (background) are refused
    assert _post_gz(server, "/api/scribble", _box_nifti(np.full((1, 1, 1), 3), case.affine, (i, j, k)))[0] == 422


def test_a_large_study_is_sent_reduced_and_edits_set_blocks(case):
    session = ViewerSession(case.image, labels=case.label, prompt_method=PROMPT_METHOD, max_voxels=100_000)
    with running_server(session) as srv:
        info = json.loads(request(_base(srv) + "/api/info?token=" + srv.token)[1])
        assert info["display"]["reduced"] is True and info["display"]["factor"] == [2, 2, 2]
        assert info["display"]["shape"] == [48, 48, 32] and info["shape"] == [96, 96, 64]
        img = nib.Nifti1Image.from_bytes(gzip.decompress(request(_base(srv) + "/volume/image?token=" + srv.token)[1]))
        assert img.shape == (48, 48, 32) and np.prod(img.shape) <= 100_000
        # every shown voxel is the source voxel at the same world position
        np.testing.assert_allclose(img.affine, case.affine @ np.diag([2.0, 2, 2, 1]), atol=1e-5)
        np.testing.assert_array_equal(np.asarray(img.dataobj), np.rint(case.image.numpy()[0][::2, ::2, ::2]))
        lab = nib.Nifti1Image.from_bytes(gzip.decompress(request(_base(srv) + "/volume/labels?token=" + srv.token)[1]))
        np.testing.assert_array_equal(np.asarray(lab.dataobj), case.label[::2, ::2, ::2])
        # a stroke on the reduced grid sets the 2x2x2 source blocks of the voxels it changed
        status, body, headers = _post_gz(srv, "/api/edit", _box_nifti(np.ones((2, 1, 1)), img.affine, (5, 6, 7)))
        assert status == 200, body
        want = np.zeros(case.label.shape, bool)
        want[10:14, 12:14, 14:16] = True
        np.testing.assert_array_equal(session.mask > 0, want)
        assert json.loads(headers["X-Medseg-Prompt"])["roi"] == [[5, 6, 7], [6, 6, 7]]
        # a source-grid box is not the shown grid: refused
        assert _post_gz(srv, "/api/edit", _box_nifti(np.ones((1, 1, 1)), case.affine, (3, 3, 3)))[0] == 422
        # prompts still run on the full grid
        from viewer_fixture import world_box_of

        box = world_box_of(case.label == 1, case.affine)
        status, body, _ = post_json(_base(srv) + "/api/prompt", {"box": box}, srv.token)
        assert status == 200, body
        assert dice(session.mask == 1, case.label == 1) > 0.8


# ---------------------------------------------------------------- review of an output folder
def _segment_outputs(tmp, n=2):
    """n phantom CTs segmented by `medseg segment --method otsu` (classical, no weights)."""
    from medseg.cli import main
    from medseg.data.phantoms import abdomen_ct, as_metatensors
    from medseg.io import save

    src = tmp / "images"
    src.mkdir()
    for i in range(n):
        ph = abdomen_ct(shape=(48, 48, 24), spacing=(3.0, 3.0, 5.0), orientation="LPS", seed=10 + i)
        image, _ = as_metatensors(ph)
        save(image, src / f"case{i}.nii.gz")
        assert main(["segment", str(src / f"case{i}.nii.gz"), "--method", "otsu", "--output", str(tmp / "out")]) == 0
    return src, tmp / "out"


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    return _segment_outputs(tmp_path_factory.mktemp("review"))


def test_review_writes_decisions_to_the_manifest(outputs):
    from medseg.batch.manifest import Manifest
    from medseg.io import load
    from medseg.viewer.review import Review
    from medseg.viewer.server import ViewerServer

    src, out = outputs
    review = Review(out, src, prompt_method=PROMPT_METHOD)
    assert len(review.cases) == 2 and all(c.source is not None for c in review.cases)
    server = ViewerServer(review.open(0), review=review)
    server.start_thread()
    try:
        base = _base(server)
        listing = json.loads(request(base + "/api/review?token=" + server.token)[1])
        assert listing["count"] == 2 and listing["current"] == 0
        text = json.dumps(listing) + request(base + "/api/info?token=" + server.token)[1].decode()
        assert "case0" not in text and "case1" not in text and "images" not in text  # keys, not names
        assert post_json(base + "/api/review/decide", {"decision": "accept"}, server.token)[0] == 200
        assert post_json(base + "/api/review/decide", {"decision": "maybe"}, server.token)[0] == 422
        assert post_json(base + "/api/review/open", {"index": 5}, server.token)[0] == 422
        status, body, _ = post_json(base + "/api/review/open", {"index": 1}, server.token)
        assert status == 200 and json.loads(body)["current"] == 1
        # an edit, then accept: recorded as edited, with the edited label map beside seg.nii.gz
        seg = server.session.labels
        value = int(np.max(seg))
        affine = server.session.affine
        status, _, _ = _post_gz(server, "/api/edit", _box_nifti(np.full((2, 2, 1), value), affine, (1, 1, 1)))
        assert status == 200
        assert post_json(base + "/api/review/decide", {"decision": "accept"}, server.token)[0] == 200
        assert post_json(base + "/api/review/open", {"index": 0}, server.token)[0] == 200
        assert post_json(base + "/api/review/decide", {"decision": "reject"}, server.token)[0] == 200
    finally:
        server.shutdown()
        server.server_close()
    recs = Manifest(out / "manifest.jsonl").records()
    by = {}
    for r in recs:
        by[r.case] = r  # latest per case
    assert by["case0"].extra["review"]["decision"] == "rejected"
    assert by["case1"].extra["review"]["decision"] == "edited" and by["case1"].status == "done"
    reviewed = load(out / "case1" / "seg_reviewed.nii.gz", kind="label")
    orig = load(out / "case1" / "seg.nii.gz", kind="label")
    np.testing.assert_allclose(reviewed.affine.numpy(), orig.affine.numpy(), atol=1e-5)
    want = orig.numpy()[0].copy()
    want[1:3, 1:3, 1] = value
    np.testing.assert_array_equal(reviewed.numpy()[0], want)
    assert by["case1"].outputs["seg_reviewed.nii.gz"].endswith("seg_reviewed.nii.gz")
    # every line is a whole JSON record (appended with one write + fsync)
    lines = (out / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line)["key"] for line in lines)


def test_review_refuses_an_image_that_is_not_the_segmented_one(outputs, tmp_path):
    import shutil

    from medseg.errors import InputError
    from medseg.viewer.review import Review

    src, out = outputs
    swapped = tmp_path / "images"
    swapped.mkdir()
    shutil.copy(src / "case1.nii.gz", swapped / "case0.nii.gz")  # same name, other patient
    review = Review(out, swapped)
    with pytest.raises(InputError, match="not the one"):
        review.open(0)
    # the folder keeps both cases after decisions were written into its (new) manifest
    assert len(Review(out, src).cases) == 2


def test_view_cli_needs_images_for_an_output_folder(outputs, capsys):
    from medseg.cli import main

    _, out = outputs
    assert main(["view", str(out), "--no-browser"]) == 2
    err = capsys.readouterr().err
    assert "--images" in err and err.count("\n") == 1


@pytest.mark.slow
def test_review_of_a_real_batch_manifest(tmp_path):
    """`medseg batch` with the organ model: decisions land in its manifest.jsonl, a resumed batch
    still skips the reviewed cases (their latest record stays done)."""
    from medseg.batch.runner import latest_done_records
    from medseg.cli import main
    from medseg.data.phantoms import abdomen_ct, as_metatensors
    from medseg.io import save
    from medseg.viewer.review import Review

    src = tmp_path / "src"
    src.mkdir()
    for i in range(2):
        ph = abdomen_ct(shape=(48, 48, 24), spacing=(3.0, 3.0, 5.0), orientation="LPS", seed=20 + i)
        save(as_metatensors(ph)[0], src / f"p{i}.nii.gz")
    assert main(["batch", str(src), "--model", "bundles/ct_abdomen_organs", "--output", str(tmp_path / "out")]) == 0
    before = latest_done_records(tmp_path / "out")
    review = Review(tmp_path / "out", src)
    assert {c.key for c in review.cases} == set(before)  # matched by the manifest key
    session = review.open(1)
    assert review.decide(session, "reject") == "rejected"
    after = latest_done_records(tmp_path / "out")
    assert set(after) == set(before)
    key = review.cases[1].key
    assert after[key].extra["review"]["decision"] == "rejected" and after[key].outputs == before[key].outputs
