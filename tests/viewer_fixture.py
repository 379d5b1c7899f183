"""A phantom CT for the viewer tests: an LPS-stored abdomen with one bright marker at a known
world position (on the patient's right, anterior and superior of the centre), its labels, and a
server running on a thread."""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
from dataclasses import dataclass

import numpy as np

MARKER_RAS_MM = (30.0, 20.0, 25.0)  # patient's Right (+x), Anterior (+y), Superior (+z)
MARKER_HU = 3000.0
MARKER_RADIUS_MM = 5.0
PROMPT_METHOD = "region-growing"  # the fastest classical method of medseg.prompt


@dataclass
class ViewerCase:
    image: object  # MetaTensor
    label: np.ndarray
    names: dict
    affine: np.ndarray


def phantom_case(orientation: str = "LPS") -> ViewerCase:
    from medseg.data.phantoms import abdomen_ct, as_metatensors

    ph = abdomen_ct(shape=(96, 96, 64), spacing=(1.5, 1.5, 2.5), orientation=orientation, seed=1)
    ijk = np.indices(ph.image.shape).reshape(3, -1)
    world = (ph.affine[:3, :3] @ ijk + ph.affine[:3, 3:4]).T.reshape(*ph.image.shape, 3)
    inside = np.linalg.norm(world - np.asarray(MARKER_RAS_MM), axis=-1) <= MARKER_RADIUS_MM
    ph.image[inside] = MARKER_HU
    image, _ = as_metatensors(ph)
    return ViewerCase(image=image, label=ph.label.copy(), names=dict(ph.labels), affine=ph.affine.copy())


def world_box_of(mask: np.ndarray, affine: np.ndarray) -> list[float]:
    """Axis-aligned world (RAS mm) box through the voxel centres of ``mask``: [x0, y0, z0, x1, y1, z1]."""
    idx = np.argwhere(mask)
    lo, hi = idx.min(0), idx.max(0)
    pts = np.array([[(hi if (b >> d) & 1 else lo)[d] for d in range(3)] for b in range(8)], dtype=float)
    w = pts @ affine[:3, :3].T + affine[:3, 3]
    return list(w.min(0)) + list(w.max(0))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else float(2 * np.logical_and(a, b).sum() / s)


def request(url: str, *, data: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes, dict]:
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def post_json(url: str, obj: dict, token: str | None) -> tuple[int, bytes, dict]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["X-Medseg-Token"] = token
    return request(url, data=json.dumps(obj).encode(), headers=headers)


@contextlib.contextmanager
def running_server(session):
    from medseg.viewer.server import ViewerServer

    server = ViewerServer(session)
    server.start_thread()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def headless_chromium(executable: str):
    """Debian's chromium, headless, driven by Playwright, with software WebGL (no GPU in CI)."""
    import playwright.sync_api as pw

    with pw.sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, headless=True,
                              args=["--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--no-sandbox"])
        try:
            yield b
        finally:
            b.close()
