"""File-to-file :mod:`medseg.io.regrid`: what ``medseg resample`` and ``medseg reorient`` run
(numpy only: no torch, no MONAI). Outputs are written atomically by :func:`medseg.io.write.save`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medseg.errors import ConfigError, InputError
from medseg.io.regrid import grid_for_spacing, reorient, resample
from medseg.io.write import output_format, save

__all__ = ["reorient_file", "resample_file"]


def _read(path: str | os.PathLike[str], kind: str, series: str | None):
    """(voxels, affine, is_label): a LabelMap (``kind`` label, or auto-detected) is resampled with
    nearest neighbour only (:attr:`medseg.io.image.Image.interpolation`); every reader gives a
    label map as integers (or refuses non-integer values in one line)."""
    from medseg.io.image import to_image
    from medseg.io.read import read_volume

    if kind not in ("auto", "image", "label"):
        raise ConfigError(f"kind {kind!r} is not one of auto, image, label")
    image = to_image(read_volume(path, series=series, kind=kind))
    arr = image.numpy()
    if arr.ndim != 4:
        raise InputError(f"{Path(path).name} is not a 3D volume (shape {arr.shape[1:]}); only 3D grids are "
                         "resampled or reoriented")
    return arr, image.affine, image.interpolation == "nearest"


def resample_file(input_path: str | os.PathLike[str], output_path: str | os.PathLike[str], *,
                  like: str | os.PathLike[str] | None = None, spacing: Sequence[float] | None = None,
                  kind: str = "auto", order: int | None = None, series: str | None = None) -> tuple[Path, str]:
    """Resample ``input_path`` onto the grid of ``like`` or onto ``spacing`` (mm, same field of view)
    and write ``output_path``; returns (path, one-line note of what was done). Label maps (``kind``
    label, or auto-detected) use nearest neighbour only."""
    output_format(output_path)
    if (like is None) == (spacing is None):
        raise ConfigError("give exactly one target: --like REF or --spacing X Y Z")
    arr, aff, is_label = _read(input_path, kind, series)
    if like is not None:
        from medseg.io.read import read_volume

        ref = read_volume(like, kind="auto")
        if ref.ndim != 4:
            raise InputError(f"{Path(like).name} is not a 3D volume; it cannot be a target grid")
        target_aff, target_shape = np.asarray(ref.affine, dtype=np.float64), tuple(int(s) for s in ref.shape[1:])
        what = f"the grid of {Path(like).name}"
    else:
        target_aff, target_shape = grid_for_spacing(aff, arr.shape[1:], spacing)
        what = "spacing " + " x ".join(f"{float(s):g}" for s in spacing) + " mm"
    out = resample(arr, aff, target_aff, target_shape, label=is_label, order=order)
    path = save(out, output_path, affine=target_aff)
    how = "nearest neighbour (label map)" if is_label else {0: "nearest neighbour", 1: "linear", 3: "cubic",
                                                             None: "linear"}[order]
    shape = "x".join(str(s) for s in target_shape)
    return path, f"resampled {Path(input_path).name} onto {what} ({shape} voxels), {how}"


def reorient_file(input_path: str | os.PathLike[str], output_path: str | os.PathLike[str], *, target: str = "RAS",
                  kind: str = "auto", series: str | None = None) -> tuple[Path, str]:
    """Write ``input_path`` with its axes along ``target`` (e.g. ``"LPS"``), exactly (transposes
    and flips; every voxel keeps its world position); returns (path, one-line note)."""
    from medseg.io.read import orientation_code

    output_format(output_path)
    arr, aff, _ = _read(input_path, kind, series)
    out, new_aff = reorient(arr, aff, target)
    path = save(out, output_path, affine=new_aff)
    return path, (f"reoriented {Path(input_path).name} from {orientation_code(aff)} to "
                  f"{orientation_code(new_aff)} (no interpolation)")
