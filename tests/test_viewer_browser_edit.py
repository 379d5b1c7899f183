"""`medseg view` editing end to end in headless Chromium (Debian's, driven by Playwright; no download).

On the LPS phantom CT: a brush click and a brush stroke at known world positions change exactly
the voxels there in the label map the server keeps (and saves), the eraser takes a voxel back,
undo / redo step through the changes, and after each the page's drawing layer holds the server's
map voxel for voxel (the changed box is all that travels). A scribble stroke through the liver
produces a mask equal to ``medseg.prompt.segment(scribbles=...)`` for the strokes the server
received, with a Dice above ``SCRIBBLE_DICE``. Batch review: a `medseg segment` output folder is
stepped through, accepted, edited and rejected from the page, and the decisions are read back from
its manifest; the page's URL and texts never hold a case folder's name. Screenshots are kept in
each test's tmp_path.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_viewer_browser import CHROMIUM, _expected_px, _tiles, open_page, pw
from viewer_fixture import dice, headless_chromium, phantom_case, running_server

from medseg.viewer.server import vendor_missing
from medseg.viewer.session import ViewerSession

pytestmark = [
    pytest.mark.chromium,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs Debian's)"),
    pytest.mark.skipif(pw is None, reason="playwright (dev extra) is not installed"),
    pytest.mark.skipif(vendor_missing(), reason="NiiVue is not vendored: run `make viewer-vendor` (needs npm)"),
]

SCRIBBLE_DICE = 0.6  # measured 0.69 with region-growing from one 7-voxel stroke through the liver's centre
METHOD = "region-growing"


@pytest.fixture(scope="module")
def case():
    return phantom_case("LPS")


@pytest.fixture(scope="module")
def browser():
    with headless_chromium(CHROMIUM) as b:
        yield b


@pytest.fixture
def viewer(case, browser, tmp_path):
    session = ViewerSession(case.image, labels=case.label, label_names=case.names, output_dir=tmp_path / "saved",
                            prompt_method=METHOD)
    with running_server(session) as server:
        ctx, page, errors = open_page(browser, server.url)
        page.evaluate("window.medseg.setOpacity(0)")  # only the drawing layer is coloured
        yield page, server, errors
        ctx.close()


def _voxel_mm(case, ijk) -> np.ndarray:
    return case.affine[:3, :3] @ np.asarray(ijk, float) + case.affine[:3, 3]


def _wait_changes(page, n: int) -> dict:
    page.wait_for_function(f"(window.medseg.state.promptCount || 0) >= {n} || window.medseg.state.errors.length",
                           timeout=120_000)
    page.evaluate("window.medseg.strokesDone()")
    assert not page.evaluate("window.medseg.state.errors"), page.evaluate("window.medseg.state.errors")
    return page.evaluate("window.medseg.state.lastPrompt")


def _page_bitmap(page, shape) -> np.ndarray:
    """The page's drawing layer in the volume's own voxel order (through the page's rasIndex)."""
    flat = page.evaluate("""(shape) => {
        const bm = window.medseg.nv.drawBitmap, out = new Array(shape[0] * shape[1] * shape[2]);
        let n = 0;
        for (let z = 0; z < shape[2]; z++) for (let y = 0; y < shape[1]; y++) for (let x = 0; x < shape[0]; x++)
            out[n++] = bm[window.medseg.rasIndex(x, y, z)];
        return out; }""", list(shape))
    return np.asarray(flat, dtype=np.uint8).reshape(shape[::-1]).transpose(2, 1, 0)


def _px(page, case, ijk):
    tile = _tiles(page)[0]
    x, y = _expected_px(case, tile, 0, _voxel_mm(case, ijk))
    box = page.locator("#gl-main").bounding_box()
    return box["x"] + x, box["y"] + y


def _stroke(page, p0, p1, steps: int = 12):
    """Press at p0, drag to p1, release. NiiVue paints on mouse-move events; the last one, at p1, is
    repeated one pixel on (still inside p1's voxel: a voxel is 3.5 px here) so that it is not
    dropped when the button goes up at once."""
    page.mouse.move(*p0)
    page.mouse.down()
    page.mouse.move(*p1, steps=steps)
    d = np.subtract(p1, p0)
    page.mouse.move(*(np.asarray(p1) + d / max(np.linalg.norm(d), 1e-9)))
    page.mouse.up()


def test_brush_eraser_undo_redo_at_known_world_positions(viewer, case, tmp_path):
    from medseg.io import load

    page, server, errors = viewer
    shape = case.label.shape
    k = shape[2] // 2
    a, b = (30, 40, k), (45, 40, k)  # voxels of one axial slice; world positions from the affine
    page.evaluate(f"window.medseg.goto({[float(v) for v in _voxel_mm(case, a)]})")
    page.fill("#pen-size", "1")
    page.evaluate("window.medseg.setTool('brush')")
    # a click paints the voxel under it
    page.mouse.click(*_px(page, case, a))
    _wait_changes(page, 1)
    want = np.zeros(shape, bool)
    want[a] = True
    np.testing.assert_array_equal(server.session.edits.array > 0, want)
    # a stroke from a to b paints the row of voxels between them on that slice
    _stroke(page, _px(page, case, a), _px(page, case, b))
    _wait_changes(page, 2)
    want[a[0]:b[0] + 1, a[1], k] = True
    np.testing.assert_array_equal(server.session.edits.array > 0, want)
    np.testing.assert_array_equal(_page_bitmap(page, shape), server.session.edits.array)
    page.evaluate("window.medseg.setTool('navigate')")
    page.evaluate("window.medseg.nv.opts.crosshairWidth = 0; window.medseg.nv.drawScene()")  # the line hides the row
    page.wait_for_timeout(200)
    from PIL import Image

    png = page.locator("#gl-main").screenshot(path=str(tmp_path / "brush.png"))
    import io

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    box = page.locator("#gl-main").bounding_box()
    x, y = _px(page, case, ((a[0] + b[0]) // 2, a[1], k))
    px = rgb[int(round(y - box["y"])), int(round(x - box["x"]))]
    assert px[0] - px[2] > 60 and px[1] - px[2] > 60, px  # yellow over grey where the stroke is
    page.evaluate("window.medseg.nv.opts.crosshairWidth = 1; window.medseg.nv.drawScene()")
    # eraser on the middle voxel
    mid = ((a[0] + b[0]) // 2, a[1], k)
    page.evaluate("window.medseg.setTool('eraser')")
    page.mouse.click(*_px(page, case, mid))
    _wait_changes(page, 3)
    want[mid] = False
    np.testing.assert_array_equal(server.session.edits.array > 0, want)
    # undo / redo through the server's history; the page follows voxel for voxel
    page.click("#undo")
    _wait_changes(page, 4)
    want[mid] = True
    np.testing.assert_array_equal(server.session.edits.array > 0, want)
    np.testing.assert_array_equal(_page_bitmap(page, shape), server.session.edits.array)
    page.click("#redo")
    _wait_changes(page, 5)
    want[mid] = False
    np.testing.assert_array_equal(server.session.edits.array > 0, want)
    np.testing.assert_array_equal(_page_bitmap(page, shape), server.session.edits.array)
    # saved on the source grid
    page.click("#save")
    page.wait_for_function("window.medseg.state.lastSave || window.medseg.state.errors.length", timeout=60_000)
    back = load(server.session.output_dir / "prompt_mask.nii.gz", kind="label")
    np.testing.assert_allclose(back.affine.numpy(), case.affine, atol=1e-5)
    np.testing.assert_array_equal(back.numpy()[0] > 0, want)
    page.screenshot(path=str(tmp_path / "page.png"))
    assert not errors


def test_scribble_prompt_produces_a_mask(viewer, case, tmp_path):
    from medseg.prompt import segment

    page, server, errors = viewer
    liver = case.label == 1
    k = int(round(np.argwhere(liver)[:, 2].mean()))
    ij = np.argwhere(liver[:, :, k])
    ci, cj = (int(v) for v in ij.mean(0))
    span = 3  # a 7-voxel stroke (a 17-voxel one gives 0.36 with region growing: the prompt method's limit)
    start, end = (ci - span, cj, k), (ci + span, cj, k)
    page.evaluate(f"window.medseg.goto({[float(v) for v in _voxel_mm(case, start)]})")
    page.fill("#pen-size", "1")
    page.evaluate("window.medseg.setTool('scribble-object')")
    _stroke(page, _px(page, case, start), _px(page, case, end))
    st = _wait_changes(page, 1)
    page.evaluate("window.medseg.setTool('navigate')")
    page.locator("#gl-main").screenshot(path=str(tmp_path / "scribble.png"))
    scribbles = server.session._scribbles
    assert scribbles is not None and set(np.unique(scribbles)) == {0, 1}
    got = np.argwhere(scribbles == 1)
    assert got[:, 2].min() == got[:, 2].max() == k and got[:, 0].min() == start[0] and got[:, 0].max() == end[0]
    mask = server.session.mask
    direct = segment(case.image, scribbles=scribbles, method=METHOD).numpy()[0]
    np.testing.assert_array_equal(mask, direct)
    d = dice(mask, liver)
    (tmp_path / "dice.txt").write_text(f"scribble {d:.4f}\n")
    assert d > SCRIBBLE_DICE, d
    assert st["voxels"] == int(mask.sum())
    # the scribble pen's marks are gone from the drawing; the mask is there
    np.testing.assert_array_equal(_page_bitmap(page, case.label.shape), server.session.edits.array)
    assert not errors


@pytest.mark.slow  # two `medseg segment` runs and three page loads: minutes on a loaded 2-core machine
def test_batch_review_from_the_page(browser, tmp_path):
    from test_viewer_edit import _segment_outputs

    from medseg.batch.manifest import Manifest
    from medseg.viewer.review import Review
    from medseg.viewer.server import ViewerServer

    src, out = _segment_outputs(tmp_path)
    review = Review(out, src, prompt_method=METHOD)
    server = ViewerServer(review.open(0), review=review)
    server.start_thread()
    try:
        ctx, page, errors = open_page(browser, server.url)
        text = page.inner_text("body")
        assert "case 1 of 2" in text and "not reviewed" in text
        page.click("#accept")
        page.wait_for_function("(window.medseg.state.decided || 0) >= 1 || window.medseg.state.errors.length")
        assert "accepted" in page.inner_text("#review-status")
        page.screenshot(path=str(tmp_path / "review1.png"))
        # next case: the page reloads what the server now holds
        with page.expect_navigation():
            page.click("#next")
        page.wait_for_function("document.body.dataset.state === 'ready'", timeout=120_000)
        assert "case 2 of 2" in page.inner_text("#review-status")
        # the prediction is the editable layer: a brush voxel of its first structure, then accept
        session = server.session
        shape = session.shape
        assert np.array_equal(_page_bitmap(page, shape), session.labels)
        value = int(page.evaluate("document.getElementById('structure').value"))
        empty = np.argwhere(session.labels == 0)
        target = tuple(int(v) for v in empty[len(empty) // 2])
        case_like = type("C", (), {"affine": session.affine, "label": session.labels})
        page.evaluate(f"window.medseg.goto({[float(v) for v in _voxel_mm(case_like, target)]})")
        page.fill("#pen-size", "1")
        page.evaluate("window.medseg.setTool('brush')")
        tile = _tiles(page)[0]
        x, y = _expected_px(case_like, tile, 0, _voxel_mm(case_like, target))
        bb = page.locator("#gl-main").bounding_box()
        page.mouse.click(bb["x"] + x, bb["y"] + y)
        _wait_changes(page, 1)
        assert session.edits.array[target] == value
        page.click("#accept")
        page.wait_for_function("(window.medseg.state.decided || 0) >= 1 || window.medseg.state.errors.length")
        assert "edited" in page.inner_text("#review-status")
        page.screenshot(path=str(tmp_path / "review2.png"))
        # back to the first and reject it
        with page.expect_navigation():
            page.click("#prev")
        page.wait_for_function("document.body.dataset.state === 'ready'", timeout=120_000)
        page.click("#reject")
        page.wait_for_function("(window.medseg.state.decided || 0) >= 1 || window.medseg.state.errors.length")
        assert "rejected" in page.inner_text("#review-status")
        assert "case" + "0" not in page.url and "case0" not in page.inner_text("body")
        assert not errors
        ctx.close()
    finally:
        server.shutdown()
        server.server_close()
    latest = {}
    for r in Manifest(out / "manifest.jsonl").records():
        latest[r.case] = r
    assert latest["case0"].extra["review"]["decision"] == "rejected"
    assert latest["case1"].extra["review"]["decision"] == "edited"
    from medseg.io import load

    edited = load(out / "case1" / "seg_reviewed.nii.gz", kind="label").numpy()[0]
    assert edited[target] == value
    assert json.loads((out / "manifest.jsonl").read_text().splitlines()[0])["extra"]["review"]["decision"] == "accepted"
