"""What one ``medseg view`` serves: the image, its label maps, the legend, prompts and saving.

Everything here is plain Python over medseg's readers, writers, statistics and prompt API; the
HTTP layer (:mod:`medseg.viewer.server`) only routes requests to these methods. Volumes leave as
gzip-compressed NIfTI bytes on the **source grid** (the voxels and the RAS+ affine of
:func:`medseg.io.load`, nothing resampled), so the browser places them with the same affine every
medseg writer uses. No path, file name or header string of the input reaches the page: volumes
are named by role (``image``, ``labels``, ``reference``, ``mask``).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import ConfigError, InputError
from medseg.geometry import affine_of, as_numpy, spacing_of
from medseg.viewer.grid import (
    DEFAULT_MAX_VOXELS,
    FULL_SIDE,
    DisplayGrid,
    EditableMask,
    crop_nifti,
    full_resolution_box,
    read_crop,
)
from medseg.viewer.volumes import compact_image, load_labels_on, nifti_gz

ROLES = ("image", "labels", "reference", "mask")
# Window (width, level) presets in HU; the first is the default for CT.
CT_PRESETS = {"soft tissue": (400, 40), "lung": (1500, -600), "bone": (1800, 400), "brain": (80, 40),
              "liver": (150, 90), "mediastinum": (350, 50)}
SAVE_NAME = {"nifti": re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,80}\.nii(\.gz)?$"),
             "dicom-seg": re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,80}\.dcm$"),
             "rtstruct": re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,80}\.dcm$")}
DEFAULT_NAME = {"nifti": "prompt_mask.nii.gz", "dicom-seg": "prompt_mask_seg.dcm", "rtstruct": "prompt_mask_rtstruct.dcm"}


class ViewerSession:
    """One image, optional prediction and reference label maps, and the prompt mask being built.

    Thread-safe: the HTTP server handles requests on several threads; prompts and saves are
    serialised by one lock.
    """

    def __init__(self, image: Any, *, labels: np.ndarray | None = None, label_names: Mapping[int, str] | None = None,
                 reference: np.ndarray | None = None, reference_names: Mapping[int, str] | None = None,
                 output_dir: str | Path | None = None, prompt_method: str | None = None,
                 max_voxels: int = DEFAULT_MAX_VOXELS, edit_labels: bool = False, prompt_model: Any = None) -> None:
        """``edit_labels=True`` (batch review): the editable label map starts as ``labels`` and its
        structures are the values a brush or a prompt may write; otherwise it starts empty and a
        prompt's object is value 1. ``prompt_method`` None: the viewer's default
        (:func:`medseg.viewer.prompting.default_method`: the trained network for 3D images when its
        bundle is there); ``prompt_model``: a promptable bundle folder that method ``promptable`` uses."""
        from medseg.viewer.prompting import default_method

        self.image = image
        self.affine = affine_of(image)
        arr = as_numpy(image)
        if arr.ndim not in (3, 4) or arr.shape[0] != 1:
            raise InputError(f"the viewer shows one-channel 2D and 3D images; this one has shape {tuple(arr.shape)}")
        self.array = arr[0]
        self.shape = tuple(int(s) for s in self.array.shape)
        self.shape3 = self.shape if len(self.shape) == 3 else (*self.shape, 1)
        self.grid = DisplayGrid.for_image(self.shape3, self.affine, max_voxels)
        self.modality = str((getattr(image, "meta", {}) or {}).get("modality", "unknown"))
        self.labels = labels
        self.label_names = dict(label_names or {})
        self.reference = reference
        self.reference_names = dict(reference_names or label_names or {})
        self.output_dir = Path(output_dir) if output_dir is not None else None
        if prompt_model is not None:  # a promptable bundle (name or folder); anything else: one line
            from medseg.prompt.network import resolve_bundle

            if prompt_method not in (None, "promptable"):
                raise ConfigError(f"a promptable model is the network; method {prompt_method!r} does not take one")
            prompt_model = resolve_bundle(prompt_model, len(self.shape))
        self.prompt_model = prompt_model
        self.prompt_method = prompt_method or ("promptable" if prompt_model is not None
                                               else default_method(len(self.shape)))
        self.edit_labels = edit_labels and labels is not None
        initial = labels.reshape(self.shape3) if self.edit_labels else None
        if initial is not None and int(initial.max(initial=0)) > 253:
            raise InputError("label values above 253 cannot be edited in the viewer")
        self.edits = EditableMask(self.shape3, initial)
        self.prompt_log: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._cache: dict[str, bytes] = {}
        self._scribbles: np.ndarray | None = None
        self.review_key: str | None = None  # the batch case shown (review mode)

    @property
    def mask(self) -> np.ndarray | None:
        """The editable label map on the source grid (the image's shape), None while it is empty
        (and not a reviewed prediction)."""
        arr = self.edits.array.reshape(self.shape)
        return arr if self.edit_labels or arr.any() else None

    @property
    def mask_names(self) -> dict[int, str]:
        return dict(self.label_names) if self.edit_labels else {1: "object"}

    @property
    def allowed_values(self) -> set[int]:
        """Values a brush stroke or a prompt may write (0 erases)."""
        values = {0, *self.mask_names}
        if self.edit_labels and self.labels is not None:
            values |= {int(v) for v in np.unique(self.labels)}
        return {v for v in values if 0 <= v <= 253}

    @classmethod
    def from_paths(cls, path: str | Path, *, labels: str | Path | None = None, reference: str | Path | None = None,
                   output_dir: str | Path | None = None, series: str | None = None,
                   prompt_method: str | None = None, max_voxels: int = DEFAULT_MAX_VOXELS,
                   prompt_model: Any = None) -> ViewerSession:
        """Read ``path`` with :func:`medseg.io.load` and the label maps on its grid."""
        from medseg.io import load

        image = load(path, series=series)
        lab, names = load_labels_on(labels, image) if labels is not None else (None, {})
        ref, ref_names = load_labels_on(reference, image) if reference is not None else (None, {})
        return cls(image, labels=lab, label_names=names, reference=ref, reference_names=ref_names or names,
                   output_dir=output_dir, prompt_method=prompt_method, max_voxels=max_voxels,
                   prompt_model=prompt_model)

    # ---------------------------------------------------------------- what the page reads
    def volume_bytes(self, role: str) -> bytes:
        """gzip NIfTI of ``role`` (one of :data:`ROLES`) on the display grid (the source grid unless
        the study is larger than ``max_voxels``: see :class:`~medseg.viewer.grid.DisplayGrid`)."""
        if role not in ROLES:
            raise ConfigError(f"unknown volume {role!r}")
        if role == "mask":
            with self._lock:
                return crop_nifti(self.grid, self.edits.array, None)
        with self._lock:
            if role not in self._cache:
                arr = {"image": None, "labels": self.labels, "reference": self.reference}[role]
                if role == "image":
                    arr = compact_image(self.grid.sample(self.array.reshape(self.shape3)))
                elif arr is None:
                    raise ConfigError(f"no {role} were given")
                else:
                    arr = self.grid.sample(arr.reshape(self.shape3))
                self._cache[role] = nifti_gz(arr, self.grid.affine)
            return self._cache[role]

    def full_resolution(self, role: str, centre_mm: Sequence[float], side: int = FULL_SIDE) -> tuple[bytes, dict]:
        """gzip NIfTI of ``role`` on the **source** grid in a box of at most ``side`` voxels per axis
        around ``centre_mm`` (RAS mm), its affine the source's moved to the box's first voxel: what
        a reduced study's page shows at full resolution on demand. Returns (bytes, {lo, shape})."""
        if role not in ROLES:
            raise ConfigError(f"unknown volume {role!r}")
        lo, hi = full_resolution_box(self.shape3, self.affine, centre_mm, side)
        sl = tuple(slice(a, b + 1) for a, b in zip(lo, hi, strict=True))
        with self._lock:
            if role == "mask":
                arr = np.array(self.edits.array[sl], dtype=np.uint8)
            elif role == "image":
                arr = compact_image(self.array.reshape(self.shape3)[sl])
            else:
                src = self.labels if role == "labels" else self.reference
                if src is None:
                    raise ConfigError(f"no {role} were given")
                arr = np.ascontiguousarray(src.reshape(self.shape3)[sl])
        box_affine = DisplayGrid(self.shape3, self.affine, (1, 1, 1)).box_affine(lo)
        return nifti_gz(arr, box_affine), {"lo": list(lo), "shape": [b - a + 1 for a, b in zip(lo, hi, strict=True)]}

    def mask_volumes(self) -> list[dict[str, Any]]:
        """The editable label map's structures as they are now: value, name, colour, voxels and size
        (mL; cm\u00b2 for a 2D image) = voxels x the voxel's volume. Sent with every change (prompt,
        stroke, undo, redo, clear), so the page's legend follows the edits. Call with the lock held
        or from a method that holds it."""
        counts = np.bincount(self.edits.array.ravel(), minlength=1)
        unit = self._unit_size()
        names = self.mask_names
        out = []
        for v in np.flatnonzero(counts[1:]) + 1:
            name = names.get(int(v), str(int(v)))
            out.append({"value": int(v), "name": name, "colour": list(self._colour(int(v), name)),
                        "voxels": int(counts[v]), "size": int(counts[v]) * unit})
        return out

    def _unit_size(self) -> float:
        """A voxel's volume in mL (3D) or a pixel's area in cm\u00b2 (2D)."""
        if len(self.shape) == 3:
            return float(abs(np.linalg.det(self.affine[:3, :3]))) / 1000.0
        return float(np.linalg.norm(np.cross(*self.affine[:3, :2].T))) / 100.0

    def legend(self, which: str = "labels") -> list[dict[str, Any]]:
        """One entry per structure: value, name, RGB colour, voxels and volume in mL
        (:func:`medseg.metrics.structures.structure_statistics`)."""
        from medseg.labels import label_colour
        from medseg.metrics.structures import structure_statistics

        arr = self.labels if which == "labels" else self.reference
        names = self.label_names if which == "labels" else self.reference_names
        if arr is None:
            return []
        table = structure_statistics(arr, self.array, self.affine, names={int(k): v for k, v in names.items()})
        out = []
        for key, entry in sorted(table.items(), key=lambda kv: int(kv[0])):
            value = int(key)
            if not entry.get("voxels"):
                continue  # named but absent: not shown
            name = entry.get("name") or str(value)
            n = int(entry.get("voxels", 0))
            item = {"value": value, "name": name, "colour": list(label_colour(names.get(value), value)), "voxels": n}
            if len(self.shape) == 3:
                item["volume_ml"] = item["size"] = float(entry.get("volume_ml", 0.0))
            else:  # area: pixel area in mm^2 / 100
                item["area_cm2"] = item["size"] = n * float(np.linalg.norm(np.cross(*self.affine[:3, :2].T))) / 100.0
            out.append(item)
        return out

    def presets(self) -> dict[str, list[float]]:
        """Window presets as ``{name: [low, high]}``: the standard HU windows for CT, percentiles otherwise."""
        if self.looks_like_ct():
            return {k: [lv - w / 2, lv + w / 2] for k, (w, lv) in CT_PRESETS.items()}
        sample = self.array.ravel()[:: max(1, self.array.size // 2_000_000)]
        lo, hi = (float(v) for v in np.percentile(sample, [1, 99])) if sample.size else (0.0, 1.0)
        wide = [float(sample.min()), float(sample.max())] if sample.size else [0.0, 1.0]
        return {"auto (1-99%)": [lo, hi if hi > lo else lo + 1], "full range": wide}

    def looks_like_ct(self) -> bool:
        """CT by its header, or (NIfTI and friends carry no modality) by voxels in Hounsfield units:
        air at about -1000 HU and nothing below -1100 beyond the padding value -1024/-2048/-3024."""
        if self.modality == "CT":
            return True
        if self.modality not in ("unknown", ""):
            return False
        sample = self.array.ravel()[:: max(1, self.array.size // 2_000_000)]
        if sample.size == 0:
            return False
        return bool(np.percentile(sample, 1) <= -900 and float(sample.max()) >= 100 and float(sample.min()) >= -3100)

    def info(self) -> dict[str, Any]:
        """What the page needs to set itself up; never a path, file name or patient attribute."""
        from medseg.io.read import orientation_code
        from medseg.viewer.prompting import describe

        nd = len(self.shape)
        spacing = list(spacing_of(self.affine, nd))
        modality = self.modality if self.modality not in ("unknown", "") or not self.looks_like_ct() else "CT (by HU)"
        return {"shape": list(self.shape), "spacing_mm": spacing, "modality": modality,
                "orientation": orientation_code(self.affine, nd), "presets": self.presets(),
                "labels": self.legend("labels"), "reference": self.legend("reference"),
                "has_labels": self.labels is not None, "has_reference": self.reference is not None,
                "volume_unit": "mL" if nd == 3 else "cm\u00b2",  # a 2D image's structures have areas
                "can_save": self.output_dir is not None, "prompt_method": self.prompt_method,
                "prompt_method_label": describe(self.prompt_method, self.prompt_model, nd),
                "mask_volumes": self.mask_volumes(), "full_side": FULL_SIDE,
                "can_save_seg": self.output_dir is not None and self.can_save_seg,
                "display": self.grid.info(), "edit_labels": self.edit_labels,
                "mask_legend": [{"value": v, "name": n, "colour": list(self._colour(v, n))}
                                for v, n in sorted(self.mask_names.items())],
                "undo": self.edits.can_undo, "redo": self.edits.can_redo}

    def _colour(self, value: int, name: str) -> tuple[int, int, int]:
        from medseg.labels import label_colour

        return (255, 255, 0) if not self.edit_labels else tuple(label_colour(name, value))  # a prompt: yellow

    # ---------------------------------------------------------------- prompting and saving
    def prompt(self, *, box: Sequence[float] | None = None, points: Sequence[Sequence[float]] | None = None,
               labels: Sequence[int] | None = None, extreme_points: Sequence[Sequence[float]] | None = None,
               refine: bool = False, value: int = 1) -> dict[str, Any]:
        """Run :func:`medseg.prompt.segment` with world-mm (RAS) prompts; the object becomes structure
        ``value`` of the label map (its earlier voxels replaced).

        ``refine=True`` corrects the current object with the clicks (passed as ``previous``), the
        way a corrective click works; otherwise the prompts start a new object. Undo brings back
        the map before it. Returns voxels, volume (mL), seconds, the method and the changed box.
        """
        if box is None and not points and not extreme_points:
            raise ConfigError("a prompt needs a box, extreme points or at least one click")
        t0 = time.perf_counter()
        value = self._check_value(value)
        voxel = False
        if len(self.shape) == 2:
            # the page works in 3D world mm; a 2D image's plane may be any (a radiograph's is x-z), so
            # its prompts become voxel indices through the full affine (the point's projection on the plane)
            voxel = True
            points = self._plane_indices(points) if points else points
            extreme_points = self._plane_indices(extreme_points) if extreme_points else extreme_points
            if box is not None:
                corners = self._plane_indices([list(box)[:3], list(box)[3:6]])
                box = corners[0] + corners[1]
        kwargs = {"points": list(points) if points else None, "labels": list(labels) if labels else None,
                  "box": list(box) if box is not None else None,
                  "extreme_points": list(extreme_points) if extreme_points else None}
        return self._segment(kwargs, refine=refine, value=value, voxel=voxel, t0=t0, scribbles=False)

    def scribble(self, body: bytes, *, value: int = 1, refine: bool = False) -> dict[str, Any]:
        """Scribbles drawn on the page (a checked gzip NIfTI box of the display grid: 1 object,
        2 background) join this object's earlier scribbles and go to
        :func:`medseg.prompt.segment` as ``scribbles=`` (with the current object as ``previous``
        when ``refine``); a new object (box, extreme points, first click) starts them afresh."""
        t0 = time.perf_counter()
        value = self._check_value(value)
        lo, crop = read_crop(body, self.grid, {0, 1, 2})
        if not crop.any():
            raise ConfigError("the scribble is empty")
        strokes = EditableMask(self.shape3)
        strokes.apply_display_edit(self.grid, lo, crop)
        with self._lock:
            acc = self._scribbles if self._scribbles is not None else np.zeros(self.shape3, dtype=np.uint8)
            acc = acc.copy()
            acc[strokes.array > 0] = strokes.array[strokes.array > 0]
        return self._segment({"scribbles": acc.reshape(self.shape)}, refine=refine, value=value,
                             voxel=len(self.shape) == 2, t0=t0, scribbles=acc)

    def _segment(self, kwargs: dict[str, Any], *, refine: bool, value: int, voxel: bool, t0: float,
                 scribbles: np.ndarray | bool) -> dict[str, Any]:
        from medseg.prompt import segment

        with self._lock:
            obj = self.edits.array == value
            previous = obj.reshape(self.shape) if refine and obj.any() else None
        if self.prompt_model is not None:
            kwargs["model"] = self.prompt_model
        res = segment(self._prompt_image(), previous=previous, method=self.prompt_method, voxel=voxel, **kwargs)
        found = np.asarray(as_numpy(res)[0], dtype=bool).reshape(self.shape3)
        with self._lock:
            new = self.edits.array.copy()
            new[new == value] = 0
            new[found] = value
            changed = self.edits.replace(new)
            self.prompt_log = dict(res.meta.get("prompt", {}))
            if scribbles is False and not refine:
                self._scribbles = None  # a new object: its scribbles start afresh
            elif isinstance(scribbles, np.ndarray):
                self._scribbles = scribbles
            return self._summary(time.perf_counter() - t0, changed, value)

    def edit(self, body: bytes) -> dict[str, Any]:
        """A brush / eraser stroke from the page: a gzip NIfTI box of the display grid, checked by
        :func:`~medseg.viewer.grid.read_crop` (size, grid, affine, values) before it changes the
        label map; one undo step."""
        t0 = time.perf_counter()
        lo, crop = read_crop(body, self.grid, self.allowed_values)
        with self._lock:
            changed = self.edits.apply_display_edit(self.grid, lo, crop)
            return self._summary(time.perf_counter() - t0, changed, None)

    def _check_value(self, value: Any) -> int:
        try:
            v = int(value)
        except (TypeError, ValueError):
            raise ConfigError("a structure value is a whole number") from None
        if v == 0 or v not in self.allowed_values:
            raise ConfigError(f"structure {v} is not one this label map may hold")
        return v

    def _prompt_image(self) -> Any:
        """The image the prompt method sees: itself in 3D; in 2D the same voxels with an in-plane
        affine (its spacing), since the prompts arrive as voxel indices and medseg.prompt reads a 2D
        spacing from the affine's x-y block (zero for a radiograph, whose plane is x-z)."""
        if len(self.shape) == 3:
            return self.image
        import torch
        from monai.data import MetaTensor

        sx, sy = spacing_of(self.affine, 2)
        return MetaTensor(torch.as_tensor(self.array)[None], affine=torch.diag(torch.tensor([sx, sy, 1.0, 1.0],
                                                                                                dtype=torch.float64)))

    def _plane_indices(self, points: Sequence[Sequence[float]]) -> list[list[float]]:
        """RAS mm (x, y, z) -> continuous voxel indices (i, j) of this 2D image's plane (least squares)."""
        pts = np.asarray(points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 3 or not np.isfinite(pts).all():
            raise ConfigError("points must be (x, y, z) in mm")
        cols = self.affine[:3, :2]
        ij, *_ = np.linalg.lstsq(cols, (pts - self.affine[:3, 3]).T, rcond=None)
        return [[float(v) for v in row] for row in ij.T]

    def undo(self) -> dict[str, Any]:
        """Back to the label map before the last change (prompt, stroke, clear)."""
        with self._lock:
            return self._summary(0.0, self.edits.undo(), None)

    def redo(self) -> dict[str, Any]:
        """Forward again to the change the last undo took back."""
        with self._lock:
            return self._summary(0.0, self.edits.redo(), None)

    def clear(self) -> dict[str, Any]:
        """An empty label map (undo brings it back)."""
        with self._lock:
            self._scribbles = None
            return self._summary(0.0, self.edits.replace(np.zeros_like(self.edits.array)), None)

    def delta_bytes(self, summary: Mapping[str, Any]) -> bytes:
        """The display-grid box a change touched, as gzip NIfTI (empty when nothing shown changed)."""
        box = summary.get("roi")
        if not box:
            return b""
        with self._lock:
            return crop_nifti(self.grid, self.edits.array, (tuple(box[0]), tuple(box[1])))

    def _summary(self, seconds: float, changed: Any, value: int | None) -> dict[str, Any]:
        arr = self.edits.array
        n = int(np.count_nonzero(arr if value is None else arr == value))
        voxel_ml = float(abs(np.linalg.det(self.affine[:3, :3]))) / 1000.0 if len(self.shape) == 3 else None
        shown = None if changed is None else self.grid.to_display(changed)
        return {"voxels": n, "volume_ml": None if voxel_ml is None else n * voxel_ml, "seconds": seconds,
                "method": self.prompt_method, "has_mask": bool(arr.any()), "value": value,
                "roi": None if shown is None else [list(shown[0]), list(shown[1])],
                "undo": self.edits.can_undo, "redo": self.edits.can_redo, "legend": self.mask_volumes()}

    def save(self, name: str | None = None, format: str = "nifti") -> str:  # noqa: A002 - the CLI's word
        """Write the prompt mask on the source grid into the output folder: ``format="nifti"`` with
        :func:`medseg.io.save_labels`, ``"dicom-seg"`` (DICOM inputs only) with the CLI's
        :func:`medseg.io.dicom_seg.write_dicom_seg`, ``"rtstruct"`` with
        :func:`medseg.io.dicom_rtstruct.write_rtstruct`. ``name`` is one plain file name (no folder).
        Returns the name written; the prompts go beside it as ``<name>.prompt.json``."""
        from medseg.io import save_labels
        from medseg.io.atomic import atomic_write_text

        if self.output_dir is None:
            raise ConfigError("this viewer was started without an output folder")
        if format not in SAVE_NAME:
            raise ConfigError(f"unknown save format {format!r}; use nifti, dicom-seg or rtstruct")
        name = DEFAULT_NAME[format] if name is None else name
        if not isinstance(name, str) or not SAVE_NAME[format].match(name) or ".." in name:
            raise ConfigError(f"a save name is one file name ending in {'.nii.gz' if format == 'nifti' else '.dcm'}"
                              " (letters, digits, _ . -)")
        if format != "nifti" and not self.can_save_seg:
            raise ConfigError("a DICOM SEG or RTSTRUCT needs a DICOM series as the viewed image")
        with self._lock:
            mask = self.mask
            if mask is None:
                raise ConfigError("nothing to save: draw a box, click or brush first")
            self.output_dir.mkdir(parents=True, exist_ok=True)
            if format in ("dicom-seg", "rtstruct"):
                import torch
                from monai.data import MetaTensor

                from medseg.io.dicom_rtstruct import write_rtstruct
                from medseg.io.dicom_seg import write_dicom_seg

                labels = MetaTensor(torch.from_numpy(mask.copy())[None], affine=torch.as_tensor(self.affine))
                writer = write_dicom_seg if format == "dicom-seg" else write_rtstruct
                present = {int(v) for v in np.unique(mask) if v}
                writer(labels, self.image, self.output_dir / name,
                       label_names={v: n for v, n in self.mask_names.items() if v in present} or {1: "object"},
                       series_description="medseg view prompt")
            else:
                save_labels(mask, self.image, self.output_dir / name)
            if self.prompt_log is not None:
                side = self.output_dir / (name.split(".nii")[0].removesuffix(".dcm") + ".prompt.json")
                atomic_write_text(side, json.dumps(self.prompt_log, indent=2, default=str) + "\n")
        return name

    @property
    def can_save_seg(self) -> bool:
        meta = getattr(self.image, "meta", {}) or {}
        return meta.get("format") == "dicom" and bool(meta.get("dicom_files")) and len(self.shape) == 3
