"""Writing phantoms: NIfTI / DICOM files, MetaTensors and MSD-layout datasets."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.phantoms._core import (
    Orientation,
    Phantom,
)
from medseg.data.phantoms.abdomen import abdomen_ct
from medseg.data.phantoms.brain import brain_mr
from medseg.data.phantoms.chest_ct import lung_ct
from medseg.data.phantoms.nuclei import nuclei_2d
from medseg.data.phantoms.spine import spine_ct
from medseg.data.phantoms.xray import chest_xray
from medseg.errors import ConfigError, InputError
from medseg.settings import progress_enabled


def _save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    import nibabel as nib

    from medseg.io.atomic import atomic_path

    img = nib.Nifti1Image(array, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_sform(affine, code=1)  # scanner anat
    img.set_qform(affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(img, tmp)


def _write_json(path: Path, obj: Any) -> None:
    from medseg.io.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def save_phantom(phantom: Phantom, out: str | os.PathLike[str], format: str = "nifti") -> Path:
    """Write a phantom into folder ``out``; return ``out``.

    ``format="nifti"``: ``image.nii.gz`` (float32) and ``label.nii.gz`` (uint8) with the RAS
    affine as sform and qform (+ ``instances.nii.gz`` for nuclei). ``format="dicom"``: ``image/``,
    a real CT/MR series (one file per slice, via :mod:`medseg.data.dicom_writer`), or
    ``image.dcm`` (DX radiograph) for a 2D X-ray phantom; the label is written as
    ``label.nii.gz`` beside it (exact, on the same grid). Both write ``phantom.json`` (labels,
    modality, generator, seed). All files are written atomically.
    """
    out = Path(out)
    fmt = format.lower()
    if fmt not in ("nifti", "dicom"):
        raise ConfigError(f"format {format!r} is unknown: use 'nifti' or 'dicom'")
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "nifti":
        _save_nifti(phantom.image.astype(np.float32), phantom.affine, out / "image.nii.gz")
    else:
        from medseg.data import dicom_writer

        if phantom.image.ndim == 3:
            vol = phantom.image
            if phantom.modality == "MR":
                vol = np.clip(np.round(vol), 0, 32767)
            dicom_writer.write_dicom_series(vol, phantom.affine, out / "image", modality=phantom.modality,
                                            series_description=f"medseg phantom {phantom.meta.get('generator', '')}",
                                            seed=int(phantom.meta.get("seed", 0)))
        elif phantom.modality in ("DX", "CR"):
            dicom_writer.write_dicom_xray(np.round(phantom.image), phantom.spacing, out / "image.dcm",
                                          modality=phantom.modality,
                                          series_description="medseg phantom chest_xray")
        else:
            raise InputError(f"a {phantom.modality} 2D phantom cannot be written as DICOM: use format='nifti'")
    _save_nifti(phantom.label.astype(np.uint8), phantom.affine, out / "label.nii.gz")
    if phantom.instances is not None:
        _save_nifti(phantom.instances.astype(np.uint16), phantom.affine, out / "instances.nii.gz")
    _write_json(out / "phantom.json", {
        "labels": {str(k): v for k, v in sorted(phantom.labels.items())},
        "modality": phantom.modality, "format": fmt,
        "meta": {k: v for k, v in phantom.meta.items() if isinstance(v, str | int | float | list | dict)},
    })
    return out


def as_metatensors(phantom: Phantom) -> tuple[Any, Any]:
    """The phantom as two MONAI MetaTensors (image float32, label uint8), channel first, RAS affine.

    Meta keys follow :mod:`medseg.io`: space "RAS", kind, format "phantom", modality, spacing.
    """
    import torch
    from monai.data import MetaTensor

    def mt(arr: np.ndarray, kind: str) -> MetaTensor:
        meta = {"space": "RAS", "kind": kind, "format": "phantom", "modality": phantom.modality,
                "spacing": phantom.spacing, "filename_or_obj": f"phantom:{phantom.meta.get('generator', '')}"}
        return MetaTensor(torch.from_numpy(np.ascontiguousarray(arr)[None]),
                          affine=torch.as_tensor(phantom.affine, dtype=torch.float64), meta=meta)

    return mt(phantom.image.astype(np.float32), "image"), mt(phantom.label, "label")


# --------------------------------------------------------------------------------------------
# Medical Segmentation Decathlon / nnU-Net raw datasets
# --------------------------------------------------------------------------------------------

_GENERATORS = {f.__name__: f for f in (abdomen_ct, lung_ct, spine_ct, brain_mr, chest_xray, nuclei_2d)}

_TASKS: dict[str, tuple[str, str, tuple[int, ...], tuple[float, ...]]] = {
    # task: (generator, MSD modality name, default shape, default spacing mm)
    "abdomen": ("abdomen_ct", "CT", (96, 96, 64), (1.5, 1.5, 2.5)),
    "lung": ("lung_ct", "CT", (96, 96, 64), (1.5, 1.5, 2.5)),
    "spine": ("spine_ct", "CT", (64, 64, 96), (1.25, 1.25, 1.5)),
    "brain": ("brain_mr", "MR", (80, 96, 80), (2.0, 2.0, 2.0)),
    "xray": ("chest_xray", "DX", (256, 256), (1.4, 1.4)),
    "nuclei": ("nuclei_2d", "microscopy", (256, 256), (1.0, 1.0)),
}


def _generate(task: str, shape: Sequence[int] | None, seed: int, orientation: Orientation) -> Phantom:
    gen_name, _, dshape, dspacing = _TASKS[task]
    gen = _GENERATORS[gen_name]
    shp = tuple(shape) if shape is not None else dshape
    if len(shp) == 3:
        return gen(shape=shp, spacing=dspacing, orientation=orientation, seed=seed)
    return gen(shape=shp, seed=seed)


def write_decathlon_dataset(root: str | os.PathLike[str], task: str = "abdomen", n_train: int = 4,
                            n_test: int = 2, shape: Sequence[int] | None = None, seed: int = 0, *,
                            layout: str = "msd", orientation: Orientation = "LPS") -> Path:
    """Write a phantom dataset in the Medical Segmentation Decathlon layout; return ``root``.

    ``layout="msd"``: ``dataset.json`` (name, modality {"0": ...}, labels {"0": "background",
    "1": ...}, numTraining, numTest, training [{"image", "label"}], test [...]), ``imagesTr/``,
    ``labelsTr/``, ``imagesTs/`` with ``<task>_NNN.nii.gz``. ``layout="nnunet"``: nnU-Net v2 raw
    naming (images ``<task>_NNN_0000.nii.gz``, labels ``<task>_NNN.nii.gz``) and its
    dataset.json (channel_names, labels {name: value}, numTraining, file_ending). Case ``n``
    uses seed ``seed * 1000 + n``, so datasets are reproducible. Nuclei also get
    ``instancesTr/`` (uint16 instance maps). Every file is written atomically.
    """
    if task not in _TASKS:
        raise ConfigError(f"task {task!r} is unknown: choose one of {', '.join(sorted(_TASKS))}")
    if layout not in ("msd", "nnunet"):
        raise ConfigError(f"layout {layout!r} is unknown: use 'msd' or 'nnunet'")
    if n_train < 1 or n_test < 0:
        raise ConfigError("need n_train >= 1 and n_test >= 0")
    root = Path(root)
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    chan = "_0000" if layout == "nnunet" else ""
    training, test = [], []
    labels: dict[int, str] = {}
    modality = _TASKS[task][1]
    from tqdm.auto import tqdm

    total = n_train + n_test
    show = progress_enabled()
    for n in tqdm(range(total), desc=f"phantom {task} dataset", unit="case", disable=not show):
        ph = _generate(task, shape, seed * 1000 + n, orientation)
        labels = ph.labels
        case = f"{task}_{n:03d}"
        if n < n_train:
            _save_nifti(ph.image.astype(np.float32), ph.affine, root / "imagesTr" / f"{case}{chan}.nii.gz")
            _save_nifti(ph.label.astype(np.uint8), ph.affine, root / "labelsTr" / f"{case}.nii.gz")
            entry = {"image": f"./imagesTr/{case}.nii.gz", "label": f"./labelsTr/{case}.nii.gz"}
            if ph.instances is not None:
                _save_nifti(ph.instances.astype(np.uint16), ph.affine,
                            root / "instancesTr" / f"{case}.nii.gz")
                entry["instances"] = f"./instancesTr/{case}.nii.gz"
            training.append(entry)
        else:
            _save_nifti(ph.image.astype(np.float32), ph.affine, root / "imagesTs" / f"{case}{chan}.nii.gz")
            test.append(f"./imagesTs/{case}.nii.gz")
    if layout == "msd":
        ds = {
            "name": f"medseg-phantom-{task}",
            "description": f"medseg {_TASKS[task][0]} phantoms (synthetic, exact labels), seed {seed}",
            "reference": "medseg.data.phantoms", "licence": "CC0 (synthetic)", "release": "1.0",
            "tensorImageSize": "3D" if len(ph.image.shape) == 3 else "2D",
            "modality": {"0": modality},
            "labels": {"0": "background", **{str(k): v for k, v in sorted(labels.items())}},
            "numTraining": n_train, "numTest": n_test, "training": training, "test": test,
        }
    else:
        ds = {
            "name": f"medseg-phantom-{task}",
            "channel_names": {"0": modality},
            "labels": {"background": 0, **{v: k for k, v in sorted(labels.items())}},
            "numTraining": n_train, "file_ending": ".nii.gz",
        }
    _write_json(root / "dataset.json", ds)
    return root
