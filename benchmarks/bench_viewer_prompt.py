"""Prompt round trip of `medseg view`: a box prompt through the viewer vs the same call in Python.

Baseline: ``medseg.prompt.segment(image, box=...)`` called directly (what the viewer runs).
Viewer: the HTTP round trip (POST /api/prompt on the loopback server: JSON in, the segment call,
the changed box of the label map encoded as gzip NIfTI, bytes back; before b927b4a the whole mask
went back) and, with ``--browser``, the round trip measured in the page (Debian chromium,
headless, software WebGL): request, the box decoded and painted into NiiVue's drawing layer; and
a brush stroke of 20 voxels on the axial view: changed box found, sent, checked, painted back.

    python benchmarks/bench_viewer_prompt.py [--sizes 96,96,64 256,256,128] [--repeat 3]
                                             [--method auto] [--browser]

The box is the phantom liver's bounding box (world mm). Prints median seconds side by side and the
viewer/direct ratios (against the call on the main thread and on a fresh thread, as the server's
handler runs it: on a loaded machine the two differ by torch/OpenMP thread pools); writes benchmarks/results/viewer_prompt.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "tests"))


def _case(shape):
    from medseg.data.phantoms import abdomen_ct, as_metatensors

    ph = abdomen_ct(shape=shape, spacing=(1.5, 1.5, 2.5), orientation="LPS", seed=1)
    image, _ = as_metatensors(ph)
    return image, ph.label, ph.affine


def _browser_times(server, box, repeat, stroke_repeat=3):
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        return None
    out = []
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=["--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                                                               "--no-sandbox"])
        page = b.new_context(viewport={"width": 1200, "height": 800}, bypass_csp=True).new_page()
        page.goto(server.url)
        page.wait_for_function("document.body.dataset.state !== 'loading'", timeout=300_000)
        paint, strokes = [], []
        for i in range(repeat):
            # cleared first (not timed), so that each prompt paints the whole object again
            page.evaluate("window.medseg.send('/api/clear')")
            page.wait_for_function(f"(window.medseg.state.promptCount || 0) >= {2 * i + 1}", timeout=300_000)
            page.evaluate(f"window.medseg.send('/api/prompt', {{box: {box}}})")
            page.wait_for_function(f"(window.medseg.state.promptCount || 0) >= {2 * i + 2}", timeout=300_000)
            out.append(page.evaluate("window.medseg.state.lastPrompt.roundTripMs") / 1000.0)
            paint.append(page.evaluate("window.medseg.state.lastPrompt.paintMs") / 1000.0)
        # brush strokes of 20 voxels across the middle of the axial view, on an emptied map (a stroke
        # over voxels already painted changes nothing and sends nothing)
        n_clear = page.evaluate("window.medseg.state.promptCount")
        page.evaluate("window.medseg.send('/api/clear')")
        page.wait_for_function(f"window.medseg.state.promptCount >= {n_clear + 1}", timeout=300_000)
        page.fill("#pen-size", "1")
        page.evaluate("window.medseg.setTool('brush')")
        tile = next(t for a, t in page.evaluate("window.medseg.nv.screenSlices.map(s => [s.axCorSag, s.leftTopWidthHeight])")
                    if a == 0)
        cb = page.locator("#gl-main").bounding_box()
        n0 = page.evaluate("window.medseg.state.promptCount")
        shape = page.evaluate("window.medseg.state.info.display.shape")
        px_per_voxel = tile[2] / shape[0]
        for i in range(stroke_repeat):
            x0, y0 = cb["x"] + tile[0] + tile[2] * 0.3, cb["y"] + tile[1] + tile[3] * (0.3 + 0.1 * i)
            page.mouse.move(x0, y0)
            page.mouse.down()
            page.mouse.move(x0 + 20 * px_per_voxel, y0, steps=10)
            page.mouse.up()
            page.wait_for_function(f"window.medseg.state.promptCount >= {n0 + i + 1}", timeout=300_000)
            page.evaluate("window.medseg.strokesDone()")
            strokes.append(page.evaluate("window.medseg.state.lastStrokeMs") / 1000.0)
        b.close()
    return out, paint, strokes


def _on_a_thread(fn) -> float:
    """Seconds ``fn`` takes on a fresh thread, as the server's request handler runs it (torch and
    OpenMP thread pools differ between the main thread and others, which matters on a loaded machine)."""
    import threading

    out = {}

    def run():
        t = time.perf_counter()
        fn()
        out["s"] = time.perf_counter() - t

    th = threading.Thread(target=run)
    th.start()
    th.join()
    return out["s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["96,96,64", "256,256,128"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--method", default="auto")
    ap.add_argument("--browser", action="store_true", help="also time the round trip in headless chromium")
    args = ap.parse_args()

    from viewer_fixture import dice, post_json, running_server, world_box_of

    from medseg.prompt import segment
    from medseg.viewer.session import ViewerSession, nifti_gz

    rows = []
    for size in args.sizes:
        shape = tuple(int(v) for v in size.split(","))
        image, label, affine = _case(shape)
        liver = label == 1
        box = [float(v) for v in world_box_of(liver, affine)]
        direct, threaded, http, dices = [], [], [], []
        segment(image, box=box, method=args.method)  # warm-up (imports, caches)
        session = ViewerSession(image, prompt_method=args.method)
        with running_server(session) as server:
            for _ in range(args.repeat):  # alternated, so that neither side profits from the other's caches
                t = time.perf_counter()
                m = segment(image, box=box, method=args.method)
                direct.append(time.perf_counter() - t)
                dices.append(dice(m.numpy()[0], liver))
                threaded.append(_on_a_thread(functools.partial(segment, image, box=box, method=args.method)))
                post_json(f"http://127.0.0.1:{server.port}/api/clear", {}, server.token)  # the whole object travels
                t = time.perf_counter()
                status, body, _ = post_json(f"http://127.0.0.1:{server.port}/api/prompt", {"box": box}, server.token)
                http.append(time.perf_counter() - t)
                assert status == 200, body
            mask_bytes = len(body)
            full_bytes = len(nifti_gz(session.mask.astype(np.uint8), session.affine))  # what went back before
            browser, paint, strokes = _browser_times(server, box, args.repeat) if args.browser else (None, None, None)
        row = {"shape": list(shape), "voxels": int(np.prod(shape)), "method": args.method,
               "direct_s": statistics.median(direct), "direct_on_a_thread_s": statistics.median(threaded),
               "viewer_http_s": statistics.median(http),
               "viewer_browser_s": None if browser is None else statistics.median(browser),
               "ratio_http_vs_direct": statistics.median(http) / statistics.median(direct),
               "ratio_http_vs_direct_on_a_thread": statistics.median(http) / statistics.median(threaded),
               "viewer_browser_paint_s": None if paint is None else statistics.median(paint),
               "brush_stroke_20_voxels_s": None if strokes is None else statistics.median(strokes),
               "answer_bytes_gz": mask_bytes, "full_mask_bytes_gz": full_bytes,
               "dice_liver": statistics.median(dices), "repeat": args.repeat,
               "command": "python benchmarks/bench_viewer_prompt.py " + " ".join(sys.argv[1:]), "machine": _machine()}
        rows.append(row)
        in_page = "-" if browser is None else (f"{row['viewer_browser_s']:.3f} s (painting {row['viewer_browser_paint_s']:.3f} s;"
                                               f" brush stroke {row['brush_stroke_20_voxels_s']:.3f} s)")
        print(f"{'x'.join(map(str, shape)):>12}  direct {row['direct_s']:.3f} s (on a thread "
              f"{row['direct_on_a_thread_s']:.3f} s)   viewer http {row['viewer_http_s']:.3f} s"
              f"   ratio {row['ratio_http_vs_direct']:.2f}x ({row['ratio_http_vs_direct_on_a_thread']:.2f}x)   in the page {in_page}   answer {mask_bytes / 1024:.0f} KiB gz (whole mask {full_bytes / 1024:.0f} KiB)"
              f"   Dice {row['dice_liver']:.3f}", flush=True)
        _write(rows)


def _machine() -> dict:
    """Where and under what load a row was measured: `uptime`, this process's niceness, and what
    else ran (processes above 50 % CPU, with their niceness; the machine is shared)."""
    import subprocess

    def run(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    busy = [line.split(None, 3) for line in run(["ps", "-eo", "ni,pcpu,comm,args", "--sort=-pcpu"]).splitlines()[1:6]]
    return {"python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(), "load_average_1_5_15": list(os.getloadavg()), "uptime": run(["uptime"]),
            "nice": os.nice(0), "busy_processes": [{"nice": b[0], "cpu_percent": b[1], "command": b[3][:120]}
                                                   for b in busy if len(b) == 4 and float(b[1]) > 50]}


def _write(rows) -> None:
    """Rows replace those of the same grid and method already in the results file; others are kept."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "viewer_prompt.json"
    mine = {(tuple(r["shape"]), r["method"]) for r in rows}
    if out.is_file():
        old = json.loads(out.read_text()).get("rows", [])
        rows = [r for r in old if (tuple(r["shape"]), r.get("method")) not in mine and "answer_bytes_gz" in r] + rows
    out.write_text(json.dumps({"benchmark": "viewer prompt round trip", "baseline": "medseg.prompt.segment in-process",
                               "note": "each row carries its own command and machine load (rows of other runs are kept)",
                               "rows": rows}, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}", flush=True)


if __name__ == "__main__":
    main()
