"""Verify a MONAI bundle: layout, metadata, trust policy, checksums, network I/O, reference pair."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medseg.errors import BundleError, MedsegError

_REQUIRED_FILES = ("configs/metadata.json", "configs/inference.json", "configs/medseg.json", "models/model.pt",
                   "models/sha256sums.txt")


@dataclass
class Check:
    """One verification step: ``ok`` is True (passed), False (failed) or None (skipped)."""

    name: str
    ok: bool | None
    detail: str = ""


@dataclass
class VerifyReport:
    """Result of :func:`verify_bundle`; ``ok`` only when every check passed (none skipped)."""

    bundle: Path
    checks: list[Check] = field(default_factory=list)
    reference_dice: dict[int, float] = field(default_factory=dict)
    reference_agreement: float | None = None

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok is True for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.ok is not True]

    def summary(self) -> str:
        """One line per check: ``PASS|FAIL|SKIP name: detail``."""
        word = {True: "PASS", False: "FAIL", None: "SKIP"}
        return "\n".join(f"{word[c.ok]} {c.name}: {c.detail}" for c in self.checks)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def label_agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, dict[int, float]]:
    """Fraction of equal voxels and the Dice per label present in either map (same shape)."""
    agree = float(np.mean(a == b)) if a.size else 1.0
    dice = {}
    for lab in sorted(set(np.unique(a).tolist()) | set(np.unique(b).tolist())):
        if lab == 0:
            continue
        pa, pb = a == lab, b == lab
        dice[int(lab)] = float(2.0 * np.logical_and(pa, pb).sum() / (pa.sum() + pb.sum()))
    return agree, dice


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    img = nib.load(str(path))
    return np.asanyarray(img.dataobj), img.affine


def _trust_check(add, configs: dict, trust: bool, passed: str) -> bool:
    """The "trust" line of a report: skipped under ``--trust-bundle``, else the policy on
    ``configs`` (``passed`` is the message when it holds). Returns whether the bundle may load."""
    if trust:
        add(Check("trust", True, "skipped by --trust-bundle (config evaluated as given)"))
        return True
    from medseg.bundle.trust import ensure_trusted

    try:
        ensure_trusted(configs)
    except BundleError as exc:
        add(Check("trust", False, str(exc)))
        return False
    add(Check("trust", True, passed))
    return True


def verify_bundle(path: str | os.PathLike[str], *, trust: bool = False, min_dice: float = 0.98,
                  min_agreement: float = 0.999) -> VerifyReport:
    """Check a bundle folder; never raises for a failing check (see :class:`VerifyReport`).

    Steps: required files; metadata keys per the MONAI bundle specification (checked here, no
    schema download); every config against the trust policy (skipped with ``trust``); the
    checksums in ``models/sha256sums.txt`` and metadata ``weights_sha256``; ``model.pt`` loads
    with ``weights_only=True``; MONAI's ``verify_net_in_out`` on ``network_def``; the stored
    reference input, run through inference.json, reproduces the stored reference output
    (voxel agreement >= ``min_agreement`` and Dice >= ``min_dice`` per label).
    """
    from medseg.bundle.load import read_all_configs, resolve_bundle
    from medseg.bundle.spec import check_metadata
    from medseg.bundle.trust import bundle_file, check_checksums, load_weights, sha256_file

    bundle = resolve_bundle(path)
    from medseg.bundle.zoo import is_zoo_bundle

    if is_zoo_bundle(bundle):
        return verify_zoo_bundle(bundle, trust=trust)
    report = VerifyReport(bundle=bundle)
    add = report.checks.append

    missing = [f for f in _REQUIRED_FILES if not (bundle / f).is_file()]
    add(Check("files", not missing, "missing: " + ", ".join(missing) if missing else "required files present"))

    configs = {}
    try:
        configs = read_all_configs(bundle)  # every JSON/YAML config: MONAI can be pointed at any of them
    except BundleError as exc:
        add(Check("json", False, str(exc)))
    meta = configs.get("metadata.json")
    problems = check_metadata(meta) if meta is not None else ["metadata.json missing or unreadable"]
    add(Check("metadata", not problems, "; ".join(problems) if problems else "MONAI bundle spec keys present"))

    trusted = _trust_check(add, configs, trust, f"{len(configs)} config(s) use allow-listed constructs only")

    sums_ok = False
    try:
        bad = check_checksums(bundle)
        meta_sums = (meta or {}).get("weights_sha256") or {}
        if "models/model.pt" not in meta_sums:
            bad.append("metadata.json has no weights_sha256 for models/model.pt")
        for rel, expected in meta_sums.items():
            if bundle_file(bundle, rel).is_file() and sha256_file(bundle / rel) != expected:
                bad.append(f"{rel} does not match weights_sha256 in metadata.json")
        sums_ok = not bad
        add(Check("checksums", sums_ok, "; ".join(bad) if bad else "all files match their sha256"))
    except BundleError as exc:
        add(Check("checksums", False, str(exc)))

    try:
        state = load_weights(bundle)
        add(Check("weights", True, f"state dict of {len(state)} tensors (weights_only)"))
        weights_ok = True
    except MedsegError as exc:
        add(Check("weights", False, str(exc)))
        weights_ok = False

    runnable = trusted and sums_ok and weights_ok and "inference.json" in configs and meta is not None
    if not runnable:
        add(Check("net_in_out", None, "not run: an earlier check failed"))
        add(Check("reference", None, "not run: an earlier check failed"))
        return report

    from monai.bundle import verify_net_in_out

    try:
        verify_net_in_out(net_id="network_def", meta_file=str(bundle / "configs" / "metadata.json"),
                          config_file=str(bundle / "configs" / "inference.json"), device="cpu",
                          bundle_root=str(bundle))
        add(Check("net_in_out", True, "MONAI verify_net_in_out passed"))
    except (ValueError, RuntimeError, KeyError, TypeError) as exc:
        add(Check("net_in_out", False, f"MONAI verify_net_in_out: {_first_line(exc)}"))

    try:
        ref_in, ref_out = bundle_file(bundle, "tests/ref_input.nii.gz"), bundle_file(bundle, "tests/ref_output.nii.gz")
    except BundleError as exc:
        add(Check("reference", False, str(exc)))
        return report
    if not (ref_in.is_file() and ref_out.is_file()):
        add(Check("reference", False, "tests/ref_input.nii.gz or tests/ref_output.nii.gz is missing"))
        return report
    from medseg.bundle.run_config import run_inference_config

    work = Path(tempfile.mkdtemp(prefix="medseg-verify-"))
    try:
        (work / "in").mkdir()
        shutil.copyfile(ref_in, work / "in" / "ref_input.nii.gz")
        produced = run_inference_config(bundle, work / "in", work / "out", trust=trust)
        if len(produced) != 1:
            add(Check("reference", False, f"inference.json wrote {len(produced)} files, expected 1"))
            return report
        got, got_aff = _read_nifti(produced[0])
        want, want_aff = _read_nifti(ref_out)
        got, want = np.squeeze(got), np.squeeze(want)
        if got.shape != want.shape or not np.allclose(got_aff, want_aff, atol=1e-4):
            add(Check("reference", False, f"output grid {got.shape} differs from the stored {want.shape}"))
            return report
        agree, dice = label_agreement(got.astype(np.int64), want.astype(np.int64))
        report.reference_agreement, report.reference_dice = agree, dice
        ok = agree >= min_agreement and all(d >= min_dice for d in dice.values())
        detail = f"voxel agreement {agree:.5f}; Dice " + (
            ", ".join(f"{k}: {v:.4f}" for k, v in dice.items()) or "n/a (no foreground)")
        add(Check("reference", ok, detail))
    except MedsegError as exc:
        add(Check("reference", False, str(exc)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report


def verify_zoo_bundle(bundle: Path, *, trust: bool = False) -> VerifyReport:
    """Check a MONAI Model Zoo bundle (no ``configs/medseg.json``) the way medseg runs it.

    Steps: files (metadata.json, an inference config JSON or YAML, the weights its
    CheckpointLoader names); metadata keys per the bundle specification (the zoo's
    ``optional_packages_version`` accepted); the trust policy on what medseg evaluates (metadata
    and the inference config; the other configs are listed in the detail, they are never run by
    medseg); the weights against ``models/sha256sums.txt`` or ``large_files.yml`` (md5/sha256) when
    listed; then the bundle is loaded as medseg runs it (network built, weights loaded strictly
    with ``weights_only=True``). Zoo bundles carry no reference pair: none is checked.
    """
    from medseg.bundle.load import read_all_configs
    from medseg.bundle.spec import check_metadata
    from medseg.bundle.trust import ensure_trusted
    from medseg.bundle.zoo import ZooBundleSource, inference_config_name

    report = VerifyReport(bundle=bundle)
    add = report.checks.append
    configs: dict = {}
    try:
        configs = read_all_configs(bundle)
    except BundleError as exc:
        add(Check("configs", False, str(exc)))
    name = inference_config_name(configs)
    missing = [f for f, ok in (("configs/metadata.json", "metadata.json" in configs),
                               ("configs/inference.json|yaml", name is not None)) if not ok]
    add(Check("files", not missing, "missing: " + ", ".join(missing) if missing else
              f"MONAI Model Zoo layout (configs/metadata.json, configs/{name})"))
    meta = configs.get("metadata.json")
    problems = check_metadata(meta) if meta is not None else ["metadata.json missing or unreadable"]
    add(Check("metadata", not problems, "; ".join(problems) if problems else "MONAI bundle spec keys present"))
    if name is None:
        return report
    run_configs = {k: v for k, v in configs.items() if k in (name, "metadata.json")}
    others = []
    for other in sorted(set(configs) - set(run_configs)):
        try:
            ensure_trusted({other: configs[other], **({"metadata.json": meta} if meta else {})})
        except BundleError:
            others.append(other)
    note = (f"; not run by medseg and refused untrusted: {', '.join(others)}" if others else "")
    trusted = _trust_check(add, run_configs, trust, f"configs/{name} uses allow-listed constructs only{note}")
    if not trusted:
        add(Check("load", None, "not run: the trust check failed"))
        return report
    try:
        model = ZooBundleSource.load(bundle, trust=trust)
        add(Check("weights", True, model.weights_check))
        add(Check("load", True, f"network_def built, weights loaded strictly; {len(model.labels)} classes: "
                                f"{', '.join(list(model.labels.values())[:8])}"))
    except MedsegError as exc:
        add(Check("load", False, str(exc)))
    return report
