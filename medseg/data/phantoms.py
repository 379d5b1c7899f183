"""Anatomy phantoms with exact labels: CT abdomen / lung / spine, brain MR, chest X-ray, nuclei.

Coordinate convention (the one bug that must never happen is a swapped left/right)
-------------------------------------------------------------------------------
DICOM's patient system LPS has +x towards the patient's **Left**, +y **Posterior**, +z
**Superior** (PS3.3 C.7.6.2.1.1). medseg works in **RAS+**: LPS with x and y negated, so +x
points towards the patient's **Right**, +y **Anterior**, +z **Superior**. Hence the liver (the
patient's right) has a LARGER RAS x than the spleen (the patient's left).

Every 3D phantom is built as shapes in these world coordinates (mm) and then sampled at the
voxel centres given by the affine, so any grid orientation (axis codes such as ``"LPS"``,
``"RAS"``, ``"PIR"``, or a 3x3 direction matrix for an oblique grid) shows the same anatomy in
the world. Axis codes name where each voxel axis points: ``"LPS"`` means i increases towards
the patient's Left, j towards Posterior, k towards Superior (the usual axial DICOM stack). A
3x3 ``orientation`` matrix holds the unit direction of the i, j, k axes as its COLUMNS, in RAS.
The grid is centred on the world origin. Anatomy is scaled to the field of view: along each
patient axis (R-L, A-P, S-I) the size is that of the voxel axis most aligned with it, so two
grids covering the same field of view hold the same anatomy, whatever their orientation.

Arrays follow the medseg axis convention (see :mod:`medseg.io`): ``image[i, j, k]``, with the
4x4 affine mapping ``(i, j, k, 1)`` to RAS millimetres. Everything is numpy (+ scipy.ndimage)
and deterministic for a given seed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from medseg.errors import ConfigError, InputError

Orientation = str | Sequence[Sequence[float]] | np.ndarray

_AXIS_DIR = {
    "R": (1.0, 0.0, 0.0), "L": (-1.0, 0.0, 0.0),
    "A": (0.0, 1.0, 0.0), "P": (0.0, -1.0, 0.0),
    "S": (0.0, 0.0, 1.0), "I": (0.0, 0.0, -1.0),
}

# Tissue values (HU) for the CT phantoms.
HU = {
    "air": -1000.0, "lung": -850.0, "fat": -100.0, "muscle": 45.0, "liver": 60.0, "spleen": 50.0,
    "kidney": 150.0, "medulla": 110.0, "aorta": 180.0, "ivc": 130.0, "bowel": 20.0, "csf": 10.0,
    "cancellous": 450.0, "cortical": 950.0, "disc": 90.0, "heart": 40.0, "nodule": 30.0,
}

#: Vertebral levels of :func:`spine_ct`: label value = index + 1 (registry names "vertebra_<level>").
SPINE_LEVELS: tuple[str, ...] = ("T12", "L1", "L2", "L3", "L4", "L5")


@dataclass
class Phantom:
    """A synthetic image with exact labels.

    Attributes:
        image: float32, (i, j, k) or (i, j); CT in HU, MR / X-ray / microscopy in arbitrary units.
        label: uint8 label map on the same grid (0 = background); values are keys of ``labels``.
        affine: 4x4 float64, voxel index -> RAS+ mm.
        labels: {value: registry name} (see :mod:`medseg.labels`), background 0 not listed.
        modality: "CT", "MR", "DX" or "microscopy".
        instances: uint16 instance map (nuclei only), else None.
        meta: generator name, seed, parameters and ground-truth facts (e.g. nodule centres in RAS mm).
    """

    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray
    labels: dict[int, str]
    modality: str
    instances: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size in mm along each array axis."""
        nd = self.image.ndim
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :nd], axis=0))


# --------------------------------------------------------------------------------------------
# grids
# --------------------------------------------------------------------------------------------


def direction_matrix(orientation: Orientation) -> np.ndarray:
    """3x3 matrix whose columns are the RAS unit directions of the i, j, k axes.

    ``orientation`` is three axis codes (``"LPS"``: i towards Left, j Posterior, k Superior) or a
    3x3 matrix (columns = axis directions in RAS; orthonormalised, must be right- or left-handed
    but not degenerate).
    """
    if isinstance(orientation, str):
        codes = orientation.upper()
        if len(codes) != 3 or any(c not in _AXIS_DIR for c in codes):
            raise ConfigError(f"orientation {orientation!r} is not three axis codes from R/L, A/P, S/I")
        d = np.array([_AXIS_DIR[c] for c in codes]).T
        if abs(np.linalg.det(d)) < 0.5:
            raise ConfigError(f"orientation {orientation!r} names the same patient axis twice")
        return d
    d = np.asarray(orientation, dtype=np.float64)
    if d.shape != (3, 3) or not np.all(np.isfinite(d)):
        raise ConfigError("orientation matrix must be a finite 3x3 array (columns = i, j, k directions)")
    norms = np.linalg.norm(d, axis=0)
    if np.any(norms < 1e-6):
        raise ConfigError("orientation matrix has a zero column")
    d = d / norms
    if not np.allclose(d.T @ d, np.eye(3), atol=1e-4):
        raise ConfigError("orientation matrix columns must be orthogonal (an oblique rotation)")
    return d


def grid_affine(shape: Sequence[int], spacing: Sequence[float], orientation: Orientation) -> np.ndarray:
    """4x4 voxel -> RAS mm affine of a grid centred on the world origin."""
    shape_a = np.asarray(shape, dtype=np.float64)
    sp = np.asarray(spacing, dtype=np.float64)
    if shape_a.shape != (3,) or sp.shape != (3,) or np.any(shape_a < 1) or np.any(sp <= 0):
        raise ConfigError(f"need 3 positive sizes and 3 spacings (mm), got {tuple(shape)} and {tuple(spacing)}")
    d = direction_matrix(orientation)
    aff = np.eye(4)
    aff[:3, :3] = d * sp
    aff[:3, 3] = -aff[:3, :3] @ ((shape_a - 1) / 2.0)
    return aff


def _half_extents(shape: Sequence[int], spacing: Sequence[float], d: np.ndarray) -> np.ndarray:
    """Half field of view (mm) along world x, y, z: that of the voxel axis most aligned with each."""
    ext = np.asarray(shape, float) * np.asarray(spacing, float) / 2.0
    out = np.empty(3)
    for w in range(3):
        out[w] = ext[int(np.argmax(np.abs(d[w])))]
    return out


def _world_points(shape: Sequence[int], affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World x, y, z (RAS mm) of every voxel centre, each shaped like the grid (float32)."""
    idx = np.indices(tuple(shape), dtype=np.float32).reshape(3, -1)
    xyz = (affine[:3, :3].astype(np.float32) @ idx) + affine[:3, 3:4].astype(np.float32)
    return tuple(xyz[w].reshape(tuple(shape)) for w in range(3))  # type: ignore[return-value]


def _check_shape(shape: Sequence[int], nd: int) -> tuple[int, ...]:
    s = tuple(int(v) for v in shape)
    if len(s) != nd or min(s) < 4:
        raise ConfigError(f"shape must be {nd} sizes of at least 4 voxels, got {tuple(shape)}")
    if int(np.prod(s)) > 512 ** 3:
        raise ConfigError(f"shape {s} is too large for a phantom (over 512^3 voxels)")
    return s


class _Deform:
    """A smooth random displacement field in world coordinates (a few low-frequency sines)."""

    def __init__(self, rng: np.random.Generator, half: np.ndarray, amplitude: float, n: int = 3):
        self.terms = []
        for _ in range(n):
            freq = rng.uniform(0.5, 1.5, size=3) * np.pi / (2 * half)
            phase = rng.uniform(0, 2 * np.pi, size=3)
            amp = rng.uniform(-1, 1, size=3) * amplitude * half / n
            self.terms.append((freq, phase, amp))

    def __call__(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, ...]:
        dx, dy, dz = np.zeros_like(x), np.zeros_like(y), np.zeros_like(z)
        for freq, phase, amp in self.terms:
            # each displacement component varies along the two other axes (divergence-free-ish)
            dx += amp[0] * np.sin(freq[1] * y + phase[0]) * np.cos(freq[2] * z + phase[1])
            dy += amp[1] * np.sin(freq[2] * z + phase[1]) * np.cos(freq[0] * x + phase[2])
            dz += amp[2] * np.sin(freq[0] * x + phase[2]) * np.cos(freq[1] * y + phase[0])
        return x + dx, y + dy, z + dz


def _ellipsoid(x, y, z, centre, semi) -> np.ndarray:
    """Normalised squared radius of points w.r.t. an axis-aligned ellipsoid (<= 1 is inside)."""
    return (((x - centre[0]) / semi[0]) ** 2 + ((y - centre[1]) / semi[1]) ** 2
            + ((z - centre[2]) / semi[2]) ** 2)


def _ellipse(x, y, centre, semi) -> np.ndarray:
    return ((x - centre[0]) / semi[0]) ** 2 + ((y - centre[1]) / semi[1]) ** 2


def _finish_ct(tissue: np.ndarray, rng: np.random.Generator, noise_hu: float) -> np.ndarray:
    """Partial-volume blur (0.6 voxel), Gaussian noise, rounded to integer HU in [-1024, 3071] (float32)."""
    img = ndimage.gaussian_filter(tissue.astype(np.float32), 0.6, mode="nearest")
    img += rng.normal(0.0, noise_hu, size=img.shape).astype(np.float32)
    return np.clip(np.round(img), -1024, 3071).astype(np.float32)


def _jitter(rng: np.random.Generator, scale: float, n: int = 3) -> np.ndarray:
    return rng.uniform(-scale, scale, size=n)


# --------------------------------------------------------------------------------------------
# abdomen CT
# --------------------------------------------------------------------------------------------


def abdomen_ct(shape: Sequence[int] = (96, 96, 64), spacing: Sequence[float] = (1.5, 1.5, 2.5),
               orientation: Orientation = "LPS", seed: int = 0, *, noise_hu: float = 12.0) -> Phantom:
    """Abdominal CT phantom in HU with labels {1: liver, 2: spleen, 3: kidney_right, 4: kidney_left}.

    Body (subcutaneous fat -100 HU, muscle 45 HU), liver (~60 HU) on the patient's RIGHT (RAS
    x > 0), spleen (~50 HU) on the LEFT (RAS x < 0), contrast-enhanced kidneys (cortex ~150 HU)
    either side of the spine (cortical bone ~950 HU, cancellous ~450 HU), aorta and IVC, bowel
    gas pockets; outside is air (-1000 HU). Organ positions and sizes jitter and the whole
    anatomy is smoothly deformed per ``seed``; Gaussian noise of ``noise_hu`` HU.
    ``spacing`` is mm along i, j, k; see the module docstring for ``orientation``.
    """
    shape = _check_shape(shape, 3)
    rng = np.random.default_rng(seed)
    d = direction_matrix(orientation)
    affine = grid_affine(shape, spacing, d)
    half = _half_extents(shape, spacing, d)
    x0, y0, z0 = _world_points(shape, affine)
    x, y, z = _Deform(rng, half, 0.04)(x0, y0, z0)
    # normalised body units: a = half width (R-L), b = half depth (A-P), c = half height (S-I)
    a, b, c = 0.9 * half[0], 0.68 * half[1], half[2]
    j = lambda s: _jitter(rng, s)  # noqa: E731

    body = _ellipse(x, y, (0, 0), (a, b)) <= 1
    inner = _ellipse(x, y, (0, 0), (0.9 * a, 0.86 * b)) <= 1
    tissue = np.full(shape, HU["air"], np.float32)
    tissue[body] = HU["fat"]
    tissue[inner] = HU["muscle"]
    # visceral fat: a smooth random field thresholded inside the abdominal cavity
    cavity = _ellipse(x, y, (0, 0.05 * b), (0.78 * a, 0.7 * b)) <= 1
    tissue[cavity & (np.sin(x / a * 7 + rng.uniform(0, 6)) * np.sin(y / b * 6 + rng.uniform(0, 6)) > 0.55)] \
        = HU["fat"] + 20

    liver_c = np.array([0.38 * a, 0.08 * b, 0.3 * c]) + j(0.04) * (a, b, c)
    liver_s = np.array([0.4 * a, 0.55 * b, 0.5 * c]) * (1 + j(0.08))
    liver = _ellipsoid(x, y, z, liver_c, liver_s) <= 1
    # a flat medial-posterior cut makes it less of an egg
    liver &= (x - liver_c[0]) - 0.6 * (y - liver_c[1]) > -0.9 * liver_s[0]

    spleen_c = np.array([-0.52 * a, -0.28 * b, 0.38 * c]) + j(0.03) * (a, b, c)
    spleen_s = np.array([0.15 * a, 0.26 * b, 0.3 * c]) * (1 + j(0.1))
    spleen = _ellipsoid(x, y, z, spleen_c, spleen_s) <= 1

    kid_s = np.array([0.13 * a, 0.2 * b, 0.32 * c])
    kr_c = np.array([0.34 * a, -0.42 * b, -0.12 * c]) + j(0.03) * (a, b, c)  # right kidney lower
    kl_c = np.array([-0.34 * a, -0.42 * b, -0.02 * c]) + j(0.03) * (a, b, c)
    kr_s, kl_s = kid_s * (1 + j(0.08)), kid_s * (1 + j(0.08))
    kr_r = _ellipsoid(x, y, z, kr_c, kr_s)
    kl_r = _ellipsoid(x, y, z, kl_c, kl_s)
    kid_r, kid_l = kr_r <= 1, kl_r <= 1

    # spine: vertebral body, canal, posterior elements (not deformed with the soft tissue)
    sp_c = (0.0, -0.55 * b)
    vb_r = _ellipse(x0, y0, sp_c, (0.17 * a, 0.2 * b))
    canal = _ellipse(x0, y0, (0.0, sp_c[1] - 0.3 * b), (0.07 * a, 0.1 * b)) <= 1
    arch = (_ellipse(x0, y0, (0.0, sp_c[1] - 0.3 * b), (0.13 * a, 0.17 * b)) <= 1) & ~canal
    process = (np.abs(x0) < 0.035 * a) & (y0 < sp_c[1] - 0.4 * b) & (y0 > -0.95 * b)

    aorta = _ellipse(x, y, (-0.09 * a, sp_c[1] + 0.3 * b), (0.065 * a, 0.09 * b)) <= 1
    ivc = _ellipse(x, y, (0.13 * a, sp_c[1] + 0.32 * b), (0.07 * a, 0.08 * b)) <= 1

    # bowel: a few loops (tubes) and gas pockets in the anterior abdomen
    for _ in range(rng.integers(3, 6)):
        bc = np.array([rng.uniform(-0.4, 0.4) * a, rng.uniform(0.1, 0.5) * b, rng.uniform(-0.8, 0.2) * c])
        loop = _ellipsoid(x, y, z, bc, (0.12 * a, 0.12 * b, 0.3 * c)) <= 1
        tissue[loop & cavity] = HU["bowel"]
        gas = _ellipsoid(x, y, z, bc + (0, 0.05 * b, 0), (0.05 * a, 0.05 * b, 0.1 * c)) <= 1
        tissue[gas & cavity] = HU["air"]

    tissue[aorta] = HU["aorta"]
    tissue[ivc] = HU["ivc"]
    tissue[liver] = HU["liver"]
    tissue[spleen] = HU["spleen"]
    tissue[kid_r] = HU["kidney"]
    tissue[kid_l] = HU["kidney"]
    tissue[kid_r & (kr_r < 0.35)] = HU["medulla"]
    tissue[kid_l & (kl_r < 0.35)] = HU["medulla"]
    bone = (vb_r <= 1) | arch | process
    tissue[bone] = HU["cortical"]
    tissue[(vb_r <= 0.7)] = HU["cancellous"]
    tissue[canal] = HU["csf"]
    tissue[~body] = HU["air"]

    label = np.zeros(shape, np.uint8)
    label[liver] = 1
    label[spleen] = 2
    label[kid_r] = 3
    label[kid_l] = 4
    label[bone | canal | ~body] = 0
    image = _finish_ct(tissue, rng, noise_hu)
    return Phantom(image, label, affine, {1: "liver", 2: "spleen", 3: "kidney_right", 4: "kidney_left"},
                   "CT", meta={"generator": "abdomen_ct", "seed": int(seed), "body_part": "ABDOMEN"})


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


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

_TASKS: dict[str, tuple[str, str, tuple[int, ...], tuple[float, ...]]] = {
    # task: (generator, MSD modality name, default shape, default spacing mm)
    "abdomen": ("abdomen_ct", "CT", (96, 96, 64), (1.5, 1.5, 2.5)),
}


def _generate(task: str, shape: Sequence[int] | None, seed: int, orientation: Orientation) -> Phantom:
    gen_name, _, dshape, dspacing = _TASKS[task]
    gen = globals()[gen_name]
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
    show = os.environ.get("MEDSEG_PROGRESS", "1") != "0"
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
