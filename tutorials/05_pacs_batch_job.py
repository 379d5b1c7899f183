"""Tutorial 5: a PACS batch job (DICOMweb) against a local Orthanc.

What you will learn
-------------------
1. How a hospital-style batch job looks end to end: CT series sit in a PACS; ``medseg batch``
   queries it over DICOMweb (QIDO-RS), downloads each series (WADO-RS), segments it, writes
   NIfTI / DICOM SEG / PNG per case, and with ``--store-back`` sends the DICOM SEG back to the
   PACS (STOW-RS), where a viewer shows it on top of the CT.
2. Credentials never go on the command line: ``MEDSEG_PACS_USER`` / ``MEDSEG_PACS_PASSWORD``
   (or ``~/.netrc``).
3. Resume: the job keeps ``manifest.jsonl``; running it again skips finished cases, and because
   the SEG's UIDs are derived from (input, weights), nothing is stored twice.

The PACS is a real Orthanc (Debian packages ``orthanc`` + ``orthanc-dicomweb``) started on
127.0.0.1 with a random password by ``medseg.batch.local_orthanc.LocalOrthanc`` and removed at
the end. The CT series are phantoms written as real DICOM.

The model: ``--bundle`` (default ``bundles/ct_abdomen_organs`` when it is present); without one,
a very short training run is made first (a poor model, but the job mechanics are the same).

Run it::

    python tutorials/05_pacs_batch_job.py --out /tmp/tutorial05 [--quick] [--bundle DIR]

Outputs in ``--out``: ``series/`` (what was uploaded), ``batch/`` (the job's output folder with
``manifest.jsonl`` and one folder per case), ``results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    """Command-line options: --quick, --out and --bundle."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   default=os.environ.get("MEDSEG_TUTORIAL_QUICK", "0") == "1",
                   help="small settings (also env MEDSEG_TUTORIAL_QUICK=1)")
    p.add_argument("--out", default="tutorial05_output", help="folder for the outputs")
    p.add_argument("--bundle", default=None, help="bundle folder/name or training run folder")
    return p.parse_args()


def choose_model(arg: str | None, out: Path, progress: bool) -> Path:
    """The bundle given, else the shipped CT abdomen bundle, else a short training run."""
    if arg:
        return Path(arg)
    shipped = ROOT / "bundles" / "ct_abdomen_organs"
    if (shipped / "configs" / "inference.json").is_file():
        return shipped
    print("  bundles/ct_abdomen_organs is not there: training a short run instead")
    from medseg.data import phantoms
    from medseg.training import TrainConfig, train

    ds = phantoms.write_decathlon_dataset(out / "dataset", task="abdomen", n_train=4, n_test=0,
                                          shape=(32, 32, 24), seed=0)
    return train(TrainConfig(dataset=ds, output=out / "run", preset="ct_abdomen",
                             network={"arch": "unet", "channels": [8, 16, 32], "strides": [2, 2]},
                             epochs=2, patch_size=(32, 32, 32), val_every=1, val_fraction=0.25, seed=0,
                             device="cpu", amp=False, num_workers=0, progress=progress))


def labels_on_grid(label: np.ndarray, affine: np.ndarray, shape: tuple[int, ...],
                   target_affine: np.ndarray) -> np.ndarray:
    """Nearest-neighbour copy of ``label`` (voxel->RAS mm ``affine``) onto another grid (``shape``,
    ``target_affine``): each target voxel centre is mapped through the world into ``label``."""
    to_src = np.linalg.inv(affine) @ target_affine
    ijk = np.indices(shape).reshape(len(shape), -1)
    src = np.rint(to_src[:3, :3] @ ijk + to_src[:3, 3:4]).astype(np.int64)
    inside = np.all((src >= 0) & (src < np.array(label.shape)[:, None]), axis=0)
    out = np.zeros(ijk.shape[1], dtype=label.dtype)
    out[inside] = label[tuple(src[:, inside])]
    return out.reshape(shape)


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    progress = os.environ.get("MEDSEG_PROGRESS", "1") != "0"

    from medseg.batch.local_orthanc import LocalOrthanc, orthanc_available
    from medseg.data import phantoms
    from medseg.data.dicom_writer import write_dicom_series
    from medseg.io.atomic import atomic_write_bytes, atomic_write_text

    if not orthanc_available():
        raise SystemExit("Orthanc with its DICOMweb plugin is not installed: "
                         "apt-get install orthanc orthanc-dicomweb, then rerun")

    print("== 0. The model ==")
    model = choose_model(args.bundle, out, progress)
    print(f"  using {model}")

    # ----------------------------------------------------------------------- 1. the series
    # Two CT phantoms in different orientations (a PACS holds whatever the scanners sent),
    # plus an MR series the CT query must NOT pick up.
    print("\n== 1. Writing phantom series as DICOM ==")
    n_ct = 2 if args.quick else 4
    # Same field of view (144 x 144 x 160 mm) either way; --quick uses coarser voxels.
    shape, spacing = ((48, 48, 32), (3.0, 3.0, 5.0)) if args.quick else ((96, 96, 64), (1.5, 1.5, 2.5))
    files: list[Path] = []
    truths = {}
    for n in range(n_ct):
        orient = ("LAS", "RAS", "LPS", "RPI")[n % 4]  # LAS and RPI are left-handed grids
        ph = phantoms.abdomen_ct(shape=shape, spacing=spacing, orientation=orient, seed=300 + n)
        uid = f"1.2.826.0.1.3680043.8.498.5{n:03d}"
        files += write_dicom_series(ph.image, ph.affine, out / "series" / f"ct_{n}", modality="CT",
                                    series_description=f"abdomen phantom {orient}", series_instance_uid=uid,
                                    order="shuffled", seed=n)
        truths[uid] = ph
    mr = phantoms.brain_mr(shape=(32, 32, 16), seed=1)
    files += write_dicom_series(np.clip(np.round(mr.image), 0, 32767), mr.affine, out / "series" / "mr",
                                modality="MR", series_description="brain phantom")
    print(f"  {len(files)} files: {n_ct} CT series + 1 MR series")

    results: dict = {"model": str(model), "n_ct_series": n_ct}
    with LocalOrthanc() as pacs:
        # ------------------------------------------------------------------- 2. upload
        print("\n== 2. A private Orthanc on 127.0.0.1, uploading ==")
        pacs.upload(files)
        series = pacs.rest("GET", "/series")
        print(f"  Orthanc holds {len(series)} series; DICOMweb at {pacs.dicomweb_url}")

        # ------------------------------------------------------------------- 3. the job
        # Credentials through the environment, never on the command line.
        env = {**os.environ, "MEDSEG_PACS_USER": pacs.auth[0], "MEDSEG_PACS_PASSWORD": pacs.auth[1],
               "MEDSEG_PROGRESS": "0"}
        cmd = [sys.executable, "-m", "medseg", "batch", pacs.dicomweb_url, "--bundle", str(model),
               "--output", str(out / "batch"), "--modality", "CT", "--format", "nifti,dicom-seg,png",
               "--store-back", "--device", "cpu"]
        print("\n== 3. medseg batch http://127.0.0.1:PORT/dicom-web --modality CT --store-back ... ==")
        first = subprocess.run(cmd, capture_output=True, text=True, env=env)
        print("  " + first.stdout.strip().replace("\n", "\n  "))
        if first.returncode != 0:
            raise SystemExit(f"medseg batch failed ({first.returncode}): {first.stderr.strip()[-1500:]}")
        segs_after_first = pacs.instances_of_modality("SEG")
        print(f"  SEG series now in the PACS: {len(segs_after_first)}")

        # ------------------------------------------------------------------- 4. check a SEG
        # Read a stored SEG back FROM THE PACS (WADO over REST) and compare it with the exact
        # phantom label of the CT it refers to.
        print("\n== 4. Reading a stored SEG back from the PACS ==")
        import io

        import pydicom

        from medseg.io import load
        from medseg.io.dicom_seg import read_dicom_seg
        from medseg.io.read import orientation_code
        from medseg.metrics import dice

        seg_checks = []
        for rec in segs_after_first:
            inst = rec["Instances"][0]
            raw = pacs.rest("GET", f"/instances/{inst}/file")
            ds = pydicom.dcmread(io.BytesIO(raw))
            ref_uid = ds.ReferencedSeriesSequence[0].SeriesInstanceUID
            ph = truths[ref_uid]
            seg_path = out / "from_pacs" / f"{ref_uid}.dcm"
            seg_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(seg_path, raw)
            source = load(out / "series" / f"ct_{list(truths).index(ref_uid)}")
            seg = read_dicom_seg(seg_path, reference=source)
            labels = seg[0].numpy()
            # Values are SEGMENT NUMBERS (1..n for the organs found), not the model's label
            # values: an organ the model missed has no segment. Match segments by their label.
            names = {int(k): str(v) for k, v in seg.meta["labels"].items()}
            liver_value = next((k for k, v in names.items() if v.lower() == "liver"), None)
            # Compare in the WORLD, not by array index: the DICOM reader orders slices along the
            # normal row x column, so a left-handed grid such as LAS comes back with k reversed
            # (same world positions, another index order). Carry the exact label onto the grid
            # of the series as read, voxel centre by voxel centre (nearest neighbour).
            truth = labels_on_grid(ph.label, ph.affine, labels.shape, source.affine.numpy())
            liver = dice(labels == liver_value, truth == 1) if liver_value is not None else 0.0
            seg_checks.append({"referenced_series": ref_uid, "segments": names,
                               "orientation_read": orientation_code(source.affine.numpy()),
                               "orientation_written": orientation_code(ph.affine),
                               "shape_matches_source": list(labels.shape) == list(source.shape[1:]),
                               "liver_dice": float(liver)})
            print(f"  SEG for series ...{ref_uid[-6:]} (written {orientation_code(ph.affine)}, read "
                  f"{orientation_code(source.affine.numpy())}): segments {names}; "
                  f"liver Dice vs exact phantom {liver:.3f}")
        results["seg_checks"] = seg_checks

        # ------------------------------------------------------------------- 5. rerun
        print("\n== 5. The same command again (resume) ==")
        second = subprocess.run(cmd, capture_output=True, text=True, env=env)
        print("  " + second.stdout.strip().replace("\n", "\n  "))
        if second.returncode != 0:
            raise SystemExit(f"second medseg batch failed ({second.returncode}): {second.stderr.strip()[-1500:]}")
        segs_after_second = pacs.instances_of_modality("SEG")
        print(f"  SEG series in the PACS after the rerun: {len(segs_after_second)} (unchanged)")
        results.update(first_stdout=first.stdout, second_stdout=second.stdout,
                       seg_series_after_first=len(segs_after_first),
                       seg_series_after_second=len(segs_after_second),
                       seg_instances_after_second=sum(len(r["Instances"]) for r in segs_after_second))

    manifest = out / "batch" / "manifest.jsonl"
    records = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    results["manifest_records"] = len(records)
    results["case_folders"] = sorted(p.name for p in (out / "batch").iterdir() if p.is_dir())
    print(f"\n  manifest.jsonl: {len(records)} records; case folders: {results['case_folders']}")
    atomic_write_text(out / "results.json", json.dumps(results, indent=2))
    print(f"Written: {out / 'results.json'}")


if __name__ == "__main__":
    main()
