"""Make docs/viewer.png: `medseg view` on a real CT (TotalSegmentator's ts_ct_sm, 122x101x30 at 3 mm)
with TotalSegmentator's own labels, in headless Debian chromium, after one box prompt on the spleen
answered by the viewer's default method (the promptable network when its bundle is there; the page
names it under "Prompt").

    python docs/viewer_screenshot.py [--out docs/viewer.png]

Needs the ts_ct_sm samples (`medseg data fetch ts_ct_sm ts_ct_sm_seg`), chromium, playwright (dev
extra) and the vendored NiiVue (`make viewer-vendor`).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "viewer.png"))
    ap.add_argument("--structure", default="spleen", help="the structure boxed for the prompt")
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    from medseg.data.fetch import sample
    from medseg.data.totalseg import TOTAL_V2
    from medseg.viewer.server import ViewerServer
    from medseg.viewer.session import ViewerSession

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        session = ViewerSession.from_paths(sample("ts_ct_sm"), labels=sample("ts_ct_sm_seg"), output_dir=tmp)
        session.label_names = dict(TOTAL_V2)  # the NIfTI carries values only; these are TotalSegmentator's names
        value = next(k for k, v in TOTAL_V2.items() if v == args.structure)
        organ = session.labels == value
        k = int(round(np.argwhere(organ)[:, 2].mean()))
        ij = np.argwhere(organ[:, :, k])
        aff = session.affine
        corners = [aff[:3, :3] @ [i, j, k] + aff[:3, 3] for i, j in (ij.min(0), ij.max(0))]
        centre = [float(v) for v in (corners[0] + corners[1]) / 2]
        server = ViewerServer(session)
        server.start_thread()
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, args=[
                    "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--no-sandbox"])
                page = browser.new_context(viewport={"width": 1400, "height": 820}, device_scale_factor=1,
                                           bypass_csp=True).new_page()
                page.goto(server.url)
                page.wait_for_function("document.body.dataset.state !== 'loading'", timeout=120_000)
                page.evaluate(f"window.medseg.goto({centre})")
                half = float(max(abs(corners[0][0] - corners[1][0]), abs(corners[0][1] - corners[1][1])) / 2)
                box = [min(corners[0][0], corners[1][0]), min(corners[0][1], corners[1][1]), centre[2] - half,
                       max(corners[0][0], corners[1][0]), max(corners[0][1], corners[1][1]), centre[2] + half]
                page.evaluate(f"window.medseg.state.box = {[float(v) for v in box]}")
                page.evaluate(f"window.medseg.send('/api/prompt', {{box: {[float(v) for v in box]}}})")
                page.wait_for_function("(window.medseg.state.promptCount || 0) >= 1", timeout=120_000)
                page.wait_for_timeout(500)
                page.screenshot(path=args.out)
                browser.close()
        finally:
            server.shutdown()
            server.server_close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
