"""MONAI Model Zoo bundles through medseg, as published: every inference config of the zoo.

For each bundle of a model-zoo checkout (``models/<name>``):

* ``untrusted``: does the inference config (with metadata.json; what medseg evaluates) pass
  medseg's trust policy? ("ok" or the first refusals);
* ``medseg``: ``runs untrusted`` / ``needs --trust-bundle`` / ``refused: <why>``, found by
  actually loading it (trusted, seeded random weights: the zoo's weights cannot be fetched here)
  and running it on a phantom of its modality and channel count;
* ``agreement``: for the bundles medseg runs, the fraction of voxels equal between medseg's label
  map (``ZooBundleSource.predict``: the bundle's own pre/postprocessing) and what
  ``python -m monai.bundle run`` writes for the same NIfTI and the same weights, after checking
  both lie on the input's grid (shape and affine).

    python benchmarks/zoo_bundles.py [--zoo /path/to/model-zoo] [--only NAME ...] [--no-run]

Writes benchmarks/results/zoo_bundles.json (rows merged by bundle name, so ``--only`` updates
some rows) and prints the table. Default zoo: a checkout extracted from the mirror
(``git --git-dir=/work/.mirror/Project-MONAI+model-zoo/repo archive HEAD models | tar x``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
RESULT = ROOT / "benchmarks" / "results" / "zoo_bundles.json"

# Input for each bundle medseg can run on a volume: (phantom kind, channels). 2D-image bundles
# (endoscopy, pathology, X-ray style) take a 2D RGB picture, which medseg's zoo runner does not feed.
INPUTS = {
    "spleen_ct_segmentation": ("ct", 1),
    "swin_unetr_btcv_segmentation": ("ct", 1),
    "wholeBody_ct_segmentation": ("ct", 1),
    "pancreas_ct_dints_segmentation": ("ct", 1),
    "multi_organ_segmentation": ("ct", 1),
    "renalStructures_UNEST_segmentation": ("ct_small", 1),
    "pediatric_abdominal_ct_segmentation": ("ct", 1),
    "segmentation_template": ("ct", 1),
    "brats_mri_segmentation": ("mr", 4),
    "prostate_mri_anatomy": ("mr_small", 1),
    "wholeBrainSeg_Large_UNEST_segmentation": ("mr", 1),
    "ventricular_short_axis_3label": ("mr_slices", 1),
    "renalStructures_CECT_segmentation": ("ct_small", 3),
}
# phantom grids: (shape, spacing mm). The *_small ones cover a small field of view, for bundles that
# resample to 0.5-1 mm (the CPU time here is shared; the agreement does not depend on the size)
GRIDS = {"ct": ((80, 72, 48), (2.0, 2.0, 3.0)), "ct_small": ((48, 48, 40), (2.0, 2.0, 2.5)),
         "mr": ((64, 72, 60), (2.5, 2.5, 2.5)), "mr_small": ((32, 32, 24), (1.5, 1.5, 2.0)),
         "mr_slices": ((96, 96, 8), (1.5, 1.5, 8.0))}


def phantom(kind: str, channels: int, work: Path):
    """A medseg image (MetaTensor, C x X x Y x Z) of the given kind, read back with medseg.io.load."""
    import numpy as np

    from medseg.data.phantoms import abdomen_ct, brain_mr, save_phantom
    from medseg.io import load
    from medseg.io.write import save

    shape, spacing = GRIDS[kind]
    if kind.startswith("ct"):
        ph = abdomen_ct(shape=shape, spacing=spacing, orientation="LPS", seed=3)
    else:
        ph = brain_mr(shape=shape, spacing=spacing, orientation="LPS", seed=3)
    # CT as a DICOM series (medseg reads it; the bundle and monai.bundle run get the same NIfTI)
    fmt = "dicom" if kind.startswith("ct") else "nifti"
    folder = work / f"src-{kind}"
    if not folder.exists():
        save_phantom(ph, folder, format=fmt)
    img = load(folder / ("image" if fmt == "dicom" else "image.nii.gz"))
    if channels > 1:
        import torch

        base = img.as_tensor()
        chans = [base * (1.0 + 0.25 * c) + 10.0 * c for c in range(channels)]
        multi = img.clone()
        multi.set_array(torch.cat(chans, 0))
        path = save(multi, work / f"src-{kind}-{channels}ch.nii.gz")
        img = load(path)
    assert np.all(np.isfinite(img.numpy()))
    return img


def untrusted_status(bundle: Path) -> str:
    from medseg.bundle.load import read_all_configs
    from medseg.bundle.trust import ensure_trusted
    from medseg.bundle.zoo import inference_config_name
    from medseg.errors import MedsegError

    try:
        configs = read_all_configs(bundle)
        name = inference_config_name(configs)
        if name is None:
            return "no inference config"
        ensure_trusted({k: v for k, v in configs.items() if k in (name, "metadata.json")})
        return "ok"
    except MedsegError as exc:
        return " ".join(str(exc).split())[:600]


def run_one(src: Path, work: Path, *, run: bool) -> dict:
    import nibabel as nib
    import numpy as np
    from zoo_fixture import make_zoo_bundle, monai_bundle_run

    from medseg.bundle.load import read_all_configs
    from medseg.bundle.zoo import ZooBundleSource, inference_config_name, write_input

    row: dict = {"bundle": src.name}
    try:
        configs = read_all_configs(src)
    except Exception as exc:  # noqa: BLE001 - reported in the table
        row.update(config=None, untrusted=str(exc)[:300], medseg=f"refused: {str(exc)[:200]}", agreement=None)
        return row
    row["config"] = inference_config_name(configs)
    row["task"] = str((configs.get("metadata.json") or {}).get("task", ""))[:80]
    row["untrusted"] = untrusted_status(src)
    trusted_needed = row["untrusted"] != "ok"
    if src.name not in INPUTS:
        row["medseg"] = "refused: not a volume segmentation bundle medseg runs (" + _kind(configs) + ")"
        row["agreement"] = None
        return row
    kind, channels = INPUTS[src.name]
    row["input"] = f"{kind} phantom, {channels} channel(s)"
    if not run:
        row["medseg"] = "needs --trust-bundle" if trusted_needed else "runs untrusted"
        row["agreement"] = None
        return row
    bundle = work / src.name
    try:
        make_zoo_bundle(src, bundle)
        img = phantom(kind, channels, work)
        t0 = time.perf_counter()
        model = ZooBundleSource.load(bundle, trust=True)
        lab = model.predict(img, device="cpu", progress=False)
        row["medseg_s"] = round(time.perf_counter() - t0, 2)
    except Exception as exc:  # noqa: BLE001 - reported in the table
        row["medseg"] = f"refused: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        row["agreement"] = None
        row["trace"] = traceback.format_exc().splitlines()[-3:]
        return row
    row["medseg"] = "needs --trust-bundle" if trusted_needed else "runs untrusted"
    (work / "in" / src.name).mkdir(parents=True, exist_ok=True)
    files = [Path(f) for f in write_input(img, work / "in" / src.name)]
    try:
        t0 = time.perf_counter()
        ref = monai_bundle_run(bundle, files, work / "out" / src.name)
        row["monai_s"] = round(time.perf_counter() - t0, 2)
    except Exception as exc:  # noqa: BLE001
        row["agreement"] = None
        row["monai_run"] = f"failed: {' '.join(str(exc).split())[:300]}"
        return row
    r = nib.load(str(ref))
    want = np.squeeze(np.asanyarray(r.dataobj))
    got = lab.numpy()[0]
    row["grid_equal"] = bool(want.shape == got.shape and np.allclose(r.affine, lab.affine.numpy(), atol=1e-3))
    row["agreement"] = float(np.mean(np.rint(want).astype(np.int64) == got)) if want.shape == got.shape else 0.0
    row["labels_present"] = sorted(int(v) for v in np.unique(got) if v)
    row["shape"] = list(got.shape)
    return row


def _kind(configs: dict) -> str:
    meta = configs.get("metadata.json") or {}
    try:
        inputs = meta["network_data_format"]["inputs"]
        outputs = meta["network_data_format"]["outputs"]
        first_in = next(iter(inputs.values()))
        first_out = next(iter(outputs.values()))
        return (f"inputs {first_in.get('num_channels')} channel(s) of spatial shape {first_in.get('spatial_shape')}, "
                f"output type {first_out.get('type')!r}")
    except (KeyError, StopIteration, AttributeError, TypeError):
        return "no network_data_format"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", default="/tmp/zoo/models", help="the model-zoo's models/ folder")
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--no-run", action="store_true", help="trust table only (no weights, no runs)")
    args = ap.parse_args()
    zoo = Path(args.zoo)
    names = sorted(p.name for p in zoo.iterdir() if (p / "configs").is_dir())
    if args.only:
        names = [n for n in names if n in args.only]
    rows = {}
    if RESULT.is_file():
        rows = {r["bundle"]: r for r in json.loads(RESULT.read_text()).get("bundles", [])}
    with tempfile.TemporaryDirectory(prefix="medseg-zoo-bench-") as tmp:
        for name in names:
            t0 = time.perf_counter()
            row = run_one(zoo / name, Path(tmp), run=not args.no_run)
            rows[name] = row
            print(f"{name:45s} untrusted={'ok' if row['untrusted'] == 'ok' else 'refused':8s} "
                  f"medseg={row['medseg'][:60]:60s} agreement={row.get('agreement')} ({time.perf_counter() - t0:.0f} s)",
                  flush=True)
            _write(rows, zoo)
    ran = [r for r in rows.values() if r.get("agreement") is not None]
    print(f"\n{len(rows)} inference configs; untrusted ok: {sum(r['untrusted'] == 'ok' for r in rows.values())}; "
          f"runs untrusted: {sum(r['medseg'] == 'runs untrusted' for r in rows.values())}; needs trust: "
          f"{sum(r['medseg'] == 'needs --trust-bundle' for r in rows.values())}; refused: "
          f"{sum(r['medseg'].startswith('refused') for r in rows.values())}; agreement measured on {len(ran)}: "
          + ", ".join(f"{r['bundle']} {100 * r['agreement']:.3f}%" for r in ran))
    return 0


def _write(rows: dict, zoo: Path) -> None:
    import monai
    import torch

    out = {"command": "python benchmarks/zoo_bundles.py --zoo <model-zoo>/models",
           "zoo_commit": _zoo_commit(), "baseline": "python -m monai.bundle run (same NIfTI, same seeded weights)",
           "weights": "seeded random state dict per bundle (tests/zoo_fixture.make_zoo_bundle); zoo weights not reachable",
           "versions": {"monai": monai.__version__, "torch": torch.__version__},
           "bundles": [rows[k] for k in sorted(rows)]}
    RESULT.write_text(json.dumps(out, indent=2) + "\n")


def _zoo_commit() -> str | None:
    import subprocess

    try:
        return subprocess.run(["git", "--git-dir=/work/.mirror/Project-MONAI+model-zoo/repo", "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=30).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


if __name__ == "__main__":
    sys.exit(main())
