"""Overlay pictures: label maps drawn over their image, in the radiological display convention.

Display convention for 3D volumes (the affine decides, via :mod:`nibabel.orientations`; an
oblique volume is shown along its closest RAS axes):

* axial: the patient's right on the image left, anterior at the top;
* coronal: the patient's right on the image left, superior at the top;
* sagittal: anterior on the image left, superior at the top.

Voxels are drawn with their true aspect ratio (spacing in mm): each panel is resampled with
nearest neighbour to square display pixels. 2D images (X-ray, microscopy) are one panel shown
as stored (pixel rows top to bottom). Pictures are written with matplotlib's Agg canvas (no
display needed) and atomically. A radiograph's edge letters come from its DICOM
PatientOrientation (``meta["patient_orientation"]``); it is not flipped to a standard view.

Public API::

    overlay_slices(image, labels=None, *, n_slices=6, views=(...), window=None, ...) -> list[OverlayPanel]
    save_overlay_montage(image, labels, out_png, *, n_slices=6, views=(...), window=None, title=None) -> Path

Size (~410 lines, a fifth of it this description): one concern, drawing labels over an image in
the display convention above; the three views, the radiograph letters and the montage share the
orientation and aspect code.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import ConfigError, GeometryError, InputError
from medseg.geometry import as_numpy, spacing_of, spatial
from medseg.io.atomic import atomic_path
from medseg.labels import label_colour, lookup_label

__all__ = ["OverlayPanel", "montage_layout", "overlay_slices", "save_overlay_montage"]

VIEWS = ("axial", "coronal", "sagittal")
# slice axis in the RAS-reoriented volume, and the letters on (left, right, top, bottom) edges
_VIEW_AXIS = {"axial": 2, "coronal": 1, "sagittal": 0}
_VIEW_LETTERS = {"axial": ("R", "L", "A", "P"), "coronal": ("R", "L", "S", "I"),
                 "sagittal": ("A", "P", "S", "I")}
_MAX_PANEL_PX = 512  # longest side of one panel, display pixels


@dataclass
class OverlayPanel:
    """One rendered slice: ``rgb`` uint8 (H, W, 3) with square display pixels, ready to show.

    view: "axial" | "coronal" | "sagittal" | "2d"; index: slice index along the view's axis in
    the RAS-reoriented volume (0 for 2D); position_mm: RAS world coordinate of that slice along
    the axis (x for sagittal, y for coronal, z for axial; None for 2D); letters: patient
    direction at the (left, right, top, bottom) edges (empty strings when unknown);
    labels_present: label values visible in this panel.
    """

    view: str
    index: int
    position_mm: float | None
    rgb: np.ndarray
    letters: tuple[str, str, str, str]
    labels_present: list[int] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------------------------
def _affine(x: Any, ndim: int) -> np.ndarray:
    aff = getattr(x, "affine", None)
    if aff is None:
        return np.eye(4)
    aff = as_numpy(aff).astype(np.float64)
    if aff.shape == (3, 3) and ndim == 2:
        full = np.eye(4)
        full[:2, :2], full[:2, 3] = aff[:2, :2], aff[:2, 2]
        return full
    if aff.shape != (4, 4):
        raise GeometryError(f"affine must be 4x4, got shape {aff.shape}")
    return aff




def _label_names(labels: Any, given: Mapping[int, str] | None) -> dict[int, str]:
    if given is not None:
        return {int(k): str(v) for k, v in given.items()}
    meta = getattr(labels, "meta", None) or {}
    found = meta.get("labels") if isinstance(meta, Mapping) else None
    if isinstance(found, Mapping):
        out = {}
        for k, v in found.items():
            try:
                out[int(k)] = str(v)
            except (TypeError, ValueError):
                continue
        return out
    return {}


def _window(img: np.ndarray, window: tuple[float, float] | None) -> tuple[float, float]:
    if window is not None:
        lo, hi = float(window[0]), float(window[1])
        if not hi > lo:
            raise ConfigError(f"window must be (low, high) with high > low, got {window}")
        return lo, hi
    flat = img.ravel()
    if flat.size > 2_000_000:  # a regular subsample is plenty for percentiles
        flat = flat[:: flat.size // 2_000_000 + 1]
    sample = flat[np.isfinite(flat)]
    if sample.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(sample, [1.0, 99.0]))
    if not hi > lo:
        lo, hi = float(sample.min()), float(sample.max())
    if not hi > lo:
        hi = lo + 1.0
    return lo, hi


# ----------------------------------------------------------------------------------------------
# rendering
# ----------------------------------------------------------------------------------------------
def _resample_square(a: np.ndarray, row_mm: float, col_mm: float, max_px: int) -> np.ndarray:
    """Nearest-neighbour resample of a 2D slice to square display pixels (true aspect ratio)."""
    rows, cols = a.shape
    h_mm, w_mm = rows * row_mm, cols * col_mm
    px = min(row_mm, col_mm)
    h, w = max(1, round(h_mm / px)), max(1, round(w_mm / px))
    scale = min(1.0, max_px / max(h, w)) if max(h, w) > max_px else max(1.0, min(4.0, 256 / max(h, w)))
    h, w = max(1, round(h * scale)), max(1, round(w * scale))
    ri = np.minimum((np.arange(h) + 0.5) * rows / h, rows - 1).astype(int)
    ci = np.minimum((np.arange(w) + 0.5) * cols / w, cols - 1).astype(int)
    return a[np.ix_(ri, ci)]


def _boundary(lab: np.ndarray) -> np.ndarray:
    """Pixels of a label whose 4-neighbour differs (a one-pixel contour, inside the region)."""
    edge = np.zeros(lab.shape, dtype=bool)
    fg = lab != 0
    edge[1:, :] |= lab[1:, :] != lab[:-1, :]
    edge[:-1, :] |= lab[:-1, :] != lab[1:, :]
    edge[:, 1:] |= lab[:, 1:] != lab[:, :-1]
    edge[:, :-1] |= lab[:, :-1] != lab[:, 1:]
    edge[0, :] |= True
    edge[-1, :] |= True
    edge[:, 0] |= True
    edge[:, -1] |= True
    return edge & fg


def _render(img: np.ndarray, lab: np.ndarray | None, lohi: tuple[float, float],
            colours: Mapping[int, tuple[int, int, int]], alpha: float) -> np.ndarray:
    lo, hi = lohi
    grey = np.clip((np.nan_to_num(img.astype(np.float64), nan=lo) - lo) / (hi - lo), 0.0, 1.0)
    rgb = np.repeat((grey * 255.0)[..., None], 3, axis=2)
    if lab is not None:
        edge = _boundary(lab)
        for value in np.unique(lab):
            if value == 0:
                continue
            colour = np.asarray(colours.get(int(value), label_colour(None, int(value))), dtype=np.float64)
            region = lab == value
            rgb[region] = (1.0 - alpha) * rgb[region] + alpha * colour
            rgb[region & edge] = colour
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _pick(indices_with_label: np.ndarray, size: int, n: int) -> list[int]:
    """n slice indices spread over the labelled extent (the central 80 % when nothing is labelled)."""
    if indices_with_label.size:
        lo, hi = int(indices_with_label.min()), int(indices_with_label.max())
    else:
        lo, hi = int(0.1 * (size - 1)), int(round(0.9 * (size - 1)))
    if hi - lo + 1 <= n:
        return list(range(lo, hi + 1))
    picks = np.unique(np.rint(np.linspace(lo, hi, n + 2)[1:-1]).astype(int)) if hi - lo + 1 > n + 1 else \
        np.unique(np.rint(np.linspace(lo, hi, n)).astype(int))
    if indices_with_label.size:  # snap to slices that really hold a label
        present = np.sort(indices_with_label)
        picks = np.unique([int(present[np.argmin(np.abs(present - p))]) for p in picks])
    return [int(p) for p in picks]


_OPPOSITE = {"R": "L", "L": "R", "A": "P", "P": "A", "S": "I", "I": "S", "H": "F", "F": "H"}


def _letters_2d(meta: Any) -> tuple[str, str, str, str]:
    """Edge letters of a radiograph from its DICOM PatientOrientation (meta["patient_orientation"]:
    direction of increasing column, then of increasing row, e.g. ["L", "F"]); empty when unknown.
    Never guessed from an identity affine."""
    if not isinstance(meta, Mapping):
        return ("", "", "", "")
    po = meta.get("patient_orientation")
    if not isinstance(po, (list, tuple)) or len(po) != 2:
        return ("", "", "", "")
    right, down = (str(v).strip().upper() for v in po)
    if not right or not down or any(c not in _OPPOSITE for c in right + down):
        return ("", "", "", "")
    flip = lambda code: "".join(_OPPOSITE[c] for c in code)  # noqa: E731
    return (flip(right), right, flip(down), down)


def overlay_slices(
    image: Any,
    labels: Any | None = None,
    *,
    n_slices: int = 6,
    views: Sequence[str] = VIEWS,
    window: tuple[float, float] | None = None,
    label_names: Mapping[int, str] | None = None,
    alpha: float = 0.4,
    max_panel_px: int = _MAX_PANEL_PX,
) -> list[OverlayPanel]:
    """Render slices of ``image`` with ``labels`` on top as RGB arrays (radiological display).

    ``image``/``labels``: MetaTensors (or arrays) ``(1, i, j, k)`` or ``(1, i, j)`` on the same grid,
    affine voxel -> RAS mm. 3D: for each view, ``n_slices`` slices spread through the labelled
    region; 2D: one panel. ``window`` = (low, high) intensity range (e.g. HU), default the 1-99th
    percentiles. Colours come from :mod:`medseg.labels` when ``label_names`` (or
    ``labels.meta['labels']``) name a registered label. Panels have square display pixels.
    """
    import nibabel.orientations as nio

    img = spatial(as_numpy(image), "image", multi_channel=True)
    if img.ndim not in (2, 3):
        raise InputError(f"image must be 2D or 3D, got shape {img.shape}")
    if img.size == 0:
        raise InputError("image is empty")
    aff = _affine(image, img.ndim)
    lab = None
    if labels is not None:
        lab = spatial(as_numpy(labels), "labels")
        if lab.shape != img.shape:
            raise GeometryError(f"labels shape {lab.shape} differs from the image's {img.shape}; "
                                "resample the labels to the image grid first")
        laff = _affine(labels, lab.ndim)
        if getattr(labels, "affine", None) is not None and getattr(image, "affine", None) is not None \
                and not np.allclose(laff, aff, atol=1e-3):
            raise GeometryError("labels and image have different affines; resample the labels to the "
                                "image grid first")
        if lab.dtype.kind == "f":
            lab = np.rint(lab)
        lab = lab.astype(np.int32, copy=False)
        if lab.size and lab.min() < 0:
            raise InputError("labels hold negative values; label values must be 0 or positive")
    names = _label_names(labels, label_names)
    values = [int(v) for v in np.flatnonzero(np.bincount(lab.ravel())) if v != 0] \
        if lab is not None and lab.size else []
    colours = {v: label_colour(names.get(v), v) for v in values}
    lohi = _window(img, window)
    if n_slices < 1:
        raise ConfigError(f"n_slices must be >= 1, got {n_slices}")
    unknown = [v for v in views if v not in VIEWS]
    if unknown:
        raise ConfigError(f"unknown view(s) {unknown}; use {', '.join(VIEWS)}")

    spacing = np.asarray(spacing_of(aff, 3))
    if img.ndim == 2:
        # as stored: rows = j, columns = i
        letters = _letters_2d(getattr(image, "meta", None))
        sl = img.T
        lb = lab.T if lab is not None else None
        disp_img = _resample_square(sl, float(spacing[1]) or 1.0, float(spacing[0]) or 1.0, max_panel_px)
        disp_lab = _resample_square(lb, float(spacing[1]) or 1.0, float(spacing[0]) or 1.0, max_panel_px) \
            if lb is not None else None
        present = [v for v in values if disp_lab is not None and np.any(disp_lab == v)]
        return [OverlayPanel("2d", 0, None, _render(disp_img, disp_lab, lohi, colours, alpha), letters,
                             present)]

    # 3D: reorient to RAS+ (closest axes), then slice and flip for the radiological display
    ornt = nio.ornt_transform(nio.io_orientation(aff), nio.axcodes2ornt(("R", "A", "S")))
    ras_img = nio.apply_orientation(img, ornt)
    ras_lab = nio.apply_orientation(lab, ornt) if lab is not None else None
    ras_aff = aff @ nio.inv_ornt_aff(ornt, img.shape)
    ras_spacing = np.asarray(spacing_of(ras_aff, 3))
    panels: list[OverlayPanel] = []
    flat_axes = [a for a in range(3) if ras_img.shape[a] == 1]
    for view in views:
        axis = _VIEW_AXIS[view]
        if flat_axes and axis not in flat_axes:  # a one-slice volume: only its own plane is a picture
            continue
        other = [a for a in range(3) if a != axis]  # (columns axis, rows axis) before flipping
        if ras_lab is not None:
            holds = np.flatnonzero(np.any(ras_lab != 0, axis=tuple(other)))
        else:
            holds = np.array([], dtype=int)
        for idx in _pick(holds, ras_img.shape[axis], n_slices):
            take = [slice(None)] * 3
            take[axis] = idx
            # (col axis, row axis) -> transpose to rows x cols, flip both: right/anterior/superior
            # index maximum goes to the image left/top
            sl = ras_img[tuple(take)].T[::-1, ::-1]
            lb = ras_lab[tuple(take)].T[::-1, ::-1] if ras_lab is not None else None
            row_mm, col_mm = float(ras_spacing[other[1]]), float(ras_spacing[other[0]])
            disp_img = _resample_square(sl, row_mm, col_mm, max_panel_px)
            disp_lab = _resample_square(lb, row_mm, col_mm, max_panel_px) if lb is not None else None
            centre = np.zeros(4)
            centre[axis] = idx
            centre[other[0]] = (ras_img.shape[other[0]] - 1) / 2
            centre[other[1]] = (ras_img.shape[other[1]] - 1) / 2
            centre[3] = 1.0
            pos = float((ras_aff @ centre)[axis])
            present = [v for v in values if disp_lab is not None and np.any(disp_lab == v)]
            panels.append(OverlayPanel(view, int(idx), pos,
                                       _render(disp_img, disp_lab, lohi, colours, alpha),
                                       _VIEW_LETTERS[view], present))
    return panels


def _display_name(name: str | None, value: int) -> str:
    if name is None:
        return f"label {value}"
    found = lookup_label(name)
    return found.display if found is not None else name


#: A panel at least this many times wider than tall is a strip (a thin series seen from the front
#: or the side): its row gets half the columns, so each strip is drawn twice as large.
STRIP_ASPECT = 2.5


def montage_layout(panels: Sequence[OverlayPanel], *, max_width_px: int = 1600, max_height_px: int = 1400
                   ) -> tuple[list[tuple[str, list[OverlayPanel], int]], list[float], float]:
    """How :func:`save_overlay_montage` lays out ``panels``: rows ``(view, panels shown, columns)``,
    each row's height and the montage width in display pixels. Every row has the columns of the
    fullest one, except rows of strips (width >= :data:`STRIP_ASPECT` x height): they show every
    other slice in half as many columns, each twice as wide and tall."""
    rows_of: dict[str, list[OverlayPanel]] = {}
    for p in panels:
        rows_of.setdefault(p.view, []).append(p)
    base = max(len(v) for v in rows_of.values())
    rows = []
    for view, ps in rows_of.items():
        strip = len(ps) > 1 and min(p.rgb.shape[1] / p.rgb.shape[0] for p in ps) >= STRIP_ASPECT
        rows.append((view, ps[::2], max(1, -(-base // 2))) if strip else (view, ps, base))
    col_w = max(p.rgb.shape[1] for p in panels)
    width = float(min(max_width_px, col_w * base))
    ratios = [max(p.rgb.shape[0] / p.rgb.shape[1] for p in ps) / n for _, ps, n in rows]
    if width * sum(ratios) > max_height_px:
        width = max_height_px / sum(ratios)
    return rows, [width * r for r in ratios], width


def save_overlay_montage(
    image: Any,
    labels: Any | None,
    out_png: str | os.PathLike[str],
    *,
    n_slices: int = 6,
    views: Sequence[str] = VIEWS,
    window: tuple[float, float] | None = None,
    title: str | None = None,
    label_names: Mapping[int, str] | None = None,
    alpha: float = 0.4,
    dpi: int = 100,
) -> Path:
    """Write a PNG montage: one row per view (3D) or a single panel (2D), labels drawn in colour
    with contours, orientation letters (R/L/A/P/S/I) on the panel edges, and a legend.

    See :func:`overlay_slices` for the inputs and the display convention. ``title`` must not hold
    patient identity. Written atomically; returns ``out_png``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    panels = overlay_slices(image, labels, n_slices=n_slices, views=views, window=window,
                            label_names=label_names, alpha=alpha)
    rows, row_px, width_px = montage_layout(panels)
    n_rows = len(rows)
    legend_h = 0.5
    top_in = 0.55 if title else 0.25
    width_in = max(4.0, width_px / dpi + 0.4)
    height_in = sum(row_px) / dpi + 0.3 * n_rows + top_in + legend_h
    fig = Figure(figsize=(width_in, height_in), dpi=dpi, facecolor="black")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(n_rows, 1, height_ratios=row_px, left=0.01, right=0.99,
                            bottom=legend_h / height_in, top=1 - top_in / height_in, hspace=0.25)
    for r, (view, ps, n_cols) in enumerate(rows):
        sub = grid[r].subgridspec(1, n_cols, wspace=0.03)
        for c in range(n_cols):
            ax = fig.add_subplot(sub[0, c])
            ax.set_axis_off()
            if c >= len(ps):
                continue
            p = ps[c]
            ax.imshow(p.rgb, interpolation="nearest", aspect="equal")
            caption = view if p.position_mm is None else f"{view} {p.position_mm:+.1f} mm"
            ax.set_title(caption, color="white", fontsize=7, pad=2)
            style = {"color": "yellow", "fontsize": 8, "fontweight": "bold"}
            left, right, top, bottom = p.letters
            if left:  # in data coordinates: on the edges of the picture itself
                h, w = p.rgb.shape[:2]
                ax.text(0.5, h / 2, left, ha="left", va="center", **style)
                ax.text(w - 1.5, h / 2, right, ha="right", va="center", **style)
                ax.text(w / 2, 0.5, top, ha="center", va="top", **style)
                ax.text(w / 2, h - 1.5, bottom, ha="center", va="bottom", **style)
    names = _label_names(labels, label_names) if labels is not None else {}
    present = sorted({v for p in panels for v in p.labels_present})
    if present:
        handles = [Patch(facecolor=np.asarray(label_colour(names.get(v), v)) / 255.0,
                         edgecolor="white", label=f"{v}: {_display_name(names.get(v), v)}")
                   for v in present]
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=7,
                   frameon=False, labelcolor="white")
    if title:
        fig.suptitle(title, color="white", fontsize=10)
    out = Path(out_png)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, facecolor=fig.get_facecolor())
    return out
