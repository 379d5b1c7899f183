"""`medseg view` end to end in headless Chromium (Debian's, driven by Playwright; no browser download).

The page loads an LPS-stored phantom CT with a bright marker at a known RAS position. Checked
independently of NiiVue: where the marker appears in each of the three views (computed from the
volume's world extent and the radiological convention: the patient's right on the screen's left,
anterior and superior up), which letter NiiVue draws on each side of each view, and what the
crosshair reports at the marker. Then a box dragged with the mouse around the liver on the axial
view gives a mask whose Dice with the phantom's liver is above ``BOX_DICE`` (measured 0.77 with the
classical ``auto`` method), a corrective click at the centre of the largest error on that slice is
sent at its world position, raises the Dice (measured 0.80) and gives exactly what
:func:`medseg.prompt.segment` gives for that click refining the previous mask; undo restores the
box's mask and "save mask" writes a NIfTI that medseg's reader reads back on the source grid. Screenshots are kept in each test's tmp_path.
"""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
from viewer_fixture import (
    MARKER_HU,
    MARKER_RAS_MM,
    dice,
    headless_chromium,
    phantom_case,
    running_server,
)

from medseg.viewer.server import vendor_missing
from medseg.viewer.session import ViewerSession

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
try:
    import playwright.sync_api as pw
except ImportError:  # pragma: no cover - dev extra missing
    pw = None

pytestmark = [
    pytest.mark.chromium,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs Debian's)"),
    pytest.mark.skipif(pw is None, reason="playwright (dev extra) is not installed"),
    pytest.mark.skipif(vendor_missing(), reason="NiiVue is not vendored: run `make viewer-vendor` (needs npm)"),
]

BOX_DICE = 0.75  # measured 0.77 with medseg.prompt's "auto" method on this box
METHOD = "auto"  # classical (the viewer defaults to the network when its bundle is there); refines with clicks
VIEW = {"width": 1200, "height": 800}


def open_page(browser, url: str, timeout_ms: int = 120_000):
    """A new page on ``url`` once the viewer left its loading state (and reached "ready"):
    (context, page, the page's uncaught errors)."""
    # CSP bypass only so that Playwright may evaluate its own scripts in the page
    ctx = browser.new_context(viewport=VIEW, device_scale_factor=1, bypass_csp=True)
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_function("document.body.dataset.state !== 'loading'", timeout=timeout_ms)
    assert page.evaluate("document.body.dataset.state") == "ready", page.inner_text("#message")
    return ctx, page, errors
# axCorSag -> (world axis shown left-right, sign: +1 when the larger value is on the screen's right,
#              world axis shown up-down); radiological convention, sagittal with the nose on the right
AXES = {0: (0, -1, 1), 1: (0, -1, 2), 2: (1, +1, 2)}
LETTERS = {0: ("R", "L", "A", "P"), 1: ("R", "L", "S", "I"), 2: ("P", "A", "S", "I")}  # left right top bottom


@pytest.fixture(scope="module")
def case():
    return phantom_case("LPS")


@pytest.fixture(scope="module")
def browser():
    with headless_chromium(CHROMIUM) as b:
        yield b


@pytest.fixture
def viewer(case, browser, tmp_path):
    session = ViewerSession(case.image, labels=case.label, label_names=case.names, reference=case.label,
                            output_dir=tmp_path / "saved", prompt_method=METHOD)
    with running_server(session) as server:
        ctx, page, errors = open_page(browser, server.url)
        yield page, server, errors
        ctx.close()


def _extent(case) -> tuple[np.ndarray, np.ndarray]:
    """World (RAS mm) bounding box of the volume's voxel edges."""
    shape = np.array(case.label.shape)
    corners = np.array([[(shape[d] - 0.5) if (b >> d) & 1 else -0.5 for d in range(3)] for b in range(8)])
    w = corners @ case.affine[:3, :3].T + case.affine[:3, 3]
    return w.min(0), w.max(0)


def _tiles(page) -> dict[int, list[float]]:
    slices = page.evaluate("window.medseg.nv.screenSlices.map(s => [s.axCorSag, s.leftTopWidthHeight])")
    return {int(a): [float(v) for v in ltwh] for a, ltwh in slices if int(a) in (0, 1, 2)}


def _expected_px(case, tile: list[float], ax: int, mm) -> tuple[float, float]:
    lo, hi = _extent(case)
    h_axis, h_sign, v_axis = AXES[ax]
    fx = (mm[h_axis] - lo[h_axis]) / (hi[h_axis] - lo[h_axis])
    fx = fx if h_sign > 0 else 1 - fx
    fy = (hi[v_axis] - mm[v_axis]) / (hi[v_axis] - lo[v_axis])  # larger (A or S) at the top
    return tile[0] + fx * tile[2], tile[1] + fy * tile[3]


def _canvas_rgb(page, path) -> np.ndarray:
    from PIL import Image

    png = page.locator("#gl-main").screenshot(path=str(path))
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def _letters(page) -> list[tuple[str, str, float, float]]:
    return page.evaluate("""() => {
        const nv = window.medseg.nv, seen = [];
        const names = ['drawTextRight', 'drawTextLeft', 'drawTextBelow', 'drawTextAbove'];
        const saved = names.map((n) => nv[n]);
        names.forEach((n, i) => { nv[n] = function (xy, str, ...rest) {
            seen.push([names[i], str, xy[0], xy[1]]); return saved[i].call(this, xy, str, ...rest); }; });
        nv.drawScene();
        names.forEach((n, i) => { nv[n] = saved[i]; });
        return seen; }""")


def test_orientation_letters_and_marker_where_they_must_be(viewer, case, tmp_path):
    page, server, errors = viewer
    page.evaluate("window.medseg.setOpacity(0)")
    page.evaluate(f"window.medseg.setWindow({MARKER_HU - 1000}, {MARKER_HU - 500})")  # only the marker is white
    page.evaluate(f"window.medseg.goto({list(MARKER_RAS_MM)})")
    page.wait_for_timeout(300)
    rgb = _canvas_rgb(page, tmp_path / "marker.png")
    tiles = _tiles(page)
    assert set(tiles) == {0, 1, 2}
    spacing = np.linalg.norm(case.affine[:3, :3], axis=0)
    for ax, tile in tiles.items():
        x0, y0, w, h = (int(round(v)) for v in tile)
        region = rgb[y0:y0 + h, x0:x0 + w]
        white = np.all(region > 235, axis=-1)
        assert white.sum() >= 4, f"no marker in view {ax}"
        ys, xs = np.nonzero(white)
        got = (x0 + xs.mean(), y0 + ys.mean())
        want = _expected_px(case, tile, ax, MARKER_RAS_MM)
        lo, hi = _extent(case)
        px_per_mm = tile[2] / (hi[AXES[ax][0]] - lo[AXES[ax][0]])
        tol = 2 + px_per_mm * spacing.max()
        assert abs(got[0] - want[0]) <= tol and abs(got[1] - want[1]) <= tol, (ax, got, want, tol)
    # the letters NiiVue draws on each side of each view
    drawn = _letters(page)
    for ax, tile in tiles.items():
        left, right, top, bottom = LETTERS[ax]
        cx, cy = tile[0] + tile[2] / 2, tile[1] + tile[3] / 2
        left_x, t, w, h = tile
        # NiiVue writes a view's left letter right of a point on its left edge, its top letter below
        # a point on its top edge, and so on
        by_side = {"left": [s for f, s, x, y in drawn if f == "drawTextRight" and abs(x - left_x) < 2 and abs(y - cy) < 2],
                   "right": [s for f, s, x, y in drawn if f == "drawTextLeft" and abs(x - left_x - w) < 2 and abs(y - cy) < 2],
                   "top": [s for f, s, x, y in drawn if f == "drawTextBelow" and abs(y - t) < 2 and abs(x - cx) < 2],
                   "bottom": [s for f, s, x, y in drawn if f == "drawTextAbove" and abs(y - t - h) < 2
                              and abs(x - cx) < 2]}
        assert by_side == {"left": [left], "right": [right], "top": [top], "bottom": [bottom]}, (ax, by_side)
    # the marker (patient's right, anterior, superior) is on the R / A / S sides of the views
    ax_tile = tiles[0]
    ys, xs = np.nonzero(np.all(rgb[int(ax_tile[1]):int(ax_tile[1] + ax_tile[3]),
                                   int(ax_tile[0]):int(ax_tile[0] + ax_tile[2])] > 235, axis=-1))
    assert xs.mean() < ax_tile[2] / 2 and ys.mean() < ax_tile[3] / 2
    # what the crosshair reports there
    loc = page.evaluate("window.medseg.state.location")
    assert np.allclose(loc["mm"], MARKER_RAS_MM, atol=spacing.max() / 2 + 1e-6)
    assert loc["value"] == pytest.approx(MARKER_HU)
    assert not errors


def _drag(page, a, b):
    box = page.locator("#gl-main").bounding_box()
    page.mouse.move(box["x"] + a[0], box["y"] + a[1])
    page.mouse.down()
    page.mouse.move(box["x"] + b[0], box["y"] + b[1], steps=8)
    page.mouse.up()


def _wait_prompt(page, n: int) -> dict:
    page.wait_for_function(f"(window.medseg.state.promptCount || 0) >= {n} || window.medseg.state.errors.length",
                           timeout=120_000)
    assert not page.evaluate("window.medseg.state.errors"), page.evaluate("window.medseg.state.errors")
    return page.evaluate("window.medseg.state")


def test_box_click_and_save(viewer, case, tmp_path):
    from medseg.io import load
    from medseg.prompt import segment

    page, server, errors = viewer
    liver = case.label == 1
    k = int(round(np.argwhere(liver)[:, 2].mean()))
    ij = np.argwhere(liver[:, :, k])
    lo_v, hi_v = ij.min(0), ij.max(0)
    corners = [case.affine[:3, :3] @ [i, j, k] + case.affine[:3, 3] for i, j in ((lo_v[0], lo_v[1]), (hi_v[0], hi_v[1]))]
    centre = (corners[0] + corners[1]) / 2
    page.evaluate(f"window.medseg.goto({[float(v) for v in centre]})")
    page.evaluate("window.medseg.setTool('box')")
    tile = _tiles(page)[0]
    a, b = (_expected_px(case, tile, 0, c) for c in corners)
    _drag(page, a, b)
    st = _wait_prompt(page, 1)
    page.locator("#gl-main").screenshot(path=str(tmp_path / "box.png"))
    # the box the page sent: the drawn rectangle in world mm, through the slice
    sent = np.array(st["box"]).reshape(2, 3)
    want = np.array(corners)
    spacing = np.linalg.norm(case.affine[:3, :3], axis=0)
    mm_per_px = (_extent(case)[1][0] - _extent(case)[0][0]) / tile[2]
    tol = spacing.max() + 2 * mm_per_px
    for d in (0, 1):
        assert abs(sent[:, d].min() - want[:, d].min()) <= tol and abs(sent[:, d].max() - want[:, d].max()) <= tol
    assert sent[0, 2] < centre[2] < sent[1, 2]
    mask1 = server.session.mask.copy()
    d1 = dice(mask1, liver)
    assert d1 > BOX_DICE, d1
    assert st["lastPrompt"]["voxels"] == int(mask1.sum())
    # a corrective click at the centre of the largest error on this slice
    from scipy import ndimage

    err = mask1[:, :, k].astype(bool) ^ liver[:, :, k]
    cc, n = ndimage.label(err)
    assert n > 0
    biggest = cc == (np.argmax(np.bincount(cc.ravel())[1:]) + 1)
    depth = ndimage.distance_transform_edt(biggest)
    i, j = np.unravel_index(int(np.argmax(depth)), depth.shape)
    positive = bool(liver[i, j, k])
    click_mm = case.affine[:3, :3] @ [i, j, k] + case.affine[:3, 3]
    page.evaluate(f"window.medseg.setTool('{'positive' if positive else 'negative'}')")
    x, y = _expected_px(case, tile, 0, click_mm)
    box = page.locator("#gl-main").bounding_box()
    page.mouse.click(box["x"] + x, box["y"] + y)
    st = _wait_prompt(page, 2)
    page.locator("#gl-main").screenshot(path=str(tmp_path / "click.png"))
    assert st["labels"] == [1 if positive else 0]
    assert np.allclose(st["points"][0][:2], click_mm[:2], atol=spacing.max() / 2 + mm_per_px)
    mask2 = server.session.mask.copy()
    direct = segment(case.image, points=st["points"], labels=st["labels"], previous=mask1, method=METHOD)
    np.testing.assert_array_equal(mask2, direct.numpy()[0])  # the click corrected the box's mask
    d2 = dice(mask2, liver)
    (tmp_path / "dice.txt").write_text(f"box {d1:.4f}\nafter one corrective click {d2:.4f}\n")
    assert d2 > d1, (d1, d2)
    # undo brings the box's mask back
    page.click("#undo")
    _wait_prompt(page, 3)
    np.testing.assert_array_equal(server.session.mask, mask1)
    # save: NIfTI on the source grid, read back by medseg
    page.click("#save")
    page.wait_for_function("window.medseg.state.lastSave || window.medseg.state.errors.length", timeout=60_000)
    saved = page.evaluate("window.medseg.state.lastSave")
    assert saved == {"saved": "prompt_mask.nii.gz"}
    back = load(server.session.output_dir / "prompt_mask.nii.gz", kind="label")
    assert tuple(back.shape[1:]) == case.label.shape
    np.testing.assert_allclose(back.affine.numpy(), case.affine, atol=1e-5)
    np.testing.assert_array_equal(back.numpy()[0], mask1)
    page.screenshot(path=str(tmp_path / "page.png"))
    assert not errors


def test_reference_beside_prediction_and_legend(viewer, case, tmp_path):
    page, server, errors = viewer
    assert page.is_visible("#gl-ref")
    rows = page.eval_on_selector_all("#legend tbody tr", "rs => rs.map(r => [r.children[1].textContent, "
                                                         "Number(r.children[2].textContent)])")
    voxel_ml = abs(np.linalg.det(case.affine[:3, :3])) / 1000
    want = {name: round(np.count_nonzero(case.label == v) * voxel_ml, 1) for v, name in case.names.items()}
    assert dict(rows) == pytest.approx(want, abs=0.051)
    page.screenshot(path=str(tmp_path / "reference.png"))
    assert not errors
