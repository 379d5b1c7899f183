"""Seed corpus, built only with medseg's own generators (and nibabel / SimpleITK / tifffile /
Pillow / pydicom writers for the formats medseg does not write itself).

Every DICOM seed carries the canary patient identifiers :data:`CANARY_NAME` / :data:`CANARY_ID`:
a run that prints them (or :data:`CANARY_VALUE`, which the mutators inject into other tags) has
leaked a header value.
"""

from __future__ import annotations

import gzip
import shutil
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CANARY_NAME = "CANARY^PHI^XQZ"
CANARY_ID = "PHIXQZ123"
CANARY_VALUE = "HDRXQZ77"
#: strings that must never reach stdout/stderr (the patient canaries always; the value canary
#: only outside the fields `medseg info` deliberately shows, see runner.leaked)
CANARIES = ("CANARY", "PHIXQZ", CANARY_VALUE)


@dataclass(frozen=True)
class Seed:
    fmt: str     # mutator family: dicom, series, xray, deflated, seg, zip, tar, nifti, nrrd, mha, tiff, png
    path: Path   # a file, or a folder (series)
    name: str


def _ct_volume(shape=(16, 12, 4), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vol = rng.normal(40, 30, size=shape).round()
    vol[4:10, 3:8, :] = 300
    return vol.astype(np.float32)


def _affine(spacing=(0.8, 0.9, 2.5)) -> np.ndarray:
    from medseg.data.phantoms import grid_affine

    return grid_affine((16, 12, 4), spacing, "LPS")


def _series(out: Path, **kw) -> list[Path]:
    from medseg.data.dicom_writer import write_dicom_series

    return write_dicom_series(_ct_volume(), _affine(), out, patient_name=CANARY_NAME,
                              patient_id=CANARY_ID, series_description="fuzz seed", **kw)


def build_seeds(root: Path) -> list[Seed]:
    """Write the seed corpus under ``root`` (a fresh folder) and return it."""
    import nibabel as nib
    import pydicom
    import SimpleITK as sitk
    import tifffile
    from PIL import Image
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    from medseg.data.dicom_writer import write_dicom_xray

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    seeds: list[Seed] = []

    ct = root / "series_ct"
    files = _series(ct)
    seeds.append(Seed("series", ct, "series_ct"))
    seeds.append(Seed("dicom", files[1], "ct_slice"))
    mr = root / "series_mr"
    _series(mr, modality="MR")
    seeds.append(Seed("series", mr, "series_mr"))

    xr = root / "xray.dcm"
    img = (np.arange(20 * 14).reshape(20, 14) * 7 % 4000).astype(np.float64)
    write_dicom_xray(img, (0.2, 0.25), xr, modality="DX", patient_name=CANARY_NAME, patient_id=CANARY_ID)
    seeds.append(Seed("xray", xr, "dx"))
    cr = root / "cr_mono1.dcm"
    write_dicom_xray(img, 0.3, cr, modality="CR", photometric="MONOCHROME1", spacing_tag="ImagerPixelSpacing",
                     magnification=1.2, patient_name=CANARY_NAME, patient_id=CANARY_ID)
    seeds.append(Seed("xray", cr, "cr"))

    ds = pydicom.dcmread(files[2])
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    defl = root / "deflated.dcm"
    ds.save_as(defl, enforce_file_format=True)
    seeds.append(Seed("deflated", defl, "deflated"))

    seg = root / "seg.dcm"
    try:
        from medseg.io import load
        from medseg.io.dicom_seg import write_dicom_seg

        src = load(ct)
        lab = (src > 200).to(dtype=__import__("torch").uint8)
        lab.affine = src.affine
        write_dicom_seg(lab, src, seg, label_names={1: "liver"})
        seeds.append(Seed("seg", seg, "seg"))
    except Exception as exc:  # noqa: BLE001 - a seed the writer refuses is reported, not fatal
        print(f"fuzz seeds: no DICOM SEG seed ({type(exc).__name__}: {exc})")

    zpath = root / "series.zip"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(ct.iterdir()):
            zf.write(f, f"study/{f.name}")
    seeds.append(Seed("zip", zpath, "zip"))
    for name, mode in (("series.tar", "w"), ("series.tar.gz", "w:gz")):
        with tarfile.open(root / name, mode) as tf:
            for f in sorted(ct.iterdir()):
                tf.add(f, f"study/{f.name}")
        seeds.append(Seed("tar", root / name, name))

    vol = _ct_volume()
    aff = np.diag([-0.8, -0.9, 2.5, 1.0])
    aff[:3, 3] = [10, 20, -30]
    for name, data in (("img.nii", vol), ("img.nii.gz", vol), ("lab.nii.gz", (vol > 200).astype(np.uint8)),
                       ("4d.nii.gz", np.stack([vol, vol], -1).astype(np.int16))):
        ni = nib.Nifti1Image(data, aff)
        ni.set_qform(aff, 1)
        ni.set_sform(aff, 1)
        nib.save(ni, str(root / name))
        seeds.append(Seed("nifti", root / name, name))
    n2 = nib.Nifti2Image(vol, aff)
    nib.save(n2, str(root / "img2.nii"))
    seeds.append(Seed("nifti", root / "img2.nii", "nifti2"))

    im = sitk.GetImageFromArray(np.transpose(vol, (2, 1, 0)).astype(np.int16))
    im.SetSpacing((0.8, 0.9, 2.5))
    im.SetOrigin((1.0, 2.0, 3.0))
    for name, comp in (("img.nrrd", False), ("gz.nrrd", True), ("img.mha", False), ("z.mha", True)):
        sitk.WriteImage(im, str(root / name), comp)
        seeds.append(Seed("nrrd" if name.endswith("nrrd") else "mha", root / name, name))
    # detached header + data
    nhdr = root / "det.nhdr"
    raw = np.transpose(vol, (2, 1, 0)).astype("<i2")
    (root / "det.raw").write_bytes(raw.tobytes())
    nhdr.write_text("NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\n"
                    "sizes: 16 12 4\nspace directions: (0.8,0,0) (0,0.9,0) (0,0,2.5)\n"
                    "endian: little\nencoding: raw\nspace origin: (1,2,3)\ndata file: det.raw\n\n")
    seeds.append(Seed("nrrd", nhdr, "nhdr"))
    mhd = root / "det.mhd"
    mhd.write_text("ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
                   "CompressedData = False\nTransformMatrix = 1 0 0 0 1 0 0 0 1\nOffset = 1 2 3\n"
                   "ElementSpacing = 0.8 0.9 2.5\nDimSize = 16 12 4\nElementType = MET_SHORT\n"
                   "ElementDataFile = det.raw\n")
    seeds.append(Seed("mha", mhd, "mhd"))

    plane = (vol[:, :, 0] - vol.min()).astype(np.uint16).T  # (y, x)
    tifffile.imwrite(root / "img.tif", plane, resolution=(100.0, 100.0), resolutionunit="CENTIMETER")
    seeds.append(Seed("tiff", root / "img.tif", "tif"))
    tifffile.imwrite(root / "stack.tif", np.transpose(vol, (2, 1, 0)).astype(np.float32), imagej=False)
    seeds.append(Seed("tiff", root / "stack.tif", "stack"))
    tifffile.imwrite(root / "img.ome.tif", np.transpose(vol, (2, 1, 0)).astype(np.uint16)[None],
                     metadata={"axes": "CZYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5, "PhysicalSizeZ": 2.0},
                     ome=True)
    seeds.append(Seed("tiff", root / "img.ome.tif", "ome"))
    tifffile.imwrite(root / "rgb.tif", np.zeros((12, 16, 3), np.uint8), photometric="rgb", compression="zlib")
    seeds.append(Seed("tiff", root / "rgb.tif", "rgb_zlib"))
    Image.fromarray((plane // 4).astype(np.uint8)).save(root / "img.png", dpi=(300, 300))
    seeds.append(Seed("png", root / "img.png", "png"))
    Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(root / "rgb.png")
    seeds.append(Seed("png", root / "rgb.png", "rgb_png"))
    Image.fromarray((plane % 3).astype(np.uint8)).convert("P").save(root / "pal.png")
    seeds.append(Seed("png", root / "pal.png", "pal_png"))
    return seeds


def copy_seed(seed: Seed, dest_dir: Path) -> Path:
    """Copy a seed (file or folder) into ``dest_dir``; return the copy."""
    dest = dest_dir / seed.path.name
    if seed.path.is_dir():
        shutil.copytree(seed.path, dest)
    else:
        shutil.copyfile(seed.path, dest)
        if seed.path.name.endswith(".nhdr") or seed.path.name.endswith(".mhd"):
            shutil.copyfile(seed.path.parent / "det.raw", dest_dir / "det.raw")
    return dest


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)
