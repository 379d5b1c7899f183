"""DICOM series -> NIfTI: ``medseg convert`` against dcm2niix, same files, same voxels in world space.

Writes a 512x512x300 abdomen CT phantom as a real DICOM series (``medseg.data.phantoms``,
one file per slice, int16 with RescaleSlope/Intercept), then converts it to an uncompressed
``.nii`` with each tool as a fresh process (as a user runs them), alternating, ``--repeat`` times,
and reports the median wall time and the peak resident memory of each. Both outputs are then
put in the same (closest canonical RAS) axis order with nibabel, no interpolation, and compared:
the voxels must be equal and the affines must agree (dcm2niix writes LAS-ish, medseg keeps the
series' own axis order, so raw arrays are not comparable).

    python benchmarks/bench_dicom_to_nifti.py [--slices 300] [--size 512] [--repeat 3] [--keep DIR]

``--keep DIR`` writes the phantom series there once and reuses it (generating it takes minutes).
Needs the ``dcm2niix`` binary (Debian package ``dcm2niix``). Prints a side-by-side table and writes
benchmarks/results/dicom_to_nifti.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"

_TIMED = r"""
import json, resource, subprocess, sys, time
t0 = time.perf_counter()
proc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
wall = time.perf_counter() - t0
if proc.returncode:
    sys.exit(proc.stderr[-2000:])
print(json.dumps({"wall_s": wall, "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def timed(cmd: list[str], env: dict[str, str]) -> dict[str, float]:
    """Wall time and peak RSS of ``cmd`` run as a child of a fresh process (so the peak is its own)."""
    out = subprocess.run([sys.executable, "-c", _TIMED, *cmd], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout)


def write_series(folder: Path, shape: tuple[int, int, int]) -> Path:
    from medseg.data.phantoms import abdomen_ct, save_phantom

    ph = abdomen_ct(shape=shape, spacing=(0.7, 0.7, 1.0), orientation="LPS", seed=0)
    save_phantom(ph, folder, format="dicom")
    return folder / "image"


def canonical(path: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """Voxels (scaled as stored: scl_slope/scl_inter applied) and affine in the closest RAS order."""
    import nibabel as nib

    img = nib.load(str(path))
    stored = str(img.get_data_dtype())
    can = nib.as_closest_canonical(img)
    return np.asarray(can.dataobj), can.affine, stored


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", type=Path, default=None, help="folder to write the phantom series into once")
    args = ap.parse_args()
    if shutil.which("dcm2niix") is None:
        sys.exit("dcm2niix not found: apt-get install -y dcm2niix")
    shape = (args.size, args.size, args.slices)
    env = {**os.environ, "MEDSEG_PROGRESS": "0"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        phantom_dir = args.keep or tmp / "phantom"
        series = phantom_dir / "image"
        if not (series.is_dir() and len(list(series.glob("*.dcm"))) == args.slices):
            t0 = time.perf_counter()
            write_series(phantom_dir, shape)
            print(f"phantom series written in {time.perf_counter() - t0:.0f} s: {series}")
        runs: dict[str, list[dict[str, float]]] = {"medseg": [], "dcm2niix": []}
        for r in range(args.repeat):
            out_m = tmp / f"medseg{r}.nii"
            runs["medseg"].append(timed([sys.executable, "-m", "medseg", "convert", str(series), str(out_m)], env))
            out_d = tmp / f"d2n{r}"
            out_d.mkdir()
            runs["dcm2niix"].append(timed(["dcm2niix", "-z", "n", "-b", "n", "-f", "ct", "-o", str(out_d),
                                           str(series)], env))
        (d_nii,) = sorted(out_d.glob("*.nii"))
        vm, am, dtype_m = canonical(out_m)
        vd, ad, dtype_d = canonical(d_nii)
        same_voxels = bool(vm.shape == vd.shape and np.array_equal(vm, vd))
        affine_gap = float(np.abs(am - ad).max())
        size_m, size_d = out_m.stat().st_size, d_nii.stat().st_size

    def med(tool: str, key: str) -> float:
        return round(statistics.median(x[key] for x in runs[tool]), 3)

    result = {
        "shape": list(shape),
        "repeat": args.repeat,
        "medseg_s": med("medseg", "wall_s"),
        "dcm2niix_s": med("dcm2niix", "wall_s"),
        "ratio_medseg_over_dcm2niix": round(med("medseg", "wall_s") / med("dcm2niix", "wall_s"), 2),
        "medseg_peak_mb": med("medseg", "peak_rss_mb"),
        "dcm2niix_peak_mb": med("dcm2niix", "peak_rss_mb"),
        "medseg_runs_s": [round(x["wall_s"], 3) for x in runs["medseg"]],
        "dcm2niix_runs_s": [round(x["wall_s"], 3) for x in runs["dcm2niix"]],
        "medseg_dtype": dtype_m,
        "dcm2niix_dtype": dtype_d,
        "medseg_file_mb": round(size_m / 2**20, 1),
        "dcm2niix_file_mb": round(size_d / 2**20, 1),
        "same_voxels_in_ras_order": same_voxels,
        "max_affine_diff_mm": round(affine_gap, 6),
        "dcm2niix_version": subprocess.run(["dcm2niix", "-v"], capture_output=True, text=True).stdout.split()[-1],
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dicom_to_nifti.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'':24}{'medseg':>12}{'dcm2niix':>12}")
    print(f"{'wall time (median, s)':24}{result['medseg_s']:>12.2f}{result['dcm2niix_s']:>12.2f}"
          f"   ratio {result['ratio_medseg_over_dcm2niix']:.2f}")
    print(f"{'peak memory (MB)':24}{result['medseg_peak_mb']:>12.0f}{result['dcm2niix_peak_mb']:>12.0f}")
    print(f"{'stored type':24}{dtype_m:>12}{dtype_d:>12}")
    print(f"{'file (MB)':24}{result['medseg_file_mb']:>12.1f}{result['dcm2niix_file_mb']:>12.1f}")
    print(f"same voxels in RAS order: {same_voxels}; max affine difference {affine_gap:.2e} mm")
    if not same_voxels or affine_gap > 1e-3:
        sys.exit("medseg and dcm2niix disagree")


if __name__ == "__main__":
    main()
