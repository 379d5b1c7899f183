"""Shared helpers of the bundle training scripts in ``bundles/<name>/scripts/train.py``.

Not a bundle (no ``configs/``), so :func:`medseg.bundle.list_bundles` skips it. Every script does
``sys.path.insert(0, <repo>/bundles)`` and imports this module; nothing here downloads anything
except through :func:`medseg.data.sample` (pip, sha256-verified).

Flow of a script: write an MSD-layout training folder (:func:`write_msd`) -> :func:`train_run`
(medseg.training.train) -> :func:`patch_model_spec` (inference-only settings the trainer does not
write: task, postprocess; through ModelSpec) -> evaluate on held-out data with medseg.inference.segment and
medseg.metrics -> :func:`ship` (medseg.bundle.build_bundle into a temporary folder, docs written,
the old bundle folder swapped out by renames, its ``scripts/`` kept).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    """Write ``array`` (i, j[, k]) with its voxel->RAS mm ``affine`` as NIfTI (atomic)."""
    import torch
    from monai.data import MetaTensor

    from medseg.io import save

    t = MetaTensor(torch.from_numpy(np.ascontiguousarray(array))[None],
                   affine=torch.as_tensor(affine, dtype=torch.float64), meta={"space": "RAS"})
    return save(t, path)


def write_msd(root: Path, cases: Any, labels: Mapping[int, str], modality: str) -> Path:
    """Write an MSD folder from ``(case_id, image, label, affine)`` tuples (an iterable, consumed
    only when the folder does not exist yet); return ``root``."""
    from medseg.io.atomic import atomic_write_text

    root = Path(root)
    if (root / "dataset.json").is_file():  # written by an earlier call of the same script (same seeds)
        print(f"reusing {root}", flush=True)
        return root
    training = []
    for cid, img, lab, aff in cases:
        save_nifti(img.astype(np.float32), aff, root / "imagesTr" / f"{cid}.nii.gz")
        save_nifti(lab.astype(np.uint8), aff, root / "labelsTr" / f"{cid}.nii.gz")
        training.append({"image": f"./imagesTr/{cid}.nii.gz", "label": f"./labelsTr/{cid}.nii.gz"})
    ds = {"name": root.name, "modality": {"0": modality},
          "labels": {"0": "background", **{str(k): v for k, v in sorted(labels.items())}},
          "numTraining": len(training), "numTest": 0, "training": training, "test": []}
    atomic_write_text(root / "dataset.json", json.dumps(ds, indent=2) + "\n")
    return root


def train_run(dataset: Path, run_dir: Path, preset: str, network: dict[str, Any], *,
              preset_overrides: Mapping[str, Any] | None = None, ship_only: bool = False,
              progress: bool | None = None, validation: str = "deployment", **options: Any) -> Path:
    """Train with :func:`medseg.training.train` (CPU, seeded, no AMP) and return the run folder.

    ``preset_overrides`` (e.g. ``{"target_spacing": [2.5, 2.5, 2.5]}`` mm) change the preset for
    training AND inference: ``TrainConfig.preset_overrides`` applies them to the training pipeline
    and writes them to ``model_spec.json`` -> ``inference.preset_overrides``, which inference and
    bundles honour. ``progress``: progress bars (default: unless ``MEDSEG_PROGRESS=0``; these
    scripts are a command-line edge, so the environment is read here, not in the library).
    ``validation="deployment"``: ``best.pt`` is chosen by the Dice of what ``medseg segment``
    makes of the validation cases (medseg's stitcher, postprocessing, inverse to the source grid;
    :mod:`medseg.training.validation`), the pipeline the bundle ships.
    """
    from medseg.training import TrainConfig, train

    if ship_only:
        if not (Path(run_dir) / "checkpoints" / "best.pt").is_file():
            raise SystemExit(f"--ship-only: no finished run in {run_dir}")
        return Path(run_dir)

    cfg = TrainConfig(dataset=dataset, output=run_dir, preset=preset, network=network, device="cpu",
                      amp=False, num_workers=0,
                      progress=os.environ.get("MEDSEG_PROGRESS", "1") != "0" if progress is None else progress,
                      preset_overrides=dict(preset_overrides or {}), validation=validation, **options)
    t0 = time.monotonic()
    out = train(cfg)
    print(f"trained in {time.monotonic() - t0:.0f} s -> {out}", flush=True)
    return out


def patch_model_spec(run_dir: Path, **updates: Any) -> dict[str, Any]:
    """Set inference-time fields of ``RUN/model_spec.json`` (any :class:`ModelSpec` field: ``task``,
    ``name``, ``postprocess``, ``overlap``, ``sw_batch_size``, ...), validated; return the new spec."""
    from medseg.inference.model_spec import ModelSpec
    from medseg.io.atomic import atomic_write_text
    from medseg.io.jsonfile import read_json_object

    path = Path(run_dir) / "model_spec.json"
    spec = ModelSpec.from_json(read_json_object(path, error=SystemExit)).updated(**updates).to_json()
    atomic_write_text(path, json.dumps(spec, indent=2) + "\n")
    return spec


def load_run_model(run_dir: Path):
    """The run's best checkpoint as a :class:`medseg.inference.SegmentationModel`
    (:meth:`~medseg.inference.SegmentationModel.from_run_dir`: ``weights_only=True``; the training
    loop stores optimiser and RNG state as tensors and plain containers, so it loads safely)."""
    from medseg.inference import SegmentationModel

    return SegmentationModel.from_run_dir(run_dir)


def slim_checkpoint(run_dir: Path) -> None:
    """Rewrite ``checkpoints/best.pt`` as ``{"state_dict", "epoch"}`` so build_bundle (which loads
    with ``weights_only=True``) accepts it; the full checkpoint stays in ``last.pt``."""
    import torch

    from medseg.io.atomic import atomic_path

    best = Path(run_dir) / "checkpoints" / "best.pt"
    ck = torch.load(best, map_location="cpu", weights_only=True)
    with atomic_path(best) as tmp:
        torch.save({"state_dict": ck["state_dict"], "epoch": int(ck["epoch"])}, tmp)


def dice_per_label(pred: np.ndarray, ref: np.ndarray, labels: Mapping[int, str]) -> dict[str, float]:
    """Dice per named label with :func:`medseg.metrics.dice` (same grid)."""
    from medseg.metrics import dice

    return {name: float(dice(pred, ref, label=int(k))) for k, name in labels.items()}


def _bundle_state(folder: Path) -> tuple[dict, str | None, dict[str, bytes]]:
    """(metadata.json, sha256 of models/model.pt, the other configs' bytes) of a built bundle."""
    configs = folder / "configs"
    meta = json.loads((configs / "metadata.json").read_text(encoding="utf-8"))
    sha = (meta.get("weights_sha256") or {}).get("models/model.pt")
    others = {f.name: f.read_bytes() for f in sorted(configs.glob("*.json")) if f.name != "metadata.json"}
    return meta, sha, others


def release_version(old: Path | None, new: Path, note: str | None = None) -> tuple[str, dict[str, str]]:
    """Version and changelog of the freshly built bundle ``new`` that replaces ``old``.

    New weights (another sha256 of models/model.pt) bump the minor version, the same weights with
    changed configs the patch version; a byte-identical rebuild keeps the version. The changelog
    keeps every older entry (newest first, as in the MONAI model zoo)."""
    if old is None or not (old / "configs" / "metadata.json").is_file():
        return "0.1.0", {"0.1.0": note or "first build"}
    old_meta, old_sha, old_cfg = _bundle_state(old)
    _, new_sha, new_cfg = _bundle_state(new)
    version = str(old_meta.get("version", "0.1.0"))
    log = {str(k): str(v) for k, v in (old_meta.get("changelog") or {}).items()}
    major, minor, patch = (int(x) for x in version.split("."))
    if new_sha != old_sha:
        version, default = f"{major}.{minor + 1}.0", "retrained weights"
    elif new_cfg != old_cfg:
        version, default = f"{major}.{minor}.{patch + 1}", "configs rebuilt, same weights"
    else:
        return version, log
    return version, {version: note or default, **log}


def ship(run_dir: Path, out: Path, *, name: str, description: str, data_source: str, license_text: str,
         readme_head: str, extra_docs: Mapping[str, Path] | None = None,
         task_description: str | None = None, references: list[str] | None = None,
         changelog: str | None = None) -> Path:
    """Build the bundle from ``run_dir`` and put it at ``out`` (replacing an older build).

    ``out/scripts/`` (the training script) is carried over; ``docs/README.md`` becomes
    ``readme_head`` followed by the builder's generic sections; ``extra_docs`` (name -> file) are
    copied into ``docs/``. The version and changelog in ``configs/metadata.json`` follow
    :func:`release_version` (``changelog``: this build's entry). The new folder replaces the old
    one by renames.
    """
    from medseg.bundle import build_bundle
    from medseg.bundle.build import set_release
    from medseg.io.atomic import atomic_write_text

    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".build", dir=out.parent))
    try:
        new = build_bundle(run_dir, work / "bundle", name=name, description=description,
                           data_source=data_source, data_license_text=license_text,
                           task_description=task_description, references=references,
                           intended_use="Research and demonstration only: not for diagnostic or treatment "
                                        "decisions. See docs/README.md for what these weights are fit for.")
        readme_head = readme_head.rstrip() + "\n\n" + run_summary(run_dir)
        generic = (new / "docs" / "README.md").read_text(encoding="utf-8")
        generic = generic.split("\n", 1)[1] if generic.startswith("# ") else generic
        atomic_write_text(new / "docs" / "README.md", readme_head.rstrip() + "\n\n---\n# Generated bundle facts\n"
                          + generic)
        for fname, src in (extra_docs or {}).items():
            shutil.copyfile(src, new / "docs" / fname)
        from declare_domains import DOMAINS, write_domain

        if name in DOMAINS:  # the domain the guard checks inputs against: part of this release
            write_domain(new, name)
        set_release(new, *release_version(out if out.exists() else None, new, changelog))
        if (out / "scripts").is_dir():
            shutil.copytree(out / "scripts", new / "scripts",
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        old = None
        if out.exists():
            old = work / "old"
            os.replace(out, old)
        os.replace(new, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def run_summary(run_dir: Path) -> str:
    """A README paragraph on how the shipped weights were trained, from ``RUN/metrics.json``
    and ``RUN/train_config.json`` (epochs done, time-budget stop, best epoch, wall time)."""
    m = json.loads((Path(run_dir) / "metrics.json").read_text())
    c = json.loads((Path(run_dir) / "train_config.json").read_text())
    stop = (f"stopped by the time budget (`max_minutes={c.get('max_minutes')}`) after "
            f"{m['epochs_completed']} of {m['epochs_planned']} planned epochs"
            if m.get("stopped_by_time_budget") else f"all {m['epochs_completed']} epochs"
            if m["epochs_completed"] >= m["epochs_planned"]
            else f"interrupted after {m['epochs_completed']} of {m['epochs_planned']} planned epochs")
    best = m.get("best_val_dice_mean")
    return ("## Training run of the shipped weights\n"
            f"CPU, seed {c.get('seed')}, {stop}; {m['n_train_cases']} training / {m['n_val_cases']} "
            f"validation cases; patch {c.get('patch_size')}, batch {c.get('batch_size')} x "
            f"{c.get('num_samples')} patches, AdamW lr {c.get('lr')} ({c.get('scheduler')}); best "
            f"validation mean Dice {best if best is None else round(best, 4)} at epoch {m.get('best_epoch')}; "
            f"{m.get('seconds', 0) / 60:.1f} min wall for the last call of the script (a resumed run counts "
            "only its own part) on a shared 2-core machine. The numbers above are "
            "those of the shipped weights. A run stopped by the time budget did not finish its "
            "planned schedule; `--resume` with the same `--work` folder continues it exactly (the "
            "same weights as one uninterrupted run).\n")


def fmt_table(rows: Mapping[str, Mapping[str, float]], cols: Sequence[str]) -> str:
    """A Markdown table: one row per key of ``rows``, one column per name in ``cols`` (4 decimals)."""
    head = "| case | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols) + "\n"
    body = ""
    for r, vals in rows.items():
        body += f"| {r} | " + " | ".join(f"{vals[c]:.4f}" if c in vals else "-" for c in cols) + " |\n"
    return head + body


def common_args(description: str):
    """argparse parser: ``--out`` (bundle folder), ``--work`` (scratch), ``--max-minutes``, ``--resume``."""
    import argparse

    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", required=True, type=Path, help="bundle folder to (re)build")
    p.add_argument("--work", type=Path, default=None,
                   help="scratch folder for the dataset and run (default: a new temporary folder)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop training after the epoch in which this wall-time budget ran out; the bundle "
                        "is still built and its README says so (continue later with --resume)")
    p.add_argument("--ship-only", action="store_true",
                   help="do not train: evaluate and rebuild the bundle from the finished run in --work")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted run in --work (exact: same weights as one uninterrupted run)")
    return p


def synth_args(doc: str, name: str, epochs: int):
    """:func:`common_args` plus ``--epochs`` and ``--ablation`` (the release scored beside new weights),
    the options of the domain-randomised training scripts (``bundles/*/scripts/train_synth.py``)."""
    p = common_args(doc.splitlines()[0])
    p.add_argument("--epochs", type=int, default=epochs, help="planned epochs (cosine schedule)")
    p.add_argument("--ablation", default=name,
                   help="bundle (name or folder) scored beside the new weights: the phantom-only release")
    p.add_argument("--init-weights", type=Path, default=None, metavar="CHECKPOINT",
                   help="start from these weights (fine-tuning) instead of a random initialisation")
    return p


def train_synth(args: Any, name: str, cases: Any, labels: Mapping[int, str], preset: str,
                network: dict[str, Any], *, patch: Sequence[int], spacing: Sequence[float],
                val_fraction: float, postprocess: dict[str, Any]):
    """The training step the domain-randomised CT scripts share: write ``cases`` as an MSD dataset
    under ``--work``, train (3e-3, batch 2 x 2 patches, no flips, validation every 2 epochs on the
    deployment path), set the bundle name and postprocessing, slim the checkpoint.
    Returns ``(work, run, model)``."""
    work = work_dir(args.work, name + "_synth")
    ds = write_msd(work / "dataset", cases, labels, "CT")
    run = train_run(ds, work / "run", preset, network, epochs=args.epochs, patch_size=patch,
                    preset_overrides={"target_spacing": spacing},
                    batch_size=2, num_samples=2, lr=3e-3, val_fraction=val_fraction, val_every=2, seed=0,
                    warmup_epochs=1, max_minutes=args.max_minutes, resume=args.resume,
                    ship_only=args.ship_only, overlap=0.25, sw_batch_size=2,
                    augmentation=no_flip_augmentation(), init_weights=getattr(args, "init_weights", None))
    patch_model_spec(run, name=name, postprocess=postprocess)
    slim_checkpoint(run)
    return work, run, load_run_model(run)


def work_dir(arg: Path | None, name: str) -> Path:
    """Scratch folder: ``arg`` or a new temporary one (kept, printed)."""
    w = Path(arg) if arg else Path(tempfile.mkdtemp(prefix=f"medseg-{name}-"))
    w.mkdir(parents=True, exist_ok=True)
    print(f"scratch folder: {w}", flush=True)
    return w


def phantom_cases(generator: str, plan: Sequence[tuple[int, Any]], **kwargs: Any
                  ) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """Phantoms ``medseg.data.phantoms.<generator>(seed=s, orientation=o, **kwargs)`` for each
    ``(s, o)`` of ``plan`` as ``(case_id, image, label, affine)`` (ids carry seed and orientation)."""
    return list(iter_phantoms(generator, plan, **kwargs))


def iter_phantoms(generator: str, plan: Sequence[tuple[int, Any]], **kwargs: Any):
    """Generator version of :func:`phantom_cases` (one phantom in memory at a time)."""
    from medseg.data import phantoms

    gen = getattr(phantoms, generator)
    for seed, orient in plan:
        ph = gen(seed=seed, orientation=orient, **kwargs) if orient is not None else gen(seed=seed, **kwargs)
        tag = orient if isinstance(orient, str) else ("oblique" if orient is not None else "2d")
        yield (f"{generator}_s{seed:04d}_{tag}", ph.image, ph.label, ph.affine)


def segment_array(model, image: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Run :func:`medseg.inference.segment` on an array with its voxel->RAS mm affine; labels on
    the same grid."""
    import torch
    from monai.data import MetaTensor

    from medseg.inference import segment

    mt = MetaTensor(torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None],
                    affine=torch.as_tensor(affine, dtype=torch.float64), meta={"space": "RAS"})
    return segment(mt, model, device="cpu", progress=False)[0].numpy()


def eval_cases(model, cases: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
               labels: Mapping[int, str], *, only_present: bool = False, merged: str | None = None
               ) -> dict[str, dict[str, float]]:
    """Segment each case with :func:`medseg.inference.segment` and return Dice per label
    (medseg.metrics.dice on the SOURCE grid) per case id. ``only_present``: score only labels in
    the reference; ``merged``: also score all foreground labels merged, under that column name."""
    from medseg.metrics import dice

    res = {}
    for cid, img, lab, aff in cases:
        pred = segment_array(model, img, aff)
        present = {int(v) for v in np.unique(lab) if v}
        res[cid] = dice_per_label(pred, lab, {k: v for k, v in labels.items()
                                              if not only_present or k in present})
        if merged:
            res[cid][merged] = float(dice(pred > 0, lab > 0))
        print(cid, {k: round(v, 4) for k, v in res[cid].items()}, flush=True)
    return res


def mean_row(res: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Mean over cases of each column (NaN skipped)."""
    cols = sorted({c for r in res.values() for c in r})
    return {c: float(np.nanmean([r[c] for r in res.values() if c in r])) for c in cols}


def no_flip_augmentation():
    """medseg's default augmentation WITHOUT random flips: a left-right flip of an image whose labels
    name a side (kidney_right, lung_left, ...) or an order along an axis (vertebral levels) teaches
    the network to ignore that side / order. Rotations, scaling, intensity changes stay on."""
    from medseg.transforms.augment import AugmentationConfig

    return AugmentationConfig(flip_axes=())


OBLIQUE = [[0.9659258, -0.2588190, 0.0], [0.2588190, 0.9659258, 0.0], [0.0, 0.0, 1.0]]
"""A 15 degree rotation about S-I of the i, j axes (columns = RAS directions of i, j, k)."""


def write_split_csv(dataset: Path, val_ids: Sequence[str]) -> Path:
    """``DATASET/split.csv`` (image,label,split) from an MSD folder written by :func:`write_msd`:
    the cases whose id is in ``val_ids`` are validation, the rest training. Train on the CSV (with
    ``labels=`` given) to choose the checkpoint on chosen cases rather than a random split."""
    from medseg.io.atomic import atomic_write_text

    ds = json.loads((Path(dataset) / "dataset.json").read_text())
    rows = ["image,label,split"]
    for e in ds["training"]:
        cid = Path(e["image"]).name.split(".nii")[0]
        rows.append(f"{e['image']},{e['label']},{'val' if cid in set(val_ids) else 'train'}")
    out = Path(dataset) / "split.csv"
    atomic_write_text(out, "\n".join(rows) + "\n")
    return out


def crop_to(mask: np.ndarray, affine: np.ndarray, margin_mm: float | Sequence[float], *arrays: np.ndarray):
    """Crop ``arrays`` (same grid) to the bounding box of ``mask`` plus ``margin_mm``; returns the
    cropped arrays followed by the affine of the crop (same voxel size, origin moved)."""
    sp = np.linalg.norm(np.asarray(affine, float)[:3, :3], axis=0)
    margin = np.broadcast_to(np.asarray(margin_mm, float), (3,))
    idx = np.nonzero(mask)
    lo = [max(0, int(i.min() - np.ceil(m / s))) for i, m, s in zip(idx, margin, sp, strict=True)]
    hi = [min(n, int(i.max() + np.ceil(m / s)) + 1) for i, m, s, n in zip(idx, margin, sp, mask.shape, strict=True)]
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    new = np.asarray(affine, float).copy()
    new[:3, 3] = (np.asarray(affine, float) @ np.array([*lo, 1.0]))[:3]
    return (*[a[box] for a in arrays], new)
