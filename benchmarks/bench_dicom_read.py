"""Reading a CT series: medseg.io.load vs SimpleITK's ImageSeriesReader, same files, same geometry.

Writes a phantom CT series (default 300 slices of 512x512, shuffled file order) with medseg's
DICOM writer, then reads it with each reader several times (best of N, warm page cache) and
checks both give the same voxels and the same world geometry.

    python benchmarks/bench_dicom_read.py [--slices 300] [--size 512] [--repeat 3]

Prints a side-by-side table and writes benchmarks/results/dicom_read.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def read_medseg(folder: Path):
    from medseg.io import load

    img = load(folder)
    return img.numpy()[0], img.affine.numpy()


def read_sitk(folder: Path):
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    files = reader.GetGDCMSeriesFileNames(str(folder))
    reader.SetFileNames(files)
    image = reader.Execute()
    array = np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0)).astype(np.float32)  # z,y,x -> i,j,k
    direction = np.array(image.GetDirection()).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction * np.array(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # LPS -> RAS
    return array, affine


def best_of(fn, folder: Path, repeat: int):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn(folder)
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    from medseg.data.dicom_writer import write_dicom_series
    from medseg.data.phantoms import grid_affine

    rng = np.random.default_rng(0)
    shape = (args.size, args.size, args.slices)
    volume = rng.integers(-1000, 1500, size=shape).astype(np.float32)
    affine = grid_affine(shape, (0.7, 0.7, 1.0), "LPS")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "series"
        t0 = time.perf_counter()
        write_dicom_series(volume, affine, folder, order="shuffled", seed=1)
        t_write = time.perf_counter() - t0
        t_m, (vol_m, aff_m) = best_of(read_medseg, folder, args.repeat)
        t_s, (vol_s, aff_s) = best_of(read_sitk, folder, args.repeat)

    same_voxels = bool(np.array_equal(vol_m, vol_s)) and bool(np.array_equal(vol_m, volume))
    geometry_err = float(np.abs(aff_m - aff_s).max())
    ratio = t_s / t_m
    print(f"series {shape[0]}x{shape[1]}x{shape[2]} int16 (written in {t_write:.1f} s, shuffled file order)")
    print(f"{'reader':<28}{'best of ' + str(args.repeat) + ' (s)':>18}")
    print(f"{'medseg.io.load':<28}{t_m:>18.2f}")
    print(f"{'SimpleITK ImageSeriesReader':<28}{t_s:>18.2f}")
    print(f"speed ratio SimpleITK/medseg: {ratio:.2f}x (>= 1 means medseg is at least as fast)")
    print(f"same voxels: {same_voxels}; max affine difference: {geometry_err:.2e} mm")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dicom_read.json").write_text(json.dumps({
        "shape": list(shape), "repeat": args.repeat, "medseg_s": round(t_m, 3), "simpleitk_s": round(t_s, 3),
        "ratio_simpleitk_over_medseg": round(ratio, 3), "same_voxels": same_voxels,
        "max_affine_diff_mm": geometry_err, "machine": f"{platform.machine()} {platform.processor()}".strip(),
    }, indent=2) + "\n")
    if not same_voxels or geometry_err > 1e-3:
        raise SystemExit("readers disagree")


if __name__ == "__main__":
    main()
