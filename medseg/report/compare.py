"""Prediction next to reference: a montage where the prediction is filled in its label colours and
the reference is outlined in white, on slices through BOTH (a structure the model missed is
shown, with only its outline). Same display convention as :mod:`medseg.io.overlay` (radiological:
the patient's right on the image left; true aspect ratio), whose slice picking and square-pixel
resampling it uses.

The source image is not part of a segment output folder, so the background is dark grey unless
an image on the same grid is given.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import GeometryError

__all__ = ["REFERENCE_RGB", "comparison_panels", "save_comparison_montage"]

#: Colour of the reference outline.
REFERENCE_RGB = (255, 255, 255)
_BACKGROUND = 40.0


def _ras(arr: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import nibabel.orientations as nio

    ornt = nio.ornt_transform(nio.io_orientation(affine), nio.axcodes2ornt(("R", "A", "S")))
    return nio.apply_orientation(arr, ornt), affine @ nio.inv_ornt_aff(ornt, arr.shape)


def comparison_panels(pred: np.ndarray, ref: np.ndarray, affine: np.ndarray, *,
                      colours: Mapping[int, tuple[int, int, int]], image: np.ndarray | None = None,
                      window: tuple[float, float] | None = None, n_slices: int = 5, alpha: float = 0.55,
                      max_panel_px: int = 384) -> list[Any]:
    """Panels (:class:`medseg.io.overlay.OverlayPanel`) of 3D label maps ``pred`` and ``ref``
    (same grid, ``affine`` voxel -> RAS mm): axial, coronal and sagittal slices spread over where
    either holds a label; prediction filled, reference outlined in :data:`REFERENCE_RGB`."""
    from medseg.io.overlay import _VIEW_AXIS, _VIEW_LETTERS, OverlayPanel, _boundary, _pick, _resample_square

    if pred.shape != ref.shape or pred.ndim != 3:
        raise GeometryError(f"prediction {pred.shape} and reference {ref.shape} must be 3D on one grid")
    p, ras_aff = _ras(pred.astype(np.int32, copy=False), affine)
    r, _ = _ras(ref.astype(np.int32, copy=False), affine)
    img = _ras(image.astype(np.float32, copy=False), affine)[0] if image is not None else None
    spacing = np.linalg.norm(ras_aff[:3, :3], axis=0)
    panels = []
    for view in ("axial", "coronal", "sagittal"):
        axis = _VIEW_AXIS[view]
        other = [a for a in range(3) if a != axis]
        holds = np.flatnonzero(np.any((p != 0) | (r != 0), axis=tuple(other)))
        picks = set(_pick(holds, p.shape[axis], n_slices))
        ref_only = np.flatnonzero(np.any(r != 0, axis=tuple(other)) & ~np.any(p != 0, axis=tuple(other)))
        if ref_only.size:  # a structure the model missed: its middle slice is always shown
            picks.add(int(ref_only[len(ref_only) // 2]))
        for idx in sorted(picks):
            take = [slice(None)] * 3
            take[axis] = idx
            row_mm, col_mm = float(spacing[other[1]]), float(spacing[other[0]])
            ps = _resample_square(p[tuple(take)].T[::-1, ::-1], row_mm, col_mm, max_panel_px)
            rs = _resample_square(r[tuple(take)].T[::-1, ::-1], row_mm, col_mm, max_panel_px)
            if img is not None:
                lo, hi = window if window is not None else (float(img.min()), float(img.max()) or 1.0)
                grey = _resample_square(img[tuple(take)].T[::-1, ::-1], row_mm, col_mm, max_panel_px)
                grey = np.clip((grey - lo) / max(hi - lo, 1e-6), 0, 1) * 255.0
            else:
                grey = np.full(ps.shape, _BACKGROUND)
            rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float64)
            for v in np.unique(ps):
                if v:
                    m = ps == v
                    rgb[m] = (1 - alpha) * rgb[m] + alpha * np.asarray(colours.get(int(v), (255, 200, 0)), float)
            rgb[_boundary((rs != 0).astype(np.int32))] = REFERENCE_RGB
            centre = np.ones(4)
            centre[axis] = idx
            centre[other[0]], centre[other[1]] = (p.shape[other[0]] - 1) / 2, (p.shape[other[1]] - 1) / 2
            present = sorted(int(v) for v in set(np.unique(ps)) | set(np.unique(rs)) if v)
            panels.append(OverlayPanel(view, int(idx), float((ras_aff @ centre)[axis]),
                                       np.clip(np.rint(rgb), 0, 255).astype(np.uint8), _VIEW_LETTERS[view],
                                       present))
    return panels


def save_comparison_montage(pred: np.ndarray, ref: np.ndarray, affine: np.ndarray,
                            out_png: str | os.PathLike[str], *, label_names: Mapping[int, str],
                            image: np.ndarray | None = None, window: tuple[float, float] | None = None,
                            dpi: int = 100) -> Path:
    """Write :func:`comparison_panels` as a PNG (one row per view, orientation letters, a legend
    naming the filled prediction labels and the white reference outline), atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from medseg.io.atomic import atomic_path
    from medseg.labels import label_colour, lookup_label

    values = sorted(int(v) for v in set(np.unique(pred)) | set(np.unique(ref)) if v)
    colours = {v: label_colour(label_names.get(v), v) for v in values}
    panels = comparison_panels(pred, ref, affine, colours=colours, image=image, window=window)
    rows: dict[str, list[Any]] = {}
    for pnl in panels:
        rows.setdefault(pnl.view, []).append(pnl)
    n_cols = max((len(v) for v in rows.values()), default=1)
    row_h = [max(q.rgb.shape[0] for q in ps) for ps in rows.values()] or [100]
    col_w = max((max(q.rgb.shape[1] for q in ps) for ps in rows.values()), default=100)
    scale = min(1.0, 1500 / (col_w * n_cols), 1300 / sum(row_h))
    height = sum(row_h) * scale / dpi + 0.3 * len(rows) + 0.9
    fig = Figure(figsize=(max(4.0, col_w * n_cols * scale / dpi + 0.4), height), dpi=dpi, facecolor="black")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(max(1, len(rows)), n_cols, height_ratios=row_h, left=0.01, right=0.99,
                            bottom=0.5 / height, top=1 - 0.35 / height, hspace=0.25, wspace=0.03)
    style = {"color": "yellow", "fontsize": 8, "fontweight": "bold"}
    for i, (view, ps) in enumerate(rows.items()):
        for c in range(n_cols):
            ax = fig.add_subplot(grid[i, c])
            ax.set_axis_off()
            if c >= len(ps):
                continue
            q = ps[c]
            ax.imshow(q.rgb, interpolation="nearest", aspect="equal")
            ax.set_title(f"{view} {q.position_mm:+.1f} mm", color="white", fontsize=7, pad=2)
            h, w = q.rgb.shape[:2]
            left, right, top, bottom = q.letters
            ax.text(0.5, h / 2, left, ha="left", va="center", **style)
            ax.text(w - 1.5, h / 2, right, ha="right", va="center", **style)
            ax.text(w / 2, 0.5, top, ha="center", va="top", **style)
            ax.text(w / 2, h - 1.5, bottom, ha="center", va="bottom", **style)

    def name(v: int) -> str:
        n = label_names.get(v)
        found = lookup_label(n) if n else None
        return found.display if found else (n or f"label {v}")

    handles = [Patch(facecolor=np.asarray(colours[v]) / 255.0, edgecolor="none", label=f"prediction {name(v)}")
               for v in values]
    handles.append(Patch(facecolor="none", edgecolor=np.asarray(REFERENCE_RGB) / 255.0, label="reference (outline)"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), fontsize=7, frameon=False,
               labelcolor="white")
    fig.suptitle("prediction (filled) and reference (white outline)", color="white", fontsize=9)
    out = Path(out_png)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, facecolor=fig.get_facecolor())
    return out
