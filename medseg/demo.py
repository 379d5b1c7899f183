"""``medseg demo``: the main job on REAL sample data, end to end (what ``make demo`` runs).

Steps (a tqdm bar over them; ``MEDSEG_PROGRESS=0`` hides it):

1. fetch the real samples through :func:`medseg.data.sample`: the pyradiomics chest CT
   ``lung1_image`` (NRRD, 512x512x48, HU) with its nodule label ``lung1_label``, and the stardist
   fluorescence image ``nuclei_image`` (512x512) with its instance mask ``nuclei_mask``;
2. write that CT as a real DICOM CT series (:func:`medseg.data.dicom_writer.write_dicom_series`,
   one file per slice), so that the DICOM reader runs and a DICOM SEG is produced;
3. segment the DICOM series with the shipped ``ct_lung_lesion`` bundle and the microscopy image
   with ``fluo_nuclei_2d`` (:func:`medseg.inference.segment_file`: NIfTI, DICOM SEG, overlay PNG,
   provenance);
4. write the references on the same grids and evaluate with :func:`medseg.evaluation.evaluate`
   (Dice/HD95/NSD for the nodule, instance F1/AP/PQ for the nuclei);
5. write the HTML QA report (:func:`medseg.report.build_report`) and ``demo.json``.

``quick=True`` crops both inputs (a 128x128x18 CT block around the nodule, the central
256x256 of the microscopy image): the same code path on less data, for tests. A bundle that
is not shipped is skipped and named; the demo never invents a result.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import BundleError, ConfigError
from medseg.geometry import spacing_of
from medseg.settings import progress_enabled

#: bundle name -> the demo task it runs
BUNDLES = {"ct_abdomen_organs": "organs", "ct_lung_lesion": "lung", "fluo_nuclei_2d": "nuclei"}
_SUBDIRS = ("inputs", "segment", "references", "evaluation", "report_files")
_MARKER = "demo.json"


@dataclass
class DemoResult:
    """What the demo wrote and measured."""

    output: Path
    report: Path | None
    rows: list[dict[str, Any]] = field(default_factory=list)
    missing_bundles: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def table(self) -> str:
        """A short plain-text table of the results."""
        head = f"{'task':<8} {'bundle':<18} {'input':<33} {'metric':<58} {'time s':>7}"
        lines = [head, "-" * len(head)]
        for r in self.rows:
            lines.append(f"{r['task']:<8} {r['bundle']:<18} {r['input']:<33} {r['metric']:<58} {r['seconds']:>7.1f}")
        return "\n".join(lines)


def _prepare_output(out: Path) -> None:
    """Create ``out``; a previous demo output there is replaced, any other non-empty folder refused."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--output {out.name} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / _MARKER).is_file():
            raise ConfigError(f"--output {out.name} exists and is not a previous demo output; "
                              "give a new or empty folder")
        for name in (*_SUBDIRS, "report.html", _MARKER):
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _bundle_available(name: str) -> bool:
    from medseg.bundle import resolve_bundle

    try:
        resolve_bundle(name)
    except BundleError:
        return False
    return True


def _crop(arr: np.ndarray, affine: np.ndarray, start: tuple[int, ...], size: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Crop an (i, j[, k]) array; the affine moves its origin to voxel ``start`` (RAS mm kept exact)."""
    sl = tuple(slice(s, s + n) for s, n in zip(start, size, strict=True))
    new = affine.copy()
    st = np.zeros(4)
    st[: len(start)] = start
    st[3] = 1.0
    new[:, 3] = affine @ st
    return np.ascontiguousarray(arr[sl]), new


def _window(center: int, half: int, n: int) -> int:
    return int(min(max(center - half, 0), max(n - 2 * half, 0)))


def _metatensor(arr: np.ndarray, affine: np.ndarray, meta: dict[str, Any]) -> Any:
    import torch
    from monai.data import MetaTensor

    return MetaTensor(torch.from_numpy(np.ascontiguousarray(arr)[None]),
                      affine=torch.as_tensor(affine, dtype=torch.float64), meta=dict(meta))


def _lung_inputs(out: Path, quick: bool) -> tuple[Path, Any]:
    """Write the real CT as a DICOM series (cropped when quick); return (series folder, label MetaTensor)."""
    from medseg.data import sample
    from medseg.data.dicom_writer import write_dicom_series
    from medseg.io import load

    image = load(sample("lung1_image"))
    label = load(sample("lung1_label"), kind="label")
    vol = image[0].numpy()
    lab = label[0].numpy()
    aff = np.asarray(image.affine, dtype=np.float64)
    if quick:
        idx = np.argwhere(lab > 0)
        c = idx.mean(axis=0).round().astype(int) if idx.size else np.array(vol.shape) // 2
        size = (min(128, vol.shape[0]), min(128, vol.shape[1]), min(18, vol.shape[2]))
        start = tuple(_window(int(c[a]), size[a] // 2, vol.shape[a]) for a in range(3))
        vol, aff = _crop(vol, aff, start, size)
        lab, _ = _crop(lab, np.asarray(label.affine, dtype=np.float64), start, size)
    series_dir = out / "inputs" / "lung1_ct_dicom"
    write_dicom_series(vol, aff, series_dir, modality="CT",
                       series_description="medseg demo: pyradiomics lung1 chest CT")
    meta = {"space": "RAS", "kind": "label", "format": "nrrd", "modality": "CT",
            "spacing": spacing_of(aff, 3)}
    return series_dir, _metatensor(lab, aff, meta)


def _organ_inputs(out: Path, quick: bool) -> tuple[Path, Any]:
    """TotalSegmentator's real abdominal CT (30 slices, 3 mm) and its segmentation as the reference
    (liver, spleen, kidneys in the bundle's label values); ``quick`` keeps 12 central slices."""
    import nibabel as nib

    from medseg.data import sample
    from medseg.data.totalseg import TOTAL_V2, remap
    from medseg.io import save

    img = nib.load(str(sample("ts_ct_sm")))
    arr = np.asarray(img.dataobj)
    ref = remap(np.asarray(nib.load(str(sample("ts_ct_sm_seg"))).dataobj), TOTAL_V2,
                {"liver": 1, "spleen": 2, "kidney_right": 3, "kidney_left": 4})
    aff = np.asarray(img.affine, dtype=np.float64)
    if quick:
        k0 = max(arr.shape[2] // 2 - 6, 0)
        arr, new = _crop(arr, aff, (0, 0, k0), (arr.shape[0], arr.shape[1], min(12, arr.shape[2])))
        ref, _ = _crop(ref, aff, (0, 0, k0), (ref.shape[0], ref.shape[1], min(12, ref.shape[2])))
        aff = new
    meta = {"space": "RAS", "format": "nifti", "modality": "CT", "spacing": spacing_of(aff, 3)}
    path = out / "inputs" / "ts_ct_sm.nii.gz"
    save(_metatensor(arr.astype(np.int16), aff, meta), path)
    return path, _metatensor(ref, aff, {**meta, "kind": "label"})


def _nuclei_inputs(out: Path, quick: bool) -> tuple[Path, Any]:
    """The real microscopy image (a central crop written as NIfTI when quick) and its instance mask."""
    from medseg.data import sample
    from medseg.io import load, save

    img_path = sample("nuclei_image")
    mask = load(sample("nuclei_mask"), kind="label")
    if not quick:
        return img_path, mask
    image = load(img_path)
    arr, m = image[0].numpy(), mask[0].numpy()
    size = (min(256, arr.shape[0]), min(256, arr.shape[1]))
    start = ((arr.shape[0] - size[0]) // 2, (arr.shape[1] - size[1]) // 2)
    arr_c, aff = _crop(arr, np.asarray(image.affine, dtype=np.float64), start, size)
    m_c, _ = _crop(m, np.asarray(mask.affine, dtype=np.float64), start, size)
    path = out / "inputs" / "img2d_crop.nii.gz"
    save(_metatensor(arr_c, aff, {**image.meta, "format": "nifti"}), path)
    return path, _metatensor(m_c, aff, {**mask.meta, "format": "nifti"})


def _copy(src: Path, dst: Path) -> None:
    from medseg.io.atomic import atomic_write_bytes

    atomic_write_bytes(dst, src.read_bytes())


def run_demo(output: str | os.PathLike[str], *, quick: bool = False, progress: bool = True) -> DemoResult:
    """Run the demo into ``output`` (see the module docstring); return a :class:`DemoResult`.

    Raises DataFetchError when the samples cannot be fetched (offline first run), BundleError when
    no demo bundle is shipped, ConfigError for an unusable output folder.
    """
    from tqdm.auto import tqdm

    from medseg.bundle import load_bundle
    from medseg.data import sample
    from medseg.evaluation import evaluate
    from medseg.inference.pipeline import segment_file
    from medseg.io import save
    from medseg.io.atomic import atomic_write_text
    from medseg.report import build_report

    t_start = time.perf_counter()
    out = Path(output)
    available = [b for b in BUNDLES if _bundle_available(b)]
    missing = [b for b in BUNDLES if b not in available]
    if not available:
        raise BundleError(f"none of the demo bundles ({', '.join(BUNDLES)}) is shipped in bundles/; "
                          "train or install one first")
    show = progress_enabled(progress)
    steps = ["fetch samples"]
    if "ct_abdomen_organs" in available:
        steps += ["segment abdominal CT (ct_abdomen_organs)"]
    if "ct_lung_lesion" in available:
        steps += ["CT as DICOM series", "segment CT (ct_lung_lesion)"]
    if "fluo_nuclei_2d" in available:
        steps += ["segment nuclei (fluo_nuclei_2d)"]
    steps += ["evaluate", "QA report"]
    bar = tqdm(total=len(steps), desc="demo", unit="step", disable=not show)
    result = DemoResult(output=out, report=None, missing_bundles=missing)
    jobs: list[dict[str, Any]] = []

    def step(name: str) -> None:
        bar.set_postfix_str(name)

    try:
        step(steps[0])
        needed = []
        if "ct_abdomen_organs" in available:
            needed += ["ts_ct_sm", "ts_ct_sm_seg"]
        if "ct_lung_lesion" in available:
            needed += ["lung1_image", "lung1_label"]
        if "fluo_nuclei_2d" in available:
            needed += ["nuclei_image", "nuclei_mask"]
        for n in needed:
            sample(n)  # DataFetchError (offline first run) before anything is written
        _prepare_output(out)
        bar.update(1)

        def run_job(task: str, bundle: str, path: Path, ref: Any, label: str, instances: bool) -> None:
            t0 = time.perf_counter()
            seg = segment_file(path, bundle, out / "segment", model_loader=load_bundle, progress=show)
            jobs.append({"task": task, "bundle": bundle, "case": seg.case, "ref": ref, "input": label,
                         "labels": seg.provenance.model["labels"], "instances": instances,
                         "seconds": time.perf_counter() - t0})
            bar.update(1)

        if "ct_abdomen_organs" in available:
            step("segment abdominal CT (ct_abdomen_organs)")
            run_job("organs", "ct_abdomen_organs", *_organ_inputs(out, quick), "TotalSegmentator real CT (NIfTI)",
                    False)
        if "ct_lung_lesion" in available:
            step("CT as DICOM series")
            series_dir, lung_ref = _lung_inputs(out, quick)
            bar.update(1)
            step("segment CT (ct_lung_lesion)")
            run_job("lung", "ct_lung_lesion", series_dir, lung_ref, "lung1 CT (DICOM series)", False)
        if "fluo_nuclei_2d" in available:
            step("segment nuclei (fluo_nuclei_2d)")
            run_job("nuclei", "fluo_nuclei_2d", *_nuclei_inputs(out, quick),
                    "stardist img2d crop (NIfTI)" if quick else "stardist img2d (TIFF)", True)

        step("evaluate")
        for job in jobs:
            case = job["case"]
            ref_path = out / "references" / f"{case}.nii.gz"
            # io.save's temporary name keeps only the last suffix of names with many dots (series
            # UIDs): save under a plain name, then rename (still atomic)
            plain = out / "references" / f"reference_{job['task']}.nii.gz"
            save(job["ref"], plain)
            os.replace(plain, ref_path)
            ev = out / "evaluation" / job["task"]
            _copy(out / "segment" / case / "seg.nii.gz", ev / "predictions" / f"{case}.nii.gz")
            _copy(ref_path, ev / "references" / f"{case}.nii.gz")
            labels = None if job["instances"] else {int(k): v for k, v in job["labels"].items()}
            res = evaluate(ev / "predictions", ev / "references", ev, labels=labels, instances=job["instances"],
                           n_boot=200)
            if job["instances"]:
                inst = res.instance_rows[0]
                metric = (f"F1@0.5 {inst['f1']:.3f}  PQ {inst['pq']:.3f}  "
                          f"({int(inst['n_pred'])}/{int(inst['n_ref'])} found)")
                scores = {k: float(inst[k]) for k in ("f1", "ap", "mean_ap", "pq", "precision", "recall")}
                scores.update(n_pred=int(inst["n_pred"]), n_ref=int(inst["n_ref"]))
            elif job["task"] == "organs":
                by = {int(r["label"]): r for r in res.rows}
                metric = "Dice " + "  ".join(f"{n} {by[v]['dice']:.2f}" for v, n in labels.items() if v in by)
                scores = {n: {k: float(by[v][k]) for k in ("dice", "hd95")} for v, n in labels.items() if v in by}
            else:
                row = res.rows[0]
                metric = f"Dice {row['dice']:.3f}  HD95 {row['hd95']:.1f} mm"
                scores = {k: float(row[k]) for k in ("dice", "iou", "hd95", "nsd", "volume_pred_ml", "volume_ref_ml")}
            result.rows.append({"task": job["task"], "bundle": job["bundle"], "input": job["input"],
                                "case": case, "metric": metric, "scores": scores, "seconds": job["seconds"],
                                "outputs": sorted(p.name for p in (out / "segment" / case).iterdir())})
        bar.update(1)

        step("QA report")
        notes = [f"Missing demo bundles (not shipped, skipped): {', '.join(missing)}."] if missing else []
        notes.append("Inputs are real sample data (TotalSegmentator's abdominal CT with its own segmentation "
                     "as the reference, pyradiomics lung1 CT, stardist nuclei); the bundles' "
                     "weights and their training data are described in each bundle's docs/README.md.")
        result.report = build_report(out / "segment", out / "report.html", reference=out / "references",
                                     title="medseg demo: real sample data", progress=False, notes=notes)
        bar.update(1)
    finally:
        bar.close()
    result.seconds = time.perf_counter() - t_start
    summary = {"quick": quick, "seconds": round(result.seconds, 1), "missing_bundles": missing,
               "report": result.report.name if result.report else None,
               "results": [{k: v for k, v in r.items()} for r in result.rows]}
    atomic_write_text(out / _MARKER, json.dumps(summary, indent=2) + "\n")
    return result
