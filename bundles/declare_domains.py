"""Declare what each shipped bundle was made for (its domain: medseg.inference.domain), so that
`medseg segment`/`batch` flag an input or a result outside it (and refuse it with --strict).

The weights do not change: `configs/medseg.json` gains a "domain" entry, `models/sha256sums.txt`
its new checksum, and the bundle a patch version with a changelog line. Bundles rebuilt by a
training script carry their domain already (``bundle_tools.ship`` calls :func:`write_domain`
before the release version is set), so this is for bundles built before that.

    python bundles/declare_domains.py [NAME ...]

The ranges come from the anatomy, not from the test cases: a head is 120-280 mm wide, an adult
brain 800-2200 mL (the models give 1228 and 1397 mL on the real pyradiomics T1s and 1857 mL on the
MNI template, whose mask takes in the CSF); a CT holds air, so its 1st percentile lies below -300 HU
(-3100 allows the padding values scanners put outside the reconstruction circle). Volumes of
organs and vertebrae start at 0 mL because a field of view may cut them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CT_AIR = {"1": [-3100, -300]}

DOMAINS = {
    "mri_brain_mask": {"modality": ["MR"], "body_region": "head",
                       "fov_mm": {"min": [120, 120, 40], "max": [280, 300, 330]},
                       "volume_ml": {"brain": [800, 2200]}},
    "ct_abdomen_organs": {"modality": ["CT"], "body_region": "abdomen",
                          "fov_mm": {"min": [200, 150, 30], "max": [650, 550, 2000]},
                          "intensity_percentiles": CT_AIR,
                          "volume_ml": {"liver": [0, 4500], "spleen": [0, 1500], "kidney_right": [0, 600],
                                        "kidney_left": [0, 600]}},
    "ct_spine": {"modality": ["CT"], "body_region": "thoraco-lumbar spine",
                 "fov_mm": {"min": [100, 100, 30], "max": [650, 550, 2000]},
                 "intensity_percentiles": CT_AIR,
                 "volume_ml": {f"vertebra_{v}": [0, 250] for v in ("T12", "L1", "L2", "L3", "L4", "L5")}},
    "ct_lung_lesion": {"modality": ["CT"], "body_region": "chest",
                       "fov_mm": {"min": [200, 150, 20], "max": [650, 550, 2000]},
                       "intensity_percentiles": {"1": [-3100, -500]},
                       "volume_ml": {"lung_nodule": [0, 1500]}},
    "xray_chest_lungs": {"modality": ["CR", "DX"], "body_region": "chest"},
}


def write_domain(folder: Path, name: str) -> bool:
    """Write ``DOMAINS[name]`` into ``folder``'s ``configs/medseg.json`` and its checksum into
    ``models/sha256sums.txt`` (no version change). False when it was already there."""
    from medseg.bundle.trust import read_checksums, sha256_file
    from medseg.inference.domain import validate_domain
    from medseg.io.atomic import atomic_write_text

    cfg_path = folder / "configs" / "medseg.json"
    cfg = json.loads(cfg_path.read_text())
    domain = validate_domain(DOMAINS[name])
    if cfg.get("domain") == domain:
        return False
    cfg["domain"] = domain
    atomic_write_text(cfg_path, json.dumps(cfg, indent=2) + "\n")
    sums = read_checksums(folder)
    sums["configs/medseg.json"] = sha256_file(cfg_path)
    atomic_write_text(folder / "models" / "sha256sums.txt", "".join(f"{s}  {r}\n" for r, s in sums.items()))
    return True


def declare(name: str) -> str:
    """Declare the domain of the shipped bundle ``name`` and bump its patch version (same weights).
    Bundles built by ``bundle_tools.ship`` carry their domain already."""
    from medseg.bundle.build import set_release

    folder = HERE / name
    if not write_domain(folder, name):
        return f"{name}: domain already declared"
    meta = json.loads((folder / "configs" / "metadata.json").read_text())
    major, minor, patch = (int(x) for x in meta["version"].split("."))
    version = f"{major}.{minor}.{patch + 1}"
    changelog = {version: "same weights; configs/medseg.json declares the domain (modality, body region, field of "
                          "view, intensity, plausible volumes): inputs and results outside it are flagged",
                 **meta.get("changelog", {})}
    set_release(folder, version, changelog)
    return f"{name}: {meta['version']} -> {version}"


def main(argv: list[str]) -> int:
    for name in argv or sorted(DOMAINS):
        print(declare(name))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
