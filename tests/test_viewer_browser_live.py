"""`medseg view` in headless Chromium (Debian's, driven by Playwright; no download): the prompt method
the page names, the legend following every change, and full resolution on demand for a reduced study.

One page on the phantom CT sent reduced (``max_voxels`` below its size: every 2nd voxel), with the
viewer's default prompt method. Checked against the server's label map and nibabel's voxel size,
not the page's own arithmetic: after a box prompt, an eraser click and an undo, the legend's
number equals the server map's voxel count x the voxel's volume (and changes each time). "full
resolution here" at the marker loads a source-grid crop into its own pane: its voxels are the
source spacing, and NiiVue reads the marker's HU at the marker's world position. Screenshots are
kept in the test's tmp_path.
"""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
from test_viewer_browser import CHROMIUM, _expected_px, _tiles, open_page, pw
from viewer_fixture import MARKER_HU, MARKER_RAS_MM, headless_chromium, phantom_case, request, running_server

from medseg.viewer.server import vendor_missing
from medseg.viewer.session import ViewerSession

pytestmark = [
    pytest.mark.chromium,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs Debian's)"),
    pytest.mark.skipif(pw is None, reason="playwright (dev extra) is not installed"),
    pytest.mark.skipif(vendor_missing(), reason="NiiVue is not vendored: run `make viewer-vendor` (needs npm)"),
]


@pytest.fixture(scope="module")
def case():
    return phantom_case("LPS")


def _legend(page) -> list[tuple[str, float]]:
    return [(name, float(ml)) for name, ml in page.evaluate(
        """() => Array.from(document.querySelectorAll('#mask-legend tbody tr'))
                  .map((tr) => [tr.children[1].textContent, tr.children[2].textContent])""")]


def _wait(page, n: int) -> None:
    page.wait_for_function(f"(window.medseg.state.promptCount || 0) >= {n} || window.medseg.state.errors.length",
                           timeout=300_000)
    page.evaluate("window.medseg.strokesDone()")
    assert not page.evaluate("window.medseg.state.errors"), page.evaluate("window.medseg.state.errors")


def test_method_legend_and_full_resolution(case, tmp_path):
    from viewer_fixture import world_box_of

    session = ViewerSession(case.image, labels=case.label, label_names=case.names, max_voxels=100_000)
    with headless_chromium(CHROMIUM) as browser, running_server(session) as server:
        img = nib.Nifti1Image.from_bytes(gzip.decompress(request(
            f"http://127.0.0.1:{server.port}/volume/image?token={server.token}")[1]))
        assert img.shape == (48, 48, 32)  # reduced
        unit_ml = float(np.prod(np.linalg.norm(case.affine[:3, :3], axis=0))) / 1000.0  # source voxel, mL
        ctx, page, errors = open_page(browser, server.url, timeout_ms=300_000)
        # the method the page names is the one answering
        shown = page.inner_text("#prompt-method")
        assert shown == "prompts: " + session.info()["prompt_method_label"]
        assert shown.startswith("prompts: " + session.prompt_method + ":")
        assert page.is_hidden("#mask-legend")  # nothing drawn yet

        def expect_legend(previous: float | None) -> float:
            n = int(np.count_nonzero(session.edits.array == 1))
            rows = _legend(page)
            assert len(rows) == 1 and rows[0][0] == "object", rows
            assert rows[0][1] == pytest.approx(n * unit_ml, abs=0.051), (rows, n)
            assert previous is None or rows[0][1] != previous
            return rows[0][1]

        box = [float(v) for v in world_box_of(case.label == 1, case.affine)]
        page.evaluate(f"window.medseg.send('/api/prompt', {{box: {box}, value: 1}})")
        _wait(page, 1)
        ml1 = expect_legend(None)
        # an eraser click (pen 3) at the liver's centre, on the slice through it
        centre = case.affine[:3, :3] @ np.argwhere(session.edits.array == 1).mean(0) + case.affine[:3, 3]
        page.evaluate(f"window.medseg.goto({[float(v) for v in centre]})")
        page.fill("#pen-size", "3")
        page.evaluate("window.medseg.setTool('eraser')")
        x, y = _expected_px(case, _tiles(page)[0], 0, centre)
        cb = page.locator("#gl-main").bounding_box()
        page.mouse.click(cb["x"] + x, cb["y"] + y)
        _wait(page, 2)
        ml2 = expect_legend(ml1)
        assert ml2 < ml1
        page.evaluate("window.medseg.setTool('navigate')")
        page.click("#undo")
        _wait(page, 3)
        assert expect_legend(ml2) == ml1
        page.screenshot(path=str(tmp_path / "legend.png"))
        # full resolution around the marker
        assert page.is_visible("#fullres")
        page.evaluate(f"window.medseg.goto({list(MARKER_RAS_MM)})")
        page.click("#fullres")
        page.wait_for_function("(window.medseg.state.fullresCount || 0) >= 1 || window.medseg.state.errors.length",
                               timeout=300_000)
        assert not page.evaluate("window.medseg.state.errors"), page.evaluate("window.medseg.state.errors")
        got = page.evaluate("""(mm) => {
            const v = window.medseg.nvFull.volumes[0], p = v.mm2vox(mm);
            return {dims: Array.from(v.hdr.dims).slice(1, 4), pix: Array.from(v.hdr.pixDims).slice(1, 4),
                    value: v.getValue(p[0], p[1], p[2]), n: window.medseg.nvFull.volumes.length,
                    box: window.medseg.state.fullres}; }""", list(MARKER_RAS_MM))
        _, crop = session.full_resolution("image", MARKER_RAS_MM)
        assert got["dims"] == crop["shape"] == got["box"]["shape"] and got["box"]["lo"] == crop["lo"]
        np.testing.assert_allclose(got["pix"], [1.5, 1.5, 2.5], atol=1e-4)  # the source spacing, not 3/3/5
        assert got["value"] == MARKER_HU
        assert got["n"] == 3  # image, labels, mask
        assert page.is_visible("#pane-full")
        page.screenshot(path=str(tmp_path / "fullres.png"))
        assert not errors
        ctx.close()
