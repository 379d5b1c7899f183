"""Training dataset formats: Medical Segmentation Decathlon, nnU-Net raw v2, image/label folders, CSV.

Every reader returns a :class:`TrainingDataset`: a list of cases
``{"id": str, "image": [path per channel], "label": path, "split": "train"|"val"|"test"|None}``
plus the label names (``{1: "liver", ...}``, background 0 left out), modality and channel names.
:func:`validate_dataset` checks that every file exists and that each label lies on the same voxel
grid as its image (same shape, affine voxel->RAS mm equal within ``tol_mm``), reading headers only.
:func:`split_cases` makes a deterministic train/validation split from a seed (or the file's split).
"""

from __future__ import annotations

import csv
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import ConfigError, InputError
from medseg.io.jsonfile import read_json_object
from medseg.io.read import IMAGE_SUFFIXES  # the one suffix table

FORMATS = ("msd", "nnunet", "folder", "csv")

_NNUNET_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})$")


@dataclass
class TrainingDataset:
    """Cases and label metadata of a training dataset.

    ``cases``: list of ``{"id", "image": list[Path] (one per channel), "label": Path | None,
    "split": "train" | "val" | "test" | None}``. ``labels`` maps label value -> name (no background).
    """

    root: Path
    format: str
    cases: list[dict[str, Any]]
    labels: dict[int, str]
    modality: str = "unknown"
    channel_names: list[str] = field(default_factory=lambda: ["image"])
    name: str = ""

    @property
    def n_channels(self) -> int:
        """Number of input channels per case."""
        return len(self.channel_names)

    def training_cases(self) -> list[dict[str, Any]]:
        """Cases that carry a label and are not marked ``test``."""
        return [c for c in self.cases if c["label"] is not None and c.get("split") != "test"]


def strip_suffix(name: str) -> str:
    """File name without its image suffix (``case_001.nii.gz`` -> ``case_001``)."""
    from medseg.io.read import strip_suffix as _strip

    stripped = _strip(name, IMAGE_SUFFIXES)
    return stripped if stripped is not None else Path(name).stem


def _read_json(path: Path) -> dict[str, Any]:
    return read_json_object(path, error=InputError, name=path.name,
                            hint="fix or regenerate the dataset description")


def _labels_from_json(raw: Any, source: str) -> dict[int, str]:
    """MSD style {"0": "background", "1": "liver"} or nnU-Net style {"background": 0, "liver": 1}."""
    if not isinstance(raw, dict) or not raw:
        raise InputError(f"{source}: 'labels' is missing or empty; list the label values and names")
    out: dict[int, str] = {}
    for k, v in raw.items():
        if isinstance(v, (list, tuple)):
            raise InputError(f"{source}: region-based label '{k}' is not supported; "
                             "use one integer value per label")
        try:
            if isinstance(v, int) or (isinstance(v, str) and v.isdigit() and not str(k).isdigit()):
                value, name = int(v), str(k)
            else:
                value, name = int(k), str(v)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{source}: label entry {k!r}: {v!r} is not value->name") from exc
        if value < 0 or value > 255:
            raise InputError(f"{source}: label value {value} outside 0..255")
        if value != 0:
            out[value] = name
    if not out:
        raise InputError(f"{source}: no foreground label declared")
    return dict(sorted(out.items()))


def _resolve(root: Path, rel: str) -> Path:
    p = Path(rel)
    return p if p.is_absolute() else (root / p).resolve()


def read_msd(root: str | Path) -> TrainingDataset:
    """Read a Medical Segmentation Decathlon folder (``dataset.json``, ``imagesTr/``, ``labelsTr/``)."""
    root = Path(root)
    meta = _read_json(root / "dataset.json")
    if "training" not in meta:
        raise InputError("dataset.json has no 'training' list: not a Decathlon dataset")
    modality = meta.get("modality") or {"0": "unknown"}
    channels = [str(modality[k]) for k in sorted(modality, key=lambda s: int(s))]
    cases: list[dict[str, Any]] = []
    for entry in meta["training"]:
        if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
            raise InputError("dataset.json: every 'training' entry needs 'image' and 'label'")
        img = _resolve(root, entry["image"])
        cases.append({"id": strip_suffix(img.name), "image": [img],
                      "label": _resolve(root, entry["label"]), "split": None})
    for entry in meta.get("test", []) or []:
        rel = entry if isinstance(entry, str) else entry.get("image")
        img = _resolve(root, rel)
        cases.append({"id": strip_suffix(img.name), "image": [img], "label": None, "split": "test"})
    return TrainingDataset(root=root, format="msd", cases=cases,
                           labels=_labels_from_json(meta.get("labels"), "dataset.json"),
                           modality=channels[0] if len(channels) == 1 else "multi",
                           channel_names=channels, name=str(meta.get("name", root.name)))


def read_nnunet(root: str | Path) -> TrainingDataset:
    """Read an nnU-Net raw v2 folder: ``dataset.json`` with ``channel_names``, ``labels`` and
    ``file_ending``; images ``imagesTr/CASE_0000<ending>`` (one file per channel), labels
    ``labelsTr/CASE<ending>``; ``imagesTs/`` optional."""
    root = Path(root)
    meta = _read_json(root / "dataset.json")
    if "channel_names" not in meta or "file_ending" not in meta:
        raise InputError("dataset.json lacks 'channel_names' or 'file_ending': not nnU-Net raw v2")
    ch = meta["channel_names"]
    channels = [str(ch[k]) for k in sorted(ch, key=lambda s: int(s))]
    ending = str(meta["file_ending"])
    labels_dir, images_dir = root / "labelsTr", root / "imagesTr"
    if not labels_dir.is_dir():
        raise InputError("nnU-Net dataset: labelsTr/ folder is missing")
    cases: list[dict[str, Any]] = []
    for lab in sorted(labels_dir.iterdir()):
        if not lab.name.endswith(ending) or lab.name.startswith("."):
            continue
        case = lab.name[: -len(ending)]
        imgs = [images_dir / f"{case}_{c:04d}{ending}" for c in range(len(channels))]
        cases.append({"id": case, "image": imgs, "label": lab, "split": None})
    ts = root / "imagesTs"
    if ts.is_dir():
        found: set[str] = set()
        for f in sorted(ts.iterdir()):
            m = _NNUNET_CHANNEL.match(f.name[: -len(ending)]) if f.name.endswith(ending) else None
            if m and m["case"] not in found:
                found.add(m["case"])
                imgs = [ts / f"{m['case']}_{c:04d}{ending}" for c in range(len(channels))]
                cases.append({"id": m["case"], "image": imgs, "label": None, "split": "test"})
    n_declared = meta.get("numTraining")
    n_train = sum(c["split"] is None for c in cases)
    if isinstance(n_declared, int) and n_declared != n_train:
        raise InputError(f"nnU-Net dataset: dataset.json declares numTraining={n_declared} "
                         f"but labelsTr/ holds {n_train} labels")
    return TrainingDataset(root=root, format="nnunet", cases=cases,
                           labels=_labels_from_json(meta.get("labels"), "dataset.json"),
                           modality=channels[0] if len(channels) == 1 else "multi",
                           channel_names=channels, name=str(meta.get("name", root.name)))


def _image_files(folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        if f.name.startswith(".") or not f.name.lower().endswith(IMAGE_SUFFIXES):
            continue
        stem = strip_suffix(f.name)
        if stem in out:
            raise InputError(f"{folder.name}/: two files share the case name '{stem}'")
        out[stem] = f
    return out


def read_folder(root: str | Path, labels: dict[int, str] | None = None) -> TrainingDataset:
    """Read ``images/`` and ``labels/`` sub-folders whose files are paired by name (suffix removed)."""
    root = Path(root)
    idir, ldir = root / "images", root / "labels"
    if not idir.is_dir() or not ldir.is_dir():
        raise InputError(f"{root.name}: expected sub-folders images/ and labels/")
    imgs, labs = _image_files(idir), _image_files(ldir)
    if not imgs:
        raise InputError(f"{root.name}/images/ holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    missing = sorted(set(imgs) - set(labs))
    if missing:
        raise InputError(f"case '{missing[0]}': image has no label in labels/ "
                         f"({len(missing)} unpaired image(s))")
    orphans = sorted(set(labs) - set(imgs))
    if orphans:
        raise InputError(f"case '{orphans[0]}': label has no image in images/")
    cases = [{"id": s, "image": [imgs[s]], "label": labs[s], "split": None} for s in sorted(imgs)]
    return _with_labels(TrainingDataset(root=root, format="folder", cases=cases, labels={}), labels)


def read_csv(path: str | Path, labels: dict[int, str] | None = None) -> TrainingDataset:
    """Read a CSV with columns ``image,label[,split]`` (paths relative to the CSV's folder; several
    channels as paths separated by ``;``; split one of train/val/test)."""
    path = Path(path)
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path.name}: cannot read as CSV ({exc.__class__.__name__})") from exc
    if not rows or "image" not in rows[0] or "label" not in rows[0]:
        raise InputError(f"{path.name}: needs a header with columns image,label[,split]")
    cases = []
    n_ch = None
    for i, row in enumerate(rows, start=2):
        imgs = [_resolve(path.parent, p.strip()) for p in (row["image"] or "").split(";") if p.strip()]
        if not imgs:
            raise InputError(f"{path.name} line {i}: empty image column")
        if n_ch is not None and len(imgs) != n_ch:
            raise InputError(f"{path.name} line {i}: {len(imgs)} channels, earlier rows have {n_ch}")
        n_ch = len(imgs)
        split = (row.get("split") or "").strip().lower() or None
        if split in ("training",):
            split = "train"
        if split in ("validation", "valid"):
            split = "val"
        if split not in (None, "train", "val", "test"):
            raise InputError(f"{path.name} line {i}: split '{split}' is not train, val or test")
        lab = (row["label"] or "").strip()
        if not lab and split != "test":
            raise InputError(f"{path.name} line {i}: empty label column on a training case")
        cases.append({"id": strip_suffix(imgs[0].name), "image": imgs,
                      "label": _resolve(path.parent, lab) if lab else None, "split": split})
    ids = [c["id"] for c in cases]
    if len(set(ids)) != len(ids):
        dup = next(x for x in ids if ids.count(x) > 1)
        raise InputError(f"{path.name}: case name '{dup}' appears twice")
    ds = TrainingDataset(root=path.parent, format="csv", cases=cases, labels={},
                         channel_names=[f"channel{c}" for c in range(n_ch or 1)] if (n_ch or 1) > 1
                         else ["image"])
    return _with_labels(ds, labels)


def _with_labels(ds: TrainingDataset, labels: dict[int, str] | None) -> TrainingDataset:
    """Labels: given, else a dataset.json / labels.json beside the data, else scanned from files."""
    if labels:
        ds.labels = {int(k): str(v) for k, v in labels.items() if int(k) != 0}
        return ds
    for name in ("labels.json", "dataset.json"):
        f = ds.root / name
        if f.is_file():
            meta = _read_json(f)
            ds.labels = _labels_from_json(meta.get("labels", meta), name)
            return ds
    values: set[int] = set()
    for case in ds.training_cases():
        values |= set(np.unique(_read_array(case["label"])).astype(int).tolist())
    values.discard(0)
    if not values:
        raise InputError(f"{ds.root.name}: the label files hold no foreground voxels")
    ds.labels = {v: f"label_{v}" for v in sorted(values)}
    return ds


def detect_format(path: str | Path) -> str:
    """Guess the dataset format of ``path``: msd, nnunet, folder or csv."""
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return "csv"
        raise InputError(f"{path.name}: a dataset is a folder or a .csv file")
    if not path.is_dir():
        raise InputError(f"dataset '{path.name}' does not exist")
    dj = path / "dataset.json"
    if dj.is_file():
        meta = _read_json(dj)
        if "channel_names" in meta and "file_ending" in meta:
            return "nnunet"
        if "training" in meta:
            return "msd"
    if (path / "images").is_dir() and (path / "labels").is_dir():
        return "folder"
    raise InputError(f"{path.name}: not a recognised dataset (Decathlon or nnU-Net dataset.json, "
                     "images/+labels/ folders, or a .csv)")


def load_dataset(path: str | Path, *, format: str = "auto", labels: dict[int, str] | None = None,
                 validate: bool = True) -> TrainingDataset:
    """Read a training dataset in any supported format (``format="auto"`` detects it) and, by
    default, validate it (:func:`validate_dataset`). ``labels`` overrides label names for the
    folder and CSV formats."""
    fmt = detect_format(path) if format == "auto" else format
    if fmt not in FORMATS:
        raise ConfigError(f"dataset format '{format}' unknown; use one of auto, {', '.join(FORMATS)}")
    path = Path(path)
    if fmt == "msd":
        ds = read_msd(path)
    elif fmt == "nnunet":
        ds = read_nnunet(path)
    elif fmt == "folder":
        ds = read_folder(path, labels)
    else:
        ds = read_csv(path, labels)
    if labels and fmt in ("msd", "nnunet"):
        ds.labels = {int(k): str(v) for k, v in labels.items() if int(k) != 0}
    if not ds.training_cases():
        raise InputError(f"{path.name}: no labelled training case found")
    if validate:
        validate_dataset(ds)
    return ds


# ----------------------------------------------------------------------------------- geometry


def read_grid(path: str | Path) -> tuple[tuple[int, ...], np.ndarray]:
    """Spatial shape (trailing axes of size 1 dropped, down to 2D) and 4x4 voxel->RAS mm affine of
    an image file, from its header only where the format allows (:func:`medseg.io.readers.read_grid`)."""
    from medseg.io.readers import read_grid as grid_of

    path = Path(path)
    if not path.exists():
        raise InputError(f"file '{path.name}' is missing")
    grid = grid_of(path)
    shape = grid.shape
    while len(shape) > 2 and shape[-1] == 1:
        shape = shape[:-1]
    return shape, grid.affine


def _read_array(path: Path) -> np.ndarray:
    """The label values of a label file, read by medseg's reader (integers; InputError otherwise)."""
    from medseg.io.read import read_volume

    return read_volume(path, kind="label").array


def validate_dataset(ds: TrainingDataset, *, tol_mm: float = 1e-3) -> None:
    """Check every case: files exist, channels count matches, image channels and label share one
    grid (same spatial shape; affines equal within ``tol_mm`` mm). Raises InputError naming the
    case. Reads headers only."""
    for case in ds.cases:
        cid = case["id"]
        if len(case["image"]) != ds.n_channels:
            raise InputError(f"case '{cid}': {len(case['image'])} image channel(s), dataset declares "
                             f"{ds.n_channels}")
        files = list(case["image"]) + ([case["label"]] if case["label"] is not None else [])
        for f in files:
            if not Path(f).is_file():
                raise InputError(f"case '{cid}': file '{Path(f).name}' is missing")
        ref_shape, ref_aff = read_grid(case["image"][0])
        for f in files[1:]:
            shape, aff = read_grid(f)
            what = "label" if f == case["label"] else f"image channel '{Path(f).name}'"
            if shape != ref_shape:
                raise InputError(f"case '{cid}': {what} shape {shape} differs from image shape "
                                 f"{ref_shape}; resample the label onto the image grid")
            if not np.allclose(aff, ref_aff, atol=tol_mm, rtol=0):
                err = float(np.abs(aff - ref_aff).max())
                raise InputError(f"case '{cid}': {what} affine differs from the image's by up to "
                                 f"{err:.4g} mm; the label must lie on the image grid")


def split_cases(ds: TrainingDataset, *, val_fraction: float = 0.2, seed: int = 0
                ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Deterministic (train, val) split of the labelled cases.

    If any case carries an explicit split ("train"/"val", e.g. from a CSV column), that split is
    used as is. Otherwise cases are sorted by id, shuffled with ``random.Random(seed)`` and the
    first ``round(n * val_fraction)`` (at least 1 when n >= 2) go to validation.
    """
    cases = sorted(ds.training_cases(), key=lambda c: c["id"])
    if any(c.get("split") in ("train", "val") for c in cases):
        train = [c for c in cases if c.get("split") != "val"]
        val = [c for c in cases if c.get("split") == "val"]
        return train, val
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction {val_fraction} must be in [0, 1)")
    order = list(cases)
    random.Random(seed).shuffle(order)
    n_val = round(len(order) * val_fraction)
    if val_fraction > 0 and len(order) >= 2:
        n_val = max(1, n_val)
    n_val = min(n_val, len(order) - 1)
    val_ids = {c["id"] for c in order[:n_val]}
    return [c for c in cases if c["id"] not in val_ids], [c for c in cases if c["id"] in val_ids]


def case_dicts(cases: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """MONAI-style data dicts ``{"image": [str per channel], "label": str, "id": str}``."""
    out = []
    for c in cases:
        d: dict[str, Any] = {"image": [str(p) for p in c["image"]], "id": c["id"]}
        if c["label"] is not None:
            d["label"] = str(c["label"])
        out.append(d)
    return out
